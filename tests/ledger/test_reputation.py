"""Reputation as of a round's start, rebuilt from events (the contract's counters at that
block), so every node and the audit use the same numbers."""

from __future__ import annotations

import pytest

from fedledger.ledger.records import Revealed, RoundStarted, Selected
from fedledger.ledger.reputation import reputation_at, round_reputation, uses_reputation

A, B = "0xAa00000000000000000000000000000000000001", "0xbB00000000000000000000000000000000000002"


def at(block: int) -> dict[str, int | str]:
    return {"block": block, "time": block, "tx": f"0x{block:064x}", "index": 0}


def reveal(block: int, rnd: int, who: str) -> Revealed:
    return Revealed(**at(block), round=rnd, member=who, update_digest=b"\0" * 32,  # type: ignore[arg-type]
                    cid="bafk", num_examples=1)  # fmt: skip


def started(block: int, rnd: int) -> RoundStarted:
    return RoundStarted(**at(block), round=rnd, start=block, active_stake=2, members=2)  # type: ignore[arg-type]


def selected(block: int, rnd: int, who: str) -> Selected:
    return Selected(**at(block), round=rnd, contributor=who, score=1)  # type: ignore[arg-type]


EVENTS = [
    started(1, 1), reveal(2, 1, A), reveal(3, 1, B),
    started(4, 2),  # round 1 finalized; its rewards are distributed after round 2 started
    selected(5, 1, A), reveal(6, 2, A), reveal(7, 2, B),
    started(8, 3), selected(9, 2, A), selected(9, 2, B),
]  # fmt: skip


def test_counts_before_the_rounds_start_block() -> None:
    assert round_reputation(EVENTS, 1, [A, B]) == [(0, 0), (0, 0)]
    assert round_reputation(EVENTS, 2, [A, B]) == [(0, 1), (0, 1)]
    assert round_reputation(EVENTS, 3, [A.lower(), B.upper()[:2] + B[2:].upper()]) == [
        (1, 2),
        (0, 2),
    ]
    assert reputation_at(EVENTS, 10) == {A.lower(): (2, 2), B.lower(): (1, 2)}
    with pytest.raises(LookupError):
        round_reputation(EVENTS, 4, [A])


def test_which_params_use_reputation() -> None:
    assert uses_reputation({"min_reputation": 0.5})
    assert uses_reputation({"reputation_rewards": True})
    assert not uses_reputation({"reputation_rewards": False, "beta": 0.2})
