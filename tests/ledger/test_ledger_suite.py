"""One behaviour suite for every :class:`~fedledger.ledger.records.Ledger` implementation.

Each test runs against the in-memory ledger (:class:`MemoryTask` with a fake clock) and against
the real Task contract on a fresh :class:`EmbeddedChain` (:class:`ContractLedger`), and asserts
the same observable outcomes on both: exact revert reasons, event sequences and fields, views.

Timing differs by construction (every embedded block is one second later than its parent, the
memory ledger stamps transactions with its clock), so tests read times from events and views
and move time with :meth:`World.travel_to`, never assume absolute timestamps.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import pytest
from eth_account import Account

from fedledger.config import LedgerConfig, TaskConfig
from fedledger.errors import LedgerError, TransactionReverted
from fedledger.ledger.chain import EmbeddedChain
from fedledger.ledger.contract_ledger import ContractLedger, deploy_task
from fedledger.ledger.memory_ledger import MemoryLedger, MemoryTask
from fedledger.ledger.records import (
    Attested,
    Committed,
    Distributed,
    Equivocated,
    Joined,
    Ledger,
    LedgerEvent,
    Left,
    Revealed,
    Rewarded,
    RoundClock,
    RoundStarted,
    Selected,
    Skipped,
    Slashed,
    TaskRules,
    TxResult,
)
from fedledger.ledger.rules import (
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
    rules_for,
    sort_result,
)

ETHER = 10**18
WINDOW = 100  # seconds: commit, reveal and attest windows alike
COOLDOWN = 50
REWARD = 1000 * ETHER
ACCOUNTS = 10  # the owner and nine others
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


@dataclass
class World:
    backend: str
    task: TaskConfig
    owner: Ledger
    accounts: list[Ledger]  # never the owner; none joined yet
    token: str
    treasury: str
    _travel: Callable[[int], None]
    block_time: Callable[[int], int] | None = None  # the embedded chain's block timestamps

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


def task_config(nodes: int = 4, **ledger: Any) -> TaskConfig:
    settings: dict[str, Any] = {
        "quorum": 0.67,
        "min_stake": ETHER,
        "commit_window": WINDOW,
        "reveal_window": WINDOW,
        "attest_window": WINDOW,
        "reward_per_round": REWARD / ETHER,
        "cooldown": COOLDOWN,
        "max_participants": 8,
        **ledger,
    }
    return TaskConfig(name="ledger-suite", nodes=nodes, ledger=LedgerConfig(**settings))


def memory_world(task: TaskConfig) -> World:
    # The embedded chain's accounts (keys 1, 2, ...): same addresses on both backends.
    addresses = [Account.from_key(i.to_bytes(32, "big")).address for i in range(1, ACCOUNTS + 1)]
    owner, token = addresses[0], "0x" + "70" * 20
    mt = MemoryTask(rules_for(task, token=token, treasury=owner), owner=owner,
                    clock=FakeClock(1_700_000_000.0))  # fmt: skip
    ledgers: list[Ledger] = [MemoryLedger(mt, a) for a in addresses]
    return World("memory", task, ledgers[0], ledgers[1:], mt.rules.token, owner, mt.travel)


def embedded_world(task: TaskConfig) -> World:
    chain = EmbeddedChain(accounts=ACCOUNTS)
    accounts = chain.accounts()
    address, token = deploy_task(chain, task, owner=accounts[0])
    ledgers: list[Ledger] = [ContractLedger(chain, address, a) for a in accounts]
    return World("embedded", task, ledgers[0], ledgers[1:], token, accounts[0].address,
                 chain.time_travel, chain.block_timestamp)  # fmt: skip


@pytest.fixture(params=BACKENDS)
def make_world(request: pytest.FixtureRequest) -> Callable[..., World]:
    """``make_world(nodes=4, **ledger_config_overrides)``: a fresh world on this backend."""
    build = memory_world if request.param == "memory" else embedded_world

    def make(nodes: int = 4, **ledger: Any) -> World:
        return build(task_config(nodes, **ledger))

    return make


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def endpoint_of(ledger: Ledger) -> str:
    return f"grpc://{ledger.account.lower()[2:10]}.example:7000"


@dataclass(frozen=True)
class Update:
    digest: bytes
    salt: bytes
    cid: str
    num_examples: int


def update_of(ledger: Ledger, rnd: int) -> Update:
    seed = f"{ledger.account}/{rnd}".encode()
    digest = hashlib.sha256(b"update/" + seed).digest()
    return Update(digest=digest, salt=hashlib.sha256(b"salt/" + seed).digest(),
                  cid="bafk" + digest.hex()[:40], num_examples=10 + digest[0])  # fmt: skip


def commit(ledger: Ledger, rnd: int) -> TxResult:
    u = update_of(ledger, rnd)
    return ledger.commit(rnd, commitment(u.digest, ledger.account, rnd, u.salt))


def reveal(ledger: Ledger, rnd: int) -> TxResult:
    u = update_of(ledger, rnd)
    return ledger.reveal(rnd, u.digest, u.cid, u.num_examples, u.salt)


def to_attest(members: Sequence[Ledger], rnd: int) -> None:
    """Every member commits then reveals: both phases close early, attest is open."""
    for m in members:
        commit(m, rnd)
    for m in members:
        reveal(m, rnd)
    assert members[0].phase(rnd) == PHASE_ATTEST


def finalize(members: Sequence[Ledger], rnd: int, result: bytes, model: bytes = MODEL) -> None:
    """Members attest (model, result) in order until the round finalizes."""
    for m in members:
        m.attest(rnd, model, result)
        if m.current_round() > rnd:
            return
    raise AssertionError(f"round {rnd} did not finalize")


def reverts(reason: str, call: Callable[..., Any], *args: Any) -> None:
    with pytest.raises(TransactionReverted) as info:
        call(*args)
    assert info.value.reason == reason


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
    return found


# ------------------------------------------------------------------------------------------------
# Rules and membership
# ------------------------------------------------------------------------------------------------


def test_rules_round_trip(world: World) -> None:
    expected = rules_for(world.task, token=world.token, treasury=world.treasury)
    for ledger in (world.owner, *world.accounts[:2]):
        assert ledger.rules() == expected
    rules = world.rules
    assert rules.rule == "fedavg"
    assert rules.quorum_bps == 6700
    assert rules.min_stake == ETHER
    assert (rules.commit_window, rules.reveal_window, rules.attest_window) == (WINDOW,) * 3
    assert rules.reward_per_round == REWARD
    assert rules.cooldown == COOLDOWN
    assert rules.access_policy == 0
    assert not rules.allowlist_only
    assert world.owner.current_round() == 0
    assert world.owner.members() == []
    assert world.owner.phase(1) == PHASE_NOT_STARTED
    assert world.owner.phase(0) == PHASE_NOT_STARTED
    assert world.owner.model_digest(1) == b"\x00" * 32
    assert world.owner.events(0) == []


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
    events = world.owner.events(0)
    assert [strip(e) for e in events] == [
        strip(
            Joined(
                block=0,
                time=0,
                tx="",
                index=0,
                member=m.account,
                stake=stakes[m.account],
                endpoint=endpoint_of(m),
                first_round=1,
            )
        )
        for m in (c, a, b)
    ]
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
    before = a.events(0)
    reverts("stake below minimum", a.join, endpoint_of(a), ETHER - 1)
    a.join(endpoint_of(a), ETHER)
    reverts("already a member", a.join, endpoint_of(a), ETHER)
    reverts("stake below minimum", b.join, endpoint_of(b), 0)
    a.leave()
    reverts("withdraw first", a.join, endpoint_of(a), ETHER)
    assert kinds(a.events(0)[len(before) :]) == ["Joined", "Left"]
    assert a.members() == []


def test_task_is_full(make_world: Callable[..., World]) -> None:
    world = make_world(nodes=2, max_participants=2)
    assert world.rules.max_participants == 2
    world.join(2)
    late = world.accounts[2]
    reverts("task is full", late.join, endpoint_of(late), ETHER)
    # Leaving frees a seat.
    world.accounts[0].leave()
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


def test_start(world: World) -> None:
    members = world.join(4, [ETHER, 2 * ETHER, ETHER, 3 * ETHER])
    reverts("ownable: caller is not the owner", members[0].start)
    reverts("ownable: caller is not the owner", world.accounts[5].start)
    assert world.owner.current_round() == 0
    result = world.owner.start()
    (started,) = tx_events(world.owner, result)
    assert isinstance(started, RoundStarted)
    assert strip(started)[1] == {
        "round": 1,
        "start": started.time,
        "active_stake": 7 * ETHER,
        "members": 4,
    }
    assert world.owner.current_round() == 1
    assert world.owner.phase(1) == PHASE_COMMIT
    assert world.owner.phase(2) == PHASE_NOT_STARTED
    assert world.owner.round_clock(1) == RoundClock.of(start=started.start, rules=world.rules)
    reverts("already started", world.owner.start)
    reverts("ownable: caller is not the owner", members[1].start)


# ------------------------------------------------------------------------------------------------
# Rounds
# ------------------------------------------------------------------------------------------------


def test_full_round_with_early_closes(world: World) -> None:
    members = world.join(4)
    first = world.owner.head()
    world.owner.start()
    (started,) = world.owner.events(first)
    assert isinstance(started, RoundStarted)
    rnd, rules = 1, world.rules
    committed = []
    for i, m in enumerate(members):
        assert m.phase(rnd) == PHASE_COMMIT
        committed += tx_events(m, commit(m, rnd))
        # Not before the last commit: the commit phase closes early on it.
        assert m.round_clock(rnd).reveal_opens == (
            committed[-1].time if i == 3 else started.start + rules.commit_window
        )
    assert world.owner.phase(rnd) == PHASE_REVEAL  # no time travel
    revealed = []
    for m in members:
        revealed += tx_events(m, reveal(m, rnd))
    assert world.owner.phase(rnd) == PHASE_ATTEST
    clock = world.owner.round_clock(rnd)
    assert clock == RoundClock(start=started.start, reveal_opens=committed[-1].time,
                               attest_opens=revealed[-1].time,
                               attest_closes=revealed[-1].time + rules.attest_window)  # fmt: skip
    result = result_digest(*sort_result([m.account for m in members], [1, 1, 1, 1]))
    # 4 ether staked, quorum ceil(0.67 * 4) = 2.68 ether: the third attestation finalizes.
    for m in members[:2]:
        assert kinds(tx_events(m, m.attest(rnd, MODEL, result))) == ["Attested"]
        assert m.phase(rnd) == PHASE_ATTEST
        assert m.model_digest(rnd) == b"\x00" * 32
    last = members[2].attest(rnd, MODEL, result)
    closing = tx_events(members[2], last)
    assert kinds(closing) == ["Attested", "Finalized", "RoundStarted"]
    assert [e.index for e in closing] == sorted({e.index for e in closing})
    assert strip(closing[1])[1] == {"round": 1, "model_digest": MODEL, "result_digest": result}
    assert strip(closing[2])[1] == {"round": 2, "start": closing[2].time,
                                    "active_stake": 4 * ETHER, "members": 4}  # fmt: skip
    assert world.owner.current_round() == 2
    assert world.owner.phase(1) == PHASE_FINALIZED
    assert world.owner.phase(2) == PHASE_COMMIT
    assert world.owner.model_digest(1) == MODEL
    assert world.owner.model_digest(2) == b"\x00" * 32
    assert world.owner.round_clock(2) == RoundClock.of(start=closing[2].time, rules=rules)
    # The whole round, in order.
    events = world.owner.events(first)
    assert kinds(events) == (["RoundStarted"] + ["Committed"] * 4 + ["Revealed"] * 4
                             + ["Attested"] * 3 + ["Finalized", "RoundStarted"])  # fmt: skip
    for e, m in zip(events[1:5], members, strict=True):
        u = update_of(m, rnd)
        assert strip(e) == strip(
            Committed(
                block=0,
                time=0,
                tx="",
                index=0,
                round=1,
                member=m.account,
                commitment=commitment(u.digest, m.account, 1, u.salt),
            )
        )
    for e, m in zip(events[5:9], members, strict=True):
        u = update_of(m, rnd)
        assert strip(e) == strip(Revealed(block=0, time=0, tx="", index=0, round=1,
                                          member=m.account, update_digest=u.digest, cid=u.cid,
                                          num_examples=u.num_examples))  # fmt: skip
    for e, m in zip(events[9:12], members[:3], strict=True):
        assert strip(e) == strip(Attested(block=0, time=0, tx="", index=0, round=1,
                                          member=m.account, model_digest=MODEL,
                                          result_digest=result, stake=ETHER))  # fmt: skip
    # A late attestation to a finalized round is refused.
    reverts("not the current round", members[3].attest, rnd, MODEL, result)


def test_no_early_close_when_one_member_does_not_commit(world: World) -> None:
    members = world.join(4)
    world.owner.start()
    start = world.owner.round_clock(1).start
    rules = world.rules
    for m in members[:3]:
        commit(m, 1)
    clock = world.owner.round_clock(1)
    assert clock == RoundClock.of(start=start, rules=rules)
    assert clock.reveal_opens == start + WINDOW
    assert clock.attest_opens == start + 2 * WINDOW
    assert clock.attest_closes == start + 3 * WINDOW
    assert world.owner.phase(1) == PHASE_COMMIT
    world.travel_to(clock.reveal_opens - 1)
    assert world.owner.phase(1) == PHASE_COMMIT
    world.travel(1)
    assert world.owner.phase(1) == PHASE_REVEAL
    # The reveal phase closes early once every committer revealed.
    for m in members[:3]:
        assert m.phase(1) == PHASE_REVEAL
        last = tx_events(m, reveal(m, 1))[-1]
    assert world.owner.phase(1) == PHASE_ATTEST
    assert world.owner.round_clock(1) == RoundClock.of(start=start, rules=rules,
                                                       attest_at=last.time)  # fmt: skip
    assert last.time < start + 2 * WINDOW


def test_commit_reverts(world: World) -> None:
    members = world.join(3)
    outsider = world.accounts[5]
    reverts("not the current round", commit, members[0], 1)  # not started
    world.owner.start()
    late = world.accounts[4]
    late.join(endpoint_of(late), ETHER)
    reverts("not a member", commit, outsider, 1)
    reverts("joined during this round", commit, late, 1)
    reverts("not the current round", commit, members[0], 2)
    reverts("not the current round", commit, members[0], 0)
    reverts("empty commitment", members[0].commit, 1, b"\x00" * 32)
    commit(members[0], 1)
    reverts("already committed", commit, members[0], 1)
    reverts("already committed", members[0].commit, 1, b"\x01" * 32)
    world.travel_to(world.owner.round_clock(1).reveal_opens)
    assert world.owner.phase(1) == PHASE_REVEAL
    committed = [e for e in world.owner.events(0) if isinstance(e, Committed)]
    assert [e.member for e in committed] == [members[0].account]


def test_reveal_reverts(world: World) -> None:
    a, b, c, d = world.join(4)
    world.owner.start()
    ua = update_of(a, 1)
    commit(a, 1)
    reverts("not in reveal window", reveal, a, 1)  # early
    # b copies a's commitment: it may submit it, but never open it.
    b.commit(1, commitment(ua.digest, a.account, 1, ua.salt))
    commit(c, 1)  # d does not commit: the commit phase runs its full window
    world.travel_to(world.owner.round_clock(1).reveal_opens)
    reverts("reveal does not match commitment", b.reveal, 1, ua.digest, ua.cid,
            ua.num_examples, ua.salt)  # fmt: skip
    reverts("reveal does not match commitment", a.reveal, 1, ua.digest, ua.cid,
            ua.num_examples, b"\x05" * 32)  # fmt: skip
    reverts("reveal does not match commitment", a.reveal, 1, OTHER_MODEL, ua.cid,
            ua.num_examples, ua.salt)  # fmt: skip
    reverts("no examples", a.reveal, 1, ua.digest, ua.cid, 0, ua.salt)
    reverts("no commitment", reveal, d, 1)
    reverts("not a member", reveal, world.accounts[6], 1)
    reverts("not the current round", reveal, a, 2)
    reveal(a, 1)  # the victim's reveal is unaffected
    reverts("already revealed", reveal, a, 1)
    assert world.owner.phase(1) == PHASE_REVEAL  # b and c have not revealed
    revealed = [e for e in world.owner.events(0) if isinstance(e, Revealed)]
    assert [(e.member, e.update_digest) for e in revealed] == [(a.account, ua.digest)]


def test_replayed_update_reverts(world: World) -> None:
    """An update digest is revealed once in the task's life, by anyone: replaying an earlier
    round's update (one's own or another's), or sharing one update in a round, gets nothing."""
    a, copier, c1, c2 = world.join(4)
    world.owner.start()
    to_attest([a, copier, c1, c2], 1)
    finalize([a, copier, c1, c2], 1, b"\x44" * 32)
    old = update_of(a, 1)  # revealed in round 1
    shared = update_of(c1, 2)  # c1's round-2 update, which c2 reveals too
    secrets = {a: old.digest, copier: old.digest, c1: shared.digest, c2: shared.digest}
    for m, digest in secrets.items():
        m.commit(2, commitment(digest, m.account, 2, update_of(m, 2).salt))
    assert world.owner.phase(2) == PHASE_REVEAL

    def open_(m: Ledger) -> TxResult:
        return m.reveal(2, secrets[m], old.cid, 10, update_of(m, 2).salt)

    # The opening is checked first: with a wrong salt it is a mismatch, whatever the digest.
    reverts("reveal does not match commitment", copier.reveal, 2, old.digest, old.cid, 10,
            b"\x09" * 32)  # fmt: skip
    reverts("update already revealed", open_, a)
    reverts("update already revealed", open_, copier)
    (first,) = tx_events(c1, open_(c1))
    assert strip(first) == ("Revealed", {"round": 2, "member": c1.account,
                                         "update_digest": shared.digest, "cid": old.cid,
                                         "num_examples": 10})  # fmt: skip
    reverts("update already revealed", open_, c2)
    assert [m.reputation(m.account) for m in (a, copier, c1, c2)] == [(0, 1), (0, 1), (0, 2),
                                                                       (0, 1)]  # fmt: skip
    # Three committers did not reveal: the reveal phase runs its full window.
    assert world.owner.phase(2) == PHASE_REVEAL
    world.travel_to(world.owner.round_clock(2).attest_opens)
    assert world.owner.phase(2) == PHASE_ATTEST
    # Only c1's update can be in round 2's result.
    stranger = result_digest([copier.account], [1])
    finalize([a, copier, c1, c2], 2, stranger)
    reverts("contributor did not reveal", a.distribute, 2, [copier.account], [1])


