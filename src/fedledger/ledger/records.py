"""The ledger's records and its interface, without a chain: pure data, no web3 or eth imports.

:class:`Ledger` is everything a node, the launcher and the audit need from a Task contract:
its rules, its member registry, the round transactions (batches of signed round messages,
rewards, evidence: ledger v2, docs/contracts.md) and its events, typed. Two implementations
pass one shared suite (tests/ledger/test_ledger_suite.py):

* :class:`~fedledger.ledger.contract_ledger.ContractLedger` — the real thing: the Task contract
  (and its RewardToken) through a :class:`~fedledger.ledger.chain.Chain`, embedded or JSON-RPC;
* :class:`~fedledger.ledger.memory_ledger.MemoryLedger` — the contract's rules in Python over a
  shared :class:`~fedledger.ledger.memory_ledger.MemoryTask`, with an injected clock: fast,
  deterministic node and protocol tests.

Both raise :class:`~fedledger.errors.TransactionReverted` with the contract's own revert
reason, so callers handle one error whatever the backend.

Time: a round's window is an upper bound; its message phase closes early when every eligible
member's message is in, or ``grace`` after a quorum of stake's is (:class:`RoundClock`). Nodes
tell whether a round is open from the events and :meth:`Ledger.now` (the time the next
transaction will see), not from the ``phase`` view, which answers for the latest block's
timestamp and goes stale while the chain is idle.

This module and :mod:`fedledger.ledger.rules` are all that the I/O-free round logic
(:mod:`fedledger.node.ledger_round`) needs: importing them imports no web3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from fedledger.ledger.rules import RULE_NAMES

if TYPE_CHECKING:
    from fedledger.ledger.messages import SignedRound

_ZERO32: Final = b"\x00" * 32

__all__ = [
    "EVENT_TYPES",
    "GOVERNABLE_RULES",
    "Claimed",
    "Closed",
    "CommitteeSampled",
    "Configured",
    "Consent",
    "Distributed",
    "Equivocated",
    "Finalized",
    "Joined",
    "Keys",
    "Ledger",
    "LedgerEvent",
    "Left",
    "Member",
    "Moved",
    "Quorate",
    "RoundClock",
    "RoundEvents",
    "RoundStarted",
    "Skipped",
    "Slashed",
    "Submitted",
    "TaskRules",
    "TaskTransactions",
    "TxResult",
    "batch_arguments",
    "events_by_round",
    "member_arrays_at_starts",
    "message_argument",
    "round_inputs",
    "rules_argument",
]


# ------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------


GOVERNABLE_RULES: Final = (
    "rule_id", "rule_params_digest", "config_digest", "quorum_bps", "min_stake",
    "allowlist_only", "reward_per_round", "access_policy",
)  # fmt: skip
"""The rules the task's governor may change (``Task.reconfigure``), from a round on."""


@dataclass(frozen=True, kw_only=True)
class TaskRules:
    """The Task contract's rules in force for a round: the immutable ones, and the governable
    ones (:data:`GOVERNABLE_RULES`) as they are from round ``from_round`` on."""

    token: str
    rule_id: int
    rule_params_digest: bytes
    config_digest: bytes
    quorum_bps: int
    min_stake: int
    window: int
    """Seconds: the longest a round's message phase stays open."""
    grace: int
    """Seconds the phase stays open once a quorum of stake's messages are in."""
    max_rounds: int
    max_participants: int
    allowlist_only: bool
    reward_per_round: int
    access_policy: int
    cooldown: int
    treasury: str
    governor: str = "0x" + "00" * 20
    """Who may change the governable rules (``reconfigure``); the zero address: nobody."""
    committee: int = 0
    """Above this many active members a round's messages come from a sampled committee of
    this many (0: every member, always)."""
    from_round: int = 1
    """The first round the governable rules are in force (1: the deployment's)."""

    @property
    def rule(self) -> str:
        """The aggregation rule's name (``"?"`` for an unknown id)."""
        return RULE_NAMES.get(self.rule_id, "?")

    @property
    def max_mint(self) -> int:
        """The most reward tokens (wei) the task can credit at this reward per round (a
        governed task's reward per round may change)."""
        return self.max_rounds * self.reward_per_round

    @property
    def governed(self) -> bool:
        """Whether a governor may change the governable rules."""
        return int(self.governor, 16) != 0


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
class Configured(LedgerEvent):
    """The governable rules in force from round ``from_round`` on come from configuration
    document ``document`` (sha256: ``config_digest``): the deployment's (round 1), or a
    governance change (``reconfigure``); a later one with the same ``from_round`` replaces an
    earlier one."""

    from_round: int
    config_digest: bytes
    document: bytes


