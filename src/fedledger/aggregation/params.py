"""The aggregation rules' parameters: one table, the single description of each.

A task's ``[aggregation]`` table holds ``rule``, ``f`` and the rule's parameters. Each parameter
is described here once -- its type, its range, which rules take it, whether it is required --
and everything else reads this table: :data:`fedledger.aggregation.rules.RULES` (each rule's
``params``), the task configuration's validation (:func:`check_rule_params`, at load, so a bad
value is a :class:`~fedledger.errors.ConfigError` naming ``aggregation.<key>`` instead of a
failure in every round), and the command line's rule presets
(:mod:`fedledger.config.overrides`, which fills in :func:`required_params`).

``rules = None`` marks a parameter every rule takes (less ``except_rules``): those are applied
by :func:`fedledger.aggregation.rules.aggregate` around the rule (a norm screen, nearest-neighbour
mixing, reputation). Values are checked as given and never rewritten, so the canonical JSON of a
task's parameters (the ledger's ``rule_params_digest``) is what the file says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fedledger.errors import ConfigError

Kind = Literal["int", "real", "bool"]

RULE_NAMES = (
    "fedavg",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "centered_clipping",
    "geometric_median",
)
"""Every rule, in :data:`fedledger.aggregation.rules.RULES` order."""


@dataclass(frozen=True, kw_only=True)
class RuleParam:
    """One parameter of ``[aggregation]``: a number (``int`` or ``real``) in a range, or a bool.

    ``real`` accepts integers too (``tau = 1``) and refuses NaN and infinities; ``int`` refuses
    floats and booleans. ``low``/``high`` bound the value (``None``: unbounded), open when
    ``low_open``/``high_open``. ``requires``: another parameter this one only applies with.
    """

    name: str
    kind: Kind
    rules: tuple[str, ...] | None
    """The rules that take it; None: every rule but ``except_rules``."""
    except_rules: tuple[str, ...] = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    required: bool = False
    default: int | float | bool | None = None
    """What the rule uses when the parameter is absent (None: nothing, or a derived value)."""
    requires: str | None = None
    doc: str = ""

    def applies_to(self, rule: str) -> bool:
        if self.rules is None:
            return rule not in self.except_rules
        return rule in self.rules

    @property
    def expects(self) -> str:
        """The type and range in words: ``a number in (0, 1]``, ``an integer >= 1``."""
        if self.kind == "bool":
            return "true or false"
        what = "an integer" if self.kind == "int" else "a finite number"
        low, high = self.low, self.high
        if low is not None and high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} in {left}{low:g}, {high:g}{right}"
        if low is not None:
            return f"{what} {'>' if self.low_open else '>='} {low:g}"
        if high is not None:
            return f"{what} {'<' if self.high_open else '<='} {high:g}"
        return what

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not a valid value of this parameter, or None when it is."""
        bad = f"must be {self.expects}, got {value!r}"
        if self.kind == "bool":
            return None if isinstance(value, bool) else bad
        if isinstance(value, bool) or not isinstance(value, int | float):
            return bad
        if self.kind == "int" and not isinstance(value, int):
            return bad
        if isinstance(value, float) and not math.isfinite(value):
            return bad
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return bad
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return bad
        return None


_PARAMS = (
    RuleParam(name="max_weight_fraction", kind="real", rules=("fedavg",), low=0.0,
              low_open=True, high=1.0,
              doc="caps any one participant's share of the total weight"),
    RuleParam(name="beta", kind="real", rules=("trimmed_mean",), low=0.0, high=0.5,
              high_open=True, required=True,
              doc="fraction trimmed at each end; floor(beta * n) must be >= f"),
    RuleParam(name="m", kind="int", rules=("multi_krum",), low=1,
              doc="how many inputs are averaged (default n - f; at most n - f)"),
    RuleParam(name="tau", kind="real", rules=("centered_clipping",), low=0.0, low_open=True,
              required=True, doc="clipping radius"),
    RuleParam(name="iterations", kind="int", rules=("centered_clipping",), low=1,
              high=10_000, default=1, doc="clipping steps (capped: a round must end)"),
    RuleParam(name="max_iter", kind="int", rules=("geometric_median",), low=1, high=100_000,
              default=100, doc="Weiszfeld iterations, at most (capped: a round must end)"),
    RuleParam(name="tol", kind="real", rules=("geometric_median",), low=0.0, default=1e-6,
              doc="stop when the estimate moves less than this"),
    RuleParam(name="norm_bound", kind="real", rules=None, low=0.0, low_open=True,
              doc="reject steps longer than this times the round's median step"),
    RuleParam(name="nnm", kind="bool", rules=None, except_rules=("fedavg",), default=False,
              doc="nearest-neighbour mixing before the rule"),
    RuleParam(name="min_reputation", kind="real", rules=None, low=0.0, high=1.0,
              doc="reject authors selected in fewer than this share of their updates"),
    RuleParam(name="reputation_after", kind="int", rules=None, low=1, default=3,
              requires="min_reputation",
              doc="updates before min_reputation applies to an author"),
    RuleParam(name="reputation_rewards", kind="bool", rules=None, default=False,
              doc="weight scores by (1 + selections) / (1 + updates)"),
)  # fmt: skip