def test_attest_reverts(world: World) -> None:
    members = world.join(4)
    world.owner.start()
    late = world.accounts[4]
    late.join(endpoint_of(late), ETHER)
    result = b"\x33" * 32
    for m in members:
        commit(m, 1)
    reverts("not in attest window", members[0].attest, 1, MODEL, result)
    reveal(members[0], 1)
    reverts("not in attest window", members[0].attest, 1, MODEL, result)
    for m in members[1:]:
        reveal(m, 1)
    reverts("not a member", world.accounts[6].attest, 1, MODEL, result)
    reverts("joined during this round", late.attest, 1, MODEL, result)
    reverts("not the current round", members[0].attest, 2, MODEL, result)
    members[0].attest(1, MODEL, result)
    reverts("already attested", members[0].attest, 1, MODEL, result)
    assert members[0].status_of(members[0].account) == STATUS_ACTIVE


def test_window_reverts_once_gas_is_cached(world: World) -> None:
    """Calls past a window after the same function succeeded (the chain then sends with its
    cached gas limit, without estimating: the revert is mined, and its reason is recovered by
    replaying it in its own block, at that block's time)."""
    members = world.join(4)
    world.owner.start()
    for m in members[:3]:
        commit(m, 1)
    world.travel_to(world.owner.round_clock(1).reveal_opens)
    reverts("not in commit window", commit, members[3], 1)
    for m in members[:2]:
        reveal(m, 1)
    world.travel_to(world.owner.round_clock(1).attest_opens)
    reverts("not in reveal window", reveal, members[2], 1)
    members[0].attest(1, MODEL, b"\x66" * 32)
    world.travel_to(world.owner.round_clock(1).attest_closes)
    reverts("not in attest window", members[1].attest, 1, MODEL, b"\x66" * 32)


