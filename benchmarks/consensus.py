"""Consensus mode against the in-process FedAvg loop, on the same task, in one run.

    python -m benchmarks.consensus [--config examples/digits.toml] [--rounds N] [--out DIR]

Runs, one after another on this machine:

1. the in-process server-based FedAvg loop (``fedledger baseline``'s reference; no network);
2. consensus mode over the in-memory transport (every node in this process);
3. consensus mode over gRPC, one OS process per node on 127.0.0.1.

and prints seconds per round and bytes per node per round, with ratios to (1). Wall times per
round exclude process start-up (importing torch, loading data): they run from the moment every
node is ready to the end of the last round. No assertion is made on time.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedledger.baseline import run_fedavg
from fedledger.config import load_config
from fedledger.run.task import run_task
from fedledger.task import prepare_task

ROOT = Path(__file__).resolve().parents[1]

FLOWER_S_PER_ROUND = 0.35
"""Flower 1.42's simulation engine on this task and machine kind, as measured for the project
brief (not measured here): the target for consensus mode over gRPC."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "digits.toml")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="keep run directories here")
    args = parser.parse_args()
    task = load_config(args.config)
    if args.rounds:
        task = replace(task, rounds=args.rounds)
    out = args.out or Path(tempfile.mkdtemp(prefix="fedledger-bench-"))

    rows: list[dict[str, Any]] = []
    prepared = prepare_task(task)
    start = time.perf_counter()
    report, _ = run_fedavg(prepared)
    rows.append({
        "mode": "fedavg, in-process loop (baseline)",
        "s_per_round": (time.perf_counter() - start) / task.rounds,
        "acc": report.final["acc_mean"], "bytes": 0.0, "agree": True,
    })  # fmt: skip
    for transport in ("memory", "grpc"):
        rep = run_task(task, out=out / f"consensus-{transport}", transport=transport, chain="none",
                       timeout=1800).to_dict()  # fmt: skip
        f = rep["final"]
        b = f["bytes_per_node_per_round"]
        rows.append({
            "mode": f"consensus, {transport}" + (", 1 process/node" if transport == "grpc" else ""),
            "s_per_round": f["wall_s_per_round"], "acc": f["acc_mean"],
            "bytes": (b["sent"] + b["recv"]) / 2, "agree": f["model_digests_agree"],
        })  # fmt: skip

    base = rows[0]["s_per_round"]
    print(f"\n{task.name}: {task.nodes} nodes, {task.rounds} rounds, rule {task.aggregation.rule}")
    header = f"{'mode':<40} {'s/round':>8} {'x loop':>7} {'KB/node/round':>14} {'acc':>7} agree"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['mode']:<40} {r['s_per_round']:8.3f} {r['s_per_round'] / base:7.1f} "
              f"{r['bytes'] / 1024:14.1f} {r['acc']:7.4f} {r['agree']}")  # fmt: skip
    grpc = rows[-1]["s_per_round"]
    print(f"\nconsensus over gRPC / Flower 1.42 simulation ({FLOWER_S_PER_ROUND} s/round, quoted "
          f"from the brief, not measured here): {grpc / FLOWER_S_PER_ROUND:.2f}")  # fmt: skip
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (baseline + in-memory run): {rss:.0f} MiB")
    (out / "consensus.json").write_text(json.dumps(rows, indent=2))
    print(f"figures: {out / 'consensus.json'}")


if __name__ == "__main__":
    main()
