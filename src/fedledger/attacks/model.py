"""Model-poisoning attacks: pure functions over parameter lists (issue 6, first part).

Every attack returns the parameter list a Byzantine node publishes instead of its honest
update. They work on *deltas*: ``delta = update - base``, where ``base`` is the round's common
model. Omniscient attacks (ALIE, IPM, min-max) take ``benign``: the benign updates the attackers
know. Without a ledger, colluding attackers can wait for the honest announcements of a round;
on a ledger (updates served once their round closed) they cannot, and must use their own
benign updates (each attacker trains honestly first) -- the runner decides which; these
functions only compute.

References:

* sign flipping and scaling: Blanchard et al., NeurIPS 2017; Baruah et al. (ALIE), NeurIPS 2019;
* ALIE ("A Little Is Enough"): mean - z * std, coordinate-wise, with z from the number of
  nodes and attackers (Baruah, Baruch and Goldberg, 2019);
* IPM (inner product manipulation): -epsilon * mean of the benign deltas (Xie, Koyejo and Gupta,
  UAI 2019);
* adaptive factors: the aggregation rule of a task is public (it is on chain), so an attacker
  can choose ALIE's z or IPM's epsilon as the one that moves the rule's output furthest from
  the honest mean (:func:`strongest_factor`; the "optimal ALIE / IPM" of the ByzFL benchmark,
  Allouah et al., AISTATS 2023). Against plain averaging the best factor is as large as the
  rule's input validation lets through; against a robust rule it is the largest the rule keeps.
* min-max: mean + gamma * perturbation, gamma as large as keeps the malicious update's largest
  distance to a benign one below the largest distance between two benign ones (Shejwalkar and
  Houmansadr, NDSS 2021).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

from fedledger.errors import ConfigError

Params = list[np.ndarray]

__all__ = [
    "adaptive",
    "alie",
    "alie_z",
    "flatten",
    "gaussian_noise",
    "ipm",
    "min_max",
    "scaled",
    "sign_flip",
    "strongest_factor",
]


def flatten(params: Sequence[np.ndarray]) -> np.ndarray:
    """One float64 vector of every parameter, in order."""
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in params])


def _unflat(flat: np.ndarray, like: Sequence[np.ndarray]) -> Params:
    out: Params = []
    offset = 0
    for p in like:
        size = int(np.asarray(p).size)
        out.append(flat[offset : offset + size].reshape(np.shape(p)).astype(np.asarray(p).dtype))
        offset += size
    return out


def _deltas(base: Sequence[np.ndarray], updates: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    if not updates:
        raise ConfigError("the attack needs at least one benign update", field="benign")
    b = flatten(base)
    return np.stack([flatten(u) - b for u in updates])


def sign_flip(
    base: Sequence[np.ndarray], own: Sequence[np.ndarray], *, scale: float = 1.0
) -> Params:
    """The node's own delta, reversed (and scaled): ``base - scale * (own - base)``."""
    b = flatten(base)
    return _unflat(b - scale * (flatten(own) - b), base)


def scaled(
    base: Sequence[np.ndarray], own: Sequence[np.ndarray], *, factor: float = 10.0
) -> Params:
    """The node's own delta, boosted: ``base + factor * (own - base)`` (model replacement)."""
    b = flatten(base)
    return _unflat(b + factor * (flatten(own) - b), base)


def gaussian_noise(base: Sequence[np.ndarray], *, sigma: float, rng: np.random.Generator) -> Params:
    """No training at all: the base plus isotropic Gaussian noise of standard deviation
    ``sigma`` per coordinate."""
    if sigma < 0:
        raise ConfigError(f"must be >= 0, got {sigma}", field="sigma")
    b = flatten(base)
    return _unflat(b + rng.normal(0.0, sigma, size=b.shape), base)


def alie_z(n: int, f: int) -> float:
    """ALIE's z: with ``s = floor(n / 2 + 1) - f`` honest nodes the attackers need on their
    side, ``z = Phi^-1((n - s) / n)`` (Baruah et al., 2019)."""
    if not 0 < f < n:
        raise ConfigError(f"need 0 < f < n, got n={n}, f={f}", field="attackers")
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    p = min(max(p, 1e-6), 1 - 1e-6)
    return NormalDist().inv_cdf(p)


def alie(
    base: Sequence[np.ndarray],
    benign: Sequence[Sequence[np.ndarray]],
    *,
    n: int,
    f: int,
    z: float | None = None,
) -> Params:
    """A Little Is Enough: ``base + mean - z * std`` of the benign deltas, per coordinate. Each
    coordinate stays within a few standard deviations of the honest ones, so coordinate-wise and
    distance-based rules keep it, yet every coordinate pushes the same way."""
    d = _deltas(base, benign)
    zz = alie_z(n, f) if z is None else z
    malicious = d.mean(axis=0) - zz * d.std(axis=0)
    return _unflat(flatten(base) + malicious, base)


