"""Blob serving in ledger mode: members get any blob but an update whose round still takes
messages; anyone else gets only finalized models, and only if the task's access policy (read
from the ledger) lets them."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from fedledger.commit import encode
from fedledger.config import DataConfig, LedgerConfig, TaskConfig
from fedledger.errors import FetchRefused
from fedledger.gossip.blobs import MemoryBlobStore
from fedledger.gossip.identity import Identity
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.messages import make_fetch_request, make_message
from fedledger.gossip.topology import TopologySpec
from fedledger.learning.trainer import ModelSpec
from fedledger.ledger.memory_ledger import MemoryLedger, MemoryTask
from fedledger.ledger.messages import RoundMessage
from fedledger.ledger.records import Finalized, Joined
from fedledger.ledger.rules import rules_for
from fedledger.node.build import build_node
from fedledger.node.consensus import Train
from fedledger.node.core import NodeCore as Node
from fedledger.node.drivers.ledger import EARLY_MESSAGES, LedgerDriver
from fedledger.node.ledger_round import Sign
from fedledger.run.plan import plan


def make_node(
    tmp_path: Path, access: str, *, read_registry: bool = True
) -> tuple[Node, MemoryTask]:
    task = TaskConfig(name="serve", seed=4, rounds=2, nodes=2, model=ModelSpec(name="logreg"),
                      data=DataConfig(dataset="digits", partition="iid"),
                      ledger=LedgerConfig(access=access, min_stake=10))  # fmt: skip
    configs = plan(task, task_path=tmp_path / "task.toml", out=tmp_path, mode="consensus",
                   topology=TopologySpec(), transport="memory")  # fmt: skip
    ids = [Identity.from_seed(task.seed, i) for i in range(2)]
    owner = "0x" + "11" * 20
    memory = MemoryTask(rules_for(task, token="0x" + "22" * 20, treasury=owner), owner=owner,
                        clock=lambda: 1000.0)  # fmt: skip
    for identity in ids:
        MemoryLedger(memory, identity.address).join("node", 10)
    MemoryLedger(memory, owner).start()
    ledger = MemoryLedger(memory, ids[0].address)
    node = build_node(configs[0], identity=ids[0], store=MemoryBlobStore(),
                      transport=MemoryNetwork(seed=0).transport("node-0"),
                      ledger=ledger)  # fmt: skip
    if read_registry:
        driver(node).update_registry(ledger.events(-1))  # who is a member
    return node, memory


def test_a_message_gossiped_before_its_signer_is_known_counts_once_it_joins(
    tmp_path: Path,
) -> None:
    # Before: a node whose chain poll lagged the gossip dropped a member's round message for
    # good (its signer was not a member yet, as far as the node had read), and the round's
    # submitter then waited out `collect` for it. Now it is kept until the Joined arrives.
    node, _ = make_node(tmp_path, "members", read_registry=False)
    ids = [Identity.from_seed(4, i) for i in range(2)]  # make_node's members
    d = driver(node)
    ledger = d.ledger
    signed = RoundMessage(round=1, update=hashlib.sha256(b"u").digest(), examples=3).sign(
        ids[1], ledger.chain_id, ledger.task_address
    )
    frame = make_message(kind="signed", identity=ids[1], task=node.task_id, round=1,
                         body={"message": signed.to_bytes().hex()})  # fmt: skip
    d.deliver(frame.message)  # the chain not read yet: ids[1] is no member so far
    assert ids[1].address not in d.logic.held(1)
    joins = [e for e in ledger.events(-1) if isinstance(e, Joined)]  # (no round to train)
    d.on_chain(joins, 1000.0)
    assert ids[1].address in d.logic.held(1)
    # A stranger's message (a key that never joins) stays out, and the buffer is bounded.
    for i in range(EARLY_MESSAGES + 10):
        who = Identity.from_seed(99, i)
        m = RoundMessage(round=1).sign(who, ledger.chain_id, ledger.task_address)
        d.deliver(make_message(kind="signed", identity=ids[1], task=node.task_id, round=1,
                               body={"message": m.to_bytes().hex()}).message)  # fmt: skip
    d.on_chain([], 1000.0)
    assert d.logic.held(1) == {ids[1].address}  # no stranger's
    assert len(d._early) == EARLY_MESSAGES


def driver(node: Node) -> LedgerDriver:
    assert isinstance(node.driver, LedgerDriver)
    return node.driver


def fetch(node: Node, who: Identity, cid: str) -> bytes:
    chain_id, contract = node.driver.binding()
    frame = make_fetch_request(
        identity=who,
        task=node.task_id,
        cid=cid,
        to=node.me,
        now=time.time(),
        chain_id=chain_id,
        contract=contract,
    )

    async def go() -> bytes:
        return b"".join([chunk async for chunk in node.on_fetch(frame)])

    return asyncio.run(go())


def finalize(node: Node, blob: bytes) -> str:
    cid = node.store.put(blob)
    event = Finalized(block=9, time=1000, tx="0x" + "00" * 32, index=0, round=1,
                      model_digest=hashlib.sha256(blob).digest(),
                      result_digest=b"\x01" * 32, stake=20)  # fmt: skip
    driver(node).logic.on_events([event], 1000.0)  # the actions it asks for are not needed
    return cid


MODEL = encode([np.arange(6, dtype=np.float32)])
OTHER = encode([np.ones(3, dtype=np.float32)])
UPDATE = encode([np.full(4, 2.0, dtype=np.float32)])


@pytest.mark.parametrize("access", ["members", "token_holders", "public"])
def test_members_get_any_update_whose_round_closed(tmp_path: Path, access: str) -> None:
    node, memory = make_node(tmp_path, access)
    member = Identity.from_seed(4, 1)
    logic = driver(node).logic
    driver(node).chain_now = 1000.0
    (train,) = (a for a in logic.on_events(MemoryLedger(memory, member.address).events(-1),
                                           1000.0) if isinstance(a, Train))  # fmt: skip
    assert train.round == 1
    own = node.store.put(UPDATE)
    signing = logic.trained(1, train.base, own, 10, 1000.0)
    assert [type(a) for a in signing] == [Sign]  # committed to: about to be signed
    model = finalize(node, MODEL)
    other = node.store.put(OTHER)  # a blob that is not this node's update of an open round
    assert fetch(node, member, model) == MODEL
    assert fetch(node, member, other) == OTHER
    # Round 1 still takes messages: the update could be copied into one, so it is refused...
    with pytest.raises(FetchRefused, match="still takes messages"):
        fetch(node, member, own)
    clock = logic.clock(1)
    assert clock is not None
    assert clock.closes_at == 1000 + memory.rules.window
    driver(node).chain_now = clock.closes_at - 1.0
    with pytest.raises(FetchRefused, match="still takes messages"):
        fetch(node, member, own)
    # ...and served once the round's message phase closed.
    driver(node).chain_now = float(clock.closes_at)
    assert fetch(node, member, own) == UPDATE


def test_members_only_refuses_strangers(tmp_path: Path) -> None:
    node, _ = make_node(tmp_path, "members")
    model = finalize(node, MODEL)
    with pytest.raises(FetchRefused, match="access policy"):
        fetch(node, Identity.generate(), model)


def test_public_serves_finalized_models_to_anyone_but_nothing_else(tmp_path: Path) -> None:
    node, _ = make_node(tmp_path, "public")
    model = finalize(node, MODEL)
    update = node.store.put(OTHER)  # not a finalized model: an update, say
    stranger = Identity.generate()
    assert fetch(node, stranger, model) == MODEL
    with pytest.raises(FetchRefused, match="not a finalized model"):
        fetch(node, stranger, update)


def test_token_holders_may_download_once_they_hold_tokens(tmp_path: Path) -> None:
    node, memory = make_node(tmp_path, "token_holders")
    model = finalize(node, MODEL)
    holder = Identity.generate()
    with pytest.raises(FetchRefused, match="access policy"):
        fetch(node, holder, model)
    memory.tokens[holder.address] = 1  # e.g. bought on a market, or a former contributor
    driver(node)._access.clear()  # the node caches the answer for a few seconds
    assert fetch(node, holder, model) == MODEL


def test_a_reader_the_owner_granted_gets_updates_and_models_a_stranger_does_not(
    tmp_path: Path,
) -> None:
    node, memory = make_node(tmp_path, "public")
    model = finalize(node, MODEL)
    update = node.store.put(OTHER)  # an update (not this node's, of a round still open)
    auditor = Identity.generate()
    with pytest.raises(FetchRefused, match="neither a member nor a reader"):
        fetch(node, auditor, update)  # public models, but updates only to members and readers
    MemoryLedger(memory, "0x" + "11" * 20).grant_reader(auditor.address)
    driver(node)._access.clear()  # the node caches the answer for a few seconds
    assert fetch(node, auditor, update) == OTHER
    assert fetch(node, auditor, model) == MODEL
    MemoryLedger(memory, "0x" + "11" * 20).revoke_reader(auditor.address)
    driver(node)._access.clear()
    with pytest.raises(FetchRefused, match="neither a member nor a reader"):
        fetch(node, auditor, update)
