"""fetch_blob against peers that trickle, stall, lie or refuse, over both transports."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Literal

import pytest

from fedledger.commit.cid import cid_of
from fedledger.errors import ConfigError, FetchRefused
from fedledger.gossip.blobs import MemoryBlobStore
from fedledger.gossip.fetching import FetchFailed, FetchPolicy, Source, fetch_blob
from fedledger.gossip.grpc_transport import GrpcTransport
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.transport import Transport

from .test_transport_suite import eventually, run

Kind = Literal["memory", "grpc"]
Behaviour = Literal["honest", "trickle", "stall", "lie", "big", "refuse"]
BLOB = os.urandom(200_000)
CID = cid_of(BLOB)
# Bounds for tests: a source must average 20 kB/s once 2 s have passed (an honest
# transfer of these small blobs is over long before, even on a loaded machine).
POLICY = FetchPolicy(deadline=20.0, stall=30.0, grace=2.0, min_rate=20_000.0, parallel=2)


class Peer:
    """A blob server that behaves as told."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.cancelled = 0
        self.served = 0

    async def on_frame(self, frame: bytes) -> None:
        pass

    async def on_fetch(self, request: bytes) -> AsyncIterator[bytes]:
        if self.behaviour == "refuse":
            raise FetchRefused("no such blob")
        try:
            if self.behaviour == "honest":
                for offset in range(0, len(BLOB), 65_536):
                    yield BLOB[offset : offset + 65_536]
            elif self.behaviour == "trickle":  # one byte every 20 ms: 50 B/s
                for i in range(len(BLOB)):
                    yield BLOB[i : i + 1]
                    await asyncio.sleep(0.02)
            elif self.behaviour == "stall":
                yield BLOB[:1]
                await asyncio.Event().wait()
            elif self.behaviour == "lie":
                yield os.urandom(len(BLOB))
            elif self.behaviour == "big":
                for _ in range(100):
                    yield BLOB
            self.served += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise


@contextlib.asynccontextmanager
async def peers(
    kind: Kind, behaviours: list[Behaviour]
) -> AsyncIterator[tuple[Transport, list[Source], list[Peer]]]:
    network = MemoryNetwork(seed=0)
    servers: list[Transport] = []
    handlers = [Peer(b) for b in behaviours]
    client: Transport = network.transport("client") if kind == "memory" else GrpcTransport()
    try:
        for i, handler in enumerate(handlers):
            server: Transport = (
                network.transport(f"peer-{i}") if kind == "memory" else GrpcTransport()
            )
            await server.start(handler)
            servers.append(server)
        await client.start(Peer("refuse"))
        sources = [
            Source(endpoint=s.endpoint, request=b"give", name=f"{h.behaviour}-{i}")
            for i, (s, h) in enumerate(zip(servers, handlers, strict=True))
        ]
        yield client, sources, handlers
    finally:
        await asyncio.gather(client.close(), *(s.close() for s in servers))


