"""A task made concrete: its data split among nodes and the trainer its nodes use.

Every node of a simulation derives the same split from the task seed; a node of a real
deployment loads only its own data (``fedledger node``) with the same trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedledger.config import TaskConfig
from fedledger.data import FederatedData, federate, load_dataset
from fedledger.errors import ConfigError
from fedledger.learning import TorchTrainer, Trainer


@dataclass(frozen=True, kw_only=True)
class Task:
    config: TaskConfig
    data: FederatedData
    trainer: Trainer


def build_trainer(cfg: TaskConfig, data: FederatedData, *, threads: int | None = 1) -> Trainer:
    return TorchTrainer(
        model=cfg.model,
        feature_shape=data.feature_shape,
        num_classes=data.num_classes,
        image_shape=data.image_shape,
        threads=threads,
    )


def prepare_task(cfg: TaskConfig, *, threads: int | None = 1) -> Task:
    """Load the task's data set, split it among its nodes and build the trainer."""
    d = cfg.data
    if d.is_sites:
        raise ConfigError("a sites task has no shared data set to split: each node brings its "
                          "own (node.toml's data = ..., or data=... in the Python API)",
                          field="data.dataset")  # fmt: skip
    dataset = load_dataset(d.dataset, path=d.path, label_column=d.label_column)
    data = federate(
        dataset,
        n_nodes=cfg.nodes,
        scheme=d.partition,
        seed=cfg.seed,
        alpha=d.alpha,
        classes_per_node=d.classes_per_node,
        test_fraction=d.test_fraction,
        val_fraction=d.val_fraction,
        standardize=d.should_standardize,
    )
    return Task(config=cfg, data=data, trainer=build_trainer(cfg, data, threads=threads))