@dataclass(frozen=True, kw_only=True)
class Consent(LedgerEvent):
    """A member's data owner's consent policy (``join``, ``set_consent``), in force from round
    ``from_round`` on; ``digest``: its sha256 (32 zero bytes for an empty policy)."""

    member: str
    digest: bytes
    policy: bytes
    from_round: int


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
class Moved(LedgerEvent):
    """A member's node listens at ``endpoint`` now."""

    member: str
    endpoint: str


@dataclass(frozen=True, kw_only=True)
class Keys(LedgerEvent):
    """A member's secure-aggregation keys (``set_keys``): its long-term ``channel_key`` and
    ``keys_digest``, the digest of its key blob covering rounds ``first_round`` to
    ``last_round`` for ``recipients`` members (all zero: no key blob)."""

    member: str
    channel_key: bytes
    keys_digest: bytes
    first_round: int
    last_round: int
    recipients: int


@dataclass(frozen=True, kw_only=True)
class RoundStarted(LedgerEvent):
    round: int
    start: int
    active_stake: int
    members: int


@dataclass(frozen=True, kw_only=True)
class CommitteeSampled(LedgerEvent):
    """Round ``round``'s committee, drawn when round ``round - 1`` opened (rounds 1 and 2: at
    the start) from ``seed`` (:func:`fedledger.ledger.rules.committee_seed`): ``members`` in
    draw order (:func:`fedledger.ledger.rules.sample_committee`), their ``stake`` then. Only
    a round with more active members than the task's ``committee`` has one."""

    round: int
    seed: bytes
    members: tuple[str, ...]
    stake: int


@dataclass(frozen=True, kw_only=True)
class Submitted(LedgerEvent):
    """One member's signed round message, as the contract verified it."""

    round: int
    member: str
    update: bytes
    examples: int
    model: bytes
    result: bytes
    r: int
    vs: int

    def signed(self) -> SignedRound:
        from fedledger.ledger.messages import RoundMessage, SignedRound

        message = RoundMessage(round=self.round, update=self.update, examples=self.examples,
                               model=self.model, result=self.result)  # fmt: skip
        return SignedRound(message=message, signer=self.member, r=self.r, vs=self.vs)


def round_inputs(submitted: Iterable[Submitted], rnd: int) -> dict[str, Submitted]:
    """The updates round ``rnd`` aggregates, by member: each member's (first) message of the
    round with an update, except a digest submitted in an earlier round (a replay) or by a
    lower address in the same round (a copy; the lowest address keeps it). Nodes and the
    audit apply the same rule: the contract does not keep every digest it saw (that would
    cost a storage slot per update)."""
    earlier: set[bytes] = set()
    mine: dict[str, Submitted] = {}
    for e in submitted:
        if e.update == _ZERO32:
            continue
        if e.round < rnd:
            earlier.add(e.update)
        elif e.round == rnd:
            mine.setdefault(e.member, e)
    out: dict[str, Submitted] = {}
    taken: set[bytes] = set()
    for member in sorted(mine, key=str.lower):
        e = mine[member]
        if e.update in earlier or e.update in taken:
            continue
        taken.add(e.update)
        out[member] = e
    return out


@dataclass(frozen=True, kw_only=True)
class Quorate(LedgerEvent):
    round: int


@dataclass(frozen=True, kw_only=True)
class Closed(LedgerEvent):
    round: int


@dataclass(frozen=True, kw_only=True)
class Finalized(LedgerEvent):
    round: int
    model_digest: bytes
    result_digest: bytes
    stake: int


@dataclass(frozen=True, kw_only=True)
class Skipped(LedgerEvent):
    round: int


@dataclass(frozen=True, kw_only=True)
class Distributed(LedgerEvent):
    """A round's rewards were credited: ``reward_per_round * score // sum(scores)`` to each
    contributor not slashed since (``total`` in all). A contributor with a nonzero score is
    *selected* (one more :meth:`Ledger.reputation` selection). ``transcript``: the round's
    secure-aggregation transcript digest, part of its result digest (32 zero bytes: none)."""

    round: int
    total: int
    contributors: tuple[str, ...]
    scores: tuple[int, ...]
    transcript: bytes = _ZERO32

    def __post_init__(self) -> None:
        object.__setattr__(self, "contributors", tuple(self.contributors))
        object.__setattr__(self, "scores", tuple(self.scores))

    def selected(self) -> list[str]:
        return [c for c, s in zip(self.contributors, self.scores, strict=True) if s > 0]