def test_equivocation_slashes(world: World) -> None:
    members = world.join(4)
    cheat = members[1]
    world.owner.start()
    to_attest(members, 1)
    result = b"\x44" * 32
    cheat.attest(1, MODEL, result)
    events = tx_events(cheat, cheat.attest(1, OTHER_MODEL, result))
    assert [strip(e) for e in events] == [
        ("Equivocated", {"round": 1, "member": cheat.account, "model_digest": OTHER_MODEL,
                         "result_digest": result}),
        ("Slashed", {"member": cheat.account, "amount": ETHER, "treasury": world.treasury}),
    ]  # fmt: skip
    assert isinstance(events[0], Equivocated)
    assert isinstance(events[1], Slashed)
    assert world.owner.status_of(cheat.account) == STATUS_SLASHED
    assert cheat.account not in [m.address for m in world.owner.members()]
    assert len(world.owner.members()) == 3
    reverts("not a member", cheat.attest, 1, MODEL, result)
    reverts("slashed", cheat.join, endpoint_of(cheat), ETHER)
    # The cheat's first attestation no longer counts: the quorum (2.68 of the 4 ether
    # snapshotted) needs the three honest members.
    honest = [m for m in members if m is not cheat]
    honest[0].attest(1, MODEL, result)
    honest[1].attest(1, MODEL, result)
    assert world.owner.current_round() == 1
    closing = tx_events(honest[2], honest[2].attest(1, MODEL, result))
    assert kinds(closing) == ["Attested", "Finalized", "RoundStarted"]
    assert strip(closing[2])[1]["active_stake"] == 3 * ETHER
    assert strip(closing[2])[1]["members"] == 3


