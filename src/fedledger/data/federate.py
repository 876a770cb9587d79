"""Turn one :class:`Dataset` into a federated task: a held-out test set plus per-node splits."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedledger.data.datasets import Dataset
from fedledger.data.partition import PARTITIONS, partition
from fedledger.errors import DataError

__all__ = ["FederatedData", "NodeData", "federate"]


def _same_metadata(a: Dataset, b: Dataset) -> bool:
    return (
        a.num_classes == b.num_classes
        and a.feature_shape == b.feature_shape
        and a.image_shape == b.image_shape
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class NodeData:
    """One node's local data: a non-empty ``train`` split and a (possibly empty) ``val`` split."""

    node: int
    train: Dataset
    val: Dataset

    def __post_init__(self) -> None:
        if isinstance(self.node, bool) or not isinstance(self.node, int) or self.node < 0:
            raise DataError(f"node must be an int >= 0, got {self.node!r}")
        if not isinstance(self.train, Dataset) or not isinstance(self.val, Dataset):
            raise DataError(f"node {self.node}: train and val must be Dataset instances")
        if len(self.train) == 0:
            raise DataError(f"node {self.node}: the train split is empty")
        if not _same_metadata(self.train, self.val):
            raise DataError(f"node {self.node}: train and val disagree on classes or shapes")


@dataclass(frozen=True, kw_only=True, eq=False)
class FederatedData:
    """Per-node data for a federated task plus the one held-out ``test`` set.

    ``nodes[i].node == i``; every split shares the test set's classes and shapes.
    """

    nodes: tuple[NodeData, ...]
    test: Dataset

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, tuple) or not self.nodes:
            raise DataError("FederatedData needs a non-empty tuple of NodeData")
        if not isinstance(self.test, Dataset):
            raise DataError(f"test must be a Dataset, got {type(self.test).__name__}")
        for i, node in enumerate(self.nodes):
            if not isinstance(node, NodeData) or node.node != i:
                raise DataError(f"nodes[{i}] must be the NodeData of node {i}")
            if not _same_metadata(node.train, self.test):
                raise DataError(f"node {i}: data disagree with the test set on classes or shapes")

    @property
    def num_classes(self) -> int:
        return self.test.num_classes

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.test.feature_shape

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return self.test.image_shape

    def pooled_train(self) -> Dataset:
        """All nodes' train splits concatenated in node order (for the centralised baseline)."""
        first = self.nodes[0].train
        return Dataset(
            name=first.name,
            x=np.ascontiguousarray(np.concatenate([n.train.x for n in self.nodes])),
            y=np.concatenate([n.train.y for n in self.nodes]),
            num_classes=first.num_classes,
            feature_shape=first.feature_shape,
            image_shape=first.image_shape,
        )


def _check_fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataError(f"{name} must be a number in (0, 1), got {value!r}")
    f = float(value)
    if not (0.0 < f < 1.0):
        raise DataError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return f


def _standardized(dataset: Dataset, pool: NDArray[np.int64]) -> Dataset:
    flat = dataset.x.reshape(len(dataset), -1).astype(np.float64)
    mean = flat[pool].mean(axis=0)
    std = flat[pool].std(axis=0)
    std[std == 0] = 1.0
    x = ((flat - mean) / std).astype(np.float32).reshape(dataset.x.shape)
    return Dataset(
        name=dataset.name,
        x=np.ascontiguousarray(x),
        y=dataset.y,
        num_classes=dataset.num_classes,
        feature_shape=dataset.feature_shape,
        image_shape=dataset.image_shape,
    )


def federate(
    dataset: Dataset,
    *,
    n_nodes: int,
    scheme: str,
    seed: int,
    alpha: float = 0.5,
    classes_per_node: int = 2,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    standardize: bool = False,
) -> FederatedData:
    """Split ``dataset`` into a stratified test set and per-node train/val splits.

    1. A stratified ``test_fraction`` of the samples is held out as the shared test set.
    2. The rest (the pool) is partitioned among ``n_nodes`` with :func:`partition` (``scheme``,
       ``alpha``, ``classes_per_node``).
    3. Each node puts a random ``round(val_fraction * m)`` of its ``m`` samples in ``val``,
       clipped to ``[1, m - 1]``; a node with a single sample gets an empty ``val``.

    With ``standardize`` every feature is shifted and scaled by the pool's mean and standard
    deviation (never the test set's; a zero deviation counts as 1). The three random steps use
    independent seeds derived from ``seed`` with ``numpy.random.SeedSequence``, so one seed
    fixes the whole result. Every index array is sorted, so splits keep the dataset's row order.
    """
    if not isinstance(dataset, Dataset):
        raise DataError(f"dataset must be a Dataset, got {type(dataset).__name__}")
    if scheme not in PARTITIONS:
        raise DataError(f"unknown partition scheme {scheme!r}; known: {', '.join(PARTITIONS)}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be an int >= 0, got {seed!r}")
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int | np.integer) or n_nodes < 1:
        raise DataError(f"n_nodes must be an int >= 1, got {n_nodes!r}")
    test_frac = _check_fraction(test_fraction, "test_fraction")
    val_frac = _check_fraction(val_fraction, "val_fraction")
    n = len(dataset)
    split_seed, partition_seed, node_seed = (
        int(s) for s in np.random.SeedSequence(int(seed)).generate_state(3)
    )

    from sklearn.model_selection import train_test_split

    try:
        pool_raw, test_raw = train_test_split(
            np.arange(n),
            test_size=test_frac,
            stratify=dataset.y,
            random_state=split_seed,
        )
    except ValueError as exc:
        counts = dataset.class_counts()
        raise DataError(
            f"cannot hold out a stratified test_fraction={test_frac} of data set "
            f"{dataset.name!r} ({n} samples, class counts {counts.tolist()}): {exc}"
        ) from exc
    pool: NDArray[np.int64] = np.sort(np.asarray(pool_raw, dtype=np.int64))
    test_idx: NDArray[np.int64] = np.sort(np.asarray(test_raw, dtype=np.int64))
    if len(pool) < n_nodes:
        raise DataError(
            f"after holding out {len(test_idx)} test samples only {len(pool)} remain "
            f"for {n_nodes} nodes"
        )
    if standardize:
        dataset = _standardized(dataset, pool)

    parts = partition(
        dataset.y[pool],
        int(n_nodes),
        scheme=scheme,
        seed=partition_seed,
        alpha=alpha,
        classes_per_node=classes_per_node,
    )
    rng = np.random.default_rng(node_seed)
    nodes: list[NodeData] = []
    for node, part in enumerate(parts):
        members = pool[part]
        m = len(members)
        n_val = 0 if m < 2 else min(m - 1, max(1, round(val_frac * m)))
        shuffled = rng.permutation(members)
        nodes.append(
            NodeData(
                node=node,
                train=dataset.subset(np.sort(shuffled[n_val:])),
                val=dataset.subset(np.sort(shuffled[:n_val])),
            )
        )
    return FederatedData(nodes=tuple(nodes), test=dataset.subset(test_idx))
