"""Reputation as of a round's start, rebuilt from events (ledger v2: ``Submitted`` events
with an update count as updates, contributors with a nonzero score in ``Distributed`` events
as selections), so every node and the audit use the same numbers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from fedledger.ledger.messages import ZERO32
from fedledger.ledger.records import Distributed, RoundStarted, Submitted
from fedledger.ledger.reputation import (
    reputation_at,
    reputation_from_events,
    round_reputation,
    uses_reputation,
)

A, B = "0xAa00000000000000000000000000000000000001", "0xbB00000000000000000000000000000000000002"
UPDATE = b"\x01" * 32


def at(block: int) -> dict[str, int | str]:
    return {"block": block, "time": block, "tx": f"0x{block:064x}", "index": 0}


def submit(block: int, rnd: int, who: str, update: bytes = UPDATE) -> Submitted:
    examples = int(update != ZERO32)
    return Submitted(**at(block), round=rnd, member=who, update=update,  # type: ignore[arg-type]
                     examples=examples, model=ZERO32, result=ZERO32, r=1, vs=1)  # fmt: skip


def started(block: int, rnd: int) -> RoundStarted:
    return RoundStarted(**at(block), round=rnd, start=block, active_stake=2, members=2)  # type: ignore[arg-type]


def distributed(block: int, rnd: int, who: Sequence[str], scores: Sequence[int]) -> Distributed:
    return Distributed(**at(block), round=rnd, total=0, contributors=tuple(who),  # type: ignore[arg-type]
                       scores=tuple(scores))  # fmt: skip


EVENTS = [
    started(1, 1), submit(2, 1, A), submit(3, 1, B),
    # Round 2 opens; its batch finalizes round 1 and pays it (A selected, B scored zero).
    started(4, 2), submit(4, 2, A), submit(4, 2, B, ZERO32), distributed(4, 1, [A, B], [1, 0]),
    started(8, 3), distributed(9, 2, [A, B], [1, 1]),
]  # fmt: skip


def test_counts_before_the_rounds_start_block() -> None:
    assert round_reputation(EVENTS, 1, [A, B]) == [(0, 0), (0, 0)]
    assert round_reputation(EVENTS, 2, [A, B]) == [(0, 1), (0, 1)]
    assert round_reputation(EVENTS, 3, [A.lower(), B.upper()[:2] + B[2:].upper()]) == [
        (1, 2),
        (0, 1),  # B's round-2 message attested only: no update
    ]
    assert reputation_at(EVENTS, 10) == {A.lower(): (2, 2), B.lower(): (1, 1)}
    with pytest.raises(LookupError):
        round_reputation(EVENTS, 4, [A])


def test_reputation_from_events() -> None:
    assert reputation_from_events(EVENTS, A) == (2, 2)
    assert reputation_from_events(EVENTS, B.lower()) == (1, 1)
    assert reputation_from_events(EVENTS, "0x" + "cc" * 20) == (0, 0)
    # A contributor with a zero score is not selected; a distribution with no nonzero score
    # selects nobody.
    assert reputation_from_events([distributed(1, 1, [A], [0])], A) == (0, 0)


def test_which_params_use_reputation() -> None:
    assert uses_reputation({"min_reputation": 0.5})
    assert uses_reputation({"reputation_rewards": True})
    assert not uses_reputation({"reputation_rewards": False, "beta": 0.2})
