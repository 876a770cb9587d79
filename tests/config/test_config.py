"""Task configuration: the shipped examples load, and bad values give errors naming the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fedledger.config import TaskConfig, load_config, parse_config
from fedledger.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"digits.toml", "breast_cancer.toml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_load(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, TaskConfig)
    assert cfg.rounds >= 1
    assert cfg.nodes >= 1


def test_digits_example_is_the_reference_task() -> None:
    cfg = load_config(ROOT / "examples" / "digits.toml")
    assert (cfg.nodes, cfg.rounds, cfg.seed) == (10, 30, 0)
    assert (cfg.data.dataset, cfg.data.partition, cfg.data.alpha) == ("digits", "dirichlet", 0.5)
    assert (cfg.model.name, cfg.model.hidden) == ("mlp", (64, 64))
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == (0.05, 32, 1)
    assert cfg.train.optimizer == "sgd"


def _doc(**sections: dict[str, Any]) -> dict[str, Any]:
    base = tomllib.loads((ROOT / "examples" / "digits.toml").read_text())
    for name, table in sections.items():
        base.setdefault(name, {}).update(table)
    return base


@pytest.mark.parametrize(
    ("sections", "field", "words"),
    [
        ({"aggregation": {"rule": "avg"}}, "aggregation.rule", "unknown aggregation rule"),
        ({"aggregation": {"rule": "krum", "f": 4}}, "aggregation.f", "n > 2f + 2"),
        ({"aggregation": {"rule": "median", "f": 5}}, "aggregation.f", "too large for 10"),
        ({"aggregation": {"f": 1}}, "aggregation.f", "fedavg tolerates no"),
        ({"aggregation": {"f": -1, "rule": "median"}}, "aggregation.f", ">= 0"),
        ({"aggregation": {"rule": "trimmed_mean", "f": 2}}, "aggregation.beta", "needs beta"),
        ({"aggregation": {"rule": "trimmed_mean", "f": 2, "beta": 0.1}}, "aggregation.beta",
         "fewer than f=2"),
        ({"aggregation": {"rule": "median", "beta": 0.1}}, "aggregation.beta", "no parameter"),
        ({"aggregation": {"rule": "centered_clipping"}}, "aggregation.tau", "needs tau"),
        ({"aggregation": {"f": "two"}}, "aggregation.f", "expected int"),
        ({"train": {"lr": -0.1}}, "train.lr", ""),
        ({"train": {"lr": "fast"}}, "train.lr", "expected float"),
        ({"train": {"batch_size": 0}}, "train.batch_size", ""),
        ({"train": {"learning_rate": 0.1}}, "train.learning_rate", "unknown key"),
        ({"data": {"dataset": "mnist"}}, "data.dataset", "unknown data set"),
        ({"data": {"dataset": "csv"}}, "data.path", "needs a path"),
        ({"data": {"partition": "zipf"}}, "data.partition", "unknown partition"),
        ({"data": {"alpha": 0}}, "data.alpha", "> 0"),
        ({"data": {"test_fraction": 1.5}}, "data.test_fraction", "(0, 1)"),
        ({"model": {"name": "resnet"}}, "model.name", ""),
        ({"model": {"hidden": [64, "x"]}}, "model.hidden", "expected"),
        ({"task": {"rounds": 0}}, "task.rounds", ">= 1"),
        ({"task": {"nodes": 0}}, "task.nodes", ">= 1"),
        ({"task": {"nodes": True}}, "task.nodes", "expected int"),
        ({"network": {"port": 1}}, "network", "unknown section"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key(sections: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words) if words else None) as info:
        parse_config(_doc(**sections))
    assert info.value.field == field or str(info.value).startswith(field)


def test_rule_parameters_are_passed_through() -> None:
    cfg = parse_config(_doc(aggregation={"rule": "trimmed_mean", "f": 2, "beta": 0.2}))
    assert cfg.aggregation.params == {"beta": 0.2}
    cfg = parse_config(_doc(aggregation={"rule": "krum", "f": 3}))
    assert cfg.aggregation.f == 3


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[task\nrounds = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_digest_is_stable_and_sensitive() -> None:
    a = parse_config(_doc())
    b = parse_config(_doc())
    assert a.digest() == b.digest()
    assert parse_config(_doc(train={"lr": 0.051})).digest() != a.digest()
    assert parse_config(_doc(task={"seed": 1})).digest() != a.digest()
