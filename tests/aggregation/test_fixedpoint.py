"""fedledger.aggregation.fixedpoint against exact Python-integer / Fraction arithmetic."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedledger.aggregation import fixedpoint as fx

V_MAX = (1 << 42) - 1
"""Largest magnitude the mean/fraction helpers accept (``|v| < 2**42``)."""
SQ_MAX = (1 << 43) - 1
"""Largest magnitude sq_norm accepts (``|v| < 2**43``)."""
W_MAX = fx.MAX_TOTAL_WEIGHT

FAST = settings(max_examples=150, deadline=None)


def values(bound: int) -> st.SearchStrategy[int]:
    """Integers in [-bound, bound], with the extremes and the limb boundaries favoured."""
    edges = [
        0,
        1,
        -1,
        bound,
        -bound,
        bound - 1,
        -bound + 1,
        (1 << 21) - 1,
        1 << 21,
        -(1 << 21),
        (1 << 22) - 1,
        -(1 << 22),
    ]
    return st.one_of(
        st.sampled_from([e for e in edges if abs(e) <= bound]), st.integers(-bound, bound)
    )


def int_vectors(bound: int, size: int) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.int64, size, elements=values(bound))


def round_half_up(fr: Fraction) -> int:
    return math.floor(fr + Fraction(1, 2))


@st.composite
def weighted_inputs(draw: st.DrawFn) -> tuple[list[np.ndarray], list[int]]:
    k = draw(st.integers(1, 6))
    size = draw(st.integers(1, 5))
    vals = [draw(int_vectors(V_MAX, size)) for _ in range(k)]
    # Total weight anywhere up to MAX_TOTAL_WEIGHT, often right at it.
    total = draw(st.one_of(st.just(W_MAX), st.integers(1, W_MAX), st.integers(1, 1000)))
    cuts = sorted(draw(st.lists(st.integers(0, total), min_size=k - 1, max_size=k - 1)))
    weights = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    return vals, weights


# -- quantize / dequantize ------------------------------------------------------------------------


@FAST
@given(
    hnp.arrays(
        np.float32,
        8,
        elements=st.floats(-(2.0**17), 2.0**17, width=32, exclude_max=True, exclude_min=True),
    )
)
def test_quantize_is_round_half_even_of_x_times_2_24(x: np.ndarray) -> None:
    q = fx.quantize(x)
    assert q.dtype == np.int64
    expected = [round(Fraction(float(v)) * fx.SCALE) for v in x]  # round() on Fraction: half even
    assert q.tolist() == expected
    back = fx.dequantize(q)
    assert back.dtype == np.float32
    # Quantization loses at most half a quantum; float32 values >= 0.5 in magnitude are exact.
    assert np.all(np.abs(back.astype(np.float64) - x.astype(np.float64)) <= 2.0**-25)
    big = np.abs(x) >= 0.5
    assert np.array_equal(back[big], x[big])


def test_quantize_rounds_ties_to_even() -> None:
    x = np.array([2.0**-25, 3 * 2.0**-25, -(2.0**-25), -3 * 2.0**-25, 2.0**-26], dtype=np.float64)
    assert fx.quantize(x).tolist() == [0, 2, 0, -2, 0]


def test_dequantize_is_exact_in_float64() -> None:
    q = np.array([(1 << 41) - 1, -(1 << 41) + 1, 1, -1, 0], dtype=np.int64)
    out = fx.dequantize(q, np.float64)
    assert out.dtype == np.float64
    assert [Fraction(float(v)) for v in out] == [Fraction(int(v), fx.SCALE) for v in q]


# -- weighted_mean --------------------------------------------------------------------------------


@FAST
@given(weighted_inputs())
def test_weighted_mean_is_exact_rounded_half_up(data: tuple[list[np.ndarray], list[int]]) -> None:
    vals, weights = data
    out = fx.weighted_mean(vals, weights)
    assert out.dtype == np.int64
    total = sum(weights)
    for c in range(vals[0].size):
        num = sum(w * int(v[c]) for v, w in zip(vals, weights, strict=True))
        assert int(out[c]) == round_half_up(Fraction(num, total))


@FAST
@given(weighted_inputs(), st.randoms(use_true_random=False))
def test_weighted_mean_ignores_input_order(
    data: tuple[list[np.ndarray], list[int]], rnd: random.Random
) -> None:
    vals, weights = data
    order = list(range(len(vals)))
    rnd.shuffle(order)
    a = fx.weighted_mean(vals, weights)
    b = fx.weighted_mean([vals[i] for i in order], [weights[i] for i in order])
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("sign", [1, -1])
def test_weighted_mean_at_the_documented_bounds(sign: int) -> None:
    # Every value at +-(2**42 - 1), the total weight at MAX_TOTAL_WEIGHT, in few and many parts.
    v = np.full(3, sign * V_MAX, dtype=np.int64)
    for weights in ([W_MAX], [W_MAX - 1, 1], [W_MAX // 3, W_MAX // 3, W_MAX - 2 * (W_MAX // 3)]):
        out = fx.weighted_mean([v] * len(weights), weights)
        assert out.tolist() == [sign * V_MAX] * 3
    # Opposite extremes: the exact mean is a half-integer, rounded half up.
    lo = np.array([-V_MAX], dtype=np.int64)
    hi = np.array([V_MAX - 1], dtype=np.int64)
    out = fx.weighted_mean([lo, hi], [W_MAX // 2, W_MAX // 2])
    assert int(out[0]) == round_half_up(Fraction(-V_MAX + V_MAX - 1, 2)) == 0
    out = fx.weighted_mean([lo, hi], [1, W_MAX - 1])
    assert int(out[0]) == round_half_up(Fraction(-V_MAX + (W_MAX - 1) * (V_MAX - 1), W_MAX))


def test_weighted_mean_rounds_half_up_for_negative_values() -> None:
    v = [np.array([-3], dtype=np.int64), np.array([-4], dtype=np.int64)]
    assert fx.weighted_mean(v, [1, 1]).tolist() == [-3]  # -3.5 -> -3
    v = [np.array([3], dtype=np.int64), np.array([4], dtype=np.int64)]
    assert fx.weighted_mean(v, [1, 1]).tolist() == [4]  # 3.5 -> 4


def test_weighted_mean_zero_weight_is_ignored() -> None:
    v = [np.array([5, 7], dtype=np.int64), np.array([V_MAX, -V_MAX], dtype=np.int64)]
    assert fx.weighted_mean(v, [3, 0]).tolist() == [5, 7]


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1, -1, 1], "non-negative integers"),
        ([1.5, 1, 1], "non-negative integers"),
        ([0, 0, 0], "total weight must be positive"),
        ([W_MAX, 1, 0], "exceeds"),
        ([1, 1], "as many weights"),
    ],
)
def test_weighted_mean_rejects_bad_weights(weights: list[float], match: str) -> None:
    v = [np.zeros(2, dtype=np.int64)] * 3
    with pytest.raises(ValueError, match=match):
        fx.weighted_mean(v, weights)  # type: ignore[arg-type]


def test_weighted_mean_needs_values() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fx.weighted_mean([], [])


# -- mul_frac -------------------------------------------------------------------------------------


@st.composite
def fractions_in_range(draw: st.DrawFn) -> tuple[int, int]:
    den = draw(st.one_of(st.just(W_MAX), st.integers(1, W_MAX), st.integers(1, 64)))
    num = draw(st.one_of(st.just(den), st.just(0), st.just(den - 1), st.integers(0, den)))
    return num, den


@FAST
@given(int_vectors(V_MAX, 6), fractions_in_range())
def test_mul_frac_is_exact_rounded_half_up(v: np.ndarray, frac: tuple[int, int]) -> None:
    num, den = frac
    out = fx.mul_frac(v, num, den)
    assert out.dtype == np.int64
    assert out.tolist() == [round_half_up(Fraction(int(x) * num, den)) for x in v]


def test_mul_frac_at_the_bounds() -> None:
    v = np.array([V_MAX, -V_MAX, V_MAX - 1, -1, 1], dtype=np.int64)
    for num, den in [(W_MAX, W_MAX), (W_MAX - 1, W_MAX), (1, W_MAX), (1, 2), (0, 1)]:
        out = fx.mul_frac(v, num, den)
        assert out.tolist() == [round_half_up(Fraction(int(x) * num, den)) for x in v]


@pytest.mark.parametrize(("num", "den"), [(2, 1), (-1, 3), (1, 0), (1, W_MAX + 1)])
def test_mul_frac_rejects_fractions_out_of_range(num: int, den: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        fx.mul_frac(np.zeros(1, dtype=np.int64), num, den)


# -- round_div ------------------------------------------------------------------------------------


@FAST
@given(
    int_vectors((1 << 61) - 1, 6),
    st.one_of(st.integers(1, 4), st.integers(1, 1 << 20)),
)
def test_round_div_is_exact_rounded_half_up(total: np.ndarray, count: int) -> None:
    out = fx.round_div(total, count)
    assert out.tolist() == [round_half_up(Fraction(int(t), count)) for t in total]


def test_round_div_half_cases() -> None:
    t = np.array([5, -5, 7, -7, 6, -6], dtype=np.int64)
    assert fx.round_div(t, 2).tolist() == [3, -2, 4, -3, 3, -3]
    assert fx.round_div(t, 4).tolist() == [1, -1, 2, -2, 2, -1]


# -- sq_norm, sq_distance, norm ------------------------------------------------------------------


@FAST
@given(int_vectors(SQ_MAX, 9))
def test_sq_norm_is_exact(v: np.ndarray) -> None:
    expected = sum(int(x) ** 2 for x in v)
    assert fx.sq_norm(v) == expected
    assert fx.norm(v) == math.isqrt(expected)
    # Works on any shape (it flattens).
    assert fx.sq_norm(v.reshape(3, 3)) == expected


@FAST
@given(int_vectors(V_MAX, 7), int_vectors(V_MAX, 7))
def test_sq_distance_is_exact(a: np.ndarray, b: np.ndarray) -> None:
    expected = sum((int(x) - int(y)) ** 2 for x, y in zip(a, b, strict=True))
    assert fx.sq_distance(a, b) == expected
    assert fx.sq_distance(b, a) == expected


def test_sq_norm_over_several_chunks_at_the_bound() -> None:
    # More coordinates than one chunk of the limb sums, all at the documented extreme.
    size = 2 * (1 << 17) + 3
    v = np.full(size, -SQ_MAX, dtype=np.int64)
    v[::2] = SQ_MAX
    assert fx.sq_norm(v) == size * SQ_MAX**2
    rng = np.random.default_rng(7)
    w = rng.integers(-SQ_MAX, SQ_MAX, size=size, dtype=np.int64, endpoint=True)
    assert fx.sq_norm(w) == sum(int(x) ** 2 for x in w.tolist())


def test_sq_distance_between_opposite_extremes() -> None:
    a = np.full(4, V_MAX, dtype=np.int64)
    b = np.full(4, -V_MAX, dtype=np.int64)
    assert fx.sq_distance(a, b) == 4 * (2 * V_MAX) ** 2
    assert fx.norm(a - b) == math.isqrt(4 * (2 * V_MAX) ** 2) == 4 * V_MAX


def test_sq_norm_of_empty_vector() -> None:
    assert fx.sq_norm(np.zeros(0, dtype=np.int64)) == 0


# -- apportion ------------------------------------------------------------------------------------


@FAST
@given(
    st.lists(st.one_of(st.integers(0, 10), st.integers(0, 1 << 80)), min_size=1, max_size=12),
    st.one_of(st.just(1_000_000), st.integers(0, 1 << 45)),
)
@example([1, 1, 1], 1_000_000)
@example([0, 0], 5)
@example([3, 0, 3], 1)
def test_apportion_is_largest_remainder(weights: list[int], total: int) -> None:
    parts = fx.apportion(weights, total)
    assert len(parts) == len(weights)
    wsum = sum(weights)
    if wsum == 0:
        assert parts == [0] * len(weights)
        return
    assert sum(parts) == total
    shares = [Fraction(w * total, wsum) for w in weights]
    floors = [math.floor(s) for s in shares]
    bumped = [p - fl for p, fl in zip(parts, floors, strict=True)]
    assert set(bumped) <= {0, 1}
    rem = [s - fl for s, fl in zip(shares, floors, strict=True)]
    # Every part that got the extra unit has a larger remainder than every part that did not,
    # ties going to the earlier position.
    for i in range(len(weights)):
        for j in range(len(weights)):
            if bumped[i] == 1 and bumped[j] == 0:
                assert (rem[i], -i) > (rem[j], -j)
    # Zero weights get nothing.
    assert all(p == 0 for p, w in zip(parts, weights, strict=True) if w == 0)


def test_apportion_ties_go_to_the_earlier_position() -> None:
    assert fx.apportion([1, 1, 1], 1_000_000) == [333_334, 333_333, 333_333]
    assert fx.apportion([1, 1, 1], 2) == [1, 1, 0]
    assert fx.apportion([1, 2, 1, 2], 3) == [1, 1, 0, 1]
    assert fx.apportion([2, 1, 1], 3) == [1, 1, 1]
