"""``fedledger explorer``: a local web page on a run directory or a task on a chain."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedledger.cli.common import rpc_url
from fedledger.errors import ConfigError


def cmd_explorer(args: argparse.Namespace) -> int:
    from fedledger.cli.task import check_address

    if (args.run is None) == (args.rpc is None):
        raise ConfigError("give --run DIR, or --rpc URL with --task ADDRESS", field="run")
    if args.run is None and args.task is None:
        raise ConfigError("with --rpc, give --task ADDRESS", field="task")
    for name in ("task", "governor", "nft"):
        if args.run is not None and getattr(args, name) is not None:
            raise ConfigError(f"--{name} goes with --rpc; a run directory names its own",
                              field=name)  # fmt: skip
    if args.from_block < 0:
        raise ConfigError(f"must be >= 0, got {args.from_block}", field="from-block")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"must be a port number in [0, 65535], got {args.port}", field="port")
    if args.rpc is not None:
        rpc_url(args.rpc, field="rpc")
        args.task = check_address(args.task, field="task")
        for name in ("governor", "nft"):
            if getattr(args, name) is not None:
                setattr(args, name, check_address(getattr(args, name), field=name))

    from fedledger.explorer.app import create_app, listen, serve
    from fedledger.explorer.data import open_source

    source = open_source(run=args.run, rpc=args.rpc, task=args.task, from_block=args.from_block,
                         governor=args.governor, nft=args.nft)  # fmt: skip
    source.snapshot()  # a broken run directory or an unreachable chain fails here, in one line
    sock = listen(args.port)

    def ready(url: str) -> None:
        print(f"fedledger explorer: {url}  (Ctrl-C to stop)", flush=True)

    # The server's own warnings (a bad request, an error in a page) on stderr, one line each.
    import logging

    server_log = logging.getLogger("uvicorn")
    if not server_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("fedledger explorer: %(levelname)s %(message)s"))
        server_log.addHandler(handler)
        server_log.setLevel(logging.WARNING)

    serve(create_app(source), sock, ready=ready)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "explorer",
        parents=[common],
        help="a local web page on a task: rounds, models, accuracy, rewards, network, audits",
        description="Serve a web page on 127.0.0.1 that shows a run directory, or a task on a "
        "JSON-RPC chain: the task's rules and members, a timeline of the rounds, each round's "
        "contributions and model, accuracy, rewards and stake, the network; an audit button "
        "per round recomputes it. The page follows a run in progress. Prints the URL.",
    )
    p.add_argument(
        "--run",
        type=Path,
        default=None,
        metavar="DIR",
        help="a `fedledger run` directory (finished or in progress)",
    )
    p.add_argument("--rpc", default=None, metavar="URL", help="JSON-RPC URL of the chain")
    p.add_argument("--task", default=None, metavar="ADDRESS", help="the Task's address (--rpc)")
    p.add_argument(
        "--governor",
        default=None,
        metavar="ADDRESS",
        help="with --rpc: the task's Governor (default: found on chain, when the task is governed)",
    )
    p.add_argument(
        "--nft",
        default=None,
        metavar="ADDRESS",
        help="with --rpc: the task's model NFT contract (printed by `task deploy`), to list the "
        "minted models",
    )
    p.add_argument(
        "--from-block",
        type=int,
        default=0,
        metavar="N",
        help="with --rpc: read the task's events from block N on (default 0)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=0,
        metavar="N",
        help="the port on 127.0.0.1 (default 0: a free one, printed)",
    )
    p.set_defaults(func=cmd_explorer)
