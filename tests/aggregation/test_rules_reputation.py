"""Reputation in aggregation: a member with a poor selection record is screened out, and
rewards can favour a good record (issue 6)."""

from __future__ import annotations

import numpy as np
import pytest

from fedledger.aggregation import aggregate
from fedledger.aggregation.rules import SCORE_TOTAL
from fedledger.errors import AggregationError

BASE = [np.zeros(4, np.float32)]


def updates(n: int) -> list[list[np.ndarray]]:
    return [[np.full(4, 0.1 * (i + 1), np.float32)] for i in range(n)]


def test_a_poor_record_is_screened_out_after_the_grace_period() -> None:
    reputation = [(5, 6), (0, 6), (1, 2), (2, 6)]  # 83 %, 0 %, new (2 reveals), 33 %
    out = aggregate("fedavg", updates(4), [1] * 4, center=BASE, reputation=reputation,
                    params={"min_reputation": 0.5, "reputation_after": 3})  # fmt: skip
    assert set(out.rejected) == {1, 3}
    assert "selected in 0 of 6 rounds" in out.rejected[1]
    assert out.scores[1] == out.scores[3] == 0
    assert out.kept == (0, 2)
    # the aggregate is the mean of the kept ones
    assert np.allclose(out.params[0], (0.1 + 0.3) / 2)


def test_rejected_for_reputation_counts_against_f() -> None:
    # Multi-Krum with f = 3 needs 9 valid inputs; 2 screened out leave 7, tolerating f = 1.
    ups = updates(9)
    reputation = [(0, 5)] * 2 + [(5, 5)] * 7
    out = aggregate("multi_krum", ups, f=3, center=BASE, reputation=reputation,
                    params={"min_reputation": 0.5})  # fmt: skip
    assert set(out.rejected) == {0, 1}
    assert sum(out.scores) == SCORE_TOTAL


def test_reputation_weighted_rewards_favour_a_good_record() -> None:
    ups = [[np.full(4, 0.2, np.float32)], [np.full(4, 0.2001, np.float32)]]
    plain = aggregate("fedavg", ups, [1, 1], center=BASE)
    assert abs(plain.scores[0] - plain.scores[1]) <= 1
    reputation = [(9, 9), (0, 9)]  # weights 10/10 and 1/10
    out = aggregate("fedavg", ups, [1, 1], center=BASE, reputation=reputation,
                    params={"reputation_rewards": True})  # fmt: skip
    assert out.scores == (909_091, 90_909)
    assert np.array_equal(out.params[0], plain.params[0])  # the model does not change


def test_reputation_rules_need_one_record_per_update() -> None:
    with pytest.raises(AggregationError, match="one \\(selections, updates\\) per update"):
        aggregate("fedavg", updates(2), [1, 1], params={"min_reputation": 0.5})
    with pytest.raises(AggregationError, match="min_reputation"):
        aggregate("fedavg", updates(2), [1, 1], reputation=[(0, 0)] * 2,
                  params={"min_reputation": 2})  # fmt: skip
