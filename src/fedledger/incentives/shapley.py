"""Contribution values of a round's members, as pure functions anyone can recompute.

A round's *utility* ``v(S)`` is an integer for each coalition ``S`` of its members (indices
``0..n-1``): for fedledger, the number of validation examples the model aggregated from ``S``'s
updates classifies correctly (:mod:`fedledger.incentives.utility`), ``v(empty)`` being the
base model's. From it:

* :func:`exact_shapley`: the Shapley value, over all ``2**n`` coalitions (small ``n`` only);
* :func:`leave_one_out`: ``v(N) - v(N - {i})``;
* :func:`permutation_shapley`: truncated Monte-Carlo Shapley with GTG-Shapley's guidance
  (Ghorbani & Zou 2019; Liu et al. 2022): permutations that put each member first in turn,
  the rest shuffled from a public ``seed`` (the round's on-chain randomness: SHA-256 in counter
  mode, never a library's generator whose algorithm may change), truncated once the prefix is
  within ``tolerance`` of ``v(N)``, and the whole round skipped when ``v(N)`` is within it of
  ``v(empty)``; at most ``max_evaluations`` distinct coalitions are evaluated.

Every value is an exact :class:`~fractions.Fraction`: no floating point, so two machines get
the same scores; :func:`to_scores` turns values into the integer scores rewards follow.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction

from fedledger.aggregation.fixedpoint import apportion
from fedledger.errors import AggregationError

Utility = Callable[[frozenset[int]], int]
MAX_EXACT_MEMBERS = 12
"""``exact_shapley`` evaluates ``2**n`` coalitions: refused beyond this."""


class CountingUtility:
    """A utility with a cache and a count of the distinct coalitions it evaluated."""

    def __init__(self, v: Utility) -> None:
        self._v = v
        self._cache: dict[frozenset[int], int] = {}

    @property
    def evaluations(self) -> int:
        return len(self._cache)

    def __call__(self, s: frozenset[int]) -> int:
        value = self._cache.get(s)
        if value is None:
            value = int(self._v(s))
            self._cache[s] = value
        return value


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise AggregationError(f"the number of members must be a non-negative integer, got {n!r}")


def exact_shapley(n: int, v: Utility) -> list[Fraction]:
    """The Shapley value of each of ``n`` members (all ``2**n`` coalitions)."""
    _check_n(n)
    if n > MAX_EXACT_MEMBERS:
        raise AggregationError(f"exact Shapley values take 2**n evaluations: n <= "
                               f"{MAX_EXACT_MEMBERS}, got {n}")  # fmt: skip
    u = CountingUtility(v)
    fact = [math.factorial(k) for k in range(n + 1)]
    out: list[Fraction] = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        total = Fraction(0)
        for size in range(n):
            weight = Fraction(fact[size] * fact[n - size - 1], fact[n])
            for s in itertools.combinations(others, size):
                base = frozenset(s)
                total += weight * (u(base | {i}) - u(base))
        out.append(total)
    return out


def leave_one_out(n: int, v: Utility) -> list[Fraction]:
    """``v(N) - v(N - {i})`` for each member: ``n + 1`` evaluations."""
    _check_n(n)
    everyone = frozenset(range(n))
    full = v(everyone)
    return [Fraction(full - v(everyone - {i})) for i in range(n)]


def permutation(n: int, seed: bytes, index: int, *, first: int | None = None) -> list[int]:
    """Permutation ``index`` of ``range(n)`` from ``seed`` (Fisher-Yates over SHA-256 in counter
    mode, rejection sampling: every permutation equally likely), ``first`` put first."""
    rest = [i for i in range(n) if i != first]
    counter = 0

    def below(bound: int) -> int:  # uniform in [0, bound)
        nonlocal counter
        limit = (1 << 64) - (1 << 64) % bound
        while True:
            block = hashlib.sha256(seed + index.to_bytes(8, "big") + counter.to_bytes(8, "big"))
            counter += 1
            x = int.from_bytes(block.digest()[:8], "big")
            if x < limit:
                return x % bound

    for k in range(len(rest) - 1, 0, -1):
        j = below(k + 1)
        rest[k], rest[j] = rest[j], rest[k]
    return ([first] if first is not None else []) + rest


def permutation_shapley(
    n: int,
    v: Utility,
    *,
    seed: bytes,
    max_evaluations: int,
    tolerance: int = 0,
) -> tuple[list[Fraction], int]:
    """GTG-Shapley estimates of ``n`` members' values and the coalitions evaluated.

    ``K = (max_evaluations - 2) // (n - 1)`` permutations (each evaluates at most ``n - 1``
    coalitions besides ``N`` and the empty one, so at most ``max_evaluations`` are evaluated),
    permutation ``k`` starting with member ``k mod n`` (every member first as often as the
    others: GTG-Shapley's guidance, which balances the most informative marginal); marginals
    are averaged per member. A permutation stops (its remaining members get marginal 0) once its
    prefix is within ``tolerance`` of ``v(N)``; the round is skipped (all zero) when ``v(N)`` is
    within it of ``v(empty)``."""
    _check_n(n)
    if n == 0:
        return [], 0
    if max_evaluations < n + 1:
        raise AggregationError(f"max_evaluations {max_evaluations} is below one permutation's "
                               f"{n + 1}")  # fmt: skip
    u = CountingUtility(v)
    everyone = frozenset(range(n))
    full, empty = u(everyone), u(frozenset())
    if abs(full - empty) <= tolerance:  # between-round truncation: nothing to share
        return [Fraction(0)] * n, u.evaluations
    if n == 1:
        return [Fraction(full - empty)], u.evaluations
    sums = [Fraction(0)] * n
    permutations = max(1, (max_evaluations - 2) // (n - 1))
    for k in range(permutations):
        order = permutation(n, seed, k, first=k % n)
        prefix: frozenset[int] = frozenset()
        before = empty
        for member in order:
            if abs(full - before) <= tolerance and prefix:
                break  # truncated: the rest's marginals are 0
            prefix = prefix | {member}
            after = u(prefix)
            sums[member] += after - before
            before = after
    return [s / permutations for s in sums], u.evaluations


def to_scores(values: Sequence[Fraction | int], total: int) -> list[int]:
    """Integer scores summing to ``total`` (or all zero), pro rata to the positive values: a
    member whose value is zero or negative (it did not help, or hurt) scores 0."""
    if not values:
        return []
    positive = [max(Fraction(x), Fraction(0)) for x in values]
    denominator = math.lcm(*(p.denominator for p in positive))
    return apportion([int(p * denominator) for p in positive], total)
