"""The transport contract, run against every implementation (in-memory and gRPC).

Other test modules reuse the helpers defined here::

    from .test_transport_suite import Recorder, cluster, run

    def test_something() -> None:
        async def body() -> None:
            async with cluster("grpc", 3) as c:        # 3 started, connected transports
                await c[0].transport.send(c[1].endpoint, b"hi", timeout=1.0)
                await c.settle()                         # memory: wait for delivery
                assert c[1].handler.frames == [b"hi"]
        run(body())

There is no pytest-asyncio: each test runs its own event loop with :func:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pytest

from fedledger.errors import FetchRefused, PeerUnavailable, TransportError
from fedledger.gossip.grpc_transport import GrpcTransport
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.transport import DEFAULT_CHUNK_BYTES, DEFAULT_MAX_FRAME_BYTES, Transport
from tests.support import outcome, refusing_port, wait_until_async

Kind = Literal["memory", "grpc"]
KINDS: tuple[Kind, ...] = ("memory", "grpc")

T = TypeVar("T")

TEST_TIMEOUT = 45.0
"""Hard limit on one test's event loop, so a hang fails instead of blocking the run."""


def run(coro: Coroutine[Any, Any, T], *, timeout: float = TEST_TIMEOUT) -> T:
    """Run ``coro`` in a fresh event loop, failing after ``timeout`` seconds."""

    async def guarded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


async def eventually(
    condition: Callable[[], bool],
    *,
    what: str = "the condition",
    timeout: float = 20.0,
    interval: float = 0.005,
) -> None:
    """Wait until ``condition()`` holds; fail after ``timeout`` seconds (a hang guard)."""
    await wait_until_async(condition, timeout=timeout, what=what, interval=interval)