def test_skip(world: World) -> None:
    members = world.join(3)
    world.owner.start()
    outsider = world.accounts[6]
    reverts("round not expired", outsider.skip, 1)
    commit(members[0], 1)
    clock = world.owner.round_clock(1)
    world.travel_to(clock.attest_closes - 1)
    assert world.owner.phase(1) == PHASE_ATTEST
    reverts("round not expired", outsider.skip, 1)
    reverts("not the current round", outsider.skip, 2)
    reverts("not the current round", outsider.skip, 0)
    world.travel(1)
    assert world.owner.phase(1) == PHASE_FAILED
    events = tx_events(outsider, outsider.skip(1))
    assert kinds(events) == ["Skipped", "RoundStarted"]
    assert isinstance(events[0], Skipped)
    assert events[0].round == 1
    assert strip(events[1])[1] == {"round": 2, "start": events[1].time,
                                   "active_stake": 3 * ETHER, "members": 3}  # fmt: skip
    assert events[1].time >= clock.attest_closes
    assert world.owner.current_round() == 2
    assert world.owner.phase(1) == PHASE_FAILED
    assert world.owner.phase(2) == PHASE_COMMIT
    assert world.owner.model_digest(1) == b"\x00" * 32
    reverts("not the current round", outsider.skip, 1)
    reverts("round not expired", outsider.skip, 2)
    reverts("round not finalized", outsider.distribute, 1, [], [])