@dataclass(frozen=True, kw_only=True)
class Equivocated(LedgerEvent):
    round: int
    member: str
    first: bytes
    second: bytes


@dataclass(frozen=True, kw_only=True)
class Slashed(LedgerEvent):
    member: str
    amount: int
    submitter: str
    share: int


@dataclass(frozen=True, kw_only=True)
class Claimed(LedgerEvent):
    member: str
    amount: int


EVENT_TYPES: Final[Mapping[str, type[LedgerEvent]]] = {
    cls.__name__: cls
    for cls in (
        Configured, Joined, Consent, Left, Moved, Keys, RoundStarted, CommitteeSampled,
        Submitted, Quorate, Closed, Finalized, Skipped, Distributed, Equivocated, Slashed,
        Claimed,
    )
}  # fmt: skip
"""The Task events a ledger reports (Allowed, Disallowed, Withdrawn, reader and ownership
events are not needed by nodes or the audit)."""


@dataclass
class RoundEvents:
    """One round's events, as :func:`events_by_round` gathers them: its start, its messages in
    chain order, the first ``Quorate`` and ``Closed``, and its outcome and payment."""

    started: RoundStarted | None = None
    submitted: list[Submitted] = field(default_factory=list)
    quorate: Quorate | None = None
    closed: Closed | None = None
    finalized: Finalized | None = None
    skipped: Skipped | None = None
    distributed: Distributed | None = None
    committee: CommitteeSampled | None = None
    """The round's committee (drawn when the round before opened), if it has one."""

    def updates(self) -> dict[str, Submitted]:
        """The round's submitted updates by member (the first message of each member: the
        contract takes one per member and round)."""
        out: dict[str, Submitted] = {}
        for e in self.submitted:
            if e.update != _ZERO32:
                out.setdefault(e.member, e)
        return out


def events_by_round(events: Sequence[LedgerEvent]) -> dict[int, RoundEvents]:
    """The events that name a round, gathered by round (in chain order: ``events``')."""
    rounds: dict[int, RoundEvents] = {}
    for e in events:
        rnd = getattr(e, "round", None)
        if rnd is None:
            continue
        st = rounds.setdefault(rnd, RoundEvents())
        if isinstance(e, RoundStarted):
            st.started = e
        elif isinstance(e, Submitted):
            st.submitted.append(e)
        elif isinstance(e, Quorate):
            st.quorate = st.quorate or e
        elif isinstance(e, Closed):
            st.closed = st.closed or e
        elif isinstance(e, Finalized):
            st.finalized = e
        elif isinstance(e, Skipped):
            st.skipped = e
        elif isinstance(e, Distributed):
            st.distributed = e
        elif isinstance(e, CommitteeSampled):
            st.committee = e
    return rounds


def member_arrays_at_starts(events: Sequence[LedgerEvent]) -> dict[int, tuple[str, ...]]:
    """The Task's member array (in its order) when each round started, by round, replayed
    from ``events`` (the task's events from its deployment, in chain order): a join appends;
    a member that leaves or is slashed while active is replaced by the last one, as the
    contract does. Round ``r``'s committee is drawn over the array round ``r - 1`` started
    with (rounds 1 and 2: round 1's), in the same transaction."""
    array: list[str] = []
    out: dict[int, tuple[str, ...]] = {}
    for e in events:
        if isinstance(e, Joined):
            array.append(e.member)
        elif isinstance(e, Left | Slashed) and e.member in array:
            at = array.index(e.member)
            last = array.pop()
            if at < len(array):
                array[at] = last
        elif isinstance(e, RoundStarted):
            out[e.round] = tuple(array)
    return out


