"""The ``fedledger`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedledger import __version__
from fedledger.errors import FedledgerError

console = Console(stderr=True)


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


def cmd_baseline(args: argparse.Namespace) -> int:
    from fedledger.baseline import run_baseline
    from fedledger.config import load_config
    from fedledger.task import prepare_task

    cfg = load_config(args.config)
    if args.rounds is not None:
        cfg = replace(cfg, rounds=args.rounds)
    task = prepare_task(cfg)
    with _progress() as bar:
        bars: dict[str, Any] = {}

        def progress(phase: str, step: int, total: int, acc: float) -> None:
            if phase not in bars:
                bars[phase] = bar.add_task(phase, total=total, acc=0.0)
            bar.update(bars[phase], completed=step, acc=acc)

        report = run_baseline(task, progress=progress)
    path = report.write(args.out)

    table = Table(title=f"{cfg.name}: {cfg.nodes} nodes, {cfg.rounds} rounds, {cfg.data.partition}")
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
    console.print(f"report: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedledger",
        description="Decentralized federated learning with a verifiable ledger.",
    )
    parser.add_argument("--version", action="version", version=f"fedledger {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "baseline",
        help="train a task centrally and with server-based FedAvg (the reference)",
        description="Train the task two ways over the same partition, centrally on all the "
        "data and with classic server-based FedAvg, and write DIR/report.json.",
    )
    p.add_argument("--config", required=True, type=Path, help="task configuration (TOML)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--rounds", type=int, default=None, help="override the task's rounds")
    p.set_defaults(func=cmd_baseline)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except FedledgerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
