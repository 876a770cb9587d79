"""The points where a Byzantine node deviates from the protocol, as hooks with honest defaults.

A node calls its :class:`Adversary` at each such point: what it trains on, what it stakes,
what it publishes, whose blobs it serves, what it attests besides its result. The default
does what an honest node does, so the honest code path has no attack branches; robustness
experiments pass :class:`AttackAdversary` (one of :data:`fedledger.attacks.behaviour.ATTACKS`)
or, for an honest node watched by omniscient colluders, :class:`Observed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import numpy as np

from fedledger.attacks.behaviour import Attack, Collusion
from fedledger.commit import decode
from fedledger.data import NodeData
from fedledger.errors import CodecError
from fedledger.ledger.messages import RoundMessage

Params = list[np.ndarray]


class Adversary:
    """An honest node: every hook leaves the protocol as it is."""

    name: str | None = None
    """The attack's name, or None for an honest node."""

    def data(self, data: NodeData, num_classes: int) -> NodeData:
        """The data the node trains on."""
        return data

    def stake(self, min_stake: int) -> int:
        """What the node stakes to join a task."""
        return min_stake

    def observe(self, rnd: int, update: Params) -> None:
        """The node's own honest update of round ``rnd``, once trained."""

    def saw(self, blobs: Sequence[bytes]) -> None:
        """The other members' update blobs the node just aggregated."""

    async def publish(self, rnd: int, base: Sequence[np.ndarray], trained: Params) -> Params:
        """What the node publishes in round ``rnd``: its trained update."""
        return trained

    def published(self, cid: str) -> None:
        """The CID of the update the node published."""

    def drops_out(self, rnd: int) -> bool:
        """Whether the node sends no update in round ``rnd`` (it only attests)."""
        return False

    def serves(self, cid: str) -> bool:
        """Whether the node serves blob ``cid`` to a peer allowed to have it."""
        return True

    def extra_messages(self, message: RoundMessage) -> list[RoundMessage]:
        """Round messages the node signs and gossips besides ``message`` for the same round
        (ledger mode): none."""
        return []


class Observed(Adversary):
    """Simulation only: an honest node whose updates omniscient colluders see."""

    def __init__(self, collusion: Collusion) -> None:
        self.collusion = collusion

    def observe(self, rnd: int, update: Params) -> None:
        self.collusion.observe(rnd, update)


class AttackAdversary(Adversary):
    """A node mounting ``attack``: poisoned data or updates, withheld blobs, equivocation."""

    def __init__(self, attack: Attack) -> None:
        self.attack = attack
        self.name = attack.name
        self._seen: list[bytes] = []
        self._own: set[str] = set()
        self._equivocated: set[int] = set()

    def data(self, data: NodeData, num_classes: int) -> NodeData:
        return self.attack.poison_data(data, num_classes)

    def stake(self, min_stake: int) -> int:
        return self.attack.stake(min_stake)

    def saw(self, blobs: Sequence[bytes]) -> None:
        self._seen = list(blobs)

    async def publish(self, rnd: int, base: Sequence[np.ndarray], trained: Params) -> Params:
        if not self.attack.poisons_model:
            return trained
        seen: list[Params] = []
        for blob in self._seen:  # a copier replays the first it can decode
            with contextlib.suppress(CodecError):
                seen.append(decode(blob))
                break
        return await self.attack.poison(rnd, base, trained, seen=seen)

    def published(self, cid: str) -> None:
        self._own.add(cid)  # what a withholder refuses to serve

    def drops_out(self, rnd: int) -> bool:
        return self.attack.drops_out(rnd)

    def serves(self, cid: str) -> bool:
        return not (self.attack.withholds and cid in self._own)

    def extra_messages(self, message: RoundMessage) -> list[RoundMessage]:
        """An equivocator signs a second message for the round, attesting another result:
        evidence anyone can submit to slash it (ledger v2)."""
        if not self.attack.equivocates or message.round in self._equivocated:
            return []
        self._equivocated.add(message.round)
        return [dataclasses.replace(message, model=b"\x01" * 32, result=b"\x02" * 32)]
