"""One run per output directory: the lock refuses a second holder by name, survives its holder's death, and
only rank 0 of a distributed launch takes it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from videor4.contracts.errors import UserError
from videor4.contracts.run_lock import LOCK_FILE, RunLock, RunLocked, read_holder, run_lock

HOLD = """
import sys, time
from videor4.contracts.run_lock import RunLock
lock = RunLock(sys.argv[1], "holder-command --x").acquire()
print("held", flush=True)
time.sleep(120)
"""


def _holder(directory: Path) -> subprocess.Popen:
    """A real other process holding the lock on ``directory``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "out")
    try:
        with pytest.raises(RunLocked) as caught:
            RunLock(tmp_path / "out", "me").acquire()
        message = str(caught.value)
        assert isinstance(caught.value, UserError) and "\n" not in message
        assert f"pid {proc.pid} on {socket.gethostname()}" in message and "holder-command --x" in message
        assert "started 20" in message  # ISO start time
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    proc = _holder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_holder(out).pid == proc.pid  # the dead holder's file is still there
    with RunLock(out, "second") as lock:
        assert lock.stale is not None and lock.stale.pid == proc.pid
        assert read_holder(out).pid == os.getpid() and read_holder(out).command == "second"
        assert "taking over the lock" in caplog.text
    assert not (out / LOCK_FILE).exists()  # released: the file goes with it


def test_release_lets_the_next_run_in_and_nested_use_is_refused(tmp_path: Path) -> None:
    with RunLock(tmp_path, "first"), pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
        RunLock(tmp_path, "again").acquire()  # a second open file description: refused, even in-process
    with RunLock(tmp_path, "next") as lock:
        assert lock.stale is None and read_holder(tmp_path).command == "next"


def test_unusable_directories_are_one_line_user_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="cannot use as an output directory"):
        RunLock(a_file, "x").acquire()
    with pytest.raises(UserError, match="cannot write here"):
        RunLock(read_only_dir(tmp_path), "x").acquire()


def read_only_dir(tmp_path: Path) -> Path:
    """An existing directory this process cannot create files in (root ignores modes: then /sys/kernel)."""
    if os.geteuid() == 0:
        return Path("/sys/kernel")
    path = tmp_path / "read-only"
    path.mkdir()
    path.chmod(0o555)
    return path


def test_only_rank_zero_takes_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    with run_lock(tmp_path, "rank 1", main_process_only=True) as lock:
        assert lock is None and not (tmp_path / LOCK_FILE).exists()
    monkeypatch.setenv("RANK", "0")
    with run_lock(tmp_path, "rank 0", main_process_only=True) as lock:
        assert lock is not None and json.loads((tmp_path / LOCK_FILE).read_text())["command"] == "rank 0"
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with run_lock(tmp_path, "local rank 2", main_process_only=True) as lock:
        assert lock is None


def test_racing_processes_get_exactly_one_lock(tmp_path: Path) -> None:
    """Eight processes start at once; exactly one holds the lock (until killed), the others are refused."""
    script = ("import sys, time\nfrom videor4.contracts.run_lock import RunLock, RunLocked\n"
              "try:\n    l = RunLock(sys.argv[1], 'racer').acquire()\nexcept RunLocked:\n    print('refused')\n"
              "else:\n    print('held', flush=True)\n    time.sleep(120)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    try:
        first_lines = [p.stdout.readline().strip() for p in procs]  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert sorted(first_lines) == ["held"] + ["refused"] * 7, first_lines


def test_a_lock_file_from_another_machine_is_refused_with_the_fix(tmp_path: Path) -> None:
    """Another host's run may still be going (no shared locks) or may have died there: a person decides."""
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 4242, "host": "node-elsewhere",
                                                  "started": "2026-01-01T00:00:00+00:00", "command": "curate"}))
    with pytest.raises(RunLocked) as caught:
        RunLock(tmp_path, "here").acquire()
    assert "pid 4242 on node-elsewhere" in str(caught.value) and f"delete {tmp_path / LOCK_FILE}" in str(caught.value)
    assert read_holder(tmp_path).host == "node-elsewhere"  # left alone
    (tmp_path / LOCK_FILE).unlink()
    with RunLock(tmp_path, "here"):
        pass
