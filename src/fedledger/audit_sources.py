"""Where ``fedledger audit`` finds a task's blobs when it has nothing but the chain.

The audit looks a blob up by its CID, in order, in

1. local blob stores (``--blobs DIR``, a run directory's node stores);
2. the task's members (:class:`MemberBlobs`): every address that ever joined, at the endpoint
   its latest ``Joined`` event published, asked over gRPC with signed fetch requests bound to
   that member, the chain, the task contract and a short expiry
   (:func:`~fedledger.gossip.messages.make_fetch_request`), from the auditor's own key. A
   member serves an outsider only if the contract's ``can_download`` says so: a public task,
   or a key the owner granted read access (``grant_reader``);
3. an IPFS-compatible HTTP gateway (:class:`GatewayBlobs`: ``GET URL/ipfs/CID``).

Every source's bytes are checked against the CID before use: a member or a gateway that sends
anything else is reported as having sent an altered blob, and the audit looks further.

Both remote sources are synchronous facades: the audit is a plain loop over rounds.
:class:`MemberBlobs` runs its gRPC client in a private event loop on a worker thread, and can
:meth:`~MemberBlobs.prefetch` every CID the audit will need at once (in parallel) before the
rounds are checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Final, Protocol, TypeVar

from fedledger.commit.cid import digest_from_cid
from fedledger.errors import CodecError, ConfigError, MessageError
from fedledger.gossip.blobs import MemoryBlobStore
from fedledger.gossip.fetching import FetchFailed, FetchPolicy, Source, fetch_blob
from fedledger.gossip.identity import Identity
from fedledger.gossip.messages import make_fetch_request
from fedledger.gossip.transport import Transport

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "GatewayBlobs",
    "MemberBlobs",
    "RemoteBlobs",
]

DEFAULT_MAX_BLOB_BYTES: Final = 1 << 30
"""The largest blob fetched while the model's size is unknown (a node's default limit)."""
PARALLEL_FETCHES: Final = 4
"""CIDs fetched from the members at once."""

T = TypeVar("T")


class RemoteBlobs(Protocol):
    """A source of blobs by CID beyond the local stores."""

    name: str
    """What the audit's report calls it (``"members"``, ``"gateway"``)."""

    def prefetch(self, cids: Sequence[str]) -> None:
        """Fetch ``cids`` ahead of :meth:`fetch` (a hint: failures are kept for it)."""
        ...

    def fetch(self, cid: str) -> tuple[bytes | None, str]:
        """``(bytes, "")`` with bytes that hash to ``cid``, or ``(None, why not)``; a why
        that starts with ``"altered"`` when some copy did not hash to it."""
        ...

    def close(self) -> None: ...


