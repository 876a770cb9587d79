"""The node shell under bad input and dead peers: real nodes over the in-memory network."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedledger.commit import cid_of
from fedledger.config import load_config
from fedledger.gossip.blobs import MemoryBlobStore
from fedledger.gossip.identity import Identity
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.messages import encode_frame, make_message
from fedledger.gossip.topology import TopologySpec
from fedledger.launcher import build_node, merge_report, plan
from fedledger.node.consensus import Timeouts
from fedledger.node.runner import task_id
from fedledger.task import prepare_task

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

        async def attack() -> None:
            while network.is_alive("node-0") and sent["frames"] < 5 * 40:
                for frame in garbage:
                    await rogue.send("node-0", frame, timeout=1.0)
                    sent["frames"] += 1
                await asyncio.sleep(0.02)

        runs = [asyncio.create_task(n.run()) for n in nodes]
        deadline = asyncio.get_running_loop().time() + 60
        while not network.is_alive("node-0"):  # node-0 serves once it has warmed up
            assert not runs[0].done(), runs[0]  # it finished (or failed) before serving?
            assert asyncio.get_running_loop().time() < deadline, "node-0 never served"
            await asyncio.sleep(0.05)
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
    assert sent["frames"] >= 5 * 10  # the attack ran during the rounds
    assert victim["frames_rejected"] >= sent["frames"]
    reasons = " ".join(victim["reject_reasons"])
    for word in ("frame", "from", "signature", "fetch"):
        assert word in reasons, (word, victim["reject_reasons"])


def test_a_node_that_cannot_progress_stops_instead_of_hanging(tmp_path: Path) -> None:
    # Three members; the other two are ghosts that announce a round-1 model nobody can serve.
    # The live node adopts the majority's model, cannot fetch it, and must give up in time.
    configs = _configs(
        tmp_path, nodes=3, rounds=3, ready_timeout=0.2, stall_timeout=2.0, linger=0.1
    )
    cfg = configs[0]
    tid = task_id(cfg)
    ghosts = [Identity.from_seed(cfg.task.seed, i) for i in (1, 2)]
    unobtainable = cid_of(b"a model no one has")

    async def scenario() -> dict[str, Any]:
        network = MemoryNetwork(seed=2)
        node = build_node(
            cfg,
            identity=Identity.from_seed(cfg.task.seed, 0),
            transport=network.transport(cfg.listen),
            store=MemoryBlobStore(),
        )
        run = asyncio.create_task(node.run())
        await asyncio.sleep(0.5)
        for g in ghosts:
            msg = make_message(
                kind="model",
                identity=g,
                task=tid,
                round=1,
                body={"cid": unobtainable, "included": []},
            )
            await node.on_frame(encode_frame(msg, ttl=0))
        return await asyncio.wait_for(run, timeout=30)

    summary = asyncio.run(scenario())
    assert summary["stalled"] is True
    assert summary["final_model"] is None
