"""The node shell (core + mode drivers): failures have an outcome, bad neighbours are
rejected by the shared rules, the round function is the one place a round is computed, and
ledger-mode membership follows the chain's registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedledger.aggregation.round import aggregate_round
from fedledger.commit import cid_of, decode, encode
from fedledger.config import AggregationConfig, load_config
from fedledger.data import Dataset
from fedledger.errors import CodecError, FetchRefused, TrainingError
from fedledger.gossip.blobs import MemoryBlobStore
from fedledger.gossip.identity import Identity
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.messages import encode_frame, make_fetch_request, make_message
from fedledger.gossip.topology import TopologySpec
from fedledger.learning import FitResult, Params, TrainConfig, Trainer
from fedledger.node.build import build_node
from fedledger.node.consensus import Timeouts
from fedledger.node.core import task_id
from fedledger.run.plan import plan
from fedledger.task import build_trainer, prepare_task
from tests.support import wait_until_async

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"
FAST = Timeouts(initial=1.0, minimum=0.3, maximum=2.0)


def _configs(tmp_path: Path, *, nodes: int, rounds: int, mode: str = "consensus",
             **node_kw: Any) -> list[Any]:  # fmt: skip
    task = replace(load_config(DIGITS), nodes=nodes, rounds=rounds)
    configs = plan(task, task_path=DIGITS, out=tmp_path, mode=mode, topology=TopologySpec(),
                   transport="memory", timeouts=FAST)  # fmt: skip
    return [replace(c, **node_kw) for c in configs]


class FailingTrainer:
    """A trainer that works until round ``fail_at``'s fit, then raises."""

    def __init__(self, inner: Trainer, fail_at: int) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.fits = 0

    def init_params(self, seed: int) -> Params:
        return self.inner.init_params(seed)

    def fit(self, params: Params, data: Dataset, config: TrainConfig, *, seed: int = 0
            ) -> FitResult:  # fmt: skip
        self.fits += 1
        if self.fits > self.fail_at:  # the first fit is the warm-up
            raise TrainingError("the GPU caught fire")
        return self.inner.fit(params, data, config, seed=seed)

    def evaluate(self, params: Params, data: Dataset) -> dict[str, float]:
        return self.inner.evaluate(params, data)


def test_a_failed_background_job_ends_the_node_with_its_reason(tmp_path: Path) -> None:
    # Before: the error was only logged and the node sat in "training" until its stall
    # timeout (600 s by default), then reported a stall with no reason.
    configs = _configs(tmp_path, nodes=2, rounds=4, stall_timeout=600.0, linger=0.1)
    task = prepare_task(configs[0].task)

    async def scenario() -> list[dict[str, Any]]:
        network = MemoryNetwork(seed=1)
        nodes = []
        for cfg in configs:
            trainer: Trainer = build_trainer(cfg.task, task.data)
            if cfg.index == 0:
                trainer = FailingTrainer(trainer, fail_at=2)  # warm-up, round 1, then fails
            nodes.append(build_node(cfg, identity=Identity.from_seed(cfg.task.seed, cfg.index),
                                    transport=network.transport(cfg.listen),
                                    store=MemoryBlobStore(), task=task, trainer=trainer,
                                    data=task.data.nodes[cfg.index],
                                    test=task.data.test))  # fmt: skip
        runs = [asyncio.create_task(n.run()) for n in nodes]
        first = await asyncio.wait_for(runs[0], timeout=120)
        nodes[1].fail("the test is over")  # it would wait for the failed node: end it too
        await asyncio.wait_for(runs[1], timeout=60)
        return [first]

    (summary,) = asyncio.run(scenario())
    assert summary["failure"] is not None
    assert "round 2: training failed" in summary["failure"]
    assert "the GPU caught fire" in summary["failure"]
    assert summary["final_model"] is None
    assert summary["stalled"] is False


