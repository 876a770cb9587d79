"""Fetching one blob from several peers, against peers that trickle, stall or lie.

:func:`fetch_blob` asks up to ``policy.parallel`` sources at once for the same CID; the first
source whose bytes hash to the CID wins, the others are cancelled. With ``policy.hedge`` set,
the sources are asked one at a time: the next one only when a source failed, or when the
fetch has run ``hedge`` seconds more without a result (a hedged request: the honest case costs
one request, a slow source costs ``hedge`` seconds). Each source streams into its
own :meth:`BlobStore.writer <fedledger.gossip.blobs.BlobStore.writer>`, which refuses the
stream as soon as it passes ``max_bytes`` and stores nothing that does not hash to the CID. A
source fails when it

* refuses (:class:`~fedledger.errors.FetchRefused`), cannot be reached, or sends nothing for
  ``policy.stall`` seconds between two chunks (:class:`~fedledger.errors.PeerUnavailable`);
* is **too slow**: after ``policy.grace`` seconds, it must have sent ``policy.min_rate`` bytes
  per second since its stream began. This is enforced between chunks too: the wait for the
  next chunk ends when the rate can no longer be met, so a peer trickling a byte at a time
  holds a node for about ``grace`` seconds, not its stall timeout per byte;
* sends bytes that are too many or do not hash to the CID
  (:class:`~fedledger.errors.BlobMismatch`).

A failed source is replaced by the next one not tried yet. The whole fetch ends after
``policy.deadline`` seconds whatever happens. When no source delivers,
:class:`FetchFailed` is raised; its :attr:`~FetchFailed.reason` says why (``"deadline"``,
``"no sources"``, or ``"all sources failed"``) and :attr:`~FetchFailed.failures` why each
source failed.

Typical use by a node (the request is bound to each source: build one per source)::

    sources = [Source(endpoint=endpoints[a], request=make_fetch_request(..., to=a), name=a)
               for a in addresses]
    try:
        result = await fetch_blob(transport, store, cid=cid, sources=sources,
                                  max_bytes=encoded_size(spec), policy=FetchPolicy())
    except FetchFailed as exc:
        log.info("fetch %s failed: %s", cid, exc)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from fedledger.errors import (
    BlobError,
    BlobMismatch,
    ConfigError,
    FetchRefused,
    PeerUnavailable,
    TransportError,
)
from fedledger.gossip.blobs import BlobStore
from fedledger.gossip.transport import Transport

__all__ = ["FetchFailed", "FetchPolicy", "FetchResult", "Source", "fetch_blob"]


class FetchFailed(TransportError):
    """No source delivered the blob. ``reason``: ``"deadline"`` (the overall deadline passed),
    ``"no sources"``, or ``"all sources failed"``; ``failures``: why each source tried failed
    (``"refused: ..."``, ``"unavailable: ..."``, ``"too slow: ..."``, ``"mismatch: ..."``,
    ``"failed: ..."``, or ``"cancelled at the deadline"``), by source name."""

    def __init__(self, cid: str, reason: str, failures: Mapping[str, str]) -> None:
        self.cid = cid
        self.reason = reason
        self.failures: Mapping[str, str] = MappingProxyType(dict(failures))
        detail = "; ".join(f"{name}: {why}" for name, why in failures.items())
        super().__init__(f"fetch {cid}: {reason}" + (f" ({detail})" if detail else ""))


class _TooSlow(TransportError):
    pass


class _DeadlinePassed(TransportError):
    pass


@dataclass(frozen=True, kw_only=True)
class FetchPolicy:
    """Bounds of one :func:`fetch_blob` (seconds, bytes per second)."""

    deadline: float = 60.0
    """The whole fetch, all sources included, ends after this many seconds."""
    stall: float = 10.0
    """A source that sends nothing for this long between two chunks fails."""
    grace: float = 2.0
    """Seconds a source has before its transfer rate is checked (connection setup, disk)."""
    min_rate: float = float(64 << 10)
    """Bytes per second a source must average from its start, once ``grace`` has passed."""
    parallel: int = 2
    """Sources streaming at once."""
    hedge: float = 0.0
    """When > 0: start with one source and ask one more (up to ``parallel``) after each
    ``hedge`` seconds without a result; 0: ``parallel`` sources at once."""

    def __post_init__(self) -> None:
        for name in ("deadline", "stall", "min_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"must be a number > 0, got {value!r}", field=f"fetch.{name}")
        if (
            isinstance(self.hedge, bool)
            or not isinstance(self.hedge, int | float)
            or (not self.hedge >= 0)
        ):
            raise ConfigError(f"must be a number >= 0, got {self.hedge!r}", field="fetch.hedge")
        if (
            isinstance(self.grace, bool)
            or not isinstance(self.grace, int | float)
            or (not self.grace >= 0)
        ):
            raise ConfigError(f"must be a number >= 0, got {self.grace!r}", field="fetch.grace")
        if (
            isinstance(self.parallel, bool)
            or not isinstance(self.parallel, int)
            or (self.parallel < 1)
        ):
            raise ConfigError(f"must be an int >= 1, got {self.parallel!r}",
                              field="fetch.parallel")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where to ask for a blob: the peer's ``endpoint`` and the (signed, bound) ``request``
    frame for it. ``name`` (the peer's address, say) labels it in results and errors; the
    endpoint by default."""

    endpoint: str
    request: bytes | Callable[[], bytes] = field(repr=False)
    """The frame, or a function that builds it when the source is first asked (signing a
    request for every member up front costs more than most fetches, which need one)."""
    name: str = ""

    def frame(self) -> bytes:
        return self.request() if callable(self.request) else self.request

    @property
    def label(self) -> str:
        return self.name or self.endpoint


