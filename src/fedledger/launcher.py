"""Run nodes: one per process over gRPC (``fedledger node``), or a whole task on this machine
(``fedledger run``): every node a separate OS process on 127.0.0.1, or all of them in one process
over the in-memory transport. Then merge the nodes' round logs into one report.json.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedledger.commit import digest_from_cid
from fedledger.config import TaskConfig
from fedledger.errors import ConfigError, FedledgerError
from fedledger.gossip.blobs import BlobStore, FileBlobStore, MemoryBlobStore
from fedledger.gossip.grpc_transport import GrpcTransport
from fedledger.gossip.identity import Identity
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.topology import TopologySpec
from fedledger.gossip.transport import Transport
from fedledger.node.config import NodeConfig, Peer, write_node_config
from fedledger.node.consensus import Timeouts
from fedledger.node.runner import Node
from fedledger.report import Accuracy, Report, RoundRecord
from fedledger.seeds import derive_seed
from fedledger.task import Task, build_trainer, prepare_task

log = logging.getLogger("fedledger.launcher")

ProgressFn = Callable[[int, int, float], None]
"""``progress(rounds_done_by_all, total_rounds, mean_accuracy)``."""


# -- one node -------------------------------------------------------------------------------------


def load_identity(path: Path) -> Identity:
    """The node's key from ``path``; a new key is created (mode 0600) if the file is missing."""
    if path.exists():
        return Identity.load(path)
    identity = Identity.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    identity.save(path)
    return identity


def build_node(
    cfg: NodeConfig,
    *,
    identity: Identity,
    transport: Transport,
    store: BlobStore | None = None,
    task: Task | None = None,
) -> Node:
    task = task or prepare_task(cfg.task)
    trainer = build_trainer(cfg.task, task.data)
    initial = trainer.init_params(derive_seed(cfg.task.seed, "init"))
    return Node(
        config=cfg,
        identity=identity,
        transport=transport,
        # Blobs can be fetched again; the one state.json names is verified on restart.
        store=store if store is not None else FileBlobStore(cfg.state_dir / "blobs", durable=False),
        trainer=trainer,
        evaluator=build_trainer(cfg.task, task.data),
        data=task.data.nodes[cfg.index],
        test=task.data.test,
        initial_params=initial,
    )


def run_node(cfg: NodeConfig) -> dict[str, Any]:
    """Run one node over gRPC until the task's last round (``fedledger node``)."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    identity = load_identity(cfg.key_file)
    host, _, port = cfg.listen.rpartition(":")
    try:
        transport = GrpcTransport(host=host, port=int(port))
    except ValueError as exc:
        raise ConfigError(f"bad listen address {cfg.listen!r}", field="listen") from exc
    node = build_node(cfg, identity=identity, transport=transport)
    summary = asyncio.run(node.run())
    (cfg.state_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# -- a task on this machine -----------------------------------------------------------------------


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free TCP ports on ``host`` (bound and released at once)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def plan(
    task: TaskConfig,
    *,
    task_path: Path,
    out: Path,
    mode: str,
    topology: TopologySpec,
    transport: str,
    timeouts: Timeouts | None = None,
    mixing: str = "metropolis_hastings",
) -> list[NodeConfig]:
    """Node configurations for every member of ``task`` on 127.0.0.1.

    Keys are derived from the task seed (:meth:`Identity.from_seed`): reproducible local
    simulations, never for real deployments (``fedledger node`` makes a fresh key).
    """
    n = task.nodes
    identities = [Identity.from_seed(task.seed, i) for i in range(n)]
    if transport == "grpc":
        endpoints = [f"127.0.0.1:{p}" for p in free_ports(n)]
    else:
        endpoints = [f"node-{i}" for i in range(n)]
    configs = []
    for i in range(n):
        node_dir = out / f"node-{i}"
        peers = tuple(
            Peer(index=j, address=identities[j].address, endpoint=endpoints[j])
            for j in range(n)
            if j != i
        )
        configs.append(
            NodeConfig(
                task=task, task_path=task_path, index=i, key_file=node_dir / "node.key",
                state_dir=node_dir / "state", listen=endpoints[i], mode=mode, peers=peers,
                topology=topology, timeouts=timeouts or Timeouts(), mixing=mixing,
            )
        )  # fmt: skip
        if transport == "grpc":
            node_dir.mkdir(parents=True, exist_ok=True)
            if not configs[-1].key_file.exists():
                identities[i].save(configs[-1].key_file)
            write_node_config(configs[-1], node_dir / "node.toml")
    return configs


def _read_rounds(cfg: NodeConfig) -> list[dict[str, Any]]:
    path = cfg.state_dir / "rounds.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return out


def _progress_of(configs: Sequence[NodeConfig]) -> tuple[int, float]:
    last: list[dict[str, Any] | None] = []
    for cfg in configs:
        records = _read_rounds(cfg)
        last.append(max(records, key=lambda r: r["round"]) if records else None)
    done = min((r["round"] if r else 0) for r in last)
    accs = [r["acc"] for r in last if r]
    return done, (sum(accs) / len(accs) if accs else 0.0)


async def run_in_memory(
    configs: Sequence[NodeConfig],
    *,
    network: MemoryNetwork | None = None,
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Every node in this process, over one in-memory network."""
    if not configs:
        return []
    network = network or MemoryNetwork(seed=configs[0].task.seed)
    task = prepare_task(configs[0].task)
    nodes = [
        build_node(
            cfg,
            identity=Identity.from_seed(cfg.task.seed, cfg.index),
            transport=network.transport(cfg.listen),
            store=MemoryBlobStore(),
            task=task,
        )
        for cfg in configs
    ]
    runs = [asyncio.create_task(n.run()) for n in nodes]
    if progress is not None:
        total = configs[0].task.rounds
        while not all(r.done() for r in runs):
            rounds = [max((rec["round"] for rec in n.round_records), default=0) for n in nodes]
            accs = [n.round_records[-1]["acc"] for n in nodes if n.round_records]
            progress(min(rounds), total, sum(accs) / len(accs) if accs else 0.0)
            await asyncio.wait(runs, timeout=0.2)
    return list(await asyncio.gather(*runs))


