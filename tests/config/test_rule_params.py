"""The aggregation rules' parameters: one schema (fedledger.aggregation.params), used by the
rules' registry and by the task configuration, so every parameter is typed and range-checked
when a task loads instead of failing in every round."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import pytest

from fedledger.aggregation.params import (
    RULE_NAMES,
    RULE_PARAMS,
    allowed_params,
    check_rule_params,
    required_params,
    rule_params,
)
from fedledger.aggregation.rules import RULES, aggregate
from fedledger.config import AggregationConfig, TaskConfig, parse_config
from fedledger.errors import AggregationError, ConfigError

DOCUMENTED = {
    "fedavg": {"max_weight_fraction"},
    "median": set(),
    "trimmed_mean": {"beta"},
    "krum": set(),
    "multi_krum": {"m"},
    "centered_clipping": {"tau", "iterations"},
    "geometric_median": {"max_iter", "tol"},
}
ANY_RULE = {"norm_bound", "nnm", "min_reputation", "reputation_after", "reputation_rewards"}

# One valid value for each parameter, and the rule and f it is checked with.
VALID: dict[str, tuple[str, int, Any]] = {
    "max_weight_fraction": ("fedavg", 0, 0.5),
    "beta": ("trimmed_mean", 1, 0.2),
    "m": ("multi_krum", 1, 3),
    "tau": ("centered_clipping", 1, 1.0),
    "iterations": ("centered_clipping", 1, 2),
    "max_iter": ("geometric_median", 1, 50),
    "tol": ("geometric_median", 1, 1e-5),
    "norm_bound": ("median", 1, 3.0),
    "nnm": ("median", 1, True),
    "min_reputation": ("median", 1, 0.5),
    "reputation_after": ("median", 1, 2),
    "reputation_rewards": ("median", 1, True),
}
# Values outside each parameter's type or range.
INVALID: dict[str, list[Any]] = {
    "max_weight_fraction": ["x", 0, 1.01, -0.5, math.nan, math.inf, True],
    "beta": ["0.2", 0.5, -0.1, math.nan, False],
    "m": [0, -1, 2.0, "3", True],
    "tau": [0, -1.0, math.inf, math.nan, "1", True],
    "iterations": [0, 1.5, "2", True, 10_001],
    "max_iter": [0, 10.0, "100", False, 2**62],
    "tol": [-1e-6, math.inf, math.nan, "1e-6", True],
    "norm_bound": [0, -3.0, math.inf, math.nan, "3", True],
    "nnm": [1, "true", 0],
    "min_reputation": [-0.1, 1.5, math.nan, "0.5", True],
    "reputation_after": [0, 2.0, "3", True],
    "reputation_rewards": [1, "true"],
}


def test_the_schema_has_every_documented_parameter_and_the_registry_reads_it() -> None:
    assert tuple(RULES) == RULE_NAMES
    assert set(RULE_PARAMS) == set().union(*DOCUMENTED.values()) | ANY_RULE
    for rule, own in DOCUMENTED.items():
        assert set(RULES[rule].params) == own == set(rule_params(rule))
        expected_any = ANY_RULE - ({"nnm"} if rule == "fedavg" else set())
        assert set(allowed_params(rule)) == own | expected_any
    assert required_params("trimmed_mean") == ("beta",)
    assert required_params("centered_clipping") == ("tau",)
    assert all(not required_params(r) for r in RULE_NAMES if r not in DOCUMENTED or
               r not in ("trimmed_mean", "centered_clipping"))  # fmt: skip
    assert set(VALID) == set(INVALID) == set(RULE_PARAMS)


def _aggregation(rule: str, f: int, params: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"task": {"nodes": 10}, "aggregation": {"rule": rule, "f": f}}
    if rule == "trimmed_mean" and "beta" not in params:
        params = {"beta": 0.2, **params}
    if rule == "centered_clipping" and "tau" not in params:
        params = {"tau": 1.0, **params}
    if "reputation_after" in params and "min_reputation" not in params:
        params = {"min_reputation": 0.5, **params}
    doc["aggregation"].update(params)
    return doc


@pytest.mark.parametrize("name", sorted(VALID))
def test_each_parameter_loads_in_range(name: str) -> None:
    rule, f, value = VALID[name]
    cfg = parse_config(_aggregation(rule, f, {name: value}))
    assert cfg.aggregation.params[name] == value


@pytest.mark.parametrize(
    ("name", "value"), [(n, v) for n, values in INVALID.items() for v in values], ids=repr
)
def test_each_parameter_of_the_wrong_type_or_range_is_refused_at_load(
    name: str, value: Any
) -> None:
    rule, f, _ = VALID[name]
    with pytest.raises(ConfigError) as info:
        parse_config(_aggregation(rule, f, {name: value}))
    assert info.value.field == f"aggregation.{name}", str(info.value)
    assert "must be" in str(info.value)


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_unknown_and_other_rules_parameters_are_refused(rule: str) -> None:
    for key in ["betta", "lr", *(p for p in RULE_PARAMS if p not in allowed_params(rule))]:
        with pytest.raises(ConfigError) as info:
            check_rule_params(rule, {key: 1})
        assert info.value.field == f"aggregation.{key}"


def test_required_parameters_are_named_when_missing() -> None:
    for rule, key in (("trimmed_mean", "beta"), ("centered_clipping", "tau")):
        with pytest.raises(ConfigError, match=f"{rule} needs {key}") as info:
            AggregationConfig(rule=rule, f=1, params={})
        assert info.value.field == f"aggregation.{key}"


def test_bounds_that_depend_on_the_task() -> None:
    with pytest.raises(ConfigError) as info:  # m <= n - f
        parse_config(_aggregation("multi_krum", 3, {"m": 8}))
    assert info.value.field == "aggregation.m"
    parse_config(_aggregation("multi_krum", 3, {"m": 7}))
    with pytest.raises(ConfigError, match="fewer than f=3"):
        parse_config(_aggregation("trimmed_mean", 3, {"beta": 0.25}))


def test_max_weight_fraction_x_used_to_break_every_round() -> None:
    """The reproduced bug: the value loaded, and every round's aggregation then failed."""
    updates = [[np.full(3, float(i))] for i in range(4)]
    with pytest.raises(AggregationError):  # what each round met
        aggregate("fedavg", updates, [1, 1, 1, 1], params={"max_weight_fraction": "x"})
    with pytest.raises(ConfigError) as info:  # now: refused when the task loads
        parse_config({"aggregation": {"rule": "fedavg", "max_weight_fraction": "x"}})
    assert info.value.field == "aggregation.max_weight_fraction"


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_valid_value_runs_in_aggregate(name: str) -> None:
    """What the schema accepts, the rules accept: one round over 10 inputs runs."""
    rule, f, value = VALID[name]
    cfg = parse_config(_aggregation(rule, f, {name: value})).aggregation
    rng = np.random.default_rng(0)
    updates = [[rng.normal(size=4)] for _ in range(10)]
    base = [np.zeros(4)]
    reputation = [(3, 4)] * 10
    result = aggregate(cfg.rule, updates, [5] * 10, f=cfg.f, params=cfg.params, center=base,
                       reputation=reputation)  # fmt: skip
    assert result.kept


def test_params_are_kept_as_written_so_the_contract_digest_is_unchanged() -> None:
    """The ledger's rule_params_digest is sha256 over the canonical JSON of ``rule``, ``f`` and
    ``dict(params)``: checking must not rewrite a value (``tau = 1`` stays the integer 1)."""
    table = {"rule": "centered_clipping", "f": 1, "tau": 1, "iterations": 2, "nnm": True}
    cfg: TaskConfig = parse_config({"aggregation": dict(table)})
    params = dict(cfg.aggregation.params)
    assert params == {"tau": 1, "iterations": 2, "nnm": True}
    assert type(params["tau"]) is int
    blob = json.dumps({"rule": "centered_clipping", "f": 1, "params": params},
                      sort_keys=True, separators=(",", ":"))  # fmt: skip
    assert (
        hashlib.sha256(blob.encode()).hexdigest()
        == hashlib.sha256(
            b'{"f":1,"params":{"iterations":2,"nnm":true,"tau":1},"rule":"centered_clipping"}'
        ).hexdigest()
    )
