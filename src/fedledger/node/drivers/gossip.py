"""Gossip mode's shell: meet the peers, then drive :class:`GossipLearner`: train, announce,
fetch the neighbours' models, mix them with the task's mixing rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedledger.gossip.messages import Message
from fedledger.node.drivers.peers import PeerDriver
from fedledger.node.gossip_mode import GossipLearner, IterationDone, Mix
from fedledger.node.services import Services


class GossipDriver(PeerDriver):
    def __init__(self, services: Services, logic: GossipLearner, *, members: frozenset[str],
                 ready_timeout: float,
                 ready_from: frozenset[str] | None = None) -> None:  # fmt: skip
        super().__init__(services, members=members, ready_timeout=ready_timeout,
                         ready_from=ready_from)  # fmt: skip
        self.logic: GossipLearner = logic
        self._pending: IterationDone | None = None

    def current_round(self) -> int:
        return self.logic.iteration

    def on_message(self, m: Message) -> None:
        if m.kind == "model":
            self.act(self.logic.on_model(m.sender, m.round, m.body["cid"], self.now()))

    def trained(self, rnd: int, base: str, cid: str, num_examples: int, honest: str) -> None:
        # A Byzantine node announces its poison but keeps its own model.
        published = cid if cid != honest else None
        self.act(self.logic.trained(rnd, honest, num_examples, self.now(), published=published))

    def may_stop(self) -> bool:
        return False

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
        for old in self.logic.release():  # bounded: degree + a few models, whatever the rounds
            self.services.store.delete(old)
