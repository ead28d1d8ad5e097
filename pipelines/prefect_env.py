"""Quiet, offline-friendly Prefect defaults for command-line runs, and a first start that never times out.

Set before Prefect is imported: a CLI user should see our progress bar and
summary, not Prefect's per-task INFO lines, and nothing should phone home.
Users who want the Prefect UI or their own server set these variables
themselves (``PREFECT_API_URL`` …) and their values win.

Why :func:`start_local_server` exists: without ``PREFECT_API_URL`` Prefect starts a temporary API server on the
first flow run and gives it ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (20 s by default) to answer.
On a fresh ``PREFECT_HOME`` that start includes the database migrations, which take longer than 20 s on a busy
2-core machine (measured: 44 s, then a traceback). We raise the default, start the server ourselves before the
flow (Prefect's client reuses the same process: ``SubprocessASGIServer`` is a per-port singleton), say what is
happening, and turn a server that never answers into one line with the fix.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from videor4.contracts.errors import UserError

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
# Generous: a cold first start (migrations on a busy, slow disk) has been seen to take ~45 s on 2 cores.
DEFAULT_STARTUP_TIMEOUT_S = 300

DEFAULTS = {
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    STARTUP_TIMEOUT_ENV: str(DEFAULT_STARTUP_TIMEOUT_S),
    # Dask's scheduler and workers log every connection at INFO; a CLI run only needs warnings.
    "DASK_LOGGING__DISTRIBUTED": "warning",
}


def configure() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def _database_exists(settings) -> bool:
    """Whether the local server's SQLite database is already there (no migrations on start)."""
    url = settings.server.database.connection_url
    url = url.get_secret_value() if hasattr(url, "get_secret_value") else url
    if url and not str(url).startswith("sqlite"):
        return True  # a user-configured database server: nothing we can tell about migrations
    path = Path(str(url).split("///", 1)[-1]) if url and "///" in str(url) else Path(settings.home) / "prefect.db"
    return path.is_file() and path.stat().st_size > 0


def start_local_server(quiet: bool = False) -> str | None:
    """Start Prefect's temporary local API server now (no-op when ``PREFECT_API_URL`` names a server).

    Returns the API URL of the local server, or None when a user-configured server is used. Raises
    :class:`UserError` with the fix when the server does not answer in time.
    """
    configure()
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    server = SubprocessASGIServer()
    if server.running:
        return server.api_url
    timeout = int(settings.server.ephemeral.startup_timeout_seconds)
    first = not _database_exists(settings)
    if not quiet:
        what = ("starting the local Prefect server (first run migrates its database, up to a minute)…" if first
                else "starting the local Prefect server…")
        print(f"videor4: {what}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        server.start(timeout=timeout)
    except RuntimeError as exc:
        detail = str(exc).split(" stdout:")[0]
        raise UserError(
            f"the local Prefect server did not answer within {timeout} s ({detail}); on a slow or busy machine "
            f"raise {STARTUP_TIMEOUT_ENV} (e.g. {STARTUP_TIMEOUT_ENV}={4 * timeout}), or start a server with "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api") from None
    if first and not quiet:
        print(f"videor4: Prefect server ready after {time.perf_counter() - started:.0f} s "
              f"(database in {settings.home})", file=sys.stderr, flush=True)
    return server.api_url
