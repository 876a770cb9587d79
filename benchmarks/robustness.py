"""The robustness matrix: aggregation rules x attacks x attacker fraction, honest accuracy.

    python -m benchmarks.robustness [--config examples/digits.toml] [--rounds 30]
                                    [--rules fedavg,median,...] [--attacks sign_flip,...]
                                    [--fractions 0,0.1,0.2,0.3] [--jobs 1] [--quick]
                                    [--out runs/robustness] [--keep-runs]

Every cell is one ``fedledger run --attack NAME --attackers FRACTION --rule RULE`` through
:func:`fedledger.run.task.run_task`: consensus mode, every node in this process over the
in-memory transport, no ledger (issue 6, section 3). The rule replaces the task's with
:func:`fedledger.config.overrides.with_overrides`, as the command line's ``--rule`` does:
it tolerates
``f`` = the number of attackers (``round(fraction * nodes)``), with the same default parameters
(trimmed_mean's beta trims f per side; centered_clipping's tau is 1.0; Multi-Krum averages
``n - f``). A cell's figure is the honest nodes' mean test accuracy after the last round
(``final.honest_acc_mean``). Fraction 0 is the rule's clean run (no attacker, ``f = 0``, as
``--rule`` without ``--attack``): it is run once per rule, shared by every attack, and each
attacked cell also gives its drop against it (``acc_drop_vs_clean``, positive = worse).

A cell whose rule cannot tolerate its number of attackers (Krum needs ``n > 2f + 2``) is
reported with no accuracy rather than run.

Written to ``--out`` (default runs/robustness/): robustness.json (``config``, ``rounds``,
``clean`` and one entry per cell), robustness.png (a heatmap, one panel per fraction) and
results.md (the tables, to paste into docs). The run directories go to a temporary directory
removed at the end, or to ``--out``/runs with ``--keep-runs``. ``--jobs N`` runs N cells at a
time in separate processes (each run trains with one torch thread). Wall times are printed;
nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from fedledger.aggregation.rules import RULES
from fedledger.attacks.behaviour import ATTACKS, PROTOCOL_ATTACKS
from fedledger.config import TaskConfig, load_config
from fedledger.config.overrides import with_overrides
from fedledger.node.consensus import Timeouts
from fedledger.run.task import run_task

ROOT = Path(__file__).resolve().parents[1]

NOT_IN_MATRIX = ("free_ride", "backdoor", *PROTOCOL_ATTACKS)
"""Not part of this matrix: the protocol attacks (free-riding, copying, withholding,
equivocation, Sybils: they need a ledger and are measured by what the attacker earns,
tests/e2e/test_ledger_run.py) and the backdoor (measured by its success rate, not by accuracy,
tests/attacks/test_attack_runs.py)."""

ROBUST = "robust"
"""The default robust rule (Multi-Krum after nearest-neighbour mixing, f = (n - 3) // 2),
as ``--rule robust``; its f does not follow the attackers' number."""

PATIENT = Timeouts(initial=120.0, minimum=60.0, maximum=120.0)
"""Deadlines no run here reaches: every node lives in one process and none crashes or
withholds (the protocol attacks are not in the matrix), so a deadline could only cut a
straggler that a loaded machine made, and the cell would measure the machine, not the rule."""

DEFAULT_RULES = (*RULES, ROBUST)
DEFAULT_ATTACKS = tuple(a for a in ATTACKS if a not in NOT_IN_MATRIX)
DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3)

QUICK_ROUNDS = 10
QUICK_RULES = ("fedavg", "trimmed_mean", ROBUST)
QUICK_ATTACKS = ("sign_flip", "gaussian", "alie")
QUICK_FRACTIONS = (0.0, 0.3)


@dataclass(frozen=True, kw_only=True)
class Run:
    """One run of the matrix: a rule against an attack (``None``: the clean run)."""

    rule: str
    attack: str | None
    fraction: float
    task: TaskConfig
    out: Path


@dataclass(frozen=True, kw_only=True)
class Outcome:
    rule: str
    attack: str | None
    fraction: float
    honest_acc: float
    attackers: tuple[int, ...]
    seconds: float


def attacker_count(task: TaskConfig, fraction: float) -> int:
    return round(fraction * task.nodes)


def rule_task(base: TaskConfig, *, rule: str, fraction: float, rounds: int) -> TaskConfig:
    """The task as ``fedledger run --rounds R --rule RULE [--attackers FRACTION]`` makes it."""
    return with_overrides(base, rounds=rounds, nodes=None, rule=rule,
                          f=attacker_count(base, fraction))  # fmt: skip


def tolerates(task: TaskConfig) -> bool:
    """Whether the task's rule accepts ``f`` Byzantine inputs out of ``nodes``."""
    info = RULES[task.aggregation.rule]
    return info.min_inputs(task.aggregation.f) <= task.nodes