def test_embedded_chain_default_genesis() -> None:
    """A default EmbeddedChain (logical time from 2025-01-01, behind the wall clock)."""
    chain = EmbeddedChain(accounts=3)
    accounts = chain.accounts()
    address, _ = deploy_task(chain, task_config(nodes=2), owner=accounts[0])
    owner, member = (ContractLedger(chain, address, a) for a in accounts[:2])
    member.join(endpoint_of(member), ETHER)
    owner.start()
    assert member.phase(1) == PHASE_COMMIT
    commit(member, 1)  # gas is estimated at the next block's timestamp, not the wall clock's
    assert member.phase(1) == PHASE_REVEAL


# ------------------------------------------------------------------------------------------------
# Rewards
# ------------------------------------------------------------------------------------------------


def test_distribute(world: World) -> None:
    members = world.join(4)
    outsider = world.accounts[6]
    world.owner.start()
    contributors, scores = sort_result([m.account for m in members], [3, 1, 0, 2])
    result = result_digest(contributors, scores)
    to_attest(members, 1)
    reverts("round not finalized", outsider.distribute, 1, contributors, scores)
    reverts("round not finalized", outsider.distribute, 0, contributors, scores)
    finalize(members, 1, result)
    reverts("round not finalized", outsider.distribute, 2, contributors, scores)
    reverts("length mismatch", outsider.distribute, 1, contributors, scores[:-1])
    reverts("result digest mismatch", outsider.distribute, 1, contributors, [1, 1, 1, 1])
    reverts("result digest mismatch", outsider.distribute, 1, contributors[::-1], scores[::-1])
    assert outsider.token_supply() == 0
    events = tx_events(outsider, outsider.distribute(1, contributors, scores))
    total = sum(scores)
    amounts = {c: REWARD * s // total for c, s in zip(contributors, scores, strict=True)}
    paid = [c for c in contributors if amounts[c]]
    assert len(paid) == 3  # the zero-score contributor gets nothing
    assert [strip(e) for e in events] == [
        event
        for c, s in zip(contributors, scores, strict=True)
        if s
        for event in (
            ("Selected", {"round": 1, "contributor": c, "score": s}),
            ("Rewarded", {"round": 1, "contributor": c, "amount": amounts[c]}),
        )
    ] + [("Distributed", {"round": 1, "total": sum(amounts.values())})]
    assert isinstance(events[-1], Distributed)
    assert all(isinstance(e, Selected | Rewarded) for e in events[:-1])
    assert [outsider.reputation(c) for c in contributors] == [(int(s > 0), 1) for s in scores]
    assert sum(amounts.values()) == REWARD - 1  # rounding down
    for c in contributors:
        assert outsider.token_balance(c) == amounts[c]
    assert outsider.token_balance(outsider.account) == 0
    assert outsider.token_supply() == sum(amounts.values())
    reverts("already distributed", outsider.distribute, 1, contributors, scores)
    reverts("already distributed", members[0].distribute, 1, contributors, scores)


def test_distribute_checks_contributors(world: World) -> None:
    members = world.join(3)
    outsider = world.accounts[6]
    world.owner.start()
    # Round 1 attests a result whose contributors are not in increasing order.
    contributors, scores = sort_result([m.account for m in members], [1, 2, 3])
    backwards, backwards_scores = contributors[::-1], scores[::-1]
    to_attest(members, 1)
    finalize(members, 1, result_digest(backwards, backwards_scores))
    reverts("contributors not strictly increasing", outsider.distribute, 1, backwards,
            backwards_scores)  # fmt: skip
    # Round 2 attests a result naming an account that did not reveal.
    stranger, _ = sort_result([*contributors, outsider.account], [1, 2, 3, 4])
    to_attest(members, 2)
    finalize(members, 2, result_digest(stranger, [1, 1, 1, 1]))
    reverts("contributor did not reveal", outsider.distribute, 2, stranger, [1, 1, 1, 1])
    assert outsider.token_supply() == 0
    # An all-zero result distributes nothing.
    to_attest(members, 3)
    finalize(members, 3, result_digest(contributors, [0, 0, 0]))
    events = tx_events(outsider, outsider.distribute(3, contributors, [0, 0, 0]))
    assert [strip(e) for e in events] == [("Distributed", {"round": 3, "total": 0})]


def test_slashed_contributor_gets_nothing(world: World) -> None:
    members = world.join(4)
    world.owner.start()
    contributors, scores = sort_result([m.account for m in members], [1, 1, 1, 1])
    result = result_digest(contributors, scores)
    to_attest(members, 1)
    finalize(members, 1, result)
    # In round 2, a round-1 contributor equivocates before round 1 is distributed.
    cheat = members[0]
    to_attest(members, 2)
    cheat.attest(2, MODEL, b"\x01" * 32)
    cheat.attest(2, MODEL, b"\x02" * 32)
    assert cheat.status_of(cheat.account) == STATUS_SLASHED
    events = tx_events(cheat, cheat.distribute(1, contributors, scores))
    share = REWARD // 4
    assert [strip(e) for e in events] == [
        event
        for c in contributors
        for event in [("Selected", {"round": 1, "contributor": c, "score": 1})]
        + [("Rewarded", {"round": 1, "contributor": c, "amount": share})] * (c != cheat.account)
    ] + [("Distributed", {"round": 1, "total": 3 * share})]
    assert cheat.reputation(cheat.account) == (1, 2)  # selected in round 1, paid nothing
    assert cheat.token_balance(cheat.account) == 0
    assert cheat.token_supply() == 3 * share


def reputation_from_events(events: Sequence[LedgerEvent]) -> dict[str, tuple[int, int]]:
    """``(selections, reveals)`` per account, from the events alone."""
    counts: dict[str, tuple[int, int]] = {}
    for e in events:
        if isinstance(e, Revealed):
            selections, reveals = counts.get(e.member, (0, 0))
            counts[e.member] = (selections, reveals + 1)
        elif isinstance(e, Selected):
            selections, reveals = counts.get(e.contributor, (0, 0))
            counts[e.contributor] = (selections + 1, reveals)
    return counts


def test_reputation(make_world: Callable[..., World]) -> None:
    """``reputation(a) == (selections, reveals)``: reveals count every reveal, selections every
    nonzero score in a distributed round (paid or not); both follow from the events alone, at
    any block."""
    world = make_world(reward_per_round=0)  # selections do not depend on any payment
    members = world.join(4)
    cheat = members[3]
    outsider = world.accounts[6]
    world.owner.start()
    # Round 1: all reveal, the rule scores the second member zero; distributed.
    r1 = sort_result([m.account for m in members], [2, 0, 1, 1])
    to_attest(members, 1)
    finalize(members, 1, result_digest(*r1))
    events = tx_events(outsider, outsider.distribute(1, *r1))
    assert [strip(e) for e in events] == [
        ("Selected", {"round": 1, "contributor": c, "score": s})
        for c, s in zip(*r1, strict=True)
        if s
    ] + [("Distributed", {"round": 1, "total": 0})]  # nothing to pay: reward_per_round is 0
    assert all(isinstance(e, Selected) for e in events[:-1])
    after_round_1 = world.owner.head()
    # Round 2: the cheat equivocates after revealing; the round is distributed later.
    r2 = sort_result([m.account for m in members], [1, 1, 1, 1])
    to_attest(members, 2)
    cheat.attest(2, MODEL, b"\x01" * 32)
    cheat.attest(2, MODEL, b"\x02" * 32)
    finalize(members[:3], 2, result_digest(*r2))
    # Round 3: one member does not reveal; finalized, never distributed.
    honest = members[:3]
    for m in honest:
        commit(m, 3)
    for m in honest[:2]:
        reveal(m, 3)
    world.travel_to(world.owner.round_clock(3).attest_opens)
    finalize(honest, 3, result_digest(*sort_result([m.account for m in honest[:2]], [1, 1])))
    outsider.distribute(2, *r2)  # the slashed cheat is selected all the same
    expected = {members[0].account: (2, 3), members[1].account: (1, 3),
                members[2].account: (2, 2), cheat.account: (2, 2)}  # fmt: skip
    assert {m.account: outsider.reputation(m.account) for m in members} == expected
    assert outsider.reputation(outsider.account) == (0, 0)
    assert outsider.reputation(outsider.account.lower()) == (0, 0)
    assert members[0].reputation(members[0].account.lower()) == expected[members[0].account]
    everything = world.owner.events(0)
    assert reputation_from_events(everything) == expected
    # At an earlier block, the events up to it give the counters then.
    then = reputation_from_events(world.owner.events(0, after_round_1))
    assert then == {c: (int(s > 0), 1) for c, s in zip(*r1, strict=True)}
    # Leaving and joining again keeps an account's reputation.
    leaver = members[2]
    (left,) = tx_events(leaver, leaver.leave())
    assert isinstance(left, Left)
    world.travel_to(max(left.withdraw_after, world.owner.now()))
    leaver.withdraw()
    leaver.join(endpoint_of(leaver), ETHER)
    assert leaver.reputation(leaver.account) == expected[leaver.account]


@pytest.mark.parametrize("access", ["members", "token_holders", "public"])
def test_can_download(make_world: Callable[..., World], access: str) -> None:
    world = make_world(nodes=3, access=access)
    assert world.rules.access_policy == ("members", "token_holders", "public").index(access)
    members = world.join(3)
    outsider = world.accounts[6]
    world.owner.start()
    contributors, scores = sort_result([m.account for m in members], [1, 0, 1])
    to_attest(members, 1)
    finalize(members, 1, result_digest(contributors, scores))
    outsider.distribute(1, contributors, scores)
    holder = next(m for m in members if outsider.token_balance(m.account) > 0)
    empty = next(m for m in members if outsider.token_balance(m.account) == 0)
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
    reverts("ownable: caller is not the owner", outsider.grant_reader, reader.account)
    world.owner.grant_reader(reader.account)
    assert outsider.can_download(reader.account)
    assert not outsider.can_download(outsider.account)
    assert outsider.status_of(reader.account) == STATUS_NONE  # no membership
    reverts("ownable: caller is not the owner", reader.revoke_reader, reader.account)
    world.owner.revoke_reader(reader.account)
    assert not outsider.can_download(reader.account)


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
        send(commit, m, 1)
    world.travel(7)
    for m in members:
        send(reveal, m, 1)
    result = result_digest(*sort_result([m.account for m in members], [1, 1, 1]))
    for m in members:
        send(m.attest, 1, MODEL, result)
        if world.owner.current_round() == 2:
            break
    send(c.leave)
    world.travel(3)
    send(commit, a, 2)

    everything = world.owner.events(0)
    head = world.owner.head()
    assert everything == world.owner.events(0, head)
    assert everything
    assert world.owner.events(head) == []
    assert world.owner.events(5, 5) == []
    assert world.owner.events(head, head + 10) == []
    assert kinds(everything).count("RoundStarted") == 2
    # Every handle sees the same events.
    assert a.events(0) == everything
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
        # now() is a lower bound: ContractLedger resends once after running out of gas.
        assert mine
        assert all(e.block == r.block and e.time >= now for e in mine)
        assert world.backend != "memory" or all(e.time == now for e in mine)
        assert [e.index for e in mine] == sorted({e.index for e in mine})
    if world.block_time is not None:
        for e in everything:
            assert e.time == world.block_time(e.block)
    for e in everything:
        if isinstance(e, RoundStarted):
            assert e.start == e.time
        if isinstance(e, Left):
            assert e.withdraw_after == e.time + COOLDOWN


def test_leave_and_withdraw_with_cooldown(world: World) -> None:
    members = world.join(3, [ETHER, 2 * ETHER, 3 * ETHER])
    leaver = world.accounts[2]  # 3 ether
    world.owner.start()
    reverts("nothing to withdraw", leaver.withdraw)
    (left,) = tx_events(leaver, leaver.leave())
    assert isinstance(left, Left)
    assert strip(left)[1] == {"member": leaver.account, "withdraw_after": left.time + COOLDOWN}
    assert leaver.status_of(leaver.account) == STATUS_LEFT
    assert leaver.account not in [m.address for m in leaver.members()]
    reverts("not a member", leaver.leave)
    reverts("not a member", commit, leaver, 1)
    reverts("cooldown not over", leaver.withdraw)
    reverts("withdraw first", leaver.join, endpoint_of(leaver), ETHER)
    world.travel_to(left.withdraw_after - 1)
    reverts("cooldown not over", leaver.withdraw)
    world.travel_to(max(left.withdraw_after, world.owner.now()))
    assert tx_events(leaver, leaver.withdraw()) == []  # Withdrawn is not a ledger event
    assert leaver.status_of(leaver.account) == STATUS_NONE
    reverts("nothing to withdraw", leaver.withdraw)
    # The account may join again, counting from the next round.
    (joined,) = tx_events(leaver, leaver.join(endpoint_of(leaver), ETHER))
    assert strip(joined)[1]["first_round"] == 2
    assert len(world.owner.members()) == 3
    reverts("joined during this round", commit, leaver, 1)
    # Leaving does not lower the round's snapshot: round 1 started with 6 ether staked, so its
    # quorum is 4.02 ether, out of reach of the 3 ether of the two members still in it.
    stayers = [m for m in members if m is not leaver]
    for m in stayers:
        commit(m, 1)
    assert world.owner.phase(1) == PHASE_COMMIT  # 3 members were eligible: no early close
    world.travel_to(world.owner.round_clock(1).reveal_opens)
    for m in stayers:
        reveal(m, 1)
    assert world.owner.phase(1) == PHASE_ATTEST
    for m in stayers:
        assert kinds(tx_events(m, m.attest(1, MODEL, b"\x55" * 32))) == ["Attested"]
    assert world.owner.current_round() == 1
    assert world.owner.phase(1) == PHASE_ATTEST


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
        "commitment": lambda: world.accounts[0].commit(1, "not bytes"),  # type: ignore[arg-type]
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
    assert owner.decode_input(joined.tx) == ("join", {"endpoint": endpoint_of(member)})
    funded = owner.chain.transfer(member.account, 1, sender=owner.chain.accounts()[0])
    with pytest.raises(LedgerError) as caught:  # not a Task call: web3's Web3ValueError
        owner.decode_input(funded.tx_hash)
    assert caught.value.__cause__ is not None
