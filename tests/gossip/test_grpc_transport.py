"""GrpcTransport specifics: binding, limits, error mapping, reconnects, streaming a 100 MB blob."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from fedledger.errors import ConfigError, FetchRefused, PeerUnavailable, TransportError
from fedledger.gossip.endpoints import InvalidEndpoint
from fedledger.gossip.grpc_transport import GrpcTransport, ServerLimits, _peer_key
from tests.support import outcome, wait_until_async

from .test_transport_suite import Recorder, collect, eventually, run

MiB = 1 << 20


@contextlib.asynccontextmanager
async def started(
    handler: Recorder | None = None, **kwargs: object
) -> AsyncIterator[GrpcTransport]:
    transport = GrpcTransport(**kwargs)  # type: ignore[arg-type]
    await transport.start(handler or Recorder())
    try:
        yield transport
    finally:
        await transport.close()


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this host that is not on the loopback interface, if any."""
    candidates: set[str] = set()
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        candidates.add(s.getsockname()[0])
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            candidates.add(str(info[4][0]))
    usable = sorted(a for a in candidates if not a.startswith("127.") and a != "0.0.0.0")
    return usable[0] if usable else None


def test_binds_to_loopback_only() -> None:
    async def body() -> None:
        transport = GrpcTransport()
        with pytest.raises(TransportError):
            _ = transport.endpoint  # port 0: unknown before start
        await transport.start(Recorder())
        try:
            host, port = transport.endpoint.rsplit(":", 1)
            assert host == "127.0.0.1"
            assert int(port) > 0
            assert transport.port == int(port)
            # reachable on 127.0.0.1 ...
            with socket.create_connection(("127.0.0.1", int(port)), timeout=1.0):
                pass
            # ... but not on another interface of this host
            other = non_loopback_ipv4()
            if other is None:
                pytest.skip("no non-loopback IPv4 address to test against")
            with (
                pytest.raises((ConnectionRefusedError, TimeoutError)),
                socket.create_connection((other, int(port)), timeout=1.0),
            ):
                pass
            with pytest.raises(PeerUnavailable):
                await GrpcTransport().send(f"{other}:{port}", b"x", timeout=1.0)
        finally:
            await transport.close()

    run(body())


def test_a_port_in_use_cannot_be_bound_twice() -> None:
    async def body() -> None:
        async with started() as first:
            second = GrpcTransport(port=first.port)
            with pytest.raises(TransportError):
                await second.start(Recorder())
            await second.close()

    run(body())


def test_explicit_port_and_restart_on_the_same_port() -> None:
    """A peer restarting on its old port is reached again through the cached channel."""

    async def body() -> None:
        async with started() as client:
            # Port 0 first (a port found free and released could be taken by anyone before
            # the bind); the restart then asks for the port the first server got.
            first_handler = Recorder()
            server = GrpcTransport(port=0)
            await server.start(first_handler)
            port = server.port
            assert server.endpoint == f"127.0.0.1:{port}"
            await client.send(server.endpoint, b"one", timeout=1.0)
            await server.close()
            with pytest.raises(PeerUnavailable):
                await client.send(f"127.0.0.1:{port}", b"lost", timeout=0.5)

            second_handler = Recorder()
            restarted = GrpcTransport(port=port)
            await restarted.start(second_handler)
            assert restarted.endpoint == f"127.0.0.1:{port}"
            try:

                async def try_send() -> bool:
                    try:
                        await client.send(restarted.endpoint, b"two", timeout=0.5)
                    except PeerUnavailable:
                        return False
                    return True

                # gRPC redials after a backoff: retry until a send gets through
                await wait_until_async(
                    try_send, timeout=30.0, what="the cached channel to reconnect"
                )
            finally:
                await restarted.close()
            assert first_handler.frames == [b"one"]
            assert second_handler.frames == [b"two"]

    run(body())