def test_gossip_mode_rejects_a_neighbour_model_of_the_wrong_shape(tmp_path: Path) -> None:
    # Before: the mean was mixed inline without validation, the worker thread raised on the
    # shapes, and the node stalled. Now the shared mixing rule rejects that neighbour.
    configs = _configs(tmp_path, nodes=3, rounds=3, mode="gossip", ready_timeout=0.5,
                       stall_timeout=60.0, linger=0.1)  # fmt: skip
    hostile = Identity.from_seed(configs[0].task.seed, 2)
    bad = encode([np.ones((3, 3), dtype=np.float32)])
    bad_cid = cid_of(bad)

    class Hostile:
        async def on_frame(self, frame: bytes) -> None:
            pass

        async def on_fetch(self, request: bytes) -> AsyncIterator[bytes]:
            yield bad

    async def scenario() -> list[dict[str, Any]]:
        network = MemoryNetwork(seed=3)
        await network.transport(configs[2].listen).start(Hostile())
        task = prepare_task(configs[0].task)
        nodes = [
            build_node(
                cfg,
                identity=Identity.from_seed(cfg.task.seed, cfg.index),
                transport=network.transport(cfg.listen),
                store=MemoryBlobStore(),
                task=task,
            )
            for cfg in configs[:2]
        ]
        runs = [asyncio.create_task(n.run()) for n in nodes]
        await wait_until_async(lambda: all(n.started_at > 0 for n in nodes), timeout=60,
                               what="the nodes to start")  # fmt: skip
        for it in (1, 2):
            msg = make_message(kind="model", identity=hostile, task=task_id(configs[0]),
                               round=it, body={"cid": bad_cid, "included": []})  # fmt: skip
            for n in nodes:
                await n.on_frame(encode_frame(msg, ttl=0))
        return list(await asyncio.wait_for(asyncio.gather(*runs), timeout=120))

    summaries = asyncio.run(scenario())
    for s in summaries:
        assert s["failure"] is None, s
        assert s["final_model"] is not None
        assert s["aggregated_rounds"] == 3


# -- the round function ---------------------------------------------------------------------


def _blob(value: float, shape: tuple[int, ...] = (4,)) -> bytes:
    return encode([np.full(shape, value, dtype=np.float32)])


def test_round_function_rejects_missing_and_malformed_updates_with_reasons() -> None:
    base = _blob(0.0)
    out = aggregate_round(
        AggregationConfig(rule="median", f=1),
        base=base,
        updates=[_blob(1.0), None, b"not a blob", _blob(2.0), _blob(3.0), _blob(1.0, (5,))],
        num_examples=[1, 1, 1, 1, 1, 1],
    )
    assert out.failure is None
    assert set(out.rejected) == {1, 2, 5}
    assert out.rejected[1] == "blob unavailable"
    assert "not a parameter blob" in out.rejected[2]
    assert "exceeds the limit" in out.rejected[5]  # a different shape: a different size
    assert out.scores[1] == out.scores[2] == out.scores[5] == 0
    np.testing.assert_array_equal(decode(out.model)[0], np.full(4, 2.0, dtype=np.float32))


def test_round_function_keeps_the_base_when_the_rule_cannot_run() -> None:
    base = _blob(0.5)
    out = aggregate_round(AggregationConfig(rule="krum", f=1), base=base,
                          updates=[_blob(1.0), _blob(2.0)], num_examples=[3, 4])  # fmt: skip
    assert out.failure is not None
    assert "krum" in out.failure.lower()
    assert out.model == base
    assert out.scores == (0, 0)


def test_round_function_refuses_a_base_that_is_no_model() -> None:
    with pytest.raises(CodecError):
        aggregate_round(AggregationConfig(rule="fedavg"), base=b"junk", updates=[_blob(1.0)],
                        num_examples=[1])  # fmt: skip


# -- ledger-mode membership ---------------------------------------------------------------------


