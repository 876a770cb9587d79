"""``fedledger node``: run one participant's node from its node.toml."""

from __future__ import annotations

import argparse
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
    summary = run_node(cfg, password_file=args.password_file)
    console.print(f"node {cfg.index} finished: model {summary['final_model']}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "node",
        parents=[common],
        help="run one node (one participant) from a node.toml",
        description="Run one node over gRPC: its own process, data partition and key.",
    )
    p.add_argument("--config", required=True, type=Path, help="node configuration (TOML)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    password_option(p, "the node's key file, if an encrypted keystore")
    p.set_defaults(func=cmd_node)
