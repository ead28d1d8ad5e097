"""`videor4 qc serve`: a real Label Studio bound to 127.0.0.1, preset credentials, detach, status, stop by PID."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

from videor4.annotation.server import CREDENTIALS_FILE, PID_FILE, free_port, is_healthy, load_credentials
from videor4.pipelines.cli import main


def test_serve_detach_status_stop(ls_template, ls_binary, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIDEOR4_LABEL_STUDIO_BIN", str(ls_binary))
    data_dir = tmp_path / "ls-data"
    shutil.copytree(ls_template, data_dir)
    root = tmp_path / "root"
    root.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    rc = main(["qc", "serve", "--data-root", str(root), "--ls-data-dir", str(data_dir), "--port", str(port),
               "--detach"])
    pid = json.loads((data_dir / PID_FILE).read_text())["pid"]
    try:
        out = capsys.readouterr().out
        assert rc == 0 and f"Label Studio is up at {url}" in out and CREDENTIALS_FILE in out
        assert is_healthy(url)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[cmdline.index(b"--internal-host") + 1] == b"127.0.0.1"  # never 0.0.0.0 by default
        assert stat.S_IMODE((data_dir / CREDENTIALS_FILE).stat().st_mode) == 0o600
        # the token from the credentials file is the one the server accepts; status needs no --api-key
        rc = main(["qc", "status", "--url", url, "--ls-data-dir", str(data_dir)])
        assert rc == 0 and json.loads(capsys.readouterr().out)["project_id"] is None
        # a second server on the same port is refused with one line
        rc = main(["qc", "serve", "--data-root", str(root), "--ls-data-dir", str(tmp_path / "other"),
                   "--port", str(port)])
        assert rc == 2 and "already in use" in capsys.readouterr().err
    finally:
        assert main(["qc", "serve", "--stop", "--ls-data-dir", str(data_dir)]) == 0
    assert f"stopped Label Studio (pid {pid})" in capsys.readouterr().out
    assert not is_healthy(url) and not (data_dir / PID_FILE).exists()
    assert not Path(f"/proc/{pid}").exists() or b"Z" in Path(f"/proc/{pid}/stat").read_bytes().split()[2]


def test_missing_credentials_is_a_user_error(tmp_path, capsys):
    rc = main(["qc", "status", "--url", "http://127.0.0.1:9", "--ls-data-dir", str(tmp_path)])
    assert rc == 2 and "not reachable" in capsys.readouterr().err
    try:
        load_credentials(tmp_path, create=False)
    except Exception as exc:  # noqa: BLE001 - the type is asserted below
        assert type(exc).__name__ == "UserError" and "--api-key" in str(exc)
    else:
        raise AssertionError("expected a UserError")
