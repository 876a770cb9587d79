"""Seeded partitioners that split a data set's sample indices among federated nodes.

Every partitioner returns one sorted int64 index array per node. Together they form a true
partition of ``0..n-1`` (each index in exactly one array) and no array is empty. All randomness
comes from the ``numpy.random.Generator`` passed as ``rng``, so a seed fixes the result.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, TypeGuard

import numpy as np
from numpy.typing import NDArray

from fedledger.errors import DataError

__all__ = [
    "PARTITIONS",
    "dirichlet",
    "iid",
    "partition",
    "quantity_skew",
    "shards",
]

PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "shards", "quantity")
"""Scheme names accepted by :func:`partition`."""

IndexArray = NDArray[np.int64]


def _is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _check_counts(n_samples: object, n_nodes: object) -> tuple[int, int]:
    if not _is_int(n_nodes) or int(n_nodes) < 1:
        raise DataError(f"n_nodes must be an int >= 1, got {n_nodes!r}")
    if not _is_int(n_samples) or int(n_samples) < 0:
        raise DataError(f"n_samples must be an int >= 0, got {n_samples!r}")
    n, k = int(n_samples), int(n_nodes)
    if n < k:
        raise DataError(f"cannot give {k} nodes at least one sample each from only {n} samples")
    return n, k


def _check_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise DataError(f"alpha must be a positive real number, got {alpha!r}")
    a = float(alpha)
    if not math.isfinite(a) or a <= 0:
        raise DataError(f"alpha must be finite and > 0, got {alpha!r}")
    return a


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise DataError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_labels(labels: object) -> NDArray[np.integer[Any]]:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _proportions(rng: np.random.Generator, alpha: float, k: int) -> NDArray[np.float64]:
    """One draw from a symmetric Dirichlet(alpha) over ``k`` parts, guarded against underflow."""
    p = rng.dirichlet(np.full(k, alpha))
    total = float(p.sum())
    if not np.isfinite(p).all() or total <= 0:
        # Tiny alpha can underflow every component; fall back to all mass on one random part.
        p = np.zeros(k)
        p[int(rng.integers(k))] = 1.0
        total = 1.0
    return p / total


def _finish(parts: list[NDArray[np.int64]]) -> list[IndexArray]:
    return [np.sort(part).astype(np.int64, copy=False) for part in parts]


def iid(n_samples: int, n_nodes: int, *, rng: np.random.Generator) -> list[IndexArray]:
    """Shuffle and deal samples evenly: node sizes differ by at most one."""
    n, k = _check_counts(n_samples, n_nodes)
    perm = _check_rng(rng).permutation(n)
    return _finish(list(np.array_split(perm, k)))


def dirichlet(
    labels: NDArray[np.integer[Any]],
    n_nodes: int,
    *,
    alpha: float,
    rng: np.random.Generator,
) -> list[IndexArray]:
    """Label skew: each class's samples are split among nodes in Dirichlet(alpha) proportions.

    Small ``alpha`` (0.1) gives each node few classes, large ``alpha`` (100) is close to IID.
    A node left empty then takes one random sample from the currently largest node (lowest
    index on ties), so the result is still a partition without empty nodes.
    """
    y = _check_labels(labels)
    _, k = _check_counts(len(y), n_nodes)
    a = _check_alpha(alpha)
    gen = _check_rng(rng)
    pieces: list[list[NDArray[np.int64]]] = [[] for _ in range(k)]
    for cls in np.unique(y):
        members = gen.permutation(np.flatnonzero(y == cls))
        cuts = np.floor(np.cumsum(_proportions(gen, a, k))[:-1] * len(members)).astype(np.int64)
        for node, piece in enumerate(np.split(members, cuts)):
            pieces[node].append(piece)
    parts = [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in pieces]
    # At most k moves: while a node is empty, the n >= k samples sit in < k nodes, so the
    # largest node has at least 2 and stays non-empty after giving one away.
    for node in range(k):
        if len(parts[node]) == 0:
            donor = int(np.argmax([len(p) for p in parts]))
            pick = int(gen.integers(len(parts[donor])))
            parts[node] = parts[donor][pick : pick + 1].copy()
            parts[donor] = np.delete(parts[donor], pick)
    return _finish(parts)


def shards(
    labels: NDArray[np.integer[Any]],
    n_nodes: int,
    *,
    classes_per_node: int,
    rng: np.random.Generator,
) -> list[IndexArray]:
    """Pathological non-IID split of McMahan et al. (2017).

    Samples are sorted by label (random order within a label) and cut into
    ``n_nodes * classes_per_node`` contiguous shards of near-equal size; each node gets
    ``classes_per_node`` random shards. A shard can straddle a class boundary, so a node holds
    at most ``2 * classes_per_node`` classes when every class has at least as many samples as
    a shard, and on average at most ``classes_per_node + (n_classes - 1) / n_nodes`` classes.
    """
    y = _check_labels(labels)
    n, k = _check_counts(len(y), n_nodes)
    if not _is_int(classes_per_node) or classes_per_node < 1:
        raise DataError(f"classes_per_node must be an int >= 1, got {classes_per_node!r}")
    n_shards = k * int(classes_per_node)
    if n < n_shards:
        raise DataError(
            f"cannot cut {n} samples into {n_shards} non-empty shards "
            f"({k} nodes x {classes_per_node} classes_per_node)"
        )
    gen = _check_rng(rng)
    perm = gen.permutation(n)
    order = perm[np.argsort(y[perm], kind="stable")]
    cut = np.array_split(order, n_shards)
    dealt = gen.permutation(n_shards).reshape(k, int(classes_per_node))
    return _finish([np.concatenate([cut[s] for s in row]) for row in dealt])


def quantity_skew(
    n_samples: int,
    n_nodes: int,
    *,
    alpha: float,
    rng: np.random.Generator,
) -> list[IndexArray]:
    """Size skew: node sizes follow Dirichlet(alpha) proportions, samples assigned at random.

    Every node first gets one sample; the remaining ``n - n_nodes`` are apportioned by the drawn
    proportions (floors, then the largest remainders, lowest index on ties).
    """
    n, k = _check_counts(n_samples, n_nodes)
    a = _check_alpha(alpha)
    gen = _check_rng(rng)
    p = _proportions(gen, a, k)
    rest = n - k
    share = p * rest
    sizes = np.floor(share).astype(np.int64)
    leftover = rest - int(sizes.sum())
    if leftover > 0:
        by_remainder = np.argsort(-(share - sizes), kind="stable")
        sizes[by_remainder[:leftover]] += 1
    sizes += 1
    perm = gen.permutation(n)
    return _finish(list(np.split(perm, np.cumsum(sizes)[:-1])))


def partition(
    labels: NDArray[np.integer[Any]],
    n_nodes: int,
    *,
    scheme: str,
    seed: int,
    alpha: float = 0.5,
    classes_per_node: int = 2,
) -> list[IndexArray]:
    """Partition ``range(len(labels))`` among ``n_nodes`` by scheme name (see :data:`PARTITIONS`).

    ``alpha`` is used by ``"dirichlet"`` and ``"quantity"``, ``classes_per_node`` by
    ``"shards"``. The generator is ``np.random.default_rng(seed)``: same seed, same result.
    """
    if scheme not in PARTITIONS:
        raise DataError(f"unknown partition scheme {scheme!r}; known: {', '.join(PARTITIONS)}")
    if not _is_int(seed) or seed < 0:
        raise DataError(f"seed must be an int >= 0, got {seed!r}")
    y = _check_labels(labels)
    rng = np.random.default_rng(int(seed))
    if scheme == "iid":
        return iid(len(y), n_nodes, rng=rng)
    if scheme == "dirichlet":
        return dirichlet(y, n_nodes, alpha=alpha, rng=rng)
    if scheme == "shards":
        return shards(y, n_nodes, classes_per_node=classes_per_node, rng=rng)
    return quantity_skew(len(y), n_nodes, alpha=alpha, rng=rng)
