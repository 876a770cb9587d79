"""The fault suite's long matrix: every scenario of tests/faults/cluster.py, several runs each,
on five namespaced hosts (root, Linux), and churn's cost in accuracy.

    sudo python -m benchmarks.faults [--runs 3] [--scenarios kill,pause,...] [--churn]
                                     [--churn-quorum Q] [--churn-seeds N]
                                     [--out DIR] [--json FILE]

A run is one task (tests/faults/cluster.py's small digits task, with enough rounds for the
scenarios) during which the nemesis plays every chosen scenario once, in a seeded random order,
checking the invariants after each; the audit runs at the end of each run (its failure counts
as a violation of every scenario of the run). Prints, per scenario: runs, invariant violations
(the goal is 0), rounds lost (from the round open at the heal to the first finalized after it;
mean and worst) and recovery time (chain seconds from the heal to that finalization; mean and
worst). ``--churn`` adds three runs of a 12-round task (its data split evenly: see
tests/faults/cluster.py's small_task), 0 %, 10 % and 30 % of the nodes leaving and coming
back each round, side by side, and their final accuracy (``--churn-seeds N``: N such
matrices with their own seeds, and the mean; ``--churn-quorum Q``: the churn task's quorum).
``--runs 4 --churn`` takes about 20 minutes on 2 cores. docs/faults.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.faults.cluster import SCENARIOS, Cluster, Outcome, churn_matrix, play_all, small_task
from tests.netns.harness import Network, unavailable

ROUNDS_PER_SCENARIO = 5
CHURN_ROUNDS = 12


def one_run(out: Path, scenarios: list[str], seed: int) -> list[Outcome]:
    order = random.Random(seed).sample(scenarios, len(scenarios))
    task = small_task(rounds=ROUNDS_PER_SCENARIO * len(order) + 4, seed=seed)
    with Network(task.nodes, out / "net") as net:
        cluster = Cluster(net, task, out / "run")
        cluster.start()
        nemesis, final = play_all(cluster, order, seed=seed)
        for outcome in nemesis.outcomes:
            outcome.violations += final
        return nemesis.outcomes


def table(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    by: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by[o.scenario].append(o)
    rows = []
    for scenario in SCENARIOS:
        if scenario not in by:
            continue
        runs = by[scenario]
        lost = [o.rounds_lost for o in runs if o.rounds_lost is not None]
        rec = [o.recovery for o in runs if o.recovery is not None]
        rows.append({
            "scenario": scenario, "runs": len(runs),
            "violations": sum(len(o.violations) for o in runs),
            "rounds_lost_mean": statistics.mean(lost) if lost else None,
            "rounds_lost_max": max(lost) if lost else None,
            "recovery_s_mean": statistics.mean(rec) if rec else None,
            "recovery_s_max": max(rec) if rec else None,
            "unrecovered": sum(1 for o in runs if o.rounds_lost is None),
            "examples": sorted({v for o in runs for v in o.violations})[:3],
        })  # fmt: skip
    return rows


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--churn", action="store_true")
    parser.add_argument(
        "--churn-quorum",
        type=float,
        default=None,
        help="the churn task's quorum (default: the task's, 0.67)",
    )
    parser.add_argument(
        "--churn-seeds",
        type=int,
        default=1,
        help="churn matrices to play, each with its own seed (default 1)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.churn_seeds < 1:
        raise SystemExit(f"--churn-seeds must be >= 1, got {args.churn_seeds}")
    if args.churn_quorum is not None and not 0 < args.churn_quorum <= 1:
        raise SystemExit(f"--churn-quorum must be in (0, 1], got {args.churn_quorum}")
    reason = unavailable()
    if reason is not None:
        raise SystemExit(f"cannot run: {reason}")
    scenarios = [s for s in args.scenarios.split(",") if s]
    out = args.out or Path(tempfile.mkdtemp(prefix="fedledger-faults-"))
    outcomes: list[Outcome] = []
    started = time.monotonic()
    for run in range(args.runs):
        outcomes += one_run(out / f"run{run}", scenarios, seed=100 + run)
        print(f"run {run + 1}/{args.runs} done ({time.monotonic() - started:.0f} s)", flush=True)
    rows = table(outcomes)
    print("\n| scenario | runs | invariant violations | rounds lost (mean / worst) | "
          "recovery, chain s (mean / worst) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['scenario']} | {r['runs']} | {r['violations']} | "
              f"{fmt(r['rounds_lost_mean'])} / {fmt(r['rounds_lost_max'])} | "
              f"{fmt(r['recovery_s_mean'])} / {fmt(r['recovery_s_max'])} |")  # fmt: skip
    for r in rows:
        for example in r["examples"]:
            print(f"  {r['scenario']}: {example}")
    churn: dict[str, float] = {}
    churn_runs: list[dict[str, float]] = []
    if args.churn:
        shares = (0.0, 0.1, 0.3)
        task = small_task(rounds=CHURN_ROUNDS, iid=True)
        if args.churn_quorum is not None:
            task = replace(task, ledger=replace(task.ledger, quorum=args.churn_quorum))
        for k in range(args.churn_seeds):
            started = time.monotonic()
            accuracy = churn_matrix(out / f"churn-{k}", task, shares, seed=7 + k)
            churn_runs.append({f"{share:.0%}": acc for share, acc in accuracy.items()})
            print(f"churn matrix {k + 1}/{args.churn_seeds}: "
                  f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
        names = list(churn_runs[0])
        churn = {n: statistics.mean(r[n] for r in churn_runs) for n in names}
        print(f"\nchurn: {CHURN_ROUNDS} rounds, quorum {task.ledger.quorum:g}, the three runs "
              f"side by side, {len(churn_runs)} seed(s)")  # fmt: skip
        print(
            "| churn per round | final accuracy (each seed) | mean | mean vs. no churn (points) |"
        )
        print("| --- | --- | --- | --- |")
        for n in names:
            each = ", ".join(f"{r[n]:.3f}" for r in churn_runs)
            print(f"| {n} | {each} | {churn[n]:.3f} | {100 * (churn[n] - churn['0%']):+.1f} |")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"scenarios": rows, "churn": churn, "churn_runs": churn_runs}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
