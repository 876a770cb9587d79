"""fedledger's public Python API: run a node, or a whole task, with your own PyTorch model
and your own data.

A site of a real deployment has only its own data: :func:`site_data` loads it whole (a CSV or
NPZ file, or arrays) and splits off the site's own validation set; :func:`run_node` runs the
site's node over gRPC with a ``torch.nn.Module`` factory of the user's::

    import torch
    import fedledger

    def model() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(),
                                   torch.nn.Linear(16, 2))

    data = fedledger.site_data("site_a.csv", label_column="diagnosis", num_classes=2)
    summary = fedledger.run_node("node.toml", model=model, data=data)

Every site must build the same architecture (the same factory) and agree on the task file:
nodes exchange parameters in the module's state-dict order, and an update whose shapes differ
from the receiver's model is rejected. To try a task on one machine first, :func:`run_task`
runs every node in this process, each on its own data set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedledger.config import TaskConfig, load_config
from fedledger.config.node import NodeConfig, load_node_config
from fedledger.data import Dataset, NodeData, load_dataset
from fedledger.data.site import load_site, site_feature_shape
from fedledger.errors import ConfigError, DataError
from fedledger.seeds import derive_seed

if TYPE_CHECKING:
    import torch

    from fedledger.gossip.blobs import BlobStore
    from fedledger.gossip.identity import Identity
    from fedledger.gossip.transport import Transport
    from fedledger.learning import Trainer
    from fedledger.ledger.records import Ledger
    from fedledger.node.core import NodeCore
    from fedledger.report import Report

ModelFactory = Callable[[], "torch.nn.Module"]
"""A function returning a fresh ``torch.nn.Module`` (float32 parameters, logits out)."""

DataSource = str | Path | Dataset | NodeData | tuple[np.ndarray, np.ndarray]
"""A site's data: a CSV (with ``label_column``) or NPZ file (arrays ``x`` and ``y``), a
:class:`Dataset`, ready :class:`NodeData`, or ``(x, y)`` arrays."""


def site_data(
    source: DataSource,
    *,
    label_column: str | None = None,
    val_fraction: float = 0.1,
    num_classes: int | None = None,
    seed: int = 0,
    name: str = "site",
) -> NodeData:
    """A site's own data, whole: every row trains except a seeded ``val_fraction`` held out
    as the site's validation set.

    ``num_classes``: the task's number of classes, when a site's file may lack one (every
    site's model must have the same output width). Labels must be integers ``0..k-1``, or
    strings that every site has the same set of (they are numbered in sorted order).
    """
    if isinstance(source, NodeData):
        return source
    dataset = _dataset(source, label_column=label_column, name=name)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"must be an integer >= 1, got {num_classes!r}", field="num_classes")
        if num_classes < dataset.num_classes:
            raise DataError(f"{dataset.name}: labels reach class {dataset.num_classes - 1}, "
                            f"but the task has {num_classes} classes")  # fmt: skip
        dataset = replace(dataset, num_classes=num_classes)
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"must be in [0, 1), got {val_fraction!r}", field="val_fraction")
    order = np.random.default_rng(derive_seed(seed, "site-split", dataset.name)).permutation(
        len(dataset)
    )
    n_val = round(val_fraction * len(dataset))
    if len(dataset) - n_val < 1:
        raise DataError(f"{dataset.name}: {len(dataset)} rows leave nothing to train on")
    return NodeData(
        node=0,
        train=dataset.subset(np.sort(order[n_val:])),
        val=dataset.subset(np.sort(order[:n_val])),
    )


def _dataset(source: DataSource, *, label_column: str | None, name: str) -> Dataset:
    if isinstance(source, Dataset):
        return source
    if isinstance(source, tuple):
        if len(source) != 2:
            raise DataError("arrays must be a pair (x, y)")
        x = np.ascontiguousarray(source[0], dtype=np.float32)
        y = np.asarray(source[1])
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError("y must be a one-dimensional array of integer labels")
        if x.ndim < 2:
            raise DataError(f"x must have one row per example, got shape {x.shape}")
        y64 = y.astype(np.int64)
        classes = int(y64.max()) + 1 if len(y64) else 1
        return Dataset(name=name, x=x, y=y64, num_classes=classes, feature_shape=x.shape[1:])
    assert isinstance(source, str | Path)
    path = Path(source)
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("csv", "npz"):
        raise DataError(f"{path}: a site's data file must be .csv or .npz")
    return load_dataset(kind, path=path, label_column=label_column)


def load_model_factory(spec: str, *, base: Path | None = None) -> ModelFactory:
    """The function ``"module:function"`` names (the module looked up in ``base`` first, then
    on the import path): how a node.toml names a site's own model."""
    import importlib
    import sys

    module_name, _, attr = spec.partition(":")
    added = base is not None and str(base) not in sys.path
    if added:
        sys.path.insert(0, str(base))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's code: any failure to import it is a bad setting
        raise ConfigError(f"cannot import {module_name!r}: {exc}", field="model") from exc
    finally:
        if added:
            sys.path.remove(str(base))
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"{module_name!r} has no function {attr!r}", field="model")
    return factory  # type: ignore[no-any-return]


def trainer_for(
    task: TaskConfig, data: Dataset, *, model: ModelFactory | None = None, threads: int = 1
) -> Trainer:
    """The task's trainer for data shaped like ``data``: the task's registry model, or the
    user's ``model`` factory."""
    from fedledger.learning import TorchTrainer

    return TorchTrainer(
        model=task.model,
        feature_shape=data.feature_shape,
        num_classes=data.num_classes,
        image_shape=data.image_shape,
        threads=threads,
        module=model,
    )


