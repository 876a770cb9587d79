"""Consensus mode's shell: meet the peers, then drive :class:`ConsensusNode` with messages,
finished jobs and the clock."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fedledger.gossip.messages import Message
from fedledger.node.consensus import Aggregate, ConsensusNode, RoundDone
from fedledger.node.drivers.peers import PeerDriver
from fedledger.node.services import Services

log = logging.getLogger("fedledger.node")


class ConsensusDriver(PeerDriver):
    def __init__(self, services: Services, logic: ConsensusNode, *, members: frozenset[str],
                 ready_timeout: float,
                 ready_from: frozenset[str] | None = None) -> None:  # fmt: skip
        super().__init__(services, members=members, ready_timeout=ready_timeout,
                         ready_from=ready_from)  # fmt: skip
        self.logic: ConsensusNode = logic

    def current_round(self) -> int:
        return self.logic.round

    def on_message(self, m: Message) -> None:
        body, now = m.body, self.now()
        if m.kind == "hello":
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

    def may_stop(self) -> bool:
        """Every member, even one believed dead, reported ``done`` for the last round (and
        this node re-announced its own), so no laggard still needs its blobs."""
        return self.logic.may_stop()

    def act(self, actions: Sequence[Any]) -> None:
        for a in actions:
            if self.services.common(a):
                continue
            if isinstance(a, Aggregate):
                self.services.spawn(self._aggregate(a), what=f"round {a.round}: aggregation")
            elif isinstance(a, RoundDone):
                log.info("round %d done: model %s (%d of %d agree%s)", a.round, a.model,
                         a.agreeing, a.announced, ", adopted" if a.adopted else "")  # fmt: skip
                self.services.round_finished(a.round, a.model, {
                    "adopted": a.adopted, "agreeing": a.agreeing, "announced": a.announced,
                    "included": len(a.included)})  # fmt: skip

    async def _aggregate(self, a: Aggregate) -> None:
        cid, _ = await self.services.aggregate(a.round, a.base, a.inputs, None)
        self.act(self.logic.aggregated(a.round, cid, self.now()))
