"""The real network: a :class:`~fedledger.gossip.transport.Transport` over grpc.aio (HTTP/2, TCP).

Each node runs one gRPC server and keeps one lazily created channel per peer it talks to. The
service carries raw bytes, no protobuf (so no generated code and no protoc step)::

    service fedledger.Node {
      rpc Deliver(frame bytes) returns (empty bytes);          // unary-unary
      rpc Fetch(request bytes) returns (stream chunk bytes);   // unary-stream
    }

* ``send`` is one ``Deliver`` call whose deadline is ``timeout``. The server awaits the
  handler's ``on_frame`` before answering, so a send that returns means the peer has handled
  the frame (and a peer too slow to handle it in time looks unavailable). An exception raised by
  ``on_frame`` is logged by the server and the call still succeeds: it never reaches the sender
  and never stops the server.
* ``fetch`` is one ``Fetch`` call with no overall deadline: ``timeout`` applies to each chunk
  (a peer that stalls that long between two chunks is given up on and the call is cancelled).
  The server forwards the chunks ``on_fetch`` yields (splitting any larger than
  ``chunk_bytes``) and gRPC flow control paces it to the reader, so neither side ever holds a
  whole blob: a 100 MB blob goes through in about ``chunk_bytes``-sized pieces.

gRPC errors are translated at this boundary (the original is kept as ``__cause__``):

============================================  =================================================
gRPC status                                   raised
============================================  =================================================
UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED     :class:`~fedledger.errors.PeerUnavailable`
NOT_FOUND, PERMISSION_DENIED (fetch only)     :class:`~fedledger.errors.FetchRefused` (reason =
                                              the status details)
RESOURCE_EXHAUSTED (message over the limit)   :class:`~fedledger.errors.TransportError`
anything else (INTERNAL, UNIMPLEMENTED, ...)  :class:`~fedledger.errors.TransportError`
============================================  =================================================

On the server side, ``on_fetch`` raising :class:`~fedledger.errors.FetchRefused` aborts the call
with NOT_FOUND and the reason as details; raising anything else aborts it with INTERNAL (the
exception is logged, its text is not sent to the peer).

Hostile peers (see :class:`ServerLimits`): the server runs at most ``max_concurrent_rpcs``
calls and ``max_concurrent_fetches`` blob streams at once, each HTTP/2 connection at most
``max_concurrent_streams`` streams; every remote host (or connection) has a token bucket of
frames and one of bytes (:class:`fedledger.gossip.limits.RateLimiter`, at most ``max_peers``
of them, least recently used evicted). A call over any limit is aborted with
RESOURCE_EXHAUSTED before the handler sees it (so before any parsing or signature check);
:attr:`GrpcTransport.refused` counts them by reason. The client dials only endpoints that
:func:`fedledger.gossip.endpoints.parse_endpoint` accepts (``host:port``), through the
``dns:///`` resolver so that no endpoint is ever read as a ``unix:`` (or other) target; any
other endpoint raises :class:`fedledger.gossip.endpoints.InvalidEndpoint` (a
:class:`~fedledger.errors.PeerUnavailable`) without dialling.

The server binds only to ``host`` (``127.0.0.1`` by default, never all interfaces unless you
pass ``0.0.0.0`` or ``::`` yourself) and without ``SO_REUSEPORT``, so two nodes can never share
a port. There is no TLS: authenticity comes from the signed frames and content-addressed blobs
of the layers above.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

# gRPC's C core logs routine events (a peer's GOAWAY when it shuts down) to stderr at INFO;
# keep its errors only, unless the user asked for more.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc
import grpc.aio

from fedledger.errors import ConfigError, FetchRefused, PeerUnavailable, TransportError
from fedledger.gossip.endpoints import parse_endpoint
from fedledger.gossip.limits import RateLimiter
from fedledger.gossip.transport import DEFAULT_CHUNK_BYTES, DEFAULT_MAX_FRAME_BYTES, Handler

__all__ = ["GRPC_MESSAGE_OVERHEAD", "SERVICE", "GrpcTransport", "ServerLimits"]

logger = logging.getLogger(__name__)

SERVICE = "fedledger.Node"
"""The gRPC service name."""
_DELIVER = f"/{SERVICE}/Deliver"
_FETCH = f"/{SERVICE}/Fetch"

GRPC_MESSAGE_OVERHEAD = 4096
"""Slack added to ``max(max_frame_bytes, chunk_bytes)`` for gRPC's message size limits."""

_UNAVAILABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
_REFUSED = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED})

GrpcOption = tuple[str, Any]


@dataclass(frozen=True, kw_only=True)
class ServerLimits:
    """What one node serves at once and per remote peer (all checked before the handler).

    The defaults fit a task of a few dozen members flooding frames on one machine (where all
    peers share the host 127.0.0.1: set ``per_connection`` there, or raise the rates).
    """

    max_concurrent_rpcs: int = 128
    """Calls (frames and fetches) served at once; gRPC refuses more (RESOURCE_EXHAUSTED)."""
    max_concurrent_streams: int = 100
    """Streams one HTTP/2 connection may have open (``grpc.max_concurrent_streams``; 100 is
    HTTP/2's recommended minimum). A client that opens more before it has read the server's
    SETTINGS has the excess refused (RST_STREAM REFUSED_STREAM, seen as PeerUnavailable), and
    the transports of one process share connections, so keep it above a node's burst of
    concurrent sends to one peer."""
    max_concurrent_fetches: int = 32
    """Blob streams served at once (a trickling reader holds one for its whole duration)."""
    frames_per_second: float = 200.0
    """Calls a remote peer may make per second, sustained (frames and fetch requests)."""
    burst_frames: float = 1000.0
    """Calls a remote peer may make at once."""
    bytes_per_second: float = float(16 << 20)
    """Frame bytes a remote peer may send per second, sustained."""
    burst_bytes: float = float(64 << 20)
    """Frame bytes a remote peer may send at once (at least the frame limit)."""
    max_peers: int = 1024
    """Remote peers tracked (least recently used forgotten): the rate table's bound."""
    per_connection: bool = False
    """Rate-limit each connection (``ip:port``) instead of each remote host (``ip``)."""

    def __post_init__(self) -> None:
        for name in ("max_concurrent_rpcs", "max_concurrent_streams", "max_concurrent_fetches",
                     "max_peers"):  # fmt: skip
            _positive_int(getattr(self, name), f"limits.{name}")
        for name in ("frames_per_second", "burst_frames", "bytes_per_second", "burst_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"must be a number > 0, got {value!r}", field=f"limits.{name}")


def _peer_key(peer: str, *, per_connection: bool) -> str:
    """``"ipv4:1.2.3.4:567"`` -> ``"1.2.3.4"`` (or the whole string, per connection)."""
    if per_connection:
        return peer
    scheme, _, rest = peer.partition(":")
    if scheme in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0] or rest
    return peer


def _format_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be an int >= 1, got {value!r}", field=name)
    return value


