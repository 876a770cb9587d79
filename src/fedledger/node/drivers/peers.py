"""What the two ledger-less modes share: meeting the peers by ``hello``, the node's own clock,
a ticker on the state machine's deadlines, blob outcomes, and members-only serving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from fedledger.errors import FetchRefused
from fedledger.gossip.messages import ZERO_ADDRESS, Message
from fedledger.node.services import Services
from fedledger.node.waiting import Waiting

log = logging.getLogger("fedledger.node")

TICK_SECONDS = 0.05  # deadlines are seconds; finer ticks only cost wake-ups


class PeerLogic(Protocol):
    """The state-machine methods a peer driver calls the same way in both modes."""

    def start(self, now: float) -> Sequence[Any]: ...

    def tick(self, now: float) -> Sequence[Any]: ...

    def blob_ready(self, cid: str, now: float) -> Sequence[Any]: ...

    def blob_failed(self, cid: str, now: float) -> Sequence[Any]: ...

    def waiting(self, now: float) -> Waiting | None: ...


class PeerDriver:
    """The base of :class:`~fedledger.node.drivers.consensus.ConsensusDriver` and
    :class:`~fedledger.node.drivers.gossip.GossipDriver`; subclasses give ``logic``,
    :meth:`current_round`, :meth:`on_message`, :meth:`trained`, :meth:`may_stop` and
    :meth:`act`."""

    logic: PeerLogic

    def __init__(
        self,
        services: Services,
        *,
        members: frozenset[str],
        ready_timeout: float,
        ready_from: frozenset[str] | None = None,
    ) -> None:
        self.services = services
        self.members = members
        self.ready_timeout = ready_timeout
        self.ready_from = members if ready_from is None else ready_from | {services.me}
        """Whom :meth:`setup` waits to hear: the members this node's hello goes to (its
        gossip neighbours; hellos are point to point and never relayed)."""
        self.heard: set[str] = {services.me}
        self.started_without = 0
        """Members :meth:`setup` waited for and did not hear before ``ready_timeout``."""

    # -- subclasses ------------------------------------------------------------------------

    def current_round(self) -> int:
        raise NotImplementedError

    def on_message(self, m: Message) -> None:
        raise NotImplementedError

    def act(self, actions: Sequence[Any]) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------

    def now(self) -> float:
        return self.services.clock()

    def binding(self) -> tuple[int, str]:
        return 0, ZERO_ADDRESS

    async def setup(self) -> str | None:
        """Announce this node's endpoint (signed with its round, so that peers' round windows
        take it) and wait (at most ``ready_timeout``) to hear every member it sent it to."""
        self.services.publish("hello", self.current_round(), {"endpoint": self.services.endpoint})
        deadline = self.services.clock() + self.ready_timeout
        while not self.ready_from <= self.heard and self.services.clock() < deadline:
            await asyncio.sleep(0.05)
        missing = len(self.ready_from - self.heard)
        self.started_without = missing
        if missing:
            log.warning("starting without hearing from %d member(s)", missing)
        return None

    def start(self) -> None:
        self.act(self.logic.start(self.now()))

    def founders(self) -> frozenset[str]:
        return self.members

    async def ticker(self) -> None:
        while True:
            self.act(self.logic.tick(self.now()))
            now = self.now()
            self.services.report_waiting(self.logic.waiting(now), now)
            await asyncio.sleep(TICK_SECONDS)

    def deliver(self, m: Message) -> None:
        self.heard.add(m.sender)
        if m.kind == "hello":  # a member says where it listens now (restarted on a new port)
            self.services.learn_endpoint(m.sender, str(m.body["endpoint"]), replace=True)
        self.on_message(m)

    def blob(self, cid: str, ok: bool) -> None:
        now = self.now()
        self.act(self.logic.blob_ready(cid, now) if ok else self.logic.blob_failed(cid, now))

    async def authorize(self, requester: str, cid: str) -> None:
        if requester not in self.members:
            raise FetchRefused(f"{requester} is not a member")

    def summary(self) -> dict[str, Any]:
        return {"started_without": self.started_without}
