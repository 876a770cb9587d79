"""The node shell under bad input and dead peers: real nodes over the in-memory network."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedledger.commit import cid_of
from fedledger.config import load_config
from fedledger.errors import FetchRefused
from fedledger.gossip.blobs import MemoryBlobStore
from fedledger.gossip.identity import Identity
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.messages import encode_frame, make_message
from fedledger.gossip.topology import TopologySpec
from fedledger.node.build import build_node
from fedledger.node.consensus import Timeouts
from fedledger.node.core import task_id
from fedledger.run.plan import plan
from fedledger.run.results import merge_report
from fedledger.task import prepare_task
from tests.support import wait_until_async

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


def _configs(tmp_path: Path, nodes: int, rounds: int, **node_kw: Any) -> list[Any]:
    task = replace(load_config(DIGITS), nodes=nodes, rounds=rounds)
    configs = plan(
        task,
        task_path=DIGITS,
        out=tmp_path,
        mode="consensus",
        topology=TopologySpec(),
        transport="memory",
        timeouts=Timeouts(initial=3.0, minimum=0.5, maximum=10.0),
    )
    return [replace(c, **node_kw) for c in configs]


def test_garbage_frames_are_rejected_and_the_node_keeps_running(tmp_path: Path) -> None:
    configs = _configs(tmp_path, nodes=3, rounds=6)
    task = prepare_task(configs[0].task)
    tid = task_id(configs[0])
    stranger = Identity.from_seed(999, 0)
    member = Identity.from_seed(configs[0].task.seed, 1)
    # a message node-0 has never seen (a known one would be dropped as a duplicate unread)
    fresh = make_message(
        kind="hello", identity=member, task=tid, round=0, body={"endpoint": "node-1-elsewhere"}
    )
    tampered = bytearray(encode_frame(fresh, ttl=0))
    tampered[10] ^= 0xFF  # inside the signature
    garbage = [
        os.urandom(200),
        b"XXXX" + os.urandom(100),
        encode_frame(
            make_message(
                kind="hello", identity=stranger, task=tid, round=0, body={"endpoint": "evil"}
            ),
            ttl=3,
        ),
        bytes(tampered),
        encode_frame(
            make_message(
                kind="fetch", identity=member, task=tid, round=0, body={"cid": cid_of(b"x")}
            ),
            ttl=0,
        ),
    ]

    sent = {"frames": 0}
    attacked: list[int] = []  # node-0's last completed round at each batch of garbage

    async def scenario() -> list[dict[str, Any]]:
        network = MemoryNetwork(seed=1)
        nodes = [
            build_node(
                c,
                identity=Identity.from_seed(c.task.seed, c.index),
                transport=network.transport(c.listen),
                store=MemoryBlobStore(),
                task=task,
            )
            for c in configs
        ]
        rogue = network.transport("rogue")

        def rounds_done() -> int:
            return max((r["round"] for r in nodes[0].round_records), default=0)

        async def attack() -> None:
            # A batch now and after each round node-0 completes, until its last round: the
            # garbage arrives all through the task, and always while node-0 still serves.
            while (done := rounds_done()) < configs[0].task.rounds and not runs[0].done():
                for frame in garbage:
                    await rogue.send("node-0", frame, timeout=1.0)
                    sent["frames"] += 1
                attacked.append(done)
                await wait_until_async(
                    lambda: rounds_done() > done or runs[0].done(),
                    timeout=60,
                    what=f"node-0 to complete round {done + 1}",
                )

        runs = [asyncio.create_task(n.run()) for n in nodes]
        await wait_until_async(  # node-0 serves once it has warmed up
            lambda: network.is_alive("node-0") or runs[0].done(), timeout=60, what="node-0 to serve"
        )
        assert not runs[0].done(), runs[0]  # it finished (or failed) before serving?
        await attack()
        try:
            return list(await asyncio.wait_for(asyncio.gather(*runs), 120))
        except TimeoutError:
            progress = {i: n.round_records[-1]["round"] if n.round_records else 0
                        for i, n in enumerate(nodes)}  # fmt: skip
            raise AssertionError(f"nodes did not finish: rounds done {progress}") from None

    summaries = asyncio.run(scenario())
    report = merge_report(
        configs, summaries, mode="consensus", transport="memory", topology=TopologySpec()
    ).to_dict()
    assert report["final"]["model_digests_agree"] is True
    assert report["final"]["rounds_completed"] == 6
    victim = summaries[0]
    # the attack ran during the rounds, not just before or after them
    assert len(attacked) >= 2, attacked
    assert sent["frames"] == 5 * len(attacked)
    assert victim["frames_rejected"] >= sent["frames"]
    reasons = " ".join(victim["reject_reasons"])
    for word in ("frame", "from", "signature", "fetch"):
        assert word in reasons, (word, victim["reject_reasons"])


def test_a_node_that_cannot_progress_stops_instead_of_hanging(tmp_path: Path) -> None:
    # Three members; the other two are ghosts that announce a round-2 model nobody can serve
    # (they answer, but refuse every fetch). The live node, in round 1, is behind a majority:
    # it adopts their model, cannot fetch it, and must give up in time. (A round-1 model would
    # be adopted only if it came while the node still trained: a race with its training.)
    configs = _configs(
        tmp_path, nodes=3, rounds=3, ready_timeout=0.2, stall_timeout=2.0, linger=0.1
    )
    cfg = configs[0]
    tid = task_id(cfg)
    ghosts = [Identity.from_seed(cfg.task.seed, i) for i in (1, 2)]
    unobtainable = cid_of(b"a model no one has")
    asked: list[bytes] = []  # the fetch requests the ghosts refused

    class Ghost:
        async def on_frame(self, frame: bytes) -> None:
            pass

        def on_fetch(self, request: bytes) -> AsyncIterator[bytes]:
            asked.append(request)
            raise FetchRefused("a ghost has no blobs")

    async def scenario() -> dict[str, Any]:
        network = MemoryNetwork(seed=2)
        for c in configs[1:]:
            await network.transport(c.listen).start(Ghost())
        node = build_node(
            cfg,
            identity=Identity.from_seed(cfg.task.seed, 0),
            transport=network.transport(cfg.listen),
            store=MemoryBlobStore(),
        )
        run = asyncio.create_task(node.run())
        await wait_until_async(  # its rounds have begun: the ghosts' models are news to it
            lambda: node.started_at > 0 or run.done(), timeout=60, what="the node to start"
        )
        assert not run.done(), run
        for g in ghosts:
            msg = make_message(
                kind="model",
                identity=g,
                task=tid,
                round=2,
                body={"cid": unobtainable, "included": []},
            )
            await node.on_frame(encode_frame(msg, ttl=0))
        return await asyncio.wait_for(run, timeout=30)

    summary = asyncio.run(scenario())
    assert summary["stalled"] is True
    assert summary["final_model"] is None
    # it stalled on the ghosts' model (without their announcements it stalls waiting for them)
    assert asked, "the node never tried to fetch the announced model"
    assert all(unobtainable.encode() in request for request in asked), asked[:1]
