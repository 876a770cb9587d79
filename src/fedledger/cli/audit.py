"""``fedledger audit``: replay a task and recompute every round."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedledger.cli.common import password_option, rpc_url
from fedledger.errors import ConfigError


def _check_address(text: str) -> str:
    body = text[2:] if text.startswith("0x") else ""
    if len(body) != 40 or any(c not in "0123456789abcdefABCDEF" for c in body):
        raise ConfigError(f"not an address (0x and 40 hex digits): {text!r}", field="task")
    return text


def cmd_audit(args: argparse.Namespace) -> int:
    from fedledger.audit import audit_run, audit_task, format_report, report_json

    if args.run is None and args.rpc is None:
        raise ConfigError("give --run DIR, or --rpc URL with --task ADDRESS", field="run")
    if args.run is None and args.task is None:
        raise ConfigError("with --rpc, give --task ADDRESS", field="task")
    if args.config is not None:
        from fedledger.config import load_config

        load_config(args.config)  # a bad file fails before the chain is asked anything
    if args.from_block < 0:
        raise ConfigError(f"must not be negative, got {args.from_block}", field="from-block")
    if args.gateway is not None:
        rpc_url(args.gateway, field="gateway")
    if args.run is not None and (args.key is not None or args.gateway is not None):
        raise ConfigError("--key and --gateway fetch blobs from the network: use them with "
                          "--rpc URL --task ADDRESS, not --run", field="run")  # fmt: skip
    if args.run is None:
        from fedledger.keys import load_key

        rpc_url(args.rpc, field="rpc")
        task = _check_address(args.task)
        identity = None
        if args.key is not None:
            identity = load_key(args.key, password_file=args.password_file)
        report = audit_task(rpc=args.rpc, task_address=task, identity=identity,
                            config=args.config, blob_dirs=args.blobs, gateway=args.gateway,
                            from_block=args.from_block)  # fmt: skip
    else:
        if args.rpc is not None:
            rpc_url(args.rpc, field="rpc")
        if args.task is not None:
            _check_address(args.task)
        report = audit_run(args.run, rpc=args.rpc, task_address=args.task, config=args.config,
                           blob_dirs=args.blobs)  # fmt: skip
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
        "message signatures and phases, blobs, quorum, exclusions, the aggregate of every "
        "round, scores and rewards. With "
        "--rpc and --task, it needs nothing else: the configuration is read from the chain and "
        "the blobs are fetched from the task's members (with --key, a key the owner granted "
        "read access, unless the task's access is public). Prints a verdict per round; exits "
        "0 only if everything verifies, 1 otherwise.",
    )
    p.add_argument("--run", type=Path, default=None, help="a `fedledger run` directory")
    p.add_argument("--rpc", default=None, help="JSON-RPC URL of the chain")
    p.add_argument("--task", default=None, help="the Task contract's address")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="task configuration (TOML); optional: the chain holds it, and a given one must "
        "match it",
    )
    p.add_argument(
        "--key",
        type=Path,
        default=None,
        help="the auditor's key file (hex or keystore) signing the blob requests to the "
        "members; default: a fresh random key (enough when the task's access is public)",
    )
    password_option(p, "the --key keystore")
    p.add_argument(
        "--blobs", type=Path, action="append", default=[], help="a blob directory (repeatable)"
    )
    p.add_argument(
        "--gateway",
        default=None,
        help="an IPFS HTTP gateway URL, asked (GET URL/ipfs/CID) for blobs nobody else serves",
    )
    p.add_argument(
        "--from-block",
        type=int,
        default=0,
        help="the block to read the task's events from (its deployment's; default 0)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_audit)