class GrpcTransport:
    """One node's gRPC endpoint (see the module docstring).

    ``port=0`` lets the OS pick a free port; :attr:`endpoint` is ``"host:port"`` once
    :meth:`start` has bound it. ``options`` are extra gRPC channel arguments applied to the
    server and to every channel, overriding the defaults of the same name (message size
    limits, keepalive, reconnect backoff, ``grpc.so_reuseport=0``).

    A transport need not be started to send or fetch (a pure client); a closed one can do
    neither. Use it from one event loop.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        options: Sequence[GrpcOption] = (),
        limits: ServerLimits | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ConfigError(f"must be a non-empty str, got {host!r}", field="host")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"must be an int in [0, 65535], got {port!r}", field="port")
        self._host = host
        self._port = port
        self.max_frame_bytes = _positive_int(max_frame_bytes, "max_frame_bytes")
        self.chunk_bytes = _positive_int(chunk_bytes, "chunk_bytes")
        self.limits = limits if limits is not None else ServerLimits()
        if not isinstance(self.limits, ServerLimits):
            raise ConfigError(f"expected ServerLimits, got {limits!r}", field="limits")
        self._frame_quota: RateLimiter[str] = RateLimiter(
            rate=self.limits.frames_per_second,
            burst=self.limits.burst_frames,
            max_keys=self.limits.max_peers,
        )
        self._byte_quota: RateLimiter[str] = RateLimiter(
            rate=self.limits.bytes_per_second,
            burst=max(self.limits.burst_bytes, float(self.max_frame_bytes)),
            max_keys=self.limits.max_peers,
        )
        self._fetches = 0
        self.refused: Counter[str] = Counter()
        """Calls refused with RESOURCE_EXHAUSTED, by reason (``"frames"``, ``"bytes"``,
        ``"fetches"``, ``"size"``): for counters and tests."""
        message_limit = max(self.max_frame_bytes, self.chunk_bytes) + GRPC_MESSAGE_OVERHEAD
        common: dict[str, Any] = {
            "grpc.max_receive_message_length": message_limit,
            "grpc.max_send_message_length": message_limit,
        }
        extra = dict(options)
        self._server_options = list(
            {
                **common,
                "grpc.so_reuseport": 0,
                "grpc.max_concurrent_streams": self.limits.max_concurrent_streams,
                # Ping idle clients every minute; tolerate client pings every 10 s.
                "grpc.keepalive_time_ms": 60_000,
                "grpc.keepalive_timeout_ms": 20_000,
                "grpc.keepalive_permit_without_calls": 1,
                "grpc.http2.min_ping_interval_without_data_ms": 10_000,
                **extra,
            }.items()
        )
        self._channel_options = list(
            {
                **common,
                # During calls, ping after 30 s of silence; a dead peer is noticed within 40 s.
                "grpc.keepalive_time_ms": 30_000,
                "grpc.keepalive_timeout_ms": 10_000,
                "grpc.keepalive_permit_without_calls": 0,
                "grpc.http2.max_pings_without_data": 0,
                # A peer that restarts is retried quickly instead of after minutes of backoff.
                # (Not "grpc.min_reconnect_backoff_ms": gRPC core uses it as the minimum
                # connect timeout, and a small one fails connections under load.)
                "grpc.initial_reconnect_backoff_ms": 100,
                "grpc.max_reconnect_backoff_ms": 2_000,
                **extra,
            }.items()
        )
        self._handler: Handler | None = None
        self._server: grpc.aio.Server | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._started = False
        self._closed = False

    # -- properties --------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``"host:port"`` where peers reach this node.

        Raises :class:`TransportError` if the port is not known yet (``port=0`` before
        :meth:`start`).
        """
        if self._port == 0:
            raise TransportError("the endpoint of a port-0 transport is known after start()")
        return _format_endpoint(self._host, self._port)

    def dialable(self, endpoint: str) -> str:
        """``host:port`` only (:func:`fedledger.gossip.endpoints.parse_endpoint`)."""
        return parse_endpoint(endpoint)

    @property
    def host(self) -> str:
        """The address the server binds to."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start` if the OS is to pick it)."""
        return self._port

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # -- server ------------------------------------------------------------------------------

    async def start(self, handler: Handler) -> None:
        """Bind ``host:port`` and serve ``handler``.

        Raises :class:`TransportError` if already started, closed, or the address cannot be
        bound (port in use, host not local).
        """
        if self._closed:
            raise TransportError("transport is closed")
        if self._started:
            raise TransportError("transport is already started")
        self._started = True
        self._handler = handler
        server = grpc.aio.server(
            options=self._server_options,
            maximum_concurrent_rpcs=self.limits.max_concurrent_rpcs,
        )
        methods = {
            "Deliver": grpc.unary_unary_rpc_method_handler(self._serve_deliver),
            "Fetch": grpc.unary_stream_rpc_method_handler(self._serve_fetch),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
        address = _format_endpoint(self._host, self._port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as e:
            await server.stop(None)
            raise TransportError(f"cannot bind {address}: {e}") from e
        if port == 0:  # older grpc versions report failure this way
            await server.stop(None)
            raise TransportError(f"cannot bind {address}")
        self._port = port
        self._server = server
        await server.start()

    def _over_quota(self, context: grpc.aio.ServicerContext, size: int) -> str | None:
        """Spend the remote peer's tokens for one call of ``size`` bytes; the reason to refuse
        it (the bucket that ran dry), or None."""
        key = _peer_key(context.peer() or "", per_connection=self.limits.per_connection)
        now = asyncio.get_running_loop().time()
        if not self._frame_quota.allow(key, now=now):
            return "frames"
        if size and not self._byte_quota.allow(key, now=now, cost=float(size)):
            return "bytes"
        return None

    async def _refuse(self, context: grpc.aio.ServicerContext, reason: str, text: str) -> None:
        self.refused[reason] += 1
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, text)

    async def _serve_deliver(self, frame: bytes, context: grpc.aio.ServicerContext) -> bytes:
        over = self._over_quota(context, len(frame))
        if over is not None:
            await self._refuse(context, over, f"over the {over} rate limit")
        if len(frame) > self.max_frame_bytes:
            self.refused["size"] += 1
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"frame of {len(frame)} bytes exceeds the limit of {self.max_frame_bytes}",
            )
        handler = self._handler
        if handler is None:  # closing
            await context.abort(grpc.StatusCode.UNAVAILABLE, "node is shutting down")
            raise AssertionError("unreachable")  # pragma: no cover (abort raises)
        try:
            await handler.on_frame(frame)
        except Exception:
            logger.exception("on_frame raised; frame discarded")
        return b""

    async def _serve_fetch(self, request: bytes, context: grpc.aio.ServicerContext) -> None:
        handler = self._handler
        if handler is None:  # closing
            await context.abort(grpc.StatusCode.UNAVAILABLE, "node is shutting down")
            return  # pragma: no cover (abort raises)
        over = self._over_quota(context, len(request))
        if over is not None:
            await self._refuse(context, over, f"over the {over} rate limit")
        if self._fetches >= self.limits.max_concurrent_fetches:
            await self._refuse(context, "fetches", "too many fetches in progress")
        self._fetches += 1
        try:
            await self._stream_blob(handler, request, context)
        finally:
            self._fetches -= 1

    async def _stream_blob(
        self, handler: Handler, request: bytes, context: grpc.aio.ServicerContext
    ) -> None:
        """Write the chunks ``on_fetch`` yields (``context.write``, not a generator handler: a
        client that goes away cancels this coroutine where it waits, and ``on_fetch`` is closed
        at once, never left suspended until the garbage collector finds it)."""
        size = self.chunk_bytes
        reason: str | None = None
        failed = False
        chunks: AsyncIterator[bytes] | None = None
        try:
            chunks = handler.on_fetch(request)
            async for chunk in chunks:
                if len(chunk) <= size:
                    await context.write(chunk if type(chunk) is bytes else bytes(chunk))
                else:
                    view = memoryview(chunk)
                    for offset in range(0, len(view), size):
                        await context.write(bytes(view[offset : offset + size]))
        except FetchRefused as e:
            reason = str(e) or "refused"
        except Exception:
            logger.exception("on_fetch raised")
            failed = True
        finally:
            # Release the handler's resources (open files...) now, even when the client
            # went away mid-stream.
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    logger.exception("closing on_fetch raised")
        # Abort outside the except blocks, so the abort's own exception is not chained.
        if reason is not None:
            await context.abort(grpc.StatusCode.NOT_FOUND, reason)
        if failed:
            await context.abort(grpc.StatusCode.INTERNAL, "the peer failed to serve the blob")

    # -- client ------------------------------------------------------------------------------

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        if self._closed:
            raise TransportError("transport is closed")
        channel = self._channels.get(endpoint)
        if channel is None:
            # InvalidEndpoint (a PeerUnavailable) for anything but host:port; dialled through
            # the DNS resolver so that no endpoint can name a unix:, vsock:... target.
            target = "dns:///" + parse_endpoint(endpoint)
            try:
                channel = grpc.aio.insecure_channel(target, options=self._channel_options)
            except Exception as e:  # e.g. a malformed target
                raise PeerUnavailable(f"cannot open a channel to {endpoint!r}: {e}") from e
            self._channels[endpoint] = channel
        return channel

    async def send(self, endpoint: str, frame: bytes, *, timeout: float) -> None:
        """Deliver ``frame`` to ``endpoint``'s ``on_frame``, within ``timeout`` seconds.

        Raises :class:`TransportError` if the frame exceeds :attr:`max_frame_bytes` (nothing is
        sent), the peer's limit is lower, the peer refuses it over its limits
        (RESOURCE_EXHAUSTED), or this transport is closed; :class:`PeerUnavailable` if the peer
        cannot be reached or does not handle the frame in time;
        :class:`~fedledger.gossip.endpoints.InvalidEndpoint` (a :class:`PeerUnavailable`) if
        ``endpoint`` is not ``host:port`` (nothing is dialled).
        """
        if len(frame) > self.max_frame_bytes:
            raise TransportError(
                f"frame of {len(frame)} bytes exceeds the limit of {self.max_frame_bytes} bytes"
            )
        deliver = self._channel(endpoint).unary_unary(_DELIVER)
        try:
            await deliver(bytes(frame), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise _translate(e, endpoint, fetch=False) from e

    async def fetch(self, endpoint: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        """Stream the chunks of the blob ``request`` asks ``endpoint`` for, as they arrive.

        Raises :class:`FetchRefused` (with the peer's reason) if the peer refuses,
        :class:`PeerUnavailable` if it cannot be reached or sends nothing for ``timeout``
        seconds between two chunks (the call is then cancelled), :class:`TransportError` if
        its handler fails, it refuses over its limits, or this transport is closed;
        :class:`~fedledger.gossip.endpoints.InvalidEndpoint` if ``endpoint`` is not
        ``host:port``. Closing the iterator early (``aclose()``,
        or leaving an ``async for`` whose iterator is then collected) cancels the call.
        """
        call = self._channel(endpoint).unary_stream(_FETCH)(bytes(request))
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                    # cancellation that arrives as the read completes, leaving the call open.
                    async with asyncio.timeout(timeout):
                        chunk = await call.read()
                except TimeoutError as e:
                    call.cancel()
                    raise PeerUnavailable(
                        f"peer {endpoint} sent nothing for {timeout} s during a fetch"
                    ) from e
                except grpc.aio.AioRpcError as e:
                    raise _translate(e, endpoint, fetch=True) from e
                if chunk is grpc.aio.EOF:
                    return
                yield chunk
        finally:
            call.cancel()  # no-op once the call is done

    # -- shutdown ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the server (cancelling calls in progress) and close every channel. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._handler = None
        server, self._server = self._server, None
        channels, self._channels = list(self._channels.values()), {}
        if server is not None:
            await server.stop(None)
        for channel in channels:
            await channel.close()


def _translate(error: grpc.aio.AioRpcError, endpoint: str, *, fetch: bool) -> TransportError:
    code = error.code()
    details = error.details() or ""
    if code in _UNAVAILABLE:
        return PeerUnavailable(f"peer {endpoint} unavailable ({code.name}): {details}")
    if fetch and code in _REFUSED:
        return FetchRefused(details)
    return TransportError(f"peer {endpoint} failed ({code.name}): {details}")