@dataclass(frozen=True, kw_only=True)
class RoundClock:
    """When a round's message phase closes, as the contract computes it (``closes_at``)."""

    start: int
    closes_at: int

    @classmethod
    def of(
        cls,
        *,
        start: int,
        rules: TaskRules,
        quorum_at: int | None = None,
        closed_at: int | None = None,
    ) -> RoundClock:
        """``quorum_at``: when a quorum of stake's messages were in (``Quorate``);
        ``closed_at``: when every eligible member's were (``Closed``)."""
        if closed_at is not None:
            return cls(start=start, closes_at=closed_at)
        end = start + rules.window
        if quorum_at is not None and quorum_at + rules.grace < end:
            end = quorum_at + rules.grace
        return cls(start=start, closes_at=end)

    def open(self, now: int) -> bool:
        """Whether the round still takes messages at time ``now``."""
        return now < self.closes_at


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

    def rules(self) -> TaskRules:
        """The rules in force for the current round (round 1's before the start)."""
        ...

    def rules_at(self, round: int) -> TaskRules:
        """The rules in force for ``round`` (its quorum, its reward; round 0: round 1's); a
        round above the current one gets the latest rules, a change pending included."""
        ...

    def now(self) -> int:
        """At least the timestamp the next transaction will see."""
        ...

    def head(self) -> int:
        """The latest block: a cursor for :meth:`events`."""
        ...

    def block_hash(self, number: int) -> bytes:
        """The hash of mined block ``number``: randomness no member chooses alone (contribution
        scores' permutations)."""
        ...

    def events(self, after: int, until: int | None = None) -> list[LedgerEvent]:
        """The task's events in blocks ``(after, until]`` (default: up to :meth:`head`), in
        chain order."""
        ...

    def members(self) -> list[Member]:
        """The active members, sorted by address."""
        ...

    def member_array(self) -> list[str]:
        """The active members in the Task's own order (joins append; a member that leaves is
        replaced by the last): the order committees are drawn over."""
        ...

    def member_count(self) -> int:
        """How many active members there are (one call)."""
        ...

    def status_of(self, account: str) -> int: ...

    def reputation(self, account: str) -> tuple[int, int]:
        """``(selections, updates)``: in how many paid rounds ``account`` had a nonzero score
        (``Distributed`` events naming it), and how many updates it submitted (``Submitted``
        events with an update), over the task's whole life."""
        ...

    def current_round(self) -> int: ...

    def round_clock(self, round: int) -> RoundClock: ...

    def phase(self, round: int) -> int:
        """The round's phase at :meth:`now` (finalized and failed rounds are final)."""
        ...

    def model_digest(self, round: int) -> bytes:
        """The finalized model digest of ``round`` (32 zero bytes if not finalized)."""
        ...

    def lineage(self) -> tuple[int, bytes]:
        """``(last finalized round, lineage hash)``: the hash chained over every finalized
        round by :func:`~fedledger.ledger.rules.lineage_hash` (``(0, 32 zero bytes)`` before
        the first)."""
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

    def earned_of(self, account: str) -> int:
        """Reward tokens (wei) credited to ``account`` so far, claimed or not."""
        ...

    def claimed_of(self, account: str) -> int:
        """Reward tokens (wei) minted to ``account`` by :meth:`claim`."""
        ...

    def join(self, endpoint: str, stake: int, consent: bytes = b"") -> TxResult:
        """Become a member staking ``stake`` wei; a non-empty ``consent`` registers its data
        owner's consent policy (``Consent``, from the next round on)."""
        ...

    def set_consent(self, policy: bytes) -> TxResult:
        """Active member only: register its data owner's consent policy from the next round
        on (``Consent``; nothing is stored)."""
        ...

    def reconfigure(
        self,
        rule_id: int,
        rule_params_digest: bytes,
        quorum_bps: int,
        min_stake: int,
        allowlist_only: bool,
        reward_per_round: int,
        access_policy: int,
        document: bytes,
    ) -> TxResult:
        """Governor only: the governable rules from the next round to open on, with the
        configuration document they come from (its sha256 is the new config digest); a second
        change before that round opens replaces the first."""
        ...

    def leave(self) -> TxResult: ...

    def move(self, endpoint: str) -> TxResult:
        """Publish where this member's node listens now."""
        ...

    def set_keys(
        self,
        channel_key: bytes,
        keys_digest: bytes,
        first_round: int,
        last_round: int,
        recipients: int,
    ) -> TxResult:
        """Active member only: register this member's secure-aggregation keys (``Keys``): its
        channel key (not zero) and its key blob's digest for rounds ``first_round`` to
        ``last_round`` (``1 <= first_round <= last_round``) and ``recipients`` members, or a
        zero digest with zero rounds and recipients. Nothing is stored."""
        ...

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
        """Owner only, once: round 1 opens."""
        ...

    def submit(
        self,
        round: int,
        messages: Sequence[SignedRound],
        contributors: Sequence[str] = (),
        scores: Sequence[int] = (),
        transcript: bytes = _ZERO32,
    ) -> TxResult:
        """A batch of signed round messages for ``round``; ``contributors``, ``scores`` and
        ``transcript`` (its secure-aggregation transcript digest, zero for none): round
        ``round - 1``'s result, paid if the batch finalizes it (or it was already)."""
        ...

    def distribute(
        self,
        round: int,
        contributors: Sequence[str],
        scores: Sequence[int],
        transcript: bytes = _ZERO32,
    ) -> TxResult:
        """Pay finalized round ``round``'s result (``transcript`` as for :meth:`submit`)."""
        ...

    def close(self) -> TxResult:
        """Fail the round the current one attests, once the current one closed."""
        ...

    def claim(self, account: str) -> TxResult: ...

    def slash(self, round: int, a: SignedRound, b: SignedRound) -> TxResult:
        """Evidence: two different messages signed by one member for ``round``."""
        ...


