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
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fedledger.errors import ConfigError, FetchRefused, PeerUnavailable, TransportError
from fedledger.gossip.grpc_transport import GrpcTransport

from .test_transport_suite import Recorder, collect, elapsed, eventually, run

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
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            first_handler = Recorder()
            server = GrpcTransport(port=port)
            await server.start(first_handler)
            assert server.endpoint == f"127.0.0.1:{port}"
            await client.send(server.endpoint, b"one", timeout=1.0)
            await server.close()
            with pytest.raises(PeerUnavailable):
                await client.send(f"127.0.0.1:{port}", b"lost", timeout=0.5)

            second_handler = Recorder()
            restarted = GrpcTransport(port=port)
            await restarted.start(second_handler)
            try:

                async def try_send() -> bool:
                    try:
                        await client.send(restarted.endpoint, b"two", timeout=0.5)
                    except PeerUnavailable:
                        return False
                    return True

                deadline = time.monotonic() + 5.0
                while not await try_send():
                    assert time.monotonic() < deadline, "the cached channel never reconnected"
                    await asyncio.sleep(0.05)
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
            took, error = await elapsed(client.send(server.endpoint, b"x", timeout=0.3))
            assert isinstance(error, PeerUnavailable)
            assert "DEADLINE_EXCEEDED" in str(error)
            assert took < 2.0

    run(body())


def test_malformed_or_unresolvable_endpoints_are_unavailable() -> None:
    async def body() -> None:
        async with started() as client:
            for endpoint in ("no-such-host.invalid:1234", "127.0.0.1:1", "::::"):
                took, error = await elapsed(client.send(endpoint, b"x", timeout=1.0))
                assert isinstance(error, PeerUnavailable), (endpoint, error)
                assert took < 3.0

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
            took, error = await elapsed(anext(stream))
            assert isinstance(error, PeerUnavailable), error
            assert took < 3.0
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
