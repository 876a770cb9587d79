"""Properties every rule must have: the output does not depend on the order of the inputs (byte
for byte), scores follow the inputs, and the Byzantine bounds hold exactly where documented."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedledger.aggregation import (
    RULES,
    AggregationResult,
    fedavg,
    krum,
    median,
    multi_krum,
    trimmed_mean,
)
from fedledger.errors import ByzantineBoundError

from .helpers import (
    RULE_NAMES,
    SHAPES,
    assert_scores_consistent,
    min_inputs,
    n_coords,
    params_bytes,
    quantized,
    random_updates,
    run,
    to_updates,
)


@dataclass(frozen=True)
class Case:
    rule: str
    f: int
    updates: list[object]
    weights: list[int] | None
    cap: float | None
    dtype: type

    def run(self, order: list[int] | None = None) -> AggregationResult:
        idx = list(range(len(self.updates))) if order is None else order
        updates = [self.updates[i] for i in idx]
        if self.rule == "fedavg":
            weights = None if self.weights is None else [self.weights[i] for i in idx]
            return fedavg(updates, weights, max_weight_fraction=self.cap)  # type: ignore[arg-type]
        return run(self.rule, updates, self.f)

    def key(self, i: int) -> bytes:
        """What a rule can tell input i apart by: its valid content (and weight)."""
        u = self.updates[i]
        w = b"" if self.weights is None else str(self.weights[i]).encode()
        if (
            isinstance(u, list)
            and all(isinstance(a, np.ndarray) for a in u)
            and all(np.isfinite(a).all() for a in u)
        ):
            return quantized(u) + w + str([a.dtype for a in u]).encode()
        return f"bad-{i}".encode()


def _bad_update(kind: str, dtype: type) -> object:
    if kind == "nan":
        u: list[np.ndarray] = [np.zeros(s, dtype) for s in SHAPES]
        u[0][0, 0] = np.nan
        return u
    if kind == "shape":
        return [np.zeros(3, dtype), np.zeros(3, dtype)]
    return None


@st.composite
def cases(draw: st.DrawFn, rules: tuple[str, ...] = RULE_NAMES) -> Case:
    rule = draw(st.sampled_from(rules))
    f = 0 if rule == "fedavg" else draw(st.integers(0, 1))
    # At least 3 valid inputs, so that their signature outvotes the (at most 2) bad ones.
    n = draw(st.integers(max(min_inputs(rule, f), 3), min_inputs(rule, f) + 4))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    # Small value sets make ties and duplicate inputs likely; wide ones make them rare.
    elements = draw(
        st.sampled_from(
            [
                st.floats(-50, 50, width=32),
                st.integers(-2, 2).map(float),
                st.floats(-(2.0**-20), 2.0**-20, width=32),  # a few quanta
            ]
        )
    )
    x = draw(hnp.arrays(dtype, (n, n_coords()), elements=elements))
    updates: list[object] = list(to_updates(x, dtype=dtype))
    for kind in draw(st.lists(st.sampled_from(["nan", "shape", "none"]), max_size=2)):
        updates.insert(draw(st.integers(0, len(updates))), _bad_update(kind, dtype))
    weights = None
    cap = None
    if rule == "fedavg":
        if draw(st.booleans()):
            weights = draw(
                st.lists(st.integers(1, 10**6), min_size=len(updates), max_size=len(updates))
            )
        cap = draw(st.sampled_from([None, 0.3, 0.5]))
    return Case(rule=rule, f=f, updates=updates, weights=weights, cap=cap, dtype=dtype)


@settings(max_examples=120, deadline=None)
@given(cases(), st.data())
def test_permuting_the_inputs_permutes_nothing_but_the_scores(
    case: Case, data: st.DataObject
) -> None:
    perm = data.draw(st.permutations(range(len(case.updates))))
    a = case.run()
    b = case.run(perm)
    n_inputs = len(case.updates)
    assert_scores_consistent(a, n_inputs)
    assert_scores_consistent(b, n_inputs)
    # Byte-identical aggregate, same dtypes and shapes.
    assert params_bytes(a) == params_bytes(b)
    assert [(p.dtype, p.shape) for p in a.params] == [(p.dtype, p.shape) for p in b.params]
    assert [p.dtype for p in a.params] == [np.dtype(case.dtype)] * len(SHAPES)
    # Rejections follow their inputs.
    assert dict(b.rejected) == {
        j: a.rejected[perm[j]] for j in range(n_inputs) if perm[j] in a.rejected
    }
    # Scores follow their inputs; identical inputs may trade theirs.
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i in range(n_inputs):
        groups[case.key(i)].append(i)
    for members in groups.values():
        if len(members) == 1:
            (i,) = members
            j = perm.index(i)
            assert b.scores[j] == a.scores[i]
            assert (j in b.kept) == (i in a.kept)
        else:
            moved = sorted(b.scores[perm.index(i)] for i in members)
            assert moved == sorted(a.scores[i] for i in members)


@st.composite
def rule_matrices(draw: st.DrawFn) -> tuple[str, int, np.ndarray]:
    rule = draw(st.sampled_from(RULE_NAMES))
    f = 0 if rule == "fedavg" else draw(st.integers(0, 1))
    n = draw(st.integers(min_inputs(rule, f), min_inputs(rule, f) + 3))
    x = draw(hnp.arrays(np.float32, (n, n_coords()), elements=st.floats(-50, 50, width=32)))
    return rule, f, x


@settings(max_examples=40, deadline=None)
@given(rule_matrices())
def test_float32_output_is_the_float64_output_rounded(data: tuple[str, int, np.ndarray]) -> None:
    # The same values as float32 and as float64 inputs: one fixed-point computation, so the
    # float32 output is exactly the float64 one rounded to float32, and the scores are equal.
    rule, f, x = data
    r32 = run(rule, to_updates(x), f)
    r64 = run(rule, to_updates(x.astype(np.float64), dtype=np.float64), f)
    assert [p.dtype for p in r32.params] == [np.float32] * len(SHAPES)
    assert [p.dtype for p in r64.params] == [np.float64] * len(SHAPES)
    assert params_bytes(r32) == b"".join(p.astype(np.float32).tobytes() for p in r64.params)
    assert r32.scores == r64.scores
    assert r32.kept == r64.kept


# -- Byzantine bounds -----------------------------------------------------------------------------

# The smallest valid n for f, as documented: Krum needs n > 2f + 2, the others n > 2f.
BOUNDS = {
    "median": lambda f: 2 * f + 1,
    "trimmed_mean": lambda f: 2 * f + 1,
    "centered_clipping": lambda f: 2 * f + 1,
    "geometric_median": lambda f: 2 * f + 1,
    "krum": lambda f: 2 * f + 3,
    "multi_krum": lambda f: 2 * f + 3,
}


@pytest.mark.parametrize("f", [0, 1, 2, 3])
@pytest.mark.parametrize("rule", sorted(BOUNDS))
def test_byzantine_bound(rule: str, f: int) -> None:
    need = BOUNDS[rule](f)
    assert RULES[rule].min_inputs(f) == need
    rng = np.random.default_rng(100 + f)
    if need > 1:
        with pytest.raises(ByzantineBoundError, match=r"n > 2f|at least one") as exc:
            run(rule, random_updates(rng, need - 1), f)
        assert f"n={need - 1}" in str(exc.value)
        assert f"f={f}" in str(exc.value)
    result = run(rule, random_updates(rng, need), f)
    assert_scores_consistent(result, need)
    assert len(result.kept) >= 1
    assert not result.rejected


@pytest.mark.parametrize("f", [1, 2, 5])
def test_fedavg_tolerates_no_byzantine_input(f: int) -> None:
    updates = random_updates(np.random.default_rng(0), 50)
    with pytest.raises(ByzantineBoundError, match=f"f={f}"):
        fedavg(updates, f=f)
    assert RULES["fedavg"].min_inputs(f) > 50
    assert RULES["fedavg"].min_inputs(0) == 1
    assert_scores_consistent(fedavg(updates[:1]), 1)


def test_krum_bound_in_numbers() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ByzantineBoundError, match=r"n > 2f \+ 2"):
        krum(random_updates(rng, 6), f=2)
    assert krum(random_updates(rng, 7), f=2).kept
    with pytest.raises(ByzantineBoundError):
        multi_krum(random_updates(rng, 2), f=0)
    assert len(multi_krum(random_updates(rng, 3), f=0).kept) == 3


def test_median_bound_in_numbers() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(ByzantineBoundError, match="n > 2f"):
        median(random_updates(rng, 4), f=2)
    assert median(random_updates(rng, 5), f=2).kept


def test_trimmed_mean_must_trim_at_least_f() -> None:
    rng = np.random.default_rng(3)
    # n = 7 > 2f but beta = 0.2 trims only k = 1 < f = 2 per side.
    with pytest.raises(ByzantineBoundError, match="trims k=1") as exc:
        trimmed_mean(random_updates(rng, 7), beta=0.2, f=2)
    assert "0.286" in str(exc.value)  # the beta that would do
    assert trimmed_mean(random_updates(rng, 7), beta=0.3, f=2).kept
    # With beta = 0.49, n = 2f + 1 trims f per side: only the median is left.
    x = random_updates(rng, 5)
    np.testing.assert_array_equal(
        np.concatenate([a.reshape(-1) for a in trimmed_mean(x, beta=0.49, f=2).params]),
        np.concatenate([a.reshape(-1) for a in median(x, f=2).params]),
    )


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_bound_counts_only_valid_inputs(rule: str) -> None:
    f = 0 if rule == "fedavg" else 1
    need = min_inputs(rule, f)
    honest = random_updates(np.random.default_rng(4), need - 1)
    updates: list[object] = [*honest, None, None]
    with pytest.raises(ByzantineBoundError, match=f"2 of {need + 1} inputs rejected"):
        run(rule, updates, f)
    updates.append(random_updates(np.random.default_rng(5), 1)[0])
    assert_scores_consistent(run(rule, updates, f), need + 2)


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_krum_ties_are_broken_by_content_not_by_position(m: int) -> None:
    # +-e1, +-e2, +-e3: distinct inputs whose Krum scores (f = 1) all tie.
    x = np.zeros((6, n_coords()), dtype=np.float32)
    for i in range(3):
        x[2 * i, i] = 1.0
        x[2 * i + 1, i] = -1.0
    updates = to_updates(x)
    expected = multi_krum(updates, f=1, m=m)
    assert len(expected.kept) == m
    rng = np.random.default_rng(m)
    for _ in range(20):
        perm = [int(i) for i in rng.permutation(6)]
        got = multi_krum([updates[i] for i in perm], f=1, m=m)
        assert params_bytes(got) == params_bytes(expected)
        assert [got.scores[perm.index(i)] for i in range(6)] == list(expected.scores)
