"""Every node of a task in this process: over the in-memory network, or with a shared embedded
chain (over memory or gRPC on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from eth_account.signers.local import LocalAccount

from fedledger.attacks.behaviour import Collusion
from fedledger.config.node import NodeConfig
from fedledger.gossip.blobs import FileBlobStore, MemoryBlobStore
from fedledger.gossip.grpc_transport import GrpcTransport
from fedledger.gossip.identity import Identity
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.transport import Transport
from fedledger.ledger.chain import Chain
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.node.build import build_node
from fedledger.node.core import NodeCore, fetch_policy
from fedledger.run.plan import ProgressFn
from fedledger.run.progress import of_records
from fedledger.rundir import LedgerDeployment
from fedledger.task import prepare_task

log = logging.getLogger("fedledger.run")


def collusion_of(configs: Sequence[NodeConfig], *, omniscient: bool) -> Collusion | None:
    """One board for the attackers of this process to share what they know on: without a
    ledger every update is announced before aggregation, so they see the honest ones too
    (omniscient); when updates are served only after their round closed, only their own."""
    count = sum(1 for c in configs if c.attack is not None)
    if not count:
        return None
    return Collusion(count, nodes=len(configs), omniscient=omniscient)


def start_when_joined(owner: ContractLedger, n: int, *, secure: bool = False) -> bool:
    """The owner starts round 1 once ``n`` members joined (and, with ``secure`` aggregation,
    registered key blobs for each other); True once started."""
    if owner.current_round() > 0:
        return True
    if owner.member_count() < n:
        return False
    if secure:
        from fedledger.ledger.records import Joined, Left, Slashed
        from fedledger.node.drivers.secagg import keys_ready

        events = owner.events(-1, owner.head())
        members: dict[str, None] = {}
        for e in events:
            if isinstance(e, Joined):
                members[e.member] = None
            elif isinstance(e, Left | Slashed):
                members.pop(e.member, None)
        if keys_ready(events, list(members)):
            return False
    owner.start()
    return True


def joining(configs: Sequence[NodeConfig], task_address: str) -> int:
    """How many nodes the owner waits for before starting: all but the Sybils, whose join the
    contract refuses (their stake is below the minimum), and those whose data owner's consent
    does not cover the task (they refuse to join)."""
    from fedledger.config.consent import violations

    return sum(1 for c in configs if c.attack != "sybil"
               and not violations(c.consent, c.task, task_address=task_address))  # fmt: skip


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
    collusion = collusion_of(configs, omniscient=True)
    nodes = [
        build_node(
            cfg,
            identity=Identity.from_seed(cfg.task.seed, cfg.index),
            transport=network.transport(cfg.listen),
            store=MemoryBlobStore(),
            task=task,
            collusion=collusion,
        )
        for cfg in configs
    ]
    for node in nodes:  # they share this process's cores and event loop
        node.fetch_policy = fetch_policy(sharing=len(nodes))
    return await run_nodes(nodes, progress=progress)


async def run_nodes(
    nodes: Sequence[NodeCore], *, progress: ProgressFn | None = None
) -> list[dict[str, Any]]:
    """Run ``nodes`` in this event loop to the end; their summaries, in order."""
    runs = [asyncio.create_task(n.run()) for n in nodes]
    if progress is not None and nodes:
        while not all(r.done() for r in runs):
            report_progress(nodes, progress)
            await asyncio.wait(runs, timeout=0.2)
    return list(await asyncio.gather(*runs))


def report_progress(nodes: Sequence[NodeCore], progress: ProgressFn) -> None:
    """Rounds done, accuracy (the nodes' records in memory) and whom the nodes wait for
    (their status files)."""
    last = [max(n.round_records, key=lambda r: r["round"]) if n.round_records else None
            for n in nodes]  # fmt: skip
    progress(of_records([n.config for n in nodes], last))


async def run_ledger_in_process(
    configs: Sequence[NodeConfig],
    *,
    chain: Chain,
    deployment: LedgerDeployment,
    owner: LocalAccount,
    transport: str = "memory",
    progress: ProgressFn | None = None,
    on_chain: Callable[[Chain, LedgerDeployment], None] | None = None,
) -> list[dict[str, Any]]:
    """Every node in this process, each with its own account on the shared chain, over the
    memory transport or gRPC on 127.0.0.1. Blobs go to each node's directory (the audit reads
    them). The owner starts round 1 once every node joined."""
    from eth_account import Account

    task = prepare_task(configs[0].task)
    network = MemoryNetwork(seed=configs[0].task.seed)
    # On a ledger an honest update is served only once its round closed.
    collusion = collusion_of(configs, omniscient=False)
    nodes = []
    for cfg in configs:
        identity = Identity.from_seed(cfg.task.seed, cfg.index)
        if transport == "memory":
            node_transport: Transport = network.transport(cfg.listen)
        else:
            host, _, port = cfg.listen.rpartition(":")
            node_transport = GrpcTransport(host=host, port=int(port))
        ledger = ContractLedger(chain, deployment.task, Account.from_key(identity.private_key))
        store = FileBlobStore(cfg.state_dir / "blobs", durable=False)
        nodes.append(build_node(cfg, identity=identity, transport=node_transport, store=store,
                                task=task, ledger=ledger, collusion=collusion))  # fmt: skip
    for node in nodes:  # they share this process's cores and event loop
        node.fetch_policy = fetch_policy(sharing=len(nodes))
    runs = [asyncio.create_task(n.run()) for n in nodes]
    owner_ledger = ContractLedger(chain, deployment.task, owner)
    started = False
    while not all(r.done() for r in runs):
        if not started:
            started = await asyncio.to_thread(
                start_when_joined, owner_ledger, joining(configs, deployment.task),
                secure=configs[0].task.secure_aggregation,
            )  # fmt: skip
        if progress is not None:
            report_progress(nodes, progress)
        if on_chain is not None and started:
            on_chain(chain, deployment)
        await asyncio.wait(runs, timeout=0.2)
    return list(await asyncio.gather(*runs))
