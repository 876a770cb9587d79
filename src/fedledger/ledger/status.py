"""A task's state on chain, read into plain frozen records: :func:`task_status`.

What ``fedledger status`` shows (and ``fedledger task start`` checks): the task's rules, every
account that ever joined (its status, stake, endpoint, reward tokens and reputation), the
current round and its phase, every round's outcome (finalized with its model's CID and the
number of members that attested it, skipped, or still open), the rewards and the slashes. It
is built from :class:`~fedledger.ledger.contract_ledger.ContractLedger`'s view calls and the
task's events; nothing here prints. :func:`check_task_code` tells "no contract at that address"
and "a contract that is not a Task" apart before anything else is asked.

Amounts are exact integers in wei (stakes) or in the reward token's smallest unit (18
decimals); digests are ``0x`` hex.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from eth_utils.address import to_checksum_address

from fedledger.commit.cid import cid_from_digest
from fedledger.errors import LedgerError
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import Chain
from fedledger.ledger.chain.base import map_chain_errors
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.messages import ZERO32
from fedledger.ledger.records import (
    Claimed,
    Distributed,
    Equivocated,
    Finalized,
    Joined,
    LedgerEvent,
    Quorate,
    RoundClock,
    RoundStarted,
    Skipped,
    Slashed,
    Submitted,
)
from fedledger.ledger.reputation import reputation_at
from fedledger.ledger.rules import (
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
)

__all__ = [
    "MEMBER_STATUS",
    "PHASE_NAMES",
    "MemberStatus",
    "RoundStatus",
    "SlashStatus",
    "TaskStatus",
    "WaitingStatus",
    "check_task_code",
    "owner_of",
    "task_status",
]

PHASE_NAMES: Final = {
    PHASE_NOT_STARTED: "not started",
    PHASE_OPEN: "open",
    PHASE_AGGREGATE: "aggregate",
    PHASE_ATTEST: "attest",
    PHASE_FINALIZED: "finalized",
    PHASE_FAILED: "failed",
}
"""A round's phase by name: ``open`` (taking its members' messages), ``aggregate`` (closed;
the next round not open yet), ``attest`` (the next round's messages attest it),
``finalized``, ``failed`` (no quorum attested it)."""

MEMBER_STATUS: Final = {
    STATUS_NONE: "withdrawn",
    STATUS_ACTIVE: "active",
    STATUS_LEFT: "left",
    STATUS_SLASHED: "slashed",
}
"""An account's status by name, for accounts that joined at least once (``withdrawn``: left
and took its stake back)."""


def _hex(data: bytes) -> str:
    return "0x" + bytes(data).hex()


@dataclass(frozen=True, kw_only=True)
class MemberStatus:
    """One account that joined the task (active now or not)."""

    address: str
    status: str
    """``active``, ``left`` (waiting for its cooldown), ``withdrawn`` or ``slashed``."""
    stake: int
    """Wei staked now (0 once withdrawn or slashed)."""
    endpoint: str
    first_round: int
    """The first round it may send a message for."""
    tokens: int
    """Its reward token balance (smallest unit)."""
    earned: int
    """Reward credited by the task so far, claimed or not (smallest unit)."""
    claimed: int
    """Of which minted to it (``claim``)."""
    updates: int
    """Updates it submitted."""
    selections: int
    """Paid rounds that gave it a nonzero score."""


@dataclass(frozen=True, kw_only=True)
class RoundStatus:
    """One round, from 1 to the current one."""

    round: int
    outcome: str
    """``finalized``, ``failed``, or the round's phase (``open``, ``aggregate``,
    ``attest``)."""
    model_digest: str | None
    """The finalized model's sha256 (``0x`` hex), None unless finalized."""
    model_cid: str | None
    """Its CIDv1 (what nodes fetch it by), None unless finalized."""
    attesters: int
    """Members whose next-round messages attested the finalized pair (0 unless finalized)."""
    messages: int
    """Signed messages of the round on chain."""
    updates: int
    """Of which carried an update."""
    transactions: int
    """Transactions that carried the round's messages."""
    rewarded: int | None
    """Reward credited for the round (smallest unit); None if not paid (yet)."""


@dataclass(frozen=True, kw_only=True)
class SlashStatus:
    member: str
    amount: int
    """Wei taken (a share to the evidence's submitter, the rest to the treasury)."""
    reason: str
    round: int | None
    """The round of the offence, when known."""
    block: int
    tx: str


@dataclass(frozen=True, kw_only=True)
class WaitingStatus:
    """The open round's missing messages: what ``fedledger status`` says as
    :func:`fedledger.node.waiting.describe_waiting` does."""

    round: int
    what: str
    """``messages``: the members' signed round messages."""
    members: tuple[str, ...]
    """The eligible active members whose message for the round is not on chain yet."""
    until: int | None
    """When the round's message phase closes at the latest (chain time, Unix seconds; None:
    its start is before the first block read)."""


