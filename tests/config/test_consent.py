"""Consent policies: parsing, canonical documents, and the one coverage check."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedledger.config import PrivacyConfig, TaskConfig
from fedledger.config.consent import (
    ConsentPolicy,
    Consents,
    consent_from_document,
    parse_consent,
    uncovered,
    violations,
)
from fedledger.config.task import AggregationConfig, LedgerConfig, parse_config
from fedledger.errors import ConfigError

TASK = "0x" + "ab" * 20


def test_no_policy_covers_everything() -> None:
    assert violations(None, TaskConfig(), task_address=TASK) == []
    assert violations(ConsentPolicy(), TaskConfig(), task_address=TASK, rnd=99) == []


def test_document_round_trips_and_is_canonical() -> None:
    policy = parse_consent({"rules": ["trimmed_mean", "fedavg"], "max_rounds": 5,
                            "tasks": [TASK.upper().replace("0X", "0x")]})  # fmt: skip
    doc = policy.document()
    assert doc == (b'{"max_rounds":5,"rules":["fedavg","trimmed_mean"],'
                   b'"tasks":["0x' + b"ab" * 20 + b'"]}')  # fmt: skip
    assert consent_from_document(doc) == policy
    assert consent_from_document(b"") is None
    with pytest.raises(ConfigError, match="canonical"):
        consent_from_document(b'{"max_rounds": 5}')
    with pytest.raises(ConfigError, match="not a consent policy"):
        consent_from_document(b"\xff")


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"colour": "red"}, "consent.colour"),
        ({"rules": ["mean"]}, "consent.rules"),
        ({"rules": "fedavg"}, "consent.rules"),
        ({"max_epsilon": -1.0}, "consent.max_epsilon"),
        ({"max_rounds": 0}, "consent.max_rounds"),
        ({"max_rounds": 2.5}, "consent.max_rounds"),
        ({"model_access": ["everyone"]}, "consent.model_access"),
        ({"tasks": ["not-an-address"]}, "consent.tasks"),
        ({"purposes": ["x" * 3000]}, "consent"),
    ],
)
def test_bad_policies_name_the_key(table: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_consent(table)
    assert info.value.field == field


def test_each_key_is_enforced() -> None:
    task = parse_config({"task": {"purpose": "digits", "rounds": 10}})
    ok = violations
    mixed_case = "0x" + TASK[2:].upper()
    assert ok(ConsentPolicy(tasks=(TASK,)), task, task_address=mixed_case) == []
    assert "not one of the consented tasks" in ok(ConsentPolicy(tasks=(TASK,)), task,
                                                  task_address="0x" + "cd" * 20)[0]  # fmt: skip
    assert ok(ConsentPolicy(purposes=("digits",)), task, task_address=TASK) == []
    assert "purpose" in ok(ConsentPolicy(purposes=("ads",)), task, task_address=TASK)[0]
    robust = replace(task, aggregation=AggregationConfig(rule="median", f=1))
    assert ok(ConsentPolicy(rules=("fedavg",)), task, task_address=TASK) == []
    assert "'median' is not one of fedavg" in ok(ConsentPolicy(rules=("fedavg",)), robust,
                                                 task_address=TASK)[0]  # fmt: skip
    assert "no differential privacy" in ok(ConsentPolicy(max_epsilon=8.0), task,
                                           task_address=TASK)[0]  # fmt: skip
    private = replace(task, privacy=PrivacyConfig(noise_multiplier=2.0, budget=4.0))
    assert ok(ConsentPolicy(max_epsilon=8.0), private, task_address=TASK) == []
    assert "above 2" in ok(ConsentPolicy(max_epsilon=2.0), private, task_address=TASK)[0]
    assert "10 rounds, more than 5" in ok(ConsentPolicy(max_rounds=5), task,
                                          task_address=TASK)[0]  # fmt: skip
    assert ok(ConsentPolicy(max_rounds=10), task, task_address=TASK, rnd=10) == []
    public = replace(task, ledger=LedgerConfig(access="public"))
    assert "model access 'public'" in ok(ConsentPolicy(model_access=("members",)), public,
                                         task_address=TASK)[0]  # fmt: skip


def test_uncovered_senders_by_round() -> None:
    task = TaskConfig(aggregation=AggregationConfig(rule="median", f=1))
    consents = Consents()
    consents.add("0xA", 1, ConsentPolicy(rules=("fedavg",)).document())
    consents.add("0xB", 1, ConsentPolicy().document())
    consents.add("0xC", 1, b"not json")
    got = uncovered(consents, ["0xa", "0xB", "0xC", "0xD"], task, task_address=TASK, rnd=3)
    assert set(got) == {"0xa", "0xC"}
    assert "'median' is not one of fedavg" in got["0xa"]
    assert "not a policy" in got["0xC"]
    # A new policy takes effect from its round; one for the same round replaces it.
    consents.add("0xA", 5, ConsentPolicy(rules=("median",)).document())
    assert "0xA" in consents.uncovered(["0xA"], task, task_address=TASK, rnd=4)
    assert consents.uncovered(["0xA"], task, task_address=TASK, rnd=5) == {}
    consents.add("0xA", 5, ConsentPolicy(rules=("fedavg",)).document())
    assert "0xA" in consents.uncovered(["0xA"], task, task_address=TASK, rnd=5)
