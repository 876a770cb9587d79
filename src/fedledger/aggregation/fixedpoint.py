"""Exact fixed-point arithmetic for bit-for-bit deterministic aggregation.

Nodes agree on a round by comparing hashes of the models they computed, so every node must
compute the *same bytes* from the same set of updates, whatever their order and whatever the
machine. Floating-point reductions cannot promise that (summation order, SIMD width, BLAS, FMA
all change the last bits). fedledger therefore aggregates in integers:

* every float parameter ``x`` is quantized to ``q = round_half_even(x * 2**FRAC_BITS)``, an
  ``int64``; ``x * 2**24`` is exact in float64 and ``numpy.rint`` is IEEE round-half-even, so
  this step is the same everywhere;
* inputs must satisfy ``|x| < 2**VALUE_BITS`` (131072); larger values are rejected as out of
  range, never wrapped;
* sums, weighted means, products with fractions and squared norms are computed *exactly* (the
  helpers below split values into limbs so no intermediate exceeds int64); integer addition is
  associative, so results do not depend on input order at all;
* divisions round half up (``floor(a / b + 1/2)``), square roots are ``math.isqrt`` (floor);
* results are converted back with ``q / 2**FRAC_BITS`` (exact in float64) and a final
  round-to-nearest-even cast to float32.

Precision: an absolute resolution of ``2**-24`` (about 6e-8) per coordinate, the float32
resolution at 1.0. Values smaller than ``2**-25`` in magnitude quantize to zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FRAC_BITS = 24
"""Fractional bits of the fixed-point representation."""

SCALE = 1 << FRAC_BITS
VALUE_BITS = 17
"""Inputs must satisfy ``|x| < 2**VALUE_BITS``."""

MAX_ABS_VALUE = float(1 << VALUE_BITS)
MAX_TOTAL_WEIGHT = (1 << 40) - 1
"""Upper bound on the sum of integer weights (and on fraction numerators/denominators)."""

_LIMB = 21
_LIMB_MASK = (1 << _LIMB) - 1
_SQ_LIMB = 22
_SQ_MASK = (1 << _SQ_LIMB) - 1
_SQ_CHUNK = 1 << 17

Int64Array = np.ndarray


def quantize(x: np.ndarray) -> Int64Array:
    """Quantize finite floats with ``|x| < MAX_ABS_VALUE`` to int64 fixed point.

    The caller validates range and finiteness first (see :mod:`fedledger.aggregation.validation`).
    """
    scaled = np.asarray(x, dtype=np.float64) * float(SCALE)
    return np.rint(scaled).astype(np.int64)


def quantize_params(params: Sequence[np.ndarray]) -> Int64Array:
    """A parameter list as one flat fixed-point vector (state-dict order), its values finite
    (``ValueError`` otherwise); the caller keeps them below ``MAX_ABS_VALUE``."""
    if not params:
        return np.zeros(0, np.int64)
    flat = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in params])
    if not np.all(np.isfinite(flat)):
        raise ValueError("a parameter is not finite")
    return quantize(flat)


def dequantize(q: Int64Array, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Convert fixed point back to floats: exact in float64, then one IEEE rounding to dtype."""
    return np.ascontiguousarray((q.astype(np.float64) / float(SCALE)).astype(dtype))


def _check_weights(weights: Sequence[int]) -> int:
    total = 0
    for w in weights:
        if int(w) != w or w < 0:
            raise ValueError(f"weights must be non-negative integers, got {w!r}")
        total += int(w)
    if total <= 0:
        raise ValueError("the total weight must be positive")
    if total > MAX_TOTAL_WEIGHT:
        raise ValueError(f"the total weight {total} exceeds {MAX_TOTAL_WEIGHT}")
    return total


