"""``videor4 runs status OUT``: progress of a curation run, finished, running or interrupted."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _status(args: argparse.Namespace) -> int:
    from videor4.curation.run_manifest import progress

    p = progress(args.out)
    if args.json:
        print(json.dumps(p, indent=2))
        return 0
    n = p["videos"]
    print(f"run {args.out}: {p['status']} (split {p['split']}, attempt {p['attempt']}, started {p['started']})")
    if p["error"]:
        print(f"  error: {p['error']} (fix it and rerun the same command: finished videos are reused)")
    for stage, done in p["done"].items():
        print(f"  {stage:9s} {done}/{n} videos" + (f" ({100 * done / n:.0f}%)" if n else ""))
    if p["stats"]:
        s = p["stats"]
        print(f"  frames decoded {s['frames_decoded']}, OCR'd {s['frames_ocr']}; questions {s['questions']} "
              f"({s['questions_with_answer_evidence']} with answer evidence); trajectories "
              f"{s['trajectories_verified']}/{s['trajectories']} verified; rejects {s['rejects']}")
    elif p["status"] == "running":
        print(f"  elapsed {p['elapsed_s']} s (if no process is running, rerun the same command to resume)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="inspect curation runs (progress, stats)")
    s = p.add_subparsers(dest="runs_command", metavar="SUBCOMMAND")
    st = s.add_parser("status", help="summarize progress of a run folder (works while it runs)",
                      description="Progress of `videor4 curate --out OUT`: videos analysed and synthesized "
                      "(from the completed per-video artifacts), and the final stats once done.")
    st.add_argument("out", type=Path, help="the --out folder of a curation run")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_status)
