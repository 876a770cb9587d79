"""The ledger's records and its interface, without a chain: pure data, no web3 or eth imports.

:class:`Ledger` is everything a node, the launcher and the audit need from a Task contract:
its rules, its member registry, the round transactions (commit, reveal, attest, skip,
distribute) and its events, typed. Two implementations pass one shared suite
(tests/ledger/test_ledger_suite.py):

* :class:`~fedledger.ledger.contract_ledger.ContractLedger` — the real thing: the Task contract
  (and its RewardToken) through a :class:`~fedledger.ledger.chain.Chain`, embedded or JSON-RPC;
* :class:`~fedledger.ledger.memory_ledger.MemoryLedger` — the contract's rules in Python over a
  shared :class:`~fedledger.ledger.memory_ledger.MemoryTask`, with an injected clock: fast,
  deterministic node and protocol tests.

Both raise :class:`~fedledger.errors.TransactionReverted` with the contract's own revert
reason, so callers handle one error whatever the backend.

Time: a round's windows are upper bounds; a phase closes early when every eligible member
committed, or every committer revealed (:class:`RoundClock`). Nodes tell which window is open
from the events and :meth:`Ledger.now` (the time the next transaction will see), not from the
``phase`` view, which answers for the latest block's timestamp and goes stale while the chain
is idle.

This module and :mod:`fedledger.ledger.rules` are all that the I/O-free round logic
(:mod:`fedledger.node.ledger_round`) needs: importing them imports no web3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from fedledger.ledger.rules import (
    PHASE_ATTEST,
    PHASE_COMMIT,
    PHASE_FAILED,
    PHASE_REVEAL,
    RULE_NAMES,
)

__all__ = [
    "EVENT_TYPES",
    "Attested",
    "Committed",
    "Distributed",
    "Equivocated",
    "Finalized",
    "Joined",
    "Ledger",
    "LedgerEvent",
    "Left",
    "Member",
    "Revealed",
    "Rewarded",
    "RoundClock",
    "RoundStarted",
    "Selected",
    "Skipped",
    "Slashed",
    "TaskRules",
    "TaskTransactions",
    "TxResult",
]


# ------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TaskRules:
    """The Task contract's immutable rules."""

    token: str
    rule_id: int
    rule_params_digest: bytes
    config_digest: bytes
    quorum_bps: int
    min_stake: int
    commit_window: int
    reveal_window: int
    attest_window: int
    max_participants: int
    allowlist_only: bool
    reward_per_round: int
    access_policy: int
    cooldown: int
    treasury: str

    @property
    def rule(self) -> str:
        """The aggregation rule's name (``"?"`` for an unknown id)."""
        return RULE_NAMES.get(self.rule_id, "?")


@dataclass(frozen=True, kw_only=True)
class Member:
    address: str
    endpoint: str
    stake: int
    first_round: int


@dataclass(frozen=True, kw_only=True)
class TxResult:
    """A mined transaction of this ledger's account."""

    tx: str
    block: int
    gas_used: int


@dataclass(frozen=True, kw_only=True)
class LedgerEvent:
    """Where an event was emitted: block, its timestamp, transaction and log position."""

    block: int
    time: int
    tx: str
    index: int


@dataclass(frozen=True, kw_only=True)
class Joined(LedgerEvent):
    member: str
    stake: int
    endpoint: str
    first_round: int


@dataclass(frozen=True, kw_only=True)
class Left(LedgerEvent):
    member: str
    withdraw_after: int


@dataclass(frozen=True, kw_only=True)
class RoundStarted(LedgerEvent):
    round: int
    start: int
    active_stake: int
    members: int


@dataclass(frozen=True, kw_only=True)
class Committed(LedgerEvent):
    round: int
    member: str
    commitment: bytes


@dataclass(frozen=True, kw_only=True)
class Revealed(LedgerEvent):
    round: int
    member: str
    update_digest: bytes
    cid: str
    num_examples: int


