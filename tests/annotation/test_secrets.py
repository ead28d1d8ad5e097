"""The Label Studio API token stays secret: never in Prefect's database (parameters, logs, results, the UI reads
the same records), and every file that holds it is private to its owner.

A real push and pull run against a real Label Studio, through the Python API (Prefect's test server) and
through the ``videor4`` command in a subprocess with its own ``PREFECT_HOME`` (what a user has); then every
byte of Prefect's database files is searched for the token.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from videor4.annotation.routing import RoutingConfig
from videor4.annotation.server import CREDENTIALS_FILE, LabelStudioServer, ServerConfig, free_port, load_credentials
from videor4.contracts.errors import UserError
from videor4.pipelines.qc_flows import qc_pull, qc_push

REPO = Path(__file__).resolve().parents[2]
MASK = "**********"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _files_holding(root: Path, pattern: str, secret: str) -> list[str]:
    files = [p for p in root.glob(pattern) if p.is_file()]
    assert files, f"no {pattern} under {root}: nothing was searched"
    return [str(p) for p in files if secret.encode() in p.read_bytes()]


def _records_parameters(root: Path, pattern: str, url: str) -> bool:
    """The search is not blind: the flows' other parameters (the server URL) are in those same files."""
    return any(url.encode() in p.read_bytes() for p in root.glob(pattern) if p.is_file())


def test_python_api_stores_only_a_masked_key(label_studio, prefect_home, make_sample_shards, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    shards = tmp_path / "shards"
    make_sample_shards(shards, label_studio.data_root)
    token = label_studio.token
    qc_push(shards, label_studio.url, token, "secrets-api", RoutingConfig(threshold=0.8, audit_fraction=0.0),
            progress=False)  # a plain-string key, as the docs show
    qc_pull(shards, label_studio.url, token, "secrets-api")

    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if "api_key" in r.parameters]
    assert len(runs) >= 2 and all(r.parameters["api_key"] == MASK for r in runs), [r.parameters for r in runs]
    url = str(get_current_settings().server.database.connection_url.get_secret_value())
    database = Path(url.split("///", 1)[1])
    assert _files_holding(database.parent, database.name + "*", token) == []
    assert _records_parameters(database.parent, database.name + "*", label_studio.url)


def test_cli_push_and_pull_leave_no_token_in_prefect_home(label_studio, make_sample_shards, tmp_path):
    shards = tmp_path / "shards"
    make_sample_shards(shards, label_studio.data_root)
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "VIDEOR4_LS_TOKEN"}
    env.update(PREFECT_HOME=str(home), PYTHONUNBUFFERED="1")
    token = label_studio.token
    common = ["--shards", str(shards), "--url", label_studio.url, "--project", "secrets-cli"]
    for argv, extra_env in ((["qc", "push", *common, "--api-key", token, "--no-progress", "--audit-fraction", "0"],
                             {}),
                            (["qc", "pull", *common, "--no-resynthesize"], {"VIDEOR4_LS_TOKEN": token})):
        proc = subprocess.run([sys.executable, "-m", "videor4.pipelines.cli", *argv], env={**env, **extra_env},
                              cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert token not in proc.stdout + proc.stderr
    assert _files_holding(home, "prefect.db*", token) == []
    assert _records_parameters(home, "prefect.db*", label_studio.url)
    assert _files_holding(home, "**/*", token) == []  # nor anywhere else Prefect keeps things


def test_data_dir_and_credentials_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDEOR4_LS_TOKEN", raising=False)
    fresh = tmp_path / "fresh" / "ls-data"
    creds = load_credentials(fresh)
    assert _mode(fresh) == 0o700 and _mode(fresh / CREDENTIALS_FILE) == 0o600
    assert load_credentials(fresh, create=False) == creds

    loose = tmp_path / "loose"  # made by an older videor4 or by hand: tightened on use
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    (loose / CREDENTIALS_FILE).write_text((fresh / CREDENTIALS_FILE).read_text())
    (loose / CREDENTIALS_FILE).chmod(0o644)
    load_credentials(loose)
    assert _mode(loose / CREDENTIALS_FILE) == 0o600
    LabelStudioServer(ServerConfig(data_dir=loose, document_root=tmp_path, port=free_port()))
    assert _mode(loose) == 0o700


def test_files_the_server_creates_are_private(tmp_path: Path) -> None:
    """The server process runs with umask 077: its database (which stores the token) and log are 0600.

    A stand-in executable records what the real server does first (create its database in the data dir) and
    exits, so the start fails as a real failing server would.
    """
    fake = tmp_path / "label-studio"
    fake.write_text('#!/bin/sh\necho "starting" && touch "$LABEL_STUDIO_BASE_DATA_DIR/label_studio.sqlite3"\n'
                    "exit 3\n")
    fake.chmod(0o755)
    data_dir = tmp_path / "ls-data"
    server = LabelStudioServer(ServerConfig(data_dir=data_dir, document_root=tmp_path, port=free_port(),
                                            binary=fake))
    with pytest.raises(UserError, match="exited with code 3"):
        server.start()
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir / "label_studio.sqlite3") == 0o600 and _mode(server.log_path) == 0o600
