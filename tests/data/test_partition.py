"""Tests for fedledger.data.partition: every scheme is a seeded, true, gap-free partition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from fedledger.data import (
    PARTITIONS,
    dirichlet,
    iid,
    load_digits,
    partition,
    quantity_skew,
    shards,
)
from fedledger.errors import DataError

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
ALPHAS = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)

Labels = NDArray[np.int64]


@pytest.fixture(scope="module")
def digit_labels() -> Labels:
    return load_digits().y


@st.composite
def labelled(draw: st.DrawFn, max_n: int = 200) -> tuple[Labels, int]:
    """Labels (1..max_n samples, 1..6 classes, arbitrary non-negative values) and n_nodes <= n."""
    n_classes = draw(st.integers(min_value=1, max_value=6))
    values = draw(st.lists(st.integers(0, 50), min_size=n_classes, max_size=n_classes))
    picks = draw(st.lists(st.integers(0, n_classes - 1), min_size=1, max_size=max_n))
    labels = np.array([values[i] for i in picks], dtype=np.int64)
    n_nodes = draw(st.integers(min_value=1, max_value=min(len(labels), 25)))
    return labels, n_nodes


def assert_partition(parts: list[NDArray[np.int64]], n: int, n_nodes: int) -> None:
    assert len(parts) == n_nodes
    for part in parts:
        assert isinstance(part, np.ndarray)
        assert part.dtype == np.int64
        assert part.ndim == 1
        assert len(part) >= 1, "empty node"
        assert np.all(np.diff(part) > 0), "not sorted ascending / has repeats"
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def same(a: list[NDArray[np.int64]], b: list[NDArray[np.int64]]) -> bool:
    return len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def mean_label_entropy(labels: Labels, parts: list[NDArray[np.int64]]) -> float:
    entropies = []
    for part in parts:
        p = np.bincount(labels[part]) / len(part)
        p = p[p > 0]
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(entropies))


# --- properties of every scheme -----------------------------------------------------------------


@PROPERTY
@given(data=st.data(), n=st.integers(1, 500), seed=SEEDS)
def test_iid_is_balanced_partition(data: st.DataObject, n: int, seed: int) -> None:
    n_nodes = data.draw(st.integers(1, min(n, 40)))
    parts = iid(n, n_nodes, rng=np.random.default_rng(seed))
    assert_partition(parts, n, n_nodes)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert same(parts, iid(n, n_nodes, rng=np.random.default_rng(seed)))


@PROPERTY
@given(case=labelled(), alpha=ALPHAS, seed=SEEDS)
def test_dirichlet_is_partition(case: tuple[Labels, int], alpha: float, seed: int) -> None:
    labels, n_nodes = case
    parts = dirichlet(labels, n_nodes, alpha=alpha, rng=np.random.default_rng(seed))
    assert_partition(parts, len(labels), n_nodes)
    assert same(parts, dirichlet(labels, n_nodes, alpha=alpha, rng=np.random.default_rng(seed)))


@PROPERTY
@given(case=labelled(), data=st.data(), seed=SEEDS)
def test_shards_is_partition(case: tuple[Labels, int], data: st.DataObject, seed: int) -> None:
    labels, n_nodes = case
    n = len(labels)
    k = data.draw(st.integers(1, max(1, n // n_nodes)))
    parts = shards(labels, n_nodes, classes_per_node=k, rng=np.random.default_rng(seed))
    assert_partition(parts, n, n_nodes)
    assert same(parts, shards(labels, n_nodes, classes_per_node=k, rng=np.random.default_rng(seed)))
    # Each node holds k shards of floor(n/S) or ceil(n/S) samples, S = n_nodes * k.
    n_shards = n_nodes * k
    for part in parts:
        assert k * (n // n_shards) <= len(part) <= k * -(-n // n_shards)
    # Shards are contiguous in label order, so only a class boundary inside a shard adds a class:
    # the (node, class) pairs number at most n_shards + n_classes - 1.
    pairs = sum(len(np.unique(labels[p])) for p in parts)
    assert pairs <= n_shards + len(np.unique(labels)) - 1


@PROPERTY
@given(data=st.data(), n=st.integers(1, 500), alpha=ALPHAS, seed=SEEDS)
def test_quantity_skew_is_partition(data: st.DataObject, n: int, alpha: float, seed: int) -> None:
    n_nodes = data.draw(st.integers(1, min(n, 40)))
    parts = quantity_skew(n, n_nodes, alpha=alpha, rng=np.random.default_rng(seed))
    assert_partition(parts, n, n_nodes)
    assert same(parts, quantity_skew(n, n_nodes, alpha=alpha, rng=np.random.default_rng(seed)))


@settings(max_examples=25, deadline=None)
@given(case=labelled(), scheme=st.sampled_from(PARTITIONS), alpha=ALPHAS, seed=SEEDS)
def test_partition_dispatches_with_default_rng(
    case: tuple[Labels, int], scheme: str, alpha: float, seed: int
) -> None:
    labels, n_nodes = case
    k = 1 if scheme == "shards" else 2
    got = partition(labels, n_nodes, scheme=scheme, seed=seed, alpha=alpha, classes_per_node=k)
    assert_partition(got, len(labels), n_nodes)
    rng = np.random.default_rng(seed)
    direct: dict[str, Callable[[], list[NDArray[np.int64]]]] = {
        "iid": lambda: iid(len(labels), n_nodes, rng=rng),
        "dirichlet": lambda: dirichlet(labels, n_nodes, alpha=alpha, rng=rng),
        "shards": lambda: shards(labels, n_nodes, classes_per_node=k, rng=rng),
        "quantity": lambda: quantity_skew(len(labels), n_nodes, alpha=alpha, rng=rng),
    }
    assert same(got, direct[scheme]())
    again = partition(labels, n_nodes, scheme=scheme, seed=seed, alpha=alpha, classes_per_node=k)
    assert same(got, again)


@settings(max_examples=10, deadline=None)
@given(
    scheme=st.sampled_from(PARTITIONS), seeds=st.lists(SEEDS, min_size=2, max_size=2, unique=True)
)
def test_different_seeds_differ(digit_labels: Labels, scheme: str, seeds: list[int]) -> None:
    a, b = (partition(digit_labels, 10, scheme=scheme, seed=s) for s in seeds)
    assert not same(a, b)


def test_partition_accepts_python_int_list() -> None:
    parts = partition([0, 1, 0, 1, 2, 2], 3, scheme="dirichlet", seed=0)  # type: ignore[arg-type]
    assert_partition(parts, 6, 3)


# --- the schemes do what they claim -------------------------------------------------------------


def test_dirichlet_small_alpha_is_skewed(digit_labels: Labels) -> None:
    for seed in range(5):
        skewed = partition(digit_labels, 10, scheme="dirichlet", seed=seed, alpha=0.1)
        even = partition(digit_labels, 10, scheme="iid", seed=seed)
        assert mean_label_entropy(digit_labels, even) > 2.2  # close to log(10) = 2.30
        assert (
            mean_label_entropy(digit_labels, skewed) < mean_label_entropy(digit_labels, even) - 0.8
        )


def test_dirichlet_large_alpha_is_close_to_iid(digit_labels: Labels) -> None:
    parts = partition(digit_labels, 10, scheme="dirichlet", seed=0, alpha=1000.0)
    assert mean_label_entropy(digit_labels, parts) > 2.2
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() > 150
    assert sizes.max() < 210


def test_dirichlet_alpha_orders_skew(digit_labels: Labels) -> None:
    entropy = {
        alpha: np.mean(
            [
                mean_label_entropy(
                    digit_labels,
                    partition(digit_labels, 10, scheme="dirichlet", seed=s, alpha=alpha),
                )
                for s in range(3)
            ]
        )
        for alpha in (0.05, 0.5, 5.0)
    }
    assert entropy[0.05] < entropy[0.5] < entropy[5.0]


def test_dirichlet_repairs_empty_nodes() -> None:
    # One class and a tiny alpha: nearly all mass lands on one node, the others are repaired.
    labels = np.zeros(50, dtype=np.int64)
    repaired = 0
    for seed in range(10):
        parts = dirichlet(labels, 8, alpha=1e-3, rng=np.random.default_rng(seed))
        assert_partition(parts, 50, 8)
        repaired += sorted(len(p) for p in parts) == [1] * 7 + [43]
    assert repaired >= 8
    # As many nodes as samples: everybody ends with exactly one.
    parts = dirichlet(np.arange(12) % 3, 12, alpha=1e-3, rng=np.random.default_rng(1))
    assert [len(p) for p in parts] == [1] * 12


def test_shards_on_digits(digit_labels: Labels) -> None:
    k, n_nodes = 2, 10
    n_classes = 10
    exceeded_k_plus_one = False
    for seed in range(10):
        parts = partition(digit_labels, n_nodes, scheme="shards", seed=seed, classes_per_node=k)
        assert_partition(parts, len(digit_labels), n_nodes)
        # 20 shards of 89-90 samples; every digit has >= 174 samples, so a shard spans at most
        # two classes and a node at most 2k. One class boundary per digit change bounds the mean.
        counts = [len(np.unique(digit_labels[p])) for p in parts]
        assert max(counts) <= 2 * k
        assert np.mean(counts) <= k + (n_classes - 1) / n_nodes
        assert sorted({len(p) for p in parts}) in ([179, 180], [178, 179, 180], [180])
        exceeded_k_plus_one |= max(counts) > k + 1
    # k + 1 classes per node is *not* a guarantee: two straddling shards give 2k classes.
    assert exceeded_k_plus_one


def test_quantity_skew_sizes_are_skewed() -> None:
    for seed in range(5):
        skewed = [
            len(p) for p in quantity_skew(1000, 10, alpha=0.1, rng=np.random.default_rng(seed))
        ]
        assert max(skewed) > 5 * min(skewed)
        assert np.std(skewed) > 50
    near_even = [len(p) for p in quantity_skew(1000, 10, alpha=1e4, rng=np.random.default_rng(0))]
    assert max(near_even) - min(near_even) < 20


# --- bad parameters -----------------------------------------------------------------------------


LABELS = np.array([0, 1, 0, 1, 2, 2], dtype=np.int64)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: iid(5, 0, rng=np.random.default_rng(0)), "n_nodes must be an int >= 1"),
        (lambda: iid(5, -2, rng=np.random.default_rng(0)), "n_nodes"),
        (lambda: iid(5, 2.0, rng=np.random.default_rng(0)), "n_nodes"),  # type: ignore[arg-type]
        (lambda: iid(5, True, rng=np.random.default_rng(0)), "n_nodes"),
        (lambda: iid(3, 4, rng=np.random.default_rng(0)), "4 nodes .* only 3 samples"),
        (lambda: iid(0, 1, rng=np.random.default_rng(0)), "only 0 samples"),
        (lambda: iid(-1, 1, rng=np.random.default_rng(0)), "n_samples"),
        (lambda: iid(5, 2, rng=0), "numpy.random.Generator"),  # type: ignore[arg-type]
        (lambda: iid(5, 2, rng=np.random.RandomState(0)), "numpy.random.Generator"),  # type: ignore[arg-type]
        (lambda: dirichlet(LABELS, 2, alpha=0.0, rng=np.random.default_rng(0)), "alpha"),
        (lambda: dirichlet(LABELS, 2, alpha=-1.0, rng=np.random.default_rng(0)), "alpha"),
        (lambda: dirichlet(LABELS, 2, alpha=float("nan"), rng=np.random.default_rng(0)), "alpha"),
        (lambda: dirichlet(LABELS, 2, alpha=float("inf"), rng=np.random.default_rng(0)), "alpha"),
        (lambda: dirichlet(LABELS, 2, alpha="1", rng=np.random.default_rng(0)), "alpha"),  # type: ignore[arg-type]
        (lambda: dirichlet(LABELS, 7, alpha=1.0, rng=np.random.default_rng(0)), "only 6 samples"),
        (
            lambda: dirichlet(LABELS.reshape(2, 3), 2, alpha=1.0, rng=np.random.default_rng(0)),
            "one-dimensional",
        ),
        (
            lambda: dirichlet(LABELS.astype(float), 2, alpha=1.0, rng=np.random.default_rng(0)),
            "integers",
        ),
        (
            lambda: shards(LABELS, 2, classes_per_node=0, rng=np.random.default_rng(0)),
            "classes_per_node",
        ),
        (
            lambda: shards(LABELS, 2, classes_per_node=4, rng=np.random.default_rng(0)),
            "6 samples into 8 non-empty shards",
        ),
        (lambda: quantity_skew(10, 3, alpha=0, rng=np.random.default_rng(0)), "alpha"),
        (lambda: quantity_skew(2, 3, alpha=1.0, rng=np.random.default_rng(0)), "only 2 samples"),
        (
            lambda: partition(LABELS, 2, scheme="pathological", seed=0),
            "unknown partition scheme 'pathological'; known: iid, dirichlet, shards, quantity",
        ),
        (lambda: partition(LABELS, 2, scheme="iid", seed=-1), "seed"),
        (lambda: partition(LABELS, 2, scheme="iid", seed=1.5), "seed"),  # type: ignore[arg-type]
        (lambda: partition(LABELS, 2, scheme="dirichlet", seed=0, alpha=0), "alpha"),
        (lambda: partition(LABELS, 2, scheme="shards", seed=0, classes_per_node=-1), "classes"),
        (lambda: partition(LABELS, 0, scheme="quantity", seed=0), "n_nodes"),
        (lambda: partition(LABELS[:0], 1, scheme="iid", seed=0), "only 0 samples"),
    ],
)
def test_bad_parameters_raise_data_error(call: Callable[[], Any], match: str) -> None:
    with pytest.raises(DataError, match=match):
        call()


def test_partitions_constant() -> None:
    assert PARTITIONS == ("iid", "dirichlet", "shards", "quantity")
