"""Reputation from past selection, as the chain records it (issue 6).

The Task contract counts, for each member, the updates it revealed (``reveals_of``, one per
``Revealed`` event) and the distributed rounds that gave it a nonzero score
(``selections_of``, one per ``Selected`` event). A rule that uses reputation in round ``r``
must see the same counts on every node and in the audit, whatever each one's view of the
chain's head: it uses the counts *as of the block that started round ``r``*
(``RoundStarted.block``), rebuilt from the events before that block -- the contract's
counters at that block, without a historical state read.

A round's selections are counted once its rewards are distributed, usually a round later than
its reveals, so a member that is always selected shows ``selections = reveals - 1`` or so:
thresholds allow for that (``reputation_after``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from fedledger.ledger.records import LedgerEvent, Revealed, RoundStarted, Selected

Reputation = tuple[int, int]
"""``(selections, reveals)``."""


def reputation_at(events: Iterable[LedgerEvent], block: int) -> dict[str, Reputation]:
    """Every member's ``(selections, reveals)`` from the events of blocks before ``block``
    (addresses lower-cased)."""
    selections: dict[str, int] = {}
    reveals: dict[str, int] = {}
    for e in events:
        if e.block >= block:
            continue
        if isinstance(e, Revealed):
            key = e.member.lower()
            reveals[key] = reveals.get(key, 0) + 1
        elif isinstance(e, Selected):
            key = e.contributor.lower()
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
