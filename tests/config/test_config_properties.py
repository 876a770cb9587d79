"""Properties: whatever values a TOML file holds, loading it gives a valid configuration or a
ConfigError naming a key -- never another exception."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedledger.aggregation.params import RULE_PARAMS, allowed_params
from fedledger.aggregation.rules import SCORE_TOTAL, aggregate
from fedledger.config import (
    AggregationConfig,
    DataConfig,
    LedgerConfig,
    MixingConfig,
    TaskConfig,
    load_config,
    parse_config,
    toml_value,
)
from fedledger.errors import ByzantineBoundError, ConfigError
from fedledger.learning.trainer import ModelSpec, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
DIGITS = tomllib.loads((ROOT / "examples" / "digits.toml").read_text(encoding="utf-8"))

KEYS: dict[str, list[str]] = {
    "task": ["name", "seed", "rounds", "nodes"],
    "data": [f.name for f in fields(DataConfig)],
    "model": [f.name for f in fields(ModelSpec)],
    "train": [f.name for f in fields(TrainConfig)],
    "aggregation": ["rule", "f", *RULE_PARAMS],
    "ledger": [f.name for f in fields(LedgerConfig)],
    "gossip": [f.name for f in fields(MixingConfig)],
}

SPECIAL: list[Any] = [
    0, 1, 2, 3, -1, 10, 256, 257, 2**32, 2**62,
    0.0, 0.1, 0.2, 0.3, 0.49, 0.5, 0.67, 1.0, 2.5, 1e-6, 1000.0, 1e16, 1e60, 1e80, 1e308,
    -0.0, math.inf, -math.inf, math.nan,
    "fedavg", "median", "trimmed_mean", "multi_krum", "krum", "centered_clipping",
    "geometric_median", "clipped", "mean", "csv", "npz", "shards", "mlp", "logreg", "adam",
    "public", "", "x",
]  # fmt: skip
special = st.sampled_from(SPECIAL)
scalars = st.one_of(
    special,
    special,
    special,
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.just(dt.date(2024, 1, 1)),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=5,
)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """The reference task with a few keys (known ones mostly) set to arbitrary TOML values."""
    doc: dict[str, Any] = {name: dict(table) for name, table in DIGITS.items()}
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        section = draw(st.sampled_from([*KEYS] * 4 + ["extra"]))
        known = KEYS.get(section, ["x"])
        key = draw(st.sampled_from(known) if draw(st.integers(0, 9)) else st.text(max_size=6))
        doc.setdefault(section, {})[key] = draw(scalars if draw(st.integers(0, 3)) else values)
    if draw(st.integers(0, 19)) == 19:
        doc[draw(st.sampled_from(list(KEYS)))] = draw(scalars)  # a section that is no table
    return doc


@settings(max_examples=400, deadline=None)
@given(documents())
def test_parse_config_raises_only_config_errors(doc: dict[str, Any]) -> None:
    try:
        cfg = parse_config(doc)
    except ConfigError as exc:
        named = exc.field is not None or "must be" in str(exc)
        assert named, str(exc)  # noqa: PT017 -- a property: either outcome is checked
        return
    # What loads is sound: the ledger's figures are exact integers within uint256.
    assert isinstance(cfg, TaskConfig)
    assert isinstance(cfg.ledger.min_stake, int)
    assert 1 <= cfg.ledger.min_stake < 2**256
    assert 0 <= cfg.ledger.reward_wei * cfg.rounds < 2**256
    assert isinstance(cfg.aggregation, AggregationConfig)
    _aggregates(cfg)


def _aggregates(cfg: TaskConfig) -> None:
    """What loads, aggregates: one round of the task's rule over ``nodes`` small updates runs
    (or finds too few inputs left after its screens), whatever the parameters."""
    if cfg.nodes > 40:  # Krum's pairwise distances: keep the property fast
        return
    rng = np.random.default_rng(0)
    updates = [[rng.normal(size=2)] for _ in range(cfg.nodes)]
    agg = cfg.aggregation
    try:
        result = aggregate(agg.rule, updates, [1] * cfg.nodes, f=agg.f, params=agg.params,
                           center=[np.zeros(2)], reputation=[(2, 4)] * cfg.nodes)  # fmt: skip
    except ByzantineBoundError:  # screens (norm bound, reputation) left too few inputs
        return
    assert sum(result.scores) == SCORE_TOTAL


def _toml(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, table in doc.items():
        if not isinstance(table, dict):
            lines.insert(0, f"{name} = {toml_value(table)}")
            continue
        lines.append(f"[{name}]")
        for key, value in table.items():
            if isinstance(value, dict) or (isinstance(value, list) and any(
                    isinstance(v, dict | dt.date) for v in value)):  # fmt: skip
                continue  # not expressible with toml_value
            text = value.isoformat() if isinstance(value, dt.date) else toml_value(value)
            lines.append(f"{toml_value(key)} = {text}")
    return "\n".join(lines) + "\n"


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(documents())
def test_load_config_raises_only_config_errors(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "task.toml"
    path.write_text(_toml(doc), encoding="utf-8", errors="surrogatepass")
    with contextlib.suppress(ConfigError):  # anything else fails the test
        load_config(path)


HOSTILE: list[Any] = [math.inf, -math.inf, math.nan, -1, 0, 1.5, 1e80, 2**62, "x", True, [1]]


def test_every_key_with_every_hostile_value_loads_soundly_or_is_refused() -> None:
    """Exhaustively, each known key of each section set to each of :data:`HOSTILE` (with the
    rules that take it, for a rule parameter): a ConfigError naming that key, or a task that
    is sound and aggregates."""
    for section, keys in KEYS.items():
        for key in keys:
            for value in HOSTILE:
                doc: dict[str, Any] = {name: dict(table) for name, table in DIGITS.items()}
                if section == "aggregation" and key in RULE_PARAMS:
                    param = RULE_PARAMS[key]
                    rule = param.rules[0] if param.rules else "median"
                    doc["aggregation"] = {
                        "rule": rule,
                        "f": 0 if rule == "fedavg" else 1,
                        "beta": 0.2,
                        "tau": 1.0,
                        "min_reputation": 0.5,
                    }
                    doc["aggregation"] = {
                        k: v
                        for k, v in doc["aggregation"].items()
                        if k in ("rule", "f") or k in allowed_params(rule)
                    }
                doc.setdefault(section, {})[key] = value
                try:
                    cfg = parse_config(doc)
                except ConfigError as exc:
                    assert exc.field is not None, (section, key, value, str(exc))  # noqa: PT017
                    continue
                assert cfg.ledger.reward_wei * cfg.rounds < 2**256
                _aggregates(cfg)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_toml_value_writes_any_string_back_equal(text: str) -> None:
    """Tasks are written to disk for the nodes (TaskConfig.to_toml); a name with a non-BMP
    character or DEL used to give a file TOML refuses."""
    assert tomllib.loads(f"k = {toml_value(text)}")["k"] == text
    task = TaskConfig(name=text) if text else TaskConfig()
    assert parse_config(tomllib.loads(task.to_toml())).digest() == task.digest()
