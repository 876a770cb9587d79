"""One behaviour suite for every :class:`~fedledger.ledger.records.Ledger` implementation (v2).

Each test runs against the in-memory ledger (:class:`MemoryTask` with a fake clock) and against
the real Task contract on a fresh :class:`EmbeddedChain` (:class:`ContractLedger`), and asserts
the same observable outcomes on both: exact revert reasons, event sequences and fields, views.

Members sign one EIP-712 round message per round (:class:`RoundMessage`, bound to the ledger's
``chain_id`` and ``task_address``); anyone submits them in batches. The embedded chain's
accounts are the keys 1, 2, ...; the memory world uses the same addresses and keys.

Timing differs by construction (every embedded block is one second later than its parent, the
memory ledger stamps transactions with its clock), so tests read times from events and views
and move time with :meth:`World.travel_to`, never assume absolute timestamps.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import pytest

from fedledger.config import LedgerConfig, TaskConfig
from fedledger.errors import LedgerError, TransactionReverted
from fedledger.gossip.identity import Identity
from fedledger.ledger.chain import EmbeddedChain
from fedledger.ledger.contract_ledger import GAS_LIMITS, ContractLedger, deploy_task
from fedledger.ledger.memory_ledger import MemoryLedger, MemoryTask
from fedledger.ledger.messages import ZERO32, RoundMessage, SignedRound
from fedledger.ledger.records import (
    CommitteeSampled,
    Configured,
    Consent,
    Distributed,
    Finalized,
    Joined,
    Keys,
    Ledger,
    LedgerEvent,
    Left,
    RoundClock,
    RoundStarted,
    Submitted,
    TaskRules,
    TxResult,
    member_arrays_at_starts,
    rules_argument,
)
from fedledger.ledger.reputation import reputation_at
from fedledger.ledger.rules import (
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
    consent_digest,
    lineage_hash,
    result_digest,
    rules_for,
    sample_committee,
    sort_result,
)

ETHER = 10**18
WINDOW = 100  # seconds: the longest a round takes messages
GRACE = 10  # seconds the round stays open once a quorum of stake's messages are in
COOLDOWN = 50
REWARD = 1000 * ETHER
ACCOUNTS = 10  # the owner and nine others
ROUNDS = 20
MODEL = hashlib.sha256(b"model").digest()
OTHER_MODEL = hashlib.sha256(b"other model").digest()
BACKENDS = ("memory", "embedded")


# ------------------------------------------------------------------------------------------------
# The world: one task, its owner and some accounts, on one backend
# ------------------------------------------------------------------------------------------------


class FakeClock:
    """A clock that only moves when told to (the memory ledger's travels move its own time)."""

    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


KEYS = [Identity.from_hex(i.to_bytes(32, "big").hex()) for i in range(1, ACCOUNTS + 1)]
IDENTITIES = {k.address: k for k in KEYS}


@dataclass
class World:
    backend: str
    task: TaskConfig
    owner: Ledger
    accounts: list[Ledger]  # never the owner; none joined yet
    token: str
    treasury: str
    _travel: Callable[[int], None]
    received: Callable[[str], int]  # ETH the task paid out to an account so far
    block_time: Callable[[int], int] | None = None  # the embedded chain's block timestamps
    deployed: int = 0  # the last block of the deployment (its Configured event's, or later)

    @property
    def governor(self) -> Ledger:
        """The task's governor (the last account, never joined by the tests)."""
        return self.accounts[-1]

    @property
    def rules(self) -> TaskRules:
        return self.owner.rules()

    def travel(self, seconds: int) -> None:
        """Move :meth:`Ledger.now` (the time the next transaction sees) ``seconds`` ahead."""
        assert seconds >= 1
        self._travel(seconds)

    def travel_to(self, timestamp: int) -> None:
        """Make :meth:`Ledger.now` exactly ``timestamp`` (which must not be in the past)."""
        delta = timestamp - self.owner.now()
        assert delta >= 0, f"{timestamp} is {-delta} s in the past"
        if delta:
            self.travel(delta)
        assert self.owner.now() == timestamp

    def join(self, n: int, stakes: Sequence[int] | None = None) -> list[Ledger]:
        """The first ``n`` accounts join (1 ether each unless ``stakes``); sorted by address."""
        joined = self.accounts[:n]
        for i, ledger in enumerate(joined):
            ledger.join(endpoint_of(ledger), ETHER if stakes is None else stakes[i])
        return sorted(joined, key=lambda m: m.account.lower())


def task_config(nodes: int = 4, rounds: int = ROUNDS, **ledger: Any) -> TaskConfig:
    settings: dict[str, Any] = {
        "quorum": 0.67,
        "min_stake": ETHER,
        "window": WINDOW,
        "grace": GRACE,
        "reward_per_round": REWARD / ETHER,
        "cooldown": COOLDOWN,
        "max_participants": 8,
        **ledger,
    }
    return TaskConfig(name="ledger-suite", nodes=nodes, rounds=rounds,
                      ledger=LedgerConfig(**settings))  # fmt: skip


def memory_world(task: TaskConfig, governed: bool = True) -> World:
    # The embedded chain's accounts (keys 1, 2, ...): same addresses on both backends.
    addresses = [k.address for k in KEYS]
    owner, token = addresses[0], "0x" + "70" * 20
    governor = addresses[-1] if governed else ZERO_ADDRESS
    mt = MemoryTask(rules_for(task, token=token, treasury=owner, governor=governor),
                    owner=owner, clock=FakeClock(1_700_000_000.0),
                    document=task.document())  # fmt: skip
    ledgers: list[Ledger] = [MemoryLedger(mt, a) for a in addresses]
    return World("memory", task, ledgers[0], ledgers[1:], mt.rules.token, owner, mt.travel,
                 lambda a: mt.paid_out.get(a, 0), deployed=mt.block)  # fmt: skip


def embedded_world(task: TaskConfig, governed: bool = True) -> World:
    chain = EmbeddedChain(accounts=ACCOUNTS)
    accounts = chain.accounts()
    assert [a.address for a in accounts] == [k.address for k in KEYS]
    governor = accounts[-1].address if governed else None
    address, token = deploy_task(chain, task, owner=accounts[0], governor=governor)
    ledgers: list[Ledger] = [ContractLedger(chain, address, a) for a in accounts]
    initial: dict[str, int] = {str(a.address): chain.balance(a.address) for a in accounts}

    def received(account: str) -> int:  # only for accounts that sent nothing meanwhile
        return chain.balance(account) - initial.get(account, 0)

    return World("embedded", task, ledgers[0], ledgers[1:], token, accounts[0].address,
                 chain.time_travel, received, chain.block_timestamp,
                 deployed=chain.block_number())  # fmt: skip


@pytest.fixture(params=BACKENDS)
def make_world(request: pytest.FixtureRequest) -> Callable[..., World]:
    """``make_world(nodes=4, rounds=ROUNDS, governed=True, **ledger_config_overrides)``: a
    fresh world (governed: the last account is the task's governor)."""
    build = memory_world if request.param == "memory" else embedded_world

    def make(nodes: int = 4, rounds: int = ROUNDS, governed: bool = True, **ledger: Any) -> World:
        return build(task_config(nodes, rounds, **ledger), governed)

    return make


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def endpoint_of(ledger: Ledger) -> str:
    return f"grpc://{ledger.account.lower()[2:10]}.example:7000"


def update_of(account: str, rnd: int) -> tuple[bytes, int]:
    digest = hashlib.sha256(f"update/{account}/{rnd}".encode()).digest()
    return digest, 10 + digest[0]


def sign(
    ledger: Ledger,
    signer: Ledger | str,
    rnd: int,
    pair: tuple[bytes, bytes] | None = None,
    *,
    update: bool = True,
    **raw: Any,
) -> SignedRound:
    """``signer``'s round message for ``rnd`` (its update unless ``update=False``; attesting
    ``pair``), signed for ``ledger``'s task. ``raw`` overrides fields after validation (to sign
    messages that :class:`RoundMessage` refuses but the contract must judge)."""
    account = signer if isinstance(signer, str) else signer.account
    digest, examples = update_of(account, rnd) if update else (ZERO32, 0)
    model, result = pair or (ZERO32, ZERO32)
    message = RoundMessage(round=rnd, update=digest, examples=examples, model=model,
                           result=result)  # fmt: skip
    for name, value in raw.items():
        object.__setattr__(message, name, value)
    return message.sign(IDENTITIES[account], ledger.chain_id, ledger.task_address)


def batch(
    ledger: Ledger,
    members: Sequence[Ledger],
    rnd: int,
    pair: tuple[bytes, bytes] | None = None,
    *,
    update: bool = True,
) -> list[SignedRound]:
    return [sign(ledger, m, rnd, pair, update=update) for m in members]


def result_of(members: Sequence[Ledger], scores: Sequence[int]) -> tuple[list[str], list[int]]:
    return sort_result([m.account for m in members], scores)


def reverts(reason: str, call: Callable[..., Any], *args: Any) -> None:
    with pytest.raises(TransactionReverted) as info:
        call(*args)
    assert info.value.reason == reason


def reverts_without_reason(call: Callable[..., Any], *args: Any) -> None:
    """The call reverts with no reason (the contract's argument decoding refuses it)."""
    with pytest.raises(TransactionReverted) as info:
        call(*args)
    assert info.value.reason is None


def strip(event: LedgerEvent) -> tuple[str, dict[str, Any]]:
    """An event's type and payload, without where it was emitted."""
    where = {f.name for f in fields(LedgerEvent)}
    payload = {f.name: getattr(event, f.name) for f in fields(event) if f.name not in where}
    return type(event).__name__, payload


def kinds(events: Sequence[LedgerEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def tx_events(ledger: Ledger, result: TxResult) -> list[LedgerEvent]:
    found = ledger.events(result.block - 1, result.block)
    assert all(e.tx == result.tx and e.block == result.block for e in found)
    assert [e.index for e in found] == sorted({e.index for e in found})
    return found


def submitted(s: SignedRound) -> tuple[str, dict[str, Any]]:
    """The ``Submitted`` payload of a signed message."""
    m = s.message
    return "Submitted", {"round": m.round, "member": s.signer, "update": m.update,
                         "examples": m.examples, "model": m.model, "result": m.result,
                         "r": s.r, "vs": s.vs}  # fmt: skip


def play(
    world: World,
    members: Sequence[Ledger],
    rnd: int,
    pair: tuple[bytes, bytes] | None = None,
    contributors: Sequence[str] = (),
    scores: Sequence[int] = (),
) -> list[LedgerEvent]:
    """Every member's message for ``rnd`` in one batch (by the first member); its events."""
    sender = members[0]
    return tx_events(sender, sender.submit(rnd, batch(sender, members, rnd, pair),
                                           contributors, scores))  # fmt: skip


def finalized_round_1(world: World, members: Sequence[Ledger], scores: Sequence[int]
                      ) -> tuple[list[str], list[int], bytes]:  # fmt: skip
    """Round 1 played by all, round 2 attests (MODEL, result) and finalizes round 1 (no
    rewards paid yet). Returns round 1's result and its digest."""
    contributors, ordered = result_of(members, scores)
    digest = result_digest(contributors, ordered)
    play(world, members, 1)
    events = play(world, members, 2, (MODEL, digest))
    assert "Finalized" in kinds(events)
    return contributors, ordered, digest


# ------------------------------------------------------------------------------------------------
# Rules and membership
# ------------------------------------------------------------------------------------------------


def test_rules_round_trip(world: World) -> None:
    expected = rules_for(world.task, token=world.token, treasury=world.treasury,
                         governor=world.governor.account)  # fmt: skip
    for ledger in (world.owner, *world.accounts[:2]):
        assert ledger.rules() == expected
        assert ledger.task_address == world.owner.task_address
        assert ledger.chain_id == world.owner.chain_id
    rules = world.rules
    assert rules.rule == "fedavg"
    assert rules.quorum_bps == 6700
    assert rules.min_stake == ETHER
    assert (rules.window, rules.grace, rules.max_rounds) == (WINDOW, GRACE, ROUNDS)
    assert rules.reward_per_round == REWARD
    assert rules.cooldown == COOLDOWN
    assert rules.access_policy == 0
    assert not rules.allowlist_only
    owner = world.owner
    assert owner.current_round() == 0
    assert owner.members() == []
    assert owner.member_count() == 0
    assert owner.phase(1) == PHASE_NOT_STARTED
    assert owner.phase(0) == PHASE_NOT_STARTED
    assert owner.round_clock(1) == RoundClock(start=0, closes_at=0)
    assert owner.model_digest(1) == ZERO32
    assert owner.earned_of(owner.account) == owner.claimed_of(owner.account) == 0
    assert owner.lineage() == (0, ZERO32)
    (configured,) = owner.events(0)  # the deployment's
    assert strip(configured) == ("Configured", {"from_round": 1,
                                                "config_digest": rules.config_digest,
                                                "document": world.task.document()})  # fmt: skip
    assert configured.block <= world.deployed
    assert owner.events(world.deployed) == []
    reverts("not started", owner.submit, 1, [])
    reverts("not started", owner.close)
    reverts("round closed", owner.submit, 0, [])


def test_join_registers_members(world: World) -> None:
    a, b, c = world.accounts[:3]
    stakes = {a.account: 3 * ETHER, b.account: ETHER, c.account: 2 * ETHER}
    results = {m.account: m.join(endpoint_of(m), stakes[m.account]) for m in (c, a, b)}
    members = world.owner.members()
    assert [m.address for m in members] == sorted(stakes, key=str.lower)
    assert world.owner.member_count() == 3
    for m in members:
        assert m.stake == stakes[m.address]
        assert m.first_round == 1
        assert m.endpoint == endpoint_of(next(x for x in (a, b, c) if x.account == m.address))
        assert world.owner.status_of(m.address) == STATUS_ACTIVE
    assert world.owner.status_of(world.accounts[3].account) == STATUS_NONE
    events = world.owner.events(world.deployed)
    assert [strip(e) for e in events] == [
        strip(Joined(block=0, time=0, tx="", index=0, member=m.account, stake=stakes[m.account],
                     endpoint=endpoint_of(m), first_round=1))
        for m in (c, a, b)
    ]  # fmt: skip
    for e in events:
        assert isinstance(e, Joined)
        assert results[e.member].block == e.block
    # A member joining once round 1 runs counts from round 2 on.
    world.owner.start()
    late = world.accounts[3]
    joined = tx_events(late, late.join(endpoint_of(late), ETHER))
    assert [strip(e)[1]["first_round"] for e in joined] == [2]
    assert {m.address: m.first_round for m in late.members()}[late.account] == 2


def test_join_reverts(world: World) -> None:
    a, b = world.accounts[:2]
    reverts("stake below minimum", a.join, endpoint_of(a), ETHER - 1)
    if world.backend == "memory":  # no embedded account holds 2**96 wei
        reverts("stake above 2**96 - 1", a.join, endpoint_of(a), 2**96)
    a.join(endpoint_of(a), ETHER)
    reverts("already a member", a.join, endpoint_of(a), ETHER)
    reverts("stake below minimum", b.join, endpoint_of(b), 0)
    a.leave()
    reverts("withdraw first", a.join, endpoint_of(a), ETHER)
    assert kinds(a.events(world.deployed)) == ["Joined", "Left"]
    assert a.members() == []


def test_task_is_full(make_world: Callable[..., World]) -> None:
    world = make_world(nodes=2, max_participants=2)
    assert world.rules.max_participants == 2
    world.join(2)
    late = world.accounts[2]
    reverts("task is full", late.join, endpoint_of(late), ETHER)
    world.accounts[0].leave()  # leaving frees a seat
    late.join(endpoint_of(late), ETHER)
    assert len(late.members()) == 2


def test_allowlist(make_world: Callable[..., World]) -> None:
    world = make_world(allowlist=True)
    assert world.rules.allowlist_only
    a, b = world.accounts[:2]
    reverts("not allowlisted", a.join, endpoint_of(a), ETHER)
    reverts("ownable: caller is not the owner", b.allow, a.account)
    reverts("ownable: caller is not the owner", a.allow, a.account)
    world.owner.allow(a.account)
    a.join(endpoint_of(a), ETHER)
    reverts("not allowlisted", b.join, endpoint_of(b), ETHER)
    assert [m.address for m in world.owner.members()] == [a.account]


def test_set_keys(world: World) -> None:
    """An active member registers its secure-aggregation keys: only a ``Keys`` event."""
    a, b, c = world.join(3)
    outsider = world.accounts[6]
    key, blob = hashlib.sha256(b"channel key").digest(), hashlib.sha256(b"key blob").digest()
    reverts("not a member", outsider.set_keys, key, blob, 1, 30, 3)
    reverts("not a member", world.owner.set_keys, key, blob, 1, 30, 3)
    reverts("zero key", a.set_keys, ZERO32, blob, 1, 30, 3)
    reverts("zero key", a.set_keys, ZERO32, ZERO32, 0, 0, 0)
    for first, last in ((0, 30), (0, 0), (31, 30), (2, 1)):
        reverts("bad rounds", a.set_keys, key, blob, first, last, 3)
    for first, last, recipients in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 30, 3)):
        reverts("bad rounds", a.set_keys, key, ZERO32, first, last, recipients)
    assert kinds(world.owner.events(world.deployed)) == ["Joined"] * 3  # refused: nothing
    members = world.owner.members()
    (keys,) = tx_events(a, a.set_keys(key, blob, 1, 30, 3))
    assert isinstance(keys, Keys)
    assert strip(keys) == ("Keys", {"member": a.account, "channel_key": key, "keys_digest": blob,
                                    "first_round": 1, "last_round": 30,
                                    "recipients": 3})  # fmt: skip
    (keys,) = tx_events(b, b.set_keys(key, blob, 7, 7, 0))  # one round; any recipients
    assert strip(keys) == ("Keys", {"member": b.account, "channel_key": key, "keys_digest": blob,
                                    "first_round": 7, "last_round": 7,
                                    "recipients": 0})  # fmt: skip
    (keys,) = tx_events(c, c.set_keys(key, ZERO32, 0, 0, 0))  # the channel key alone
    assert strip(keys)[1]["keys_digest"] == ZERO32
    assert world.owner.members() == members  # nothing else changes
    assert world.owner.current_round() == 0
    # A member that left, or was slashed, is refused.
    a.leave()
    reverts("not a member", a.set_keys, key, blob, 1, 30, 3)
    world.owner.slash(1, sign(world.owner, b, 1), sign(world.owner, b, 1, update=False))
    assert world.owner.status_of(b.account) == STATUS_SLASHED
    reverts("not a member", b.set_keys, key, blob, 1, 30, 3)
    c.set_keys(key, blob, 2, 31, 1)  # again, as often as it likes


def test_block_hashes(world: World) -> None:
    """Every mined block has a 32-byte hash that stays what it was (contribution scores'
    randomness); a block not mined yet has none."""
    (a,) = world.join(1)
    head = world.owner.head()
    first = world.owner.block_hash(head)
    assert len(first) == 32
    a.set_keys(hashlib.sha256(b"k").digest(), ZERO32, 0, 0, 0)  # one more block
    assert world.owner.block_hash(head) == first
    assert world.owner.block_hash(world.owner.head()) not in (first, ZERO32)
    with pytest.raises(LedgerError):
        world.owner.block_hash(world.owner.head() + 1000)


def test_start(world: World) -> None:
    members = world.join(4, [ETHER, 2 * ETHER, ETHER, 3 * ETHER])
    reverts("ownable: caller is not the owner", members[0].start)
    assert world.owner.current_round() == 0
    (started,) = tx_events(world.owner, world.owner.start())
    assert isinstance(started, RoundStarted)
    assert strip(started)[1] == {"round": 1, "start": started.time, "active_stake": 7 * ETHER,
                                 "members": 4}  # fmt: skip
    assert world.owner.current_round() == 1
    assert world.owner.phase(1) == PHASE_OPEN
    assert world.owner.phase(2) == PHASE_NOT_STARTED
    assert world.owner.round_clock(1) == RoundClock.of(start=started.start, rules=world.rules)
    assert world.owner.round_clock(1) == RoundClock(start=started.start,
                                                    closes_at=started.start + WINDOW)  # fmt: skip
    reverts("already started", world.owner.start)
    reverts("ownable: caller is not the owner", members[1].start)


# ------------------------------------------------------------------------------------------------
# Rounds
# ------------------------------------------------------------------------------------------------


def test_full_round_finalizes_and_pays(world: World) -> None:
    members = world.join(4)
    outsider = world.accounts[6]
    (started,) = tx_events(world.owner, world.owner.start())
    assert isinstance(started, RoundStarted)
    # Round 1: every member's message in one batch, submitted by an outsider: it closes early.
    messages = batch(outsider, members, 1)
    events = tx_events(outsider, outsider.submit(1, messages))
    assert [strip(e) for e in events] == [submitted(s) for s in messages] + [
        ("Closed", {"round": 1})
    ]
    assert world.owner.phase(1) == PHASE_AGGREGATE
    assert world.owner.round_clock(1) == RoundClock(start=started.start, closes_at=events[-1].time)
    reverts("round closed", outsider.submit, 1, messages[:1])
    # Round 2 attests round 1 and pays its result in the same batch.
    contributors, scores = result_of(members, [1, 1, 1, 1])
    digest = result_digest(contributors, scores)
    messages = batch(outsider, members, 2, (MODEL, digest))
    events = tx_events(outsider, outsider.submit(2, messages, contributors, scores))
    assert kinds(events) == ["RoundStarted", *["Submitted"] * 3, "Finalized", "Submitted",
                             "Closed", "Distributed"]  # fmt: skip
    assert strip(events[0])[1] == {"round": 2, "start": events[0].time,
                                   "active_stake": 4 * ETHER, "members": 4}  # fmt: skip
    assert [strip(e) for e in events if isinstance(e, Submitted)] == [
        submitted(s) for s in messages
    ]
    # 4 ether staked, quorum ceil(0.67 * 4) = 2.68 ether: the third message finalizes.
    finalized = {"round": 1, "model_digest": MODEL, "result_digest": digest, "stake": 3 * ETHER}
    assert strip(events[4]) == ("Finalized", finalized)
    assert strip(events[6]) == ("Closed", {"round": 2})
    assert strip(events[7]) == ("Distributed", {"round": 1, "total": REWARD,
                                                "contributors": tuple(contributors),
                                                "scores": tuple(scores),
                                                "transcript": ZERO32})  # fmt: skip
    assert isinstance(events[7], Distributed)
    assert events[7].selected() == contributors
    assert world.owner.phase(1) == PHASE_FINALIZED
    assert world.owner.phase(2) == PHASE_AGGREGATE
    assert world.owner.model_digest(1) == MODEL
    assert world.owner.model_digest(2) == ZERO32
    share = REWARD // 4
    assert [world.owner.earned_of(m.account) for m in members] == [share] * 4
    assert world.owner.token_supply() == 0
    # Claims mint the earned reward to the member, whoever sends them.
    claimer = members[0]
    (claimed,) = tx_events(outsider, outsider.claim(claimer.account))
    assert strip(claimed) == ("Claimed", {"member": claimer.account, "amount": share})
    assert outsider.token_balance(claimer.account) == share
    assert outsider.token_supply() == share
    assert outsider.claimed_of(claimer.account) == share
    assert outsider.earned_of(claimer.account) == share
    reverts("nothing to claim", outsider.claim, claimer.account)
    reverts("nothing to claim", outsider.claim, outsider.account)
    assert {m.account: m.reputation(m.account) for m in members} == dict.fromkeys(
        [m.account for m in members], (1, 2)
    )


def test_submit_reverts_and_skips(world: World) -> None:
    members = world.join(4)
    outsider, late = world.accounts[5], world.accounts[4]
    world.owner.start()
    late.join(endpoint_of(late), ETHER)
    m = members[0]
    reverts("signer is not a member", m.submit, 1, [sign(m, outsider, 1)])
    reverts("signer joined during this round", m.submit, 1, [sign(m, late, 1)])
    good = sign(m, m, 1)
    forged = SignedRound(message=good.message, signer=m.account, r=0, vs=good.vs)
    reverts("ecdsa: invalid signature", m.submit, 1, [forged])
    malleable = SignedRound(message=good.message, signer=m.account, r=good.r,
                            vs=(good.vs & (1 << 255)) | (2**255 - 1))  # fmt: skip
    reverts("ecdsa: invalid signature `s` value", m.submit, 1, [malleable])
    reverts("ecdsa: invalid signature", m.slash, 1, forged, sign(m, m, 1, update=False))
    reverts("ecdsa: invalid signature", m.slash, 1, sign(m, m, 1, update=False), forged)
    elsewhere = good.message.sign(IDENTITIES[m.account], m.chain_id + 1, m.task_address)
    reverts("signer is not a member", m.submit, 1, [elsewhere])
    other_round = sign(m, m, 2)
    reverts("signer is not a member", m._send, "submit", 1, [(ZERO32, ZERO32)],  # type: ignore[attr-defined]
            [(other_round.message.update, other_round.message.examples, 0, other_round.r,
              other_round.vs)], [], [], ZERO32)  # fmt: skip
    reverts("examples without an update", m.submit, 1, [sign(m, m, 1, update=False, examples=5)])
    reverts("examples not in [1, 2**64)", m.submit, 1, [sign(m, m, 1, examples=0)])
    reverts("examples not in [1, 2**64)", m.submit, 1, [sign(m, m, 1, examples=2**64)])
    reverts("pair index out of range", m._send, "submit", 1, [],  # type: ignore[attr-defined]
            [(good.message.update, good.message.examples, 0, good.r, good.vs)], [], [],
            ZERO32)  # fmt: skip
    reverts("current round still open", m.submit, 2, [sign(m, m, 2)])
    reverts("not the current round", m.submit, 3, [sign(m, m, 3)])
    reverts("not the current round", m.submit, 0, [])
    # A batch is atomic: one bad message and nothing of it counts.
    reverts("signer is not a member", m.submit, 1, [good, sign(m, outsider, 1)])
    before = world.owner.head()
    events = tx_events(m, m.submit(1, [good, good]))  # the same message twice: once
    assert [strip(e) for e in events] == [submitted(good)]
    assert kinds(world.owner.events(before)) == ["Submitted"]
    # Once a member's message for the round is in, its others are skipped (evidence for
    # slash, not a revert), whoever submits them.
    assert tx_events(m, m.submit(1, [good])) == []
    assert tx_events(outsider, outsider.submit(1, [sign(m, m, 1, update=False)])) == []
    # An attestation only (no update), with no pair for round 0.
    attest_only = sign(m, members[1], 1, update=False)
    assert [strip(e) for e in tx_events(m, m.submit(1, [attest_only]))] == [submitted(attest_only)]


def test_quorum_grace_and_window(world: World) -> None:
    members = world.join(4)
    (started,) = tx_events(world.owner, world.owner.start())
    start = started.time
    owner = world.owner
    # Two of four ether: below the quorum (2.68 ether); the window bounds the round.
    assert kinds(play(world, members[:2], 1)) == ["Submitted"] * 2
    assert owner.round_clock(1) == RoundClock(start=start, closes_at=start + WINDOW)
    events = play(world, members[2:3], 1)
    assert kinds(events) == ["Submitted", "Quorate"]
    assert strip(events[1]) == ("Quorate", {"round": 1})
    closes = events[1].time + GRACE
    assert owner.round_clock(1) == RoundClock.of(start=start, rules=world.rules,
                                                 quorum_at=events[1].time)  # fmt: skip
    assert owner.round_clock(1).closes_at == closes
    world.travel_to(closes - 1)
    assert owner.phase(1) == PHASE_OPEN
    reverts("current round still open", members[0].submit, 2, [sign(owner, members[0], 2)])
    world.travel_to(closes)
    assert owner.phase(1) == PHASE_AGGREGATE
    assert owner.phase(2) == PHASE_NOT_STARTED
    reverts("round closed", members[3].submit, 1, [sign(owner, members[3], 1)])
    # Round 2: the quorum comes late, the window still bounds the round.
    events = play(world, members[:2], 2)
    assert kinds(events) == ["RoundStarted", "Submitted", "Submitted"]
    start2 = events[0].time
    assert owner.phase(1) == PHASE_ATTEST
    assert owner.phase(2) == PHASE_OPEN
    world.travel_to(start2 + WINDOW - GRACE // 2)
    assert kinds(play(world, members[2:3], 2)) == ["Submitted", "Quorate"]
    assert owner.round_clock(2) == RoundClock(start=start2, closes_at=start2 + WINDOW)
    world.travel_to(start2 + WINDOW)
    assert owner.phase(2) == PHASE_AGGREGATE
    # Round 1 never had a quorum of attestations: it failed (Skipped once round 3 opens).
    assert owner.phase(1) == PHASE_FAILED


def test_attestations_add_up_across_batches_and_pairs(world: World) -> None:
    members = world.join(4)
    late = world.accounts[4]
    world.owner.start()
    # Eligible from round 2: its attestation of round 1 does not count.
    late.join(endpoint_of(late), ETHER)
    play(world, members, 1)
    pair = (MODEL, b"\x11" * 32)
    a, b, c, d = members
    assert kinds(play(world, [a, b], 2, pair)) == ["RoundStarted", "Submitted", "Submitted"]
    assert kinds(play(world, [c], 2, (OTHER_MODEL, pair[1]))) == ["Submitted"]
    # Not counted for round 1 (it counts for round 2's own quorum: 4 of 5 ether).
    assert kinds(play(world, [late], 2, pair)) == ["Submitted", "Quorate"]
    assert world.owner.phase(1) == PHASE_ATTEST
    # A pair listed twice in one batch counts in one sum (the batch_arguments never do it).
    s = sign(d, d, 2, pair)
    entry = (s.message.update, s.message.examples, 1, s.r, s.vs)
    sent = d._send("submit", 2, [pair, pair], [entry], [], [], ZERO32)  # type: ignore[attr-defined]
    events = tx_events(d, sent)
    assert kinds(events) == ["Submitted", "Finalized", "Closed"]
    assert strip(events[0]) == submitted(s)
    assert strip(events[1])[1] == {"round": 1, "model_digest": MODEL, "result_digest": pair[1],
                                   "stake": 3 * ETHER}  # fmt: skip
    assert world.owner.phase(1) == PHASE_FINALIZED


def test_skipped_rounds(world: World) -> None:
    members = world.join(4)
    owner = world.owner
    (started,) = tx_events(owner, owner.start())
    play(world, members[:2], 1)
    world.travel_to(started.time + WINDOW - 1)
    assert owner.phase(1) == PHASE_OPEN
    reverts("current round still open", owner.close)
    world.travel_to(started.time + WINDOW)
    assert owner.phase(1) == PHASE_AGGREGATE
    reverts("nothing to close", owner.close)  # round 1 attests no round
    # Round 2's attestations of round 1 stay below the quorum.
    events = play(world, members[:2], 2, (MODEL, b"\x22" * 32))
    start2 = events[0].time
    assert owner.phase(1) == PHASE_ATTEST
    world.travel_to(start2 + WINDOW)
    assert owner.phase(1) == PHASE_FAILED
    assert owner.phase(2) == PHASE_AGGREGATE
    # Opening round 3 fails round 1.
    events = play(world, members[:1], 3)
    assert [strip(e) for e in events[:2]] == [
        ("Skipped", {"round": 1}),
        ("RoundStarted", {"round": 3, "start": events[1].time, "active_stake": 4 * ETHER,
                          "members": 4}),
    ]  # fmt: skip
    assert kinds(events[2:]) == ["Submitted"]
    assert owner.phase(1) == PHASE_FAILED
    assert owner.model_digest(1) == ZERO32
    reverts("current round still open", owner.close)
    world.travel_to(events[1].time + WINDOW)
    assert owner.phase(2) == PHASE_FAILED
    (skipped,) = tx_events(world.accounts[7], world.accounts[7].close())
    assert strip(skipped) == ("Skipped", {"round": 2})
    reverts("nothing to close", owner.close)
    assert kinds(play(world, members, 4)) == ["RoundStarted", *["Submitted"] * 4, "Closed"]


def test_the_last_round(make_world: Callable[..., World]) -> None:
    world = make_world(rounds=1)
    members = world.join(4)
    owner = world.owner
    owner.start()
    play(world, members, 1)
    m = members[0]
    reverts("no updates after the last round", m.submit, 2, [sign(m, m, 2)])
    digest = b"\x33" * 32
    events = tx_events(m, m.submit(2, batch(m, members[:3], 2, (MODEL, digest), update=False)))
    assert kinds(events) == ["RoundStarted", "Submitted", "Submitted", "Submitted", "Finalized",
                             "Quorate"]  # fmt: skip
    world.travel_to(owner.round_clock(2).closes_at)
    reverts("task is over", m.submit, 3, [sign(m, m, 3, update=False)])
    reverts("nothing to close", owner.close)
    assert owner.phase(1) == PHASE_FINALIZED


def test_distribute(world: World) -> None:
    members = world.join(4)
    outsider = world.accounts[6]
    world.owner.start()
    contributors, scores, _ = finalized_round_1(world, members, [3, 1, 0, 0])
    reverts("result digest mismatch", outsider.distribute, 1, contributors, [1, 1, 0, 0])
    reverts("result digest mismatch", outsider.distribute, 1, contributors, scores[:-1])
    reverts("round not finalized, or already distributed", outsider.distribute, 2,
            contributors, scores)  # fmt: skip
    reverts("round not finalized, or already distributed", outsider.distribute, 9, [], [])
    (paid,) = tx_events(outsider, outsider.distribute(1, contributors, scores))
    assert strip(paid) == ("Distributed", {"round": 1, "total": REWARD,
                                           "contributors": tuple(contributors),
                                           "scores": tuple(scores),
                                           "transcript": ZERO32})  # fmt: skip
    earned = {c: REWARD * s // 4 for c, s in zip(contributors, scores, strict=True)}
    assert {c: outsider.earned_of(c) for c in contributors} == earned
    reverts("round not finalized, or already distributed", outsider.distribute, 1,
            contributors, scores)  # fmt: skip
    # Round 2's result names its contributors out of order: it cannot be paid. A batch that
    # finalizes round 2 pays nothing then, silently, as for a result that is not round 2's.
    backwards = list(reversed(contributors))
    unsorted = result_digest(backwards, [1, 1, 1, 1])
    m = members[0]
    messages = batch(m, members, 3, (MODEL, unsorted))
    events = tx_events(m, m.submit(3, messages[:3], backwards, [1, 1, 1, 1]))
    assert kinds(events) == ["RoundStarted", *["Submitted"] * 3, "Finalized", "Quorate"]
    events = tx_events(m, m.submit(3, messages[3:], contributors, [1, 1, 1, 1]))
    assert kinds(events) == ["Submitted", "Closed"]
    reverts("contributors not strictly increasing", outsider.distribute, 2, backwards,
            [1, 1, 1, 1])  # fmt: skip
    # Round 3's result has a score too large.
    big = result_digest(contributors, [2**128, 0, 0, 0])
    events = play(world, members, 4, (MODEL, big), contributors, [2**128, 0, 0, 0])
    assert "Finalized" in kinds(events)
    assert "Distributed" not in kinds(events)  # the batch's payment is skipped, silently
    reverts("score above 2**128 - 1", outsider.distribute, 3, contributors, [2**128, 0, 0, 0])
    # Zero scores: nothing paid, the round is distributed all the same.
    zero = result_digest(contributors[:1], [0])
    play(world, members, 5, (MODEL, zero))
    (paid,) = tx_events(outsider, outsider.distribute(4, contributors[:1], [0]))
    assert strip(paid)[1]["total"] == 0
    assert {c: outsider.earned_of(c) for c in contributors} == earned


def test_a_transcript_in_the_result(world: World) -> None:
    """A result digest that commits to a secure-aggregation transcript is paid only with it;
    without one (zero), the digest and payment are as before."""
    members = world.join(4)
    outsider = world.accounts[6]
    world.owner.start()
    transcript, wrong = hashlib.sha256(b"transcript").digest(), b"\x01" * 32
    contributors, scores = result_of(members, [2, 1, 0, 1])
    digest = result_digest(contributors, scores, transcript)
    assert digest != result_digest(contributors, scores)
    assert result_digest(contributors, scores, ZERO32) == result_digest(contributors, scores)
    play(world, members, 1)
    m = members[0]
    messages = batch(m, members, 2, (MODEL, digest))
    # The batch that finalizes round 1 carries the result with a wrong transcript, a second
    # (a message already on chain: a no-op) carries it without one: neither pays nor reverts.
    events = tx_events(m, m.submit(2, messages[:3], contributors, scores, wrong))
    assert kinds(events) == ["RoundStarted", *["Submitted"] * 3, "Finalized", "Quorate"]
    assert strip(events[4])[1]["result_digest"] == digest
    assert tx_events(m, m.submit(2, messages[:1], contributors, scores)) == []
    assert world.owner.phase(1) == PHASE_FINALIZED
    assert [outsider.earned_of(c) for c in contributors] == [0] * 4
    reverts("result digest mismatch", outsider.distribute, 1, contributors, scores, wrong)
    reverts("result digest mismatch", outsider.distribute, 1, contributors, scores)
    reverts("result digest mismatch", outsider.distribute, 1, contributors, scores, ZERO32)
    # A batch with the matching transcript pays it.
    events = tx_events(m, m.submit(2, messages[3:], contributors, scores, transcript))
    assert kinds(events) == ["Submitted", "Closed", "Distributed"]
    paid = events[-1]
    assert isinstance(paid, Distributed)
    assert strip(paid) == ("Distributed", {"round": 1, "total": REWARD,
                                           "contributors": tuple(contributors),
                                           "scores": tuple(scores),
                                           "transcript": transcript})  # fmt: skip
    earned = {c: REWARD * s // 4 for c, s in zip(contributors, scores, strict=True)}
    assert {c: outsider.earned_of(c) for c in contributors} == earned
    reverts("round not finalized, or already distributed", outsider.distribute, 1,
            contributors, scores, transcript)  # fmt: skip
    # Round 2's result carries a transcript too: `distribute` pays it with that transcript.
    digest2 = result_digest(contributors, [1, 1, 1, 1], transcript)
    events = play(world, members, 3, (MODEL, digest2))
    assert "Finalized" in kinds(events)
    reverts("result digest mismatch", outsider.distribute, 2, contributors, [1, 1, 1, 1], wrong)
    (paid,) = tx_events(outsider, outsider.distribute(2, contributors, [1, 1, 1, 1], transcript))
    assert isinstance(paid, Distributed)
    assert (paid.round, paid.transcript, paid.total) == (2, transcript, REWARD)


def test_slash(world: World) -> None:
    members = world.join(4, [ETHER, 2 * ETHER, ETHER, ETHER])
    members = sorted(members, key=lambda m: m.account.lower())
    outsider = world.accounts[6]
    owner = world.owner
    owner.start()
    cheat = next(m for m in members if owner.members()[0].address == m.account)
    stake = {m.address: m.stake for m in owner.members()}[cheat.account]
    contributors, scores = result_of(members, [1, 1, 1, 1])
    digest = result_digest(contributors, scores)
    play(world, members, 1)
    play(world, members, 2, (MODEL, digest), contributors, scores)
    assert owner.earned_of(cheat.account) == REWARD // 4
    first = sign(owner, cheat, 2, (MODEL, digest))  # the message it submitted
    second = sign(owner, cheat, 2, (OTHER_MODEL, digest))
    reverts("the messages are the same", outsider.slash, 2, first, first)
    reverts("different signers", outsider.slash, 2, first, sign(owner, members[1], 2))
    reverts("no stake to slash", outsider.slash, 2, sign(owner, outsider, 2),
            sign(owner, outsider, 2, update=False))  # fmt: skip
    treasury_before = world.received(world.treasury)
    submitter_before = world.received(outsider.account)
    events = tx_events(outsider, outsider.slash(2, first, second))
    chain_id, address = owner.chain_id, owner.task_address
    share = stake // 10
    assert [strip(e) for e in events] == [
        ("Equivocated", {"round": 2, "member": cheat.account,
                         "first": first.message.digest(chain_id, address),
                         "second": second.message.digest(chain_id, address)}),
        ("Slashed", {"member": cheat.account, "amount": stake, "submitter": outsider.account,
                     "share": share}),
    ]  # fmt: skip
    assert world.received(world.treasury) - treasury_before == stake - share
    if world.backend == "memory":  # on chain the submitter paid gas too
        assert world.received(outsider.account) - submitter_before == share
    assert owner.status_of(cheat.account) == STATUS_SLASHED
    assert cheat.account not in [m.address for m in owner.members()]
    assert owner.member_count() == 3
    reverts("no stake to slash", outsider.slash, 2, first, second)
    reverts("slashed", cheat.join, endpoint_of(cheat), ETHER)
    reverts("slashed", outsider.claim, cheat.account)
    reverts("signer is not a member", outsider.submit, 3, [sign(owner, cheat, 3)])
    # Its messages already counted stay counted; a slashed contributor earns nothing.
    honest = [m for m in members if m is not cheat]
    events = play(world, honest, 3, (MODEL, digest), contributors, scores)
    assert kinds(events)[-1] == "Distributed"
    assert strip(events[-1])[1]["total"] == 3 * (REWARD // 4)
    assert owner.earned_of(cheat.account) == REWARD // 4  # from round 1, forfeit
    # A member that left can be slashed until it withdraws.
    leaver = honest[0]
    leaver.leave()
    evidence = (sign(owner, leaver, 3), sign(owner, leaver, 3, update=False))
    kinds_ = kinds(tx_events(outsider, outsider.slash(3, *evidence)))
    assert kinds_ == ["Equivocated", "Slashed"]
    assert owner.status_of(leaver.account) == STATUS_SLASHED
    reverts("nothing to withdraw", leaver.withdraw)
    # Evidence from before a member's current membership does not slash it.
    again = honest[1]
    (left,) = tx_events(again, again.leave())
    assert isinstance(left, Left)
    world.travel_to(left.withdraw_after)
    again.withdraw()
    (joined,) = tx_events(again, again.join(endpoint_of(again), ETHER))
    assert isinstance(joined, Joined)
    assert joined.first_round == 4
    old = (sign(owner, again, 3), sign(owner, again, 3, update=False))
    reverts("offence before this membership", outsider.slash, 3, *old)
    new = (sign(owner, again, 4), sign(owner, again, 4, update=False))
    assert kinds(tx_events(outsider, outsider.slash(4, *new))) == ["Equivocated", "Slashed"]


def test_reputation(world: World) -> None:
    """``reputation(a) == (selections, updates)``: one update per ``Submitted`` event with an
    update, one selection per nonzero score in a ``Distributed`` event (paid or not)."""
    members = world.join(4)
    outsider = world.accounts[6]
    world.owner.start()
    contributors, scores = result_of(members, [2, 0, 1, 1])
    digest = result_digest(contributors, scores)
    play(world, members, 1)
    after_round_1 = world.owner.head()
    sender = members[0]
    messages = [sign(sender, m, 2, (MODEL, digest), update=m is not members[3])
                for m in members]  # fmt: skip
    sender.submit(2, messages, contributors, scores)
    selected = {c for c, s in zip(contributors, scores, strict=True) if s}
    expected = {m.account: (int(m.account in selected), 1 + (m is not members[3]))
                for m in members}  # fmt: skip
    assert {m.account: outsider.reputation(m.account) for m in members} == expected
    assert outsider.reputation(outsider.account) == (0, 0)
    assert members[0].reputation(members[0].account.lower()) == expected[members[0].account]
    table = reputation_at(world.owner.events(0), 2**63)
    assert {m.account: table[m.account.lower()] for m in members} == expected
    then = reputation_at(world.owner.events(0, after_round_1), 2**63)
    assert then == {m.account.lower(): (0, 1) for m in members}
    # Leaving and joining again keeps an account's reputation.
    leaver = members[2]
    (left,) = tx_events(leaver, leaver.leave())
    assert isinstance(left, Left)
    world.travel_to(max(left.withdraw_after, world.owner.now()))
    leaver.withdraw()
    leaver.join(endpoint_of(leaver), ETHER)
    assert leaver.reputation(leaver.account) == expected[leaver.account]


def test_the_ring_keeps_recent_rounds(world: World) -> None:
    members = world.join(3)
    owner = world.owner
    owner.start()
    models = {r: bytes([r]) * 32 for r in range(1, 12)}
    play(world, members, 1)
    for rnd in range(2, 12):
        events = play(world, members, rnd, (models[rnd - 1], b"\x44" * 32))
        assert "Finalized" in kinds(events)
    assert owner.current_round() == 11
    for rnd in range(1, 11):
        assert owner.phase(rnd) == PHASE_FINALIZED
    for rnd in range(1, 4):  # older than the ring: read the Finalized events
        assert owner.model_digest(rnd) == ZERO32
        assert owner.round_clock(rnd) == RoundClock(start=0, closes_at=0)
    for rnd in range(4, 11):
        assert owner.model_digest(rnd) == models[rnd]
        assert owner.round_clock(rnd).start > 0
    assert owner.phase(11) == PHASE_AGGREGATE


@pytest.mark.parametrize("access", ["members", "token_holders", "public"])
def test_can_download(make_world: Callable[..., World], access: str) -> None:
    world = make_world(nodes=3, access=access)
    assert world.rules.access_policy == ("members", "token_holders", "public").index(access)
    members = world.join(3)
    outsider = world.accounts[6]
    world.owner.start()
    contributors, scores, _ = finalized_round_1(world, members, [1, 0, 1])
    outsider.distribute(1, contributors, scores)
    holder = next(m for m in members if outsider.earned_of(m.account) > 0)
    empty = next(m for m in members if outsider.earned_of(m.account) == 0)
    outsider.claim(holder.account)
    assert outsider.token_balance(holder.account) > 0
    holder.leave()
    empty.leave()
    active = next(m for m in members if m is not holder and m is not empty)
    expected = {
        # active member, left with tokens, left without tokens, never joined, owner
        "members": [True, False, False, False, False],
        "token_holders": [True, True, False, False, False],
        "public": [True, True, True, True, True],
    }[access]
    for asker in (world.owner, outsider, holder):
        assert [
            asker.can_download(a.account) for a in (active, holder, empty, outsider, world.owner)
        ] == expected


def test_readers_can_download_whatever_the_policy(make_world: Callable[..., World]) -> None:
    world = make_world(nodes=3, access="members")
    reader, outsider = world.accounts[5], world.accounts[6]
    assert not outsider.can_download(reader.account)
    assert not outsider.is_reader(reader.account)
    reverts("ownable: caller is not the owner", outsider.grant_reader, reader.account)
    world.owner.grant_reader(reader.account)
    assert outsider.can_download(reader.account)
    assert outsider.is_reader(reader.account)
    assert not outsider.can_download(outsider.account)
    assert outsider.status_of(reader.account) == STATUS_NONE  # no membership
    reverts("ownable: caller is not the owner", reader.revoke_reader, reader.account)
    world.owner.revoke_reader(reader.account)
    assert not outsider.can_download(reader.account)
    assert not outsider.is_reader(reader.account)


def test_contract_ledger_reads_the_configuration_from_the_chain() -> None:
    task = task_config(nodes=3, access="token_holders")
    world = embedded_world(task)
    reader = ContractLedger(world.owner.chain, world.owner.task_address, None)  # type: ignore[attr-defined]
    assert reader.config_document() == task.document()
    assert reader.task_config() == task
    assert reader.task_config().digest() == reader.rules().config_digest
    after = reader.head() + 1
    fresh = ContractLedger(world.owner.chain, world.owner.task_address, None)  # type: ignore[attr-defined]
    with pytest.raises(LedgerError, match="no Configured event"):
        fresh.config_document(from_block=after)
    # A governance change later on: still the deployment's document (round 1's rules).
    world.join(3)
    world.owner.start()
    changed, _ = reconfigure(world, quorum=0.9)
    again = ContractLedger(world.owner.chain, world.owner.task_address, None)  # type: ignore[attr-defined]
    assert again.config_document() == task.document()
    assert again.rules_at(2).config_digest == changed.config_digest != task.digest()
    # A change before the start replaces round 1's rules, and so its document.
    early = embedded_world(task)
    replaced, rules = amended(early, quorum=0.8)
    early.governor.reconfigure(*rules_argument(rules), replaced.document())
    reader = ContractLedger(early.owner.chain, early.owner.task_address, None)  # type: ignore[attr-defined]
    assert reader.config_document() == replaced.document()
    assert reader.task_config() == replaced


def test_contract_ledger_gas_limits_cover_the_largest_calls() -> None:
    """The fixed gas limits hold join's and set_consent's largest consent policy and
    reconfigure's largest document (the ledger resends with an estimate when they do not:
    here they must not need to)."""
    world = embedded_world(task_config())
    a = world.accounts[0]
    policy = b"p" * 2048
    used = {"join": a.join(endpoint_of(a) + "x" * 200, ETHER, policy).gas_used,
            "set_consent": a.set_consent(policy).gas_used}  # fmt: skip
    _, rules = amended(world, quorum=0.9)
    used["reconfigure"] = world.governor.reconfigure(*rules_argument(rules), b"d" * 8192).gas_used
    for name, gas in used.items():
        assert gas < GAS_LIMITS[name], (name, gas)


# ------------------------------------------------------------------------------------------------
# Governance: the governable rules change at a round boundary
# ------------------------------------------------------------------------------------------------


def amended(world: World, **ledger: Any) -> tuple[TaskConfig, TaskRules]:
    """Another configuration of the task (its ledger settings overridden) and its rules."""
    task = task_config(world.task.nodes, world.task.rounds, **ledger)
    rules = rules_for(task, token=world.token, treasury=world.treasury,
                      governor=world.governor.account)  # fmt: skip
    return task, rules


def reconfigure(
    world: World, by: Ledger | None = None, **ledger: Any
) -> tuple[TaskRules, TxResult]:
    """The governor (or ``by``) changes the rules to ``ledger``'s; returns the new rules (from
    the round they take effect) and the transaction."""
    task, rules = amended(world, **ledger)
    sender = by or world.governor
    sent = sender.reconfigure(*rules_argument(rules), task.document())
    return replace(rules, from_round=world.owner.current_round() + 1), sent


def test_only_the_governor_reconfigures(make_world: Callable[..., World]) -> None:
    world = make_world()
    task, rules = amended(world, quorum=0.9)
    args = rules_argument(rules)
    a = world.accounts[0]
    a.join(endpoint_of(a), ETHER)
    for ledger in (world.owner, a, world.accounts[1]):
        reverts("not the governor", ledger.reconfigure, *args, task.document())
    gov = world.governor
    bad: list[tuple[str, dict[str, Any]]] = [
        ("quorum not in (5000, 10000]", {"quorum_bps": 5000}),
        ("quorum not in (5000, 10000]", {"quorum_bps": 10001}),
        ("min stake is zero", {"min_stake": 0}),
        ("min stake above 2**96 - 1", {"min_stake": 2**96}),
        ("total reward above 2**88 - 1", {"reward_per_round": 2**88 // ROUNDS + 1}),
        ("unknown access policy", {"access_policy": 3}),
    ]
    for reason, change in bad:
        reverts(reason, gov.reconfigure, *rules_argument(replace(rules, **change)),
                task.document())  # fmt: skip
    reverts("config document is empty", gov.reconfigure, *args, b"")
    reverts_without_reason(gov.reconfigure, *args, b"d" * 8193)  # above 8192 bytes
    assert world.owner.events(world.deployed + 1) == []  # refused: nothing
    assert world.owner.rules() == replace(amended(world)[1])  # the deployment's still
    # The bounds themselves are fine.
    edge = replace(rules, quorum_bps=10000, min_stake=2**96 - 1,
                   reward_per_round=(2**88 - 1) // ROUNDS, access_policy=2)  # fmt: skip
    (configured,) = tx_events(gov, gov.reconfigure(*rules_argument(edge), b"x"))
    assert strip(configured) == ("Configured", {"from_round": 1,
                                                "config_digest": hashlib.sha256(b"x").digest(),
                                                "document": b"x"})  # fmt: skip
    assert world.owner.rules() == replace(edge, config_digest=hashlib.sha256(b"x").digest())
    # Without a governor the rules never change.
    fixed = make_world(governed=False)
    assert fixed.owner.rules().governor == ZERO_ADDRESS
    assert not fixed.owner.rules().governed
    for ledger in (fixed.owner, fixed.accounts[-1]):
        reverts("no governor", ledger.reconfigure, *args, task.document())


def test_reconfigure_takes_effect_at_the_next_round(world: World) -> None:
    owner = world.owner
    deployed = owner.rules()
    assert deployed.from_round == 1
    assert deployed.governed
    # Before the start: round 1's rules are replaced (and the views show it at once).
    first, sent = reconfigure(world, quorum=0.8)
    (configured,) = tx_events(world.governor, sent)
    assert isinstance(configured, Configured)
    assert (configured.from_round, configured.config_digest) == (1, first.config_digest)
    assert owner.rules() == owner.rules_at(0) == owner.rules_at(1) == owner.rules_at(5) == first
    members = world.join(4)
    owner.start()
    # In round 1: a change from round 2; the current round keeps its rules.
    second, sent = reconfigure(world, quorum=0.9, reward_per_round=7)
    assert second.from_round == 2
    assert strip(tx_events(world.governor, sent)[0])[1]["from_round"] == 2
    assert owner.rules() == owner.rules_at(1) == first
    assert owner.rules_at(2) == owner.rules_at(3) == second
    # A second change before round 2 opens replaces the first.
    third, _ = reconfigure(world, quorum=0.7, reward_per_round=9, min_stake=2)
    assert owner.rules_at(2) == third != second
    assert owner.rules() == first
    play(world, members, 1)
    assert owner.rules() == first  # round 1 closed, round 2 not open yet
    play(world, members, 2)
    assert owner.current_round() == 2
    assert owner.rules() == owner.rules_at(2) == third
    assert owner.rules_at(1) == first
    assert owner.rules_at(0) == first
    configured_rounds = [e.from_round for e in owner.events(0) if isinstance(e, Configured)]
    assert configured_rounds == [1, 1, 2, 2]
    # The immutable rules never change.
    for name in ("token", "window", "grace", "max_rounds", "max_participants", "cooldown",
                 "treasury", "governor"):  # fmt: skip
        assert getattr(owner.rules(), name) == getattr(deployed, name)


def test_each_round_is_finalized_by_its_own_quorum(world: World) -> None:
    members = world.join(4)
    owner = world.owner
    owner.start()
    # Round 1: 67 %; from round 2: every member's stake.
    reconfigure(world, quorum=1.0)
    play(world, members, 1)
    contributors, scores = result_of(members, [1, 1, 1, 1])
    pair = (MODEL, result_digest(contributors, scores))
    # Round 2's batch of three attests round 1: three of four is round 1's quorum, not
    # round 2's.
    events = play(world, members[:3], 2, pair)
    assert kinds(events) == ["RoundStarted", *["Submitted"] * 3, "Finalized"]
    assert owner.phase(1) == PHASE_FINALIZED
    # Three of four is not round 2's quorum: no Quorate; the window closes it.
    world.travel_to(events[0].time + WINDOW)
    pair2 = (OTHER_MODEL, result_digest(*result_of(members[:3], [1, 1, 1])))
    events = play(world, members[:3], 3, pair2)
    assert kinds(events) == ["RoundStarted", *["Submitted"] * 3]
    assert owner.phase(2) == PHASE_ATTEST
    events = play(world, members[3:], 3, pair2)
    assert kinds(events) == ["Submitted", "Finalized", "Closed"]
    assert strip(events[1])[1]["stake"] == 4 * ETHER
    # And back: a lower quorum from round 4 does not finalize round 3 with less than its own.
    reconfigure(world, quorum=0.51)
    pair3 = (MODEL, b"\x55" * 32)
    events = play(world, members[:3], 4, pair3)
    assert kinds(events) == ["RoundStarted", *["Submitted"] * 3, "Quorate"]  # 3 of 4 >= 51 %
    assert owner.phase(3) == PHASE_ATTEST
    assert kinds(play(world, members[3:], 4, pair3)) == ["Submitted", "Finalized", "Closed"]


def test_distribute_pays_each_round_its_own_reward(world: World) -> None:
    """Several changes within the ring: each round is paid its own reward_per_round, by
    ``distribute`` and by the batch that pays it."""
    members = world.join(4)
    owner = world.owner
    owner.start()
    rewards = {1: REWARD}
    results: dict[int, tuple[list[str], list[int]]] = {}
    for rnd in range(1, 8):
        previous = results.get(rnd - 1)
        pair = (bytes([rnd]) * 32, result_digest(*previous)) if previous else None
        pay: tuple[Sequence[str], Sequence[int]] = ((), ())
        if rnd == 5 and previous:  # round 5's batch pays round 4
            pay = previous
        play(world, members, rnd, pair, *pay)
        results[rnd] = result_of(members, [rnd, 1, 1, 1])
        # Round rnd is the current one: a change takes effect from rnd + 1.
        if rnd % 2 == 1:  # a change every other round (a pending one replaced once)
            if rnd == 3:
                reconfigure(world, reward_per_round=123)
            rewards[rnd + 1] = (rnd + 1) * 10 * ETHER
            reconfigure(world, reward_per_round=rewards[rnd + 1] / ETHER)
        else:
            rewards[rnd + 1] = rewards[rnd]
    assert owner.current_round() == 7
    for rnd in range(1, 7):
        assert owner.phase(rnd) == PHASE_FINALIZED
        assert owner.rules_at(rnd).reward_per_round == rewards[rnd]
    assert len({rewards[r] for r in range(1, 7)}) == 4
    outsider = world.accounts[6]
    for rnd in (6, 1, 3, 2, 5):  # any order, every round of the ring
        (paid,) = tx_events(outsider, outsider.distribute(rnd, *results[rnd]))
        assert isinstance(paid, Distributed)
        scores = results[rnd][1]
        assert paid.total == sum(rewards[rnd] * x // sum(scores) for x in scores), rnd
    reverts("round not finalized, or already distributed", outsider.distribute, 4,
            *results[4])  # fmt: skip
    earned: dict[str, int] = {}
    for rnd in range(1, 7):
        contributors, scores = results[rnd]
        for c, score in zip(contributors, scores, strict=True):
            earned[c] = earned.get(c, 0) + rewards[rnd] * score // sum(scores)
    for m in members:
        assert owner.earned_of(m.account) == earned[m.account]


def test_admission_and_access_change_at_the_boundary(world: World) -> None:
    owner = world.owner
    a, b, c, d, e = world.accounts[:5]
    a.join(endpoint_of(a), ETHER)
    owner.start()
    reconfigure(world, min_stake=2 * ETHER, access="public")
    # Round 1's rules still: 1 ether is enough; outsiders may not download.
    b.join(endpoint_of(b), ETHER)
    assert not owner.can_download(e.account)
    assert owner.can_download(a.account)
    assert owner.rules().min_stake == ETHER
    play(world, [a], 1)
    events = play(world, [a, b], 2)
    assert kinds(events)[0] == "RoundStarted"
    reverts("stake below minimum", c.join, endpoint_of(c), ETHER)
    c.join(endpoint_of(c), 2 * ETHER)
    assert owner.can_download(e.account)  # public from round 2
    reconfigure(world, min_stake=2 * ETHER, access="members", allowlist=True)
    d.join(endpoint_of(d), 2 * ETHER)  # round 2: no allowlist yet
    assert owner.can_download(e.account)
    play(world, [a, b, c, d], 3)
    assert owner.current_round() == 3
    reverts("not allowlisted", e.join, endpoint_of(e), 2 * ETHER)
    assert not owner.can_download(e.account)
    owner.allow(e.account)
    e.join(endpoint_of(e), 2 * ETHER)
    assert owner.can_download(e.account)


def test_lineage_chains_the_finalized_rounds(world: World) -> None:
    members = world.join(4)
    owner = world.owner
    owner.start()
    assert owner.lineage() == (0, ZERO32)
    expected = (0, ZERO32)
    play(world, members, 1)
    for rnd in range(2, 8):
        model = bytes([rnd - 1]) * 32
        if rnd in (3, 4):  # rounds 2 and 3 fail: too few attestations
            events = play(world, members[:2], rnd, (model, b"\x66" * 32))
            world.travel_to(events[-1].time + WINDOW)
        else:
            events = play(world, members, rnd, (model, b"\x66" * 32))
            assert "Finalized" in kinds(events)
            expected = (rnd - 1, lineage_hash(expected[1], rnd - 1, model))
        assert owner.lineage() == expected, rnd
    assert owner.phase(2) == owner.phase(3) == PHASE_FAILED
    finalized = [e for e in owner.events(0) if isinstance(e, Finalized)]
    assert [e.round for e in finalized] == [1, 4, 5, 6]
    chained = ZERO32
    for e in finalized:
        chained = lineage_hash(chained, e.round, e.model_digest)
    assert owner.lineage() == (6, chained)


# ------------------------------------------------------------------------------------------------
# Consent
# ------------------------------------------------------------------------------------------------


def test_consent_events(world: World) -> None:
    a, b, c = world.accounts[:3]
    policy = b'{"purposes":["digit recognition"]}'
    events = tx_events(a, a.join(endpoint_of(a), ETHER, policy))
    assert kinds(events) == ["Joined", "Consent"]
    assert isinstance(events[1], Consent)
    assert strip(events[1]) == ("Consent", {"member": a.account, "digest": consent_digest(policy),
                                            "policy": policy, "from_round": 1})  # fmt: skip
    assert consent_digest(policy) == hashlib.sha256(policy).digest()
    assert kinds(tx_events(b, b.join(endpoint_of(b), ETHER))) == ["Joined"]  # no policy
    reverts("not a member", c.set_consent, policy)
    reverts("not a member", world.owner.set_consent, policy)
    world.owner.start()
    (changed,) = tx_events(b, b.set_consent(policy + b" "))
    assert strip(changed)[1] == {"member": b.account, "digest": consent_digest(policy + b" "),
                                 "policy": policy + b" ", "from_round": 2}  # fmt: skip
    (withdrawn,) = tx_events(a, a.set_consent(b""))
    assert strip(withdrawn)[1] == {"member": a.account, "digest": ZERO32, "policy": b"",
                                   "from_round": 2}  # fmt: skip
    big = b"p" * 2048
    reverts_without_reason(c.join, endpoint_of(c), ETHER, big + b"p")  # above 2048 bytes
    reverts_without_reason(a.set_consent, big + b"p")
    (_, consent) = tx_events(c, c.join(endpoint_of(c), ETHER, big))
    assert strip(consent)[1]["from_round"] == 2
    assert strip(consent)[1]["policy"] == big
    a.leave()
    reverts("not a member", a.set_consent, policy)


# ------------------------------------------------------------------------------------------------
# Events and leaving
# ------------------------------------------------------------------------------------------------


def test_events_windows_and_times(world: World) -> None:
    a, b, c = world.accounts[:3]
    txs: list[tuple[int, TxResult]] = []

    def send(call: Callable[..., TxResult], *args: Any) -> None:
        now = world.owner.now()
        txs.append((now, call(*args)))

    for m in (a, b, c):
        send(m.join, endpoint_of(m), ETHER)
    send(world.owner.start)
    members = sorted((a, b, c), key=lambda m: m.account.lower())
    for m in members:
        send(m.submit, 1, [sign(m, m, 1)])
    world.travel(7)
    result = result_digest(*result_of(members, [1, 1, 1]))
    for m in members:
        send(m.submit, 2, [sign(m, m, 2, (MODEL, result))])
    send(c.leave)
    world.travel(3)
    send(a.claim, a.account) if a.earned_of(a.account) else None

    everything = world.owner.events(0)
    head = world.owner.head()
    assert everything == world.owner.events(0, head)
    assert world.owner.events(head) == []
    assert world.owner.events(5, 5) == []
    assert world.owner.events(head, head + 10) == []
    assert kinds(everything).count("RoundStarted") == 2
    assert kinds(everything).count("Finalized") == 1
    assert a.events(0) == everything  # every handle sees the same events
    # The union of consecutive windows is the whole log, whatever the cuts.
    for step in (1, 2, 3, 5, head):
        windows: list[LedgerEvent] = []
        for after in range(0, head, step):
            windows += world.owner.events(after, min(after + step, head))
        assert windows == everything, step
    # Blocks never go back, nor times; events of one transaction share its block and time.
    assert [e.block for e in everything] == sorted(e.block for e in everything)
    assert [e.time for e in everything] == sorted(e.time for e in everything)
    assert len({e.tx for e in everything}) == len({e.block for e in everything})
    blocks = [r.block for _, r in txs]
    assert blocks == sorted(set(blocks))
    for now, r in txs:
        mine = [e for e in everything if e.tx == r.tx]
        assert mine
        # now() is a lower bound: ContractLedger resends once after running out of gas.
        assert all(e.block == r.block and e.time >= now for e in mine)
        assert world.backend != "memory" or all(e.time == now for e in mine)
        assert [e.index for e in mine] == list(range(len(mine)))
    if world.block_time is not None:
        for e in everything:
            assert e.time == world.block_time(e.block)
    for e in everything:
        if isinstance(e, RoundStarted):
            assert e.start == e.time
        if isinstance(e, Left):
            assert e.withdraw_after == e.time + WINDOW + COOLDOWN


def test_leave_and_withdraw_with_cooldown(world: World) -> None:
    members = world.join(3, [ETHER, 2 * ETHER, 3 * ETHER])
    leaver = world.accounts[2]  # 3 ether
    world.owner.start()
    reverts("nothing to withdraw", leaver.withdraw)
    (left,) = tx_events(leaver, leaver.leave())
    assert isinstance(left, Left)
    assert strip(left)[1] == {"member": leaver.account,
                              "withdraw_after": left.time + WINDOW + COOLDOWN}  # fmt: skip
    assert leaver.status_of(leaver.account) == STATUS_LEFT
    assert leaver.account not in [m.address for m in leaver.members()]
    reverts("not a member", leaver.leave)
    reverts("signer is not a member", leaver.submit, 1, [sign(leaver, leaver, 1)])
    reverts("cooldown not over", leaver.withdraw)
    reverts("withdraw first", leaver.join, endpoint_of(leaver), ETHER)
    # Leaving does not lower the round's snapshot: round 1 started with 6 ether staked, so its
    # quorum is 4.02 ether, out of reach of the 3 ether of the two members still in it.
    stayers = [m for m in members if m is not leaver]
    assert kinds(play(world, stayers, 1)) == ["Submitted", "Submitted"]
    assert world.owner.phase(1) == PHASE_OPEN
    world.travel_to(left.withdraw_after - 1)
    reverts("cooldown not over", leaver.withdraw)
    world.travel_to(left.withdraw_after)
    received = world.received(leaver.account)
    assert tx_events(leaver, leaver.withdraw()) == []  # Withdrawn is not a ledger event
    if world.backend == "memory":
        assert world.received(leaver.account) - received == 3 * ETHER
    assert leaver.status_of(leaver.account) == STATUS_NONE
    reverts("nothing to withdraw", leaver.withdraw)
    # The account may join again, counting from the next round.
    (joined,) = tx_events(leaver, leaver.join(endpoint_of(leaver), ETHER))
    assert strip(joined)[1]["first_round"] == 2
    assert len(world.owner.members()) == 3
    reverts("round closed", leaver.submit, 1, [sign(leaver, leaver, 1)])  # checked first
    events = tx_events(leaver, leaver.submit(2, [sign(leaver, leaver, 2)]))
    assert kinds(events) == ["RoundStarted", "Submitted"]


# ------------------------------------------------------------------------------------------------
# The contract ledger's error boundary: only fedledger's errors, web3's translated
# ------------------------------------------------------------------------------------------------


def test_contract_ledger_methods_are_behind_the_error_boundary() -> None:
    for name, attr in vars(ContractLedger).items():
        function = attr.fget if isinstance(attr, property) else attr
        if name.startswith("_") or not inspect.isfunction(function):
            continue
        if name in ("account", "task_address", "chain_id"):  # attribute reads, nothing to translate
            continue
        assert hasattr(function, "__wrapped__"), f"ContractLedger.{name} is not @translated"


def test_contract_ledger_translates_web3_errors() -> None:
    world = embedded_world(task_config())
    owner = world.owner
    assert isinstance(owner, ContractLedger)
    chain = owner.chain
    malformed = {
        "task address": lambda: ContractLedger(chain, "0x12", None),
        "account": lambda: owner.status_of("not an address"),
        "allowed": lambda: owner.allow("0x12"),
        "contributor": lambda: owner.distribute(1, ["0x12"], [1]),
        "round": lambda: owner.model_digest(-1),
        "no contract": ContractLedger(chain, world.treasury, None).rules,  # an account's address
    }
    raised = {}
    for name, call in malformed.items():
        with pytest.raises(LedgerError) as caught:
            call()
        raised[name] = caught.value
    assert {name: type(e) for name, e in raised.items()} == dict.fromkeys(malformed, LedgerError)
    assert all(e.__cause__ is not None for e in raised.values())
    assert "no contract" in str(raised["no contract"])
    assert owner.current_round() == 0  # the ledger stays usable


def test_contract_ledger_decodes_its_transactions() -> None:
    world = embedded_world(task_config())
    owner = world.owner
    assert isinstance(owner, ContractLedger)
    started = owner.start()
    assert owner.decode_input(started.tx) == ("start", {})
    (member,) = world.join(1)
    joined = owner.events(started.block)[-1]
    assert joined.tx != started.tx
    assert owner.decode_input(joined.tx) == ("join", {"endpoint": endpoint_of(member),
                                                      "consent": b""})  # fmt: skip
    funded = owner.chain.transfer(member.account, 1, sender=owner.chain.accounts()[0])
    with pytest.raises(LedgerError) as caught:  # not a Task call: web3's Web3ValueError
        owner.decode_input(funded.tx_hash)
    assert caught.value.__cause__ is not None


def test_model_digest_of_an_unfinalized_round_in_a_reused_slot(world: World) -> None:
    """``model_digest(round)`` is zero while the round is not finalized, even in a ring slot
    that an older, finalized round used (round 9 shares round 1's)."""
    members = world.join(3)
    world.owner.start()
    play(world, members, 1)
    for rnd in range(2, 10):
        play(world, members, rnd, (bytes([rnd - 1]) * 32, b"\x44" * 32))
    assert world.owner.phase(9) == PHASE_AGGREGATE
    assert world.owner.model_digest(1) == ZERO32  # out of the ring
    assert world.owner.model_digest(9) == ZERO32


# ------------------------------------------------------------------------------------------------
# Committees
# ------------------------------------------------------------------------------------------------


def test_committees_are_drawn_ahead_sign_alone_and_attest_against_their_stake(
    make_world: Callable[..., World],
) -> None:
    """Six members, a committee of 3: `start` draws rounds 1 and 2 over the member array (as
    `sample_committee` does from the event's seed); only round 1's committee signs it, and its
    three messages close it; round 2's committee finalizes round 1 against its own stake (not
    the task's); the batch that opens round 2 draws round 3; a member that joined after a draw
    has no seat in it."""
    world = make_world(nodes=6, committee=3)
    members = world.join(6, stakes=[(i + 1) * ETHER for i in range(6)])
    by_account = {m.account: m for m in members}
    stake = {m.address: m.stake for m in world.owner.members()}
    array = world.owner.member_array()
    assert sorted(array, key=str.lower) == [m.account for m in members]
    started = tx_events(world.owner, world.owner.start())
    assert kinds(started) == ["CommitteeSampled", "CommitteeSampled", "RoundStarted"]
    draws = {e.round: e for e in started if isinstance(e, CommitteeSampled)}
    for e in draws.values():
        assert e.members == sample_committee(e.seed, array, 3)
        assert e.stake == sum(stake[a] for a in e.members)
    opened = started[-1]
    assert isinstance(opened, RoundStarted)
    assert (opened.members, opened.active_stake) == (3, draws[1].stake)
    first = [by_account[a] for a in draws[1].members]
    second = [by_account[a] for a in draws[2].members]
    outsider = next(m for m in members if m not in first)
    reverts("signer not in the committee", outsider.submit, 1, batch(outsider, [outsider], 1),
            [], [])  # fmt: skip
    late = world.accounts[6]
    late.join(endpoint_of(late), ETHER)
    assert "Closed" in kinds(play(world, first, 1))
    digest = result_digest(*result_of(first, [1, 1, 1]))
    # Round 2's committee, heaviest first, until a quorum (0.67) of ITS stake attests.
    quorum = -(-world.rules.quorum_bps * draws[2].stake // BPS)
    heavy = sorted(second, key=lambda m: stake[m.account], reverse=True)
    needed: list[Ledger] = []
    while sum(stake[m.account] for m in needed) < quorum:
        needed.append(heavy[len(needed)])
    events = play(world, needed, 2, (MODEL, digest))
    assert [type(e).__name__ for e in events][:2] == ["CommitteeSampled", "RoundStarted"]
    assert [e.round for e in events if isinstance(e, Finalized)] == [1]
    third = next(e for e in events if isinstance(e, CommitteeSampled))
    assert third.round == 3
    assert third.members == sample_committee(third.seed, world.owner.member_array()[:7], 3)
    reverts("signer not in the committee", late.submit, 2, batch(late, [late], 2), [], [])


def test_the_member_array_replayed_from_the_events_is_the_contracts(world: World) -> None:
    """`member_arrays_at_starts` (the audit's replay of joins, leaves and slashes) gives the
    contract's own member array at each round's start, swaps included."""
    members = world.join(6)
    owner = world.owner
    (started,) = tx_events(owner, owner.start())
    members[1].leave()  # from the middle: the last member moves into its position
    members[5].leave()
    late = world.accounts[6]
    late.join(endpoint_of(late), ETHER)
    stay = [m for m in members if m not in (members[1], members[5])]
    play(world, stay, 1)
    world.travel_to(started.time + WINDOW)  # the leavers' messages never come
    play(world, stay, 2)
    arrays = member_arrays_at_starts(owner.events(-1))
    assert arrays[2] == tuple(owner.member_array())
    assert len(arrays[1]) == 6
    assert len(arrays[2]) == 5
