"""The reference every other mode measures itself against.

Trains one task two ways over the same partition, in one process:

* **central**: one model on all nodes' training data pooled, for as many epochs as the
  federated run performs local epochs (``rounds * train.epochs``);
* **fedavg**: classic server-based FedAvg: each round every node trains from the global model
  on its own data, and the server averages the results weighted by example counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from fedledger.aggregation import fedavg
from fedledger.commit import params_digest
from fedledger.learning import Params
from fedledger.report import Accuracy, Report, RoundRecord
from fedledger.seeds import derive_seed
from fedledger.task import Task

ProgressFn = Callable[[str, int, int, float], None]
"""Called as ``progress(phase, step, total, accuracy)`` after each epoch or round."""


@dataclass(frozen=True, kw_only=True)
class CentralResult:
    accuracy: float
    loss: float
    epochs: int
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"acc": self.accuracy, "loss": self.loss, "epochs": self.epochs,
                "wall_s": self.wall_s}  # fmt: skip


def run_central(task: Task, *, progress: ProgressFn | None = None) -> CentralResult:
    cfg = task.config
    trainer = task.trainer
    pooled = task.data.pooled_train()
    params = trainer.init_params(derive_seed(cfg.seed, "init"))
    epochs = cfg.rounds * cfg.train.epochs
    one_epoch = replace(cfg.train, epochs=1)
    start = time.perf_counter()
    metrics: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        params = trainer.fit(
            params, pooled, one_epoch, seed=derive_seed(cfg.seed, "central", epoch)
        )[0]
        if progress is not None or epoch == epochs:
            metrics = trainer.evaluate(params, task.data.test)
            if progress is not None:
                progress("central", epoch, epochs, metrics["accuracy"])
    return CentralResult(
        accuracy=metrics["accuracy"], loss=metrics["loss"], epochs=epochs,
        wall_s=time.perf_counter() - start,
    )  # fmt: skip


def run_fedavg(task: Task, *, progress: ProgressFn | None = None) -> tuple[Report, Params]:
    cfg = task.config
    trainer = task.trainer
    nodes = task.data.nodes
    global_params = trainer.init_params(derive_seed(cfg.seed, "init"))
    records: list[RoundRecord] = []
    start = time.perf_counter()
    for rnd in range(1, cfg.rounds + 1):
        updates: list[Params] = []
        counts: list[int] = []
        losses: list[float] = []
        for node in nodes:
            seed = derive_seed(cfg.seed, "fit", rnd, node.node)
            params, n, metrics = trainer.fit(global_params, node.train, cfg.train, seed=seed)
            updates.append(params)
            counts.append(n)
            losses.append(metrics["loss"])
        result = fedavg(updates, counts)
        if result.rejected:
            raise RuntimeError(f"round {rnd}: fedavg rejected updates: {dict(result.rejected)}")
        global_params = result.params
        test = trainer.evaluate(global_params, task.data.test)
        local = Accuracy.over(
            [trainer.evaluate(global_params, n.val)["accuracy"] for n in nodes if len(n.val)]
        )
        acc = Accuracy.over([test["accuracy"]] * len(nodes))
        records.append(
            RoundRecord(
                round=rnd, acc_mean=acc.acc_mean, acc_min=acc.acc_min, acc_max=acc.acc_max,
                wall_s=time.perf_counter() - start,
                extra={
                    "test_loss": test["loss"],
                    "train_loss_mean": sum(losses) / len(losses),
                    "local_acc_mean": local.acc_mean,
                    "local_acc_min": local.acc_min,
                    "local_acc_max": local.acc_max,
                },
            )
        )  # fmt: skip
        if progress is not None:
            progress("fedavg", rnd, cfg.rounds, test["accuracy"])
    last = records[-1]
    final: dict[str, Any] = {
        "acc_mean": last.acc_mean, "acc_min": last.acc_min, "acc_max": last.acc_max,
        "wall_s": last.wall_s, "wall_s_per_round": last.wall_s / cfg.rounds,
        "model_digest": params_digest(global_params).hex(),
    }  # fmt: skip
    report = Report(mode="fedavg", nodes=len(nodes), rounds=records, final=final)
    return report, global_params


def run_baseline(task: Task, *, progress: ProgressFn | None = None) -> Report:
    """Both references; the report is FedAvg's, with the central result under ``central``."""
    central = run_central(task, progress=progress)
    report, _ = run_fedavg(task, progress=progress)
    cfg = task.config
    extra = {
        "task": cfg.name,
        "config_digest": cfg.digest().hex(),
        "rule": "fedavg",
        "central": central.to_dict(),
        "samples": {
            "train": sum(len(n.train) for n in task.data.nodes),
            "val": sum(len(n.val) for n in task.data.nodes),
            "test": len(task.data.test),
        },
    }
    return Report(mode=report.mode, nodes=report.nodes, rounds=report.rounds,
                  final=report.final, extra=extra)  # fmt: skip
