"""An in-process network of transports, with injectable faults.

:class:`MemoryNetwork` connects any number of :class:`MemoryTransport` endpoints inside one
asyncio event loop: fast unit tests, and simulations of hundreds of nodes in one process. It
behaves like a lossy datagram network for frames and like a reliable stream for blobs::

    net = MemoryNetwork(seed=7, drop=0.1, delay=(0.0, 0.05))
    a, b = net.transport("a"), net.transport("b")
    await a.start(handler_a)
    await b.start(handler_b)
    await a.send("b", b"hello", timeout=1.0)   # returns at once; delivered later (or never)
    await net.settle()                          # wait until nothing is in flight

Faults apply to **frames** only, each decided by the network's own ``random.Random(seed)``, so
a run is reproducible for a given seed and the same sequence of calls:

* ``drop``: the frame vanishes with this probability; ``send`` still returns normally (the
  sender of a datagram cannot know it was lost);
* ``duplicate``: the frame is delivered twice with this probability;
* ``delay``: every delivered copy waits ``uniform(lo, hi)`` seconds on the running loop's
  clock, so random delays reorder frames; with no delay frames arrive in send order;
* :meth:`MemoryNetwork.partition` / :meth:`MemoryNetwork.heal`: frames between two endpoints
  (both ways) silently vanish, and a fetch between them raises
  :class:`~fedledger.errors.PeerUnavailable` at once (a real network would wait out the
  timeout; a simulation need not);
* :meth:`MemoryNetwork.kill` / :meth:`MemoryNetwork.revive`: a killed endpoint is unreachable
  (``send`` and ``fetch`` to it raise :class:`~fedledger.errors.PeerUnavailable`, frames in
  flight to it are lost, a fetch it is serving fails) and whatever it sends vanishes, as from a
  crashed process. Its transport and handler stay in place, so ``revive`` brings it back.

Delivery is always asynchronous: ``send`` schedules the receiver's ``on_frame`` as a new task
and returns; an exception raised by ``on_frame`` is logged and never reaches the sender. Blobs
are streamed by iterating the server's ``on_fetch`` chunk by chunk (never joined); every frame,
request and chunk crossing the network is ``bytes`` (a mutable buffer passed in is copied), so
no two nodes share a mutable buffer.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fedledger.errors import ConfigError, FetchRefused, PeerUnavailable, TransportError
from fedledger.gossip.transport import DEFAULT_MAX_FRAME_BYTES, Handler

__all__ = ["MemoryNetwork", "MemoryStats", "MemoryTransport"]

logger = logging.getLogger(__name__)


@dataclass
class MemoryStats:
    """Counters of one :class:`MemoryNetwork` (all cumulative since its creation)."""

    frames_sent: int = 0
    """Frames accepted by ``send`` (calls that did not raise)."""
    frames_delivered: int = 0
    """Frames handed to a receiver's ``on_frame`` (a duplicated frame counts twice)."""
    frames_dropped: int = 0
    """Frames lost: random drop, partition, killed sender, or receiver gone before delivery."""
    frames_duplicated: int = 0
    """Frames scheduled for delivery twice."""
    bytes_sent: int = 0
    """Total size of the frames counted in :attr:`frames_sent`."""
    bytes_delivered: int = 0
    """Total size of the frames counted in :attr:`frames_delivered`."""
    fetches: int = 0
    """Fetches that reached a serving peer."""
    fetch_bytes: int = 0
    """Total size of the blob chunks streamed by fetches."""


def _check_probability(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"must be a probability in [0, 1], got {value!r}", field=name)
    return float(value)


