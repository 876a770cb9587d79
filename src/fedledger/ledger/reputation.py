"""Reputation from past selection, as the chain records it (issue 6).

A member's reputation counts, from the Task contract's events, the updates it submitted (one
per ``Submitted`` event with an update) and the paid rounds that gave it a nonzero score (one
per ``Distributed`` event naming it with a nonzero score); the contract keeps no counters
(ledger v2: they would cost a storage write per member and round). A rule that uses
reputation in round ``r`` must see the same counts on every node and in the audit, whatever
each one's view of the chain's head: it uses the counts *as of the block that started round
``r``* (``RoundStarted.block``), rebuilt from the events before that block.

A round's selections are counted once its rewards are paid, a round later than its updates,
so a member that is always selected shows ``selections = updates - 1`` or so: thresholds allow
for that (``reputation_after``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from fedledger.ledger.messages import ZERO32
from fedledger.ledger.records import Distributed, LedgerEvent, RoundStarted, Submitted

Reputation = tuple[int, int]
"""``(selections, updates)``."""


def reputation_at(events: Iterable[LedgerEvent], block: int) -> dict[str, Reputation]:
    """Every member's ``(selections, updates)`` from the events of blocks before ``block``
    (addresses lower-cased)."""
    selections: dict[str, int] = {}
    reveals: dict[str, int] = {}
    for e in events:
        if e.block >= block:
            continue
        if isinstance(e, Submitted) and e.update != ZERO32:
            key = e.member.lower()
            reveals[key] = reveals.get(key, 0) + 1
        elif isinstance(e, Distributed):
            for contributor in e.selected():
                key = contributor.lower()
                selections[key] = selections.get(key, 0) + 1
    return {m: (selections.get(m, 0), reveals.get(m, 0)) for m in {*selections, *reveals}}


def round_reputation(
    events: Sequence[LedgerEvent], rnd: int, members: Sequence[str]
) -> list[Reputation]:
    """The reputation of each of ``members`` for round ``rnd``: as of the block that started
    it. Raises :class:`LookupError` when the round's start is not among ``events``."""
    start = next((e for e in events if isinstance(e, RoundStarted) and e.round == rnd), None)
    if start is None:
        raise LookupError(f"round {rnd} has not started")
    table: Mapping[str, Reputation] = reputation_at(events, start.block)
    return [table.get(m.lower(), (0, 0)) for m in members]


def uses_reputation(params: Mapping[str, object]) -> bool:
    """Whether a rule's parameters need the inputs' reputation."""
    return "min_reputation" in params or bool(params.get("reputation_rewards", False))


def reputation_from_events(events: Iterable[LedgerEvent], account: str) -> Reputation:
    """``account``'s ``(selections, updates)`` over the whole of ``events``."""
    return reputation_at(events, 2**63).get(account.lower(), (0, 0))