class _Loop:
    """A private event loop on a daemon thread: coroutines submitted from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="audit-fetch",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class MemberBlobs:
    """The task's members as a blob source (see the module docstring).

    ``members``: address -> endpoint (``host:port``); ``task_id``: what the members' messages
    name, the config digest in hex; ``chain_id`` and ``contract``: what fetch requests are
    bound to. ``transport``: a factory of the client transport, called on the private loop
    (default: a :class:`~fedledger.gossip.grpc_transport.GrpcTransport` that serves nothing).
    ``max_bytes`` may be lowered once the model's size is known (every update and model has
    exactly the initial model's encoded size).
    """

    name = "members"

    def __init__(
        self,
        *,
        identity: Identity,
        task_id: str,
        chain_id: int,
        contract: str,
        members: Mapping[str, str],
        max_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        policy: FetchPolicy | None = None,
        transport: Callable[[], Transport] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.task_id = task_id
        self.chain_id = chain_id
        self.contract = contract
        self.members = dict(members)
        self.max_bytes = max_bytes
        self.policy = policy if policy is not None else FetchPolicy(deadline=30.0, stall=10.0)
        self._make_transport = transport
        self._wall = wall
        self._store = MemoryBlobStore()
        self._failed: dict[str, str] = {}
        self._loop: _Loop | None = None
        self._transport: Transport | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = _Loop()
        return self._loop.run(coro)

    async def _client(self) -> Transport:
        if self._transport is None:
            if self._make_transport is not None:
                self._transport = self._make_transport()
            else:
                from fedledger.gossip.grpc_transport import GrpcTransport

                self._transport = GrpcTransport()
        return self._transport

    def _sources(self, cid: str) -> list[Source]:
        now = self._wall()
        sources = []
        for address, endpoint in sorted(self.members.items()):
            if not endpoint:
                continue
            try:
                request = make_fetch_request(identity=self.identity, task=self.task_id, cid=cid,
                                             to=address, now=now, chain_id=self.chain_id,
                                             contract=self.contract)  # fmt: skip
            except MessageError:
                continue  # not an address a request can be bound to
            sources.append(Source(endpoint=endpoint, request=request, name=address))
        return sources

    async def _one(self, transport: Transport, cid: str) -> None:
        try:
            await fetch_blob(transport, self._store, cid=cid, sources=self._sources(cid),
                             max_bytes=self.max_bytes, policy=self.policy)  # fmt: skip
        except FetchFailed as exc:
            self._failed[cid] = _why(exc)
        except CodecError as exc:
            self._failed[cid] = f"not a valid CID ({exc})"

    async def _many(self, cids: Sequence[str]) -> None:
        transport = await self._client()
        gate = asyncio.Semaphore(PARALLEL_FETCHES)

        async def one(cid: str) -> None:
            async with gate:
                await self._one(transport, cid)

        await asyncio.gather(*(one(c) for c in cids))

    def prefetch(self, cids: Sequence[str]) -> None:
        todo = [c for c in dict.fromkeys(cids) if not self._store.has(c) and c not in self._failed]
        if todo and self.members:
            self._run(self._many(todo))

    def fetch(self, cid: str) -> tuple[bytes | None, str]:
        if not self.members:
            return None, "no member published an endpoint"
        if not self._store.has(cid) and cid not in self._failed:
            self._run(self._many([cid]))
        if self._store.has(cid):
            return self._store.get(cid), ""
        return None, self._failed.get(cid, "not served")

    def close(self) -> None:
        if self._loop is None:
            return
        if self._transport is not None:
            transport, self._transport = self._transport, None
            self._loop.run(transport.close())
        self._loop.close()
        self._loop = None


def _why(exc: FetchFailed) -> str:
    """A failed fetch, as the audit reports it: ``altered`` first if any member sent bytes
    that do not hash to the CID."""
    reasons = "; ".join(f"{name}: {why}" for name, why in exc.failures.items())
    if any(why.startswith("mismatch") for why in exc.failures.values()):
        return f"altered (a member sent bytes that do not hash to its CID: {reasons})"
    if exc.reason == "no sources":
        return "not served (no member to ask)"
    return f"not served by any member ({exc.reason}: {reasons})"


class GatewayBlobs:
    """An IPFS-compatible HTTP gateway: ``GET {url}/ipfs/{cid}``, the body checked against the
    CID. ``max_bytes`` bounds what is read."""

    name = "gateway"

    def __init__(
        self, url: str, *, max_bytes: int = DEFAULT_MAX_BLOB_BYTES, timeout: float = 30.0
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"not an http(s) gateway URL: {url!r}", field="gateway")
        self.url = url.rstrip("/")
        self.max_bytes = max_bytes
        self.timeout = timeout

    def prefetch(self, cids: Sequence[str]) -> None:
        del cids  # fetched one at a time, when needed

    def fetch(self, cid: str) -> tuple[bytes | None, str]:
        try:
            digest = digest_from_cid(cid)
        except CodecError as exc:
            return None, f"not a valid CID ({exc})"
        request = urllib.request.Request(
            f"{self.url}/ipfs/{cid}", headers={"Accept": "application/vnd.ipld.raw"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read(self.max_bytes + 1)
        except urllib.error.HTTPError as exc:
            return None, f"not served by the gateway (HTTP {exc.code})"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return None, f"the gateway is unreachable ({exc})"
        if len(data) > self.max_bytes:
            return None, f"altered (the gateway sent more than {self.max_bytes} bytes)"
        if hashlib.sha256(data).digest() != digest:
            return None, "altered (the gateway sent bytes that do not hash to its CID)"
        return data, ""

    def close(self) -> None:
        pass