def weighted_mean(values: Sequence[Int64Array], weights: Sequence[int]) -> Int64Array:
    """Exact ``round(sum(w_i * v_i) / sum(w_i))`` per coordinate, rounding half up.

    ``|v_i| < 2**42``; ``sum(w_i) <= MAX_TOTAL_WEIGHT``. The result does not depend on the order
    of the inputs: every intermediate is an exact integer.
    """
    if len(values) != len(weights) or not values:
        raise ValueError("weighted_mean needs as many weights as values, and at least one")
    total = _check_weights(weights)
    s_hi = np.zeros(values[0].shape, dtype=np.int64)
    s_lo = np.zeros(values[0].shape, dtype=np.int64)
    for v, w in zip(values, weights, strict=True):
        if w == 0:
            continue
        s_hi += np.right_shift(v, _LIMB) * np.int64(w)
        s_lo += np.bitwise_and(v, _LIMB_MASK) * np.int64(w)
    return _div_round(s_hi, s_lo, total)


def _div_round(s_hi: Int64Array, s_lo: Int64Array, den: int) -> Int64Array:
    """``floor((s_hi * 2**_LIMB + s_lo + den // 2) / den)`` without overflow.

    Requires ``|s_hi| < den * 2**21``, ``0 <= s_lo < den * 2**21`` and ``den < 2**40``.
    """
    d = np.int64(den)
    a = np.floor_divide(s_hi, d)
    r = s_hi - a * d  # in [0, den)
    rest = np.left_shift(r, _LIMB) + s_lo + np.int64(den // 2)
    out: Int64Array = np.left_shift(a, _LIMB) + np.floor_divide(rest, d)
    return out


def mul_frac(v: Int64Array, num: int, den: int) -> Int64Array:
    """Exact ``round(v * num / den)`` per coordinate (half up), ``|v| < 2**42``,
    ``0 <= num <= den <= MAX_TOTAL_WEIGHT``."""
    if not 0 < den <= MAX_TOTAL_WEIGHT or not 0 <= num <= den:
        raise ValueError(f"fraction {num}/{den} out of range")
    hi = np.right_shift(v, _LIMB) * np.int64(num)
    lo = np.bitwise_and(v, _LIMB_MASK) * np.int64(num)
    # lo may reach 2**61: carry its high part into hi so the division's bounds hold.
    hi += np.right_shift(lo, _LIMB)
    lo = np.bitwise_and(lo, _LIMB_MASK)
    return _div_round(hi, lo, den)


def round_div(total: Int64Array, count: int) -> Int64Array:
    """Exact ``round(total / count)`` (half up) for small positive ``count``."""
    c = np.int64(count)
    return np.floor_divide(total + np.int64(count // 2), c)


def sq_norm(v: Int64Array) -> int:
    """Exact squared Euclidean norm of an int64 vector with ``|v| < 2**43``, as a Python int."""
    flat = v.reshape(-1)
    hi_sq = 0
    cross = 0
    lo_sq = 0
    for start in range(0, flat.size, _SQ_CHUNK):
        chunk = flat[start : start + _SQ_CHUNK]
        hi = np.right_shift(chunk, _SQ_LIMB)
        lo = np.bitwise_and(chunk, _SQ_MASK)
        hi_sq += int(np.sum(hi * hi, dtype=np.int64))
        cross += int(np.sum(hi * lo, dtype=np.int64))
        lo_sq += int(np.sum(lo * lo, dtype=np.int64))
    return (hi_sq << (2 * _SQ_LIMB)) + (cross << (_SQ_LIMB + 1)) + lo_sq


def sq_distance(a: Int64Array, b: Int64Array) -> int:
    """Exact squared Euclidean distance between two int64 vectors (``|a|, |b| < 2**42``)."""
    return sq_norm(a - b)


def norm(v: Int64Array) -> int:
    """Floor of the Euclidean norm, in fixed-point units."""
    return math.isqrt(sq_norm(v))


def apportion(weights: Sequence[int], total: int) -> list[int]:
    """Split the integer ``total`` pro rata to non-negative integer ``weights``, exactly.

    Largest-remainder method; ties go to the earlier position, so the caller's canonical order
    decides. The parts sum to ``total`` (or are all zero when every weight is zero).
    """
    wsum = sum(weights)
    if wsum == 0:
        return [0] * len(weights)
    parts = [w * total // wsum for w in weights]
    remainders = [w * total % wsum for w in weights]
    short = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:short]:
        parts[i] += 1
    return parts
