"""Compressed updates: bytes per node and round against final accuracy (issue 16, part 2).

    python -m benchmarks.compression [--config examples/digits.toml] [--rounds 30] [--nodes N]
                                     [--schemes none,int8,topk:0.1,...] [--out runs/compression]

Each scheme is one `fedledger run` of the task with its ``[compression]`` table (consensus mode,
every node in this process over the memory transport, no ledger), one after the other in this
process; ``none`` (plain parameter blobs) is the baseline, measured in the same run. A scheme is
``none``, ``int8``, ``topk:F`` (the fraction F of each array's entries kept) or
``topk_int8:F``; error feedback is on for every compressed scheme.

Measured per scheme: the size of one update blob (exact: a compressed update's size is fixed
by the model and the scheme), the bytes each node sent per round as the run counted them
(updates served to the 9 peers plus the signed frames), both as a reduction factor against the
baseline, the final mean test accuracy and its difference from the baseline in points, whether
every node ended with the same model, and the run's wall time (printed, never asserted).

Written to ``--out``: compression.json, results.md (the table) and compression.png (final
accuracy against bytes sent per node and round, log x).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.results import figure, write_results
from fedledger.audit import initial_model
from fedledger.commit import decode
from fedledger.commit.compression import compressed_size
from fedledger.config import CompressionConfig, TaskConfig, load_config
from fedledger.node.consensus import Timeouts
from fedledger.run.task import run_task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "digits.toml"
DEFAULT_SCHEMES = ("none", "int8", "topk:0.1", "topk:0.05", "topk:0.02", "topk:0.01",
                   "topk_int8:0.1", "topk_int8:0.05", "topk_int8:0.01")  # fmt: skip

PATIENT = Timeouts(initial=120.0, minimum=60.0, maximum=120.0)
"""Deadlines no run reaches: every node is in this process and none crashes, so a deadline
could only cut a straggler of a loaded machine (as in benchmarks/robustness.py)."""


def parse_scheme(text: str) -> CompressionConfig | None:
    """``none``, ``int8``, ``topk:F`` or ``topk_int8:F`` as a ``[compression]`` table."""
    name, _, fraction = text.partition(":")
    if name == "none" and not fraction:
        return None
    if name == "int8" and not fraction:
        return CompressionConfig(quantize="int8")
    if name in ("topk", "topk_int8") and fraction:
        quantize = "int8" if name == "topk_int8" else "none"
        return CompressionConfig(quantize=quantize, topk=float(fraction))
    raise SystemExit(f"unknown scheme {text!r}: none, int8, topk:F or topk_int8:F")


def update_bytes(task: TaskConfig) -> int:
    """The size of one update blob of the task."""
    blob = initial_model(task)
    if task.compression is None:
        return len(blob)
    params = decode(blob)
    return compressed_size([(a.shape, a.dtype) for a in params], task.compression.scheme)


def measure(base: TaskConfig, scheme: str, out: Path) -> dict[str, Any]:
    task = replace(base, compression=parse_scheme(scheme))
    start = time.perf_counter()
    report = run_task(task, out=out, mode="consensus", transport="memory", chain="none",
                      timeouts=PATIENT, audit=False).to_dict()  # fmt: skip
    wall = time.perf_counter() - start
    final = report["final"]
    return {
        "scheme": scheme,
        "update_bytes": update_bytes(task),
        "sent_per_node_round": final["bytes_per_node_per_round"]["sent"],
        "acc": final["acc_mean"],
        "agree": bool(final["model_digests_agree"]),
        "rounds": final["rounds_completed"],
        "wall_s": wall,
    }


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its reduction factors and accuracy change against the first (none)."""
    base = rows[0]
    return [{**r,
             "update_x": base["update_bytes"] / r["update_bytes"],
             "sent_x": base["sent_per_node_round"] / r["sent_per_node_round"],
             "acc_points": 100 * (r["acc"] - base["acc"])} for r in rows]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| scheme | update bytes | x smaller | KB sent/node/round | x smaller | final accuracy "
        "| points vs none | models agree |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['scheme']} | {r['update_bytes']:,} | {r['update_x']:.1f} | "
            f"{r['sent_per_node_round'] / 1024:.1f} | {r['sent_x']:.1f} | {r['acc']:.4f} | "
            f"{r['acc_points']:+.2f} | {'yes' if r['agree'] else 'no'} |"
        )
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    with figure(path, figsize=(6.5, 4)) as (_, ax):
        families: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            families.setdefault(r["scheme"].split(":")[0], []).append(r)
        for name, group in families.items():
            group = sorted(group, key=lambda r: r["sent_per_node_round"])
            ax.plot([r["sent_per_node_round"] / 1024 for r in group], [r["acc"] for r in group],
                    marker="o", label=name)  # fmt: skip
            for r in group:
                if ":" in r["scheme"]:
                    ax.annotate(r["scheme"].split(":")[1],
                                (r["sent_per_node_round"] / 1024, r["acc"]),
                                textcoords="offset points", xytext=(4, 4), fontsize=7)  # fmt: skip
        base = rows[0]
        ax.axhline(base["acc"] - 0.01, color="grey", linestyle=":", linewidth=1,
                   label="none - 1 point")  # fmt: skip
        ax.axvline(base["sent_per_node_round"] / 4 / 1024, color="grey", linestyle="--",
                   linewidth=1, label="none / 4 bytes")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("KB sent per node and round")
        ax.set_ylabel("final test accuracy")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--rounds", type=int, default=None, help="default: the task's")
    p.add_argument("--nodes", type=int, default=None, help="default: the task's")
    p.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES),
                   help="comma-separated; none (the baseline) is measured first")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "compression")
    args = p.parse_args(argv)
    schemes = [s for s in args.schemes.split(",") if s and s != "none"]
    for s in schemes:
        parse_scheme(s)  # a typo fails before any run
    base = load_config(args.config)
    base = replace(base, rounds=args.rounds or base.rounds, nodes=args.nodes or base.nodes)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="compression-"))
    rows = []
    try:
        for i, scheme in enumerate(["none", *schemes]):
            rows.append(measure(base, scheme, runs / f"run-{i}"))
            r = rows[-1]
            print(f"{scheme}: {r['update_bytes']:,} B per update, "
                  f"{r['sent_per_node_round'] / 1024:.1f} KB sent/node/round, accuracy "
                  f"{r['acc']:.4f}, {r['wall_s']:.1f} s", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    rows = with_ratios(rows)
    doc = {"config": str(args.config), "nodes": base.nodes, "rounds": base.rounds, "rows": rows}
    write_results(args.out, "compression", doc, table(rows), lambda path: plot(rows, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