def start_node_process(cfg: NodeConfig) -> subprocess.Popen[bytes]:
    node_dir = cfg.state_dir.parent
    log_file = (node_dir / "stderr.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "fedledger", "node", "--config", str(node_dir / "node.toml")],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run_processes(
    configs: Sequence[NodeConfig],
    *,
    progress: ProgressFn | None = None,
    timeout: float | None = None,
    on_poll: Callable[[dict[int, subprocess.Popen[bytes]]], None] | None = None,
) -> list[dict[str, Any]]:
    """One OS process per node; wait for all of them and return their summaries.

    ``on_poll`` is called every poll with the live processes, by node index: tests use it to
    kill and restart a node mid-run.
    """
    procs = {cfg.index: start_node_process(cfg) for cfg in configs}
    deadline = None if timeout is None else time.monotonic() + timeout
    total = configs[0].task.rounds
    try:
        while any(p.poll() is None for p in procs.values()):
            if deadline is not None and time.monotonic() > deadline:
                raise FedledgerError(f"nodes did not finish within {timeout} s")
            if on_poll is not None:
                on_poll(procs)
            if progress is not None:
                done, acc = _progress_of(configs)
                progress(done, total, acc)
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    failed = {i: p.returncode for i, p in procs.items() if p.returncode != 0}
    if failed:
        raise FedledgerError(f"node process(es) failed: {failed}; see node-N/stderr.log")
    summaries = []
    for cfg in configs:
        path = cfg.state_dir / "summary.json"
        summaries.append(json.loads(path.read_text()) if path.exists() else {"node": cfg.index})
    return summaries


# -- the report ---------------------------------------------------------------------------------