@dataclass(frozen=True, kw_only=True)
class FetchResult:
    """A blob fetched and stored: from which source, how many bytes, and who failed first."""

    cid: str
    source: str
    """The label of the source that delivered it (``""`` when the store already held it)."""
    received: int
    failures: Mapping[str, str] = field(default_factory=dict)


async def fetch_blob(
    transport: Transport,
    store: BlobStore,
    *,
    cid: str,
    sources: Sequence[Source],
    max_bytes: int,
    policy: FetchPolicy | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> FetchResult:
    """Fetch ``cid`` from the first of ``sources`` to deliver it, verified, into ``store``.

    See the module docstring. ``on_chunk(n)`` is called for every chunk received (``n``
    bytes), from any source: for byte counters. Returns at once if the store holds the blob.
    Raises :class:`FetchFailed`, or :class:`~fedledger.errors.CodecError` for a malformed CID.
    Cancelling the call cancels every stream and stores nothing.
    """
    policy = policy if policy is not None else FetchPolicy()
    if store.has(cid):
        return FetchResult(cid=cid, source="", received=0)
    if not sources:
        raise FetchFailed(cid, "no sources", {})
    loop = asyncio.get_running_loop()
    end = loop.time() + policy.deadline
    failures: dict[str, str] = {}
    pending = list(sources)
    running: dict[asyncio.Task[int], Source] = {}

    hedged = policy.hedge > 0
    width = 1 if hedged else policy.parallel  # sources that may stream now
    next_hedge = loop.time() + policy.hedge

    def launch() -> None:
        while pending and len(running) < width and loop.time() < end:
            source = pending.pop(0)
            task = loop.create_task(_one(transport, store, cid, source, max_bytes, policy, end,
                                         on_chunk))  # fmt: skip
            running[task] = source

    try:
        launch()
        while running:
            now = loop.time()
            timeout = end - now
            if timeout <= 0:
                break
            if hedged and pending and width < policy.parallel:
                timeout = min(timeout, max(next_hedge - now, 0.0))
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                source = running.pop(task)
                error = task.exception()
                if error is None:
                    return FetchResult(cid=cid, source=source.label, received=task.result(),
                                       failures=MappingProxyType(dict(failures)))  # fmt: skip
                failures[source.label] = _why(error)
            if hedged and not done and loop.time() >= next_hedge and width < policy.parallel:
                width += 1  # the running sources are slow: ask one more
                next_hedge = loop.time() + policy.hedge
            launch()
    finally:
        for task in running:
            task.cancel()
        for task, source in running.items():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            failures.setdefault(source.label, "cancelled at the deadline")
    if running or loop.time() >= end:
        raise FetchFailed(cid, "deadline", failures)
    raise FetchFailed(cid, "all sources failed", failures)


def _why(error: BaseException) -> str:
    if isinstance(error, _TooSlow):
        kind = "too slow"
    elif isinstance(error, _DeadlinePassed):
        return "cancelled at the deadline"
    elif isinstance(error, FetchRefused):
        kind = "refused"
    elif isinstance(error, PeerUnavailable):
        kind = "unavailable"
    elif isinstance(error, BlobMismatch):
        kind = "mismatch"
    else:
        kind = "failed"
    return f"{kind}: {error}"


async def _one(
    transport: Transport,
    store: BlobStore,
    cid: str,
    source: Source,
    max_bytes: int,
    policy: FetchPolicy,
    end: float,
    on_chunk: Callable[[int], None] | None,
) -> int:
    """Stream ``cid`` from one source into a writer; the bytes received. Raises
    TransportError / BlobError (and nothing else a peer can cause)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    stream: AsyncIterator[bytes] = transport.fetch(
        source.endpoint, source.frame(), timeout=policy.stall
    )
    try:
        with store.writer(cid, max_bytes=max_bytes) as writer:
            while True:
                now = loop.time()
                # The latest time the next chunk may come and the rate still be met.
                rate_limit = start + max(policy.grace, writer.received / policy.min_rate)
                wait = min(rate_limit, end) - now
                try:
                    if wait <= 0:
                        raise TimeoutError
                    chunk = await _next_chunk(stream, wait)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if end <= rate_limit:
                        raise _DeadlinePassed("the fetch deadline passed") from None
                    raise _too_slow(writer.received, loop.time() - start, policy) from None
                writer.write(chunk)
                if on_chunk is not None:
                    on_chunk(len(chunk))
            writer.commit()
            return writer.received
    except (TransportError, BlobError):
        raise
    except Exception as exc:  # a transport bug must not escape as something else
        raise TransportError(f"fetch from {source.label} failed: {exc!r}") from exc
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _next_chunk(stream: AsyncIterator[bytes], wait: float) -> bytes:
    """The stream's next chunk within ``wait`` seconds, else TimeoutError. Unlike
    ``asyncio.wait_for``, the step is never left behind unread: when it times out, or this
    fetch is cancelled (another source won), the step is cancelled and whatever it ends with
    (a transport turns the cancellation into its own error) is retrieved."""
    step: asyncio.Future[bytes] = asyncio.ensure_future(anext(stream))
    step.add_done_callback(_retrieve)
    try:
        done, _ = await asyncio.wait({step}, timeout=wait)
    finally:
        if not step.done():
            step.cancel()
    if done:
        return step.result()
    raise TimeoutError


def _retrieve(step: asyncio.Future[bytes]) -> None:
    if not step.cancelled():
        step.exception()  # marks it retrieved: a step given up on has nothing to report


def _too_slow(received: int, elapsed: float, policy: FetchPolicy) -> _TooSlow:
    return _TooSlow(
        f"{received} bytes in {elapsed:.1f} s, below {policy.min_rate:.0f} B/s "
        f"after a grace of {policy.grace} s"
    )