@dataclass(frozen=True, kw_only=True)
class TaskStatus:
    """A task's whole state, as :func:`task_status` reads it."""

    task: str
    chain_id: int
    token: str
    owner: str
    treasury: str
    config_digest: str
    rule: str
    quorum_bps: int
    min_stake: int
    allowlist: bool
    reward_per_round: int
    head_block: int
    current_round: int
    """0 until the owner starts the task."""
    phase: str
    """The current round's phase (``not started`` before round 1)."""
    members: tuple[MemberStatus, ...]
    """Every account that ever joined, in the order of its first join."""
    rounds: tuple[RoundStatus, ...]
    slashes: tuple[SlashStatus, ...]
    total_staked: int
    total_slashed: int
    total_earned: int
    """Reward credited over all rounds (at most max_rounds x reward_per_round)."""
    token_supply: int
    max_rounds: int
    waiting: WaitingStatus | None = None
    """Whom the open round waits for (None: the round is not open, or every message is in)."""

    @property
    def started(self) -> bool:
        return self.current_round > 0

    @property
    def active(self) -> tuple[MemberStatus, ...]:
        return tuple(m for m in self.members if m.status == "active")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: every field, members, rounds and slashes as lists."""
        d = asdict(self)
        for name in ("members", "rounds", "slashes"):
            d[name] = list(d[name])
        return d


def check_task_code(chain: Chain, address: str) -> None:
    """A :class:`~fedledger.errors.LedgerError` unless a Task contract of this fedledger
    version is deployed at ``address`` (its runtime code starts with the artifact's)."""
    with map_chain_errors(f"chain {chain.chain_id}"):
        code = chain.code(address)
    if not code:
        raise LedgerError(f"no Task contract at {address} (no code there on chain "
                          f"{chain.chain_id})")  # fmt: skip
    runtime = bytes.fromhex(str(load_artifact("Task")["bytecode_runtime"]).removeprefix("0x"))
    if not code.startswith(runtime):
        raise LedgerError(f"the contract at {address} is not a Task (its code is not that of "
                          "this fedledger version's Task)")  # fmt: skip


def _view(ledger: ContractLedger, name: str, *args: Any) -> Any:
    with map_chain_errors(f"task at {ledger.task_address}"):
        return ledger.chain.call(ledger.contract.functions[name](*args))


def owner_of(ledger: ContractLedger) -> str:
    """The task's owner (who may start it and allowlist accounts)."""
    return to_checksum_address(str(_view(ledger, "owner")))


def _members(ledger: ContractLedger, events: list[LedgerEvent]) -> tuple[MemberStatus, ...]:
    order: dict[str, None] = {}
    for event in events:
        if isinstance(event, Joined):
            order.setdefault(to_checksum_address(event.member), None)
    for member in ledger.members():  # active ones joined before the first block read, too
        order.setdefault(member.address, None)
    reputation = reputation_at(events, 2**63)
    claimed: dict[str, int] = {}
    for e in events:
        if isinstance(e, Claimed):
            claimed[e.member] = claimed.get(e.member, 0) + e.amount
    out = []
    for address in order:
        status = ledger.status_of(address)
        selections, updates = reputation.get(address.lower(), (0, 0))
        out.append(MemberStatus(
            address=address,
            status=MEMBER_STATUS.get(status, str(status)),
            stake=int(_view(ledger, "stake_of", address)),
            endpoint=str(_view(ledger, "endpoint_of", address)),
            first_round=int(_view(ledger, "first_round_of", address)),
            tokens=ledger.token_balance(address),
            earned=ledger.earned_of(address),
            claimed=claimed.get(address, 0),
            updates=updates,
            selections=selections,
        ))  # fmt: skip
    return tuple(out)


def _rounds(
    ledger: ContractLedger, events: list[LedgerEvent], current: int, current_phase: str
) -> tuple[RoundStatus, ...]:
    finalized = {e.round: e for e in events if isinstance(e, Finalized)}
    skipped = {e.round for e in events if isinstance(e, Skipped)}
    minted = {e.round: e.total for e in events if isinstance(e, Distributed)}
    messages: dict[int, dict[str, Submitted]] = {}
    txs: dict[int, set[str]] = {}
    for e in events:
        if isinstance(e, Submitted):
            messages.setdefault(e.round, {}).setdefault(e.member, e)
            txs.setdefault(e.round, set()).add(e.tx)
    out = []
    for r in range(1, current + 1):
        model: str | None = None
        cid: str | None = None
        count = 0
        if r in finalized:
            outcome = "finalized"
            fin = finalized[r]
            model, cid = _hex(fin.model_digest), cid_from_digest(bytes(fin.model_digest))
            pair = (fin.model_digest, fin.result_digest)
            count = sum(1 for m in messages.get(r + 1, {}).values() if (m.model, m.result) == pair)
        elif r in skipped:
            outcome = "failed"
        elif r == current:
            outcome = current_phase
        else:  # before the first block read: ask the contract
            phase = ledger.phase(r)
            outcome = PHASE_NAMES.get(phase, str(phase))
            if phase == PHASE_FINALIZED:
                digest = ledger.model_digest(r)
                model, cid = _hex(digest), cid_from_digest(digest)
        of_round = messages.get(r, {})
        out.append(RoundStatus(
            round=r, outcome=outcome, model_digest=model, model_cid=cid, attesters=count,
            messages=len(of_round), updates=sum(1 for m in of_round.values() if m.update != ZERO32),
            transactions=len(txs.get(r, ())), rewarded=minted.get(r),
        ))  # fmt: skip
    return tuple(out)


def _waiting(ledger: ContractLedger, events: list[LedgerEvent], current: int, phase: str,
             members: tuple[MemberStatus, ...]) -> WaitingStatus | None:  # fmt: skip
    """The open round's eligible active members whose message is not on chain, and when the
    phase closes at the latest (every message in, ``grace`` after a quorum, or the window)."""
    if current == 0 or phase != PHASE_NAMES[PHASE_OPEN]:
        return None
    sent = {e.member.lower() for e in events if isinstance(e, Submitted) and e.round == current}
    missing = tuple(m.address for m in members if m.status == "active"
                    and m.first_round <= current and m.address.lower() not in sent)  # fmt: skip
    if not missing:
        return None
    start = next((e.start for e in events if isinstance(e, RoundStarted) and e.round == current),
                 None)  # fmt: skip
    until: int | None = None
    if start is not None:
        quorum = next((e.time for e in events if isinstance(e, Quorate) and e.round == current),
                      None)  # fmt: skip
        until = RoundClock.of(start=start, rules=ledger.rules_at(current),
                              quorum_at=quorum).closes_at  # fmt: skip
    return WaitingStatus(round=current, what="messages", members=missing, until=until)


def _slashes(events: list[LedgerEvent]) -> tuple[SlashStatus, ...]:
    offences = {(e.tx, e.member): e.round for e in events if isinstance(e, Equivocated)}
    out = []
    for e in events:
        if isinstance(e, Slashed):
            rnd = offences.get((e.tx, e.member))
            reason = (f"equivocated: signed two different messages for round {rnd}"
                      if rnd is not None else "slashed")  # fmt: skip
            out.append(SlashStatus(member=e.member, amount=e.amount, reason=reason, round=rnd,
                                   block=e.block, tx=e.tx))  # fmt: skip
    return tuple(out)


def task_status(ledger: ContractLedger, *, from_block: int = 0) -> TaskStatus:
    """Everything about ``ledger``'s task, its events read from ``from_block`` on (the block
    the task was deployed in, or 0: the whole chain). Views give the members' state, the
    current round and the totals; the events give the rounds' outcomes and counts and the
    slashes, so a ``from_block`` after the deployment leaves out what happened before it
    (earlier rounds are then asked of the contract: their outcome and model, no counts)."""
    rules = ledger.rules()
    head = ledger.head()
    events = ledger.events(max(from_block - 1, 0), head)
    current = ledger.current_round()
    if current == 0:
        phase = PHASE_NAMES[PHASE_NOT_STARTED]
    else:
        phase = PHASE_NAMES.get(ledger.phase(current), "?")
    members = _members(ledger, events)
    return TaskStatus(
        task=ledger.task_address,
        chain_id=ledger.chain_id,
        token=to_checksum_address(rules.token),
        owner=owner_of(ledger),
        treasury=to_checksum_address(rules.treasury),
        config_digest=_hex(rules.config_digest),
        rule=rules.rule,
        quorum_bps=rules.quorum_bps,
        min_stake=rules.min_stake,
        allowlist=rules.allowlist_only,
        reward_per_round=rules.reward_per_round,
        head_block=head,
        current_round=current,
        phase=phase,
        members=members,
        rounds=_rounds(ledger, events, current, phase),
        waiting=_waiting(ledger, events, current, phase, members),
        slashes=_slashes(events),
        total_staked=int(_view(ledger, "total_staked")),
        total_slashed=int(_view(ledger, "total_slashed")),
        total_earned=int(_view(ledger, "total_earned")),
        token_supply=ledger.token_supply(),
        max_rounds=rules.max_rounds,
    )