def run_one(run: Run) -> Outcome:
    """Train one cell; its honest nodes' final accuracy (every node's for the clean run)."""
    start = time.perf_counter()
    report = run_task(run.task, out=run.out, mode="consensus", transport="memory", chain="none",
                      timeouts=PATIENT, audit=False, attack=run.attack,
                      attackers=run.fraction if run.attack else 0.0)  # fmt: skip
    seconds = time.perf_counter() - start
    final = report.final
    acc = final["acc_mean"] if run.attack is None else final["honest_acc_mean"]
    attackers = tuple(report.extra.get("attack", {}).get("attackers", ()))
    return Outcome(rule=run.rule, attack=run.attack, fraction=run.fraction,
                   honest_acc=float(acc), attackers=attackers, seconds=seconds)  # fmt: skip


def run_all(
    runs: Sequence[Run], jobs: int, on_done: Callable[[Outcome], None] | None = None
) -> list[Outcome]:
    """Every run, ``jobs`` at a time in fresh processes (in this process with 1 job)."""
    outcomes: list[Outcome] = []
    if jobs <= 1:
        for run in runs:
            outcomes.append(run_one(run))
            if on_done is not None:
                on_done(outcomes[-1])
        return outcomes
    # spawn: a clean interpreter per worker (no forked torch or asyncio state).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(run_one, run) for run in runs]
        for future in as_completed(futures):
            outcomes.append(future.result())
            if on_done is not None:
                on_done(outcomes[-1])
    return outcomes


