"""The run manifest (``<out>/run.json``) and progress of a possibly still running curation.

Written at the start of a run (status ``running``) and rewritten at the end
(``completed``, or ``failed`` with the error), atomically. Only one run writes into
an output folder at a time (``videor4.contracts.run_lock``, taken before this file).
Progress is read from the per-(stage, video) artifacts, which exist only once complete, so ``videor4 runs status`` is right
even while workers on other machines are writing into the same output folder,
and after a crash.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from videor4 import __version__
from videor4.contracts.atomic import write_json_atomic
from videor4.contracts.errors import UserError, read_json_object, user_input
from videor4.curation.config import CurationConfig

RUN_FILE = "run.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def start_run(out: Path, *, split: str, data_root: Path, video_ids: list[str], cfg: CurationConfig,
              runner: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for stale in (out / "cache").glob("*/.*.tmp"):  # leftovers of a killed writer; never read
        if not _writer_alive(stale):
            stale.unlink(missing_ok=True)
    try:
        previous = read_run(out) if (out / RUN_FILE).is_file() else {}
    except UserError:  # a damaged manifest of an earlier run: this run replaces it
        previous = {}
    run = {"status": "running", "started": _now(), "finished": None, "split": split,
           "data_root": str(Path(data_root).resolve()), "videos": video_ids, "config_hash": cfg.config_hash,
           "analysis_hash": cfg.stage_hash("analysis"), "synthesis_hash": cfg.stage_hash("synthesis"),
           "runner": runner, "host": socket.gethostname(), "pid": os.getpid(), "toolkit_version": __version__,
           "attempt": int(previous.get("attempt", 0)) + 1, "t0": time.time()}
    write_json_atomic(out / RUN_FILE, run, indent=2)
    return run


def _writer_alive(tmp: Path) -> bool:
    """Whether the process named in an atomic writer's temp file (``.<name>.<pid>.tmp``) still runs here."""
    try:
        pid = int(tmp.name.rsplit(".", 2)[-2])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def finish_run(out: Path, run: dict, summary: dict) -> None:
    write_json_atomic(out / RUN_FILE, {**run, "status": "completed", "finished": _now(),
                                       "seconds": round(time.time() - run["t0"], 2), "summary": summary}, indent=2)


def fail_run(out: Path, run: dict, error: BaseException) -> None:
    """Record that the run ended with ``error`` (its outputs are those of the last completed run, if any)."""
    message = " ".join(str(error).split()) or type(error).__name__
    write_json_atomic(out / RUN_FILE, {**run, "status": "failed", "finished": _now(),
                                       "seconds": round(time.time() - run["t0"], 2),
                                       "error": f"{type(error).__name__}: {message}"[:1000]}, indent=2)


def read_run(out: Path) -> dict:
    path = Path(out) / RUN_FILE
    run = read_json_object(path, f"{out}: no {RUN_FILE} (not a curation output folder, or the run never started)",
                           "run manifest")
    missing = [k for k in ("status", "split", "videos", "started", "analysis_hash", "synthesis_hash", "t0")
               if k not in run]
    if missing:
        raise UserError(f"{path}: not a readable run manifest: missing field {missing[0]!r}")
    return run


def progress(out: Path) -> dict:
    """Counts of videos whose analysis / synthesis artifacts exist for the run's settings."""
    run = read_run(out)
    done = {}
    for stage, key in (("analysis", run["analysis_hash"]), ("synthesis", run["synthesis_hash"])):
        names = {p.name.split("-")[0] for p in (Path(out) / "cache" / stage).glob(f"*-{key}-*.json")}
        done[stage] = len(names & set(run["videos"]))
    stats_path = Path(out) / "stats.json"
    stats = None
    if run["status"] == "completed" and stats_path.is_file():
        with user_input(f"{stats_path}: not a readable run summary"):
            stats = json.loads(stats_path.read_text(encoding="utf-8"))
    return {"status": run["status"], "error": run.get("error"), "split": run["split"], "videos": len(run["videos"]),
            "done": done,
            "attempt": run.get("attempt", 1), "started": run["started"], "finished": run.get("finished"),
            "elapsed_s": round(time.time() - run["t0"], 1) if run["status"] == "running" else run.get("seconds"),
            "stats": stats}
