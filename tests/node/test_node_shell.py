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
import torch

from fedledger.aggregation.round import aggregate_round
from fedledger.api import run_task
from fedledger.commit import cid_of, decode, encode
from fedledger.config import AggregationConfig, load_config
from fedledger.data import Dataset
from fedledger.errors import CodecError, FetchRefused, RunFailed, TrainingError
from fedledger.gossip.blobs import MemoryBlobStore
from fedledger.gossip.identity import Identity
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.messages import encode_frame, make_fetch_request, make_message
from fedledger.gossip.topology import TopologySpec
from fedledger.learning import FitResult, Params, TrainConfig, Trainer
from fedledger.ledger.memory_ledger import MemoryLedger
from fedledger.node.build import build_node
from fedledger.node.consensus import Timeouts
from fedledger.node.core import NodeCore, task_id
from fedledger.node.drivers.ledger import ACCESS_CACHE_SIZE, LedgerDriver
from fedledger.run.plan import plan
from fedledger.task import build_trainer, prepare_task
from tests.node.test_ledger_serving import finalize
from tests.node.test_ledger_serving import make_node as ledger_node
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


def _fetch(node: NodeCore, who: Identity, cid: str) -> bytes:
    chain_id, contract = node.driver.binding()
    request = make_fetch_request(identity=who, task=node.task_id, cid=cid, to=node.me,
                                 now=time.time(), chain_id=chain_id, contract=contract)  # fmt: skip

    async def go() -> bytes:
        return b"".join([c async for c in node.on_fetch(request)])

    return asyncio.run(go())


def test_a_member_that_left_can_no_longer_download(tmp_path: Path) -> None:
    # Before: the member set only grew; a member that left kept downloading.
    node, memory = ledger_node(tmp_path, "members")
    driver = node.driver
    assert isinstance(driver, LedgerDriver)
    ledger = MemoryLedger(memory, node.me)
    leaver = Identity.from_seed(4, 1)
    blob = node.store.put(_blob(1.0))
    assert _fetch(node, leaver, blob) == _blob(1.0)  # a member
    cursor = ledger.head()
    MemoryLedger(memory, leaver.address).leave()
    driver.update_registry(ledger.events(cursor))
    with pytest.raises(FetchRefused):
        _fetch(node, leaver, blob)
    assert leaver.address not in node.member_set  # its frames are refused too


def test_outsiders_cannot_grow_the_access_cache_without_bound(tmp_path: Path) -> None:
    # Before: every fresh outsider key added a cache entry (and a chain call) for good.
    node, _ = ledger_node(tmp_path, "members")
    assert node.blob_bytes == len(encode(node.params(node.initial_cid)))  # the model's exact size
    driver = node.driver
    assert isinstance(driver, LedgerDriver)
    model = finalize(node, _blob(1.0))
    outsiders = [Identity.from_seed(10_000, i) for i in range(ACCESS_CACHE_SIZE + 200)]
    refused = 0
    for outsider in outsiders:
        try:
            _fetch(node, outsider, model)
        except FetchRefused:
            refused += 1
    assert refused == len(outsiders)  # access = members: all refused
    assert len(driver._access) == ACCESS_CACHE_SIZE


class _Stuck(torch.nn.Module):
    """A model whose training changes nothing: every update equals its base (free-riding)."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = torch.nn.Linear(30, 2)
        self.frozen.requires_grad_(False)
        self.idle = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.frozen(x) + 0.0 * self.idle
        return out


@pytest.mark.slow
def test_a_run_in_which_no_round_aggregated_fails_loudly(tmp_path: Path) -> None:
    # Before: every round kept the base model, accuracy stayed at chance, and the run "passed".
    rng = np.random.default_rng(0)
    data = [(rng.normal(size=(40, 30)).astype(np.float32), np.arange(40) % 2) for _ in range(3)]
    task = replace(load_config(ROOT / "examples" / "own_model" / "task.toml"), rounds=2)
    with pytest.raises(RunFailed, match="no round produced a model"):
        run_task(task, out=tmp_path, model=_Stuck, data=data)
    assert (tmp_path / "report.json").exists()  # the report is still written, for the record


class OverlapTrainer(FailingTrainer):
    """Records whether two fits ever ran at once (a trainer is not thread-safe)."""

    def __init__(self, inner: Trainer) -> None:
        super().__init__(inner, fail_at=10**9)
        self.running = 0
        self.overlapped = False

    def fit(self, params: Params, data: Dataset, config: TrainConfig, *, seed: int = 0
            ) -> FitResult:  # fmt: skip
        self.running += 1
        self.overlapped |= self.running > 1
        try:
            time.sleep(0.2)  # the fit's work: long enough for a second one to start
            return super().fit(params, data, config, seed=seed)
        finally:
            self.running -= 1


def test_a_superseded_training_never_runs_beside_the_next(tmp_path: Path) -> None:
    # Seen in a restarted process: it caught up (adopted round 132) and started round 133's
    # training while round 5's still ran on the same trainer; torch failed the fit.
    from fedledger.node.consensus import Train

    configs = _configs(tmp_path, nodes=2, rounds=3)
    task = prepare_task(configs[0].task)
    trainer = OverlapTrainer(build_trainer(configs[0].task, task.data))
    node = build_node(configs[0], identity=Identity.from_seed(configs[0].task.seed, 0),
                      transport=MemoryNetwork(seed=0).transport(configs[0].listen),
                      store=MemoryBlobStore(), task=task, trainer=trainer,
                      data=task.data.nodes[0], test=task.data.test)  # fmt: skip

    async def both() -> None:
        await asyncio.gather(node._train(Train(1, node.initial_cid)),
                             node._train(Train(2, node.initial_cid)))  # fmt: skip

    asyncio.run(both())
    assert trainer.fits == 2
    assert not trainer.overlapped


@pytest.mark.parametrize("mode", ["gossip", "consensus"])
def test_nodes_on_a_sparse_topology_start_once_their_neighbours_said_hello(
    tmp_path: Path, mode: str
) -> None:
    # Before: every node waited to hear a hello from every member, but hellos go to the
    # neighbours only (never relayed), so on two cliques each node waited out ready_timeout
    # (120 s by default) and started without hearing the other clique. A node that starts
    # after a neighbour's hello is answered by the hellos it sends.
    task = replace(load_config(DIGITS), nodes=6, rounds=2)
    configs = plan(task, task_path=DIGITS, out=tmp_path, mode=mode,
                   topology=TopologySpec(kind="two_cliques"), transport="memory",
                   timeouts=FAST)  # fmt: skip
    configs = [replace(c, ready_timeout=60.0, linger=0.1) for c in configs]
    prepared = prepare_task(task)

    async def scenario() -> list[dict[str, Any]]:
        network = MemoryNetwork(seed=5)
        nodes = [build_node(cfg, identity=Identity.from_seed(cfg.task.seed, cfg.index),
                            transport=network.transport(cfg.listen), store=MemoryBlobStore(),
                            task=prepared) for cfg in configs]  # fmt: skip
        runs = [asyncio.create_task(n.run()) for n in nodes]
        return list(await asyncio.wait_for(asyncio.gather(*runs), timeout=300))

    summaries = asyncio.run(scenario())
    assert [s["started_without"] for s in summaries] == [0] * 6
    assert all(s["failure"] is None for s in summaries)
