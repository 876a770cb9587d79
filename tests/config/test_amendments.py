"""Governance amendments: what a vote may change, and the rules in force by round."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedledger.config import AggregationConfig, LedgerConfig, PrivacyConfig, TaskConfig
from fedledger.config.amendments import RulesInForce, check_amendment
from fedledger.errors import ConfigError
from fedledger.learning.trainer import TrainConfig

BASE = TaskConfig(rounds=10, nodes=5)
ROBUST = replace(BASE, aggregation=AggregationConfig(rule="trimmed_mean", f=1,
                                                     params={"beta": 0.3}))  # fmt: skip


def test_governable_changes_are_listed() -> None:
    changes = check_amendment(BASE, ROBUST)
    assert changes["aggregation.rule"] == ("fedavg", "trimmed_mean")
    assert changes["aggregation.f"] == (0, 1)
    more = replace(ROBUST, ledger=LedgerConfig(quorum=0.8, reward_per_round=5.0, access="public",
                                               allowlist=True, min_stake=10**17))  # fmt: skip
    assert set(check_amendment(BASE, more)) >= {"ledger.quorum", "ledger.access",
                                                 "ledger.allowlist", "ledger.min_stake",
                                                 "ledger.reward_per_round"}  # fmt: skip


@pytest.mark.parametrize(
    "new",
    [
        replace(BASE, rounds=20),
        replace(BASE, train=TrainConfig(lr=0.5)),
        replace(BASE, ledger=LedgerConfig(window=10)),
        replace(BASE, purpose="advertising"),
        replace(BASE, privacy=PrivacyConfig(noise_multiplier=1.0)),
    ],
)
def test_other_changes_are_refused(new: TaskConfig) -> None:
    with pytest.raises(ConfigError, match="a vote may"):
        check_amendment(BASE, new)


def test_nothing_changed_is_refused() -> None:
    with pytest.raises(ConfigError, match="changes nothing"):
        check_amendment(BASE, BASE)


def test_privacy_budget_is_governable() -> None:
    private = replace(BASE, privacy=PrivacyConfig(noise_multiplier=1.0, budget=8.0))
    assert check_amendment(
        private, replace(private, privacy=PrivacyConfig(noise_multiplier=1.0, budget=6.0))
    ) == {"privacy.budget": (8.0, 6.0)}


def test_rules_in_force_by_round() -> None:
    rules = RulesInForce(base=BASE).with_change(4, ROBUST.document())
    assert [rules.at(r).aggregation.rule for r in (1, 3, 4, 9)] == [
        "fedavg", "fedavg", "trimmed_mean", "trimmed_mean"]  # fmt: skip
    # A change for the same first round replaces the pending one.
    median = replace(BASE, aggregation=AggregationConfig(rule="median", f=1))
    again = rules.with_change(4, median.document())
    assert again.at(4).aggregation.rule == "median"
    assert len(again.changes) == 1
    # An invalid change is recorded, not applied.
    bad = rules.with_change(6, replace(ROBUST, rounds=50).document())
    assert bad.at(7).aggregation.rule == "trimmed_mean"
    assert bad.invalid[0][0] == 6
    assert "changes rounds" in bad.invalid[0][1]
    assert rules.with_change(6, b"garbage").invalid[0][0] == 6
    # The deployment's own event, and a change back to the rules before a pending one: none.
    assert RulesInForce(base=BASE).with_change(1, BASE.document()).changes == ()
    assert rules.with_change(4, BASE.document()).changes == ()
