"""Many nodes on one machine: seconds per round, memory and bytes per node against the number of
nodes (issue 16).

    python -m benchmarks.scale [--config examples/digits.toml] [--nodes 10,50,100]
                               [--rounds 3] [--chain none|embedded] [--out runs/scale]
                               [--mode consensus|gossip] [--topology regular --degree 4]
                               [--committee K]

Each size is one `fedledger run` of the task in ONE process (memory transport; ``--chain
embedded``: the in-process ledger too), started in a fresh Python process so that its peak
memory (``ru_maxrss``) is its own. Measured per size: seconds per round (the nodes' rounds,
start-up excluded), the whole run's wall time, the process's peak memory, bytes sent and
received per node and round, the final accuracy and, with a ledger, the rounds finalized. The
smallest size is the baseline of the ratios.

Written to ``--out``: scale.json, results.md and scale.png (s/round, memory and bytes per node
against nodes, log-log).

Consensus mode is all-to-all: every node fetches, checks and aggregates every update, so its
work per round grows as the square of the nodes (up to a few hundred here). Gossip mode on a
sparse topology (``--mode gossip --topology regular --degree 4``) grows linearly: it is the
mode of the thousand-node runs.

``--committee K`` (with ``--chain embedded``): ``[ledger] committee = K`` (docs/committees.md).
Each round only the K members the contract drew for it train, fetch each other's updates,
aggregate and attest; the others fetch the finalized model. A node's download per round is
then O(K), not O(nodes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.results import figure, write_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "digits.toml"

_CHILD = """
import json, resource, sys, time
from dataclasses import replace
from pathlib import Path
from fedledger.config import load_config
from fedledger.gossip.topology import TopologySpec
from fedledger.run.task import run_task

config, nodes, rounds, chain, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
    sys.argv[4], Path(sys.argv[5])
mode, kind, degree, committee = sys.argv[6], sys.argv[7], int(sys.argv[8]), int(sys.argv[9])
task = replace(load_config(config), nodes=nodes, rounds=rounds)
if committee and nodes > committee:
    task = replace(task, ledger=replace(task.ledger, committee=committee))
start = time.perf_counter()
report = run_task(task, out=out, transport="memory", chain=chain, mode=mode,
                  topology=TopologySpec(kind=kind, degree=degree), timeout=7200,
                  audit=False, overwrite=True).to_dict()
wall = time.perf_counter() - start
final = report["final"]
print(json.dumps({
    "nodes": nodes, "rounds": rounds, "chain": chain, "mode": mode, "wall_s": wall,
    "committee": task.ledger.committee,
    "s_per_round": final["wall_s_per_round"], "acc": final["acc_mean"],
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "sent_per_node_round": final["bytes_per_node_per_round"]["sent"],
    "recv_per_node_round": final["bytes_per_node_per_round"]["recv"],
    "finalized": final.get("rounds_finalized"),
}))
"""


def measure(
    config: Path, nodes: int, rounds: int, chain: str, out: Path, *,
    mode: str = "consensus", topology: str = "full", degree: int = 3, committee: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """One size, in a fresh process (``committee``: drawn where the nodes outnumber it)."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(config), str(nodes), str(rounds), chain,
         str(out / f"run-{nodes}"), mode, topology, str(degree), str(committee)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"the {nodes}-node run failed: {tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def table(rows: list[dict[str, Any]]) -> list[str]:
    base = rows[0]
    lines = [
        "| nodes | committee | s/round | x (nodes x) | wall s | peak MB | MB/node | "
        "KB sent/node/round | accuracy | finalized |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = r["s_per_round"] / base["s_per_round"]
        lines.append(
            f"| {r['nodes']} | {r.get('committee') or '-'} | {r['s_per_round']:.3f} | {ratio:.1f} "
            f"({r['nodes'] / base['nodes']:g}) | {r['wall_s']:.1f} | {r['peak_mb']:.0f} | "
            f"{r['peak_mb'] / r['nodes']:.1f} | {r['sent_per_node_round'] / 1024:.0f} | "
            f"{r['acc']:.3f} | {r['finalized'] if r['finalized'] is not None else '-'} |"
        )
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    nodes = [r["nodes"] for r in rows]
    series = (("s_per_round", "seconds per round"), ("peak_mb", "peak memory (MB)"),
              ("sent_per_node_round", "bytes sent per node and round"))  # fmt: skip
    with figure(path, nrows=1, ncols=3, figsize=(12, 3.5)) as (_, axes):
        for ax, (key, label) in zip(axes, series, strict=True):
            ax.loglog(nodes, [r[key] for r in rows], marker="o")
            ax.set_xlabel("nodes")
            ax.set_title(label)
            ax.grid(True, which="both", alpha=0.3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--nodes", default="10,50,100", help="comma-separated sizes, smallest first")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chain", default="none", choices=["none", "embedded"])
    p.add_argument("--mode", default="consensus", choices=["consensus", "gossip"])
    p.add_argument("--topology", default="full", help="gossip mode's graph (regular, ...)")
    p.add_argument("--degree", type=int, default=4, help="its degree (regular, small_world)")
    p.add_argument(
        "--committee",
        type=int,
        default=0,
        help="[ledger] committee for the sizes above it (with --chain embedded)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "scale")
    args = p.parse_args(argv)
    if args.committee and args.chain != "embedded":
        p.error("committees are drawn by the Task contract: --chain embedded")
    sizes = sorted(int(n) for n in args.nodes.split(","))
    if args.chain != "none" and args.mode != "consensus":
        p.error("a ledger runs consensus rounds: --mode consensus with --chain embedded")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sizes:
        rows.append(measure(args.config, n, args.rounds, args.chain, args.out, mode=args.mode,
                            topology=args.topology, degree=args.degree,
                            committee=args.committee))  # fmt: skip
        print(f"{n} nodes: {rows[-1]['s_per_round']:.3f} s/round, "
              f"{rows[-1]['peak_mb']:.0f} MB", flush=True)  # fmt: skip
    write_results(args.out, "scale", rows, table(rows), lambda path: plot(rows, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
