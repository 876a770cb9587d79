"""Client-level differential privacy of one update: clip, then add Gaussian noise.

A node's release in a round is its model ``base + delta``, where ``delta`` is what its local
training changed. :func:`privatize` scales ``delta`` down to L2 norm at most ``clip`` (``C``)
over all parameters together and adds independent Gaussian noise of standard deviation
``noise_multiplier * C`` (``sigma * C``) to every coordinate: the Gaussian mechanism with
sensitivity ``C`` under adding or removing the node's whole data set (its update replaced by
zero), so one release costs what :mod:`fedledger.privacy.accounting` says for ``sigma``.

Computed in float64, then cast to the parameters' own dtype: the rounding comes after the noise
(post-processing, no privacy cost), and the result is an ordinary parameter blob that the
aggregation rules turn into exact fixed point like any other (docs/aggregation.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedledger.errors import PrivacyError
from fedledger.privacy.noise import GaussianStream


@dataclass(frozen=True, kw_only=True)
class Privatized:
    """A privatized release and what clipping did (the norm is not published: it is data)."""

    params: list[np.ndarray] = field(repr=False)
    norm: float
    """The L2 norm of the update before clipping."""
    clipped: bool
    """True when the update was scaled down to ``clip``."""


def clip_factor(norm: float, clip: float) -> float:
    """The factor that brings an update of L2 norm ``norm`` to at most ``clip``."""
    if not (math.isfinite(norm) and norm >= 0):
        raise PrivacyError(f"an update's norm must be finite and >= 0, got {norm}")
    if not (math.isfinite(clip) and clip > 0):
        raise PrivacyError(f"clip must be finite and > 0, got {clip}")
    return 1.0 if norm <= clip else clip / norm


def privatize(
    base: Sequence[np.ndarray],
    local: Sequence[np.ndarray],
    *,
    clip: float,
    noise_multiplier: float,
    noise: GaussianStream,
) -> Privatized:
    """``local`` (the node's trained parameters) as a DP release from ``base``: the change
    clipped to L2 norm ``clip`` and Gaussian noise of std ``noise_multiplier * clip`` added.
    ``noise_multiplier`` 0 only clips. Bounds are checked first: matching shapes, finite
    values, ``clip > 0``, ``noise_multiplier >= 0``."""
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise PrivacyError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if len(base) != len(local):
        raise PrivacyError(f"{len(local)} parameter arrays for a base of {len(base)}")
    deltas: list[np.ndarray] = []
    for i, (b, p) in enumerate(zip(base, local, strict=True)):
        if b.shape != p.shape:
            raise PrivacyError(f"parameter {i}: shape {p.shape}, the base's is {b.shape}")
        d = np.asarray(p, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        if not np.all(np.isfinite(d)):
            raise PrivacyError(f"parameter {i} is not finite")
        deltas.append(d)
    norm = math.sqrt(sum(float(np.dot(d.ravel(), d.ravel())) for d in deltas))
    factor = clip_factor(norm, clip)
    scale = noise_multiplier * clip
    out: list[np.ndarray] = []
    for b, d in zip(base, deltas, strict=True):
        noisy = np.asarray(b, dtype=np.float64) + d * factor
        if scale > 0:
            noisy += scale * noise.normal(d.size).reshape(d.shape)
        out.append(noisy.astype(b.dtype))
    return Privatized(params=out, norm=norm, clipped=factor < 1.0)
