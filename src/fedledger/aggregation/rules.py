"""Aggregation rules: pure, deterministic functions over lists of parameter lists.

Every rule

1. validates each input (finite, shapes and dtypes of the task, fixed-point range) and rejects
   bad ones with a reason, never aborting the call because of one of them;
2. checks its Byzantine bound on the number of valid inputs ``n`` for the ``f`` attackers it is
   asked to tolerate, and raises :class:`ByzantineBoundError` when it is broken;
3. computes in exact fixed point (:mod:`fedledger.aggregation.fixedpoint`) over the inputs in
   canonical order, so the same inputs in any order give byte-identical output on any machine;
4. returns an :class:`AggregationResult`: the aggregate, which inputs it kept, and an integer
   score per input (parts of :data:`SCORE_TOTAL`), so rewards pay only what the rule used.

Self-reported example counts are only used by :func:`fedavg`, and there they can be capped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np

from fedledger.aggregation import fixedpoint as fx
from fedledger.aggregation.params import RULE_PARAMS, rule_params
from fedledger.aggregation.validation import (
    ParamSpec,
    Prepared,
    canonical,
    prepare,
    unflatten,
)
from fedledger.errors import AggregationError, ByzantineBoundError

SCORE_TOTAL = 1_000_000
"""Scores of one aggregation are integers that sum to this (parts per million)."""

Updates = Sequence[Sequence[np.ndarray]] | Prepared
r"""Parameter lists, or inputs already :func:`prepare`\ d (validated and quantized once)."""


@dataclass(frozen=True, kw_only=True)
class AggregationResult:
    """What a rule computed, and from which inputs."""

    rule: str
    params: list[np.ndarray]
    kept: tuple[int, ...]
    """Caller's indices of the inputs that contributed, ascending."""
    scores: tuple[int, ...]
    """One integer per input in the caller's order; 0 for rejected or unused inputs; the scores
    of kept inputs sum to :data:`SCORE_TOTAL`."""
    rejected: Mapping[int, str]
    """Caller's index -> reason, for each input that failed validation."""

    @property
    def score_fractions(self) -> tuple[float, ...]:
        return tuple(s / SCORE_TOTAL for s in self.scores)


def _result(
    rule: str, prep: Prepared, aggregate_q: np.ndarray, contribution: Sequence[int]
) -> AggregationResult:
    """Build the result: ``contribution`` has one non-negative integer per canonical row."""
    parts = fx.apportion(list(contribution), SCORE_TOTAL)
    scores = [0] * prep.n_inputs
    for row, part in enumerate(parts):
        scores[prep.index[row]] = part
    kept = tuple(sorted(prep.index[row] for row, part in enumerate(parts) if part > 0))
    params = unflatten(fx.dequantize(aggregate_q, np.float64), prep.spec)
    return AggregationResult(
        rule=rule, params=params, kept=kept, scores=tuple(scores), rejected=dict(prep.rejected)
    )


def _check_f(f: int) -> None:
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise AggregationError(f"f must be a non-negative integer, got {f!r}")


def _require(rule: str, prep: Prepared, f: int, *, minimum: int, bound: str) -> None:
    """Raise unless ``n >= minimum`` valid inputs are present."""
    if prep.n >= max(minimum, 1):
        return
    why = f"{rule} needs {bound}" if bound else f"{rule} needs at least one valid input"
    rejected = f"; {len(prep.rejected)} of {prep.n_inputs} inputs rejected" if prep.rejected else ""
    raise ByzantineBoundError(f"{why}, got n={prep.n} valid inputs with f={f}{rejected}")


# --------------------------------------------------------------------------------------------
# FedAvg


def capped_weights(weights: Sequence[int], max_fraction: float | Fraction) -> list[Fraction]:
    """Cap each weight at ``max_fraction`` of the capped total (water-filling), exactly.

    Weights above the cap are lowered to ``c * W'`` where ``W'`` is the new total; if ``c * n < 1``
    no cap can hold and every weight becomes equal.
    """
    c = Fraction(max_fraction)
    ws = [Fraction(w) for w in weights]
    n = len(ws)
    if c * n <= 1:
        return [Fraction(1)] * n
    capped: set[int] = set()
    while True:
        free = sum(w for i, w in enumerate(ws) if i not in capped)
        total = free / (1 - c * len(capped))
        cap = c * total
        over = {i for i, w in enumerate(ws) if i not in capped and w > cap}
        if not over:
            return [cap if i in capped else w for i, w in enumerate(ws)]
        capped |= over


