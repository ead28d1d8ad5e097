"""One run per output directory: an exclusive lock file that names its holder.

Two ``videor4 curate`` (or ``videor4 train``) processes writing into the same directory would each do all the
work and replace each other's outputs file by file. The first one takes ``<dir>/.videor4.lock``: a file locked
with ``fcntl.flock`` and holding the holder's pid, host, start time and command, kept for as long as the run
lasts. A second run is refused at once with one line naming the holder.

The kernel drops a ``flock`` when its process dies, SIGKILL included, so a lock file left behind by a crashed run
on this host is found unlocked and taken over (the dead holder is logged); no stale lock ever needs clearing by
hand there. A lock file left by a run on *another* machine (a shared file system) is refused even when it is not
locked — that run may still be going on a file system that does not share locks, or may have crashed there, and
nothing here can tell which — so a person checks and deletes it (``docs/scaling.md``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from videor4.contracts.errors import UserError

LOCK_FILE = ".videor4.lock"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a lock."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started} ({self.command})"

    @classmethod
    def me(cls, command: str) -> LockHolder:
        return cls(os.getpid(), socket.gethostname(), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   command)


class RunLocked(UserError):
    """The directory is in use by another run (the message names it)."""


def is_main_process() -> bool:
    """Rank 0 of a distributed launch (``RANK``, else ``LOCAL_RANK``), or a plain single process."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


class RunLock:
    """``with RunLock(out, "videor4 curate"):`` — exclusive use of ``out`` for the block."""

    def __init__(self, directory: str | Path, command: str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.command = command
        self.stale: LockHolder | None = None  # the dead holder whose lock this one took over, if any
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.directory}: cannot use as an output directory ({exc.strerror})") from None
        if not self.directory.is_dir():
            raise UserError(f"{self.directory}: exists and is not a directory")
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(f"{self.directory}: cannot write here ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLocked(f"{self.directory} is in use by another run: {self._holder_text()}; wait for it "
                                "to finish or choose another output directory") from None
            except OSError as exc:
                os.close(fd)
                raise UserError(f"{self.directory}: cannot lock {LOCK_FILE} ({exc.strerror}); the file system "
                                "does not support locks") from None
            # A releasing holder unlinks the file before unlocking it: make sure we hold the file at the path.
            try:
                here = os.stat(self.path)
                mine = os.fstat(fd)
                same = (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _parse(os.pread(fd, 4096, 0))
        if previous is not None and previous.host != socket.gethostname():
            # Left by a run on another machine: still running on a file system that does not share locks, or
            # crashed there. Nothing here can tell which, so a person decides (docs/scaling.md).
            os.close(fd)
            raise RunLocked(f"{self.directory} is in use by another run: {previous.describe()}; that is another "
                            f"machine, so whether it still runs cannot be checked from here: if it does not, delete "
                            f"{self.path} and rerun")
        self._fd = fd
        self.stale = previous
        if self.stale is not None:
            log.warning("%s: taking over the lock of a run that is gone (%s)", self.directory, self.stale.describe())
        record = json.dumps(asdict(LockHolder.me(self.command))).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        os.fsync(fd)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiter then sees the path changed
        finally:
            os.close(self._fd)
            self._fd = None

    def _holder_text(self) -> str:
        for _ in range(20):  # the holder may be between creating the file and writing its record
            try:
                holder = _parse(self.path.read_bytes())
            except OSError:
                holder = None
            if holder is not None:
                return holder.describe()
            time.sleep(0.05)
        return f"a process that has not written its details to {self.path} yet"

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _parse(data: bytes) -> LockHolder | None:
    try:
        d = json.loads(data.decode("utf-8"))
        return LockHolder(int(d["pid"]), str(d["host"]), str(d["started"]), str(d["command"]))
    except (ValueError, KeyError, TypeError):
        return None


def read_holder(directory: str | Path) -> LockHolder | None:
    """The holder recorded in ``directory``'s lock file, or None (no lock file, or not readable)."""
    try:
        return _parse((Path(directory) / LOCK_FILE).read_bytes())
    except OSError:
        return None


@contextmanager
def run_lock(directory: str | Path, command: str | None = None, *, main_process_only: bool = False
             ) -> Iterator[RunLock | None]:
    """Hold ``directory``'s lock for the block; with ``main_process_only``, ranks other than 0 take none."""
    if main_process_only and not is_main_process():
        yield None
        return
    lock = RunLock(directory, command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    with lock:
        yield lock
