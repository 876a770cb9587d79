"""The transport interface: how a node's bytes reach another node.

A transport moves two things between endpoints and nothing else:

* **frames**: small signed gossip packets, one-way (``send``), delivered to the receiver's
  :meth:`Handler.on_frame`;
* **blobs**: large content-addressed byte strings, streamed in chunks (``fetch``): the client
  sends a signed request, the server's :meth:`Handler.on_fetch` yields the chunks.

It knows nothing of signatures, CIDs or rounds: those live in the layers above. Two
implementations share one test suite (tests/gossip/test_transport_suite.py):
:class:`fedledger.gossip.memory.MemoryTransport` (in-process, with injectable drops, delays,
duplicates and reordering) and :class:`fedledger.gossip.grpc_transport.GrpcTransport`
(grpc.aio over TCP).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

DEFAULT_CHUNK_BYTES = 1 << 20
"""Blob chunk size on the wire (1 MiB)."""

DEFAULT_MAX_FRAME_BYTES = 1 << 20
"""Largest frame a transport accepts (1 MiB): gossip frames are small, models travel as blobs."""


class Handler(Protocol):
    """What a node gives its transport to serve requests from peers."""

    async def on_frame(self, frame: bytes) -> None:
        """A frame arrived. Must not raise for bad input: reject and log instead."""

    def on_fetch(self, request: bytes) -> AsyncIterator[bytes]:
        """Serve a blob request: yield its chunks in order.

        Raise :class:`fedledger.errors.FetchRefused` (before the first chunk) to refuse.
        """
        ...


class Transport(Protocol):
    """One node's endpoint on a network."""

    @property
    def endpoint(self) -> str:
        """Where peers reach this node (``host:port`` for gRPC, a name in memory)."""
        ...

    def dialable(self, endpoint: str) -> str:
        """``endpoint`` in canonical form, if this transport would dial it; raises
        :class:`fedledger.errors.TransportError` otherwise (a ``unix:`` path, a URL, ...)."""
        ...

    async def start(self, handler: Handler) -> None:
        """Begin serving ``handler`` at :attr:`endpoint`."""

    async def send(self, endpoint: str, frame: bytes, *, timeout: float) -> None:
        """Deliver one frame to the peer at ``endpoint``.

        Raises :class:`fedledger.errors.PeerUnavailable` when the peer cannot be reached or does
        not accept the frame within ``timeout`` seconds. A frame larger than the transport's
        frame limit raises :class:`fedledger.errors.TransportError` without sending.
        """

    def fetch(self, endpoint: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        """Stream the chunks of the blob that ``request`` asks the peer at ``endpoint`` for.

        Raises :class:`fedledger.errors.FetchRefused` if the peer refuses, and
        :class:`fedledger.errors.PeerUnavailable` if it cannot be reached or stalls for more
        than ``timeout`` seconds between chunks.
        """
        ...

    async def close(self) -> None:
        """Stop serving and release every connection. Idempotent."""
