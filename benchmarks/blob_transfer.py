"""Blob transfer throughput on 127.0.0.1: GrpcTransport.fetch against plain TCP.

Run with ``python -m benchmarks.blob_transfer`` (or ``python benchmarks/blob_transfer.py``).
For 1, 10 and 100 MB blobs, each measured a few times in the same process and event loop:

* **grpc**: a :class:`~fedledger.gossip.grpc_transport.GrpcTransport` server whose handler
  yields the blob in 1 MiB chunks, fetched by a second transport that counts the chunks;
* **tcp**: an asyncio streams server that writes the blob in 1 MiB pieces and closes, and a
  client that reads to EOF in 1 MiB reads (the floor any framing protocol pays on top of).

Each side gets one untimed warm-up transfer per size, whose sha256 is checked. The table gives
the best and median MB/s (MB = 10**6 bytes) and the grpc/tcp ratio of the medians; the last
line is the process's peak RSS. Nothing is asserted: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence

if __package__ in (None, ""):  # run as a script: make ``fedledger`` importable from src/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from fedledger.gossip.grpc_transport import GrpcTransport
from fedledger.gossip.transport import DEFAULT_CHUNK_BYTES

MB = 1_000_000
CHUNK = DEFAULT_CHUNK_BYTES


class BlobServer:
    """A Handler serving one blob, in CHUNK-sized pieces, for any request."""

    def __init__(self) -> None:
        self.blob = b""

    async def on_frame(self, frame: bytes) -> None:
        pass

    async def on_fetch(self, request: bytes) -> AsyncIterator[bytes]:
        blob = self.blob
        for offset in range(0, len(blob), CHUNK):
            yield blob[offset : offset + CHUNK]


async def grpc_fetch(client: GrpcTransport, endpoint: str, *, digest: bool) -> tuple[int, bytes]:
    total, hasher = 0, hashlib.sha256()
    async for chunk in client.fetch(endpoint, b"blob", timeout=30.0):
        total += len(chunk)
        if digest:
            hasher.update(chunk)
    return total, hasher.digest()


async def tcp_fetch(port: int, *, digest: bool) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2 * CHUNK)
    total, hasher = 0, hashlib.sha256()
    try:
        while chunk := await reader.read(CHUNK):
            total += len(chunk)
            if digest:
                hasher.update(chunk)
    finally:
        writer.close()
        await writer.wait_closed()
    return total, hasher.digest()


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / (1 << 20)


async def bench(
    sizes_mb: Sequence[int], repeats: int
) -> list[tuple[int, list[float], list[float]]]:
    blob_server = BlobServer()
    server, client = GrpcTransport(), GrpcTransport()
    await server.start(blob_server)
    current = {"blob": b""}

    async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        blob = memoryview(current["blob"])
        try:
            for offset in range(0, len(blob), CHUNK):
                writer.write(blob[offset : offset + CHUNK])
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    tcp = await asyncio.start_server(serve_tcp, "127.0.0.1", 0)
    tcp_port = tcp.sockets[0].getsockname()[1]
    results = []
    try:
        for size_mb in sizes_mb:
            blob = os.urandom(size_mb * MB)
            expected = hashlib.sha256(blob).digest()
            blob_server.blob = current["blob"] = blob
            # warm-up and integrity check, untimed
            for name, got in (
                ("grpc", await grpc_fetch(client, server.endpoint, digest=True)),
                ("tcp", await tcp_fetch(tcp_port, digest=True)),
            ):
                if got != (len(blob), expected):
                    raise SystemExit(f"{name}: {size_mb} MB blob corrupted in transfer")
            grpc_rates: list[float] = []
            tcp_rates: list[float] = []
            for _ in range(repeats):  # interleaved, so both see the same machine state
                start = time.perf_counter()
                await grpc_fetch(client, server.endpoint, digest=False)
                grpc_rates.append(len(blob) / MB / (time.perf_counter() - start))
                start = time.perf_counter()
                await tcp_fetch(tcp_port, digest=False)
                tcp_rates.append(len(blob) / MB / (time.perf_counter() - start))
            results.append((size_mb, grpc_rates, tcp_rates))
            del blob
            blob_server.blob = current["blob"] = b""
    finally:
        tcp.close()
        await tcp.wait_closed()
        await client.close()
        await server.close()
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100], help="MB")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    results = asyncio.run(bench(args.sizes, args.repeats))
    print(f"blob transfer on 127.0.0.1, {args.repeats} timed runs each (MB/s, MB = 10**6 B)")
    header = (
        f"{'size':>7} | {'grpc best':>10} {'grpc med':>10} | {'tcp best':>10} {'tcp med':>10}"
        f" | {'grpc/tcp':>8}"
    )
    print(header)
    print("-" * len(header))
    for size_mb, grpc_rates, tcp_rates in results:
        g_med, t_med = statistics.median(grpc_rates), statistics.median(tcp_rates)
        print(
            f"{size_mb:>4} MB | {max(grpc_rates):>10.0f} {g_med:>10.0f} | "
            f"{max(tcp_rates):>10.0f} {t_med:>10.0f} | {g_med / t_med:>8.2f}"
        )
    print(f"peak RSS of this process: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
