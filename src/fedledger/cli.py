"""The ``fedledger`` command line.

Whatever goes wrong, ``fedledger`` prints one line on stderr and exits non-zero: a
:class:`~fedledger.errors.FedledgerError` as ``error: <message>`` with status 2, anything else
as ``error: unexpected <Type>: <message>`` with status 1; Ctrl-C exits 130 quietly. The global
``--debug`` flag (or ``FEDLEDGER_DEBUG=1`` in the environment, which reaches the node processes
of ``fedledger run``) adds the traceback; a node also writes it to its node.log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from fedledger import __version__
from fedledger.attacks.behaviour import ATTACKS
from fedledger.errors import ConfigError, FedledgerError

console = Console(stderr=True)

EXIT_ERROR = 2
"""A FedledgerError: bad input, a failed chain, ... (``error: <message>``)."""
EXIT_UNEXPECTED = 1
"""Any other exception: a bug or an untranslated third-party error."""
EXIT_INTERRUPTED = 130


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]:.3f}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _out_dir(path: Path) -> Path:
    """``--out``: created if missing; a clear error if it cannot be a directory."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot use {str(path)!r} as the output directory: "
                          f"{exc.strerror or exc}", field="out") from exc  # fmt: skip
    return path


def _rpc_url(url: str, *, field: str) -> str:
    """A JSON-RPC URL as the command line takes it: http(s), a host, a valid port."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parses the port: ValueError if out of range
    except ValueError as exc:
        raise ConfigError(f"not a JSON-RPC URL: {url!r} ({exc})", field=field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"not an http(s) JSON-RPC URL: {url!r}", field=field)
    return url


def cmd_baseline(args: argparse.Namespace) -> int:
    from fedledger.baseline import run_baseline
    from fedledger.config import load_config
    from fedledger.task import prepare_task

    cfg = load_config(args.config)
    if args.rounds is not None:
        cfg = replace(cfg, rounds=args.rounds)
    _out_dir(args.out)
    task = prepare_task(cfg)
    with _progress() as bar:
        bars: dict[str, Any] = {}

        def progress(phase: str, step: int, total: int, acc: float) -> None:
            if phase not in bars:
                bars[phase] = bar.add_task(phase, total=total, acc=0.0)
            bar.update(bars[phase], completed=step, acc=acc)

        report = run_baseline(task, progress=progress)
    path = report.write(args.out)

    table = Table(
        title=f"{escape(cfg.name)}: {cfg.nodes} nodes, {cfg.rounds} rounds, {cfg.data.partition}"
    )
    for col in ("mode", "test acc (mean / min / max)", "wall s", "s / round"):
        table.add_column(col, justify="right" if col != "mode" else "left")
    central = report.extra["central"]
    table.add_row(
        f"central ({central['epochs']} epochs)",
        f"{central['acc']:.4f}",
        f"{central['wall_s']:.2f}",
        f"{central['wall_s'] / cfg.rounds:.3f}",
    )
    f = report.final
    table.add_row(
        "fedavg (server)",
        f"{f['acc_mean']:.4f} / {f['acc_min']:.4f} / {f['acc_max']:.4f}",
        f"{f['wall_s']:.2f}",
        f"{f['wall_s_per_round']:.3f}",
    )
    Console().print(table)
    console.print(f"report: {escape(str(path))}")
    return 0


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


def cmd_run(args: argparse.Namespace) -> int:
    from fedledger.config import load_config
    from fedledger.config.overrides import with_overrides
    from fedledger.gossip.topology import TopologySpec
    from fedledger.run.task import run_task

    if args.deployer_key is not None:
        raise ConfigError("a key on the command line shows in ps and shell histories: give the "
                          "deployer's key with FEDLEDGER_DEPLOYER_KEY or --deployer-keyfile",
                          field="deployer-key")  # fmt: skip
    base = load_config(args.config)
    _out_dir(args.out)
    n = args.nodes if args.nodes is not None else base.nodes
    cfg = with_overrides(base, rounds=args.rounds, nodes=args.nodes, rule=args.rule,
                         f=round(args.attackers * n) if args.attack else 0)  # fmt: skip
    topology = TopologySpec(kind=args.topology, degree=args.degree, p=args.p)
    chain = args.chain or ("embedded" if args.mode == "consensus" else "none")
    deployer_key = None
    if args.password_file is not None and args.deployer_keyfile is None:
        raise ConfigError("--password-file unlocks the --deployer-keyfile keystore: give both",
                          field="password-file")  # fmt: skip
    if chain in ("embedded", "none"):
        if args.deployer_keyfile is not None:
            raise ConfigError("--deployer-keyfile deploys on a JSON-RPC chain: give --chain URL",
                              field="deployer-keyfile")  # fmt: skip
    else:
        from fedledger.keys import deployer_identity
        from fedledger.ledger.chain import RpcChain

        RpcChain(_rpc_url(chain, field="chain"))  # fails now, before any output, if unreachable

        deployer = deployer_identity(
            keyfile=args.deployer_keyfile, password_file=args.password_file
        )
        deployer_key = deployer.private_key if deployer is not None else None
    if chain == "embedded":
        where = f"one process over {args.transport}, embedded EVM ledger"
    elif chain == "none":
        where = "one process" if args.transport == "memory" else "one process per node, gRPC"
    else:
        where = f"one process per node, gRPC, ledger at {escape(chain)}"
    console.print(
        f"[bold]{escape(cfg.name)}[/bold]: {cfg.nodes} nodes, {cfg.rounds} rounds, "
        f"{args.mode} mode, {args.topology} topology, {where}, rule {cfg.aggregation.rule}"
    )
    with _progress() as bar:
        task_id = bar.add_task("rounds", total=cfg.rounds, acc=0.0)

        def progress(done: int, total: int, acc: float) -> None:
            bar.update(task_id, completed=done, acc=acc)

        report = run_task(
            cfg, out=args.out, mode=args.mode, transport=args.transport, topology=topology,
            mixing=args.mixing, progress=progress, timeout=args.timeout, chain=chain,
            deployer_key=deployer_key, audit=not args.no_audit, attack=args.attack,
            attackers=args.attackers,
        )  # fmt: skip
        bar.update(task_id, completed=report.final.get("rounds_completed", 0))
    f = report.final
    table = Table(
        title=f"{escape(cfg.name)}: {args.mode} mode, {cfg.nodes} nodes, {args.transport}"
    )
    for col in ("round", "test acc (mean / min / max)", "wall s", "KB sent / node", "agree"):
        table.add_column(col, justify="right")
    shown = (
        report.rounds
        if len(report.rounds) <= 10
        else report.rounds[:: max(1, len(report.rounds) // 10)]
    )
    if report.rounds and shown[-1] is not report.rounds[-1]:
        shown = [*shown, report.rounds[-1]]
    for r in shown:
        table.add_row(
            str(r.round), f"{r.acc_mean:.4f} / {r.acc_min:.4f} / {r.acc_max:.4f}",
            f"{r.wall_s:.2f}", f"{r.extra['bytes_per_node']['sent'] / 1024:.1f}",
            "yes" if r.extra["model_digests_agree"] else "no",
        )  # fmt: skip
    Console().print(table)
    Console().print(
        f"final accuracy {f['acc_mean']:.4f} (min {f['acc_min']:.4f}, max {f['acc_max']:.4f}); "
        f"{f['wall_s_per_round']:.3f} s per round; model digests agree: {f['model_digests_agree']}"
    )
    if "rounds_finalized" in f:
        rewards = f["rewards"]
        gas = f.get("gas_per_node_per_round")
        console.print(
            f"ledger: {f['rounds_finalized']} of {cfg.rounds} rounds finalized on chain; "
            f"gas per node per round {gas:,.0f}"
            if gas is not None
            else "ledger: no gas used"
        )
        console.print(
            "rewards per node: "
            + ", ".join(f"{i}: {v:,.1f}" for i, v in enumerate(rewards.values()))
            + f" (total {sum(rewards.values()):,.1f} tokens)"
        )
        if "audit_ok" in f:
            verdict = "[green]OK[/green]" if f["audit_ok"] else "[red]FAILED[/red]"
            console.print(f"audit: {verdict} (details: {escape(str(args.out / 'audit.json'))})")
    console.print(f"report: {escape(str(args.out / 'report.json'))}")
    if f.get("audit_ok") is False:
        return 1
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from fedledger.audit import audit_run, format_report, report_json
    from fedledger.errors import ConfigError

    if args.run is None and args.rpc is None:
        raise ConfigError("give --run DIR, or --rpc URL with --task and --config", field="run")
    if args.run is None and (args.task is None or args.config is None):
        raise ConfigError("with --rpc, give --task ADDRESS and --config TASK.toml", field="rpc")
    if args.rpc is not None:
        from fedledger.config import load_config

        _rpc_url(args.rpc, field="rpc")
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


def _password_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--password-file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"the password of {what}: the file's first line (mode 0600); default: "
        "$FEDLEDGER_KEY_PASSWORD. Never on the command line",
    )


_DEBUG_HELP = "on an error, print the traceback too"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedledger",
        description="Decentralized federated learning with a verifiable ledger.",
    )
    parser.add_argument("--version", action="version", version=f"fedledger {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    # --debug is global: accepted after the command too (without overriding one given before).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "baseline",
        parents=[common],
        help="train a task centrally and with server-based FedAvg (the reference)",
        description="Train the task two ways over the same partition, centrally on all the "
        "data and with classic server-based FedAvg, and write DIR/report.json.",
    )
    p.add_argument("--config", required=True, type=Path, help="task configuration (TOML)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--rounds", type=int, default=None, help="override the task's rounds")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser(
        "node",
        parents=[common],
        help="run one node (one participant) from a node.toml",
        description="Run one node over gRPC: its own process, data partition and key.",
    )
    p.add_argument("--config", required=True, type=Path, help="node configuration (TOML)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _password_option(p, "the node's key file, if an encrypted keystore")
    p.set_defaults(func=cmd_node)

    p = sub.add_parser(
        "run",
        parents=[common],
        help="run a whole task on this machine, serverless, and write report.json",
        description="Start the task's nodes (separate processes on 127.0.0.1 over gRPC, or one "
        "process over the in-memory transport), show progress, and write DIR/report.json.",
    )
    p.add_argument("--config", required=True, type=Path, help="task configuration (TOML)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--mode", default="consensus", choices=["consensus", "gossip"])
    p.add_argument("--transport", default="grpc", choices=["grpc", "memory"])
    p.add_argument(
        "--topology",
        default="full",
        choices=["full", "ring", "regular", "erdos_renyi", "small_world", "two_cliques"],
    )
    p.add_argument("--degree", type=int, default=3, help="regular / small_world degree")
    p.add_argument("--p", type=float, default=0.3, help="erdos_renyi / small_world probability")
    p.add_argument(
        "--mixing",
        default="metropolis_hastings",
        choices=["metropolis_hastings", "uniform"],
        help="gossip mode's mixing weights",
    )
    p.add_argument("--rounds", type=int, default=None, help="override the task's rounds")
    p.add_argument("--nodes", type=int, default=None, help="override the task's nodes")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    p.add_argument(
        "--chain",
        default=None,
        metavar="none|embedded|URL",
        help="the ledger: embedded (an in-process EVM, every node in this process; the default "
        "in consensus mode), a JSON-RPC URL (e.g. from `fedledger chain up`; one process per "
        "node), or none (no ledger; the default in gossip mode)",
    )
    p.add_argument(
        "--deployer-keyfile",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --chain URL: the key that deploys the task and funds the nodes, a hex key "
        "file or an encrypted keystore (mode 0600; or the hex key in $FEDLEDGER_DEPLOYER_KEY). "
        "Default on a local development chain (chain id 31337 or 1337 on 127.0.0.1): anvil's "
        "first development account",
    )
    p.add_argument("--deployer-key", default=None, help=argparse.SUPPRESS)  # refused, see cmd_run
    _password_option(p, "the --deployer-keyfile keystore")
    p.add_argument("--no-audit", action="store_true", help="skip the audit after a ledger run")
    p.add_argument(
        "--attack",
        default=None,
        choices=sorted(ATTACKS),
        help="robustness experiments: the attack the Byzantine nodes mount",
    )
    p.add_argument(
        "--attackers", type=float, default=0.0, help="with --attack: the fraction of nodes (0-1)"
    )
    p.add_argument(
        "--rule",
        default=None,
        help="override the task's aggregation rule (tolerating the attackers: f = their "
        "number); 'robust' is the default robust rule: Multi-Krum after nearest-neighbour "
        "mixing, tolerating as many attackers as it can",
    )
    p.set_defaults(func=cmd_run)

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
    return parser


def _one_line(text: str) -> str:
    """``text`` on one line: exception messages may span several (web3's, TOML's, ...)."""
    return " ".join(text.split())


def _print_error(message: str) -> None:
    # A Text, not markup: a message may hold brackets ("peers[0]", "[task]"); soft_wrap keeps
    # it on one line whatever the terminal's width.
    console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or bool(os.environ.get("FEDLEDGER_DEBUG"))
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except FedledgerError as exc:
        if debug:
            traceback.print_exc()
        _print_error(_one_line(str(exc)) or type(exc).__name__)
        return EXIT_ERROR
    except Exception as exc:  # the one place that turns anything into one line
        if debug:
            traceback.print_exc()
        elif logging.getLogger().hasHandlers():  # e.g. a node's node.log: keep the traceback
            logging.getLogger("fedledger.cli").error("unexpected error", exc_info=True)
        hint = "" if debug else " (run with --debug for the traceback)"
        _print_error(f"unexpected {type(exc).__name__}: {_one_line(str(exc))}{hint}")
        return EXIT_UNEXPECTED
    return code


if __name__ == "__main__":
    sys.exit(main())