def test_a_member_that_left_can_no_longer_download(tmp_path: Path) -> None:
    from fedledger.config import DataConfig, LedgerConfig, TaskConfig
    from fedledger.learning.trainer import ModelSpec
    from fedledger.ledger.memory_ledger import MemoryLedger, MemoryTask
    from fedledger.ledger.rules import rules_for
    from fedledger.node.drivers.ledger import LedgerDriver

    task = TaskConfig(name="serve", seed=4, rounds=2, nodes=2, model=ModelSpec(name="logreg"),
                      data=DataConfig(dataset="digits", partition="iid"),
                      ledger=LedgerConfig(access="members", min_stake=10))  # fmt: skip
    configs = plan(task, task_path=tmp_path / "task.toml", out=tmp_path, mode="consensus",
                   topology=TopologySpec(), transport="memory")  # fmt: skip
    ids = [Identity.from_seed(task.seed, i) for i in range(2)]
    owner = "0x" + "11" * 20
    memory = MemoryTask(rules_for(task, token="0x" + "22" * 20, treasury=owner), owner=owner,
                        clock=lambda: 1000.0)  # fmt: skip
    for identity in ids:
        MemoryLedger(memory, identity.address).join("node", 10)
    ledger = MemoryLedger(memory, ids[0].address)
    node = build_node(configs[0], identity=ids[0], store=MemoryBlobStore(),
                      transport=MemoryNetwork(seed=0).transport("node-0"),
                      ledger=ledger)  # fmt: skip
    driver = node.driver
    assert isinstance(driver, LedgerDriver)
    driver.update_registry(ledger.events(-1))
    blob = node.store.put(_blob(1.0))

    def fetch(who: Identity) -> bytes:
        frame = make_fetch_request(identity=who, task=node.task_id, cid=blob, to=node.me,
                                   now=time.time(), contract=ledger.task_address)  # fmt: skip

        async def go() -> bytes:
            return b"".join([c async for c in node.on_fetch(frame)])

        return asyncio.run(go())

    assert fetch(ids[1]) == _blob(1.0)  # a member
    cursor = ledger.head()
    MemoryLedger(memory, ids[1].address).leave()
    driver.update_registry(ledger.events(cursor))
    with pytest.raises(FetchRefused):
        fetch(ids[1])
    assert ids[1].address not in node.member_set  # its frames are refused too


def test_outsiders_cannot_grow_the_access_cache_without_bound(tmp_path: Path) -> None:
    # Before: every fresh outsider key added a cache entry (and a chain call) for good.
    from fedledger.config import DataConfig, LedgerConfig, TaskConfig
    from fedledger.learning.trainer import ModelSpec
    from fedledger.ledger.memory_ledger import MemoryLedger, MemoryTask
    from fedledger.ledger.records import Finalized
    from fedledger.ledger.rules import rules_for
    from fedledger.node.drivers.ledger import ACCESS_CACHE_SIZE, LedgerDriver

    task = TaskConfig(name="serve", seed=4, rounds=2, nodes=2, model=ModelSpec(name="logreg"),
                      data=DataConfig(dataset="digits", partition="iid"),
                      ledger=LedgerConfig(access="members", min_stake=10))  # fmt: skip
    configs = plan(task, task_path=tmp_path / "task.toml", out=tmp_path, mode="consensus",
                   topology=TopologySpec(), transport="memory")  # fmt: skip
    me = Identity.from_seed(task.seed, 0)
    owner = "0x" + "11" * 20
    memory = MemoryTask(rules_for(task, token="0x" + "22" * 20, treasury=owner), owner=owner,
                        clock=lambda: 1000.0)  # fmt: skip
    ledger = MemoryLedger(memory, me.address)
    transport = MemoryNetwork(seed=0).transport("node-0")
    node = build_node(configs[0], identity=me, store=MemoryBlobStore(), transport=transport,
                      ledger=ledger)  # fmt: skip
    assert node.blob_bytes == len(encode(node.params(node.initial_cid)))  # the model's exact size
    driver = node.driver
    assert isinstance(driver, LedgerDriver)
    blob = _blob(1.0)
    model = node.store.put(blob)
    import hashlib

    driver.logic.on_events([Finalized(block=9, time=1000, tx="0x" + "00" * 32, index=0, round=1,
                                      model_digest=hashlib.sha256(blob).digest(),
                                      result_digest=b"\x01" * 32)], 1000.0)  # fmt: skip

    async def flood() -> int:
        refused = 0
        for i in range(ACCESS_CACHE_SIZE + 200):
            outsider = Identity.from_seed(10_000, i)
            request = make_fetch_request(identity=outsider, task=node.task_id, cid=model,
                                         to=node.me, now=time.time(),
                                         contract=ledger.task_address)  # fmt: skip
            try:
                async for _ in node.on_fetch(request):
                    pass
            except FetchRefused:
                refused += 1
        return refused

    assert asyncio.run(flood()) == ACCESS_CACHE_SIZE + 200  # access = members: all refused
    assert len(driver._access) == ACCESS_CACHE_SIZE
