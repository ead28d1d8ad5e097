"""Quiet, offline-friendly Prefect defaults for command-line runs.

Set before Prefect is imported: a CLI user should see our progress bar and
summary, not Prefect's per-task INFO lines, and nothing should phone home.
Users who want the Prefect UI or their own server set these variables
themselves (``PREFECT_API_URL`` …) and their values win.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    # Dask's scheduler and workers log every connection at INFO; a CLI run only needs warnings.
    "DASK_LOGGING__DISTRIBUTED": "warning",
}


def configure() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
