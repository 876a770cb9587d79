"""The Task contract's rules in Python (ledger v2): a fast, deterministic ledger.

:class:`MemoryTask` is one task's shared state (members, rounds, rewards, tokens) with an
injected clock; :class:`MemoryLedger` is one account's handle on it (a
:class:`~fedledger.ledger.records.Ledger`). They pass the same suite as the contract
(tests/ledger/test_ledger_suite.py): the same checks in the same order, the contract's exact
revert reasons, the same events and views. Signatures are verified as the contract does
(EIP-712, the task's chain id and address: :attr:`MemoryTask.chain_id`,
:attr:`MemoryTask.address`). Nothing here imports web3: node and protocol tests run without a
chain.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from fedledger.errors import ConfigError, LedgerError, MessageError, TransactionReverted
from fedledger.gossip.identity import recover_digest
from fedledger.ledger.messages import (
    ROUND_TYPE,
    ZERO32,
    RoundMessage,
    SignedRound,
    domain_separator,
    pair_hash,
)
from fedledger.ledger.records import (
    Claimed,
    Closed,
    CommitteeSampled,
    Configured,
    Consent,
    Distributed,
    Equivocated,
    Finalized,
    Joined,
    Keys,
    LedgerEvent,
    Left,
    Member,
    Moved,
    Quorate,
    RoundClock,
    RoundStarted,
    Skipped,
    Slashed,
    Submitted,
    TaskRules,
    TaskTransactions,
    TxResult,
)
from fedledger.ledger.rules import (
    ACCESS_PUBLIC,
    ACCESS_TOKEN_HOLDERS,
    BPS,
    PHASE_AGGREGATE,
    PHASE_ATTEST,
    PHASE_FAILED,
    PHASE_FINALIZED,
    PHASE_NOT_STARTED,
    PHASE_OPEN,
    STATUS_ACTIVE,
    STATUS_LEFT,
    STATUS_NONE,
    STATUS_SLASHED,
    ZERO_ADDRESS,
    committee_seed,
    consent_digest,
    lineage_hash,
    result_digest,
    sample_committee,
)

__all__ = ["MEMORY_CHAIN_ID", "MemoryLedger", "MemoryTask"]

MEMORY_CHAIN_ID = 0
"""The in-memory ledger is on no chain: its messages are signed for chain id 0."""

# The contract's constants.
MAX = 256
MAX_PAIRS = 16
SLASH_SHARE_BPS = 1000
MAX_WINDOW = 7 * 86400
MAX_COOLDOWN = 365 * 86400
MAX_ROUNDS = 1_000_000
MAX_STAKE = 2**96 - 1
MAX_EARNED = 2**88 - 1
MAX_SCORE = 2**128 - 1
MAX_EXAMPLES = 2**64 - 1
RING = 8
MAX_CONFIG = 8192
MAX_POLICY = 2048

_OPEN, _FINALIZED, _FAILED = 0, 1, 2
_ROUND_TYPEHASH = keccak(ROUND_TYPE.encode())


@dataclass
class _Record:
    """A member's record (the contract's packed ``_record`` word)."""

    status: int = STATUS_NONE
    first_round: int = 0
    last_round: int = 0
    stake: int = 0
    earned: int = 0


@dataclass
class _Round:
    """A round's state (its ring slot: ``_round``, ``_stakes``, ``_model``, ``_result``)."""

    start: int
    members: int
    stake: int
    quorum_at: int = 0
    closed_at: int = 0
    count: int = 0
    submitted: int = 0
    distributed: bool = False
    model: bytes = ZERO32
    result: bytes = ZERO32
    tally: dict[bytes, int] = field(default_factory=dict)


def _key(address: str) -> str:
    return to_checksum_address(address)


def _word32(value: bytes) -> bytes:
    """A ``bytes32`` argument as the contract's ABI takes it (anything else: web3 refuses it
    before sending, a :class:`~fedledger.errors.LedgerError`)."""
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise LedgerError(f"expected 32 bytes, got {value!r}")
    return bytes(value)


_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


def _recover(digest: bytes, r: int, vs: int) -> str:
    """snekmate's ``_try_recover_r_vs`` (no web3): the signer, or its reverts."""
    s = vs & ((1 << 255) - 1)
    if s > _HALF_N:
        raise TransactionReverted("ecdsa: invalid signature `s` value")
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((27 + (vs >> 255),))
    try:
        return recover_digest(digest, signature)
    except MessageError:  # ecrecover gives the zero address
        raise TransactionReverted("ecdsa: invalid signature") from None


