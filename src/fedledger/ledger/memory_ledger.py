"""The Task contract's rules in Python: a fast, deterministic ledger.

:class:`MemoryTask` is one task's shared state (members, rounds, tokens) with an injected clock;
:class:`MemoryLedger` is one account's handle on it (a
:class:`~fedledger.ledger.records.Ledger`). They pass the same suite as the contract
(tests/ledger/test_ledger_suite.py), exact revert reasons included, and import no web3: node
and protocol tests run without a chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from fedledger.errors import ConfigError, TransactionReverted
from fedledger.ledger.records import (
    Attested,
    Committed,
    Distributed,
    Equivocated,
    Finalized,
    Joined,
    LedgerEvent,
    Left,
    Member,
    Revealed,
    Rewarded,
    RoundClock,
    RoundStarted,
    Selected,
    Skipped,
    Slashed,
    TaskRules,
    TaskTransactions,
    TxResult,
)
from fedledger.ledger.rules import (
    BPS,
    PHASE_ATTEST,
    PHASE_COMMIT,
    PHASE_FAILED,
    PHASE_FINALIZED,
    PHASE_NOT_STARTED,
    PHASE_REVEAL,
    STATUS_ACTIVE,
    STATUS_LEFT,
    STATUS_NONE,
    STATUS_SLASHED,
    commitment,
    result_digest,
)

__all__ = ["MemoryLedger", "MemoryTask"]


@dataclass
class _RoundState:
    start: int
    stake: int
    members: int
    status: int = 0  # 0 open, 1 finalized, 2 failed
    commits: dict[str, bytes] = field(default_factory=dict)
    reveals: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    reveal_at: int | None = None
    attest_at: int | None = None
    attestations: dict[str, bytes] = field(default_factory=dict)
    tally: dict[bytes, int] = field(default_factory=dict)
    model: bytes = b"\x00" * 32
    result: bytes = b"\x00" * 32
    distributed: bool = False


def _pair(model: bytes, result: bytes) -> bytes:
    return keccak(abi_encode(["bytes32", "bytes32"], [model, result]))


def _key(address: str) -> str:
    return to_checksum_address(address)


MEMORY_CHAIN_ID = 0
"""The in-memory ledger is on no chain."""


class MemoryTask:
    """The Task contract's rules in Python: one shared state behind many :class:`MemoryLedger`
    handles. Every transaction is its own block, stamped ``max(previous, int(clock()))``.
    ETH is not modelled beyond the task's own books (stakes in, withdrawals and slashes out)."""

    def __init__(
        self,
        rules: TaskRules,
        *,
        owner: str,
        clock: Callable[[], float],
        address: str = "0x" + "7a" * 20,
    ) -> None:
        if not 5000 < rules.quorum_bps <= BPS:
            raise ConfigError("quorum not in (5000, 10000]", field="quorum_bps")
        self.rules = rules
        self.owner = _key(owner)
        self.clock = clock
        self.address = _key(address)
        self.block = 0
        self.time = int(clock())
        self.log: list[LedgerEvent] = []
        self.allowed: set[str] = set()
        self.readers: set[str] = set()
        self.status: dict[str, int] = {}
        self.stake: dict[str, int] = {}
        self.endpoint: dict[str, str] = {}
        self.first_round: dict[str, int] = {}
        self.withdraw_after: dict[str, int] = {}
        self.active: list[str] = []
        self.active_stake = 0
        self.current_round = 0
        self.rounds: dict[int, _RoundState] = {}
        self.tokens: dict[str, int] = {}
        self.revealed_updates: set[bytes] = set()  # every update digest ever revealed
        self.reveals_of: dict[str, int] = {}
        self.selections_of: dict[str, int] = {}
        self.total_staked = self.total_withdrawn = self.total_slashed = self.total_minted = 0
        self.gas_used = 50_000  # a nominal figure per transaction

    # -- helpers --------------------------------------------------------------------------------

    def now(self) -> int:
        return max(self.time, int(self.clock()))

    def _tx(self, sender: str, body: Callable[[list[LedgerEvent], int, str], None]) -> TxResult:
        """Run ``body`` atomically as one block: on a revert nothing changes, no block."""
        time = self.now()
        block = self.block + 1
        tx = "0x" + hashlib.sha256(f"{self.address}/{block}/{sender}".encode()).hexdigest()
        emitted: list[LedgerEvent] = []
        body(emitted, time, tx)  # raises TransactionReverted before mutating anything
        self.block, self.time = block, time
        self.log.extend(emitted)
        return TxResult(tx=tx, block=block, gas_used=self.gas_used)

    @staticmethod
    def _where(events: list[LedgerEvent], time: int, tx: str, block: int) -> dict[str, Any]:
        return {"block": block, "time": time, "tx": tx, "index": len(events)}

    def clock_of(self, rnd: int) -> RoundClock:
        st = self.rounds[rnd]
        return RoundClock.of(start=st.start, rules=self.rules, reveal_at=st.reveal_at,
                             attest_at=st.attest_at)  # fmt: skip

    def phase(self, rnd: int, now: int | None = None) -> int:
        if rnd == 0 or rnd > self.current_round:
            return PHASE_NOT_STARTED
        st = self.rounds[rnd]
        if st.status == 1:
            return PHASE_FINALIZED
        if st.status == 2:
            return PHASE_FAILED
        return self.clock_of(rnd).phase(self.now() if now is None else now)

    def _check_round(self, rnd: int, expected: int, now: int) -> None:
        if rnd != self.current_round or rnd == 0:
            raise TransactionReverted("not the current round")
        if self.phase(rnd, now) != expected:
            name = {PHASE_COMMIT: "commit", PHASE_REVEAL: "reveal"}.get(expected, "attest")
            raise TransactionReverted(f"not in {name} window")

    def _start_round(self, rnd: int, time: int, emit: Callable[..., None]) -> None:
        self.current_round = rnd
        self.rounds[rnd] = _RoundState(start=time, stake=self.active_stake,
                                       members=len(self.active))  # fmt: skip
        emit(RoundStarted, round=rnd, start=time, active_stake=self.active_stake,
             members=len(self.active))  # fmt: skip

    def _deactivate(self, member: str) -> None:
        self.active_stake -= self.stake[member]
        self.active.remove(member)

    def _quorum(self, rnd: int) -> int:
        return -(-self.rules.quorum_bps * self.rounds[rnd].stake // BPS)

    # -- transactions ---------------------------------------------------------------------

    def transact(self, sender: str, name: str, *args: Any, value: int = 0) -> TxResult:
        sender = _key(sender)
        method = getattr(self, f"_do_{name}")

        def body(events: list[LedgerEvent], time: int, tx: str) -> None:
            block = self.block + 1

            def emit(cls: type[LedgerEvent], **fields: Any) -> None:
                events.append(cls(**self._where(events, time, tx, block), **fields))

            method(sender, time, emit, *args, value=value)

        return self._tx(sender, body)

    def _do_allow(self, sender: str, time: int, emit: Any, account: str, *, value: int) -> None:
        if sender != self.owner:
            raise TransactionReverted("ownable: caller is not the owner")
        self.allowed.add(_key(account))

    def _do_grant_reader(self, sender: str, time: int, emit: Any, account: str, *,
                         value: int) -> None:  # fmt: skip
        if sender != self.owner:
            raise TransactionReverted("ownable: caller is not the owner")
        self.readers.add(_key(account))

    def _do_revoke_reader(self, sender: str, time: int, emit: Any, account: str, *,
                          value: int) -> None:  # fmt: skip
        if sender != self.owner:
            raise TransactionReverted("ownable: caller is not the owner")
        self.readers.discard(_key(account))

    def _do_join(self, sender: str, time: int, emit: Any, endpoint: str, *, value: int) -> None:
        status = self.status.get(sender, STATUS_NONE)
        if status == STATUS_ACTIVE:
            raise TransactionReverted("already a member")
        if status == STATUS_LEFT:
            raise TransactionReverted("withdraw first")
        if status == STATUS_SLASHED:
            raise TransactionReverted("slashed")
        if value < self.rules.min_stake:
            raise TransactionReverted("stake below minimum")
        if len(self.active) >= self.rules.max_participants:
            raise TransactionReverted("task is full")
        if self.rules.allowlist_only and sender not in self.allowed:
            raise TransactionReverted("not allowlisted")
        first = self.current_round + 1
        self.status[sender] = STATUS_ACTIVE
        self.stake[sender] = value
        self.endpoint[sender] = endpoint
        self.first_round[sender] = first
        self.active_stake += value
        self.total_staked += value
        self.active.append(sender)
        emit(Joined, member=sender, stake=value, endpoint=endpoint, first_round=first)

    def _do_leave(self, sender: str, time: int, emit: Any, *, value: int) -> None:
        if self.status.get(sender) != STATUS_ACTIVE:
            raise TransactionReverted("not a member")
        self._deactivate(sender)
        self.status[sender] = STATUS_LEFT
        self.withdraw_after[sender] = time + self.rules.cooldown
        emit(Left, member=sender, withdraw_after=time + self.rules.cooldown)

    def _do_withdraw(self, sender: str, time: int, emit: Any, *, value: int) -> None:
        if self.status.get(sender) != STATUS_LEFT:
            raise TransactionReverted("nothing to withdraw")
        if time < self.withdraw_after[sender]:
            raise TransactionReverted("cooldown not over")
        self.total_withdrawn += self.stake[sender]
        self.stake[sender] = 0
        self.status[sender] = STATUS_NONE
        self.withdraw_after[sender] = 0

    def _do_start(self, sender: str, time: int, emit: Any, *, value: int) -> None:
        if sender != self.owner:
            raise TransactionReverted("ownable: caller is not the owner")
        if self.current_round != 0:
            raise TransactionReverted("already started")
        self._start_round(1, time, emit)

    def _do_commit(self, sender: str, time: int, emit: Any, rnd: int, c: bytes, *,
                   value: int) -> None:  # fmt: skip
        self._check_round(rnd, PHASE_COMMIT, time)
        if self.status.get(sender) != STATUS_ACTIVE:
            raise TransactionReverted("not a member")
        if self.first_round[sender] > rnd:
            raise TransactionReverted("joined during this round")
        st = self.rounds[rnd]
        if sender in st.commits:
            raise TransactionReverted("already committed")
        if c == b"\x00" * 32:
            raise TransactionReverted("empty commitment")
        st.commits[sender] = bytes(c)
        if len(st.commits) == st.members:
            st.reveal_at = time
        emit(Committed, round=rnd, member=sender, commitment=bytes(c))

    def _do_reveal(self, sender: str, time: int, emit: Any, rnd: int, digest: bytes, cid: str,
                   num_examples: int, salt: bytes, *, value: int) -> None:  # fmt: skip
        self._check_round(rnd, PHASE_REVEAL, time)
        if self.status.get(sender) != STATUS_ACTIVE:
            raise TransactionReverted("not a member")
        st = self.rounds[rnd]
        if sender not in st.commits:
            raise TransactionReverted("no commitment")
        if sender in st.reveals:
            raise TransactionReverted("already revealed")
        if num_examples <= 0:
            raise TransactionReverted("no examples")
        if commitment(digest, sender, rnd, salt) != st.commits[sender]:
            raise TransactionReverted("reveal does not match commitment")
        if bytes(digest) in self.revealed_updates:
            raise TransactionReverted("update already revealed")
        self.revealed_updates.add(bytes(digest))
        st.reveals[sender] = (bytes(digest), num_examples)
        self.reveals_of[sender] = self.reveals_of.get(sender, 0) + 1
        if len(st.reveals) == len(st.commits):
            st.attest_at = time
        emit(Revealed, round=rnd, member=sender, update_digest=bytes(digest), cid=cid,
             num_examples=num_examples)  # fmt: skip

    def _do_attest(self, sender: str, time: int, emit: Any, rnd: int, model: bytes,
                   result: bytes, *, value: int) -> None:  # fmt: skip
        self._check_round(rnd, PHASE_ATTEST, time)
        if self.status.get(sender) != STATUS_ACTIVE:
            raise TransactionReverted("not a member")
        if self.first_round[sender] > rnd:
            raise TransactionReverted("joined during this round")
        st = self.rounds[rnd]
        pair = _pair(model, result)
        previous = st.attestations.get(sender)
        stake = self.stake[sender]
        if previous == pair:
            raise TransactionReverted("already attested")
        if previous is not None:
            st.tally[previous] -= stake
            self._deactivate(sender)
            self.status[sender] = STATUS_SLASHED
            self.stake[sender] = 0
            self.total_slashed += stake
            emit(Equivocated, round=rnd, member=sender, model_digest=bytes(model),
                 result_digest=bytes(result))  # fmt: skip
            emit(Slashed, member=sender, amount=stake, treasury=self.rules.treasury)
            return
        st.attestations[sender] = pair
        st.tally[pair] = st.tally.get(pair, 0) + stake
        emit(Attested, round=rnd, member=sender, model_digest=bytes(model),
             result_digest=bytes(result), stake=stake)  # fmt: skip
        if st.tally[pair] >= self._quorum(rnd):
            st.status, st.model, st.result = 1, bytes(model), bytes(result)
            emit(Finalized, round=rnd, model_digest=bytes(model), result_digest=bytes(result))
            self._start_round(rnd + 1, time, emit)

    def _do_skip(self, sender: str, time: int, emit: Any, rnd: int, *, value: int) -> None:
        if rnd != self.current_round or rnd == 0:
            raise TransactionReverted("not the current round")
        if self.phase(rnd, time) != PHASE_FAILED:
            raise TransactionReverted("round not expired")
        self.rounds[rnd].status = 2
        emit(Skipped, round=rnd)
        self._start_round(rnd + 1, time, emit)

    def _do_distribute(self, sender: str, time: int, emit: Any, rnd: int,
                       contributors: Sequence[str], scores: Sequence[int], *,
                       value: int) -> None:  # fmt: skip
        st = self.rounds.get(rnd)
        if st is None or st.status != 1:
            raise TransactionReverted("round not finalized")
        if st.distributed:
            raise TransactionReverted("already distributed")
        if len(contributors) != len(scores):
            raise TransactionReverted("length mismatch")
        if result_digest(contributors, scores) != st.result:
            raise TransactionReverted("result digest mismatch")
        previous = 0
        for c in contributors:
            position = int(_key(c), 16)
            if position <= previous:
                raise TransactionReverted("contributors not strictly increasing")
            previous = position
            if _key(c) not in st.reveals:
                raise TransactionReverted("contributor did not reveal")
        st.distributed = True
        total = sum(scores)
        minted = 0
        if total > 0:
            for c, score in zip(contributors, scores, strict=True):
                if score == 0:
                    continue
                self.selections_of[_key(c)] = self.selections_of.get(_key(c), 0) + 1
                emit(Selected, round=rnd, contributor=_key(c), score=score)
                amount = self.rules.reward_per_round * score // total
                if amount == 0 or self.status.get(_key(c)) == STATUS_SLASHED:
                    continue
                minted += amount
                self.tokens[_key(c)] = self.tokens.get(_key(c), 0) + amount
                emit(Rewarded, round=rnd, contributor=_key(c), amount=amount)
        self.total_minted += minted
        emit(Distributed, round=rnd, total=minted)

    def travel(self, seconds: int) -> None:
        """Test helper: an empty block ``seconds`` later."""
        self.block += 1
        self.time = self.now() + seconds


class MemoryLedger(TaskTransactions):
    """:class:`Ledger` over a :class:`MemoryTask`, acting as ``account``."""

    def __init__(self, task: MemoryTask, account: str) -> None:
        self.task = task
        self._account = _key(account)

    @property
    def account(self) -> str:
        return self._account

    @property
    def task_address(self) -> str:
        return self.task.address

    @property
    def chain_id(self) -> int:
        return MEMORY_CHAIN_ID

    def rules(self) -> TaskRules:
        return self.task.rules

    def now(self) -> int:
        return self.task.now()

    def head(self) -> int:
        return self.task.block

    def events(self, after: int, until: int | None = None) -> list[LedgerEvent]:
        last = self.task.block if until is None else until
        return [e for e in self.task.log if after < e.block <= last]

    def members(self) -> list[Member]:
        t = self.task
        return sorted(
            (Member(address=a, endpoint=t.endpoint[a], stake=t.stake[a],
                    first_round=t.first_round[a]) for a in t.active),
            key=lambda m: m.address.lower(),
        )  # fmt: skip

    def member_count(self) -> int:
        return len(self.task.active)

    def status_of(self, account: str) -> int:
        return self.task.status.get(_key(account), STATUS_NONE)

    def reputation(self, account: str) -> tuple[int, int]:
        key = _key(account)
        return self.task.selections_of.get(key, 0), self.task.reveals_of.get(key, 0)

    def current_round(self) -> int:
        return self.task.current_round

    def round_clock(self, round: int) -> RoundClock:
        if round not in self.task.rounds:
            rules = self.task.rules
            return RoundClock(start=0, reveal_opens=rules.commit_window,
                              attest_opens=rules.commit_window + rules.reveal_window,
                              attest_closes=rules.commit_window + rules.reveal_window
                              + rules.attest_window)  # fmt: skip
        return self.task.clock_of(round)

    def phase(self, round: int) -> int:
        return self.task.phase(round)

    def model_digest(self, round: int) -> bytes:
        st = self.task.rounds.get(round)
        return st.model if st is not None else b"\x00" * 32

    def is_reader(self, account: str) -> bool:
        return _key(account) in self.task.readers

    def can_download(self, account: str) -> bool:
        policy = self.task.rules.access_policy
        if policy == 2 or _key(account) in self.task.readers:
            return True
        if self.status_of(account) == STATUS_ACTIVE:
            return True
        return policy == 1 and self.token_balance(account) > 0

    def token_balance(self, account: str) -> int:
        return self.task.tokens.get(_key(account), 0)

    def token_supply(self) -> int:
        return self.task.total_minted

    def _send(self, name: str, *args: Any, value: int = 0) -> TxResult:
        return self.task.transact(self._account, name, *args, value=value)
