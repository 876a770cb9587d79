"""``fedledger chain up``: a local anvil for the ledger."""

from __future__ import annotations

import argparse
from typing import Any

from fedledger.cli.common import console
from fedledger.errors import ConfigError


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_chain_up(args: argparse.Namespace) -> int:
    import signal
    import time

    from fedledger.errors import LedgerError
    from fedledger.ledger.chain.anvil import find_anvil, install_anvil, project_root, start_anvil

    if 0 < args.port <= 65535 and not _port_free(args.port):
        # Another process (another anvil?) would answer in anvil's place.
        raise ConfigError(f"127.0.0.1:{args.port} is in use: choose another --port (0: any "
                          "free port)", field="port")  # fmt: skip
    if find_anvil() is None:
        root = project_root()
        if root is None:
            raise LedgerError("anvil not found; install it with npm (see README)")
        console.print("installing anvil from the project's package-lock.json (npm)...")
        install_anvil(root)
    signal.signal(signal.SIGTERM, _interrupt)  # stop anvil on SIGTERM as on Ctrl-C
    try:
        with start_anvil(port=args.port, block_time=args.block_time) as node:
            console.print(f"anvil listening on [bold]{node.url}[/bold] (127.0.0.1 only)")
            for account in node.accounts()[:3]:
                console.print(f"  funded test account {account.address}")
            console.print("Ctrl-C stops it")
            while node.running:
                time.sleep(0.5)
            tail = node.log_tail().strip().splitlines()
            raise LedgerError(
                f"anvil stopped by itself (exit status {node.process.returncode})"
                + (f": {tail[-1]}" if tail else "")
            )
    except KeyboardInterrupt:
        # Leaving the block stops anvil; an interrupt while it was still starting (it may
        # already answer requests) stops it too (start_anvil cleans up): a clean stop either way.
        pass
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    chain = sub.add_parser("chain", parents=[common], help="local EVM chains for the ledger")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True, metavar="ACTION")
    p = chain_sub.add_parser(
        "up",
        parents=[common],
        help="start a local anvil on 127.0.0.1 (installed from npm if missing)",
        description="Start anvil (Foundry's local EVM node, from the npm package pinned in "
        "package-lock.json) on 127.0.0.1 and keep it running until Ctrl-C.",
    )
    p.add_argument("--port", type=int, default=8545, help="port (0: any free port)")
    p.add_argument("--block-time", type=float, default=None, help="interval mining, seconds")
    p.set_defaults(func=cmd_chain_up)
