"""``fedledger audit``: replay a task and recompute every round."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedledger.cli.common import rpc_url
from fedledger.errors import ConfigError


def cmd_audit(args: argparse.Namespace) -> int:
    from fedledger.audit import audit_run, format_report, report_json

    if args.run is None and args.rpc is None:
        raise ConfigError("give --run DIR, or --rpc URL with --task and --config", field="run")
    if args.run is None and (args.task is None or args.config is None):
        raise ConfigError("with --rpc, give --task ADDRESS and --config TASK.toml", field="rpc")
    if args.rpc is not None:
        from fedledger.config import load_config

        rpc_url(args.rpc, field="rpc")
        body = args.task[2:] if args.task.startswith("0x") else ""
        if len(body) != 40 or any(c not in "0123456789abcdefABCDEF" for c in body):
            raise ConfigError(f"not an address (0x and 40 hex digits): {args.task!r}", field="task")
        if args.config is not None:
            load_config(args.config)  # a bad file fails before the chain is asked anything
    report = audit_run(
        args.run or Path("."), rpc=args.rpc, task_address=args.task, config=args.config,
        blob_dirs=args.blobs,
    )  # fmt: skip
    if args.json:
        print(report_json(report))
    else:
        for line in format_report(report):
            print(line)
    return 0 if report.ok else 1


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "audit",
        parents=[common],
        help="replay a task from its chain, fetch its blobs and recompute every round",
        description="Check that a task's training followed its rules: signatures, "
        "commitments, blobs, quorum, the aggregate of every round, scores and rewards. Prints "
        "a verdict per round; exits 0 only if everything verifies, 1 otherwise.",
    )
    p.add_argument("--run", type=Path, default=None, help="a `fedledger run` directory")
    p.add_argument("--rpc", default=None, help="JSON-RPC URL of the chain")
    p.add_argument("--task", default=None, help="the Task contract's address")
    p.add_argument("--config", type=Path, default=None, help="task configuration (TOML)")
    p.add_argument(
        "--blobs", type=Path, action="append", default=[], help="a blob directory (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_audit)