class MemoryNetwork:
    """A set of in-process endpoints with reproducible faults (see the module docstring).

    The network binds to no event loop when created; it uses the running loop of whoever sends.
    All its transports must be used from one loop at a time.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        drop: float = 0.0,
        duplicate: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.drop = _check_probability(drop, "drop")
        self.duplicate = _check_probability(duplicate, "duplicate")
        try:
            lo, hi = (float(x) for x in delay)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"must be a pair (lo, hi), got {delay!r}", field="delay") from e
        if not 0.0 <= lo <= hi:
            raise ConfigError(f"must satisfy 0 <= lo <= hi, got {delay!r}", field="delay")
        self.delay = (lo, hi)
        if isinstance(max_frame_bytes, bool) or not isinstance(max_frame_bytes, int):
            raise ConfigError(f"must be an int, got {max_frame_bytes!r}", field="max_frame_bytes")
        if max_frame_bytes < 1:
            raise ConfigError(f"must be >= 1, got {max_frame_bytes}", field="max_frame_bytes")
        self.max_frame_bytes = max_frame_bytes
        self.stats = MemoryStats()
        self._rng = random.Random(seed)
        self._nodes: dict[str, MemoryTransport] = {}
        self._dead: set[str] = set()
        self._partitions: set[frozenset[str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._idle_waiters: list[asyncio.Future[None]] = []

    # -- endpoints ---------------------------------------------------------------------------

    def transport(self, endpoint: str) -> MemoryTransport:
        """A new transport at ``endpoint`` (any non-empty name).

        Raises :class:`TransportError` if a transport that is not closed already holds that
        name; a closed one's name can be reused (a node restarting).
        """
        if not isinstance(endpoint, str) or not endpoint:
            raise ConfigError(f"must be a non-empty str, got {endpoint!r}", field="endpoint")
        current = self._nodes.get(endpoint)
        if current is not None and not current.closed:
            raise TransportError(f"endpoint {endpoint!r} is already in use")
        node = MemoryTransport(self, endpoint)
        self._nodes[endpoint] = node
        return node

    @property
    def endpoints(self) -> list[str]:
        """The endpoints currently serving (started, not closed), killed ones included."""
        return [e for e, n in self._nodes.items() if n.serving]

    # -- fault controls ----------------------------------------------------------------------

    def partition(self, a: str, b: str) -> None:
        """Cut the link between ``a`` and ``b`` (both directions) until :meth:`heal`."""
        self._partitions.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        """Restore the link between ``a`` and ``b`` (no-op if it was not cut)."""
        self._partitions.discard(frozenset((a, b)))

    def heal_all(self) -> None:
        """Restore every cut link."""
        self._partitions.clear()

    def partitioned(self, a: str, b: str) -> bool:
        """Whether the link between ``a`` and ``b`` is cut."""
        return frozenset((a, b)) in self._partitions

    def kill(self, endpoint: str) -> None:
        """Make ``endpoint`` unreachable, as if its process crashed (until :meth:`revive`)."""
        self._dead.add(endpoint)

    def revive(self, endpoint: str) -> None:
        """Undo :meth:`kill` (no-op if ``endpoint`` is alive)."""
        self._dead.discard(endpoint)

    def is_alive(self, endpoint: str) -> bool:
        """Whether a peer could reach ``endpoint`` now (serving and not killed)."""
        return self._live(endpoint) is not None

    # -- waiting -----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Frames scheduled (waiting out a delay, or being handled) but not yet finished."""
        return self._in_flight

    async def settle(self, timeout: float | None = None) -> None:
        """Wait until no frame is in flight (every scheduled ``on_frame`` has returned).

        Frames sent by handlers while settling are waited for too. Raises ``TimeoutError``
        after ``timeout`` seconds if the network does not become idle.
        """
        if self._in_flight == 0:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(waiter)
        finally:
            if waiter in self._idle_waiters:
                self._idle_waiters.remove(waiter)

    # -- internals ---------------------------------------------------------------------------

    def _live(self, endpoint: str) -> MemoryTransport | None:
        node = self._nodes.get(endpoint)
        if node is None or not node.serving or endpoint in self._dead:
            return None
        return node

    def _transmit(self, source: str, target: MemoryTransport, frame: bytes) -> None:
        """Apply the faults to one frame and schedule its deliveries."""
        stats = self.stats
        stats.frames_sent += 1
        stats.bytes_sent += len(frame)
        if (
            source in self._dead
            or self.partitioned(source, target.endpoint)
            or (self.drop > 0.0 and self._rng.random() < self.drop)
        ):
            stats.frames_dropped += 1
            return
        copies = 1
        if self.duplicate > 0.0 and self._rng.random() < self.duplicate:
            copies = 2
            stats.frames_duplicated += 1
        loop = asyncio.get_running_loop()
        lo, hi = self.delay
        for _ in range(copies):
            self._in_flight += 1
            wait = self._rng.uniform(lo, hi) if hi > 0.0 else 0.0
            if wait > 0.0:
                loop.call_later(wait, self._spawn, target, frame)
            else:
                self._spawn(target, frame)

    def _spawn(self, target: MemoryTransport, frame: bytes) -> None:
        # A fresh context: the sender's context variables do not leak into the receiver.
        task = asyncio.get_running_loop().create_task(
            self._deliver(target, frame), context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, target: MemoryTransport, frame: bytes) -> None:
        try:
            handler = target.handler
            if handler is None or self._live(target.endpoint) is not target:
                self.stats.frames_dropped += 1
                return
            self.stats.frames_delivered += 1
            self.stats.bytes_delivered += len(frame)
            try:
                await handler.on_frame(frame)
            except Exception:
                logger.exception("on_frame of %s raised; frame discarded", target.endpoint)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)