# ------------------------------------------------------------------------------------------------
# The transactions, one way for every implementation
# ------------------------------------------------------------------------------------------------


class TaskTransactions:
    """The task's transactions, the same for every :class:`Ledger`: each implementation sends
    them by name with ``_send`` (addresses as given: an implementation that needs them
    checksummed, or a gas limit per call, sees the name and arguments)."""

    def _send(self, name: str, *args: Any, value: int = 0) -> TxResult:
        raise NotImplementedError

    def join(self, endpoint: str, stake: int, consent: bytes = b"") -> TxResult:
        return self._send("join", endpoint, bytes(consent), value=stake)

    def set_consent(self, policy: bytes) -> TxResult:
        return self._send("set_consent", bytes(policy))

    def reconfigure(
        self,
        rule_id: int,
        rule_params_digest: bytes,
        quorum_bps: int,
        min_stake: int,
        allowlist_only: bool,
        reward_per_round: int,
        access_policy: int,
        document: bytes,
    ) -> TxResult:
        return self._send("reconfigure", rule_id, rule_params_digest, quorum_bps, min_stake,
                          allowlist_only, reward_per_round, access_policy,
                          bytes(document))  # fmt: skip

    def leave(self) -> TxResult:
        return self._send("leave")

    def move(self, endpoint: str) -> TxResult:
        return self._send("move", endpoint)

    def set_keys(
        self,
        channel_key: bytes,
        keys_digest: bytes,
        first_round: int,
        last_round: int,
        recipients: int,
    ) -> TxResult:
        return self._send("set_keys", channel_key, keys_digest, first_round, last_round,
                          recipients)  # fmt: skip

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

    def submit(
        self,
        round: int,
        messages: Sequence[SignedRound],
        contributors: Sequence[str] = (),
        scores: Sequence[int] = (),
        transcript: bytes = _ZERO32,
    ) -> TxResult:
        pairs, entries = batch_arguments(messages)
        return self._send("submit", round, pairs, entries, list(contributors), list(scores),
                          transcript)  # fmt: skip

    def distribute(
        self,
        round: int,
        contributors: Sequence[str],
        scores: Sequence[int],
        transcript: bytes = _ZERO32,
    ) -> TxResult:
        return self._send("distribute", round, list(contributors), list(scores), transcript)

    def close(self) -> TxResult:
        return self._send("close")

    def claim(self, account: str) -> TxResult:
        return self._send("claim", account)

    def slash(self, round: int, a: SignedRound, b: SignedRound) -> TxResult:
        return self._send("slash", round, message_argument(a), message_argument(b))


def batch_arguments(
    messages: Sequence[SignedRound],
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, int, int, int, int]]]:
    """``submit``'s ``pairs`` and ``entries`` for a batch: each distinct attested pair once,
    in order of first use (at most 16)."""
    pairs: list[tuple[bytes, bytes]] = []
    index: dict[tuple[bytes, bytes], int] = {}
    entries: list[tuple[bytes, int, int, int, int]] = []
    for s in messages:
        pair = s.message.pair
        if pair not in index:
            index[pair] = len(pairs)
            pairs.append(pair)
        entries.append((s.message.update, s.message.examples, index[pair], s.r, s.vs))
    return pairs, entries


def rules_argument(rules: TaskRules) -> tuple[int, bytes, int, int, bool, int, int]:
    """``reconfigure``'s arguments before the document, from the governable ``rules``."""
    return (rules.rule_id, rules.rule_params_digest, rules.quorum_bps, rules.min_stake,
            rules.allowlist_only, rules.reward_per_round, rules.access_policy)  # fmt: skip


def message_argument(s: SignedRound) -> tuple[bytes, int, bytes, bytes, int, int]:
    """A whole signed message as ``slash`` takes it."""
    m = s.message
    return (m.update, m.examples, m.model, m.result, s.r, s.vs)