KINDS: list[Kind] = ["memory", "grpc"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_honest_source_wins_and_the_trickler_is_cancelled(kind: Kind) -> None:
    async def body() -> None:
        async with peers(kind, ["trickle", "honest"]) as (client, sources, handlers):
            store = MemoryBlobStore()
            received: list[int] = []
            result = await fetch_blob(client, store, cid=CID, sources=sources,
                                      max_bytes=len(BLOB), policy=POLICY,
                                      on_chunk=received.append)  # fmt: skip
            assert result.source == "honest-1"
            assert result.received == len(BLOB)
            assert store.get(CID) == BLOB
            assert sum(received) >= len(BLOB)
            await eventually(lambda: handlers[0].cancelled == 1)

    run(body())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("behaviour", ["trickle", "stall"])
def test_a_slow_source_fails_on_its_rate_not_its_stall_timeout(
    kind: Kind, behaviour: Behaviour
) -> None:
    async def body() -> None:
        async with peers(kind, [behaviour]) as (client, sources, handlers):
            store = MemoryBlobStore()
            with pytest.raises(FetchFailed) as info:
                await fetch_blob(client, store, cid=CID, sources=sources, max_bytes=len(BLOB),
                                 policy=POLICY)  # fmt: skip
            assert info.value.reason == "all sources failed"
            assert info.value.failures[f"{behaviour}-0"].startswith("too slow: ")
            assert not store.has(CID)
            await eventually(lambda: handlers[0].cancelled == 1)

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_liars_and_oversized_blobs_fail_then_the_next_source_is_tried(kind: Kind) -> None:
    async def body() -> None:
        async with peers(kind, ["lie", "big", "refuse", "honest"]) as (client, sources, _):
            store = MemoryBlobStore()
            policy = FetchPolicy(deadline=20.0, stall=5.0, grace=0.3, min_rate=1.0, parallel=1)
            result = await fetch_blob(client, store, cid=CID, sources=sources,
                                      max_bytes=len(BLOB), policy=policy)  # fmt: skip
            assert result.source == "honest-3"
            assert result.failures["lie-0"].startswith("mismatch: ")
            assert result.failures["big-1"].startswith("mismatch: ")
            assert result.failures["refuse-2"].startswith("refused: ")
            assert store.get(CID) == BLOB

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_the_overall_deadline_ends_the_fetch(kind: Kind) -> None:
    async def body() -> None:
        async with peers(kind, ["trickle", "trickle", "trickle"]) as (client, sources, handlers):
            # The rate bound is lax (1 B/s after 30 s): only the deadline stops the tricklers.
            policy = FetchPolicy(deadline=0.5, stall=30.0, grace=30.0, min_rate=1.0, parallel=2)
            with pytest.raises(FetchFailed) as info:
                await fetch_blob(client, MemoryBlobStore(), cid=CID, sources=sources,
                                 max_bytes=len(BLOB), policy=policy)  # fmt: skip
            assert info.value.reason == "deadline"
            assert info.value.failures == {
                "trickle-0": "cancelled at the deadline",
                "trickle-1": "cancelled at the deadline",
            }
            assert "trickle-2" not in info.value.failures  # never started
            await eventually(lambda: sum(h.cancelled for h in handlers) == 2)

    run(body())


def test_nothing_to_do_and_nowhere_to_ask() -> None:
    async def body() -> None:
        async with peers("memory", ["honest"]) as (client, sources, handlers):
            store = MemoryBlobStore()
            store.put(BLOB)
            result = await fetch_blob(client, store, cid=CID, sources=sources,
                                      max_bytes=len(BLOB))  # fmt: skip
            assert (result.source, result.received) == ("", 0)
            assert handlers[0].served == 0
            with pytest.raises(FetchFailed, match="no sources") as info:
                await fetch_blob(client, MemoryBlobStore(), cid=CID, sources=[],
                                 max_bytes=len(BLOB))  # fmt: skip
            assert info.value.reason == "no sources"

    run(body())


def test_an_endpoint_that_is_not_host_port_fails_as_unavailable() -> None:
    async def body() -> None:
        client = GrpcTransport()
        try:
            sources = [Source(endpoint="unix:/tmp/x.sock", request=b"give", name="bad")]
            with pytest.raises(FetchFailed) as info:
                await fetch_blob(client, MemoryBlobStore(), cid=CID, sources=sources,
                                 max_bytes=len(BLOB))  # fmt: skip
            assert info.value.failures["bad"].startswith("unavailable: ")
        finally:
            await client.close()

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_hedged_fetch_asks_one_honest_source_only(kind: Kind) -> None:
    """With hedging, the honest case costs one request: the second source is never asked."""

    async def body() -> None:
        async with peers(kind, ["honest", "honest"]) as (client, sources, handlers):
            store = MemoryBlobStore()
            policy = FetchPolicy(deadline=20.0, stall=30.0, grace=2.0, min_rate=20_000.0,
                                 parallel=2, hedge=10.0)  # fmt: skip
            result = await fetch_blob(client, store, cid=CID, sources=sources,
                                      max_bytes=len(BLOB), policy=policy)  # fmt: skip
            assert result.source == "honest-0"
            assert store.get(CID) == BLOB
            assert handlers[0].served == 1
            assert handlers[1].served == 0
            assert handlers[1].cancelled == 0

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_hedged_fetch_asks_the_next_source_when_the_first_stalls(kind: Kind) -> None:
    """A stalled first source costs the hedge delay, not its stall timeout."""

    async def body() -> None:
        async with peers(kind, ["stall", "honest"]) as (client, sources, handlers):
            store = MemoryBlobStore()
            policy = FetchPolicy(deadline=20.0, stall=30.0, grace=15.0, min_rate=1.0,
                                 parallel=2, hedge=0.2)  # fmt: skip
            result = await fetch_blob(client, store, cid=CID, sources=sources,
                                      max_bytes=len(BLOB), policy=policy)  # fmt: skip
            assert result.source == "honest-1"
            assert store.get(CID) == BLOB
            await eventually(lambda: handlers[0].cancelled == 1)

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_hedged_fetch_replaces_a_refusing_source_at_once(kind: Kind) -> None:
    async def body() -> None:
        async with peers(kind, ["refuse", "refuse", "honest"]) as (client, sources, _):
            store = MemoryBlobStore()
            policy = FetchPolicy(deadline=20.0, stall=30.0, grace=2.0, min_rate=1.0,
                                 parallel=1, hedge=60.0)  # fmt: skip
            result = await fetch_blob(client, store, cid=CID, sources=sources,
                                      max_bytes=len(BLOB), policy=policy)  # fmt: skip
            assert result.source == "honest-2"
            assert set(result.failures) == {"refuse-0", "refuse-1"}

    run(body())


@pytest.mark.parametrize(
    "make",
    [
        lambda: FetchPolicy(hedge=-1.0),
        lambda: FetchPolicy(hedge=True),
        lambda: FetchPolicy(deadline=0),
        lambda: FetchPolicy(min_rate=-1.0),
        lambda: FetchPolicy(grace=-0.1),
        lambda: FetchPolicy(parallel=0),
        lambda: FetchPolicy(parallel=True),
    ],
)
def test_bad_policy(make: Callable[[], FetchPolicy]) -> None:
    with pytest.raises(ConfigError):
        make()