_WEIGHT_UNITS = 1 << 30


def fedavg(
    updates: Updates,
    weights: Sequence[int] | None = None,
    *,
    f: int = 0,
    max_weight_fraction: float | None = None,
    spec: ParamSpec | None = None,
) -> AggregationResult:
    """Weighted mean (FedAvg), weighted by self-reported example counts.

    ``max_weight_fraction`` caps any one participant's share of the total weight, since counts
    can be inflated. FedAvg tolerates no Byzantine input: ``f`` must be 0.
    """
    _check_f(f)
    if f != 0:
        raise ByzantineBoundError(f"fedavg tolerates no Byzantine inputs, got f={f}")
    if max_weight_fraction is not None and not 0 < max_weight_fraction <= 1:
        raise AggregationError(f"max_weight_fraction must be in (0, 1], got {max_weight_fraction}")
    prep = prepare(updates, weights, spec=spec)
    _require("fedavg", prep, f, minimum=1, bound="")
    ws: list[int] = list(prep.weights)
    if max_weight_fraction is not None:
        fractions = capped_weights(ws, max_weight_fraction)
        ws = _fractions_to_units(fractions)
    elif sum(ws) > fx.MAX_TOTAL_WEIGHT:
        ws = _fractions_to_units([Fraction(w) for w in ws])
    return _result("fedavg", prep, fx.weighted_mean(list(prep.matrix), ws), ws)


def _fractions_to_units(fractions: Sequence[Fraction]) -> list[int]:
    """Exact rational weights -> integers summing to 2**30 (largest remainder)."""
    denominator = math.lcm(*(fr.denominator for fr in fractions))
    return fx.apportion([int(fr * denominator) for fr in fractions], _WEIGHT_UNITS)


# --------------------------------------------------------------------------------------------
# Coordinate-wise rules


def _coordinate_counts(order: np.ndarray, rows: slice, n: int) -> list[int]:
    """How many coordinates each canonical row occupies within the ``rows`` ranks."""
    return [int(c) for c in np.bincount(order[rows].reshape(-1), minlength=n)]


