"""A ledger-mode node waiting for its task's start outlives a chain that is out of reach for a
while (its RPC endpoint restarting, a network partition), and still gives up at
``start_timeout``.

Before: the wait read the chain's round with nothing around it, so the first
``ChainUnavailable`` (after the chain's few read retries, about 40 s of a silent endpoint) ended
the node with ``error: chain at ...: unavailable`` and exit status 2: in the fault suite
(tests/faults), every node cut from the chain in the seconds around the task's start died.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fedledger.config import DataConfig, LedgerConfig, TaskConfig
from fedledger.errors import ChainUnavailable, LedgerError
from fedledger.gossip.blobs import MemoryBlobStore
from fedledger.gossip.identity import Identity
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.topology import TopologySpec
from fedledger.learning.trainer import ModelSpec
from fedledger.ledger.memory_ledger import MemoryLedger, MemoryTask
from fedledger.ledger.rules import rules_for
from fedledger.node.build import build_node
from fedledger.node.drivers.ledger import LedgerDriver
from fedledger.run.plan import plan

OWNER = "0x" + "11" * 20


class OutOfReach:
    """The task's ledger as its node sees it: after the first read of the round (0: not
    started), the next ``outage`` reads find the chain out of reach; the owner starts the task
    during the outage (``start``). ``outage=None``: out of reach for good."""

    def __init__(self, inner: MemoryLedger, outage: int | None, start: MemoryLedger) -> None:
        self.inner = inner
        self.outage = outage
        self.starter = start
        self.reads = 0

    def current_round(self) -> int:
        self.reads += 1
        if self.reads > 1 and (self.outage is None or self.reads <= 1 + self.outage):
            if self.reads == 2:
                self.starter.start()
            raise ChainUnavailable("chain at http://10.0.0.254:8545: unavailable: ConnectTimeout")
        return self.inner.current_round()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def waiting_driver(tmp_path: Path, outage: int | None) -> tuple[LedgerDriver, OutOfReach]:
    """A member's node, joined, its task not started yet, its chain about to go away."""
    task = TaskConfig(name="wait", seed=4, rounds=2, nodes=2, model=ModelSpec(name="logreg"),
                      data=DataConfig(dataset="digits", partition="iid"),
                      ledger=LedgerConfig(min_stake=10))  # fmt: skip
    configs = plan(task, task_path=tmp_path / "task.toml", out=tmp_path, mode="consensus",
                   topology=TopologySpec(), transport="memory")  # fmt: skip
    ids = [Identity.from_seed(task.seed, i) for i in range(2)]
    memory = MemoryTask(rules_for(task, token="0x" + "22" * 20, treasury=OWNER), owner=OWNER,
                        clock=lambda: 1000.0)  # fmt: skip
    for identity in ids:
        MemoryLedger(memory, identity.address).join("node", 10)
    flaky = OutOfReach(MemoryLedger(memory, ids[0].address), outage, MemoryLedger(memory, OWNER))
    node = build_node(configs[0], identity=ids[0], store=MemoryBlobStore(),
                      transport=MemoryNetwork(seed=0).transport("node-0"),
                      ledger=flaky.inner)  # fmt: skip
    driver = node.driver
    assert isinstance(driver, LedgerDriver)
    driver.ledger = flaky  # duck-typed: the ledger, its round out of reach
    return driver, flaky


def test_a_node_waiting_for_the_start_waits_out_a_chain_out_of_reach(tmp_path: Path) -> None:
    driver, chain = waiting_driver(tmp_path, outage=2)
    assert asyncio.run(driver.setup()) is None  # joined and started: no refusal, no error
    assert chain.reads >= 4  # round 0, two failed reads, then round 1
    assert chain.inner.current_round() == 1


def test_a_chain_out_of_reach_for_good_still_ends_the_wait_at_start_timeout(
    tmp_path: Path,
) -> None:
    driver, _ = waiting_driver(tmp_path, outage=None)
    driver.start_timeout = 0.5
    with pytest.raises(LedgerError, match=r"did not start within 0\.5 s"):
        asyncio.run(driver.setup())