@dataclass(frozen=True, kw_only=True)
class Attested(LedgerEvent):
    round: int
    member: str
    model_digest: bytes
    result_digest: bytes
    stake: int


@dataclass(frozen=True, kw_only=True)
class Equivocated(LedgerEvent):
    round: int
    member: str
    model_digest: bytes
    result_digest: bytes


@dataclass(frozen=True, kw_only=True)
class Slashed(LedgerEvent):
    member: str
    amount: int
    treasury: str


@dataclass(frozen=True, kw_only=True)
class Finalized(LedgerEvent):
    round: int
    model_digest: bytes
    result_digest: bytes


@dataclass(frozen=True, kw_only=True)
class Skipped(LedgerEvent):
    round: int


@dataclass(frozen=True, kw_only=True)
class Selected(LedgerEvent):
    """``distribute`` selected ``contributor`` (a nonzero score): one more
    :meth:`Ledger.reputation` selection, paid or not (a member slashed since is not paid)."""

    round: int
    contributor: str
    score: int


@dataclass(frozen=True, kw_only=True)
class Rewarded(LedgerEvent):
    round: int
    contributor: str
    amount: int


@dataclass(frozen=True, kw_only=True)
class Distributed(LedgerEvent):
    round: int
    total: int


EVENT_TYPES: Final[Mapping[str, type[LedgerEvent]]] = {
    cls.__name__: cls
    for cls in (
        Joined, Left, RoundStarted, Committed, Revealed, Attested, Equivocated, Slashed,
        Finalized, Skipped, Selected, Rewarded, Distributed,
    )
}  # fmt: skip
"""The Task events a ledger reports (Allowed, Disallowed, Withdrawn and ownership events are
not needed by nodes or the audit)."""


@dataclass(frozen=True, kw_only=True)
class RoundClock:
    """When a round's windows open and close (timestamps), as the contract computes them."""

    start: int
    reveal_opens: int
    attest_opens: int
    attest_closes: int

    @classmethod
    def of(
        cls,
        *,
        start: int,
        rules: TaskRules,
        reveal_at: int | None = None,
        attest_at: int | None = None,
    ) -> RoundClock:
        """``reveal_at``/``attest_at``: when the commit/reveal phase closed early, if it did."""
        reveal = reveal_at if reveal_at is not None else start + rules.commit_window
        attest = attest_at if attest_at is not None else reveal + rules.reveal_window
        return cls(start=start, reveal_opens=reveal, attest_opens=attest,
                   attest_closes=attest + rules.attest_window)  # fmt: skip

    def phase(self, now: int) -> int:
        """The phase of an open (not finalized, not skipped) round at time ``now``."""
        if now < self.reveal_opens:
            return PHASE_COMMIT
        if now < self.attest_opens:
            return PHASE_REVEAL
        if now < self.attest_closes:
            return PHASE_ATTEST
        return PHASE_FAILED


# ------------------------------------------------------------------------------------------------
# The interface
# ------------------------------------------------------------------------------------------------