def test_a_peer_with_a_lower_frame_limit_refuses_with_transport_error() -> None:
    async def body() -> None:
        async with (
            started(max_frame_bytes=MiB) as small,
            started(max_frame_bytes=2 * MiB) as big,
        ):
            with pytest.raises(TransportError) as info:
                await big.send(small.endpoint, bytes(MiB + MiB // 2), timeout=2.0)
            assert not isinstance(info.value, PeerUnavailable)
            assert "RESOURCE_EXHAUSTED" in str(info.value)
            # the few bytes of gRPC slack above the limit are refused by the server itself
            with pytest.raises(TransportError) as info:
                await big.send(small.endpoint, bytes(MiB + 1), timeout=2.0)
            assert not isinstance(info.value, PeerUnavailable)
            await big.send(small.endpoint, bytes(MiB), timeout=2.0)

    run(body())


def test_custom_frame_limit() -> None:
    async def body() -> None:
        recorder = Recorder()
        async with started(recorder, max_frame_bytes=100) as server, started() as client:
            await client.send(server.endpoint, bytes(100), timeout=1.0)
            with pytest.raises(TransportError):
                await server.send(client.endpoint, bytes(101), timeout=1.0)
            assert recorder.frames == [bytes(100)]

    run(body())


def test_oversized_chunks_are_split_to_chunk_bytes() -> None:
    class OneBigChunk(Recorder):
        async def on_fetch(self, request: bytes) -> AsyncIterator[bytes]:
            yield bytes(range(256)) * (3 * MiB // 256 + 1)

    async def body() -> None:
        async with started(OneBigChunk(), chunk_bytes=MiB) as server, started() as client:
            chunks = await collect(client.fetch(server.endpoint, b"", timeout=2.0))
            assert [len(c) for c in chunks] == [MiB, MiB, MiB, 256]
            assert b"".join(chunks) == bytes(range(256)) * (3 * MiB // 256 + 1)

    run(body())


def test_refusal_before_and_after_chunks() -> None:
    class RefuseLate(Recorder):
        async def on_fetch(self, request: bytes) -> AsyncIterator[bytes]:
            yield b"partial"
            raise FetchRefused("changed my mind: é ü")

    async def body() -> None:
        async with started(RefuseLate()) as server, started() as client:
            received: list[bytes] = []

            async def consume() -> None:
                async for chunk in client.fetch(server.endpoint, b"", timeout=2.0):
                    received.append(chunk)

            with pytest.raises(FetchRefused) as info:
                await consume()
            assert received == [b"partial"]
            assert str(info.value) == "changed my mind: é ü"

    run(body())


def test_a_slow_on_frame_makes_send_time_out() -> None:
    class Slow(Recorder):
        async def on_frame(self, frame: bytes) -> None:
            await asyncio.sleep(5.0)

    async def body() -> None:
        async with started(Slow()) as server, started() as client:
            error = await outcome(
                client.send(server.endpoint, b"x", timeout=0.3), within=20.0, what="the send"
            )
            assert isinstance(error, PeerUnavailable), error
            assert "DEADLINE_EXCEEDED" in str(error)  # its own timeout ended it, not the handler

    run(body())


def test_malformed_or_unresolvable_endpoints_are_unavailable() -> None:
    async def body() -> None:
        async with started() as client:
            for endpoint in ("no-such-host.invalid:1234", "127.0.0.1:1", "::::"):
                error = await outcome(
                    client.send(endpoint, b"x", timeout=1.0), within=20.0, what=endpoint
                )
                assert isinstance(error, PeerUnavailable), (endpoint, error)

    run(body())


def test_pure_client_needs_no_start() -> None:
    async def body() -> None:
        recorder = Recorder()
        recorder.blobs[b"k"] = b"v"
        async with started(recorder) as server:
            client = GrpcTransport()
            try:
                await client.send(server.endpoint, b"hi", timeout=1.0)
                assert await collect(client.fetch(server.endpoint, b"k", timeout=1.0)) == [b"v"]
            finally:
                await client.close()
                await client.close()
            assert recorder.frames == [b"hi"]

    run(body())


def test_close_cancels_a_fetch_being_served() -> None:
    async def body() -> None:
        handler = Recorder()
        async with started() as client:
            server = GrpcTransport()
            await server.start(handler)
            stream = client.fetch(server.endpoint, b"stall", timeout=5.0)
            assert await anext(stream) == b"first"
            await server.close()
            error = await outcome(anext(stream), within=20.0, what="the cut stream")
            assert isinstance(error, PeerUnavailable), error
            await eventually(lambda: handler.fetches_cancelled == 1)

    run(body())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": -1},
        {"port": 70000},
        {"host": ""},
        {"max_frame_bytes": 0},
        {"chunk_bytes": 0},
        {"chunk_bytes": True},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        GrpcTransport(**kwargs)  # type: ignore[arg-type]


# -- a 100 MB blob, streamed -------------------------------------------------------------------

BIG_BLOB_SCRIPT = textwrap.dedent(
    """
    import asyncio, hashlib, json, random, resource, sys

    from fedledger.gossip.grpc_transport import GrpcTransport

    SIZE, CHUNK, SEED = int(sys.argv[1]), 1 << 20, 7

    def chunks():
        rng = random.Random(SEED)
        for offset in range(0, SIZE, CHUNK):
            yield rng.randbytes(min(CHUNK, SIZE - offset))

    class Disk:
        # stands for a handler reading a blob file chunk by chunk
        async def on_frame(self, frame):
            pass

        async def on_fetch(self, request):
            for chunk in chunks():
                yield chunk

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    async def main():
        expected = hashlib.sha256()
        for chunk in chunks():
            expected.update(chunk)
        server, client = GrpcTransport(), GrpcTransport()
        await server.start(Disk())
        # warm up: connection, buffers, code paths
        stream = client.fetch(server.endpoint, b"", timeout=10.0)
        await anext(stream)
        await stream.aclose()
        before = peak_mib()
        digest, total, largest = hashlib.sha256(), 0, 0
        async for chunk in client.fetch(server.endpoint, b"", timeout=10.0):
            digest.update(chunk)
            total += len(chunk)
            largest = max(largest, len(chunk))
        after = peak_mib()
        await client.close()
        await server.close()
        print(json.dumps({
            "ok": digest.hexdigest() == expected.hexdigest(),
            "total": total,
            "largest": largest,
            "before_mib": before,
            "after_mib": after,
        }))

    asyncio.run(main())
    """
)


def test_a_100_mb_blob_streams_in_bounded_memory() -> None:
    size = 100 * MiB
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", BIG_BLOB_SCRIPT, str(size)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"]
    assert result["total"] == size
    assert result["largest"] <= MiB
    growth = result["after_mib"] - result["before_mib"]
    # Two copies would be 200 MiB; streaming should need a few chunks' worth of buffers.
    assert growth < 50, result


# -- hostile peers: limits and endpoints ---------------------------------------------------------


class Blocking(Recorder):
    """``on_frame`` of a frame ``b"block"`` waits until :attr:`release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.blocked = 0

    async def on_frame(self, frame: bytes) -> None:
        if frame == b"block":
            self.blocked += 1
            await self.release.wait()
        await super().on_frame(frame)


async def outcomes(coros: list[Any]) -> list[BaseException | None]:
    results = await asyncio.gather(*coros, return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


def is_refusal(error: BaseException) -> bool:
    """Refused by the server's budget (RESOURCE_EXHAUSTED), or by HTTP/2 (REFUSED_STREAM, code
    7) for a stream past the connection's limit: grpc.aio refuses, not queues, some of those."""
    text = str(error)
    return isinstance(error, TransportError) and (
        "RESOURCE_EXHAUSTED" in text or "error code 7" in text
    )


def test_a_flood_of_junk_frames_is_refused_before_the_handler() -> None:
    async def body() -> None:
        recorder = Recorder()
        # A refill too slow to matter however long the flood takes on a loaded machine.
        limits = ServerLimits(frames_per_second=1e-6, burst_frames=50.0)
        async with started(recorder, limits=limits) as server, started() as hostile:
            errors = await outcomes(
                [hostile.send(server.endpoint, os.urandom(200), timeout=5.0) for _ in range(400)]
            )
            refused = [e for e in errors if e is not None]
            assert all(is_refusal(e) for e in refused), {str(e)[:100] for e in refused}
            # Exactly the burst got through.
            assert len(recorder.frames) == 50
            assert len(refused) == 400 - len(recorder.frames)
            over_budget = sum("RESOURCE_EXHAUSTED" in str(e) for e in refused)
            assert server.refused["frames"] == over_budget > 0

    run(body())


def test_frame_bytes_are_rate_limited_per_peer() -> None:
    async def body() -> None:
        recorder = Recorder()
        limits = ServerLimits(bytes_per_second=1e-6, burst_bytes=float(MiB))
        async with started(recorder, limits=limits) as server, started() as hostile:
            frame = bytes(64 << 10)
            errors = await outcomes(
                [hostile.send(server.endpoint, frame, timeout=5.0) for _ in range(100)]
            )
            assert all(e is None or is_refusal(e) for e in errors)
            assert len(recorder.frames) == 16  # 16 x 64 KiB = the 1 MiB burst
            assert sum(e is not None for e in errors) == 84
            assert server.refused["bytes"] == sum("RESOURCE_EXHAUSTED" in str(e) for e in errors)

    run(body())


def test_concurrent_calls_are_capped() -> None:
    async def body() -> None:
        handler = Blocking()
        limits = ServerLimits(max_concurrent_rpcs=4)
        async with started(handler, limits=limits) as server, started() as client:
            blocked = [
                asyncio.ensure_future(client.send(server.endpoint, b"block", timeout=10.0))
                for _ in range(4)
            ]
            await eventually(lambda: handler.blocked == 4)
            with pytest.raises(TransportError, match="RESOURCE_EXHAUSTED"):
                await client.send(server.endpoint, b"more", timeout=5.0)
            handler.release.set()
            await asyncio.gather(*blocked)
            await client.send(server.endpoint, b"after", timeout=5.0)
            assert handler.frames.count(b"block") == 4
            assert b"after" in handler.frames

    run(body())


def test_concurrent_fetches_are_capped() -> None:
    async def body() -> None:
        handler = Recorder()
        handler.blobs[b"k"] = b"v"
        limits = ServerLimits(max_concurrent_fetches=2)
        async with started(handler, limits=limits) as server, started() as client:
            stalled = [
                cast(AsyncGenerator[bytes], client.fetch(server.endpoint, b"stall", timeout=10.0))
                for _ in range(2)
            ]
            for stream in stalled:
                assert await anext(stream) == b"first"
            with pytest.raises(TransportError, match="RESOURCE_EXHAUSTED"):
                await collect(client.fetch(server.endpoint, b"k", timeout=5.0))
            assert server.refused["fetches"] == 1
            await stalled[0].aclose()
            await eventually(lambda: handler.fetches_cancelled == 1)
            assert await collect(client.fetch(server.endpoint, b"k", timeout=5.0)) == [b"v"]
            await stalled[1].aclose()

    run(body())


def test_peer_key_is_the_host_unless_per_connection() -> None:
    assert _peer_key("ipv4:127.0.0.1:5555", per_connection=False) == "127.0.0.1"
    assert _peer_key("ipv6:[::1]:5555", per_connection=False) == "[::1]"
    assert _peer_key("ipv4:127.0.0.1:5555", per_connection=True) == "ipv4:127.0.0.1:5555"
    assert _peer_key("unix:/x", per_connection=False) == "unix:/x"


@pytest.mark.parametrize("field", ["max_concurrent_rpcs", "max_peers", "burst_bytes"])
def test_bad_server_limits(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ServerLimits(**{field: 0})  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs unix sockets")
def test_unix_endpoints_are_never_dialled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hello or join naming ``unix:PATH`` once reached a local socket: no longer."""
    monkeypatch.chdir(tmp_path)

    async def body() -> None:
        connections = 0

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            writer.close()

        # "80" in the working directory: what gRPC reads "unix:80" as, were it a target.
        servers = [
            await asyncio.start_unix_server(accept, path=str(tmp_path / "sock")),
            await asyncio.start_unix_server(accept, path="80"),
        ]
        try:
            async with started() as client:
                for endpoint in (f"unix:{tmp_path / 'sock'}", f"unix://{tmp_path / 'sock'}"):
                    with pytest.raises(InvalidEndpoint):
                        await client.send(endpoint, b"x", timeout=1.0)
                    with pytest.raises(InvalidEndpoint):
                        await collect(client.fetch(endpoint, b"x", timeout=1.0))
                # A host named "unix" is a host name, resolved by DNS (and absent here).
                with pytest.raises(PeerUnavailable):
                    await client.send("unix:80", b"x", timeout=1.0)
            assert connections == 0
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()

    run(body())
