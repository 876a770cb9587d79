"""MemoryNetwork's fault injection: drops, duplicates, delays, partitions, crashes, seeds."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from fedledger.errors import ConfigError, PeerUnavailable, TransportError
from fedledger.gossip.memory import MemoryNetwork, MemoryStats

from .test_transport_suite import Recorder, cluster, collect, run


async def send_many(network: MemoryNetwork, count: int, src: str = "n0", dst: str = "n1") -> None:
    """Send ``count`` numbered frames from ``src`` to ``dst`` (transports must exist)."""
    transport = network._nodes[src]
    for k in range(count):
        await transport.send(dst, b"%d" % k, timeout=1.0)


def frames_of(count: int) -> list[bytes]:
    return [b"%d" % k for k in range(count)]


def test_drop_one_delivers_nothing_and_does_not_raise() -> None:
    async def body() -> None:
        net = MemoryNetwork(drop=1.0)
        async with cluster("memory", 2, network=net) as c:
            await send_many(net, 50)
            await c.settle()
            assert c[1].handler.frames == []
            assert net.stats.frames_sent == 50
            assert net.stats.frames_dropped == 50
            assert net.stats.frames_delivered == 0

    run(body())


def test_duplicate_one_delivers_every_frame_twice() -> None:
    async def body() -> None:
        net = MemoryNetwork(duplicate=1.0)
        async with cluster("memory", 2, network=net) as c:
            await send_many(net, 20)
            await c.settle()
            assert Counter(c[1].handler.frames) == Counter(frames_of(20) * 2)
            assert net.stats.frames_duplicated == 20
            assert net.stats.frames_delivered == 40
            assert net.stats.bytes_delivered == 2 * net.stats.bytes_sent

    run(body())


def test_random_delays_reorder_frames_but_deliver_all() -> None:
    async def body() -> None:
        net = MemoryNetwork(seed=3, delay=(0.0, 0.05))
        async with cluster("memory", 2, network=net) as c:
            await send_many(net, 40)
            assert c[1].handler.frames == []  # nothing arrives before its delay
            await c.settle()
            received = c[1].handler.frames
            assert sorted(received) == sorted(frames_of(40))
            assert received != frames_of(40)

    run(body())


def test_without_faults_frames_arrive_in_send_order() -> None:
    async def body() -> None:
        async with cluster("memory", 2) as c:
            assert c.network is not None
            await send_many(c.network, 100)
            await c.settle()
            assert c[1].handler.frames == frames_of(100)

    run(body())


def test_delivery_is_asynchronous() -> None:
    async def body() -> None:
        async with cluster("memory", 2) as c:
            await c[0].transport.send(c[1].endpoint, b"x", timeout=1.0)
            assert c[1].handler.frames == []  # not called inside send
            assert c.network is not None
            assert c.network.in_flight == 1
            await c.settle()
            assert c[1].handler.frames == [b"x"]

    run(body())


def fault_pattern(seed: int) -> tuple[Counter[bytes], MemoryStats]:
    async def body() -> tuple[Counter[bytes], MemoryStats]:
        net = MemoryNetwork(seed=seed, drop=0.3, duplicate=0.3, delay=(0.0, 0.01))
        async with cluster("memory", 2, network=net) as c:
            await send_many(net, 200)
            await c.settle()
            return Counter(c[1].handler.frames), net.stats

    return run(body())


def test_same_seed_gives_the_same_fault_pattern() -> None:
    first, first_stats = fault_pattern(42)
    again, again_stats = fault_pattern(42)
    other, _ = fault_pattern(43)
    assert first == again
    assert first_stats == again_stats
    assert first != other
    # the faults did happen
    assert 0 < first_stats.frames_dropped < 200
    assert 0 < first_stats.frames_duplicated < 200
    assert set(first.values()) == {1, 2}


def test_partition_and_heal() -> None:
    async def body() -> None:
        async with cluster("memory", 3) as c:
            net = c.network
            assert net is not None
            c[1].handler.blobs[b"k"] = b"v"
            net.partition("n0", "n1")
            assert net.partitioned("n1", "n0")
            await c[0].transport.send("n1", b"lost 0->1", timeout=1.0)  # no error
            await c[1].transport.send("n0", b"lost 1->0", timeout=1.0)
            await c[0].transport.send("n2", b"0->2", timeout=1.0)
            await c[1].transport.send("n2", b"1->2", timeout=1.0)
            with pytest.raises(PeerUnavailable):
                await collect(c[0].transport.fetch("n1", b"k", timeout=1.0))
            await c.settle()
            assert c[0].handler.frames == []
            assert c[1].handler.frames == []
            assert sorted(c[2].handler.frames) == [b"0->2", b"1->2"]

            net.heal("n1", "n0")
            await c[0].transport.send("n1", b"back", timeout=1.0)
            await c.settle()
            assert c[1].handler.frames == [b"back"]
            assert await collect(c[0].transport.fetch("n1", b"k", timeout=1.0)) == [b"v"]

    run(body())


def test_kill_and_revive() -> None:
    async def body() -> None:
        async with cluster("memory", 3) as c:
            net = c.network
            assert net is not None
            c[1].handler.blobs[b"k"] = b"v"
            net.kill("n1")
            assert not net.is_alive("n1")
            with pytest.raises(PeerUnavailable):
                await c[0].transport.send("n1", b"x", timeout=1.0)
            with pytest.raises(PeerUnavailable):
                await collect(c[0].transport.fetch("n1", b"k", timeout=1.0))
            # what a crashed node sends vanishes
            await c[1].transport.send("n2", b"from the dead", timeout=1.0)
            await c.settle()
            assert c[2].handler.frames == []

            net.revive("n1")
            await c[0].transport.send("n1", b"hello again", timeout=1.0)
            await c[1].transport.send("n2", b"alive", timeout=1.0)
            await c.settle()
            assert c[1].handler.frames == [b"hello again"]
            assert c[2].handler.frames == [b"alive"]
            assert await collect(c[0].transport.fetch("n1", b"k", timeout=1.0)) == [b"v"]

    run(body())


def test_frames_in_flight_to_a_killed_node_are_lost() -> None:
    async def body() -> None:
        net = MemoryNetwork(delay=(0.02, 0.02))
        async with cluster("memory", 2, network=net) as c:
            await c[0].transport.send("n1", b"in flight", timeout=1.0)
            net.kill("n1")
            await c.settle()
            net.revive("n1")
            assert c[1].handler.frames == []
            assert net.stats.frames_dropped == 1

    run(body())


def test_a_node_killed_during_a_fetch_fails_it() -> None:
    async def body() -> None:
        async with cluster("memory", 2, network=None) as c:
            net = c.network
            assert net is not None
            c[1].handler.chunk_bytes = 10
            c[1].handler.blobs[b"k"] = bytes(100)
            stream = c[0].transport.fetch("n1", b"k", timeout=1.0)
            assert await anext(stream) == bytes(10)
            net.kill("n1")
            with pytest.raises(PeerUnavailable):
                await anext(stream)

    run(body())


def test_chunks_and_frames_are_copies_of_mutable_buffers() -> None:
    buffer = bytearray(b"abc")

    class Mutable(Recorder):
        async def on_fetch(self, request: bytes):
            yield buffer

    async def body() -> None:
        net = MemoryNetwork()
        a, b = net.transport("a"), net.transport("b")
        recorder = Recorder()
        await a.start(recorder)
        await b.start(Mutable())
        frame = bytearray(b"frame")
        await b.send("a", frame, timeout=1.0)  # type: ignore[arg-type]
        frame[0] = ord("X")
        await net.settle()
        assert recorder.frames == [b"frame"]
        chunks = await collect(a.fetch("b", b"", timeout=1.0))
        buffer[0] = ord("X")
        assert chunks == [b"abc"]
        assert type(chunks[0]) is bytes

    run(body())


def test_endpoints_are_unique_until_closed() -> None:
    async def body() -> None:
        net = MemoryNetwork()
        first = net.transport("a")
        await first.start(Recorder())
        with pytest.raises(TransportError):
            net.transport("a")
        await first.close()
        second = net.transport("a")  # a node restarting under its old name
        recorder = Recorder()
        await second.start(recorder)
        other = net.transport("b")
        await other.send("a", b"hi", timeout=1.0)
        await net.settle()
        assert recorder.frames == [b"hi"]
        assert net.endpoints == ["a"]

    run(body())


def test_a_started_but_not_yet_serving_endpoint_is_unavailable() -> None:
    async def body() -> None:
        net = MemoryNetwork()
        a = net.transport("a")
        net.transport("b")  # created, never started
        with pytest.raises(PeerUnavailable):
            await a.send("b", b"x", timeout=1.0)

    run(body())


def test_settle_waits_for_frames_sent_by_handlers() -> None:
    class Relay(Recorder):
        def __init__(self, transport_name: str, net: MemoryNetwork) -> None:
            super().__init__()
            self.net = net
            self.transport_name = transport_name

        async def on_frame(self, frame: bytes) -> None:
            await super().on_frame(frame)
            if len(frame) < 5:
                await asyncio.sleep(0.001)
                await self.net._nodes[self.transport_name].send(
                    "b" if self.transport_name == "a" else "a", frame + b"+", timeout=1.0
                )

    async def body() -> None:
        net = MemoryNetwork(delay=(0.001, 0.002))
        a, b = net.transport("a"), net.transport("b")
        ra, rb = Relay("a", net), Relay("b", net)
        await a.start(ra)
        await b.start(rb)
        await a.send("b", b"x", timeout=1.0)
        await net.settle(timeout=5.0)
        assert rb.frames == [b"x", b"x++", b"x++++"]
        assert ra.frames == [b"x+", b"x+++"]

    run(body())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop": 1.5},
        {"duplicate": -0.1},
        {"delay": (0.2, 0.1)},
        {"delay": (-1.0, 0.0)},
        {"max_frame_bytes": 0},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MemoryNetwork(**kwargs)  # type: ignore[arg-type]


def test_frame_limit_is_configurable() -> None:
    async def body() -> None:
        net = MemoryNetwork(max_frame_bytes=10)
        async with cluster("memory", 2, network=net) as c:
            await c[0].transport.send("n1", bytes(10), timeout=1.0)
            with pytest.raises(TransportError):
                await c[0].transport.send("n1", bytes(11), timeout=1.0)
            await c.settle()
            assert c[1].handler.frames == [bytes(10)]

    run(body())


def test_hundreds_of_nodes_gossip_in_one_process() -> None:
    n = 300

    async def body() -> None:
        net = MemoryNetwork(seed=5, drop=0.05, delay=(0.0, 0.01))
        async with cluster("memory", n, network=net) as c:
            # everyone sends to 10 pseudo-random peers
            for i in range(n):
                for j in range(1, 11):
                    await c[i].transport.send(f"n{(i * 7 + j * 31) % n}", b"%d" % i, timeout=1.0)
            await c.settle()
            delivered = sum(len(node.handler.frames) for node in c)
            assert delivered == net.stats.frames_delivered
            assert net.stats.frames_sent == n * 10
            assert delivered + net.stats.frames_dropped == n * 10

    run(body())
