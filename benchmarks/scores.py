"""Contribution scores: what they cost per round, and how close the estimate is to exact.

    python -m benchmarks.scores [--config examples/digits.toml] [--nodes 10]
                                [--exact-nodes 6] [--out runs/scores]

One round of the task: every member trains from the initial model with fedledger's trainer;
the utility ``v(S)`` is the number of test examples the FedAvg model of ``S`` classifies
correctly, evaluated exactly in integers (:mod:`fedledger.incentives.utility`). Measured, all
in this run:

* for ``--nodes`` members: leave-one-out and GTG-Shapley (at most ``30 n`` evaluations), their
  evaluations and seconds;
* for ``--exact-nodes`` members (the first ones): exact Shapley (``2**n`` evaluations) against
  GTG-Shapley, with the Spearman rank correlation (goal: at least 0.9).

Written to ``--out``: scores.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

from fedledger.aggregation import fixedpoint as fx
from fedledger.config import TaskConfig, load_config
from fedledger.data import Dataset
from fedledger.incentives.shapley import (
    CountingUtility,
    exact_shapley,
    leave_one_out,
    permutation_shapley,
)
from fedledger.incentives.utility import RoundUtility
from fedledger.learning.torch_trainer import TorchTrainer
from fedledger.seeds import derive_seed
from fedledger.task import prepare_task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "examples" / "digits.toml"
SEED = b"benchmark round randomness".ljust(32, b"\0")


def round_utility(task: TaskConfig, datasets: Sequence[Dataset] | None = None) -> RoundUtility:
    """One round of ``task``: each member trained once from the initial model, on its own
    training data or on ``datasets`` (one per member); the test split is the validation set."""
    prepared = prepare_task(task)
    trainer = TorchTrainer.for_dataset(task.model, prepared.data.nodes[0].train)
    base = trainer.init_params(derive_seed(task.seed, "init"))
    if datasets is None:
        datasets = [node.train for node in prepared.data.nodes]
    models, weights = [], []
    for i, data in enumerate(datasets):
        fit = trainer.fit(base, data, task.train, seed=derive_seed(task.seed, "fit", 1, i))
        models.append(fx.quantize_params(fit.params))
        weights.append(fit.num_examples)
    test = prepared.data.test
    return RoundUtility(base=fx.quantize_params(base), models=models, weights=weights,
                        shapes=[p.shape for p in base], x=test.x, y=test.y)  # fmt: skip


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(*, config: Path, nodes: int, exact_nodes: int, out: Path,
        echo: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    base = load_config(config)
    task = replace(base, nodes=nodes, rounds=1)
    utility = round_utility(task)
    loo_u = CountingUtility(utility)
    loo, loo_s = _timed(lambda: leave_one_out(nodes, loo_u))
    (gtg, evaluations), gtg_s = _timed(
        lambda: permutation_shapley(nodes, utility, seed=SEED, max_evaluations=30 * nodes)
    )
    echo(f"{nodes} members: leave-one-out {loo_u.evaluations} evaluations in {loo_s:.2f} s; "
         f"GTG-Shapley {evaluations} evaluations (bound {30 * nodes}) in "
         f"{gtg_s:.2f} s")  # fmt: skip
    small = replace(base, nodes=exact_nodes, rounds=1)
    small_u = round_utility(small)
    exact, exact_s = _timed(lambda: exact_shapley(exact_nodes, small_u))
    estimate, small_evals = permutation_shapley(exact_nodes, small_u, seed=SEED,
                                                max_evaluations=30 * exact_nodes)  # fmt: skip
    rho = float(spearmanr([float(x) for x in exact], [float(x) for x in estimate]).statistic)
    echo(f"{exact_nodes} members: exact Shapley {2**exact_nodes} evaluations in {exact_s:.2f} s; "
         f"GTG-Shapley {small_evals} evaluations; Spearman {rho:.3f}")  # fmt: skip
    result = {
        "task": base.name, "config": str(config), "nodes": nodes,
        "validation_examples": len(utility.y),
        "loo": {"values": [float(x) for x in loo], "evaluations": loo_u.evaluations,
                "seconds": loo_s},
        "gtg": {"values": [float(x) for x in gtg], "evaluations": evaluations,
                "bound": 30 * nodes, "seconds": gtg_s},
        "exact_check": {"nodes": exact_nodes, "exact": [float(x) for x in exact],
                        "gtg": [float(x) for x in estimate], "spearman": rho,
                        "exact_seconds": exact_s, "gtg_evaluations": small_evals},
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result))
    return result


def markdown(r: dict[str, Any]) -> str:
    n, e = r["nodes"], r["exact_check"]
    return "\n".join([
        "| method | members | evaluations | seconds |",
        "| --- | ---: | ---: | ---: |",
        f"| leave-one-out | {n} | {r['loo']['evaluations']} | {r['loo']['seconds']:.2f} |",
        f"| GTG-Shapley (bound 30n) | {n} | {r['gtg']['evaluations']} | "
        f"{r['gtg']['seconds']:.2f} |",
        f"| exact Shapley | {e['nodes']} | {2 ** e['nodes']} | {e['exact_seconds']:.2f} |",
        f"| GTG-Shapley against exact: Spearman {e['spearman']:.3f} | {e['nodes']} | "
        f"{e['gtg_evaluations']} | |",
    ]) + "\n"  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--exact-nodes", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("runs/scores"))
    args = parser.parse_args(argv)
    if not 2 <= args.exact_nodes <= 12 or args.nodes < 2:
        parser.error("--nodes must be >= 2 and --exact-nodes in [2, 12]")
    run(config=args.config, nodes=args.nodes, exact_nodes=args.exact_nodes, out=args.out)
    print(f"written: {args.out / 'scores.json'}, {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