class MemoryTask:
    """The Task contract's rules in Python: one shared state behind many :class:`MemoryLedger`
    handles. Every transaction is its own block, stamped ``max(previous, int(clock()))``, and
    is atomic (a revert changes nothing). ETH is modelled by the task's books only: stakes in,
    withdrawals and slashing payouts out (:attr:`paid_out`).

    ``rules.governor`` may change the governable rules (``reconfigure``). With ``document``
    (the task's configuration document, hashing to ``rules.config_digest``) the deployment is
    block 1 and emits ``Configured`` for round 1, as the contract's does."""

    def __init__(
        self,
        rules: TaskRules,
        *,
        owner: str,
        clock: Callable[[], float],
        address: str = "0x" + "7a" * 20,
        chain_id: int = MEMORY_CHAIN_ID,
        document: bytes | None = None,
    ) -> None:
        checks = [
            (5000 < rules.quorum_bps <= BPS, "quorum not in (5000, 10000]", "quorum_bps"),
            (rules.min_stake > 0, "min stake is zero", "min_stake"),
            (rules.min_stake <= MAX_STAKE, "min stake above 2**96 - 1", "min_stake"),
            (0 < rules.window <= MAX_WINDOW, "window not in (0, 7 days]", "window"),
            (rules.grace <= rules.window, "grace above the window", "grace"),
            (0 < rules.cooldown <= MAX_COOLDOWN, "cooldown not in (0, 365 days]", "cooldown"),
            (0 < rules.max_rounds <= MAX_ROUNDS, "max rounds not in (0, 1000000]", "max_rounds"),
            (0 < rules.max_participants <= MAX, "max participants not in (0, 256]",
             "max_participants"),
            (rules.reward_per_round * rules.max_rounds <= MAX_EARNED,
             "total reward above 2**88 - 1", "reward_per_round"),
            (rules.access_policy <= ACCESS_PUBLIC, "unknown access policy", "access_policy"),
            (rules.committee == 0 or 3 <= rules.committee < rules.max_participants,
             "committee not 0 or in [3, max)", "committee"),
        ]  # fmt: skip
        if document is not None and hashlib.sha256(document).digest() != rules.config_digest:
            checks.append((False, "config digest is not the document's", "config_digest"))
        for ok, message, name in checks:
            if not ok:
                raise ConfigError(message, field=name)
        # The governable rules, one TaskRules per epoch (increasing from_round).
        self.epochs: list[TaskRules] = [replace(rules, governor=_key(rules.governor),
                                                from_round=1)]  # fmt: skip
        self.owner = _key(owner)
        self.clock = clock
        self.address = _key(address)
        self.chain_id = chain_id
        self._domain = domain_separator(chain_id, self.address)
        self.block = 0
        self.time = int(clock())
        self.log: list[LedgerEvent] = []
        self.allowed: set[str] = set()
        self.readers: set[str] = set()
        self.endpoint: dict[str, str] = {}
        self.withdraw_after: dict[str, int] = {}
        self.claimed: dict[str, int] = {}
        self.records: dict[str, _Record] = {}
        self.active: list[str] = []  # the contract's _members, swap-and-pop order
        self.active_stake = 0
        self.current_round = 0
        self.rounds: dict[int, _Round] = {}
        self.outcomes: dict[int, int] = {}
        self.tallies: dict[int, dict[bytes, int]] = {}
        self.tokens: dict[str, int] = {}
        self.paid_out: dict[str, int] = {}  # ETH sent by withdraw and slash
        self.total_staked = self.total_withdrawn = self.total_slashed = 0
        self.total_earned = self.total_claimed = 0
        self.treasury_owed = 0  # what a slash could not pay the treasury (never, in memory)
        self.lineage_round = 0  # the last finalized round
        self.lineage_hash = ZERO32
        self.committee = rules.committee
        self.committee_stake: dict[int, int] = {}  # by round: its committee's (0: none)
        self.drawn: dict[str, tuple[int, ...]] = {}  # the last two rounds that drew a member
        self.gas_used = 50_000  # a nominal figure per transaction
        if document is not None:  # the deployment: block 1
            self.block = 1
            tx = "0x" + hashlib.sha256(f"{self.address}/1/{self.owner}".encode()).hexdigest()
            # Index 1: the contract's deployment logs OwnershipTransferred first.
            self.log.append(Configured(block=1, time=self.time, tx=tx, index=1, from_round=1,
                                       config_digest=rules.config_digest,
                                       document=bytes(document)))  # fmt: skip

    # -- views ------------------------------------------------------------------------------

    def now(self) -> int:
        return max(self.time, int(self.clock()))

    @property
    def rules(self) -> TaskRules:
        """The rules in force for the current round (round 1's before the start)."""
        return self.rules_at(self.current_round)

    def rules_at(self, rnd: int) -> TaskRules:
        """The rules in force for round ``rnd`` (round 0: round 1's)."""
        for rules in reversed(self.epochs):
            if rules.from_round <= rnd:
                return rules
        return self.epochs[0]

    def record(self, account: str) -> _Record:
        return self.records.get(_key(account), _Record())

    def word(self, rnd: int) -> _Round | None:
        """The round's state while in the ring (``_word``: None for 0)."""
        if rnd < 1 or rnd > self.current_round or rnd <= self.current_round - RING:
            return None
        return self.rounds.get(rnd)

    def outcome(self, rnd: int) -> int:
        return self.outcomes.get(rnd, _OPEN)

    def closes_at(self, st: _Round | None) -> int:
        if st is None or st.start == 0:
            return 0
        if st.closed_at != 0:
            return st.closed_at
        end = st.start + self.rules.window
        if st.quorum_at != 0 and st.quorum_at + self.rules.grace < end:
            return st.quorum_at + self.rules.grace
        return end

    def round_clock(self, rnd: int) -> RoundClock:
        st = self.word(rnd)
        if st is None:
            return RoundClock(start=0, closes_at=0)
        return RoundClock.of(start=st.start, rules=self.rules, quorum_at=st.quorum_at or None,
                             closed_at=st.closed_at or None)  # fmt: skip

    def phase(self, rnd: int, now: int | None = None) -> int:
        now = self.now() if now is None else now
        if rnd == 0 or rnd > self.current_round:
            return PHASE_NOT_STARTED
        outcome = self.outcome(rnd)
        if outcome == _FINALIZED:
            return PHASE_FINALIZED
        if outcome == _FAILED:
            return PHASE_FAILED
        if now < self.closes_at(self.word(rnd)):
            return PHASE_OPEN
        if rnd == self.current_round:
            return PHASE_AGGREGATE
        if now < self.closes_at(self.word(rnd + 1)):
            return PHASE_ATTEST
        return PHASE_FAILED

    def quorum_stake(self, rnd: int, *, over: int | None = None) -> int:
        """Round ``rnd``'s quorum_bps of round ``over``'s stake (default: ``rnd``'s own; a
        committee round attests the round before against its committee's stake)."""
        base = rnd if over is None else over
        st = self.rounds.get(base) if base > self.current_round - RING else None
        stake = 0 if st is None else st.stake
        return (self.rules_at(rnd).quorum_bps * stake + BPS - 1) // BPS

    def model_digest(self, rnd: int) -> bytes:
        st = self.word(rnd)
        return ZERO32 if st is None else st.model

    def message_hash(self, rnd: int, update: bytes, examples: int, model: bytes,
                     result: bytes) -> bytes:  # fmt: skip
        struct = keccak(abi_encode(
            ["bytes32", "uint256", "bytes32", "uint256", "bytes32", "bytes32"],
            [_ROUND_TYPEHASH, rnd, update, examples, model, result],
        ))  # fmt: skip
        return keccak(b"\x19\x01" + self._domain + struct)

    def _signer(self, rnd: int, update: bytes, examples: int, model: bytes, result: bytes,
                r: int, vs: int) -> str:  # fmt: skip
        """The message's signer, as the contract recovers it (or its revert)."""
        if vs & ((1 << 255) - 1) > _HALF_N:
            raise TransactionReverted("ecdsa: invalid signature `s` value")
        try:
            message = RoundMessage(round=rnd, update=update, examples=examples, model=model,
                                   result=result)  # fmt: skip
        except MessageError:  # a message the contract takes but RoundMessage refuses
            return _recover(self.message_hash(rnd, update, examples, model, result), r, vs)
        try:
            return SignedRound(message=message, signer=ZERO_ADDRESS, r=r, vs=vs).recover(
                self.chain_id, self.address
            )
        except MessageError:
            raise TransactionReverted("ecdsa: invalid signature") from None

    # -- transactions -----------------------------------------------------------------------

    _STATE = (
        "allowed", "readers", "endpoint", "withdraw_after", "claimed", "records", "active",
        "active_stake", "current_round", "rounds", "outcomes", "tallies", "tokens", "paid_out",
        "total_staked", "total_withdrawn", "total_slashed", "total_earned", "total_claimed",
        "treasury_owed", "epochs", "lineage_round", "lineage_hash", "committee_stake", "drawn",
    )  # fmt: skip

    def transact(self, sender: str, name: str, *args: Any, value: int = 0) -> TxResult:
        """Run ``name`` as one block: on a revert nothing changes, and there is no block."""
        sender = _key(sender)
        method = getattr(self, f"_do_{name}")
        time = self.now()
        block = self.block + 1
        tx = "0x" + hashlib.sha256(f"{self.address}/{block}/{sender}".encode()).hexdigest()
        emitted: list[LedgerEvent] = []

        def emit(cls: type[LedgerEvent], **fields: Any) -> None:
            emitted.append(cls(block=block, time=time, tx=tx, index=len(emitted), **fields))

        saved = {name: copy.deepcopy(getattr(self, name)) for name in self._STATE}
        try:
            method(sender, time, emit, *args, value=value)
        except TransactionReverted:
            for key, kept in saved.items():
                setattr(self, key, kept)
            raise
        self.block, self.time = block, time
        self.log.extend(emitted)
        return TxResult(tx=tx, block=block, gas_used=self.gas_used)

    def _check_owner(self, sender: str) -> None:
        if sender != self.owner:
            raise TransactionReverted("ownable: caller is not the owner")

    def _do_allow(self, sender: str, time: int, emit: Any, account: str, *, value: int) -> None:
        self._check_owner(sender)
        self.allowed.add(_key(account))

    def _do_disallow(self, sender: str, time: int, emit: Any, account: str, *,
                     value: int) -> None:  # fmt: skip
        self._check_owner(sender)
        self.allowed.discard(_key(account))

    def _do_grant_reader(self, sender: str, time: int, emit: Any, account: str, *,
                         value: int) -> None:  # fmt: skip
        self._check_owner(sender)
        self.readers.add(_key(account))

    def _do_revoke_reader(self, sender: str, time: int, emit: Any, account: str, *,
                          value: int) -> None:  # fmt: skip
        self._check_owner(sender)
        self.readers.discard(_key(account))

    def _do_reconfigure(self, sender: str, time: int, emit: Any, rule_id: int,
                        rule_params_digest: bytes, quorum_bps: int, min_stake: int,
                        allowlist_only: bool, reward_per_round: int, access_policy: int,
                        document: bytes, *, value: int) -> None:  # fmt: skip
        rule_params_digest = _word32(rule_params_digest)
        for name, number, bits in (("rule_id", rule_id, 8), ("quorum_bps", quorum_bps, 16),
                                   ("min_stake", min_stake, 256),
                                   ("reward_per_round", reward_per_round, 256),
                                   ("access_policy", access_policy, 8)):  # fmt: skip
            if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 2**bits:
                raise LedgerError(f"{name}: not a uint{bits}: {number!r}")
        if not isinstance(allowlist_only, bool):
            raise LedgerError(f"allowlist_only: not a bool: {allowlist_only!r}")
        if len(document) > MAX_CONFIG:  # the contract's argument decoding refuses it
            raise TransactionReverted(None)
        governor = self.epochs[0].governor
        if governor == ZERO_ADDRESS:
            raise TransactionReverted("no governor")
        if sender != governor:
            raise TransactionReverted("not the governor")
        max_rounds = self.epochs[0].max_rounds
        checks = [
            (5000 < quorum_bps <= BPS, "quorum not in (5000, 10000]"),
            (min_stake > 0, "min stake is zero"),
            (min_stake <= MAX_STAKE, "min stake above 2**96 - 1"),
            (reward_per_round * max_rounds <= MAX_EARNED, "total reward above 2**88 - 1"),
            (access_policy <= ACCESS_PUBLIC, "unknown access policy"),
            (len(document) > 0, "config document is empty"),
        ]
        for ok, reason in checks:
            if not ok:
                raise TransactionReverted(reason)
        digest = hashlib.sha256(document).digest()
        first = self.current_round + 1
        rules = replace(self.epochs[-1], rule_id=rule_id, rule_params_digest=rule_params_digest,
                        config_digest=digest, quorum_bps=quorum_bps, min_stake=min_stake,
                        allowlist_only=allowlist_only, reward_per_round=reward_per_round,
                        access_policy=access_policy, from_round=first)  # fmt: skip
        if self.epochs[-1].from_round == first:  # a change not in force yet: replaced
            self.epochs[-1] = rules
        else:
            self.epochs.append(rules)
        emit(Configured, from_round=first, config_digest=digest, document=bytes(document))

    def _do_join(self, sender: str, time: int, emit: Any, endpoint: str, consent: bytes = b"",
                 *, value: int) -> None:  # fmt: skip
        if len(consent) > MAX_POLICY:  # the contract's argument decoding refuses it
            raise TransactionReverted(None)
        rec = self.record(sender)
        if rec.status == STATUS_ACTIVE:
            raise TransactionReverted("already a member")
        if rec.status == STATUS_LEFT:
            raise TransactionReverted("withdraw first")
        if rec.status == STATUS_SLASHED:
            raise TransactionReverted("slashed")
        rules = self.rules  # the current round's
        if value < rules.min_stake:
            raise TransactionReverted("stake below minimum")
        if value > MAX_STAKE:
            raise TransactionReverted("stake above 2**96 - 1")
        if len(self.active) >= rules.max_participants:
            raise TransactionReverted("task is full")
        if rules.allowlist_only and sender not in self.allowed:
            raise TransactionReverted("not allowlisted")
        first = self.current_round + 1
        # A member that left and withdrew keeps its earned reward and its last round.
        self.records[sender] = _Record(STATUS_ACTIVE, first, rec.last_round, value, rec.earned)
        self.endpoint[sender] = endpoint
        self.active_stake += value
        self.total_staked += value
        self.active.append(sender)
        emit(Joined, member=sender, stake=value, endpoint=endpoint, first_round=first)
        if consent:
            emit(Consent, member=sender, digest=consent_digest(bytes(consent)),
                 policy=bytes(consent), from_round=first)  # fmt: skip

    def _do_set_consent(self, sender: str, time: int, emit: Any, policy: bytes, *,
                        value: int) -> None:  # fmt: skip
        if len(policy) > MAX_POLICY:  # the contract's argument decoding refuses it
            raise TransactionReverted(None)
        if self.record(sender).status != STATUS_ACTIVE:
            raise TransactionReverted("not a member")
        emit(Consent, member=sender, digest=consent_digest(bytes(policy)), policy=bytes(policy),
             from_round=self.current_round + 1)  # fmt: skip

    def _deactivate(self, member: str, stake: int) -> None:
        self.active_stake -= stake
        position = self.active.index(member)
        last = self.active.pop()
        if last != member:
            self.active[position] = last

    def _do_move(self, sender: str, time: int, emit: Any, endpoint: str, *, value: int) -> None:
        if self.record(sender).status != STATUS_ACTIVE:
            raise TransactionReverted("not a member")
        self.endpoint[sender] = endpoint
        emit(Moved, member=sender, endpoint=endpoint)

    def _do_set_keys(self, sender: str, time: int, emit: Any, channel_key: bytes,
                     keys_digest: bytes, first_round: int, last_round: int, recipients: int, *,
                     value: int) -> None:  # fmt: skip
        channel_key, keys_digest = _word32(channel_key), _word32(keys_digest)
        if self.record(sender).status != STATUS_ACTIVE:
            raise TransactionReverted("not a member")
        if channel_key == ZERO32:
            raise TransactionReverted("zero key")
        if keys_digest == ZERO32:
            if first_round != 0 or last_round != 0 or recipients != 0:
                raise TransactionReverted("bad rounds")
        elif not 1 <= first_round <= last_round:
            raise TransactionReverted("bad rounds")
        emit(Keys, member=sender, channel_key=channel_key, keys_digest=keys_digest,
             first_round=first_round, last_round=last_round, recipients=recipients)  # fmt: skip

    def _do_leave(self, sender: str, time: int, emit: Any, *, value: int) -> None:
        rec = self.record(sender)
        if rec.status != STATUS_ACTIVE:
            raise TransactionReverted("not a member")
        self._deactivate(sender, rec.stake)
        self.records[sender] = _Record(STATUS_LEFT, rec.first_round, rec.last_round, rec.stake,
                                       rec.earned)  # fmt: skip
        after = time + self.rules.window + self.rules.cooldown
        self.withdraw_after[sender] = after
        emit(Left, member=sender, withdraw_after=after)

    def _do_withdraw(self, sender: str, time: int, emit: Any, *, value: int) -> None:
        rec = self.record(sender)
        if rec.status != STATUS_LEFT:
            raise TransactionReverted("nothing to withdraw")
        if time < self.withdraw_after.get(sender, 0):
            raise TransactionReverted("cooldown not over")
        amount = rec.stake
        self.records[sender] = _Record(STATUS_NONE, rec.first_round, rec.last_round, 0,
                                       rec.earned)  # fmt: skip
        self.withdraw_after[sender] = 0
        self.total_withdrawn += amount
        self.paid_out[sender] = self.paid_out.get(sender, 0) + amount  # Withdrawn: no record

    # -- rounds -----------------------------------------------------------------------------

    def _do_start(self, sender: str, time: int, emit: Any, *, value: int) -> None:
        self._check_owner(sender)
        if self.current_round != 0:
            raise TransactionReverted("already started")
        if self.committee:
            self._sample(1, emit)
        self._open(1, time, emit)

    def block_hash(self, number: int) -> bytes:
        """The twin's blocks have no header: a hash of the task and the number stands in."""
        return hashlib.sha256(f"{self.address}/block/{number}".encode()).digest()

    def _sample(self, rnd: int, emit: Any) -> None:
        """Round ``rnd``'s committee, drawn in this transaction's block as the contract draws
        it; the twin's prevrandao is 0 and its parent hash :meth:`block_hash`'s."""
        if len(self.active) <= self.committee:
            self.committee_stake[rnd] = 0
            return
        seed = committee_seed(prevrandao=0, parent_hash=self.block_hash(self.block),
                              task=self.address, round=rnd)  # fmt: skip
        chosen = sample_committee(seed, self.active, self.committee)
        stake = sum(self.records[m].stake for m in chosen)
        for m in chosen:
            self.drawn[m] = (*self.drawn.get(m, ())[-1:], rnd)
        self.committee_stake[rnd] = stake
        self.committee_stake.pop(rnd - RING, None)
        emit(CommitteeSampled, round=rnd, seed=seed, members=chosen, stake=stake)

    def _open(self, rnd: int, time: int, emit: Any) -> None:
        self.current_round = rnd
        members, stake = len(self.active), self.active_stake
        if self.committee:
            if self.committee_stake.get(rnd):
                members, stake = self.committee, self.committee_stake[rnd]
            if rnd <= self.rules.max_rounds:
                self._sample(rnd + 1, emit)
        self.rounds[rnd] = _Round(start=time, members=members, stake=stake)
        self.rounds.pop(rnd - RING, None)  # the ring slot is reused
        self.tallies.pop(rnd - RING - 1, None)  # counts no batch can read again (kept small)
        emit(RoundStarted, round=rnd, start=time, active_stake=stake, members=members)

    def _fail_unfinalized(self, rnd: int, emit: Any) -> None:
        if rnd == 0:
            return
        if self.outcome(rnd) == _OPEN:
            self.outcomes[rnd] = _FAILED
            emit(Skipped, round=rnd)

    def _advance(self, rnd: int, time: int, emit: Any) -> None:
        current = self.current_round
        if rnd == current:
            return
        if current == 0:
            raise TransactionReverted("not started")
        if rnd != current + 1:
            raise TransactionReverted("not the current round")
        if rnd > self.rules.max_rounds + 1:
            raise TransactionReverted("task is over")
        if time < self.closes_at(self.word(current)):
            raise TransactionReverted("current round still open")
        self._fail_unfinalized(current - 1, emit)
        self._open(rnd, time, emit)

    def _do_close(self, sender: str, time: int, emit: Any, *, value: int) -> None:
        current = self.current_round
        if current == 0:
            raise TransactionReverted("not started")
        if time < self.closes_at(self.word(current)):
            raise TransactionReverted("current round still open")
        if not (current > 1 and self.outcome(current - 1) == _OPEN):
            raise TransactionReverted("nothing to close")
        self._fail_unfinalized(current - 1, emit)

    def _do_submit(
        self,
        sender: str,
        time: int,
        emit: Any,
        rnd: int,
        pairs: Sequence[tuple[bytes, bytes]],
        entries: Sequence[tuple[bytes, int, int, int, int]],
        contributors: Sequence[str],
        scores: Sequence[int],
        transcript: bytes,
        *,
        value: int,
    ) -> None:
        transcript = _word32(transcript)
        self._advance(rnd, time, emit)
        st = self.word(rnd)
        if not time < self.closes_at(st):
            raise TransactionReverted("round closed")
        assert st is not None
        previous = rnd - 1
        prev_open = previous != 0 and self.outcome(previous) == _OPEN
        tally = self.tallies.setdefault(previous, {})
        hashes: list[bytes] = []
        sums: list[int] = []
        first: list[int] = []  # a pair listed twice counts in one sum: its first position's
        for model, result in pairs:
            h = pair_hash(bytes(model), bytes(result))
            at = hashes.index(h) if h in hashes else len(hashes)
            first.append(at)
            hashes.append(h)
            sums.append(tally.get(h, 0) if prev_open and at == len(sums) else 0)
        # A committee round: only its members sign, and they attest round - 1 against the
        # committee's stake.
        drawn = bool(self.committee and self.committee_stake.get(rnd))
        quorum = 0
        if prev_open:
            quorum = self.quorum_stake(previous, over=rnd if drawn else previous)
        for update, examples, index, r, vs in entries:
            if index >= len(pairs):
                raise TransactionReverted("pair index out of range")
            model, result = bytes(pairs[index][0]), bytes(pairs[index][1])
            update = bytes(update)
            signer = self._signer(rnd, update, examples, model, result, r, vs)
            rec = self.record(signer)
            if rec.status != STATUS_ACTIVE:
                raise TransactionReverted("signer is not a member")
            if rec.first_round > rnd:
                raise TransactionReverted("signer joined during this round")
            if drawn and rnd not in self.drawn.get(signer, ()):
                raise TransactionReverted("signer not in the committee")
            if rec.last_round == rnd:
                continue
            if update == ZERO32:
                if examples != 0:
                    raise TransactionReverted("examples without an update")
            else:
                if rnd > self.rules.max_rounds:
                    raise TransactionReverted("no updates after the last round")
                if not 0 < examples <= MAX_EXAMPLES:
                    raise TransactionReverted("examples not in [1, 2**64)")
            rec.last_round = rnd
            self.records[signer] = rec
            st.count += 1
            st.submitted += rec.stake
            emit(Submitted, round=rnd, member=signer, update=update, examples=examples,
                 model=model, result=result, r=r, vs=vs)  # fmt: skip
            if prev_open and (drawn or rec.first_round <= previous) and model != ZERO32:
                at = first[index]
                sums[at] += rec.stake
                if sums[at] >= quorum:
                    prev_open = False
                    self._finalize(previous, model, result, sums[at], emit)
        if prev_open:  # a batch that did not finalize round - 1 keeps its counts
            for i, (model, _) in enumerate(pairs):
                if sums[i] != 0 and bytes(model) != ZERO32:
                    tally[hashes[i]] = sums[i]
        if st.closed_at == 0 and st.count == st.members:
            st.closed_at = time
            emit(Closed, round=rnd)
        if st.quorum_at == 0 and st.submitted >= self.quorum_stake(rnd):
            st.quorum_at = time
            if st.closed_at == 0:
                emit(Quorate, round=rnd)
        if len(contributors) > 0 and previous != 0:
            self._distribute(previous, contributors, scores, transcript, False, emit)

    def _finalize(self, rnd: int, model: bytes, result: bytes, stake: int, emit: Any) -> None:
        st = self.rounds[rnd]
        self.outcomes[rnd] = _FINALIZED
        st.model, st.result = model, result
        self.lineage_hash = lineage_hash(self.lineage_hash, rnd, model)
        self.lineage_round = rnd
        emit(Finalized, round=rnd, model_digest=model, result_digest=result, stake=stake)

    def _do_distribute(self, sender: str, time: int, emit: Any, rnd: int,
                       contributors: Sequence[str], scores: Sequence[int], transcript: bytes,
                       *, value: int) -> None:  # fmt: skip
        self._distribute(rnd, contributors, scores, _word32(transcript), True, emit)

    def _distribute(self, rnd: int, contributors: Sequence[str], scores: Sequence[int],
                    transcript: bytes, strict: bool, emit: Any) -> None:  # fmt: skip
        st = self.word(rnd)
        if st is None or self.outcome(rnd) != _FINALIZED or st.distributed:
            if strict:
                raise TransactionReverted("round not finalized, or already distributed")
            return
        if (len(contributors) != len(scores)
                or result_digest(contributors, scores, transcript) != st.result):  # fmt: skip
            if strict:
                raise TransactionReverted("result digest mismatch")
            return
        previous = 0
        for c, score in zip(contributors, scores, strict=True):
            position = int(_key(c), 16)
            if position <= previous:
                if strict:
                    raise TransactionReverted("contributors not strictly increasing")
                return
            previous = position
            if score > MAX_SCORE:
                if strict:
                    raise TransactionReverted("score above 2**128 - 1")
                return
        total = sum(scores)
        st.distributed = True
        reward = self.rules_at(rnd).reward_per_round  # the round's own
        minted = 0
        if total > 0:
            for c, score in zip(contributors, scores, strict=True):
                if score == 0:
                    continue
                amount = reward * score // total
                rec = self.record(c)
                if rec.status == STATUS_SLASHED:
                    amount = 0
                if amount > 0:
                    rec.earned += amount
                    self.records[_key(c)] = rec
                    minted += amount
        self.total_earned += minted
        named = tuple(_key(c) for c in contributors)
        emit(Distributed, round=rnd, total=minted, contributors=named, scores=tuple(scores),
             transcript=transcript)  # fmt: skip

    def _do_claim(self, sender: str, time: int, emit: Any, account: str, *, value: int) -> None:
        account = _key(account)
        rec = self.record(account)
        if rec.status == STATUS_SLASHED:
            raise TransactionReverted("slashed")
        amount = rec.earned - self.claimed.get(account, 0)
        if not amount > 0:
            raise TransactionReverted("nothing to claim")
        self.claimed[account] = rec.earned
        self.total_claimed += amount
        emit(Claimed, member=account, amount=amount)
        self.tokens[account] = self.tokens.get(account, 0) + amount

    # -- evidence ---------------------------------------------------------------------------

    def _do_slash(self, sender: str, time: int, emit: Any, rnd: int,
                  a: tuple[bytes, int, bytes, bytes, int, int],
                  b: tuple[bytes, int, bytes, bytes, int, int], *, value: int) -> None:  # fmt: skip
        ha = self.message_hash(rnd, bytes(a[0]), a[1], bytes(a[2]), bytes(a[3]))
        hb = self.message_hash(rnd, bytes(b[0]), b[1], bytes(b[2]), bytes(b[3]))
        if ha == hb:
            raise TransactionReverted("the messages are the same")
        signer = self._signer(rnd, bytes(a[0]), a[1], bytes(a[2]), bytes(a[3]), a[4], a[5])
        other = self._signer(rnd, bytes(b[0]), b[1], bytes(b[2]), bytes(b[3]), b[4], b[5])
        if other != signer:
            raise TransactionReverted("different signers")
        rec = self.record(signer)
        if rec.status not in (STATUS_ACTIVE, STATUS_LEFT):
            raise TransactionReverted("no stake to slash")
        if rnd < rec.first_round:
            raise TransactionReverted("offence before this membership")
        stake = rec.stake
        if rec.status == STATUS_ACTIVE:
            self._deactivate(signer, stake)
        self.records[signer] = _Record(STATUS_SLASHED, rec.first_round, rec.last_round, 0,
                                       rec.earned)  # fmt: skip
        self.withdraw_after[signer] = 0
        self.total_slashed += stake
        share = stake * SLASH_SHARE_BPS // BPS
        emit(Equivocated, round=rnd, member=signer, first=ha, second=hb)
        emit(Slashed, member=signer, amount=stake, submitter=sender, share=share)
        if share > 0:
            self.paid_out[sender] = self.paid_out.get(sender, 0) + share
        if stake > share:  # the in-memory treasury never refuses a payment: nothing owed
            treasury = _key(self.rules.treasury)
            self.paid_out[treasury] = self.paid_out.get(treasury, 0) + stake - share

    def _do_pay_treasury(self, sender: str, time: int, emit: Any, *, value: int) -> None:
        if self.treasury_owed <= 0:
            raise TransactionReverted("nothing owed")
        self.paid_out[_key(self.rules.treasury)] = (
            self.paid_out.get(_key(self.rules.treasury), 0) + self.treasury_owed
        )
        self.treasury_owed = 0

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
        return self.task.chain_id

    def rules(self) -> TaskRules:
        return self.task.rules

    def rules_at(self, round: int) -> TaskRules:
        return self.task.rules_at(round)

    def now(self) -> int:
        return self.task.now()

    def head(self) -> int:
        return self.task.block

    def block_hash(self, number: int) -> bytes:
        """The twin's blocks have no header: a hash of the task and the number stands in."""
        if not 0 <= number <= self.task.block:
            raise LedgerError(f"block {number} is not mined")
        return self.task.block_hash(number)

    def member_array(self) -> list[str]:
        """The Task's member array in its own order: the order committees are drawn over."""
        return list(self.task.active)

    def events(self, after: int, until: int | None = None) -> list[LedgerEvent]:
        last = self.task.block if until is None else until
        return [e for e in self.task.log if after < e.block <= last]

    def members(self) -> list[Member]:
        t = self.task
        return sorted(
            (Member(address=a, endpoint=t.endpoint[a], stake=t.records[a].stake,
                    first_round=t.records[a].first_round) for a in t.active),
            key=lambda m: m.address.lower(),
        )  # fmt: skip

    def member_count(self) -> int:
        return len(self.task.active)

    def status_of(self, account: str) -> int:
        return self.task.record(account).status

    def reputation(self, account: str) -> tuple[int, int]:
        """``(selections, updates)`` from the task's events (as the contract ledger)."""
        from fedledger.ledger.reputation import reputation_from_events

        return reputation_from_events(self.task.log, _key(account))

    def current_round(self) -> int:
        return self.task.current_round

    def round_clock(self, round: int) -> RoundClock:
        return self.task.round_clock(round)

    def phase(self, round: int) -> int:
        return self.task.phase(round)

    def earned_of(self, account: str) -> int:
        return self.task.record(account).earned

    def claimed_of(self, account: str) -> int:
        return self.task.claimed.get(_key(account), 0)

    def model_digest(self, round: int) -> bytes:
        return self.task.model_digest(round)

    def lineage(self) -> tuple[int, bytes]:
        return self.task.lineage_round, self.task.lineage_hash

    def is_reader(self, account: str) -> bool:
        return _key(account) in self.task.readers

    def can_download(self, account: str) -> bool:
        policy = self.task.rules.access_policy
        if policy == ACCESS_PUBLIC or _key(account) in self.task.readers:
            return True
        if self.status_of(account) == STATUS_ACTIVE:
            return True
        return policy == ACCESS_TOKEN_HOLDERS and self.token_balance(account) > 0

    def token_balance(self, account: str) -> int:
        return self.task.tokens.get(_key(account), 0)

    def token_supply(self) -> int:
        return self.task.total_claimed

    def _send(self, name: str, *args: Any, value: int = 0) -> TxResult:
        return self.task.transact(self._account, name, *args, value=value)