class Ledger(Protocol):
    """One account's handle on one task. Transactions are signed by :attr:`account`."""

    @property
    def account(self) -> str:
        """This handle's address (checksummed)."""
        ...

    @property
    def task_address(self) -> str:
        """The task's address (an identifier for the in-memory ledger)."""
        ...

    @property
    def chain_id(self) -> int:
        """The chain's id (what signed requests and messages are bound to)."""
        ...

    def rules(self) -> TaskRules: ...

    def now(self) -> int:
        """At least the timestamp the next transaction will see."""
        ...

    def head(self) -> int:
        """The latest block: a cursor for :meth:`events`."""
        ...

    def events(self, after: int, until: int | None = None) -> list[LedgerEvent]:
        """The task's events in blocks ``(after, until]`` (default: up to :meth:`head`), in
        chain order."""
        ...

    def members(self) -> list[Member]:
        """The active members, sorted by address."""
        ...

    def member_count(self) -> int:
        """How many active members there are (one call)."""
        ...

    def status_of(self, account: str) -> int: ...

    def reputation(self, account: str) -> tuple[int, int]:
        """``(selections, reveals)``: in how many distributed rounds ``account`` had a nonzero
        score (its ``Selected`` events), and how many updates it revealed (its ``Revealed``
        events), over the task's whole life."""
        ...

    def current_round(self) -> int: ...

    def round_clock(self, round: int) -> RoundClock: ...

    def phase(self, round: int) -> int:
        """The round's phase at :meth:`now` (finalized and skipped rounds are final)."""
        ...

    def model_digest(self, round: int) -> bytes:
        """The finalized model digest of ``round`` (32 zero bytes if not finalized)."""
        ...

    def can_download(self, account: str) -> bool:
        """Whether ``account`` may download the task's blobs: a reader, or as the access
        policy says (active members; token holders; anyone)."""
        ...

    def is_reader(self, account: str) -> bool:
        """Whether the owner granted ``account`` read access (an auditor)."""
        ...

    def token_balance(self, account: str) -> int: ...

    def token_supply(self) -> int: ...

    def join(self, endpoint: str, stake: int) -> TxResult: ...

    def leave(self) -> TxResult: ...

    def withdraw(self) -> TxResult: ...

    def allow(self, account: str) -> TxResult:
        """Owner only."""
        ...

    def grant_reader(self, account: str) -> TxResult:
        """Owner only: ``account`` may download the task's blobs whatever the access policy
        (an auditor)."""
        ...

    def revoke_reader(self, account: str) -> TxResult:
        """Owner only: take back :meth:`grant_reader`."""
        ...

    def start(self) -> TxResult:
        """Owner only, once: round 1 starts."""
        ...

    def commit(self, round: int, commitment: bytes) -> TxResult: ...

    def reveal(
        self, round: int, update_digest: bytes, cid: str, num_examples: int, salt: bytes
    ) -> TxResult: ...

    def attest(self, round: int, model_digest: bytes, result_digest: bytes) -> TxResult: ...

    def skip(self, round: int) -> TxResult: ...

    def distribute(
        self, round: int, contributors: Sequence[str], scores: Sequence[int]
    ) -> TxResult: ...


# ------------------------------------------------------------------------------------------------
# The transactions, one way for every implementation
# ------------------------------------------------------------------------------------------------


class TaskTransactions:
    """The task's transactions, the same for every :class:`Ledger`: each implementation sends
    them by name with ``_send`` (addresses as given: an implementation that needs them
    checksummed, or a gas limit per call, sees the name and arguments)."""

    def _send(self, name: str, *args: Any, value: int = 0) -> TxResult:
        raise NotImplementedError

    def join(self, endpoint: str, stake: int) -> TxResult:
        return self._send("join", endpoint, value=stake)

    def leave(self) -> TxResult:
        return self._send("leave")

    def withdraw(self) -> TxResult:
        return self._send("withdraw")

    def allow(self, account: str) -> TxResult:
        return self._send("allow", account)

    def grant_reader(self, account: str) -> TxResult:
        return self._send("grant_reader", account)

    def revoke_reader(self, account: str) -> TxResult:
        return self._send("revoke_reader", account)

    def start(self) -> TxResult:
        return self._send("start")

    def commit(self, round: int, commitment: bytes) -> TxResult:
        return self._send("commit", round, commitment)

    def reveal(
        self, round: int, update_digest: bytes, cid: str, num_examples: int, salt: bytes
    ) -> TxResult:
        return self._send("reveal", round, update_digest, cid, num_examples, salt)

    def attest(self, round: int, model_digest: bytes, result_digest: bytes) -> TxResult:
        return self._send("attest", round, model_digest, result_digest)

    def skip(self, round: int) -> TxResult:
        return self._send("skip", round)

    def distribute(
        self, round: int, contributors: Sequence[str], scores: Sequence[int]
    ) -> TxResult:
        return self._send("distribute", round, list(contributors), list(scores))
