"""`make bench`: every benchmark table, one after the other (each script also runs on its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_metrics.py", "bench_decode.py", "bench_curation.py", "bench_rollout.py"]

if __name__ == "__main__":
    failed = []
    for script in SCRIPTS:
        print(f"\n## {script}\n", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)]).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    sys.exit(1 if failed else 0)