def make_node(
    config: NodeConfig,
    *,
    identity: Identity,
    transport: Transport,
    model: ModelFactory | None = None,
    data: DataSource | None = None,
    test: Dataset | None = None,
    ledger: Ledger | None = None,
    label_column: str | None = None,
    store: BlobStore | None = None,
) -> NodeCore:
    """A node (not started: ``await node.run()``). Without ``data`` it takes its partition of
    the task's data set (a simulation); with ``data`` it trains on that whole and evaluates on
    ``test`` (default: its own validation split)."""
    from fedledger.node.build import build_node

    if model is None and config.model is not None:
        model = load_model_factory(config.model, base=config.config_dir)
    if data is None and config.data is not None:
        data, label_column = config.data, config.label_column
    if data is None and config.task.data.is_sites:
        raise ConfigError("a sites task: name this site's own file (node.toml: data = "
                          "\"site.csv\")", field="data")  # fmt: skip
    if data is None:
        if model is None:
            return build_node(config, identity=identity, transport=transport, ledger=ledger,
                              store=store)  # fmt: skip
        from fedledger.task import prepare_task

        task = prepare_task(config.task)
        own = task.data.nodes[config.index]
        test = test if test is not None else task.data.test
    else:
        spec = config.task.data
        if spec.is_sites and isinstance(data, str | Path):
            data = load_site(data, spec, name=f"site-{config.index}")
        own = site_data(data, label_column=label_column, seed=config.task.seed,
                        val_fraction=spec.val_fraction,
                        num_classes=len(spec.classes) if spec.classes else None)  # fmt: skip
        if spec.is_sites and own.train.feature_shape != site_feature_shape(spec):
            raise DataError(f"this site's data has feature shape {own.train.feature_shape}; "
                            f"the task's is {site_feature_shape(spec)}")  # fmt: skip
        test = test if test is not None else (own.val if len(own.val) else own.train)
    trainer = trainer_for(config.task, own.train, model=model)
    return build_node(
        config, identity=identity, transport=transport, ledger=ledger, data=own, test=test,
        trainer=trainer, evaluator=trainer_for(config.task, own.train, model=model), store=store,
    )  # fmt: skip


def run_node(
    config: str | Path | NodeConfig,
    *,
    model: ModelFactory | None = None,
    data: DataSource | None = None,
    label_column: str | None = None,
    password_file: Path | None = None,
) -> dict[str, Any]:
    """Run one node over gRPC until the task's last round (what ``fedledger node`` does),
    with the user's ``model`` and ``data`` if given; returns the node's summary (also written
    to ``state_dir/summary.json``). Raises :class:`~fedledger.errors.RunFailed` if the node
    was refused, failed, or no round produced a model."""
    from fedledger.run.node import run_node as run

    cfg = config if isinstance(config, NodeConfig) else load_node_config(config)
    return run(cfg, password_file=password_file, model=model, data=data,
               label_column=label_column)  # fmt: skip


def run_task(
    task: str | Path | TaskConfig,
    *,
    out: str | Path,
    model: ModelFactory | None = None,
    data: Sequence[DataSource] | None = None,
    label_column: str | None = None,
    mode: str = "consensus",
    test: Dataset | None = None,
) -> Report:
    """Every node of ``task`` in this process over the in-memory network, without a ledger;
    writes report.json in ``out`` and returns the report. ``data``: one source per node (the
    task's ``nodes`` becomes their number), each node training on its own whole; without it,
    the nodes take their partitions of the task's data set. ``model``: the nodes' module
    factory (default: the task's ``[model]``). Raises :class:`~fedledger.errors.RunFailed`
    (after writing the report) if no round produced a model."""
    from fedledger.gossip.identity import Identity
    from fedledger.gossip.memory import MemoryNetwork
    from fedledger.gossip.topology import TopologySpec
    from fedledger.run.local import run_nodes
    from fedledger.run.plan import plan
    from fedledger.run.results import check_run, merge_report
    from fedledger.rundir import TASK_FILE

    cfg = task if isinstance(task, TaskConfig) else load_config(task)
    if data is not None:
        if not data:
            raise ConfigError("needs at least one data source", field="data")
        cfg = replace(cfg, nodes=len(data))
    where = Path(out)
    where.mkdir(parents=True, exist_ok=True)
    (where / TASK_FILE).write_text(cfg.to_toml(), encoding="utf-8")
    configs = plan(cfg, task_path=where / TASK_FILE, out=where, mode=mode,
                   topology=TopologySpec(), transport="memory")  # fmt: skip

    async def go() -> list[dict[str, Any]]:
        from fedledger.gossip.blobs import MemoryBlobStore

        network = MemoryNetwork(seed=cfg.seed)
        nodes = [
            make_node(
                c,
                identity=Identity.from_seed(cfg.seed, c.index),
                transport=network.transport(c.listen),
                model=model,
                data=None if data is None else data[c.index],
                test=test,
                label_column=label_column,
                store=MemoryBlobStore(),
            )
            for c in configs
        ]
        return await run_nodes(nodes)

    summaries = asyncio.run(go())
    report = merge_report(configs, summaries, mode=mode, transport="memory",
                          topology=TopologySpec())  # fmt: skip
    report.write(where)
    check_run(summaries)
    return report
