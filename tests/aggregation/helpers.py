"""Shared helpers of the aggregation tests: input builders, rule runners, tolerances."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedledger.aggregation import (
    RULES,
    SCORE_TOTAL,
    AggregationResult,
    centered_clipping,
    fedavg,
    geometric_median,
    krum,
    median,
    multi_krum,
    trimmed_mean,
)
from fedledger.aggregation.fixedpoint import SCALE

Update = list[np.ndarray]

# Fixed-point resolution (2**-24 per coordinate, plus a half quantum of rounding) and the
# float32 output rounding (half an ulp: 2**-24 relative).
ATOL = 2.0**-22
RTOL = 2.0**-23

SHAPES: tuple[tuple[int, ...], ...] = ((2, 2), (3,))
"""The parameter shapes most tests use: two arrays, 7 coordinates."""

RULE_NAMES: tuple[str, ...] = tuple(RULES)
ROBUST_RULES: tuple[str, ...] = tuple(r for r in RULES if r != "fedavg")

Runner = Callable[[Any, int], AggregationResult]

RUNNERS: dict[str, Runner] = {
    "fedavg": lambda u, f: fedavg(u, f=f),
    "median": lambda u, f: median(u, f=f),
    # beta = 0.45 trims k >= f of n = 2f + 1 for every f <= 4.
    "trimmed_mean": lambda u, f: trimmed_mean(u, beta=0.45, f=f),
    "krum": lambda u, f: krum(u, f=f),
    "multi_krum": lambda u, f: multi_krum(u, f=f),
    "centered_clipping": lambda u, f: centered_clipping(u, tau=1.0, iterations=2, f=f),
    "geometric_median": lambda u, f: geometric_median(u, f=f),
}
"""Each rule with fixed parameters, as ``run(updates, f)``."""


def run(rule: str, updates: Sequence[object], f: int = 0) -> AggregationResult:
    return RUNNERS[rule](updates, f)


def min_inputs(rule: str, f: int) -> int:
    return RULES[rule].min_inputs(f)


def params_bytes(result: AggregationResult) -> bytes:
    return b"".join(a.tobytes() for a in result.params)


def flat(update: Sequence[np.ndarray]) -> np.ndarray:
    """One update as a flat float64 vector."""
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in update])


def matrix(updates: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Updates as an (n, d) float64 matrix."""
    return np.stack([flat(u) for u in updates])


def out_flat(result: AggregationResult) -> np.ndarray:
    return flat(result.params)


def quantized(update: Sequence[np.ndarray]) -> bytes:
    """The fixed-point content of an update (what the rules see)."""
    q = np.rint(flat(update) * SCALE).astype(np.int64)
    return bytes(q.tobytes())


def random_updates(
    rng: np.random.Generator,
    n: int,
    *,
    shapes: Sequence[tuple[int, ...]] = SHAPES,
    scale: float = 1.0,
    loc: float = 0.0,
    dtype: type[np.floating] = np.float32,
) -> list[Update]:
    return [
        [(loc + scale * rng.standard_normal(s)).astype(dtype) for s in shapes] for _ in range(n)
    ]


def to_updates(
    x: np.ndarray, shapes: Sequence[tuple[int, ...]] = SHAPES, dtype: type = np.float32
) -> list[Update]:
    """Split the rows of an (n, d) matrix into updates of the given shapes."""
    assert x.ndim == 2
    assert x.shape[1] == n_coords(shapes)
    out: list[Update] = []
    for row in x:
        arrays: Update = []
        offset = 0
        for s in shapes:
            size = int(np.prod(s))
            arrays.append(np.ascontiguousarray(row[offset : offset + size].reshape(s), dtype=dtype))
            offset += size
        out.append(arrays)
    return out


def n_coords(shapes: Sequence[tuple[int, ...]] = SHAPES) -> int:
    return sum(int(np.prod(s)) for s in shapes)


def float32_matrices(
    min_n: int, max_n: int, *, d: int = 7, bound: float = 100.0
) -> st.SearchStrategy[np.ndarray]:
    """(n, d) float32 matrices with values in [-bound, bound]; hypothesis favours repeats."""
    return st.integers(min_n, max_n).flatmap(
        lambda n: hnp.arrays(
            np.float32,
            (n, d),
            elements=st.floats(-bound, bound, width=32, allow_subnormal=False),
        )
    )


def assert_scores_consistent(result: AggregationResult, n_inputs: int) -> None:
    """Scores are non-negative, one per input, zero outside ``kept``, and sum to SCORE_TOTAL."""
    assert len(result.scores) == n_inputs
    assert all(s >= 0 for s in result.scores)
    assert list(result.kept) == sorted(set(result.kept))
    assert sum(result.scores[i] for i in result.kept) == SCORE_TOTAL
    for i, s in enumerate(result.scores):
        if i not in result.kept:
            assert s == 0
        else:
            assert s > 0
    for i in result.rejected:
        assert result.scores[i] == 0
        assert i not in result.kept