RULE_PARAMS: Mapping[str, RuleParam] = {p.name: p for p in _PARAMS}
"""Every parameter of ``[aggregation]`` besides ``rule`` and ``f``, by name."""

REPUTATION_PARAMS = ("min_reputation", "reputation_rewards")
"""The parameters that need each input's on-chain reputation (so a ledger)."""


def rule_params(rule: str) -> tuple[str, ...]:
    """The parameters that only ``rule`` (and maybe other rules) takes, not the any-rule ones."""
    return tuple(p.name for p in _PARAMS if p.rules is not None and rule in p.rules)


def allowed_params(rule: str) -> tuple[str, ...]:
    """Every parameter ``rule`` accepts, its own and the any-rule ones."""
    return tuple(p.name for p in _PARAMS if p.applies_to(rule))


def required_params(rule: str) -> tuple[str, ...]:
    """The parameters ``rule`` cannot run without."""
    return tuple(p.name for p in _PARAMS if p.required and p.applies_to(rule))


def check_rule_params(
    rule: str, params: Mapping[str, Any], *, section: str = "aggregation"
) -> None:
    """Raise :class:`ConfigError` (field ``<section>.<key>``) unless ``params`` are valid for
    ``rule``: known keys the rule takes, each of its type and in its range, required ones
    present, and any parameter another one ``requires`` given with it."""
    for key, value in params.items():
        where = f"{section}.{key}"
        param = RULE_PARAMS.get(key) if isinstance(key, str) else None
        if param is None or not param.applies_to(rule):
            allowed = ", ".join(allowed_params(rule))
            if param is not None and param.rules is None:
                why = f"{key} cannot be used with {rule}"
            else:
                why = f"{rule} has no parameter {key!r}"
            raise ConfigError(f"{why} (parameters: {allowed})", field=where)
        problem = param.problem(value)
        if problem is not None:
            raise ConfigError(problem, field=where)
        if param.requires is not None and param.requires not in params:
            raise ConfigError(f"applies with {param.requires} only; set it too, or remove "
                              f"{key}", field=where)  # fmt: skip
    for key in required_params(rule):
        if key not in params:
            p = RULE_PARAMS[key]
            raise ConfigError(f"{rule} needs {key} ({p.expects}: {p.doc})",
                              field=f"{section}.{key}")  # fmt: skip


def check_rule_for_nodes(
    rule: str, params: Mapping[str, Any], *, nodes: int, f: int, section: str = "aggregation"
) -> None:
    """The parameters' bounds that depend on the task's ``nodes`` and on ``f`` (after
    :func:`check_rule_params`): trimmed_mean's ``floor(beta * nodes) >= f`` and multi_krum's
    ``m <= nodes - f``. With fewer valid inputs in a round the rule itself checks again."""
    if rule == "trimmed_mean" and "beta" in params:
        beta = params["beta"]
        if int(beta * nodes) < f:
            trimmed = int(beta * nodes)
            raise ConfigError(
                f"beta={beta} trims {trimmed} of {nodes} nodes per side, fewer than f={f}",
                field=f"{section}.beta",
            )
    if rule == "multi_krum" and "m" in params and params["m"] > nodes - f:
        raise ConfigError(f"must be <= nodes - f = {nodes - f}, got {params['m']}",
                          field=f"{section}.m")  # fmt: skip
