"""The task's ``[compression]`` table: typed and range-checked at load, in the task's
document (so its digest) only when present."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedledger.commit.compression import Scheme
from fedledger.config import CompressionConfig, PrivacyConfig, load_config, parse_config
from fedledger.config.task import config_from_document
from fedledger.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

DIGITS_DIGEST = "3cfdd7510e5f1f75d8e65cd42c3ce6cf8695609411779e866c7fcc40a2dd7a34"
"""examples/digits.toml's digest before compression existed: a task without it keeps it."""


def _doc(compression: dict[str, Any] | None) -> dict[str, Any]:
    doc = tomllib.loads((ROOT / "examples" / "digits.toml").read_text())
    if compression is not None:
        doc["compression"] = compression
    return doc


def test_a_task_without_compression_keeps_its_document_and_digest() -> None:
    cfg = load_config(ROOT / "examples" / "digits.toml")
    assert cfg.compression is None
    assert b"compression" not in cfg.document()
    assert cfg.digest().hex() == DIGITS_DIGEST


def test_compression_parses_round_trips_and_changes_the_digest() -> None:
    cfg = parse_config(_doc({"quantize": "int8", "topk": 0.05}))
    assert cfg.compression == CompressionConfig(quantize="int8", topk=0.05, error_feedback=True)
    assert cfg.compression.scheme == Scheme(int8=True, topk=0.05)
    assert parse_config(tomllib.loads(cfg.to_toml())) == cfg
    assert config_from_document(cfg.document()) == cfg
    assert cfg.digest().hex() != DIGITS_DIGEST
    topk = parse_config(_doc({"topk": 0.05}))
    assert topk.compression is not None
    assert topk.compression.scheme.name == "topk"
    assert config_from_document(topk.document()) == topk
    assert topk.digest() != cfg.digest()
    no_feedback = parse_config(_doc({"quantize": "int8", "error_feedback": False}))
    assert no_feedback.digest() != parse_config(_doc({"quantize": "int8"})).digest()


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({}, "compression"),
        ({"quantize": "none"}, "compression"),
        ({"quantize": "int4"}, "compression.quantize"),
        ({"quantize": 8}, "compression.quantize"),
        ({"topk": 0}, "compression.topk"),
        ({"topk": 1.0}, "compression.topk"),
        ({"topk": -0.1}, "compression.topk"),
        ({"topk": float("nan")}, "compression.topk"),
        ({"topk": "5%"}, "compression.topk"),
        ({"topk": 0.1, "error_feedback": "yes"}, "compression.error_feedback"),
        ({"topk": 0.1, "k": 3}, "compression.k"),
    ],
)
def test_bad_tables_are_config_errors_naming_the_key(table: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_doc(table))
    assert info.value.field == field


def test_masked_updates_cannot_be_compressed() -> None:
    cfg = parse_config(_doc({"quantize": "int8"}))
    with pytest.raises(ConfigError) as info:
        replace(cfg, nodes=4, privacy=PrivacyConfig(secure_aggregation=True))
    assert info.value.field == "compression"