def ipm(
    base: Sequence[np.ndarray], benign: Sequence[Sequence[np.ndarray]], *, epsilon: float = 0.5
) -> Params:
    """Inner product manipulation: ``base - epsilon * mean`` of the benign deltas, so that the
    aggregate's inner product with the true descent direction turns negative."""
    d = _deltas(base, benign)
    return _unflat(flatten(base) - epsilon * d.mean(axis=0), base)


def min_max(
    base: Sequence[np.ndarray],
    benign: Sequence[Sequence[np.ndarray]],
    *,
    perturbation: str = "std",
    gamma_init: float = 10.0,
    tolerance: float = 1e-5,
) -> Params:
    """Min-max (AGR-agnostic): ``mean + gamma * p`` with ``p`` the negated unit mean
    (``"unit"``), the negated standard deviation (``"std"``) or the negated sign of the mean
    (``"sign"``), and ``gamma`` found by bisection as the largest that keeps
    ``max_i |m - d_i| <= max_ij |d_i - d_j|``."""
    d = _deltas(base, benign)
    mean = d.mean(axis=0)
    if perturbation == "unit":
        norm = float(np.linalg.norm(mean))
        p = -mean / norm if norm > 0 else np.zeros_like(mean)
    elif perturbation == "std":
        p = -d.std(axis=0)
    elif perturbation == "sign":
        p = -np.sign(mean)
    else:
        raise ConfigError(f"unknown perturbation {perturbation!r}; known: unit, std, sign",
                          field="perturbation")  # fmt: skip
    diffs = d[:, None, :] - d[None, :, :]
    bound = float(np.sqrt((diffs**2).sum(axis=2)).max())

    def fits(gamma: float) -> bool:
        m = mean + gamma * p
        return float(np.sqrt(((d - m) ** 2).sum(axis=1)).max()) <= bound

    lo, hi = 0.0, gamma_init
    while fits(hi) and hi < 1e6:  # widen until it no longer fits
        lo, hi = hi, hi * 2
    while hi - lo > tolerance * max(1.0, hi):
        mid = (lo + hi) / 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return _unflat(flatten(base) + mean + lo * p, base)


def strongest_factor(
    damage: Callable[[float], float],
    *,
    start: float = 0.5,
    grow: float = 2.0,
    max_factor: float = 1e6,
    refine: int = 10,
    patience: int = 3,
) -> float:
    """The factor ``t >= 0`` that maximizes ``damage(t)``, by a doubling search from ``start``
    until ``patience`` steps in a row bring no gain (or ``max_factor``; an isolated dip, e.g.
    IPM at ``t = 1`` sending the base model itself, does not stop it), then a golden-section
    search in the bracket around the best point. ``damage`` is the attacker's own estimate (a
    poor one makes the attack weaker, not invalid), so a coarse, deterministic search is
    enough: about 30 evaluations."""
    if not 0 < start <= max_factor or not grow > 1:
        raise ConfigError("need 0 < start <= max_factor and grow > 1", field="factor")
    best_t, best = 0.0, damage(0.0)
    t, misses = start, 0
    while t <= max_factor and misses < patience:
        d = damage(t)
        if d > best:
            best_t, best, misses = t, d, 0
        else:
            misses += 1
        t *= grow
    lo, hi = best_t / grow, min(best_t * grow, max_factor)
    if best_t == 0.0:
        lo, hi = 0.0, start
    golden = (math.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    da, db = damage(a), damage(b)
    for _ in range(refine):
        if da >= db:
            hi, b, db = b, a, da
            a = hi - golden * (hi - lo)
            da = damage(a)
        else:
            lo, a, da = a, b, db
            b = lo + golden * (hi - lo)
            db = damage(b)
        for t_, d_ in ((a, da), (b, db)):
            if d_ > best:
                best_t, best = t_, d_
    return best_t


def adaptive(
    base: Sequence[np.ndarray],
    benign: Sequence[Sequence[np.ndarray]],
    *,
    kind: str,
    damage: Callable[[Params], float],
) -> Params:
    """ALIE (``kind="alie"``: ``mean - t * std``) or IPM (``kind="ipm"``: ``mean - t * mean``)
    of the benign deltas, with the factor ``t`` that maximizes ``damage`` of the resulting
    malicious update (:func:`strongest_factor`). ``damage`` is typically the distance between
    the task's aggregate (honest updates plus the attackers' copies) and the honest mean."""
    d = _deltas(base, benign)
    mean = d.mean(axis=0)
    if kind == "alie":
        direction = -d.std(axis=0)
    elif kind == "ipm":
        direction = -mean
    else:
        raise ConfigError(f"unknown adaptive attack {kind!r}; known: alie, ipm", field="attack")
    b = flatten(base)

    def build(t: float) -> Params:
        return _unflat(b + mean + t * direction, base)

    t = strongest_factor(lambda t: damage(build(t)))
    return build(t)
