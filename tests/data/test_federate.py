"""Tests for fedledger.data.federate: held-out test set, node splits, standardization."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from fedledger.data import (
    PARTITIONS,
    Dataset,
    FederatedData,
    NodeData,
    federate,
    load_breast_cancer,
    load_digits,
)
from fedledger.errors import DataError


def indexed(n: int = 400, n_classes: int = 4) -> Dataset:
    """A data set whose first feature is the row index, so rows can be traced through splits."""
    x = np.zeros((n, 3), dtype=np.float32)
    x[:, 0] = np.arange(n)
    x[:, 1] = np.arange(n) % 7
    return Dataset(
        name="indexed",
        x=x,
        y=(np.arange(n) % n_classes).astype(np.int64),
        num_classes=n_classes,
        feature_shape=(3,),
    )


def rows(ds: Dataset) -> NDArray[np.int64]:
    return ds.x[:, 0].astype(np.int64)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


@pytest.fixture(scope="module")
def cancer() -> Dataset:
    return load_breast_cancer()


def assert_covers(fed: FederatedData, n: int) -> None:
    """Test, train and val sets are pairwise disjoint and together hold every row once."""
    pieces = [rows(fed.test)]
    for node in fed.nodes:
        pieces += [rows(node.train), rows(node.val)]
    everything = np.concatenate(pieces)
    assert len(everything) == n
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))


def assert_same(a: FederatedData, b: FederatedData) -> None:
    assert len(a.nodes) == len(b.nodes)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    np.testing.assert_array_equal(a.test.y, b.test.y)
    for p, q in zip(a.nodes, b.nodes, strict=True):
        for s, t in ((p.train, q.train), (p.val, q.val)):
            np.testing.assert_array_equal(s.x, t.x)
            np.testing.assert_array_equal(s.y, t.y)


@settings(max_examples=30, deadline=None)
@given(
    scheme=st.sampled_from(PARTITIONS),
    n_nodes=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    test_fraction=st.floats(0.05, 0.5),
    val_fraction=st.floats(0.01, 0.5),
)
def test_splits_are_disjoint_and_complete(
    scheme: str, n_nodes: int, seed: int, test_fraction: float, val_fraction: float
) -> None:
    ds = indexed(400)
    fed = federate(
        ds,
        n_nodes=n_nodes,
        scheme=scheme,
        seed=seed,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
    )
    assert len(fed.nodes) == n_nodes
    assert [node.node for node in fed.nodes] == list(range(n_nodes))
    assert_covers(fed, 400)
    # Rows keep their labels and every split is sorted by row.
    for split in [fed.test] + [s for node in fed.nodes for s in (node.train, node.val)]:
        np.testing.assert_array_equal(split.y, rows(split) % 4)
        assert np.all(np.diff(rows(split)) > 0)
    for node in fed.nodes:
        m = len(node.train) + len(node.val)
        assert len(node.train) >= 1
        # val gets round(val_fraction * m) clipped to [1, m - 1]; a 1-sample node has none.
        expected_val = 0 if m < 2 else min(m - 1, max(1, round(val_fraction * m)))
        assert len(node.val) == expected_val


def test_metadata_and_pooled_train(digits: Dataset) -> None:
    fed = federate(digits, n_nodes=5, scheme="dirichlet", seed=3, alpha=0.3)
    assert fed.num_classes == 10
    assert fed.feature_shape == (64,)
    assert fed.image_shape == (1, 8, 8)
    assert fed.test.name == "digits"
    pooled = fed.pooled_train()
    assert len(pooled) == sum(len(node.train) for node in fed.nodes)
    assert (pooled.num_classes, pooled.feature_shape, pooled.image_shape) == (10, (64,), (1, 8, 8))
    np.testing.assert_array_equal(pooled.x, np.concatenate([n.train.x for n in fed.nodes]))
    np.testing.assert_array_equal(pooled.y, np.concatenate([n.train.y for n in fed.nodes]))
    # Everything together is the whole data set.
    total = len(fed.test) + sum(len(n.train) + len(n.val) for n in fed.nodes)
    assert total == len(digits)


def test_test_set_is_stratified(digits: Dataset, cancer: Dataset) -> None:
    for ds in (digits, cancer):
        full = ds.class_counts() / len(ds)
        for seed in range(3):
            fed = federate(ds, n_nodes=4, scheme="shards", seed=seed, test_fraction=0.25)
            assert abs(len(fed.test) - 0.25 * len(ds)) <= 1
            test = fed.test.class_counts() / len(fed.test)
            np.testing.assert_allclose(test, full, atol=0.01)


def test_deterministic_for_a_seed(digits: Dataset) -> None:
    for scheme in PARTITIONS:
        a = federate(digits, n_nodes=6, scheme=scheme, seed=11, standardize=True)
        b = federate(digits, n_nodes=6, scheme=scheme, seed=11, standardize=True)
        assert_same(a, b)


def test_different_seeds_differ() -> None:
    ds = indexed(400)
    a = federate(ds, n_nodes=4, scheme="iid", seed=0)
    b = federate(ds, n_nodes=4, scheme="iid", seed=1)
    assert not np.array_equal(rows(a.test), rows(b.test))
    assert not np.array_equal(rows(a.nodes[0].train), rows(b.nodes[0].train))


def test_standardize_uses_only_non_test_statistics(cancer: Dataset) -> None:
    raw = federate(cancer, n_nodes=5, scheme="dirichlet", seed=7)
    std = federate(cancer, n_nodes=5, scheme="dirichlet", seed=7, standardize=True)

    # The pool (every node's train + val) is exactly zero-mean, unit-variance per feature.
    pool = np.concatenate([s.x for node in std.nodes for s in (node.train, node.val)]).astype(
        np.float64
    )
    np.testing.assert_allclose(pool.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(pool.std(axis=0), 1.0, atol=1e-4)
    # The test set is transformed with the pool's statistics, so it is not exactly centred.
    test_mean = std.test.x.astype(np.float64).mean(axis=0)
    assert np.abs(test_mean).max() > 1e-2

    # Exactly: recompute the pool statistics from the raw splits and apply them to the test set.
    raw_pool = np.concatenate([s.x for node in raw.nodes for s in (node.train, node.val)]).astype(
        np.float64
    )
    mean, sd = raw_pool.mean(axis=0), raw_pool.std(axis=0)
    expected = ((raw.test.x.astype(np.float64) - mean) / sd).astype(np.float32)
    np.testing.assert_allclose(std.test.x, expected, rtol=1e-5, atol=1e-5)
    # Standardizing changes nothing about which samples go where.
    for p, q in zip(raw.nodes, std.nodes, strict=True):
        np.testing.assert_array_equal(p.train.y, q.train.y)
        np.testing.assert_array_equal(p.val.y, q.val.y)


def test_standardize_leaves_constant_features_finite(digits: Dataset) -> None:
    fed = federate(digits, n_nodes=3, scheme="iid", seed=0, standardize=True)
    # Digits has always-zero border pixels: std 0 counts as 1, so they stay exactly 0.
    constant = np.flatnonzero(digits.x.std(axis=0) == 0)
    assert len(constant) > 0
    for split in [fed.test, *(node.train for node in fed.nodes)]:
        assert np.isfinite(split.x).all()
        np.testing.assert_array_equal(split.x[:, constant], 0.0)
    assert fed.test.x.dtype == np.float32


def test_single_sample_nodes_get_empty_val() -> None:
    ds = indexed(20, n_classes=2)
    fed = federate(ds, n_nodes=10, scheme="iid", seed=0, test_fraction=0.5)
    assert len(fed.test) == 10
    for node in fed.nodes:
        assert len(node.train) == 1
        assert len(node.val) == 0
        assert node.val.x.shape == (0, 3)
    assert_covers(fed, 20)


def test_two_sample_node_keeps_one_for_val() -> None:
    ds = indexed(20, n_classes=2)
    fed = federate(ds, n_nodes=5, scheme="iid", seed=0, test_fraction=0.5, val_fraction=0.01)
    for node in fed.nodes:
        assert (len(node.train), len(node.val)) == (1, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": -0.2}, "test_fraction"),
        ({"test_fraction": float("nan")}, "test_fraction"),
        ({"test_fraction": "0.2"}, "test_fraction"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"val_fraction": True}, "val_fraction"),
        ({"n_nodes": 0}, "n_nodes"),
        ({"n_nodes": 2.0}, "n_nodes"),
        ({"n_nodes": 90}, "only 80 remain for 90 nodes"),
        ({"seed": -1}, "seed"),
        ({"scheme": "uniform"}, "unknown partition scheme 'uniform'"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha"),
        ({"scheme": "shards", "classes_per_node": 0}, "classes_per_node"),
        ({"scheme": "shards", "n_nodes": 30, "classes_per_node": 3}, "80 samples into 90"),
    ],
)
def test_bad_parameters_raise_data_error(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"n_nodes": 4, "scheme": "iid", "seed": 0}
    args.update(kwargs)
    with pytest.raises(DataError, match=match):
        federate(indexed(100), **args)


def test_unstratifiable_data_raise_data_error() -> None:
    y = np.zeros(30, dtype=np.int64)
    y[0] = 1  # a class with one member cannot be split into train and test
    ds = Dataset(
        name="rare",
        x=np.zeros((30, 2), dtype=np.float32),
        y=y,
        num_classes=2,
        feature_shape=(2,),
    )
    with pytest.raises(DataError, match=r"stratified.*'rare'.*\[29, 1\]") as info:
        federate(ds, n_nodes=2, scheme="iid", seed=0)
    assert isinstance(info.value.__cause__, ValueError)


def test_not_a_dataset() -> None:
    with pytest.raises(DataError, match="Dataset"):
        federate(np.zeros((3, 2)), n_nodes=1, scheme="iid", seed=0)  # type: ignore[arg-type]


def test_records_validate() -> None:
    ds = indexed(10)
    empty = ds.subset(np.array([], dtype=np.int64))
    with pytest.raises(DataError, match="train split is empty"):
        NodeData(node=0, train=empty, val=ds)
    with pytest.raises(DataError, match="node must be"):
        NodeData(node=-1, train=ds, val=empty)
    node = NodeData(node=0, train=ds, val=empty)
    with pytest.raises(DataError, match="non-empty tuple"):
        FederatedData(nodes=(), test=ds)
    with pytest.raises(DataError, match=r"nodes\[0\] must be the NodeData of node 0"):
        FederatedData(nodes=(NodeData(node=1, train=ds, val=empty),), test=ds)
    other = Dataset(
        name="other",
        x=np.zeros((2, 3), dtype=np.float32),
        y=np.array([0, 5], dtype=np.int64),
        num_classes=6,
        feature_shape=(3,),
    )
    with pytest.raises(DataError, match="disagree"):
        FederatedData(nodes=(node,), test=other)
    with pytest.raises(DataError, match="disagree"):
        NodeData(node=0, train=ds, val=other)
    assert FederatedData(nodes=(node,), test=ds).num_classes == 4
