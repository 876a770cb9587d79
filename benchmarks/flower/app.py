"""The Flower baseline of benchmarks.startup: FedAvg on a task's partition in Flower's
simulation engine (Ray), run in the separate venv of benchmarks/flower/requirements.txt.

    .venv-flower/bin/python benchmarks/flower/app.py --data task.npz --out flower.json

``--data`` is what ``benchmarks.startup.export_task`` writes from fedledger's own partitioner:
every node's training split, the test set, the initial parameters, the training settings and
each round's shuffling seed of each node. Every round each of the clients (one per node)
trains its split from the global model exactly as fedledger's TorchTrainer does (the same MLP,
SGD, learning rate, batch size, epochs and seeds), the server averages the results weighted by
example counts (FedAvg) and evaluates the global model on the test set. Written to ``--out``:
each round's accuracy and its end (epoch seconds). This file imports nothing of fedledger's.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.client import ClientApp, NumPyClient  # type: ignore[import-not-found]
from flwr.common import Context, ndarrays_to_parameters  # type: ignore[import-not-found]
from flwr.server import (  # type: ignore[import-not-found]
    ServerApp,
    ServerAppComponents,
    ServerConfig,
)
from flwr.server.strategy import FedAvg  # type: ignore[import-not-found]
from flwr.simulation import run_simulation  # type: ignore[import-not-found]
from torch import nn
from torch.nn import functional


def build_model(task: Any) -> nn.Module:
    """The task's MLP: Flatten, then Linear + ReLU per hidden width, then Linear."""
    width = int(math.prod(task["feature_shape"]))
    layers: list[nn.Module] = [nn.Flatten()]
    for h in task["hidden"]:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, int(task["num_classes"])))
    return nn.Sequential(*layers)


def set_params(model: nn.Module, params: list[np.ndarray[Any, Any]]) -> None:
    with torch.no_grad():
        for t, p in zip(model.state_dict(keep_vars=True).values(), params, strict=True):
            t.copy_(torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)))


def get_params(model: nn.Module) -> list[np.ndarray[Any, Any]]:
    return [t.detach().numpy().copy() for t in model.state_dict().values()]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Any, seed: int) -> float:
    """Epochs of shuffled mini-batches of SGD, as fedledger's TorchTrainer.fit."""
    opt = torch.optim.SGD(model.parameters(), lr=float(task["lr"]))
    gen = torch.Generator()
    gen.manual_seed(seed)
    n, bs = int(y.shape[0]), int(task["batch_size"])
    loss_sum = 0.0
    model.train()
    for _ in range(int(task["epochs"])):
        perm = torch.randperm(n, generator=gen)
        xs, ys = x[perm], y[perm]
        loss_sum = 0.0
        for start in range(0, n, bs):
            xb, yb = xs[start : start + bs], ys[start : start + bs]
            loss = functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            loss_sum += float(loss.detach()) * int(yb.shape[0])
    return loss_sum / n


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(functional.cross_entropy(logits, y))
        acc = float((logits.argmax(dim=1) == y).float().mean())
    return loss, acc


def load(path: str) -> Any:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


class Client(NumPyClient):  # type: ignore[misc]
    def __init__(self, path: str, node: int) -> None:
        self.task = load(path)
        self.node = node
        self.x = torch.from_numpy(self.task[f"x{node}"].astype(np.float32))
        self.y = torch.from_numpy(self.task[f"y{node}"].astype(np.int64))
        self.model = build_model(self.task)

    def fit(
        self, parameters: list[np.ndarray[Any, Any]], config: dict[str, Any]
    ) -> tuple[list[np.ndarray[Any, Any]], int, dict[str, float]]:
        rnd = int(config["round"])
        set_params(self.model, parameters)
        seed = int(self.task["fit_seeds"][rnd - 1, self.node])
        loss = fit(self.model, self.x, self.y, self.task, seed)
        return get_params(self.model), int(self.y.shape[0]), {"loss": loss}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cpus-per-client", type=float, default=1.0,
                   help="a client's Ray resources: cores / this = clients at once")  # fmt: skip
    args = p.parse_args(argv)
    task = load(args.data)
    nodes, rounds = int(task["nodes"]), int(task["rounds"])
    test_x = torch.from_numpy(task["test_x"].astype(np.float32))
    test_y = torch.from_numpy(task["test_y"].astype(np.int64))
    initial = [task[f"init{i}"] for i in range(int(task["n_params"]))]
    path = str(Path(args.data).resolve())
    marks: dict[str, Any] = {"imported": time.time(), "rounds": []}

    def client_fn(context: Context) -> Any:
        return Client(path, int(context.node_config["partition-id"])).to_client()

    def central(rnd: int, params: list[np.ndarray[Any, Any]], _: Any) -> tuple[float, Any]:
        model = build_model(task)
        set_params(model, params)
        loss, acc = evaluate(model, test_x, test_y)
        if rnd > 0:  # round 0: the initial model
            marks["rounds"].append({"round": rnd, "acc": acc, "loss": loss, "t": time.time()})
        return loss, {"accuracy": acc}

    def server_fn(context: Context) -> Any:
        strategy = FedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=nodes,
            min_available_clients=nodes, evaluate_fn=central,
            on_fit_config_fn=lambda rnd: {"round": rnd},
            initial_parameters=ndarrays_to_parameters(initial),
        )  # fmt: skip
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=nodes,
        backend_config={"client_resources": {"num_cpus": args.cpus_per_client, "num_gpus": 0.0}},
    )
    marks["finished"] = time.time()
    done = marks["rounds"]
    marks["final_acc"] = done[-1]["acc"] if done else None
    marks["rounds_completed"] = len(done)
    marks["flwr"] = __import__("flwr").__version__
    marks["cpus_per_client"] = args.cpus_per_client
    args.out.write_text(json.dumps(marks, indent=2) + "\n")
    return 0 if len(done) == rounds else 1


if __name__ == "__main__":
    raise SystemExit(main())
