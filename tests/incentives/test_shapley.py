"""Shapley values, leave-one-out and seeded GTG-Shapley on games whose values are known."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from fedledger.errors import AggregationError
from fedledger.incentives.shapley import (
    Utility,
    exact_shapley,
    leave_one_out,
    permutation,
    permutation_shapley,
    to_scores,
)

SEED = b"round 7 of task 0xabc"


def additive(weights: list[int]) -> Utility:
    return lambda s: sum(weights[i] for i in s)


def test_an_additive_game_gives_each_member_its_own_weight() -> None:
    w = [5, 0, 3, 9, 1]
    assert exact_shapley(5, additive(w)) == [Fraction(x) for x in w]
    assert leave_one_out(5, additive(w)) == [Fraction(x) for x in w]
    values, evaluations = permutation_shapley(5, additive(w), seed=SEED, max_evaluations=150)
    assert values == [Fraction(x) for x in w]  # every marginal is exact in an additive game
    assert evaluations <= 150


def test_duplicates_share_and_a_null_member_gets_nothing() -> None:
    """Members 0 and 1 hold the same data (either alone brings 10, both together 10 too);
    member 2 brings 4; member 3 brings nothing (a free-rider)."""

    def v(s: frozenset[int]) -> int:
        return (10 if s & {0, 1} else 0) + (4 if 2 in s else 0)

    exact = exact_shapley(4, v)
    assert exact == [Fraction(5), Fraction(5), Fraction(4), Fraction(0)]
    assert leave_one_out(4, v) == [0, 0, 4, 0]  # leave-one-out misses duplicated value
    estimate, _ = permutation_shapley(4, v, seed=SEED, max_evaluations=120)
    assert estimate[3] == 0
    assert estimate[0] + estimate[1] == 10
    assert estimate[2] == 4


def test_permutations_are_seeded_uniform_and_respect_first() -> None:
    p = permutation(8, SEED, 3, first=5)
    assert p[0] == 5
    assert sorted(p) == list(range(8))
    assert permutation(8, SEED, 3, first=5) == p  # deterministic
    assert permutation(8, SEED + b"x", 3, first=5) != p
    # Roughly uniform: each position of 3 members sees each member about equally often.
    counts = {(i, k): 0 for i in range(3) for k in range(3)}
    for idx in range(3000):
        for pos, member in enumerate(permutation(3, SEED, idx)):
            counts[(member, pos)] += 1
    assert all(850 < c < 1150 for c in counts.values())


def test_the_evaluation_bound_holds_and_truncation_saves_evaluations() -> None:
    n = 10
    calls: list[frozenset[int]] = []

    def v(s: frozenset[int]) -> int:
        calls.append(s)
        return min(len(s), 3) * 10  # saturates after three members

    values, evaluations = permutation_shapley(n, v, seed=SEED, max_evaluations=30 * n)
    assert evaluations == len(set(calls)) <= 30 * n
    assert sum(values) == 30  # efficiency: each permutation's marginals sum to v(N) - v(empty)
    assert all(1 <= x <= 5 for x in values)  # symmetric members: 3 each, up to sampling
    # Truncation: prefixes stop once saturated, so far fewer coalitions than an additive game
    # (which never truncates early) of the same size and budget.
    _, untruncated = permutation_shapley(n, lambda s: 10 * len(s), seed=SEED,
                                         max_evaluations=30 * n)  # fmt: skip
    assert evaluations < untruncated <= 30 * n
    # A round whose model did not move: nothing to share, two evaluations.
    flat, cost = permutation_shapley(n, lambda s: 7, seed=SEED, max_evaluations=300)
    assert flat == [0] * n
    assert cost == 2


def test_scores_follow_the_positive_values_exactly() -> None:
    assert to_scores([Fraction(1, 3), Fraction(2, 3), Fraction(-1)], 1000) == [333, 667, 0]
    assert to_scores([0, -2], 1000) == [0, 0]
    assert to_scores([], 1000) == []
    assert sum(to_scores([Fraction(1, 7)] * 7, 1_000_000)) == 1_000_000


def test_bounds_are_checked_first() -> None:
    with pytest.raises(AggregationError, match="2\\*\\*n"):
        exact_shapley(13, lambda s: 0)
    with pytest.raises(AggregationError, match="below one permutation"):
        permutation_shapley(10, lambda s: len(s), seed=SEED, max_evaluations=5)
    assert permutation_shapley(1, lambda s: 3 * len(s), seed=SEED, max_evaluations=2) == (
        [Fraction(3)], 2)  # fmt: skip
    with pytest.raises(AggregationError):
        leave_one_out(-1, lambda s: 0)
    assert list(itertools.chain(permutation_shapley(0, lambda s: 0, seed=SEED,
                                                    max_evaluations=0)[0])) == []  # fmt: skip
