"""The command line's overrides of a task (``--rounds``, ``--nodes``, ``--rule``, ``--f``) and
the rule presets, validated like a loaded task."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fedledger.aggregation.params import required_params
from fedledger.config.task import AggregationConfig, TaskConfig, check_int
from fedledger.errors import ConfigError


def preset_params(rule: str, *, n: int, f: int) -> dict[str, Any]:
    """Values for the parameters ``rule`` cannot run without
    (:func:`fedledger.aggregation.params.required_params`), for ``n`` nodes and ``f``
    attackers: trimmed_mean's beta trims f per side; centered_clipping's tau is 1.0."""
    check_int("task.nodes", n, low=1)
    presets: dict[str, Any] = {"beta": (f + 0.5) / n, "tau": 1.0}
    missing = [name for name in required_params(rule) if name not in presets]
    if missing:  # a new required parameter needs a preset here
        raise ConfigError(f"no preset for {', '.join(missing)}: set it in the task file",
                          field=f"aggregation.{missing[0]}")  # fmt: skip
    return {name: presets[name] for name in required_params(rule)}


def with_overrides(
    task: TaskConfig,
    *,
    rounds: int | None,
    nodes: int | None,
    rule: str | None = None,
    f: int | None = None,
) -> TaskConfig:
    """The task with the command line's overrides applied (and validated again). ``rule``
    replaces the aggregation rule, tolerating ``f`` Byzantine inputs, with default parameters
    where the rule needs some (:func:`preset_params`). ``rule="robust"`` is
    :func:`robust_rule`."""
    changes: dict[str, Any] = {}
    if rounds is not None:
        changes["rounds"] = rounds
    if nodes is not None:
        changes["nodes"] = nodes
    if rule == "robust":
        # A defender does not know how many attack: the robust rule tolerates all it can.
        changes["aggregation"] = robust_rule(nodes if nodes is not None else task.nodes)
    elif rule is not None:
        n = nodes if nodes is not None else task.nodes
        tolerate = 0 if rule == "fedavg" else (f or 0)
        params = preset_params(rule, n=n, f=tolerate)
        changes["aggregation"] = AggregationConfig(rule=rule, f=tolerate, params=params)
    return replace(task, **changes) if changes else task


def robust_rule(n: int, f: int | None = None) -> AggregationConfig:
    """fedledger's default robust rule: Multi-Krum after nearest-neighbour mixing, tolerating
    ``f`` Byzantine inputs -- by default as many as Multi-Krum can among ``n``
    (``n > 2f + 2``). Measured on the reference task (docs/aggregation.md, "Default robust
    rule"): with 30 % attackers it stays within 3 points of its clean run against sign
    flipping, Gaussian noise, label flipping and adaptive ALIE, and stops the backdoor."""
    most = max(0, (n - 3) // 2)
    tolerate = f or most
    if tolerate == 0:
        raise ConfigError(f"{n} nodes are too few for a robust rule (Multi-Krum needs "
                          "n > 2f + 2 with f >= 1)", field="aggregation.rule")  # fmt: skip
    return AggregationConfig(rule="multi_krum", f=tolerate, params={"nnm": True})
