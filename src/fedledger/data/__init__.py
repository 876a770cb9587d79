"""Data sets, seeded partitioners and federated splits for fedledger tasks.

Load a data set (:func:`load_dataset`), then split it among nodes with :func:`federate`::

    fed = federate(load_digits(), n_nodes=10, scheme="dirichlet", seed=0, alpha=0.3)
"""

from __future__ import annotations

from fedledger.data.datasets import (
    DATASETS,
    Dataset,
    load_breast_cancer,
    load_csv,
    load_dataset,
    load_digits,
    load_npz,
)
from fedledger.data.federate import FederatedData, NodeData, federate
from fedledger.data.partition import (
    PARTITIONS,
    dirichlet,
    iid,
    partition,
    quantity_skew,
    shards,
)

__all__ = [
    "DATASETS",
    "PARTITIONS",
    "Dataset",
    "FederatedData",
    "NodeData",
    "dirichlet",
    "federate",
    "iid",
    "load_breast_cancer",
    "load_csv",
    "load_dataset",
    "load_digits",
    "load_npz",
    "partition",
    "quantity_skew",
    "shards",
]
