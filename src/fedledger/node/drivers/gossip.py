"""Gossip mode's shell: meet the peers, then drive :class:`GossipLearner`: train, announce,
fetch the neighbours' models, mix them with the task's mixing rule."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from fedledger.errors import FetchRefused
from fedledger.gossip.messages import ZERO_ADDRESS, Message
from fedledger.node.drivers.consensus import TICK_SECONDS, meet_peers
from fedledger.node.gossip_mode import GossipLearner, IterationDone, Mix
from fedledger.node.services import Services

log = logging.getLogger("fedledger.node")


class GossipDriver:
    def __init__(self, services: Services, logic: GossipLearner, *, members: frozenset[str],
                 ready_timeout: float) -> None:  # fmt: skip
        self.services = services
        self.logic = logic
        self.members = members
        self.ready_timeout = ready_timeout
        self.heard: set[str] = {services.me}
        self._pending: IterationDone | None = None

    def now(self) -> float:
        return self.services.clock()

    def current_round(self) -> int:
        return self.logic.iteration

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
        if m.kind == "hello":
            self.services.learn_endpoint(m.sender, str(m.body["endpoint"]))
        elif m.kind == "model":
            self.act(self.logic.on_model(m.sender, m.round, m.body["cid"], self.now()))

    def trained(self, rnd: int, base: str, cid: str, num_examples: int, honest: str) -> None:
        # A Byzantine node announces its poison but keeps its own model.
        published = cid if cid != honest else None
        self.act(self.logic.trained(rnd, honest, num_examples, self.now(), published=published))

    def blob(self, cid: str, ok: bool) -> None:
        now = self.now()
        self.act(self.logic.blob_ready(cid, now) if ok else self.logic.blob_failed(cid, now))

    async def authorize(self, requester: str, cid: str) -> None:
        if requester not in self.members:
            raise FetchRefused(f"{requester} is not a member")

    def may_stop(self) -> bool:
        return False

    def summary(self) -> dict[str, Any]:
        return {}

    def act(self, actions: Sequence[Any]) -> None:
        for a in actions:
            if self.services.common(a):
                continue
            if isinstance(a, Mix):
                self.services.progressed()
                self.services.spawn(self._mix(a), what=f"iteration {a.iteration}: mixing")
            elif isinstance(a, IterationDone):
                self._pending = a

    async def _mix(self, a: Mix) -> None:
        cid = await self.services.mix(a.iteration, a.inputs)
        extra: dict[str, Any] = {}
        done = self._pending
        if done is not None and done.iteration == a.iteration:
            extra = {"fresh": done.fresh, "stale": done.stale, "missing": done.missing}
        await self.services.round_done(a.iteration, cid, extra)
        self.act(self.logic.mixed(a.iteration, cid, self.now()))
