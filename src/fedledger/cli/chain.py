"""``fedledger chain up``: a local anvil for the ledger, its chain kept across restarts."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rich.markup import escape

from fedledger.cli.common import console
from fedledger.errors import ConfigError

STATE_FILE = "anvil-state.json"
"""The file, in the data directory, that holds the chain of ``fedledger chain up``."""
_LOCK_FILE = "anvil-state.lock"


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/fedledger/chain``, or ``~/.local/share/fedledger/chain`` when
    XDG_DATA_HOME is unset or not absolute (the XDG base directory specification)."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "fedledger" / "chain"


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """The data directory, made (mode 0700) and held for this command only: two anvils
    dumping into one state file would overwrite each other's chain."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = (data_dir / _LOCK_FILE).open("a")
    except OSError as exc:
        raise ConfigError(f"cannot use {str(data_dir)!r} as the chain's data directory: "
                          f"{exc.strerror or exc}", field="data-dir") from exc  # fmt: skip
    with handle:
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(
                f"another `fedledger chain up` is using {str(data_dir)!r}: stop it, or give "
                "another --data-dir",
                field="data-dir",
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    from fedledger.errors import LedgerError
    from fedledger.ledger.chain.anvil import find_anvil, install_anvil, project_root

    if 0 < args.port <= 65535 and not _port_free(args.port):
        # Another process (another anvil?) would answer in anvil's place.
        raise ConfigError(f"127.0.0.1:{args.port} is in use: choose another --port (0: any "
                          "free port)", field="port")  # fmt: skip
    if args.ephemeral and args.data_dir is not None:
        raise ConfigError("--ephemeral keeps the chain in memory: no --data-dir",
                          field="ephemeral")  # fmt: skip
    if args.state_interval <= 0:
        raise ConfigError(f"must be a positive number of seconds, got {args.state_interval}",
                          field="state-interval")  # fmt: skip
    if find_anvil() is None:
        root = project_root()
        if root is None:
            raise LedgerError("anvil not found; install it with npm (see README)")
        console.print("installing anvil from the project's package-lock.json (npm)...")
        install_anvil(root)
    if args.ephemeral:
        return _serve(args, None)
    data_dir = (args.data_dir if args.data_dir is not None else default_data_dir()).absolute()
    with _data_dir_lock(data_dir):
        return _serve(args, data_dir / STATE_FILE)


def _serve(args: argparse.Namespace, state: Path | None) -> int:
    import signal
    import time

    from fedledger.errors import LedgerError
    from fedledger.ledger.chain.anvil import start_anvil

    signal.signal(signal.SIGTERM, _interrupt)  # stop anvil on SIGTERM as on Ctrl-C
    try:
        with start_anvil(port=args.port, block_time=args.block_time, state=state,
                         state_interval=args.state_interval) as node:  # fmt: skip
            console.print(f"anvil listening on [bold]{node.url}[/bold] (127.0.0.1 only)")
            if state is None:
                console.print("chain state: in memory only (--ephemeral), lost when it stops")
            elif node.state_loaded:
                block = node.chain().block_number()
                console.print(f"chain state: {escape(str(state))} (reloaded, block {block})")
            else:
                console.print(f"chain state: {escape(str(state))} (new chain)")
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
        # Leaving the block stops anvil (SIGTERM, then it dumps its state and exits); an
        # interrupt while it was still starting (it may already answer requests) stops it too
        # (start_anvil cleans up): a clean stop either way.
        pass
    if state is not None and state.is_file():
        console.print(f"anvil stopped; chain state saved in {escape(str(state))}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    chain = sub.add_parser("chain", parents=[common], help="local EVM chains for the ledger")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True, metavar="ACTION")
    p = chain_sub.add_parser(
        "up",
        parents=[common],
        help="start a local anvil on 127.0.0.1 (installed from npm if missing)",
        description="Start anvil (Foundry's local EVM node, from the npm package pinned in "
        "package-lock.json) on 127.0.0.1 and keep it running until Ctrl-C. Its chain is kept "
        f"in DATA_DIR/{STATE_FILE}: reloaded on the next start, saved every few seconds and "
        "when it stops.",
    )
    p.add_argument("--port", type=int, default=8545, help="port (0: any free port)")
    p.add_argument("--block-time", type=float, default=None, help="interval mining, seconds")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"where the chain is kept ({STATE_FILE}); default: "
        "$XDG_DATA_HOME/fedledger/chain, else ~/.local/share/fedledger/chain",
    )
    p.add_argument(
        "--ephemeral",
        action="store_true",
        help="keep the chain in memory only: a new chain on every start",
    )
    p.add_argument(
        "--state-interval",
        type=int,
        default=5,
        metavar="SECONDS",
        help="seconds between two saves of the chain (what a crash may lose; default: 5)",
    )
    p.set_defaults(func=cmd_chain_up)
