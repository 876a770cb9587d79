"""Who masks with whom in each round of a secure-aggregation task, from the chain's events.

Everyone must use the same masking set, before anyone masks, so the chain fixes it: round
``r``'s set is the members active, eligible in ``r``, whose latest ``Keys`` registration
covers ``r`` (a key blob digest whose rounds include ``r``), as of the event that started
round ``max(r - 1, 1)``. Members sign round ``r`` only once ``r - 1`` closed, so every node has
seen that event by then; a registration made later counts from the round after. Nodes, the
audit and the status all read it from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fedledger.ledger.messages import ZERO32
from fedledger.ledger.records import Joined, Keys, LedgerEvent, Left, RoundStarted, Slashed


@dataclass
class MaskingSets:
    """Fed every event in chain order (:meth:`add`); answers :meth:`of`."""

    keys: dict[str, Keys] = field(default_factory=dict)
    """Each member's latest registration (address as the chain gives it)."""
    first_rounds: dict[str, int] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)
    _snapshots: dict[int, tuple[dict[str, Keys], frozenset[str]]] = field(default_factory=dict)

    def add(self, events: Iterable[LedgerEvent]) -> None:
        for e in events:
            if isinstance(e, Keys):
                self.keys[e.member] = e
            elif isinstance(e, Joined):
                self.active.add(e.member)
                self.first_rounds[e.member] = e.first_round
            elif isinstance(e, Left | Slashed):
                self.active.discard(e.member)
            elif isinstance(e, RoundStarted):
                self._snapshots.setdefault(e.round, (dict(self.keys), frozenset(self.active)))

    def of(self, rnd: int) -> tuple[str, ...] | None:
        """Round ``rnd``'s masking set, sorted by address; None while the chain has not fixed
        it (the round it is read at has not started)."""
        snap = self._snapshots.get(max(rnd - 1, 1))
        if snap is None:
            return None
        keys, active = snap
        return tuple(sorted(
            (a for a, k in keys.items()
             if a in active and k.keys_digest != ZERO32 and k.first_round <= rnd <= k.last_round
             and self.first_rounds.get(a, 1) <= rnd),
            key=str.lower,
        ))  # fmt: skip

    def registration(self, member: str, rnd: int) -> Keys | None:
        """The registration that put ``member`` in round ``rnd``'s set (its key blob's digest)."""
        snap = self._snapshots.get(max(rnd - 1, 1))
        return None if snap is None else snap[0].get(member)

    def digest(self, member: str, rnd: int) -> bytes:
        """The digest of the key blob ``member`` masks with in round ``rnd`` (zero: none)."""
        k = self.registration(member, rnd)
        return ZERO32 if k is None else k.keys_digest
