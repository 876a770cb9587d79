"""The narrow port between a mode's driver and the node core.

A driver (:mod:`fedledger.node.drivers`) runs one mode's I/O-free state machine; everything it
needs from the outside world goes through :class:`Services`, which the core
(:class:`fedledger.node.core.NodeCore`) implements: signed publication, background jobs whose
failure ends the node with a clear reason, training, blob fetching, the round function, and
the round's record. The core in turn calls a driver only through :class:`Driver`.
"""

from __future__ import annotations

from collections.abc import Collection, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from fedledger.attacks.adversary import Adversary
from fedledger.config.task import TaskConfig
from fedledger.gossip.blobs import BlobStore
from fedledger.gossip.identity import Identity
from fedledger.gossip.messages import Message
from fedledger.learning import Params
from fedledger.node.consensus import Contribution
from fedledger.node.waiting import Waiting


class Services(Protocol):
    """What the core offers a driver."""

    @property
    def me(self) -> str:
        """This node's address."""
        ...

    @property
    def adversary(self) -> Adversary: ...

    @property
    def endpoint(self) -> str:
        """Where this node listens (known once the transport started)."""
        ...

    def clock(self) -> float:
        """Monotonic seconds (the node's own clock, not the chain's)."""
        ...

    def publish(self, kind: str, rnd: int, body: Mapping[str, object]) -> None:
        """Sign and gossip a message."""
        ...

    def spawn(self, job: Coroutine[Any, Any, None], *, what: str) -> None:
        """Run ``job`` in the background; if it fails, the node stops with ``what`` and the
        error as its failure (a clear outcome, never a silent stall)."""
        ...

    def common(self, action: object) -> bool:
        """Carry out an action every mode shares (train, publish, fetch, finish); False if
        ``action`` is not one of them."""
        ...

    async def aggregate(
        self,
        rnd: int,
        base: str,
        inputs: Sequence[Contribution],
        reputation: Sequence[tuple[int, int]] | None,
        randomness: bytes = b"",
        task: TaskConfig | None = None,
    ) -> tuple[str, list[int]]:
        """The round function on ``inputs`` from ``base``: the new model's CID (stored) and
        each input's score (``randomness``: the round's on chain, for contribution scores;
        ``task``: the rules in force in the round when governance changed them, else the
        node's own)."""
        ...

    async def mix(self, iteration: int, inputs: Sequence[tuple[str, float]]) -> str:
        """Gossip mode: the own model (first input) mixed with the neighbours'; its CID."""
        ...

    async def round_done(self, rnd: int, model: str, extra: Mapping[str, Any]) -> None:
        """Persist the round's progress and record its evaluation."""
        ...

    def round_finished(self, rnd: int, model: str, extra: Mapping[str, Any]) -> None:
        """A round (or iteration) ended with ``model``: progress, then :meth:`round_done` in
        the background."""
        ...

    def withdraw(self, reason: str) -> None:
        """The data owner's consent no longer covers the task: the node left it; stop."""
        ...

    def expel(self, reason: str) -> None:
        """The task removed this node (slashed, say): it stops, holding no model."""
        ...

    def progressed(self) -> None:
        """The round logic advanced (resets the stall timer)."""
        ...

    def report_waiting(self, waiting: Waiting | None, now: float) -> None:
        """Whom the round logic waits for now (``now``: the time of the logic's clock that
        its deadline is in): written to the node's status file when it changed."""
        ...

    def learn_endpoint(self, address: str, endpoint: str, *, replace: bool = False) -> None:
        """Where member ``address`` listens (a plain host:port; anything else is ignored);
        ``replace``: the member itself said so, in a signed ``hello``."""
        ...

    @property
    def identity(self) -> Identity:
        """This node's key (ledger mode signs its round messages with it)."""
        ...

    def persist_message(self, rnd: int, message: Mapping[str, Any]) -> None:
        """Write round ``rnd``'s message content durably (ledger mode), and make the update
        blob it names durable too, before it is signed."""
        ...

    def set_members(self, members: Collection[str], endpoints: Mapping[str, str]) -> None:
        """Replace who may send frames and where they are (ledger mode: from the registry)."""
        ...

    @property
    def store(self) -> BlobStore:
        """This node's content-addressed blobs."""
        ...

    def params(self, cid: str) -> Params:
        """The parameter list of a model blob in the store."""
        ...

    async def fetch_blob(self, cid: str, peers: Sequence[str], *, parallel: int = 0,
                         max_bytes: int | None = None) -> bool:  # fmt: skip
        """Fetch ``cid`` into the store from ``peers``; whether it arrived."""
        ...


class Driver(Protocol):
    """One mode's shell around its state machine, as the core sees it."""

    def now(self) -> float:
        """The time the round logic runs on (the chain's in ledger mode)."""
        ...

    def current_round(self) -> int:
        """The round (iteration) the node is in: frames far from it are dropped unread."""
        ...

    def binding(self) -> tuple[int, str]:
        """``(chain id, task contract)`` that fetch requests are bound to: ``(0, the zero
        address)`` without a ledger."""
        ...

    async def setup(self) -> str | None:
        """Everything before round 1 (join the task, meet the peers); a reason if this node
        cannot take part."""
        ...

    def start(self) -> None: ...

    def founders(self) -> frozenset[str]:
        """The members whose data statistics the task pools before its first round (its
        members at the start; the same set at every node)."""
        ...

    def deliver(self, message: Message) -> None:
        """A verified, new message from a member."""
        ...

    async def ticker(self) -> None:
        """Drive the state machine's deadlines until cancelled."""
        ...

    def trained(self, rnd: int, base: str, cid: str, num_examples: int, honest: str) -> None:
        """The node's update of ``rnd`` is ready: ``cid`` (what it publishes) and ``honest``
        (its own trained model: the same unless its adversary poisoned the update)."""
        ...

    def blob(self, cid: str, ok: bool) -> None:
        """A fetch ended: the blob is in the store, or no source had it."""
        ...

    async def authorize(self, requester: str, cid: str) -> None:
        """Raise :class:`~fedledger.errors.FetchRefused` unless ``requester`` may have
        ``cid``."""
        ...

    def may_stop(self) -> bool:
        """Whether no laggard still needs this node (it may stop lingering)."""
        ...

    def summary(self) -> dict[str, Any]:
        """The mode's figures for the node's summary."""
        ...
