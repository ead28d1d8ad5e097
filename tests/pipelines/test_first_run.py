"""The first command on a fresh machine: an empty PREFECT_HOME (the server migrates its database on start).

Each test runs the real ``videor4`` CLI in a subprocess with its own, empty ``PREFECT_HOME`` and no
``PREFECT_API_URL``, which is what a new user has: the temporary Prefect server has to be created, migrated
and started before the first flow. This is the path CI's already-migrated ``~/.prefect`` used to hide.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]


def _fresh_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    home.mkdir(parents=True, exist_ok=True)
    assert not any(home.iterdir()), "the Prefect home must start empty"
    env.update(PREFECT_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def _videor4(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videor4.pipelines.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_demo_path_works_from_an_empty_prefect_home(tmp_path: Path) -> None:
    """`videor4 demo` (one video, cheap settings) from an empty PREFECT_HOME: says it is starting, then works."""
    config = tmp_path / "quick.yaml"
    config.write_text(yaml.safe_dump({"sampling": {"mode": "fps", "fps": 2.0}, "detector": {"backend": "none"}}))
    home = tmp_path / "prefect-home"
    out = tmp_path / "demo"
    proc = _videor4(["demo", "--out", str(out), "--limit", "1", "--config", str(config), "--no-progress"],
                    _fresh_env(home))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting the local Prefect server (first run migrates its database" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (home / "prefect.db").is_file()  # the database was created (migrated) in the fresh home
    questions = pd.read_parquet(out / "questions.parquet")
    assert len(questions) > 0 and (out / "shards" / "manifest.json").is_file()

    # The second start finds a migrated database and does not announce a migration.
    again = _videor4(["demo", "--out", str(out), "--limit", "1", "--config", str(config), "--no-progress"],
                     {**_fresh_env(tmp_path / "unused"), "PREFECT_HOME": str(home)})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "starting the local Prefect server…" in again.stderr and "migrates" not in again.stderr


def test_a_server_that_never_answers_is_one_line_with_the_fix(tmp_path: Path) -> None:
    """Timeout far below a cold start's migrations: exit 2 and one line naming the setting, no traceback."""
    env = _fresh_env(tmp_path / "prefect-home", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    proc = _videor4(["curate", "--data-root", str(REPO / "curation" / "sample_data"), "--split", "sample",
                     "--out", str(tmp_path / "out"), "--limit", "1"], env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("videor4: error:")]
    assert len(errors) == 1, proc.stderr
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in errors[0] and "PREFECT_API_URL" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "evidence.parquet").exists()
