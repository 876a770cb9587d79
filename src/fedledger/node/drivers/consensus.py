"""Consensus mode's shell: meet the peers, then drive :class:`ConsensusNode` with messages,
finished jobs and the clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from fedledger.errors import FetchRefused
from fedledger.gossip.messages import ZERO_ADDRESS, Message
from fedledger.node.consensus import Aggregate, ConsensusNode, RoundDone
from fedledger.node.services import Services

log = logging.getLogger("fedledger.node")

TICK_SECONDS = 0.05  # deadlines are seconds; finer ticks only cost wake-ups


async def meet_peers(
    services: Services, heard: set[str], members: frozenset[str], timeout: float, *, rnd: int
) -> None:
    """Announce this node's endpoint (signed with its round ``rnd``, so that peers' round
    windows take it) and wait (at most ``timeout``) to hear every member."""
    services.publish("hello", rnd, {"endpoint": services.endpoint})
    deadline = services.clock() + timeout
    while heard < members and services.clock() < deadline:
        await asyncio.sleep(0.05)
    missing = len(members - heard)
    if missing:
        log.warning("starting without hearing from %d member(s)", missing)


class ConsensusDriver:
    def __init__(self, services: Services, logic: ConsensusNode, *, members: frozenset[str],
                 ready_timeout: float) -> None:  # fmt: skip
        self.services = services
        self.logic = logic
        self.members = members
        self.ready_timeout = ready_timeout
        self.heard: set[str] = {services.me}

    def now(self) -> float:
        return self.services.clock()

    def current_round(self) -> int:
        return self.logic.round

    def binding(self) -> tuple[int, str]:
        return 0, ZERO_ADDRESS

    async def setup(self) -> str | None:
        await meet_peers(self.services, self.heard, self.members, self.ready_timeout,
                         rnd=self.current_round())  # fmt: skip
        return None

    def start(self) -> None:
        self.act(self.logic.start(self.now()))

    async def ticker(self) -> None:
        while True:
            self.act(self.logic.tick(self.now()))
            await asyncio.sleep(TICK_SECONDS)

    def deliver(self, m: Message) -> None:
        self.heard.add(m.sender)
        body, now = m.body, self.now()
        if m.kind == "hello":
            self.services.learn_endpoint(m.sender, str(body["endpoint"]))
            self.logic.on_hello(m.sender)
        elif m.kind == "update":
            self.act(self.logic.on_update(m.sender, m.round, body["cid"], body["num_examples"],
                                          body["base"], now))  # fmt: skip
        elif m.kind == "model":
            included = [pair[0] for pair in body["included"]]
            self.act(self.logic.on_model(m.sender, m.round, body["cid"], included, now))
        elif m.kind == "done":
            self.act(self.logic.on_done(m.sender, m.round, body["cid"], now))

    def trained(self, rnd: int, base: str, cid: str, num_examples: int, honest: str) -> None:
        self.act(self.logic.trained(rnd, base, cid, num_examples, self.now()))

    def blob(self, cid: str, ok: bool) -> None:
        now = self.now()
        self.act(self.logic.blob_ready(cid, now) if ok else self.logic.blob_failed(cid, now))

    async def authorize(self, requester: str, cid: str) -> None:
        if requester not in self.members:
            raise FetchRefused(f"{requester} is not a member")

    def may_stop(self) -> bool:
        """Every member, even one believed dead, reported ``done`` for the last round (and
        this node re-announced its own), so no laggard still needs its blobs."""
        return self.logic.may_stop()

    def summary(self) -> dict[str, Any]:
        return {}

    def act(self, actions: Sequence[Any]) -> None:
        for a in actions:
            if self.services.common(a):
                continue
            if isinstance(a, Aggregate):
                self.services.spawn(self._aggregate(a), what=f"round {a.round}: aggregation")
            elif isinstance(a, RoundDone):
                self.services.progressed()
                log.info("round %d done: model %s (%d of %d agree%s)", a.round, a.model,
                         a.agreeing, a.announced, ", adopted" if a.adopted else "")  # fmt: skip
                extra = {"adopted": a.adopted, "agreeing": a.agreeing,
                         "announced": a.announced, "included": len(a.included)}  # fmt: skip
                self.services.spawn(self.services.round_done(a.round, a.model, extra),
                                    what=f"round {a.round}: recording")  # fmt: skip

    async def _aggregate(self, a: Aggregate) -> None:
        cid, _ = await self.services.aggregate(a.round, a.base, a.inputs, None)
        self.act(self.logic.aggregated(a.round, cid, self.now()))
