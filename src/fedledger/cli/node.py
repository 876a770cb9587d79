"""``fedledger node``: run one participant's node from its node.toml."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedledger.cli.common import console, password_option
from fedledger.errors import ConfigError


def cmd_node(args: argparse.Namespace) -> int:
    import logging

    from fedledger.config.node import load_node_config
    from fedledger.run.node import run_node

    cfg = load_node_config(args.config)
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {str(cfg.state_dir)!r}: {exc.strerror or exc}",
                          field="state_dir") from exc  # fmt: skip
    logging.basicConfig(
        filename=cfg.state_dir / "node.log",
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    rounds = cfg.task.rounds

    def started(address: str) -> None:
        if cfg.chain is not None:
            stake = cfg.stake if cfg.stake is not None else cfg.task.ledger.min_stake
            console.print(f"node {address}: task {cfg.task_address} on {cfg.chain}, stake "
                          f"{stake / 10**18:g} ETH", highlight=False, soft_wrap=True)  # fmt: skip
        else:
            console.print(
                f"node {address}: {cfg.mode} mode, {rounds} rounds", highlight=False, soft_wrap=True
            )
        console.print(f"  log: {cfg.state_dir / 'node.log'}", highlight=False, soft_wrap=True)
        if cfg.chain is not None:
            console.print("  joining the task, then waiting for its start (fedledger task start)",
                          highlight=False, soft_wrap=True)  # fmt: skip

    def round_done(record: Mapping[str, Any]) -> None:
        line = f"round {record['round']}/{rounds}: accuracy {record['acc']:.3f}"
        if "finalized" in record:
            line += (f", finalized on chain ({record['attesters']} attested)"
                     if record["finalized"] else ", skipped (no quorum)")  # fmt: skip
        elif "agreeing" in record:
            line += f", {record['agreeing']} of {record['announced']} agree"
        console.print(line, highlight=False, soft_wrap=True)

    def serving(endpoint: str) -> None:
        console.print(f"task complete: serving this node's blobs at {endpoint} for audits "
                      "(Ctrl-C stops)", highlight=False, soft_wrap=True)  # fmt: skip

    summary = run_node(cfg, password_file=args.password_file, on_start=started,
                       on_round=round_done, serve=args.serve, on_serving=serving)  # fmt: skip
    console.print(f"finished: model {summary['final_model']} "
                  f"(summary: {cfg.state_dir / 'summary.json'})", highlight=False,
                  soft_wrap=True)  # fmt: skip
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "node",
        parents=[common],
        help="run one node (one participant) from a node.toml",
        description="Run one node over gRPC: its own process, data and key. Prints its "
        "address, then each round's accuracy (and, with a ledger, whether the round was "
        "finalized); exits non-zero if the task did not complete.",
    )
    p.add_argument("--config", required=True, type=Path, help="node configuration (TOML)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    password_option(p, "the node's key file, if an encrypted keystore")
    p.add_argument("--serve", action="store_true",
                   help="once the task completed, keep serving this node's blobs (to the task's "
                   "members and the auditors its owner granted read access) until Ctrl-C or "
                   "SIGTERM, then exit 0")  # fmt: skip
    p.set_defaults(func=cmd_node)
