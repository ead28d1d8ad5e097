"""Start, health-check and stop a local Label Studio server for QC.

Label Studio's own pins conflict with Prefect's, so the server runs from its
own virtualenv (``.venv-labelstudio``, built from
``annotation/requirements-labelstudio.txt``) as a child process; this module
only needs the standard library and ``requests``.

Safe defaults (DESIGN §9): bound to 127.0.0.1 (Label Studio's own default is
0.0.0.0), a preset admin user and API token so nothing has to be clicked,
signup closed, analytics/Sentry/version checks off, and local-files serving
rooted at the data root so frames rendered under ``<data_root>/qc_media`` are
served at ``/data/local-files/?d=qc_media/...``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.atomic import write_json_atomic
from videor4.contracts.errors import UserError, user_input

BIN_ENV = "VIDEOR4_LABEL_STUDIO_BIN"
TOKEN_ENV = "VIDEOR4_LS_TOKEN"
CREDENTIALS_FILE = "videor4_credentials.json"
PID_FILE = "videor4_server.json"
LOG_FILE = "videor4_server.log"
DEFAULT_USERNAME = "admin@videor4.local"


class ServerConfig(BaseModel):
    """Where and how the Label Studio server runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(Path("labelstudio-data"), description="Label Studio's own data dir (SQLite DB, "
                           "credentials, log); reusing it keeps projects and skips the ~45 s first migration")
    document_root: Path = Field(Path("."), description="local-files document root = the data root that holds "
                                "qc_media/ (only files under it can be served)")
    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 exposes the server to the network")
    port: int = Field(8080, gt=0, lt=65536, description="HTTP port")
    binary: Path | None = Field(None, description=f"label-studio executable (default: ${BIN_ENV}, "
                                "./.venv-labelstudio/bin/label-studio, then PATH)")
    username: str = Field(DEFAULT_USERNAME, description="preset admin user (an e-mail address)")
    startup_timeout_s: float = Field(180.0, gt=0, description="how long to wait for /health (first start migrates)")

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    token: str


