"""The model NFTs' contents: what each finalized model's token says, from the chain's events.

A task's ModelNFT contract (docs/governance.md) mints one token per finalized round, in order,
against the Task's lineage hash, with an epsilon the minter states. That epsilon is computed
here, the same way by ``fedledger run``, ``fedledger model mint`` and the audit (which checks
every minted token against it): the most epsilon any member had spent by the round, each
member's spend being the accountant's epsilon after its releases (rounds whose message on chain
carries an update) up to that round. 0 without differential privacy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedledger.ledger.messages import ZERO32
from fedledger.ledger.records import Finalized, LedgerEvent, Submitted
from fedledger.privacy.accounting import PrivacyPlan

__all__ = ["EPSILON_UNIT", "ModelToken", "model_epsilon", "models_to_mint"]

EPSILON_UNIT = 1_000_000
"""A token's epsilon is in millionths."""


@dataclass(frozen=True, kw_only=True)
class ModelToken:
    """What a finalized round's token should hold."""

    round: int
    model: bytes
    epsilon: int
    """Millionths of epsilon (0: no differential privacy)."""


def model_epsilon(events: Sequence[LedgerEvent], plan: PrivacyPlan | None, rnd: int) -> int:
    """The epsilon (millionths, rounded up) of round ``rnd``'s model: the most any member had
    spent by then."""
    if plan is None:
        return 0
    releases: dict[str, set[int]] = {}
    for e in events:
        if isinstance(e, Submitted) and e.update != ZERO32 and e.round <= rnd:
            releases.setdefault(e.member, set()).add(e.round)
    most = max((plan.epsilon_after(len(r)) for r in releases.values()), default=0.0)
    return -(-round(most * EPSILON_UNIT * 1000) // 1000)


def models_to_mint(events: Sequence[LedgerEvent], plan: PrivacyPlan | None, *,
                   after: int, rounds: int) -> list[ModelToken]:  # fmt: skip
    """The finalized rounds after round ``after`` (up to the task's ``rounds``), in order, as
    their tokens should be minted."""
    finalized = sorted({(e.round, e.model_digest) for e in events
                        if isinstance(e, Finalized) and after < e.round <= rounds})  # fmt: skip
    return [ModelToken(round=r, model=m, epsilon=model_epsilon(events, plan, r))
            for r, m in finalized]  # fmt: skip