class MemoryTransport:
    """One endpoint of a :class:`MemoryNetwork` (create it with :meth:`MemoryNetwork.transport`).

    Implements :class:`fedledger.gossip.transport.Transport`. ``send`` returns as soon as the
    frame is scheduled (its ``timeout`` is unused: nothing can block); ``fetch`` applies
    ``timeout`` to each chunk of the server's ``on_fetch``. A transport need not be started to
    send or fetch, but a closed one can do neither.
    """

    def __init__(self, network: MemoryNetwork, endpoint: str) -> None:
        self._network = network
        self._endpoint = endpoint
        self._handler: Handler | None = None
        self._closed = False

    @property
    def endpoint(self) -> str:
        """This node's name on the network."""
        return self._endpoint

    def dialable(self, endpoint: str) -> str:
        """A name on the in-memory network: a non-empty, printable string."""
        if not endpoint or len(endpoint) > 256 or not endpoint.isprintable():
            raise TransportError(f"not a name on the in-memory network: {endpoint[:60]!r}")
        return endpoint

    @property
    def network(self) -> MemoryNetwork:
        """The network this transport belongs to."""
        return self._network

    @property
    def handler(self) -> Handler | None:
        """The handler given to :meth:`start`, until :meth:`close`."""
        return self._handler

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def serving(self) -> bool:
        """Started and not closed (killed or not)."""
        return self._handler is not None and not self._closed

    async def start(self, handler: Handler) -> None:
        """Serve ``handler`` at :attr:`endpoint`. Raises TransportError if started or closed."""
        if self._closed:
            raise TransportError(f"transport {self._endpoint!r} is closed")
        if self._handler is not None:
            raise TransportError(f"transport {self._endpoint!r} is already started")
        self._handler = handler

    async def send(self, endpoint: str, frame: bytes, *, timeout: float) -> None:
        """Schedule ``frame`` for delivery to ``endpoint`` (subject to the network's faults).

        Raises :class:`TransportError` if the frame exceeds the network's frame limit or this
        transport is closed, :class:`PeerUnavailable` if ``endpoint`` is unknown, not started,
        closed or killed. A dropped frame raises nothing.
        """
        self._check_open()
        net = self._network
        if len(frame) > net.max_frame_bytes:
            raise TransportError(
                f"frame of {len(frame)} bytes exceeds the limit of {net.max_frame_bytes} bytes"
            )
        target = net._live(endpoint)
        if target is None:
            raise PeerUnavailable(f"peer {endpoint!r} is unreachable")
        net._transmit(self._endpoint, target, bytes(frame))

    async def fetch(self, endpoint: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        """Stream the chunks the peer's ``on_fetch`` yields for ``request``.

        Raises :class:`PeerUnavailable` if the peer is unreachable (unknown, not serving,
        killed, partitioned from us), goes away mid-stream, or takes more than ``timeout``
        seconds to produce a chunk; :class:`FetchRefused` (with the peer's reason) if its
        handler refuses; :class:`TransportError` if its handler fails in any other way.
        """
        self._check_open()
        net = self._network
        target = net._live(endpoint)
        if target is None or self._endpoint in net._dead:
            raise PeerUnavailable(f"peer {endpoint!r} is unreachable")
        if net.partitioned(self._endpoint, endpoint):
            raise PeerUnavailable(f"peer {endpoint!r} is partitioned from {self._endpoint!r}")
        handler = target.handler
        assert handler is not None  # _live only returns serving transports
        net.stats.fetches += 1
        try:
            chunks = handler.on_fetch(bytes(request))
        except FetchRefused as e:
            raise FetchRefused(str(e)) from e
        except Exception as e:
            raise TransportError(f"peer {endpoint!r} failed to serve the fetch: {e!r}") from e
        iterator = aiter(chunks)
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for runs the handler's
                    # step in a task of its own and can swallow the consumer's cancellation
                    # when that step completes at the same moment; the handler then stays
                    # suspended, never closed.
                    async with asyncio.timeout(timeout):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                except TimeoutError as e:
                    raise PeerUnavailable(
                        f"peer {endpoint!r} stalled for more than {timeout} s"
                    ) from e
                except FetchRefused as e:
                    raise FetchRefused(str(e)) from e
                except Exception as e:
                    raise TransportError(
                        f"peer {endpoint!r} failed to serve the fetch: {e!r}"
                    ) from e
                if net._live(endpoint) is not target or self._closed:
                    raise PeerUnavailable(f"peer {endpoint!r} went away during the fetch")
                if net.partitioned(self._endpoint, endpoint):
                    raise PeerUnavailable(f"peer {endpoint!r} got partitioned during the fetch")
                data = bytes(chunk)
                net.stats.fetch_bytes += len(data)
                yield data
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    logger.exception("closing on_fetch of %s raised", endpoint)

    async def close(self) -> None:
        """Stop serving: the endpoint becomes unreachable and its name reusable. Idempotent."""
        self._closed = True
        self._handler = None

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"transport {self._endpoint!r} is closed")