def run_matrix(
    *,
    config: Path,
    rules: Sequence[str],
    attacks: Sequence[str],
    fractions: Sequence[float],
    rounds: int,
    out: Path,
    jobs: int = 1,
    keep_runs: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the matrix and write robustness.json, robustness.png and results.md to ``out``.

    Returns what robustness.json holds."""
    base = load_config(config)
    check_choices(base, rules=rules, attacks=attacks, fractions=fractions)
    out.mkdir(parents=True, exist_ok=True)
    run_root = out / "runs" if keep_runs else Path(tempfile.mkdtemp(prefix="fedledger-robust-"))
    attacked = sorted({f for f in fractions if f > 0})

    runs: list[Run] = []
    skipped: list[tuple[str, str, float]] = []
    for rule in rules:
        clean_task = rule_task(base, rule=rule, fraction=0.0, rounds=rounds)
        runs.append(Run(rule=rule, attack=None, fraction=0.0, task=clean_task,
                        out=run_root / rule / "clean"))  # fmt: skip
        for fraction in attacked:
            task = rule_task(base, rule=rule, fraction=fraction, rounds=rounds)
            for attack in attacks:
                if not tolerates(task):
                    skipped.append((rule, attack, fraction))
                    continue
                runs.append(Run(rule=rule, attack=attack, fraction=fraction, task=task,
                                out=run_root / rule / f"{attack}-{fraction:g}"))  # fmt: skip

    echo(f"{base.name}: {base.nodes} nodes, {base.data.partition} (alpha {base.data.alpha}), "
         f"{rounds} rounds, consensus mode in memory, no ledger; {len(runs)} runs "
         f"({len(rules)} clean), {jobs} at a time; {os.cpu_count()} CPUs, load average "
         f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    for rule, attack, fraction in skipped:
        f = attacker_count(base, fraction)
        echo(f"  skipped {rule} / {attack} / {fraction:g}: {f} attackers of {base.nodes} break "
             f"its bound ({RULES[rule if rule in RULES else 'multi_krum'].bound})")  # fmt: skip

    done = 0

    def progress(o: Outcome) -> None:
        nonlocal done
        done += 1
        what = "clean" if o.attack is None else f"{o.attack} x{o.fraction:g} {list(o.attackers)}"
        echo(f"  [{done:>3}/{len(runs)}] {o.rule:<18} {what:<34} honest acc "
             f"{o.honest_acc:.4f}  {o.seconds:6.1f} s")  # fmt: skip

    start = time.perf_counter()
    try:
        outcomes = run_all(runs, jobs, progress)
    finally:
        if not keep_runs:
            shutil.rmtree(run_root, ignore_errors=True)
    wall = time.perf_counter() - start

    by_run = {(o.rule, o.attack, o.fraction): o for o in outcomes}
    clean = {rule: by_run[(rule, None, 0.0)].honest_acc for rule in rules}
    cells: list[dict[str, Any]] = []
    for fraction in sorted(set(fractions)):
        for rule in rules:
            task = rule_task(base, rule=rule, fraction=fraction, rounds=rounds)
            for attack in attacks:
                if fraction == 0:
                    acc: float | None = clean[rule]
                    attackers: list[int] = []
                    seconds: float | None = by_run[(rule, None, 0.0)].seconds
                else:
                    o = by_run.get((rule, attack, fraction))
                    acc = None if o is None else o.honest_acc
                    attackers = [] if o is None else list(o.attackers)
                    seconds = None if o is None else o.seconds
                cells.append({
                    "rule": rule, "attack": attack, "fraction": fraction,
                    "honest_acc": acc,
                    "acc_drop_vs_clean": None if acc is None else clean[rule] - acc,
                    "f": task.aggregation.f, "params": dict(task.aggregation.params),
                    "attackers": attackers, "run_s": seconds,
                })  # fmt: skip

    results: dict[str, Any] = {
        "config": {
            "path": str(config), "task": base.name, "seed": base.seed, "nodes": base.nodes,
            "dataset": base.data.dataset, "partition": base.data.partition,
            "alpha": base.data.alpha, "mode": "consensus", "transport": "memory",
            "chain": "none", "rules": list(rules), "attacks": list(attacks),
            "fractions": sorted(set(fractions)), "jobs": jobs, "cpus": os.cpu_count(),
            "wall_s": wall, "runs_s_sum": sum(o.seconds for o in outcomes),
        },
        "rounds": rounds,
        "clean": clean,
        "cells": cells,
    }  # fmt: skip
    for line in format_tables(results):
        echo(line)
    (out / "robustness.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_heatmap(results, out / "robustness.png")
    (out / "results.md").write_text(markdown(results))
    echo(f"\nwall time {wall:.1f} s for {len(runs)} runs ({wall / max(1, len(runs)):.1f} s a "
         f"run at {jobs} job(s)); written: {out / 'robustness.json'}, "
         f"{out / 'robustness.png'}, {out / 'results.md'}")  # fmt: skip
    return results


def check_choices(
    task: TaskConfig, *, rules: Sequence[str], attacks: Sequence[str], fractions: Sequence[float]
) -> None:
    unknown = [r for r in rules if r not in DEFAULT_RULES]
    if unknown:
        raise SystemExit(f"unknown rules {unknown}; known: {', '.join(DEFAULT_RULES)}")
    bad = [a for a in attacks if a not in DEFAULT_ATTACKS]
    if bad:
        raise SystemExit(f"unknown or protocol attacks {bad}; known: {', '.join(DEFAULT_ATTACKS)}")
    if not rules or not attacks or not fractions:
        raise SystemExit("need at least one rule, one attack and one fraction")
    for fraction in fractions:
        if not 0 <= fraction < 0.5:
            raise SystemExit(f"attacker fractions lie in [0, 0.5), got {fraction}")
        if fraction > 0 and attacker_count(task, fraction) == 0:
            raise SystemExit(f"{fraction} of {task.nodes} nodes is no attacker")


# ------------------------------------------------------------------------------------------------
# Output


def grid(results: dict[str, Any], fraction: float) -> np.ndarray:
    """Rules x attacks honest accuracies at ``fraction`` (NaN where not run)."""
    rules, attacks = results["config"]["rules"], results["config"]["attacks"]
    values = np.full((len(rules), len(attacks)), np.nan)
    for cell in results["cells"]:
        if cell["fraction"] == fraction and cell["honest_acc"] is not None:
            values[rules.index(cell["rule"]), attacks.index(cell["attack"])] = cell["honest_acc"]
    return values


def _fmt(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.3f}"


def format_tables(results: dict[str, Any]) -> Iterable[str]:
    """One table per fraction: rows rules, columns attacks, cells honest accuracy."""
    cfg = results["config"]
    rules, attacks = cfg["rules"], cfg["attacks"]
    width = max(len(r) for r in [*rules, "rule"])
    cols = [max(6, len(a)) for a in attacks]
    for fraction in cfg["fractions"]:
        values = grid(results, fraction)
        n = round(fraction * cfg["nodes"])
        title = "no attacker: each rule's clean run" if n == 0 else f"{n} of {cfg['nodes']}"
        yield (f"\nHonest accuracy after {results['rounds']} rounds, attacker fraction "
               f"{fraction:g} ({title})")  # fmt: skip
        head = f"{'rule':<{width}} {'clean':>6} " + " ".join(
            f"{a:>{c}}" for a, c in zip(attacks, cols, strict=True)
        )
        yield head
        yield "-" * len(head)
        for i, rule in enumerate(rules):
            row = " ".join(f"{_fmt(v):>{c}}" for v, c in zip(values[i], cols, strict=True))
            yield f"{rule:<{width}} {results['clean'][rule]:6.3f} {row}"


def markdown(results: dict[str, Any]) -> str:
    """The tables as markdown, with the drop from the clean run in points, for docs/."""
    cfg = results["config"]
    rules, attacks = cfg["rules"], cfg["attacks"]
    lines = [
        f"Honest nodes' mean test accuracy after {results['rounds']} rounds: {cfg['task']}, "
        f"{cfg['nodes']} nodes, {cfg['partition']} (alpha {cfg['alpha']}), consensus mode in "
        f"memory, no ledger (`python -m benchmarks.robustness`). Each rule tolerates f = the "
        f"number of attackers; in parentheses, the drop from the rule's clean run in points.",
    ]
    drops = {(c["rule"], c["attack"], c["fraction"]): c["acc_drop_vs_clean"]
             for c in results["cells"]}  # fmt: skip
    for fraction in cfg["fractions"]:
        values = grid(results, fraction)
        n = round(fraction * cfg["nodes"])
        lines += ["", f"**{fraction:.0%} attackers** ({n} of {cfg['nodes']})", ""]
        lines.append("| rule | clean | " + " | ".join(attacks) + " |")
        lines.append("| --- | ---: |" + " ---: |" * len(attacks))
        for i, rule in enumerate(rules):
            row = []
            for j, attack in enumerate(attacks):
                drop = drops.get((rule, attack, fraction))
                v = values[i, j]
                if np.isnan(v) or drop is None:
                    row.append("–")
                elif fraction == 0:
                    row.append(f"{v:.3f}")
                else:
                    row.append(f"{v:.3f} ({-100 * drop:+.1f})")
            lines.append(f"| {rule} | {results['clean'][rule]:.3f} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_heatmap(results: dict[str, Any], path: Path) -> None:
    """One panel per fraction, rules x attacks, colour = honest accuracy in [0, 1]."""
    matplotlib.use("Agg")  # files only, no display; before pyplot's first import
    import matplotlib.pyplot as plt

    cfg = results["config"]
    rules, attacks, fractions = cfg["rules"], cfg["attacks"], cfg["fractions"]
    fig, axes = plt.subplots(
        1, len(fractions), squeeze=False, sharey=True,
        figsize=(1.2 + 0.75 * len(attacks) * len(fractions), 1.4 + 0.45 * len(rules)),
        layout="constrained",
    )  # fmt: skip
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="lightgrey")  # grey: not run
    image = None
    for ax, fraction in zip(axes[0], fractions, strict=True):
        values = grid(results, fraction)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0,
                          aspect="auto")  # fmt: skip
        for i in range(len(rules)):
            for j in range(len(attacks)):
                v = values[i, j]
                ax.text(j, i, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                        fontsize=7, color="black")  # fmt: skip
        ax.set_xticks(range(len(attacks)), attacks, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(rules)), rules, fontsize=8)
        ax.set_title(f"{fraction:.0%} attackers", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="honest accuracy", shrink=0.9)
    fig.suptitle(f"{cfg['task']}, {cfg['nodes']} nodes, {cfg['partition']} "
                 f"(alpha {cfg['alpha']}), {results['rounds']} rounds", fontsize=10)  # fmt: skip
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# Command line


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _fractions(text: str) -> list[float]:
    return [float(t) for t in _names(text)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "digits.toml")
    parser.add_argument("--rounds", type=int, default=None, help="default 30 (10 with --quick)")
    parser.add_argument("--rules", type=_names, default=None,
                        help=f"comma list (default all: {','.join(DEFAULT_RULES)})")  # fmt: skip
    parser.add_argument("--attacks", type=_names, default=None,
                        help=f"comma list (default all: {','.join(DEFAULT_ATTACKS)})")  # fmt: skip
    parser.add_argument("--fractions", type=_fractions, default=None,
                        help="comma list of attacker fractions (default 0,.1,.2,.3)")  # fmt: skip
    quick_help = (f"{QUICK_ROUNDS} rounds, rules {','.join(QUICK_RULES)}, attacks "
                  f"{','.join(QUICK_ATTACKS)}, fractions 0,0.3 (explicit flags win)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "robustness")
    parser.add_argument("--keep-runs", action="store_true",
                        help="keep every run's directory under OUT/runs")  # fmt: skip
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    run_matrix(
        config=args.config,
        rules=args.rules or list(QUICK_RULES if quick else DEFAULT_RULES),
        attacks=args.attacks or list(QUICK_ATTACKS if quick else DEFAULT_ATTACKS),
        fractions=args.fractions or list(QUICK_FRACTIONS if quick else DEFAULT_FRACTIONS),
        rounds=args.rounds or (QUICK_ROUNDS if quick else 30),
        out=args.out,
        jobs=max(1, args.jobs),
        keep_runs=args.keep_runs,
    )


if __name__ == "__main__":
    main()
