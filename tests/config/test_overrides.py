"""The command line's overrides and rule presets (fedledger.config.overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedledger.aggregation.params import RULE_NAMES
from fedledger.config import AggregationConfig, load_config
from fedledger.config.overrides import preset_params, robust_rule, with_overrides
from fedledger.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DIGITS = load_config(ROOT / "examples" / "digits.toml")


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_every_rule_gets_the_parameters_it_needs(rule: str) -> None:
    f = 0 if rule == "fedavg" else 2
    task = with_overrides(DIGITS, rounds=3, nodes=10, rule=rule, f=f)
    assert (task.rounds, task.nodes, task.aggregation.rule, task.aggregation.f) == (3, 10, rule, f)
    assert set(task.aggregation.params) == set(preset_params(rule, n=10, f=f))


def test_presets() -> None:
    assert preset_params("trimmed_mean", n=10, f=2) == {"beta": 0.25}
    assert preset_params("centered_clipping", n=10, f=2) == {"tau": 1.0}
    assert preset_params("median", n=10, f=2) == {}
    assert with_overrides(DIGITS, rounds=None, nodes=None) is DIGITS


def test_the_robust_rule_preset() -> None:
    assert robust_rule(10) == AggregationConfig(rule="multi_krum", f=3, params={"nnm": True})
    assert robust_rule(10, 2).f == 2
    with pytest.raises(ConfigError) as info:
        robust_rule(4)
    assert info.value.field == "aggregation.rule"
    task = with_overrides(DIGITS, rounds=None, nodes=7, rule="robust")
    assert (task.aggregation.rule, task.aggregation.f) == ("multi_krum", 2)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rounds": 0, "nodes": None}, "task.rounds"),
        ({"rounds": None, "nodes": 0, "rule": "trimmed_mean", "f": 1}, "task.nodes"),
        ({"rounds": None, "nodes": None, "rule": "avg"}, "aggregation.rule"),
        ({"rounds": None, "nodes": None, "rule": "median", "f": 5}, "aggregation.f"),
        ({"rounds": None, "nodes": None, "rule": "trimmed_mean", "f": 5}, "aggregation.beta"),
    ],
)
def test_bad_overrides_are_config_errors(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(DIGITS, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field, str(info.value)