def find_binary(explicit: Path | None = None) -> Path:
    """The label-studio executable; its own venv is preferred over one on PATH (which may be the wrong version)."""
    candidates = [explicit, os.environ.get(BIN_ENV), Path.cwd() / ".venv-labelstudio/bin/label-studio",
                  Path(__file__).resolve().parents[1] / ".venv-labelstudio/bin/label-studio", shutil.which("label-studio")]
    for cand in candidates:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    raise UserError(f"label-studio executable not found; run `make labelstudio` (creates .venv-labelstudio) "
                    f"or set {BIN_ENV}")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) as a 0700 directory, or tighten an existing one we own to 0700.

    The data dir holds the credentials file and Label Studio's SQLite database, which stores the API token
    too: nobody but its owner may list or read it.
    """
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as exc:
        raise UserError(f"{path}: cannot create the Label Studio data dir ({exc.strerror})") from None
    if not path.is_dir():
        raise UserError(f"{path}: exists and is not a directory (pass --ls-data-dir)")
    return path


def load_credentials(data_dir: Path, username: str = DEFAULT_USERNAME, *, create: bool = True) -> Credentials:
    """Admin password and API token: ``$VIDEOR4_LS_TOKEN`` wins, else a 0600 secrets file in a 0700 data dir.

    The file is created once with ``O_EXCL`` and mode 0600 so the secret is never world-readable, not even
    between creation and chmod; an existing one readable by others is tightened to 0600.
    """
    path = Path(data_dir) / CREDENTIALS_FILE
    if path.is_file():
        with user_input(f"{path}: not a readable credentials file (delete it and run `videor4 qc serve` again)"):
            saved = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(saved, dict):
                raise ValueError("expected a JSON object")
            creds = Credentials(str(saved["username"]), str(saved["password"]), str(saved["token"]))
        if path.stat().st_uid == os.getuid() and path.stat().st_mode & 0o077:
            path.chmod(0o600)
        private_dir(path.parent)
    elif create:
        creds = Credentials(username, secrets.token_urlsafe(18), secrets.token_hex(20))
        private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"username": creds.username, "password": creds.password, "token": creds.token}, f)
    else:
        raise UserError(f"no API key: pass --api-key, set {TOKEN_ENV}, or point --ls-data-dir at the data dir "
                        f"of `videor4 qc serve` (missing {path})")
    return Credentials(creds.username, creds.password, os.environ.get(TOKEN_ENV) or creds.token)


def server_env(cfg: ServerConfig, creds: Credentials) -> dict[str, str]:
    """The environment that makes Label Studio start headless, private and quiet."""
    env = dict(os.environ)
    env.update({
        "LABEL_STUDIO_USERNAME": creds.username,
        "LABEL_STUDIO_PASSWORD": creds.password,
        "LABEL_STUDIO_USER_TOKEN": creds.token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_BASE_DATA_DIR": str(Path(cfg.data_dir).resolve()),
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(Path(cfg.document_root).resolve()),
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
    })
    return env


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1" if host == "0.0.0.0" else host, port)) == 0


def free_port() -> int:
    """A port that was free a moment ago (the OS picks it), for tests and ``--port 0``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return requests.get(f"{url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


class LabelStudioServer:
    """One child Label Studio process: ``start()`` blocks until ``/health`` answers, ``stop()`` ends it by PID."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.process: subprocess.Popen | None = None
        self.credentials = load_credentials(cfg.data_dir, cfg.username)

    @property
    def url(self) -> str:
        return self.cfg.url

    @property
    def log_path(self) -> Path:
        return Path(self.cfg.data_dir) / LOG_FILE

    def start(self) -> float:
        """Launch and wait for health; returns the seconds it took. Raises UserError with the log tail on failure."""
        cfg = self.cfg
        if port_in_use(cfg.host, cfg.port):
            raise UserError(f"port {cfg.port} on {cfg.host} is already in use; pick another with --port")
        if not Path(cfg.document_root).is_dir():
            raise UserError(f"document root {cfg.document_root} is not a directory")
        binary = find_binary(cfg.binary)
        private_dir(Path(cfg.data_dir))
        cmd = [str(binary), "start", "--no-browser", "--internal-host", cfg.host, "--port", str(cfg.port)]
        t0 = time.monotonic()
        with os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            # Own session: Ctrl-C reaches us, not the child, so shutdown is one orderly SIGTERM from stop().
            # umask 077: the database (which stores the API token), log and media Label Studio creates are 0600.
            self.process = subprocess.Popen(cmd, env=server_env(cfg, self.credentials), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, umask=0o077)
        while time.monotonic() - t0 < cfg.startup_timeout_s:
            if self.process.poll() is not None:
                raise UserError(f"Label Studio exited with code {self.process.returncode} during startup; "
                                f"last log line: {self._log_tail()}")
            if is_healthy(self.url, timeout=1.0):
                return time.monotonic() - t0
            time.sleep(0.5)
        self.stop()
        raise UserError(f"Label Studio did not answer {self.url}/health within {cfg.startup_timeout_s:.0f} s; "
                        f"see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def write_pid_file(self) -> Path:
        assert self.process is not None
        return write_json_atomic(Path(self.cfg.data_dir) / PID_FILE, {"pid": self.process.pid, "url": self.url})

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "(no log)"
        return lines[-1][:300] if lines else "(empty log)"

    def __enter__(self) -> LabelStudioServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """Stop a server that is not our child (``--detach``): SIGTERM, then SIGKILL after ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Running (a zombie — exited, not yet reaped by its parent — counts as stopped)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


@dataclass(frozen=True)
class StopResult:
    """What ``serve --stop`` did: ``stopped`` is False when the recorded PID was not (or no longer) Label Studio."""

    pid: int
    stopped: bool


def stop_detached(data_dir: Path) -> StopResult | None:
    """Stop the server that ``serve --detach`` recorded in the data dir; None if no server was recorded.

    The PID may have been reused since (the server died, another program got its number): only a process that is
    still Label Studio is signalled; otherwise nothing is stopped and the stale pid file is removed.
    """
    path = Path(data_dir) / PID_FILE
    if not path.is_file():
        return None
    with user_input(f"{path}: not a readable pid file (delete it; stop the server by its PID if it still runs)"):
        pid = int(json.loads(path.read_text(encoding="utf-8"))["pid"])
        if pid <= 0:
            raise ValueError(f"bad pid {pid}")
    try:
        is_ls = b"label-studio" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        is_ls = False
    if is_ls:
        stop_pid(pid)
    path.unlink(missing_ok=True)
    return StopResult(pid, is_ls)


def wait_forever(server: LabelStudioServer) -> int:
    """Foreground mode: block until the child exits or Ctrl-C, then shut it down cleanly."""
    assert server.process is not None
    try:
        return server.process.wait()
    except KeyboardInterrupt:
        print("stopping Label Studio …", file=sys.stderr)
        server.stop()
        return 0