def _median_q(matrix: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Coordinate-wise median of the rows (even n: mean of the two middle values, half up),
    and how many coordinates each row supplied."""
    n = matrix.shape[0]
    order = np.argsort(matrix, axis=0, kind="stable")
    ranked = np.take_along_axis(matrix, order, axis=0)
    if n % 2:
        return ranked[n // 2].copy(), _coordinate_counts(order, slice(n // 2, n // 2 + 1), n)
    agg = np.right_shift(ranked[n // 2 - 1] + ranked[n // 2] + 1, 1)
    return agg, _coordinate_counts(order, slice(n // 2 - 1, n // 2 + 1), n)


def median(updates: Updates, *, f: int = 0, spec: ParamSpec | None = None) -> AggregationResult:
    """Coordinate-wise median; needs ``n > 2f``. Even ``n``: mean of the two middle values."""
    _check_f(f)
    prep = prepare(updates, spec=spec)
    _require("median", prep, f, minimum=2 * f + 1, bound="n > 2f")
    agg, counts = _median_q(prep.matrix)
    return _result("median", prep, agg, counts)


def trimmed_mean(
    updates: Updates, *, beta: float, f: int = 0, spec: ParamSpec | None = None
) -> AggregationResult:
    """Coordinate-wise trimmed mean: drop ``k = floor(beta * n)`` values at each end.

    Needs ``0 <= beta < 0.5`` and ``k >= f`` (so ``n > 2f``), as ``scipy.stats.trim_mean``.
    """
    _check_f(f)
    if not 0 <= beta < 0.5:
        raise AggregationError(f"trimmed_mean needs 0 <= beta < 0.5, got {beta}")
    prep = prepare(updates, spec=spec)
    _require("trimmed_mean", prep, f, minimum=2 * f + 1, bound="n > 2f")
    n = prep.n
    k = int(beta * n)
    if k < f:
        raise ByzantineBoundError(
            f"trimmed_mean with beta={beta} trims k={k} per side of n={n}; "
            f"it must trim at least f={f} (raise beta to >= {f / n:.3f})"
        )
    order = np.argsort(prep.matrix, axis=0, kind="stable")
    ranked = np.take_along_axis(prep.matrix, order, axis=0)
    kept_rows = slice(k, n - k)
    agg = fx.round_div(np.asarray(np.sum(ranked[kept_rows], axis=0, dtype=np.int64)), n - 2 * k)
    return _result("trimmed_mean", prep, agg, _coordinate_counts(order, kept_rows, n))


# --------------------------------------------------------------------------------------------
# Krum


def _pairwise_sq_distances(matrix: np.ndarray) -> list[list[int]]:
    n = matrix.shape[0]
    d = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            d[i][j] = d[j][i] = fx.sq_distance(matrix[i], matrix[j])
    return d


def krum_scores(matrix: np.ndarray, f: int) -> list[int]:
    """Krum score of each row: the sum of squared distances to its ``n - f - 2`` nearest others."""
    n = matrix.shape[0]
    d = _pairwise_sq_distances(matrix)
    closest = n - f - 2
    return [sum(sorted(d[i][j] for j in range(n) if j != i)[:closest]) for i in range(n)]


def multi_krum(
    updates: Updates, *, f: int, m: int | None = None, spec: ParamSpec | None = None
) -> AggregationResult:
    """Multi-Krum: the mean of the ``m`` inputs with the lowest Krum scores.

    Needs ``n > 2f + 2`` and ``1 <= m <= n - f`` (default ``m = n - f``). Ties in score go to
    the canonical order. ``m = 1`` is Krum.
    """
    _check_f(f)
    prep = prepare(updates, spec=spec)
    _require("multi_krum", prep, f, minimum=2 * f + 3, bound="n > 2f + 2")
    n = prep.n
    m = n - f if m is None else m
    if not 1 <= m <= n - f:
        raise AggregationError(f"multi_krum needs 1 <= m <= n - f = {n - f}, got m={m}")
    scores = krum_scores(prep.matrix, f)
    chosen = sorted(range(n), key=lambda i: (scores[i], i))[:m]
    agg = fx.weighted_mean([prep.matrix[i] for i in chosen], [1] * m)
    contribution = [1 if i in chosen else 0 for i in range(n)]
    rule = "krum" if m == 1 else "multi_krum"
    return _result(rule, prep, agg, contribution)


def krum(updates: Updates, *, f: int, spec: ParamSpec | None = None) -> AggregationResult:
    """Krum (Blanchard et al., 2017): the single input with the lowest Krum score."""
    return multi_krum(updates, f=f, m=1, spec=spec)


# --------------------------------------------------------------------------------------------
# Centered clipping and geometric median


def _shrink(num: int, den: int) -> tuple[int, int]:
    """Scale a fraction ``num/den <= 1`` down until both fit the fixed-point helpers."""
    while den > fx.MAX_TOTAL_WEIGHT:
        num >>= 1
        den >>= 1
    return num, max(den, 1)


def centered_clipping(
    updates: Updates,
    *,
    tau: float,
    center: Sequence[np.ndarray] | None = None,
    iterations: int = 1,
    f: int = 0,
    spec: ParamSpec | None = None,
) -> AggregationResult:
    """Centered clipping (Karimireddy, He and Jaggi, 2021).

    ``v <- v + mean_i clip(x_i - v, tau)`` for ``iterations`` steps, starting from ``center``
    (for example the previous round's model) or, when none is given, the coordinate-wise median.
    Needs ``n > 2f``. An input's score is its mean clipping factor ``min(1, tau / |x_i - v|)``.
    """
    _check_f(f)
    if not (math.isfinite(tau) and tau > 0):
        raise AggregationError(f"centered_clipping needs tau > 0, got {tau}")
    if iterations < 1:
        raise AggregationError(f"centered_clipping needs iterations >= 1, got {iterations}")
    prep = prepare(updates, spec=spec)
    _require("centered_clipping", prep, f, minimum=2 * f + 1, bound="n > 2f")
    n = prep.n
    tau_q = round(tau * fx.SCALE)  # not capped: _shrink keeps tau_q / dist <= 1 in range
    if center is None:
        v_q = _median_q(prep.matrix)[0]
    else:
        cprep = prepare([center], spec=prep.spec)
        if cprep.n != 1:
            raise AggregationError(f"invalid center: {cprep.rejected.get(0)}")
        v_q = cprep.matrix[0]
    factors = [Fraction(0)] * n
    for _ in range(iterations):
        total = np.zeros_like(v_q)
        for i in range(n):
            diff = prep.matrix[i] - v_q
            dist = fx.norm(diff)
            if dist > tau_q:
                num, den = _shrink(tau_q, dist)
                total += fx.mul_frac(diff, num, den)
                factors[i] += Fraction(tau_q, dist)
            else:
                total += diff
                factors[i] += 1
        v_q = v_q + fx.round_div(total, n)
    contribution = _fractions_to_units(factors)
    return _result("centered_clipping", prep, v_q, contribution)


def _weiszfeld_weights(dists: Sequence[int], unit: int) -> list[int]:
    """Integer Weiszfeld weights ``~ unit * min(d) / d_i``, distances below one quantum as one."""
    clamped = [max(d, 1) for d in dists]
    nearest = min(clamped)
    return [(unit * nearest + d // 2) // d for d in clamped]


def _sum_of_distances(matrix: np.ndarray, z_q: np.ndarray) -> int:
    return sum(fx.norm(row - z_q) for row in matrix)


def _vardi_zhang_step(matrix: np.ndarray, k: int, unit: int, tol_sq: int) -> np.ndarray | None:
    """Weiszfeld step from input ``k``, where the plain one stalls (Vardi and Zhang, 2000).

    With ``eta`` inputs within ``tol`` of ``x_k`` (``x_k`` included), ``T`` the Weiszfeld mean of
    the others and ``r = |sum_i (x_i - x_k) / d_i|`` over the others: None when ``r <= eta``
    (``x_k`` is the geometric median, to within ``tol``), else ``x_k + (1 - eta / r) (T - x_k)``.
    """
    x_k = matrix[k]
    sq = [fx.sq_distance(row, x_k) for row in matrix]
    others = [i for i, d in enumerate(sq) if d > tol_sq]
    if not others:
        return None
    eta = len(sq) - len(others)
    dists = [math.isqrt(sq[i]) for i in others]
    weights = _weiszfeld_weights(dists, unit)
    step = fx.weighted_mean([matrix[i] for i in others], weights) - x_k
    # sum_i 1/d_i = sum(weights) / (unit * min(dists)), and r = |T - x_k| * sum_i 1/d_i
    r_scaled = fx.norm(step) * sum(weights)
    eta_scaled = eta * unit * min(dists)
    if r_scaled <= eta_scaled:
        return None
    num, den = _shrink(r_scaled - eta_scaled, r_scaled)
    new_z: np.ndarray = x_k + fx.mul_frac(step, num, den)
    return new_z


def geometric_median(
    updates: Updates,
    *,
    f: int = 0,
    max_iter: int = 100,
    tol: float = 1e-6,
    spec: ParamSpec | None = None,
) -> AggregationResult:
    """Geometric median by Weiszfeld's algorithm, in exact fixed point.

    Starts from the coordinate-wise median or the mean, whichever has the smaller sum of
    distances to the inputs; stops after ``max_iter`` iterations or when the estimate moves less
    than ``tol``. Distances below one quantum count as one quantum. Near an input, Weiszfeld's
    steps are tiny whether or not that input is the geometric median (on it, they are zero), so
    the input nearest to where the iterations stop is then tested with Vardi and Zhang's (2000)
    step, inputs within ``tol`` of it counting as the same point: if that point is optimal it is
    the result, otherwise the iterations go on from the step; either only when it lowers the sum
    of distances. (Distinct inputs a few ``tol`` apart can still stop it early near them; the
    result is then still no worse than the start.) Needs ``n > 2f``. An input's score is its
    final Weiszfeld weight ``1 / |x_i - z|``.
    """
    _check_f(f)
    if max_iter < 1:
        raise AggregationError(f"geometric_median needs max_iter >= 1, got {max_iter}")
    if not (math.isfinite(tol) and tol >= 0):
        raise AggregationError(f"geometric_median needs a finite tol >= 0, got {tol}")
    prep = prepare(updates, spec=spec)
    _require("geometric_median", prep, f, minimum=2 * f + 1, bound="n > 2f")
    n = prep.n
    if n > 1023:
        raise AggregationError("geometric_median supports at most 1023 inputs")
    unit = fx.MAX_TOTAL_WEIGHT // n
    tol_sq = int(tol * fx.SCALE) ** 2
    # Weiszfeld only descends: starting from the better of the two, the result is no worse.
    starts = [_median_q(prep.matrix)[0], fx.weighted_mean(list(prep.matrix), [1] * n)]
    z_q = min(starts, key=lambda z: _sum_of_distances(prep.matrix, z))
    iterations = 0
    checked: set[int] = set()
    while True:
        while iterations < max_iter:
            iterations += 1
            dists = [fx.norm(row - z_q) for row in prep.matrix]
            new_z = fx.weighted_mean(list(prep.matrix), _weiszfeld_weights(dists, unit))
            moved = fx.sq_distance(new_z, z_q)
            z_q = new_z
            if moved <= tol_sq:
                break
        # Near an input x_k plain Weiszfeld crawls (on it, it stops), so a small move does not
        # mean convergence: take x_k if it is optimal, else its Vardi-Zhang step, when that
        # lowers the sum of distances. Each input is tested at most once.
        dists = [fx.norm(row - z_q) for row in prep.matrix]
        k = min(range(n), key=lambda i: (dists[i], i))
        if k in checked:
            break
        checked.add(k)
        vz = _vardi_zhang_step(prep.matrix, k, unit, tol_sq)
        candidate = prep.matrix[k] if vz is None else vz
        if _sum_of_distances(prep.matrix, candidate) >= sum(dists):
            break
        z_q = candidate.copy()
        if vz is None or iterations >= max_iter:  # x_k is the geometric median, or no budget
            break
    weights = _weiszfeld_weights([fx.norm(row - z_q) for row in prep.matrix], unit)
    return _result("geometric_median", prep, z_q, weights)


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True, kw_only=True)
class RuleInfo:
    """A rule's name, function and the parameters a task configuration may set for it alone
    (from :mod:`fedledger.aggregation.params`, which describes every parameter's type and range;
    the any-rule ones, applied by :func:`aggregate`, are there too)."""

    name: str
    fn: Callable[..., AggregationResult]
    params: tuple[str, ...]
    uses_weights: bool
    min_inputs: Callable[[int], int]
    """Smallest number of valid inputs the rule accepts for ``f``."""
    bound: str


RULES: Mapping[str, RuleInfo] = {
    "fedavg": RuleInfo(
        name="fedavg",
        fn=fedavg,
        params=rule_params("fedavg"),
        uses_weights=True,
        min_inputs=lambda f: 1 if f == 0 else 2**62,
        bound="f = 0",
    ),
    "median": RuleInfo(
        name="median", fn=median, params=rule_params("median"), uses_weights=False,
        min_inputs=lambda f: 2 * f + 1, bound="n > 2f",
    ),
    "trimmed_mean": RuleInfo(
        name="trimmed_mean", fn=trimmed_mean, params=rule_params("trimmed_mean"),
        uses_weights=False,
        min_inputs=lambda f: 2 * f + 1, bound="n > 2f",
    ),
    "krum": RuleInfo(
        name="krum", fn=krum, params=rule_params("krum"), uses_weights=False,
        min_inputs=lambda f: 2 * f + 3, bound="n > 2f + 2",
    ),
    "multi_krum": RuleInfo(
        name="multi_krum", fn=multi_krum, params=rule_params("multi_krum"), uses_weights=False,
        min_inputs=lambda f: 2 * f + 3, bound="n > 2f + 2",
    ),
    "centered_clipping": RuleInfo(
        name="centered_clipping", fn=centered_clipping,
        params=rule_params("centered_clipping"),
        uses_weights=False, min_inputs=lambda f: 2 * f + 1, bound="n > 2f",
    ),
    "geometric_median": RuleInfo(
        name="geometric_median", fn=geometric_median,
        params=rule_params("geometric_median"),
        uses_weights=False, min_inputs=lambda f: 2 * f + 1, bound="n > 2f",
    ),
}  # fmt: skip


def aggregate(
    rule: str,
    updates: Sequence[Sequence[np.ndarray]],
    weights: Sequence[int] | None = None,
    *,
    f: int = 0,
    params: Mapping[str, Any] | None = None,
    spec: ParamSpec | None = None,
    center: Sequence[np.ndarray] | None = None,
    reputation: Sequence[tuple[int, int]] | None = None,
) -> AggregationResult:
    """Run the rule named ``rule`` with the task's parameters.

    ``center`` is the round's base model: centered clipping clips around it, and with any rule
    an update *identical* to it (after quantization) is rejected as free-riding -- a node that
    did no training and resubmits the model it received -- so it scores 0 and earns nothing.

    ``params["norm_bound"]`` (any rule, with ``center``): an update whose step from the base is
    longer than ``norm_bound`` times the median step length of the round's valid updates is
    rejected (computed exactly on the quantized values, so every node agrees).

    Inputs rejected before the rule runs (invalid, free-riding, too long) count against ``f``:
    the rule then tolerates ``f - r`` attackers among the ``n - r`` others, so ``f`` attackers
    sending garbage cannot push the round below the rule's Byzantine bound and stall it.

    ``params["nnm"] = True`` (any rule but fedavg): nearest-neighbour mixing first
    (:func:`nearest_neighbour_mixing`); the rule then runs on the mixed inputs, and each
    input's score is the sum of the scores of the mixed inputs it went into.

    ``reputation``: for each input, its author's ``(selections, updates)`` from the ledger
    (the rounds it was paid for, and the rounds it revealed an update in, before this round;
    :mod:`fedledger.ledger.reputation`). With ``params["min_reputation"] = p`` (any rule), an
    input whose author revealed at least ``reputation_after`` times (default 3) and was
    selected in fewer than ``p`` of them is rejected. With ``params["reputation_rewards"] =
    True``, each kept input's score is weighted by ``(1 + selections) / (1 + updates)``: at
    equal contribution, a record of being selected earns more.
    """
    info = RULES.get(rule)
    if info is None:
        raise AggregationError(f"unknown aggregation rule {rule!r}; known: {', '.join(RULES)}")
    kwargs: dict[str, Any] = dict(params or {})
    norm_bound = kwargs.pop("norm_bound", None)
    min_rep = kwargs.pop("min_reputation", None)
    rep_after = kwargs.pop("reputation_after", RULE_PARAMS["reputation_after"].default)
    rep_rewards = kwargs.pop("reputation_rewards", RULE_PARAMS["reputation_rewards"].default)
    if (min_rep is not None or rep_rewards) and (
        reputation is None or len(reputation) != len(updates)
    ):
        raise AggregationError("reputation rules need one (selections, updates) per update")
    nnm = kwargs.pop("nnm", False)
    if not isinstance(nnm, bool):
        raise AggregationError(f"nnm must be true or false, got {nnm!r}")
    if nnm and rule == "fedavg":
        raise AggregationError("nnm needs a robust rule (f > 0), not fedavg")
    unknown = set(kwargs) - set(info.params)
    if unknown:
        raise AggregationError(f"{rule} takes no parameter(s) {sorted(unknown)}")
    if rule == "centered_clipping":
        kwargs["center"] = center
    # Validate and quantize every input once; the screens, the mixing and the rule all work on
    # these fixed-point rows.
    prep = prepare(updates, weights if info.uses_weights else None, spec=spec)
    if min_rep is not None:  # first: a member with a poor record is not even looked at
        assert reputation is not None
        prep = prep.without(_low_reputation(reputation, min_rep, rep_after))
    if center is not None:
        cprep = prepare([center], spec=prep.spec)
        if cprep.n == 1:
            base = cprep.matrix[0]
            prep = prep.without(_copies_of(base, prep))
            if norm_bound is not None:
                prep = prep.without(_too_long(base, prep, norm_bound))
    if f > 0:  # rejected inputs use up the Byzantine budget: the rule tolerates f - r of the rest
        _check_f(f)
        f = max(0, f - len(prep.rejected))

    def run(inputs: Prepared) -> AggregationResult:
        args = (inputs, list(inputs.weights)) if info.uses_weights else (inputs,)
        try:
            out: AggregationResult = info.fn(*args, f=f, spec=inputs.spec, **kwargs)
        except TypeError as exc:  # a required rule parameter is missing (beta, tau)
            raise AggregationError(f"{rule}: {exc}") from exc
        return out

    result = _mixed(run, prep, f=f) if nnm else run(prep)
    if rep_rewards:
        assert reputation is not None
        result = _reputation_weighted(result, reputation)
    return result


def _low_reputation(
    reputation: Sequence[tuple[int, int]], minimum: float, after: int
) -> dict[int, str]:
    if isinstance(minimum, bool) or not 0 <= minimum <= 1:
        raise AggregationError(f"min_reputation must be in [0, 1], got {minimum!r}")
    if isinstance(after, bool) or not isinstance(after, int) or after < 1:
        raise AggregationError(f"reputation_after must be an integer >= 1, got {after!r}")
    bound = Fraction(minimum).limit_denominator(10**6)
    return {
        i: f"low reputation: selected in {sel} of {rev} rounds (minimum {minimum})"
        for i, (sel, rev) in enumerate(reputation)
        if rev >= after and Fraction(sel, rev) < bound
    }


def _reputation_weighted(
    result: AggregationResult, reputation: Sequence[tuple[int, int]]
) -> AggregationResult:
    """Scores times ``(1 + selections) / (1 + updates)``, exactly, apportioned again."""
    den = math.lcm(*(1 + rev for _, rev in reputation))
    weights = [
        score * (1 + sel) * (den // (1 + rev))
        for score, (sel, rev) in zip(result.scores, reputation, strict=True)
    ]
    return replace(result, scores=tuple(fx.apportion(weights, SCORE_TOTAL)))


FREE_RIDING = "identical to the round's base model (no training: free-riding)"


def nearest_neighbour_mixing(matrix: np.ndarray, f: int) -> list[tuple[int, ...]]:
    """Nearest-neighbour mixing (NNM; Allouah et al., "Fixing by Mixing", AISTATS 2023): for
    each row, the rows it is replaced by the mean of (ascending) -- its ``n - f`` nearest rows,
    itself included, by exact squared distance, ties to the lower row. Mixing first shrinks
    the spread of the honest inputs (non-IID data) relative to the attackers' pull, which is
    what lets ALIE-style attacks hide inside the honest spread."""
    n = matrix.shape[0]
    if not 0 <= f < n:
        raise AggregationError(f"nnm needs 0 <= f < n, got f={f}, n={n}")
    d = _pairwise_sq_distances(matrix)
    return [tuple(sorted(sorted(range(n), key=lambda j: (d[i][j], j))[: n - f])) for i in range(n)]


def _mixed(
    run: Callable[[Prepared], AggregationResult], prep: Prepared, *, f: int
) -> AggregationResult:
    """``run`` over the NNM-mixed valid inputs; scores mapped back to the inputs. The mixed
    rows are exact fixed-point means of the prepared rows: they never leave the integers."""
    if prep.n == 0:
        return run(prep)
    groups = nearest_neighbour_mixing(prep.matrix, f)
    mixed = [
        (row, fx.weighted_mean([prep.matrix[j] for j in g], [1] * len(g)), 1)
        for row, g in enumerate(groups)
    ]
    inner = run(canonical(prep.spec, mixed, rejected={}, n_inputs=prep.n))
    contribution = [0] * prep.n
    for row, group in enumerate(groups):
        for j in group:
            contribution[j] += inner.scores[row]
    parts = fx.apportion(contribution, SCORE_TOTAL)
    scores = [0] * prep.n_inputs
    for row, part in enumerate(parts):
        scores[prep.index[row]] = part
    kept = tuple(sorted(prep.index[row] for row, part in enumerate(parts) if part > 0))
    rejected = dict(prep.rejected) | {prep.index[r]: why for r, why in inner.rejected.items()}
    return replace(inner, kept=kept, scores=tuple(scores), rejected=rejected)


def _too_long(base: np.ndarray, prep: Prepared, bound: float) -> dict[int, str]:
    """Inputs whose squared step from ``base`` exceeds ``bound**2`` times the median squared
    step (lower median) of the valid inputs; exact integers."""
    if not bound > 0:
        raise AggregationError(f"norm_bound must be > 0, got {bound}")
    if prep.n == 0:
        return {}
    steps: dict[int, int] = {}
    for row, i in enumerate(prep.index):
        d = prep.matrix[row] - base
        steps[i] = sum(int(x) * int(x) for x in d.tolist())
    ordered = sorted(steps.values())
    median = ordered[(len(ordered) - 1) // 2]
    limit = Fraction(bound).limit_denominator(10**6) ** 2 * median
    return {
        i: f"step {math.isqrt(sq) / fx.SCALE:.4g} longer than {bound} x the round's median "
        f"{math.isqrt(median) / fx.SCALE:.4g}"
        for i, sq in steps.items()
        if sq > limit
    }


def _copies_of(base: np.ndarray, prep: Prepared) -> dict[int, str]:
    """The valid inputs equal to ``base`` once quantized: free-riders."""
    return {
        i: FREE_RIDING for row, i in enumerate(prep.index) if np.array_equal(prep.matrix[row], base)
    }