def merge_report(
    configs: Sequence[NodeConfig],
    summaries: Sequence[dict[str, Any]],
    *,
    mode: str,
    transport: str,
    topology: TopologySpec,
) -> Report:
    """One report from every node's rounds.jsonl (the last record per node and round wins)."""
    task = configs[0].task
    per_node: list[dict[int, dict[str, Any]]] = []
    for cfg in configs:
        latest: dict[int, dict[str, Any]] = {}
        for rec in _read_rounds(cfg):
            latest[rec["round"]] = rec
        per_node.append(latest)
    starts = [s["started_at"] for s in summaries if s.get("started_at")]
    t0 = min(starts) if starts else 0.0
    records: list[RoundRecord] = []
    prev_sent = [0] * len(configs)
    prev_recv = [0] * len(configs)
    for rnd in range(1, task.rounds + 1):
        recs = [(i, node[rnd]) for i, node in enumerate(per_node) if rnd in node]
        if not recs:
            continue
        acc = Accuracy.over([r["acc"] for _, r in recs])
        sent = [r["bytes_sent"] - prev_sent[i] for i, r in recs]
        recv = [r["bytes_recv"] - prev_recv[i] for i, r in recs]
        for i, r in recs:
            prev_sent[i], prev_recv[i] = r["bytes_sent"], r["bytes_recv"]
        locals_ = [r["local_acc"] for _, r in recs if r.get("local_acc") is not None]
        local = Accuracy.over(locals_)
        extra = {
            "nodes_reporting": len(recs),
            "bytes_per_node": {"sent": sum(sent) / len(sent), "recv": sum(recv) / len(recv)},
            "model_digests_agree": len({r["model"] for _, r in recs}) == 1,
            "local_acc_mean": local.acc_mean,
            "local_acc_min": local.acc_min,
            "local_acc_max": local.acc_max,
        }
        if mode == "consensus":
            extra["adopted"] = sum(1 for _, r in recs if r.get("adopted"))
        records.append(RoundRecord(
            round=rnd, acc_mean=acc.acc_mean, acc_min=acc.acc_min, acc_max=acc.acc_max,
            wall_s=max(r["t"] for _, r in recs) - t0, extra=extra,
        ))  # fmt: skip
    finals = [s.get("final_model") for s in summaries]
    last = records[-1] if records else None
    final: dict[str, Any] = {
        "acc_mean": last.acc_mean if last else None,
        "acc_min": last.acc_min if last else None,
        "acc_max": last.acc_max if last else None,
        "wall_s": last.wall_s if last else None,
        "wall_s_per_round": (last.wall_s / task.rounds) if last else None,
        "rounds_completed": last.round if last else 0,
        "model_digests_agree": None not in finals and len(set(finals)) == 1,
        "bytes_per_node_per_round": {
            "sent": sum(r.extra["bytes_per_node"]["sent"] for r in records) / max(len(records), 1),
            "recv": sum(r.extra["bytes_per_node"]["recv"] for r in records) / max(len(records), 1),
        },
        "frames_rejected": sum(s.get("frames_rejected", 0) for s in summaries),
    }
    if final["model_digests_agree"]:
        final["model_cid"] = finals[0]
        final["model_digest"] = digest_from_cid(str(finals[0])).hex()
    extra_top = {
        "task": task.name,
        "config_digest": task.digest().hex(),
        "rule": task.aggregation.rule,
        "transport": transport,
        "topology": topology.kind,
        "addresses": [s.get("address") for s in summaries],
    }
    return Report(mode=mode, nodes=len(configs), rounds=records, final=final, extra=extra_top)


def run_task(
    task: TaskConfig,
    *,
    out: Path,
    mode: str = "consensus",
    transport: str = "grpc",
    topology: TopologySpec | None = None,
    timeouts: Timeouts | None = None,
    mixing: str = "metropolis_hastings",
    progress: ProgressFn | None = None,
    timeout: float | None = None,
) -> Report:
    """``fedledger run``: the whole task on this machine, then report.json in ``out``."""
    if transport not in ("grpc", "memory"):
        raise ConfigError(f"unknown transport {transport!r}; known: grpc, memory",
                          field="transport")  # fmt: skip
    topology = topology or TopologySpec()
    out.mkdir(parents=True, exist_ok=True)
    task_path = out / "task.toml"  # the effective task, overrides included, for every node
    task_path.write_text(task.to_toml(), encoding="utf-8")
    configs = plan(task, task_path=task_path, out=out, mode=mode, topology=topology,
                   transport=transport, timeouts=timeouts, mixing=mixing)  # fmt: skip
    if transport == "memory":
        summaries = asyncio.run(run_in_memory(configs, progress=progress))
    else:
        summaries = run_processes(configs, progress=progress, timeout=timeout)
    report = merge_report(configs, summaries, mode=mode, transport=transport, topology=topology)
    report.write(out)
    return report


def with_overrides(task: TaskConfig, *, rounds: int | None, nodes: int | None) -> TaskConfig:
    """The task with the command line's overrides applied (and validated again)."""
    changes: dict[str, Any] = {}
    if rounds is not None:
        changes["rounds"] = rounds
    if nodes is not None:
        changes["nodes"] = nodes
    return replace(task, **changes) if changes else task
