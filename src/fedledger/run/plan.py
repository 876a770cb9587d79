"""Node configurations for a whole task on this machine."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedledger.config import TaskConfig
from fedledger.config.consent import ConsentPolicy
from fedledger.config.node import NodeConfig, Peer, write_node_config
from fedledger.errors import ConfigError
from fedledger.gossip.identity import Identity
from fedledger.gossip.topology import TopologySpec
from fedledger.node.consensus import Timeouts
from fedledger.run.progress import ProgressFn, RunProgress

__all__ = ["ProgressFn", "RunProgress", "plan"]

log = logging.getLogger("fedledger.run")


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
    chain_url: str | None = None,
    task_address: str | None = None,
    attack: str | None = None,
    attackers: Sequence[int] = (),
    identities: Sequence[Identity] | None = None,
    consents: Mapping[int, ConsentPolicy] | None = None,
) -> list[NodeConfig]:
    """Node configurations for every member of ``task`` on 127.0.0.1.

    ``identities`` are the nodes' keys; by default they are derived from the task seed
    (:meth:`Identity.from_seed`): reproducible local simulations only, never where stakes are
    real (fedledger.keys decides; ``fedledger node`` makes a fresh key). ``consents``: the
    data owners' consent policies of some nodes, by index (the others have none).
    """
    n = task.nodes
    if identities is None:
        identities = [Identity.from_seed(task.seed, i) for i in range(n)]
    if len(identities) != n:
        raise ConfigError(f"{len(identities)} keys for {n} nodes", field="task.nodes")
    rendezvous: Path | None = None
    if transport == "grpc":
        # Each node listens on a port the OS picks, and finds the others' at the rendezvous
        # (or, on a chain, in the task's registry): no port is picked in advance.
        endpoints = [""] * n
        listen = ["127.0.0.1:0"] * n
        rendezvous = out / "endpoints"
        if rendezvous.exists():  # a previous run's endpoints are stale
            for stale in rendezvous.glob("*.endpoint"):
                stale.unlink()
    else:
        endpoints = listen = [f"node-{i}" for i in range(n)]
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
                state_dir=node_dir / "state", listen=listen[i], mode=mode, peers=peers,
                rendezvous=rendezvous,
                topology=topology, timeouts=timeouts or Timeouts(), mixing=mixing,
                chain=chain_url, task_address=task_address,
                attack=attack if i in attackers else None, attackers=len(attackers),
                probe="backdoor" if attack == "backdoor" else None,
                consent=(consents or {}).get(i),
            )
        )  # fmt: skip
        if transport == "grpc":
            node_dir.mkdir(parents=True, exist_ok=True)
            identities[i].save(configs[-1].key_file)  # mode 0600; replaces a previous run's
            write_node_config(configs[-1], node_dir / "node.toml")
    return configs