class Recorder:
    """A test handler: records frames, serves blobs from a dict, misbehaves on request.

    ``on_frame`` raises for a frame starting with ``b"raise"``. ``on_fetch`` understands:
    ``b"refuse:<reason>"`` (raises FetchRefused(reason)), ``b"boom"`` (raises RuntimeError),
    ``b"stall"`` (one chunk, then hangs), any key of :attr:`blobs` (served in ``chunk_bytes``
    chunks), anything else (refused as unknown).
    """

    def __init__(self, name: str = "", chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.name = name
        self.chunk_bytes = chunk_bytes
        self.frames: list[bytes] = []
        self.blobs: dict[bytes, bytes] = {}
        self.fetches_served = 0
        self.fetches_cancelled = 0

    async def on_frame(self, frame: bytes) -> None:
        if frame.startswith(b"raise"):
            raise RuntimeError("bad frame handler")
        self.frames.append(frame)

    async def on_fetch(self, request: bytes) -> AsyncIterator[bytes]:
        if request.startswith(b"refuse:"):
            raise FetchRefused(request.removeprefix(b"refuse:").decode())
        if request == b"boom":
            raise RuntimeError("handler bug")
        try:
            if request == b"stall":
                yield b"first"
                await asyncio.sleep(3600)
                return
            if request not in self.blobs:
                raise FetchRefused(f"unknown blob {request!r}")
            blob = self.blobs[request]
            for offset in range(0, len(blob), self.chunk_bytes):
                yield blob[offset : offset + self.chunk_bytes]
            self.fetches_served += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.fetches_cancelled += 1
            raise


@dataclass
class Node:
    transport: Transport
    handler: Recorder

    @property
    def endpoint(self) -> str:
        return self.transport.endpoint


@dataclass
class Cluster:
    """``n`` started transports of one kind that can all reach each other."""

    kind: Kind
    nodes: list[Node]
    network: MemoryNetwork | None = None
    closed: set[int] = field(default_factory=set)
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    async def settle(self) -> None:
        """Wait until every frame sent so far has been handled.

        gRPC needs nothing: ``send`` returns once the peer's ``on_frame`` has returned.
        """
        if self.network is not None:
            await self.network.settle(timeout=10.0)

    async def stop(self, i: int) -> None:
        """Close node ``i`` (a peer going away)."""
        self.closed.add(i)
        await self.nodes[i].transport.close()

    def unused_endpoint(self) -> str:
        """An endpoint where nothing listens, until the cluster closes (a gRPC one is a port
        held bound and not listening, so no other process can start serving there)."""
        if self.kind == "memory":
            return "nobody-here"
        return f"127.0.0.1:{self.held.enter_context(refusing_port())}"


def make_transport(
    kind: Kind, name: str, *, network: MemoryNetwork | None = None, **grpc_kwargs: Any
) -> Transport:
    if kind == "memory":
        assert network is not None
        return network.transport(name)
    return GrpcTransport(host="127.0.0.1", port=0, **grpc_kwargs)


@contextlib.asynccontextmanager
async def cluster(
    kind: Kind,
    n: int,
    *,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    network: MemoryNetwork | None = None,
    **grpc_kwargs: Any,
) -> AsyncIterator[Cluster]:
    """Start ``n`` connected transports of ``kind``, each with a :class:`Recorder`; close all
    on exit. Memory nodes share one :class:`MemoryNetwork` (``network`` or a fault-free one,
    endpoints ``"n0"``, ``"n1"``, ...); gRPC nodes listen on 127.0.0.1 with OS-picked ports."""
    if kind == "memory" and network is None:
        network = MemoryNetwork(max_frame_bytes=max_frame_bytes)
    nodes: list[Node] = []
    held = contextlib.ExitStack()
    try:
        for i in range(n):
            transport = make_transport(
                kind, f"n{i}", network=network, max_frame_bytes=max_frame_bytes, **grpc_kwargs
            )
            handler = Recorder(f"n{i}")
            await transport.start(handler)
            nodes.append(Node(transport, handler))
        yield Cluster(kind, nodes, network if kind == "memory" else None, held=held)
    finally:
        await asyncio.gather(*(node.transport.close() for node in nodes))
        held.close()


ClusterFactory = Callable[..., contextlib.AbstractAsyncContextManager[Cluster]]


@pytest.fixture(params=KINDS)
def make_cluster(request: pytest.FixtureRequest) -> ClusterFactory:
    """``make_cluster(n, **kwargs)``: :func:`cluster` bound to each transport kind in turn."""
    kind: Kind = request.param

    def factory(n: int, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[Cluster]:
        return cluster(kind, n, **kwargs)

    return factory


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


# -- frames ------------------------------------------------------------------------------------


def test_frames_arrive_intact_at_the_right_node(make_cluster: ClusterFactory) -> None:
    rng = random.Random(1)

    async def body() -> None:
        async with make_cluster(4) as c:
            sent: dict[int, list[bytes]] = {1: [], 2: [], 3: []}
            for k in range(12):
                dst = 1 + k % 3
                frame = f"{k}:".encode() + rng.randbytes(rng.randrange(0, 5000))
                sent[dst].append(frame)
                await c[0].transport.send(c[dst].endpoint, frame, timeout=2.0)
            await c[0].transport.send(c[1].endpoint, b"", timeout=2.0)
            sent[1].append(b"")
            await c.settle()
            assert c[0].handler.frames == []
            for dst, frames in sent.items():
                assert c[dst].handler.frames == frames
                assert all(type(f) is bytes for f in c[dst].handler.frames)

    run(body())


def test_all_to_all_concurrent_sends_arrive_exactly_once(make_cluster: ClusterFactory) -> None:
    n, per_pair = 20, 2

    async def body() -> None:
        async with make_cluster(n) as c:
            expected: dict[int, Counter[bytes]] = {i: Counter() for i in range(n)}

            async def sender(src: int) -> None:
                sends = []
                for dst in range(n):
                    if dst == src:
                        continue
                    for k in range(per_pair):
                        frame = f"{src}->{dst}#{k}".encode() + os.urandom(64)
                        expected[dst][frame] += 1
                        sends.append(c[src].transport.send(c[dst].endpoint, frame, timeout=10.0))
                await asyncio.gather(*sends)

            await asyncio.gather(*(sender(i) for i in range(n)))
            await c.settle()
            for i in range(n):
                assert Counter(c[i].handler.frames) == expected[i]
                assert len(c[i].handler.frames) == (n - 1) * per_pair

    run(body())


def test_frame_at_the_limit_is_delivered_one_byte_over_is_refused(
    make_cluster: ClusterFactory,
) -> None:
    limit = DEFAULT_MAX_FRAME_BYTES

    async def body() -> None:
        async with make_cluster(2) as c:
            exact = os.urandom(limit)
            await c[0].transport.send(c[1].endpoint, exact, timeout=5.0)
            with pytest.raises(TransportError) as info:
                await c[0].transport.send(c[1].endpoint, exact + b"x", timeout=5.0)
            assert not isinstance(info.value, PeerUnavailable)
            await c.settle()
            assert len(c[1].handler.frames) == 1
            assert hashlib.sha256(c[1].handler.frames[0]).digest() == hashlib.sha256(exact).digest()

    run(body())


def test_bad_on_frame_does_not_break_later_deliveries(make_cluster: ClusterFactory) -> None:
    async def body() -> None:
        async with make_cluster(2) as c:
            for k in range(3):
                await c[0].transport.send(c[1].endpoint, b"raise %d" % k, timeout=2.0)
                await c[0].transport.send(c[1].endpoint, b"ok %d" % k, timeout=2.0)
            await c.settle()
            assert c[1].handler.frames == [b"ok 0", b"ok 1", b"ok 2"]

    run(body())


def test_delivery_is_not_in_the_senders_call_stack(make_cluster: ClusterFactory) -> None:
    """``on_frame`` runs in its own task: the sender's context variables do not leak into it."""
    import contextvars

    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    seen: list[str] = []

    class Spy(Recorder):
        async def on_frame(self, frame: bytes) -> None:
            seen.append(marker.get())

    async def body() -> None:
        async with make_cluster(2) as c:
            await c[1].transport.close()
            spy_transport = make_transport(
                c.kind, "n1", network=c.network, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES
            )
            await spy_transport.start(Spy())
            try:
                marker.set("sender")
                await c[0].transport.send(spy_transport.endpoint, b"x", timeout=2.0)
                await c.settle()
                assert seen == ["unset"]
            finally:
                await spy_transport.close()

    run(body())


# -- blobs -------------------------------------------------------------------------------------


def test_fetch_streams_a_multi_chunk_blob_intact(make_cluster: ClusterFactory) -> None:
    blob = os.urandom(5_000_000)

    async def body() -> None:
        async with make_cluster(2) as c:
            c[1].handler.blobs[b"big"] = blob
            chunks = await collect(c[0].transport.fetch(c[1].endpoint, b"big", timeout=5.0))
            assert len(chunks) == 5
            assert all(0 < len(ch) <= DEFAULT_CHUNK_BYTES for ch in chunks)
            assert all(type(ch) is bytes for ch in chunks)
            digest = hashlib.sha256()
            for ch in chunks:
                digest.update(ch)
            assert digest.digest() == hashlib.sha256(blob).digest()

    run(body())


def test_fetch_empty_blob(make_cluster: ClusterFactory) -> None:
    async def body() -> None:
        async with make_cluster(2) as c:
            c[1].handler.blobs[b"empty"] = b""
            chunks = await collect(c[0].transport.fetch(c[1].endpoint, b"empty", timeout=2.0))
            assert b"".join(chunks) == b""

    run(body())


def test_fetch_refused_propagates_its_reason(make_cluster: ClusterFactory) -> None:
    async def body() -> None:
        async with make_cluster(2) as c:
            reason = "no blob bafkreixyz here (access denied)"
            with pytest.raises(FetchRefused) as info:
                await collect(
                    c[0].transport.fetch(c[1].endpoint, b"refuse:" + reason.encode(), timeout=2.0)
                )
            assert str(info.value) == reason
            with pytest.raises(FetchRefused, match="unknown blob"):
                await collect(c[0].transport.fetch(c[1].endpoint, b"missing", timeout=2.0))

    run(body())


def test_fetch_handler_crash_is_a_transport_error_and_the_server_survives(
    make_cluster: ClusterFactory,
) -> None:
    async def body() -> None:
        async with make_cluster(2) as c:
            with pytest.raises(TransportError) as info:
                await collect(c[0].transport.fetch(c[1].endpoint, b"boom", timeout=2.0))
            assert not isinstance(info.value, PeerUnavailable | FetchRefused)
            c[1].handler.blobs[b"k"] = b"still serving"
            chunks = await collect(c[0].transport.fetch(c[1].endpoint, b"k", timeout=2.0))
            assert b"".join(chunks) == b"still serving"
            await c[0].transport.send(c[1].endpoint, b"and receiving", timeout=2.0)
            await c.settle()
            assert c[1].handler.frames == [b"and receiving"]

    run(body())


def test_fetch_stall_raises_peer_unavailable_within_the_timeout(
    make_cluster: ClusterFactory,
) -> None:
    async def body() -> None:
        async with make_cluster(2) as c:
            chunks: list[bytes] = []

            async def consume() -> None:
                async for chunk in c[0].transport.fetch(c[1].endpoint, b"stall", timeout=0.5):
                    chunks.append(chunk)

            # The stalled server would hold the stream for an hour: the fetch's own timeout
            # must end it (the deadline below only turns a hang into a failure).
            error = await outcome(consume(), within=20.0, what="the stalled fetch")
            assert isinstance(error, PeerUnavailable), error
            assert chunks == [b"first"]
            await eventually(lambda: c[1].handler.fetches_cancelled == 1)

    run(body())


def test_leaving_a_fetch_early_releases_the_server(make_cluster: ClusterFactory) -> None:
    async def body() -> None:
        async with make_cluster(2) as c:
            c[1].handler.blobs[b"big"] = os.urandom(8 * DEFAULT_CHUNK_BYTES)
            c[1].handler.blobs[b"small"] = b"small"
            stream = c[0].transport.fetch(c[1].endpoint, b"big", timeout=2.0)
            assert len(await anext(stream)) == DEFAULT_CHUNK_BYTES
            await stream.aclose()  # type: ignore[attr-defined]
            await eventually(lambda: c[1].handler.fetches_cancelled == 1)
            chunks = await collect(c[0].transport.fetch(c[1].endpoint, b"small", timeout=2.0))
            assert chunks == [b"small"]

    run(body())


def test_concurrent_fetches_from_many_peers(make_cluster: ClusterFactory) -> None:
    async def body() -> None:
        async with make_cluster(5) as c:
            blobs = {i: os.urandom(300_000 + i) for i in range(1, 5)}
            for i, blob in blobs.items():
                c[i].handler.chunk_bytes = 65_536
                c[i].handler.blobs[b"b"] = blob
            results = await asyncio.gather(
                *(collect(c[0].transport.fetch(c[i].endpoint, b"b", timeout=5.0)) for i in blobs)
            )
            for (_, blob), chunks in zip(blobs.items(), results, strict=True):
                assert b"".join(chunks) == blob

    run(body())


# -- unreachable peers and closing ---------------------------------------------------------------


async def assert_unavailable(transport: Transport, endpoint: str, timeout: float = 1.0) -> None:
    error = await outcome(
        transport.send(endpoint, b"hello", timeout=timeout), within=20.0, what="the send"
    )
    assert isinstance(error, PeerUnavailable), error
    error = await outcome(
        collect(transport.fetch(endpoint, b"k", timeout=timeout)), within=20.0, what="the fetch"
    )
    assert isinstance(error, PeerUnavailable), error


def test_unreachable_peers_raise_peer_unavailable(make_cluster: ClusterFactory) -> None:
    async def body() -> None:
        async with make_cluster(3) as c:
            c[1].handler.blobs[b"k"] = b"v"
            await c[0].transport.send(c[1].endpoint, b"before", timeout=1.0)  # channel cached
            stopped = c[1].endpoint
            await c.stop(1)
            await assert_unavailable(c[0].transport, stopped)
            await assert_unavailable(c[0].transport, c.unused_endpoint())
            # the others are unaffected
            await c[0].transport.send(c[2].endpoint, b"after", timeout=1.0)
            await c.settle()
            assert c[2].handler.frames == [b"after"]

    run(body())


def test_close_is_idempotent_and_makes_the_endpoint_unreachable(
    make_cluster: ClusterFactory,
) -> None:
    async def body() -> None:
        async with make_cluster(2) as c:
            endpoint = c[1].endpoint
            await c[1].transport.close()
            await c[1].transport.close()
            await assert_unavailable(c[0].transport, endpoint)
            # a closed transport can no longer send or fetch
            with pytest.raises(TransportError):
                await c[1].transport.send(c[0].endpoint, b"x", timeout=1.0)
            with pytest.raises(TransportError):
                await collect(c[1].transport.fetch(c[0].endpoint, b"x", timeout=1.0))
            # nor start again
            with pytest.raises(TransportError):
                await c[1].transport.start(Recorder())

    run(body())


def test_start_twice_is_an_error(make_cluster: ClusterFactory) -> None:
    async def body() -> None:
        async with make_cluster(1) as c:
            with pytest.raises(TransportError):
                await c[0].transport.start(Recorder())

    run(body())
