"""``videor4 qc serve|push|pull|status``: human quality control in Label Studio.

Connection options are shared by push/pull/status: ``--url`` (default
``$VIDEOR4_LS_URL`` or http://127.0.0.1:8080) and an API key from
``--api-key``, ``$VIDEOR4_LS_TOKEN``, or the credentials file that
``videor4 qc serve`` wrote into its data dir (``--ls-data-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from videor4.pipelines import prefect_env

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_LS_DATA_DIR = Path("labelstudio-data")
DEFAULT_PROJECT = "videor4-qc"


def _api_key(args: argparse.Namespace) -> str:
    from videor4.annotation.server import TOKEN_ENV, load_credentials

    return args.api_key or os.environ.get(TOKEN_ENV) or load_credentials(args.ls_data_dir, create=False).token


def _serve(args: argparse.Namespace) -> int:
    from videor4.annotation.server import (
        CREDENTIALS_FILE,
        TOKEN_ENV,
        LabelStudioServer,
        ServerConfig,
        free_port,
        stop_detached,
        wait_forever,
    )
    from videor4.contracts.errors import UserError, user_input

    if args.stop:
        result = stop_detached(args.ls_data_dir)
        if result is None:
            print(f"no detached server recorded in {args.ls_data_dir}")
        elif result.stopped:
            print(f"stopped Label Studio (pid {result.pid})")
        else:
            print(f"nothing stopped: pid {result.pid} recorded in {args.ls_data_dir} is not a running Label Studio "
                  "(it exited, or the number now belongs to another program); removed the stale pid file")
        return 0
    if args.data_root is None:
        raise UserError("--data-root is required: the dataset root whose qc_media/ the server may serve")
    with user_input("qc serve"):
        cfg = ServerConfig(data_dir=args.ls_data_dir, document_root=args.data_root, host=args.host,
                           port=args.port or free_port(), binary=args.label_studio_bin)
    if cfg.host not in ("127.0.0.1", "localhost"):
        print(f"warning: binding to {cfg.host} exposes Label Studio beyond this machine", file=sys.stderr)
    server = LabelStudioServer(cfg)
    print(f"starting Label Studio on {cfg.url} (data dir {cfg.data_dir}; first start migrates, ~45 s) …",
          file=sys.stderr)
    seconds = server.start()
    token_from = f"${TOKEN_ENV}" if os.environ.get(TOKEN_ENV) else str(Path(cfg.data_dir) / CREDENTIALS_FILE)
    print(f"Label Studio is up at {cfg.url} after {seconds:.1f} s; log in as {server.credentials.username} "
          f"(password and API token in {Path(cfg.data_dir) / CREDENTIALS_FILE}; API token from {token_from})")
    if args.detach:
        print(f"detached (pid {server.process.pid}, recorded in {server.write_pid_file()}); "
              f"stop it with: videor4 qc serve --stop --ls-data-dir {cfg.data_dir}")
        return 0
    print("press Ctrl-C to stop")
    return wait_forever(server)


def _push(args: argparse.Namespace) -> int:
    prefect_env.configure()
    from videor4.annotation.routing import RoutingConfig
    from videor4.contracts.errors import UserError
    from videor4.pipelines.qc_flows import preflight, qc_push, resolve_data_root

    try:
        routing = RoutingConfig(threshold=args.threshold, audit_fraction=args.audit_fraction, seed=args.seed)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise UserError(f"--threshold and --audit-fraction must be between 0 and 1 ({exc.errors()[0]['msg']})") from exc
    preflight(args.shards, args.url, _api_key(args))
    resolve_data_root(args.shards, args.data_root)
    prefect_env.start_local_server()
    summary = qc_push(args.shards, args.url, _api_key(args), args.project, routing, data_root=args.data_root,
                      embed_media=args.embed_media, batch_size=args.batch_size, progress=not args.no_progress)
    print(json.dumps(asdict(summary)) if args.json else "\n".join(summary.lines()))
    return 0


def _pull(args: argparse.Namespace) -> int:
    prefect_env.configure()
    from videor4.pipelines.qc_flows import make_resynthesizer, preflight, qc_pull, resolve_data_root, shards_view

    preflight(args.shards, args.url, _api_key(args))
    resynthesize = None if args.no_resynthesize else make_resynthesizer(
        resolve_data_root(args.shards, args.data_root), shards_view(args.shards))
    prefect_env.start_local_server()
    summary = qc_pull(args.shards, args.url, _api_key(args), args.project, resynthesize=resynthesize)
    print(json.dumps(asdict(summary)) if args.json else "\n".join(summary.lines()))
    return 0


def _status(args: argparse.Namespace) -> int:
    from videor4.annotation.client import QCClient
    from videor4.annotation.server import is_healthy
    from videor4.contracts.errors import UserError

    if not is_healthy(args.url):
        raise UserError(f"Label Studio is not reachable at {args.url}; start it with `videor4 qc serve`")
    client = QCClient.connect(args.url, _api_key(args))
    pid = client.project_by_title(args.project)
    out: dict = {"url": args.url, "project": args.project, "project_id": pid}
    if pid is not None:
        reviews = client.fetch_reviews(pid)
        out["tasks"] = len(reviews)
        out["annotated"] = sum(bool(r.annotations) for r in reviews)
    if args.shards:
        from videor4.contracts.shard_io import qc_summary

        out["shards_qc"] = qc_summary(args.shards)
    print(json.dumps(out, indent=2))
    return 0


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("VIDEOR4_LS_URL", DEFAULT_URL),
                   help=f"Label Studio URL (default $VIDEOR4_LS_URL or {DEFAULT_URL})")
    p.add_argument("--api-key", help="API token (default $VIDEOR4_LS_TOKEN, else the serve credentials file)")
    p.add_argument("--ls-data-dir", type=Path, default=DEFAULT_LS_DATA_DIR,
                   help=f"data dir of `videor4 qc serve`, where the token is kept (default {DEFAULT_LS_DATA_DIR})")
    p.add_argument("--project", default=DEFAULT_PROJECT, help=f"project title (default {DEFAULT_PROJECT})")


def register(sub: argparse._SubParsersAction) -> None:
    qc = sub.add_parser("qc", help="human quality control in Label Studio (serve, push, pull)",
                        description="Review doubtful samples in Label Studio and write the verdicts back into "
                        "the shards. See docs/qc_engineer.md and docs/annotation.md.")
    qsub = qc.add_subparsers(dest="qc_command", metavar="SUBCOMMAND", required=True)

    p = qsub.add_parser("serve", help="run a local Label Studio (127.0.0.1, preset admin and token)")
    p.add_argument("--data-root", type=Path, help="dataset root; review media are served from <it>/qc_media")
    p.add_argument("--ls-data-dir", type=Path, default=DEFAULT_LS_DATA_DIR,
                   help=f"Label Studio data dir: database, credentials, log (default {DEFAULT_LS_DATA_DIR})")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 = network)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    p.add_argument("--label-studio-bin", type=Path,
                   help="label-studio executable (default $VIDEOR4_LABEL_STUDIO_BIN or .venv-labelstudio)")
    p.add_argument("--detach", action="store_true", help="return once the server is up (pid file in the data dir)")
    p.add_argument("--stop", action="store_true", help="stop the server a previous --detach started")
    p.set_defaults(func=_serve)

    p = qsub.add_parser("push", help="route samples by confidence and send the doubtful ones for review")
    p.add_argument("--shards", type=Path, required=True, help="shards directory (holds manifest.json)")
    _connection(p)
    p.add_argument("--threshold", type=float, default=0.8, help="confidence below this goes to humans (0.8)")
    p.add_argument("--audit-fraction", type=float, default=0.05,
                   help="share of confident samples also reviewed, to measure auto_pass errors (0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the audit draw")
    p.add_argument("--data-root", type=Path, help="dataset root (default: the manifest's data_root)")
    p.add_argument("--embed-media", action="store_true",
                   help="embed frames as data URLs instead of serving <data-root>/qc_media (remote servers)")
    p.add_argument("--batch-size", type=int, default=100, help="tasks per import request")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_push)

    p = qsub.add_parser("pull", help="apply reviewers' verdicts to the shards (idempotent)")
    p.add_argument("--shards", type=Path, required=True, help="shards directory (holds manifest.json)")
    _connection(p)
    p.add_argument("--data-root", type=Path, help="dataset root for re-synthesis (default: the manifest's)")
    p.add_argument("--no-resynthesize", action="store_true",
                   help="keep corrected trajectories as they are (marked verified=false) instead of re-running "
                   "synthesis and verification")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_pull)

    p = qsub.add_parser("status", help="server health, project task counts, and the shards' QC summary")
    _connection(p)
    p.add_argument("--shards", type=Path, help="also summarise this shards directory's QC statuses")
    p.set_defaults(func=_status)
