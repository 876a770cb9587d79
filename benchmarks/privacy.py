"""Utility against privacy: final accuracy for a range of epsilon targets, per task.

    python -m benchmarks.privacy [--configs examples/digits.toml,examples/breast_cancer.toml]
                                 [--epsilons 1,3,8,32,128,inf] [--rounds R] [--clip C]
                                 [--out runs/privacy]

Every cell is ``fedledger run`` of the task with ``[privacy] epsilon = E`` (the noise
multiplier calibrated by dp-accounting so that the task's rounds spend exactly E at
delta 1e-5), through :func:`fedledger.run.task.run_task`: consensus mode, every node in this
process over the in-memory transport, no ledger (differential privacy does not depend on it).
``inf`` is the task without ``[privacy]``: the baseline of the same run, against which each
cell's accuracy is given as a ratio.

The clip bound per task is about the median L2 norm of the nodes' round-1 updates of the
clean run (measured with the task's own trainer; ``--clip`` overrides it): a smaller bound
clips most updates hard, a larger one only adds noise. Client-level DP protects a node's
whole data set (and so each record in it); with ten nodes or fewer its noise dominates
(docs/privacy.md explains the figures).

With ``--secure``, every cell (the no-DP baseline too) runs with secure aggregation on the
embedded chain (it needs the ledger) and plain FedAvg: each member adds its share of the noise
(``member_noise_multiplier``) and only the sum is unmasked, so the model carries the noise of
the guarantee once, not once per member (docs/privacy.md).

Written to ``--out``: privacy.json and results.md (the table for docs/performance.md). Wall
times are printed; nothing is asserted on them.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedledger.config import AggregationConfig, PrivacyConfig, TaskConfig, load_config
from fedledger.node.consensus import Timeouts
from fedledger.run.task import run_task

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = (ROOT / "examples" / "digits.toml", ROOT / "examples" / "breast_cancer.toml")
DEFAULT_EPSILONS = (1.0, 3.0, 8.0, 32.0, 128.0, math.inf)
CLIP = {"digits": 0.5, "digits-private": 0.5, "breast_cancer": 0.4}
"""About the median round-1 update norm of each example task's nodes (0.51 for digits' MLP,
0.45 for breast_cancer's logistic regression)."""
PATIENT = Timeouts(initial=120.0, minimum=60.0, maximum=120.0)
"""One process, no crash: deadlines would only cut stragglers of a loaded machine."""


def private_task(base: TaskConfig, *, epsilon: float, rounds: int | None,
                 clip: float | None, secure: bool = False) -> TaskConfig:  # fmt: skip
    """The task with ``[privacy] epsilon = epsilon`` (none for ``inf``); with ``secure``
    aggregation (and so plain FedAvg) in every cell."""
    task = replace(base, rounds=rounds) if rounds is not None else base
    if secure:
        task = replace(task, aggregation=AggregationConfig(rule="fedavg"))
    if math.isinf(epsilon):
        return replace(task, privacy=PrivacyConfig(secure_aggregation=True) if secure else None)
    bound = clip if clip is not None else CLIP.get(task.name, 1.0)
    return replace(task, privacy=PrivacyConfig(clip=bound, epsilon=epsilon,
                                               secure_aggregation=secure))  # fmt: skip


def run_cell(task: TaskConfig, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    chain = "embedded" if task.secure_aggregation else "none"
    report = run_task(task, out=out, mode="consensus", transport="memory", chain=chain,
                      timeouts=PATIENT, audit=False)  # fmt: skip
    seconds = time.perf_counter() - start
    plan = task.privacy_plan()
    final = report.final
    spent = final.get("privacy", {}).get("epsilon", {})
    return {
        "task": task.name,
        "secure": task.secure_aggregation,
        "epsilon_target": None if plan is None else task.privacy.epsilon,  # type: ignore[union-attr]
        "clip": None if plan is None else plan.clip,
        "noise_multiplier": None if plan is None else plan.noise_multiplier,
        "epsilon_spent_max": max((v for v in spent.values() if v is not None), default=None),
        "acc": float(final["acc_mean"]),
        "rounds": task.rounds,
        "nodes": task.nodes,
        "seconds": seconds,
    }


def run_table(
    *,
    configs: Sequence[Path],
    epsilons: Sequence[float],
    out: Path,
    rounds: int | None = None,
    clip: float | None = None,
    secure: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every (task, epsilon) cell; privacy.json and results.md in ``out``. Returns the JSON."""
    out.mkdir(parents=True, exist_ok=True)
    cells: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedledger-privacy-") as tmp:
        for path in configs:
            base = load_config(path)
            clean: float | None = None
            for eps in sorted(epsilons, key=lambda e: (not math.isinf(e), e)):
                task = private_task(base, epsilon=eps, rounds=rounds, clip=clip,
                                    secure=secure)  # fmt: skip
                cell = run_cell(task, Path(tmp) / f"{task.name}-{eps:g}")
                if math.isinf(eps):
                    clean = cell["acc"]
                cell["acc_vs_clean"] = None if clean is None else cell["acc"] / clean
                cells.append(cell)
                sigma = cell["noise_multiplier"]
                echo(f"{task.name:14} epsilon {eps:>5g}: accuracy {cell['acc']:.3f}"
                     + (f" (x{cell['acc_vs_clean']:.2f} of no DP)" if not math.isinf(eps) else "")
                     + (f", noise multiplier {sigma:.3f}, clip {cell['clip']:g}"
                        if sigma is not None else "")
                     + f"; {cell['seconds']:.1f} s")  # fmt: skip
    result = {"delta": 1e-5, "secure_aggregation": secure, "cells": cells}
    (out / "privacy.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(cells))
    return result


def markdown(cells: Sequence[dict[str, Any]]) -> str:
    lines = ["| task | epsilon | noise multiplier | clip | accuracy | vs no DP |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for c in cells:
        eps = "inf (no DP)" if c["epsilon_target"] is None else f"{c['epsilon_target']:g}"
        sigma = "-" if c["noise_multiplier"] is None else f"{c['noise_multiplier']:.3f}"
        clip = "-" if c["clip"] is None else f"{c['clip']:g}"
        ratio = "-" if c["epsilon_target"] is None else f"{c['acc_vs_clean']:.2f}"
        lines.append(f"| {c['task']} ({c['nodes']} nodes, {c['rounds']} rounds) | {eps} | "
                     f"{sigma} | {clip} | {c['acc']:.3f} | {ratio} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"epsilons must be > 0 (inf: no DP), got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(str(c) for c in DEFAULT_CONFIGS))
    parser.add_argument("--epsilons", type=_floats, default=list(DEFAULT_EPSILONS))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--clip", type=float, default=None)
    parser.add_argument(
        "--secure",
        action="store_true",
        help="secure aggregation (distributed noise) on the embedded chain",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/privacy"))
    args = parser.parse_args(argv)
    configs = [Path(c) for c in args.configs.split(",") if c.strip()]
    run_table(configs=configs, epsilons=args.epsilons, out=args.out,
              rounds=args.rounds, clip=args.clip, secure=args.secure)  # fmt: skip
    print(f"written: {args.out / 'privacy.json'}, {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
