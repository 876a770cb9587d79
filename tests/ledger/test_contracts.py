"""The Task and RewardToken contracts on titanoboa's EVM: every function and every revert."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boa
import pytest

from fedledger.ledger.rules import (
    ACCESS_MEMBERS,
    ACCESS_PUBLIC,
    ACCESS_TOKEN_HOLDERS,
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
    sort_result,
)

ROOT = Path(__file__).resolve().parents[2]
ETHER = 10**18
WINDOW = 100  # seconds: commit, reveal and attest windows alike
COOLDOWN = 50
REWARD = 100 * ETHER
RULE_PARAMS = b"\x11" * 32
DOCUMENT = b'{"name":"contracts","seed":1}'  # any bytes: the contract only hashes them
CONFIG = hashlib.sha256(DOCUMENT).digest()
MODEL = b"\xaa" * 32
OTHER_MODEL = b"\xbb" * 32
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@pytest.fixture(scope="module")
def deployers() -> tuple[Any, Any]:
    return (
        boa.load_partial(str(ROOT / "contracts" / "RewardToken.vy")),
        boa.load_partial(str(ROOT / "contracts" / "Task.vy")),
    )


@pytest.fixture(autouse=True)
def fresh_chain() -> Iterator[None]:
    with boa.env.anchor():
        yield


@dataclass
class World:
    token: Any
    task: Any
    owner: str
    treasury: str
    accounts: list[str]


def task_args(token_address: str, treasury_address: str, **overrides: Any) -> list[Any]:
    rules: dict[str, Any] = {
        "token": token_address,
        "rule_id": 1,
        "rule_params_digest": RULE_PARAMS,
        "config_digest": CONFIG,
        "quorum_bps": 6000,
        "min_stake": ETHER,
        "commit_window": WINDOW,
        "reveal_window": WINDOW,
        "attest_window": WINDOW,
        "max_participants": 10,
        "allowlist_only": False,
        "reward_per_round": REWARD,
        "access_policy": ACCESS_MEMBERS,
        "cooldown": COOLDOWN,
        "treasury": treasury_address,
        "config_document": DOCUMENT,
    }
    unknown = set(overrides) - set(rules)
    assert not unknown, unknown
    rules.update(overrides)
    return list(rules.values())


@pytest.fixture
def make_world(deployers: tuple[Any, Any]) -> Any:
    token_deployer, task_deployer = deployers

    def make(**overrides: Any) -> World:
        owner = boa.env.eoa
        token = token_deployer.deploy("fedledger reward", "FLR", 18, "fedledger reward", "1")
        treasury = boa.env.generate_address("treasury")
        task = task_deployer.deploy(*task_args(token.address, treasury, **overrides))
        token.set_minter(task.address, True)
        accounts = [boa.env.generate_address(f"node{i}") for i in range(12)]
        for account in accounts:
            boa.env.set_balance(account, 1000 * ETHER)
        return World(token, task, owner, treasury, accounts)

    return make


@pytest.fixture
def world(make_world: Any) -> World:
    w: World = make_world()
    return w


def join(w: World, members: Sequence[str], stake: int = ETHER) -> None:
    for i, m in enumerate(members):
        w.task.join(f"127.0.0.1:{5000 + i}", sender=m, value=stake)


def to_phase(w: World, round_number: int, phase: int) -> None:
    """Move the clock to the start of `phase` (1 commit, 2 reveal, 3 attest, 5 expired), or
    leave it if the phase is open already (a phase that closed early)."""
    task = w.task
    opens = {
        PHASE_COMMIT: task.round_start,
        PHASE_REVEAL: task.reveal_opens,
        PHASE_ATTEST: task.attest_opens,
        PHASE_FAILED: task.attest_closes,
    }
    target = opens[phase](round_number)
    if boa.env.timestamp < target:
        boa.env.time_travel(seconds=target - boa.env.timestamp)
    assert task.phase(round_number) == phase


def digest(i: int) -> bytes:
    return bytes([i]) * 32


def salt(i: int) -> bytes:
    return bytes([0x50 + i]) * 32


def update(round_number: int, i: int) -> bytes:
    """The update digest of the i-th member in a round: never the same twice."""
    return hashlib.sha256(f"update/{round_number}/{i}".encode()).digest()


def commit_and_reveal(w: World, round_number: int, members: Sequence[str]) -> None:
    to_phase(w, round_number, PHASE_COMMIT)
    for i, m in enumerate(members):
        c = commitment(update(round_number, i), m, round_number, salt(i))
        w.task.commit(round_number, c, sender=m)
    to_phase(w, round_number, PHASE_REVEAL)
    for i, m in enumerate(members):
        w.task.reveal(round_number, update(round_number, i), CID, 100 + i, salt(i), sender=m)


def attest_all(
    w: World, round_number: int, members: Sequence[str], model: bytes, result: bytes
) -> None:
    to_phase(w, round_number, PHASE_ATTEST)
    for m in members:
        if w.task.phase(round_number) == PHASE_FINALIZED:
            break
        w.task.attest(round_number, model, result, sender=m)


def events(contract: Any, name: str) -> list[Any]:
    return [e for e in contract.get_logs() if type(e).__name__ == name]


def finalized_round(
    w: World, contributors: Sequence[str], scores: Sequence[int]
) -> tuple[list[str], list[int]]:
    """Three members run round 1 to finalization with the given result; returns it sorted."""
    members = w.accounts[:3]
    join(w, members)
    w.task.start()
    commit_and_reveal(w, 1, members)
    ordered, ordered_scores = sort_result(contributors, scores)
    attest_all(w, 1, members, MODEL, result_digest(ordered, ordered_scores))
    assert w.task.phase(1) == PHASE_FINALIZED
    return ordered, ordered_scores


# ---------------------------------------------------------------- the token


def test_token_metadata_and_owner(world: World) -> None:
    token = world.token
    assert token.name() == "fedledger reward"
    assert token.symbol() == "FLR"
    assert token.decimals() == 18
    assert token.owner() == world.owner
    assert token.totalSupply() == 0
    assert token.is_minter(world.task.address)
    assert token.is_minter(world.owner)  # snekmate: the owner is a minter too


def test_token_only_minters_mint(world: World) -> None:
    outsider = world.accounts[0]
    with boa.reverts("erc20: access is denied"):
        world.token.mint(outsider, 5, sender=outsider)
    world.token.mint(outsider, 5)
    assert world.token.balanceOf(outsider) == 5


def test_token_only_owner_grants_minting(world: World) -> None:
    outsider = world.accounts[0]
    with boa.reverts("ownable: caller is not the owner"):
        world.token.set_minter(outsider, True, sender=outsider)
    world.token.set_minter(outsider, True)
    world.token.mint(outsider, 7, sender=outsider)
    world.token.set_minter(outsider, False)
    with boa.reverts("erc20: access is denied"):
        world.token.mint(outsider, 7, sender=outsider)


def test_token_renounce_leaves_only_the_task_minting(world: World) -> None:
    world.token.renounce_ownership()
    assert not world.token.is_minter(world.owner)
    assert world.token.is_minter(world.task.address)
    with boa.reverts("erc20: access is denied"):
        world.token.mint(world.owner, 1)


# ---------------------------------------------------------------- constructor and rules


def test_rules_are_stored_and_readable(world: World) -> None:
    task = world.task
    assert task.token() == world.token.address
    assert task.rule_id() == 1
    assert task.rule_params_digest() == RULE_PARAMS
    assert task.config_digest() == CONFIG
    assert task.quorum_bps() == 6000
    assert task.min_stake() == ETHER
    assert task.commit_window() == WINDOW
    assert task.reveal_window() == WINDOW
    assert task.attest_window() == WINDOW
    assert task.max_participants() == 10
    assert task.allowlist_only() is False
    assert task.reward_per_round() == REWARD
    assert task.access_policy() == ACCESS_MEMBERS
    assert task.cooldown() == COOLDOWN
    assert task.treasury() == world.treasury
    assert task.owner() == world.owner
    assert task.current_round() == 0
    assert task.members() == []
    assert task.active_stake() == 0


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"quorum_bps": 5000}, "quorum not in (5000, 10000]"),
        ({"quorum_bps": 10001}, "quorum not in (5000, 10000]"),
        ({"min_stake": 0}, "min stake is zero"),
        ({"commit_window": 0}, "commit window is zero"),
        ({"reveal_window": 0}, "reveal window is zero"),
        ({"attest_window": 0}, "attest window is zero"),
        ({"max_participants": 0}, "max participants is zero"),
        ({"max_participants": 257}, "max participants above MAX"),
        ({"access_policy": 3}, "unknown access policy"),
        ({"token": "0x" + "00" * 20}, "token is zero"),
        ({"treasury": "0x" + "00" * 20}, "treasury is zero"),
        ({"config_digest": b"\x22" * 32}, "config digest is not the document's"),
        ({"config_document": DOCUMENT + b" "}, "config digest is not the document's"),
        (
            {"config_document": b"", "config_digest": hashlib.sha256(b"").digest()},
            "config document is empty",
        ),
    ],
)
def test_constructor_rejects_bad_rules(
    deployers: tuple[Any, Any], overrides: dict[str, Any], reason: str
) -> None:
    token = deployers[0].deploy("t", "T", 18, "t", "1")
    treasury = boa.env.generate_address()
    with boa.reverts(reason):
        deployers[1].deploy(*task_args(token.address, treasury, **overrides))


def test_the_deployment_emits_the_configuration_document(world: World) -> None:
    configured = [e for e in world.task.get_logs() if type(e).__name__ == "Configured"]
    assert len(configured) == 1
    assert configured[0].document == DOCUMENT
    assert configured[0].config_digest == CONFIG == hashlib.sha256(DOCUMENT).digest()


def test_constructor_takes_a_document_up_to_max_config(make_world: Any) -> None:
    document = b"x" * 8192
    w = make_world(config_document=document, config_digest=hashlib.sha256(document).digest())
    assert w.task.config_digest() == hashlib.sha256(document).digest()


def test_constructor_accepts_the_bounds(make_world: Any) -> None:
    w = make_world(quorum_bps=10000, max_participants=256, access_policy=ACCESS_PUBLIC, cooldown=0)
    assert w.task.quorum_bps() == 10000
    assert w.task.max_participants() == 256


def test_ownership_transfer_is_owner_only(world: World) -> None:
    outsider = world.accounts[0]
    with boa.reverts("ownable: caller is not the owner"):
        world.task.transfer_ownership(outsider, sender=outsider)
    world.task.transfer_ownership(outsider)
    assert world.task.owner() == outsider
    with boa.reverts("ownable: caller is not the owner"):
        world.task.start()


# ---------------------------------------------------------------- membership


def test_join_records_member(world: World) -> None:
    task, a = world.task, world.accounts[0]
    task.join("10.0.0.1:7000", sender=a, value=2 * ETHER)
    (log,) = events(task, "Joined")
    assert (log.member, log.stake, log.endpoint, log.first_round) == (
        a,
        2 * ETHER,
        "10.0.0.1:7000",
        1,
    )
    assert task.members() == [a]
    assert task.member_count() == 1
    assert task.is_member(a)
    assert task.status_of(a) == STATUS_ACTIVE
    assert task.stake_of(a) == 2 * ETHER
    assert task.endpoint_of(a) == "10.0.0.1:7000"
    assert task.active_stake() == 2 * ETHER
    assert task.total_staked() == 2 * ETHER
    assert boa.env.get_balance(task.address) == 2 * ETHER


def test_join_below_min_stake_reverts(world: World) -> None:
    with boa.reverts("stake below minimum"):
        world.task.join("x", sender=world.accounts[0], value=ETHER - 1)


def test_double_join_reverts(world: World) -> None:
    join(world, world.accounts[:1])
    with boa.reverts("already a member"):
        world.task.join("x", sender=world.accounts[0], value=ETHER)


def test_join_full_task_reverts(make_world: Any) -> None:
    w = make_world(max_participants=3)
    join(w, w.accounts[:3])
    with boa.reverts("task is full"):
        w.task.join("x", sender=w.accounts[3], value=ETHER)
    # Leaving frees a place.
    w.task.leave(sender=w.accounts[0])
    w.task.join("x", sender=w.accounts[3], value=ETHER)
    assert sorted(w.task.members()) == sorted(w.accounts[1:4])


def test_allowlist(make_world: Any) -> None:
    w = make_world(allowlist_only=True)
    a, b = w.accounts[:2]
    with boa.reverts("not allowlisted"):
        w.task.join("x", sender=a, value=ETHER)
    w.task.allow(a)
    assert [e.account for e in events(w.task, "Allowed")] == [a]
    assert w.task.allowed(a)
    w.task.join("x", sender=a, value=ETHER)
    w.task.allow(b)
    w.task.disallow(b)
    assert [e.account for e in events(w.task, "Disallowed")] == [b]
    assert not w.task.allowed(b)
    with boa.reverts("not allowlisted"):
        w.task.join("x", sender=b, value=ETHER)


def test_allow_and_disallow_are_owner_only(world: World) -> None:
    a = world.accounts[0]
    with boa.reverts("ownable: caller is not the owner"):
        world.task.allow(a, sender=a)
    with boa.reverts("ownable: caller is not the owner"):
        world.task.disallow(a, sender=a)


def test_allowlist_ignored_when_open(world: World) -> None:
    join(world, world.accounts[:1])  # nobody allowlisted
    assert world.task.is_member(world.accounts[0])


def test_leave_cooldown_withdraw(world: World) -> None:
    task = world.task
    a, b, c = world.accounts[:3]
    join(world, [a, b, c])
    task.leave(sender=b)
    (log,) = events(task, "Left")
    assert (log.member, log.withdraw_after) == (b, boa.env.timestamp + COOLDOWN)
    assert task.status_of(b) == STATUS_LEFT
    assert not task.is_member(b)
    assert sorted(task.members()) == sorted([a, c])
    assert task.active_stake() == 2 * ETHER
    assert task.stake_of(b) == ETHER  # still held
    with boa.reverts("cooldown not over"):
        task.withdraw(sender=b)
    boa.env.time_travel(seconds=COOLDOWN)
    before = boa.env.get_balance(b)
    task.withdraw(sender=b)
    (log,) = events(task, "Withdrawn")
    assert (log.member, log.amount) == (b, ETHER)
    assert boa.env.get_balance(b) == before + ETHER
    assert boa.env.get_balance(task.address) == 2 * ETHER
    assert task.stake_of(b) == 0
    assert task.status_of(b) == STATUS_NONE
    assert task.total_withdrawn() == ETHER
    with boa.reverts("nothing to withdraw"):
        task.withdraw(sender=b)
    # A withdrawn member may join again.
    task.join("again", sender=b, value=ETHER)
    assert task.is_member(b)


REENTRANT_MEMBER = """
# pragma version ~=0.4.3
interface ITask:
    def join(endpoint: String[256]): payable
    def leave(): nonpayable
    def withdraw(): nonpayable

task: address

@deploy
def __init__(task: address):
    self.task = task

@external
@payable
def enter():
    extcall ITask(self.task).join("evil", value=msg.value)

@external
def go(leave: bool):
    if leave:
        extcall ITask(self.task).leave()
    else:
        extcall ITask(self.task).withdraw()

@external
@payable
def __default__():
    extcall ITask(self.task).withdraw()  # re-enter while being paid
"""


def test_withdraw_cannot_be_reentered(world: World) -> None:
    attacker = boa.loads(REENTRANT_MEMBER, world.task.address)
    boa.env.set_balance(world.accounts[0], 10 * ETHER)
    attacker.enter(sender=world.accounts[0], value=ETHER)
    join(world, world.accounts[1:2])
    attacker.go(True)
    boa.env.time_travel(seconds=COOLDOWN)
    with boa.reverts():
        attacker.go(False)
    assert world.task.stake_of(attacker.address) == ETHER
    assert boa.env.get_balance(world.task.address) == 2 * ETHER
    assert boa.env.get_balance(attacker.address) == 0


def test_leave_and_withdraw_need_membership(world: World) -> None:
    a = world.accounts[0]
    with boa.reverts("not a member"):
        world.task.leave(sender=a)
    with boa.reverts("nothing to withdraw"):
        world.task.withdraw(sender=a)
    join(world, [a])
    with boa.reverts("nothing to withdraw"):
        world.task.withdraw(sender=a)  # active, not left
    world.task.leave(sender=a)
    with boa.reverts("not a member"):
        world.task.leave(sender=a)
    with boa.reverts("withdraw first"):
        world.task.join("x", sender=a, value=ETHER)


def test_members_list_stays_consistent(world: World) -> None:
    accounts = world.accounts[:6]
    join(world, accounts)
    for leaver in (accounts[0], accounts[5], accounts[2]):
        world.task.leave(sender=leaver)
    assert sorted(world.task.members()) == sorted([accounts[1], accounts[3], accounts[4]])
    assert world.task.member_count() == 3


# ---------------------------------------------------------------- rounds


def test_start_is_owner_only_and_once(world: World) -> None:
    join(world, world.accounts[:1])
    with boa.reverts("ownable: caller is not the owner"):
        world.task.start(sender=world.accounts[0])
    assert world.task.phase(1) == PHASE_NOT_STARTED
    world.task.start()
    (log,) = events(world.task, "RoundStarted")
    assert (log.round, log.start, log.active_stake, log.members) == (1, boa.env.timestamp, ETHER, 1)
    assert world.task.current_round() == 1
    assert world.task.round_start(1) == boa.env.timestamp
    assert world.task.round_stake(1) == ETHER
    with boa.reverts("already started"):
        world.task.start()


def test_phase_follows_the_clock(world: World) -> None:
    join(world, world.accounts[:1])
    world.task.start()
    task = world.task
    assert task.phase(0) == PHASE_NOT_STARTED
    assert task.phase(2) == PHASE_NOT_STARTED
    assert task.phase(1) == PHASE_COMMIT
    boa.env.time_travel(seconds=WINDOW - 1)
    assert task.phase(1) == PHASE_COMMIT
    boa.env.time_travel(seconds=1)
    assert task.phase(1) == PHASE_REVEAL
    boa.env.time_travel(seconds=WINDOW - 1)
    assert task.phase(1) == PHASE_REVEAL
    boa.env.time_travel(seconds=1)
    assert task.phase(1) == PHASE_ATTEST
    boa.env.time_travel(seconds=WINDOW - 1)
    assert task.phase(1) == PHASE_ATTEST
    boa.env.time_travel(seconds=1)
    assert task.phase(1) == PHASE_FAILED
    assert task.current_round() == 1
    start = task.round_start(1)
    assert task.reveal_opens(1) == start + WINDOW
    assert task.attest_opens(1) == start + 2 * WINDOW
    assert task.attest_closes(1) == start + 3 * WINDOW


def test_commit_closes_early_when_every_eligible_member_committed(world: World) -> None:
    task = world.task
    a, b, c = world.accounts[:3]
    join(world, [a, b, c])
    task.start()
    start = task.round_start(1)
    assert task.round_members(1) == 3
    boa.env.time_travel(seconds=5)
    task.commit(1, commitment(digest(1), a, 1, salt(1)), sender=a)
    task.commit(1, commitment(digest(2), b, 1, salt(2)), sender=b)
    assert task.commit_count(1) == 2
    assert task.phase(1) == PHASE_COMMIT
    assert task.reveal_opens(1) == start + WINDOW
    boa.env.time_travel(seconds=10)
    task.commit(1, commitment(digest(3), c, 1, salt(3)), sender=c)  # the last eligible member
    closed = boa.env.timestamp
    assert closed == start + 15
    assert task.commit_count(1) == 3
    assert task.phase(1) == PHASE_REVEAL  # no time travel
    assert task.reveal_opens(1) == closed
    assert task.attest_opens(1) == closed + WINDOW
    assert task.attest_closes(1) == closed + 2 * WINDOW
    with boa.reverts("not in commit window"):
        task.commit(1, commitment(digest(4), a, 1, salt(4)), sender=a)
    # A reveal in the closing commit's second is in the reveal phase already.
    task.reveal(1, digest(1), CID, 10, salt(1), sender=a)
    assert task.reveal_count(1) == 1
    assert task.phase(1) == PHASE_REVEAL
    # The reveal window still bounds the reveal phase, counted from the early close.
    boa.env.time_travel(seconds=WINDOW - 1)
    assert task.phase(1) == PHASE_REVEAL
    boa.env.time_travel(seconds=1)
    assert task.phase(1) == PHASE_ATTEST
    with boa.reverts("not in reveal window"):
        task.reveal(1, digest(2), CID, 10, salt(2), sender=b)


def test_reveal_closes_early_when_every_committer_revealed(world: World) -> None:
    task = world.task
    a, b, idle = world.accounts[:3]
    join(world, [a, b, idle])
    task.start()
    start = task.round_start(1)
    task.commit(1, commitment(digest(1), a, 1, salt(1)), sender=a)
    task.commit(1, commitment(digest(2), b, 1, salt(2)), sender=b)
    to_phase(world, 1, PHASE_REVEAL)  # idle never committed: the whole commit window
    assert task.reveal_opens(1) == start + WINDOW == boa.env.timestamp
    boa.env.time_travel(seconds=7)
    task.reveal(1, digest(1), CID, 10, salt(1), sender=a)
    assert task.phase(1) == PHASE_REVEAL
    assert task.attest_opens(1) == start + 2 * WINDOW
    with boa.reverts("no commitment"):
        task.reveal(1, digest(3), CID, 10, salt(3), sender=idle)
    task.reveal(1, digest(2), CID, 20, salt(2), sender=b)  # the last committer
    closed = boa.env.timestamp
    assert task.reveal_count(1) == task.commit_count(1) == 2
    assert task.phase(1) == PHASE_ATTEST
    assert task.reveal_opens(1) == start + WINDOW
    assert task.attest_opens(1) == closed == start + WINDOW + 7
    assert task.attest_closes(1) == closed + WINDOW
    with boa.reverts("not in reveal window"):
        task.reveal(1, digest(2), CID, 20, salt(2), sender=b)
    task.attest(1, MODEL, digest(9), sender=idle)  # attesting needs no update
    assert task.phase(1) == PHASE_ATTEST
    boa.env.time_travel(seconds=WINDOW - 1)
    assert task.phase(1) == PHASE_ATTEST
    boa.env.time_travel(seconds=1)
    assert task.phase(1) == PHASE_FAILED


def test_no_early_close_when_a_member_did_not_commit(world: World) -> None:
    task = world.task
    members = world.accounts[:3]
    join(world, members)
    task.start()
    start = task.round_start(1)
    for i, m in enumerate(members[:2]):
        task.commit(1, commitment(digest(i + 1), m, 1, salt(i)), sender=m)
    assert task.commit_count(1) == 2 < task.round_members(1)
    assert task.reveal_opens(1) == start + WINDOW
    boa.env.time_travel(seconds=WINDOW - 1)
    assert task.phase(1) == PHASE_COMMIT
    with boa.reverts("not in reveal window"):
        task.reveal(1, digest(1), CID, 10, salt(0), sender=members[0])
    boa.env.time_travel(seconds=1)
    assert task.phase(1) == PHASE_REVEAL
    with boa.reverts("not in commit window"):
        task.commit(1, commitment(digest(3), members[2], 1, salt(2)), sender=members[2])
    assert task.commit_count(1) == 2


def test_member_joining_mid_round_cannot_commit_it(world: World) -> None:
    task = world.task
    a, newcomer = world.accounts[:2]
    join(world, [a])
    task.start()
    task.join("new", sender=newcomer, value=ETHER)
    assert task.first_round_of(newcomer) == 2
    assert task.round_members(1) == 1
    with boa.reverts("joined during this round"):
        task.commit(1, commitment(digest(2), newcomer, 1, salt(2)), sender=newcomer)
    assert task.commit_count(1) == 0
    task.commit(1, commitment(digest(1), a, 1, salt(1)), sender=a)
    assert task.phase(1) == PHASE_REVEAL  # the newcomer is not waited for
    task.reveal(1, digest(1), CID, 10, salt(1), sender=a)
    assert task.phase(1) == PHASE_ATTEST
    task.attest(1, MODEL, digest(9), sender=a)
    (started,) = events(task, "RoundStarted")
    assert (started.round, started.members) == (2, 2)
    assert task.phase(1) == PHASE_FINALIZED
    assert task.round_members(2) == 2
    # Eligible in round 2, and waited for.
    task.commit(2, commitment(digest(2), newcomer, 2, salt(2)), sender=newcomer)
    assert task.phase(2) == PHASE_COMMIT
    task.commit(2, commitment(digest(1), a, 2, salt(1)), sender=a)
    assert task.phase(2) == PHASE_REVEAL


def test_leaving_member_keeps_the_windows(world: World) -> None:
    task = world.task
    a, b, c = world.accounts[:3]
    join(world, [a, b, c])
    task.start()
    start = task.round_start(1)
    task.leave(sender=b)  # before committing: never commits, but was counted
    assert task.round_members(1) == 3
    task.commit(1, commitment(digest(1), a, 1, salt(1)), sender=a)
    task.commit(1, commitment(digest(3), c, 1, salt(3)), sender=c)
    assert task.phase(1) == PHASE_COMMIT
    assert task.reveal_opens(1) == start + WINDOW
    task.leave(sender=c)  # after committing: it cannot reveal any more
    to_phase(world, 1, PHASE_REVEAL)
    task.reveal(1, digest(1), CID, 10, salt(1), sender=a)
    with boa.reverts("not a member"):
        task.reveal(1, digest(3), CID, 10, salt(3), sender=c)
    assert task.reveal_count(1) == 1 < task.commit_count(1)
    assert task.phase(1) == PHASE_REVEAL
    assert task.attest_opens(1) == start + 2 * WINDOW
    to_phase(world, 1, PHASE_ATTEST)


def test_rounds_with_early_closes_attest_finalize_and_skip(world: World) -> None:
    task = world.task
    members = world.accounts[:3]
    join(world, members)
    task.start()
    start = task.round_start(1)
    # Everyone acts at once: the round reaches its attest phase in the second it started.
    commit_and_reveal(world, 1, members)
    assert boa.env.timestamp == start
    assert task.phase(1) == PHASE_ATTEST
    assert task.reveal_opens(1) == task.attest_opens(1) == start
    assert task.attest_closes(1) == start + WINDOW
    contributors, scores = sort_result(members, [1, 1, 2])
    result = result_digest(contributors, scores)
    for m in members[:2]:
        task.attest(1, MODEL, result, sender=m)  # 2 of 3 ETH >= 1.8 ETH: finalizes
    assert task.phase(1) == PHASE_FINALIZED
    task.distribute(1, contributors, scores)
    assert world.token.totalSupply() == REWARD
    # Round 2 starts with fresh counters and windows.
    assert task.current_round() == 2
    assert task.phase(2) == PHASE_COMMIT
    assert task.round_members(2) == 3
    assert task.commit_count(2) == task.reveal_count(2) == 0
    assert task.reveal_opens(2) == boa.env.timestamp + WINDOW
    boa.env.time_travel(seconds=3)
    commit_and_reveal(world, 2, members)
    opened = boa.env.timestamp
    assert task.phase(2) == PHASE_ATTEST
    assert task.attest_opens(2) == opened
    # Nobody attests: the attest window still bounds the round.
    with boa.reverts("round not expired"):
        task.skip(2)
    boa.env.time_travel(seconds=WINDOW - 1)
    assert task.phase(2) == PHASE_ATTEST
    boa.env.time_travel(seconds=1)
    assert task.phase(2) == PHASE_FAILED
    task.skip(2)
    assert task.phase(2) == PHASE_FAILED
    assert task.phase(3) == PHASE_COMMIT


def test_commit(world: World) -> None:
    a = world.accounts[0]
    join(world, [a])
    world.task.start()
    c = commitment(digest(1), a, 1, salt(1))
    world.task.commit(1, c, sender=a)
    (log,) = events(world.task, "Committed")
    assert (log.round, log.member, log.commitment) == (1, a, c)
    assert world.task.commitment_of(1, a) == c


def test_commit_before_start_reverts(world: World) -> None:
    a = world.accounts[0]
    join(world, [a])
    with boa.reverts("not the current round"):
        world.task.commit(0, digest(1), sender=a)
    with boa.reverts("not the current round"):
        world.task.commit(1, digest(1), sender=a)


def test_commit_rejects(world: World) -> None:
    a, b, outsider = world.accounts[:3]
    join(world, [a, b])  # b does not commit: the commit phase stays open
    world.task.start()
    c = commitment(digest(1), a, 1, salt(1))
    with boa.reverts("not a member"):
        world.task.commit(1, commitment(digest(1), outsider, 1, salt(1)), sender=outsider)
    with boa.reverts("not the current round"):
        world.task.commit(2, c, sender=a)
    with boa.reverts("empty commitment"):
        world.task.commit(1, b"\x00" * 32, sender=a)
    world.task.commit(1, c, sender=a)
    with boa.reverts("already committed"):
        world.task.commit(1, c, sender=a)
    with boa.reverts("already committed"):
        world.task.commit(1, commitment(digest(2), a, 1, salt(1)), sender=a)


def test_commit_outside_window_reverts(world: World) -> None:
    a = world.accounts[0]
    join(world, [a])
    world.task.start()
    c = commitment(digest(1), a, 1, salt(1))
    to_phase(world, 1, PHASE_REVEAL)
    with boa.reverts("not in commit window"):
        world.task.commit(1, c, sender=a)
    to_phase(world, 1, PHASE_FAILED)
    with boa.reverts("not in commit window"):
        world.task.commit(1, c, sender=a)


def test_commit_after_leaving_reverts(world: World) -> None:
    a, b = world.accounts[:2]
    join(world, [a, b])
    world.task.start()
    world.task.leave(sender=a)
    with boa.reverts("not a member"):
        world.task.commit(1, commitment(digest(1), a, 1, salt(1)), sender=a)


def test_reveal(world: World) -> None:
    a, b = world.accounts[:2]
    join(world, [a, b])
    world.task.start()
    world.task.commit(1, commitment(digest(7), a, 1, salt(1)), sender=a)
    world.task.commit(1, commitment(digest(8), b, 1, salt(2)), sender=b)  # b never reveals
    to_phase(world, 1, PHASE_REVEAL)
    world.task.reveal(1, digest(7), CID, 123, salt(1), sender=a)
    (log,) = events(world.task, "Revealed")
    assert (log.round, log.member, log.update_digest, log.cid, log.num_examples) == (
        1,
        a,
        digest(7),
        CID,
        123,
    )
    assert world.task.update_digest_of(1, a) == digest(7)
    assert world.task.num_examples_of(1, a) == 123
    with boa.reverts("already revealed"):
        world.task.reveal(1, digest(7), CID, 123, salt(1), sender=a)


def test_reveal_mismatch_reverts(world: World) -> None:
    a = world.accounts[0]
    join(world, [a])
    world.task.start()
    world.task.commit(1, commitment(digest(7), a, 1, salt(1)), sender=a)
    to_phase(world, 1, PHASE_REVEAL)
    for wrong in (
        (digest(8), salt(1)),  # other update
        (digest(7), salt(2)),  # other salt
    ):
        with boa.reverts("reveal does not match commitment"):
            world.task.reveal(1, wrong[0], CID, 10, wrong[1], sender=a)
    with boa.reverts("no examples"):
        world.task.reveal(1, digest(7), CID, 0, salt(1), sender=a)


def test_reveal_without_commitment_reverts(world: World) -> None:
    a, b, outsider = world.accounts[:3]
    join(world, [a, b])
    world.task.start()
    world.task.commit(1, commitment(digest(7), a, 1, salt(1)), sender=a)
    to_phase(world, 1, PHASE_REVEAL)
    with boa.reverts("no commitment"):
        world.task.reveal(1, digest(7), CID, 10, salt(1), sender=b)
    with boa.reverts("not a member"):
        world.task.reveal(1, digest(7), CID, 10, salt(1), sender=outsider)


def test_reveal_early_and_late_revert(world: World) -> None:
    a, b = world.accounts[:2]
    join(world, [a, b])  # b does not commit: the commit phase stays open
    world.task.start()
    world.task.commit(1, commitment(digest(7), a, 1, salt(1)), sender=a)
    with boa.reverts("not in reveal window"):
        world.task.reveal(1, digest(7), CID, 10, salt(1), sender=a)
    to_phase(world, 1, PHASE_ATTEST)
    with boa.reverts("not in reveal window"):
        world.task.reveal(1, digest(7), CID, 10, salt(1), sender=a)


def test_copied_commitment_is_useless(world: World) -> None:
    victim, thief = world.accounts[:2]
    join(world, [victim, thief])
    world.task.start()
    c = commitment(digest(7), victim, 1, salt(1))
    world.task.commit(1, c, sender=victim)
    world.task.commit(1, c, sender=thief)  # accepted, but it binds the victim's address
    to_phase(world, 1, PHASE_REVEAL)
    with boa.reverts("reveal does not match commitment"):
        world.task.reveal(1, digest(7), CID, 10, salt(1), sender=thief)
    world.task.reveal(1, digest(7), CID, 10, salt(1), sender=victim)
    assert world.task.num_examples_of(1, thief) == 0
    assert world.task.num_examples_of(1, victim) == 10


def test_commitment_binds_the_round(world: World) -> None:
    a = world.accounts[0]
    join(world, [a])
    world.task.start()
    world.task.commit(1, commitment(digest(7), a, 2, salt(1)), sender=a)  # made for round 2
    to_phase(world, 1, PHASE_REVEAL)
    with boa.reverts("reveal does not match commitment"):
        world.task.reveal(1, digest(7), CID, 10, salt(1), sender=a)


def test_replayed_update_reverts(world: World) -> None:
    """An update digest is revealed once in the task's life: a copier replaying an earlier
    round's update (its own or another's) gets nothing, nor the second of two colluders
    sharing one update in a round."""
    task = world.task
    members = world.accounts[:4]
    a, copier, c1, c2 = members
    join(world, members)
    task.start()
    commit_and_reveal(world, 1, members)
    old = update(1, 0)  # a's round-1 update
    assert task.update_revealed(old)
    attest_all(world, 1, members, MODEL, digest(9))
    assert task.phase(1) == PHASE_FINALIZED
    shared = digest(42)
    secrets = {a: (old, salt(1)), copier: (old, salt(2)), c1: (shared, salt(3)),
               c2: (shared, salt(4))}  # fmt: skip
    for m, (d, s) in secrets.items():
        task.commit(2, commitment(d, m, 2, s), sender=m)
    assert task.phase(2) == PHASE_REVEAL
    assert not task.update_revealed(shared)
    # The opening is checked first: a wrong salt is a mismatch, whatever the digest.
    with boa.reverts("reveal does not match commitment"):
        task.reveal(2, old, CID, 10, salt(9), sender=copier)
    for m in (a, copier):  # a replays its own update, the copier a's
        with boa.reverts("update already revealed"):
            task.reveal(2, old, CID, 10, secrets[m][1], sender=m)
    task.reveal(2, shared, CID, 10, salt(3), sender=c1)  # the first of the colluders
    assert [e.member for e in events(task, "Revealed")] == [c1]
    assert task.update_revealed(shared)
    with boa.reverts("update already revealed"):
        task.reveal(2, shared, CID, 10, salt(4), sender=c2)
    assert task.reveal_count(2) == 1
    for m in (a, copier, c2):
        assert task.num_examples_of(2, m) == 0
        assert task.update_digest_of(2, m) == b"\x00" * 32
        assert task.reveals_of(m) == 1  # round 1's only
    assert task.reveals_of(c1) == 2
    # Three of four committers never revealed: the reveal window bounds the phase.
    assert task.phase(2) == PHASE_REVEAL
    to_phase(world, 2, PHASE_ATTEST)


# ---------------------------------------------------------------- attestation and quorum


def test_attest_early_and_late_revert(world: World) -> None:
    a = world.accounts[0]
    join(world, [a])
    world.task.start()
    with boa.reverts("not in attest window"):
        world.task.attest(1, MODEL, digest(9), sender=a)
    to_phase(world, 1, PHASE_REVEAL)
    with boa.reverts("not in attest window"):
        world.task.attest(1, MODEL, digest(9), sender=a)
    to_phase(world, 1, PHASE_FAILED)
    with boa.reverts("not in attest window"):
        world.task.attest(1, MODEL, digest(9), sender=a)
    with boa.reverts("not the current round"):
        world.task.attest(2, MODEL, digest(9), sender=a)


def test_attest_needs_membership(world: World) -> None:
    a, outsider = world.accounts[:2]
    join(world, [a])
    world.task.start()
    to_phase(world, 1, PHASE_ATTEST)
    with boa.reverts("not a member"):
        world.task.attest(1, MODEL, digest(9), sender=outsider)


def test_no_finalization_below_quorum(world: World) -> None:
    members = world.accounts[:4]
    join(world, members)  # 4 ETH; 60 % quorum: 2.4 ETH
    world.task.start()
    assert world.task.quorum_stake(1) == 24 * ETHER // 10
    to_phase(world, 1, PHASE_ATTEST)
    world.task.attest(1, MODEL, digest(9), sender=members[0])
    (log,) = events(world.task, "Attested")
    assert (log.round, log.member, log.model_digest, log.result_digest, log.stake) == (
        1,
        members[0],
        MODEL,
        digest(9),
        ETHER,
    )
    world.task.attest(1, MODEL, digest(9), sender=members[1])
    world.task.attest(1, OTHER_MODEL, digest(9), sender=members[2])
    assert world.task.tally(1, MODEL, digest(9)) == 2 * ETHER
    assert world.task.tally(1, OTHER_MODEL, digest(9)) == ETHER
    assert world.task.phase(1) == PHASE_ATTEST
    assert world.task.current_round() == 1
    assert world.task.model_digest(1) == b"\x00" * 32
    with boa.reverts("already attested"):
        world.task.attest(1, MODEL, digest(9), sender=members[0])


def test_finalization_at_quorum(world: World) -> None:
    members = world.accounts[:4]
    join(world, members)
    world.task.start()
    to_phase(world, 1, PHASE_ATTEST)
    for m in members[:2]:
        world.task.attest(1, MODEL, digest(9), sender=m)
    world.task.join("late", sender=world.accounts[4], value=5 * ETHER)  # counts from round 2
    world.task.attest(1, MODEL, digest(9), sender=members[2])  # 3 of 4 ETH >= 2.4 ETH
    (log,) = events(world.task, "Finalized")
    assert (log.round, log.model_digest, log.result_digest) == (1, MODEL, digest(9))
    (started,) = events(world.task, "RoundStarted")
    assert (started.round, started.start, started.active_stake, started.members) == (
        2,
        boa.env.timestamp,
        9 * ETHER,
        5,
    )
    assert world.task.phase(1) == PHASE_FINALIZED
    assert world.task.model_digest(1) == MODEL
    assert world.task.result_digest(1) == digest(9)
    assert world.task.current_round() == 2
    assert world.task.phase(2) == PHASE_COMMIT
    assert world.task.round_start(2) == boa.env.timestamp
    assert world.task.round_stake(2) == 9 * ETHER
    with boa.reverts("not the current round"):
        world.task.attest(1, MODEL, digest(9), sender=members[3])


def test_quorum_is_exact_not_rounded_down(make_world: Any) -> None:
    # Stakes of 1 wei make the rounding visible: 66.67 % of 3 wei is 2.0001 wei.
    w = make_world(quorum_bps=6667, min_stake=1)
    members = w.accounts[:3]
    join(w, members, stake=1)
    w.task.start()
    assert w.task.quorum_stake(1) == 3  # ceil(2.0001), where floor would give 2
    to_phase(w, 1, PHASE_ATTEST)
    w.task.attest(1, MODEL, digest(9), sender=members[0])
    w.task.attest(1, MODEL, digest(9), sender=members[1])
    assert w.task.tally(1, MODEL, digest(9)) == 2
    assert w.task.phase(1) == PHASE_ATTEST
    w.task.attest(1, MODEL, digest(9), sender=members[2])
    assert w.task.phase(1) == PHASE_FINALIZED


def test_stake_weighted_quorum(world: World) -> None:
    big, small1, small2 = world.accounts[:3]
    world.task.join("big", sender=big, value=7 * ETHER)
    join(world, [small1, small2])  # 9 ETH in all: quorum 5.4 ETH
    world.task.start()
    to_phase(world, 1, PHASE_ATTEST)
    world.task.attest(1, OTHER_MODEL, digest(9), sender=small1)
    world.task.attest(1, OTHER_MODEL, digest(9), sender=small2)
    assert world.task.phase(1) == PHASE_ATTEST
    world.task.attest(1, MODEL, digest(9), sender=big)
    assert world.task.phase(1) == PHASE_FINALIZED
    assert world.task.model_digest(1) == MODEL


def test_leaving_cannot_lower_the_quorum(world: World) -> None:
    members = world.accounts[:3]
    join(world, members)
    world.task.start()
    world.task.leave(sender=members[1])
    world.task.leave(sender=members[2])
    assert world.task.active_stake() == ETHER
    assert world.task.round_stake(1) == 3 * ETHER  # the snapshot
    to_phase(world, 1, PHASE_ATTEST)
    world.task.attest(1, MODEL, digest(9), sender=members[0])
    assert world.task.phase(1) == PHASE_ATTEST
    with boa.reverts("not a member"):
        world.task.attest(1, MODEL, digest(9), sender=members[1])


def test_member_joining_mid_round_cannot_attest_it(world: World) -> None:
    a, newcomer = world.accounts[:2]
    join(world, [a])
    world.task.start()
    world.task.join("new", sender=newcomer, value=100 * ETHER)
    assert world.task.first_round_of(newcomer) == 2
    to_phase(world, 1, PHASE_ATTEST)
    with boa.reverts("joined during this round"):
        world.task.attest(1, MODEL, digest(9), sender=newcomer)
    world.task.attest(1, MODEL, digest(9), sender=a)
    assert world.task.phase(1) == PHASE_FINALIZED
    assert world.task.round_stake(2) == 101 * ETHER


def test_equivocation_slashes(world: World) -> None:
    task = world.task
    cheat, m1, m2, m3 = world.accounts[:4]
    task.join("cheat", sender=cheat, value=2 * ETHER)
    join(world, [m1, m2, m3])  # 5 ETH in all: quorum 3 ETH
    task.start()
    to_phase(world, 1, PHASE_ATTEST)
    task.attest(1, MODEL, digest(9), sender=cheat)
    assert task.tally(1, MODEL, digest(9)) == 2 * ETHER
    treasury_before = boa.env.get_balance(world.treasury)
    task.attest(1, OTHER_MODEL, digest(9), sender=cheat)  # equivocation: does not revert
    (eq,) = events(task, "Equivocated")
    assert (eq.round, eq.member, eq.model_digest, eq.result_digest) == (
        1,
        cheat,
        OTHER_MODEL,
        digest(9),
    )
    (sl,) = events(task, "Slashed")
    assert (sl.member, sl.amount, sl.treasury) == (cheat, 2 * ETHER, world.treasury)
    assert events(task, "Attested") == []
    assert boa.env.get_balance(world.treasury) == treasury_before + 2 * ETHER
    assert boa.env.get_balance(task.address) == 3 * ETHER
    assert task.status_of(cheat) == STATUS_SLASHED
    assert task.stake_of(cheat) == 0
    assert cheat not in task.members()
    assert task.active_stake() == 3 * ETHER
    assert task.total_slashed() == 2 * ETHER
    # Neither attestation counts any more.
    assert task.tally(1, MODEL, digest(9)) == 0
    assert task.tally(1, OTHER_MODEL, digest(9)) == 0
    with boa.reverts("not a member"):
        task.attest(1, MODEL, digest(9), sender=cheat)
    with boa.reverts("slashed"):
        task.join("again", sender=cheat, value=ETHER)
    with boa.reverts("nothing to withdraw"):
        task.withdraw(sender=cheat)
    # The quorum's denominator is the snapshot: 3 ETH of 5 are still needed.
    task.attest(1, MODEL, digest(9), sender=m1)
    task.attest(1, MODEL, digest(9), sender=m2)
    assert task.phase(1) == PHASE_ATTEST
    task.attest(1, MODEL, digest(9), sender=m3)
    assert task.phase(1) == PHASE_FINALIZED


def test_equivocation_never_finalizes(make_world: Any) -> None:
    w = make_world(quorum_bps=5001)
    cheat, honest = w.accounts[:2]
    w.task.join("cheat", sender=cheat, value=ETHER)
    w.task.join("honest", sender=honest, value=ETHER)
    w.task.start()
    to_phase(w, 1, PHASE_ATTEST)
    w.task.attest(1, MODEL, digest(9), sender=honest)  # 1 of 2: below 50.01 %
    w.task.attest(1, OTHER_MODEL, digest(9), sender=cheat)
    w.task.attest(1, MODEL, digest(8), sender=cheat)  # slashed, not counted
    assert w.task.phase(1) == PHASE_ATTEST
    assert w.task.tally(1, MODEL, digest(8)) == 0


def test_skip_failed_round(world: World) -> None:
    a, b = world.accounts[:2]
    join(world, [a])
    world.task.start()
    to_phase(world, 1, PHASE_ATTEST)
    with boa.reverts("round not expired"):
        world.task.skip(1, sender=b)
    with boa.reverts("not the current round"):
        world.task.skip(2, sender=b)
    to_phase(world, 1, PHASE_FAILED)
    world.task.join("b", sender=b, value=ETHER)
    world.task.skip(1, sender=b)  # anyone
    (log,) = events(world.task, "Skipped")
    assert log.round == 1
    (started,) = events(world.task, "RoundStarted")
    assert (started.round, started.start, started.active_stake, started.members) == (
        2,
        boa.env.timestamp,
        2 * ETHER,
        2,
    )
    assert world.task.round_members(2) == 2
    assert world.task.phase(1) == PHASE_FAILED
    assert world.task.current_round() == 2
    assert world.task.phase(2) == PHASE_COMMIT
    with boa.reverts("not the current round"):
        world.task.skip(1)
    with boa.reverts("round not finalized"):
        world.task.distribute(1, [], [])
    # Round 2 runs normally: b, who joined during round 1, counts now.
    to_phase(world, 2, PHASE_ATTEST)
    world.task.attest(2, MODEL, digest(9), sender=b)
    world.task.attest(2, MODEL, digest(9), sender=a)
    assert world.task.phase(2) == PHASE_FINALIZED


def test_skip_before_start_reverts(world: World) -> None:
    with boa.reverts("not the current round"):
        world.task.skip(0)


# ---------------------------------------------------------------- rewards


HASHES = """
# pragma version ~=0.4.3
@external
@pure
def result_digest(contributors: DynArray[address, 256], scores: DynArray[uint256, 256]) -> bytes32:
    return keccak256(abi_encode(contributors, scores))

@external
@pure
def commitment(update_digest: bytes32, sender: address, round: uint256, salt: bytes32) -> bytes32:
    return keccak256(abi_encode(update_digest, sender, round, salt))
"""


def test_python_hashes_match_vyper(world: World) -> None:
    hashes = boa.loads(HASHES)
    members = world.accounts[:3]
    contributors, scores = sort_result(members, [1, 2, 3])
    assert hashes.result_digest(contributors, scores) == result_digest(contributors, scores)
    assert hashes.result_digest([], []) == result_digest([], [])
    assert result_digest(contributors, scores) != result_digest(contributors, [1, 2, 4])
    args = (digest(3), members[0], 7, salt(1))
    assert hashes.commitment(*args) == commitment(*args)
    assert commitment(*args) != commitment(digest(3), members[1], 7, salt(1))
    with pytest.raises(ValueError, match="duplicate"):
        sort_result([members[0], members[0]], [1, 2])
    assert sort_result(list(reversed(contributors)), list(reversed(scores))) == (
        contributors,
        scores,
    )


def test_distribute_pro_rata(world: World) -> None:
    members = world.accounts[:3]
    contributors, scores = finalized_round(world, members, [1, 2, 4])
    world.task.distribute(1, contributors, scores, sender=world.accounts[9])  # anyone
    expected = {a: REWARD * s // 7 for a, s in zip(contributors, scores, strict=True)}
    rewarded = {e.contributor: e.amount for e in events(world.task, "Rewarded")}
    assert rewarded == expected
    (dist,) = events(world.task, "Distributed")
    assert (dist.round, dist.total) == (1, sum(expected.values()))
    for a, amount in expected.items():
        assert world.token.balanceOf(a) == amount
    assert world.token.totalSupply() == sum(expected.values()) == world.task.total_minted()
    assert sum(expected.values()) <= REWARD
    assert world.task.distributed(1)
    with boa.reverts("already distributed"):
        world.task.distribute(1, contributors, scores)


def test_distribute_subset_and_zero_scores(world: World) -> None:
    members = world.accounts[:3]
    contributors, scores = finalized_round(world, members[:2], [0, 5])
    world.task.distribute(1, contributors, scores)
    by_address = dict(zip(contributors, scores, strict=True))
    for a in members[:2]:
        assert world.token.balanceOf(a) == (REWARD if by_address[a] else 0)
    assert world.token.balanceOf(members[2]) == 0  # absent from the result: nothing
    assert world.token.totalSupply() == REWARD


def test_distribute_empty_result(world: World) -> None:
    finalized_round(world, [], [])
    world.task.distribute(1, [], [])
    assert world.token.totalSupply() == 0
    assert world.task.distributed(1)
    with boa.reverts("already distributed"):
        world.task.distribute(1, [], [])


def test_distribute_wrong_hash_reverts(world: World) -> None:
    contributors, scores = finalized_round(world, world.accounts[:3], [1, 2, 3])
    with boa.reverts("result digest mismatch"):
        world.task.distribute(1, contributors, [1, 2, 4])
    with boa.reverts("result digest mismatch"):
        world.task.distribute(1, contributors[:2], scores[:2])
    with boa.reverts("length mismatch"):
        world.task.distribute(1, contributors, scores[:2])
    assert not world.task.distributed(1)


def test_distribute_unrevealed_contributor_reverts(world: World) -> None:
    outsider = world.accounts[7]  # never a member, never revealed
    contributors, scores = finalized_round(world, [*world.accounts[:2], outsider], [1, 1, 1])
    with boa.reverts("contributor did not reveal"):
        world.task.distribute(1, contributors, scores)


def test_distribute_duplicates_revert(world: World) -> None:
    a = world.accounts[0]
    members = world.accounts[:3]
    join(world, members)
    world.task.start()
    commit_and_reveal(world, 1, members)
    attest_all(world, 1, members, MODEL, result_digest([a, a], [1, 1]))
    with boa.reverts("contributors not strictly increasing"):
        world.task.distribute(1, [a, a], [1, 1])


def test_distribute_unsorted_reverts(world: World) -> None:
    members = world.accounts[:3]
    join(world, members)
    world.task.start()
    commit_and_reveal(world, 1, members)
    ordered, _ = sort_result(members[:2], [1, 1])
    backwards = list(reversed(ordered))
    attest_all(world, 1, members, MODEL, result_digest(backwards, [1, 1]))
    with boa.reverts("contributors not strictly increasing"):
        world.task.distribute(1, backwards, [1, 1])


def test_distribute_before_finalization_reverts(world: World) -> None:
    members = world.accounts[:3]
    join(world, members)
    world.task.start()
    commit_and_reveal(world, 1, members)
    with boa.reverts("round not finalized"):
        world.task.distribute(1, [], [])
    with boa.reverts("round not finalized"):
        world.task.distribute(5, [], [])


def test_distribute_skips_slashed_contributor(world: World) -> None:
    members = world.accounts[:4]
    join(world, members)
    world.task.start()
    commit_and_reveal(world, 1, members)
    contributors, scores = sort_result(members, [1, 1, 1, 1])
    result = result_digest(contributors, scores)
    to_phase(world, 1, PHASE_ATTEST)
    world.task.attest(1, MODEL, result, sender=members[3])
    world.task.attest(1, OTHER_MODEL, result, sender=members[3])  # slashed
    for m in members[:3]:
        world.task.attest(1, MODEL, result, sender=m)
    assert world.task.phase(1) == PHASE_FINALIZED
    world.task.distribute(1, contributors, scores)
    # Selected all the same (its update was in the model), but not paid.
    assert [e.contributor for e in events(world.task, "Selected")] == contributors
    assert members[3] not in [e.contributor for e in events(world.task, "Rewarded")]
    assert world.task.selections_of(members[3]) == 1
    assert world.token.balanceOf(members[3]) == 0
    for m in members[:3]:
        assert world.token.balanceOf(m) == REWARD // 4
    assert world.token.totalSupply() == world.task.total_minted() == 3 * (REWARD // 4)


def test_distribute_needs_the_minter_role(world: World) -> None:
    contributors, scores = finalized_round(world, world.accounts[:3], [1, 1, 1])
    world.token.set_minter(world.task.address, False)
    with boa.reverts("erc20: access is denied"):
        world.task.distribute(1, contributors, scores)


def test_reputation_counts_reveals_and_selections(make_world: Any) -> None:
    """`reveals_of` counts a member's reveals, `selections_of` the distributed rounds that
    scored it above zero (slashed since or not, paid or not); each has its event."""
    w = make_world(reward_per_round=0)  # selections do not depend on any payment
    task = w.task
    members = w.accounts[:3]
    join(w, members)
    task.start()
    # Round 1: everyone reveals; the rule scores the second member zero.
    commit_and_reveal(w, 1, members)
    assert [task.reveals_of(m) for m in members] == [1, 1, 1]
    r1 = sort_result(members, [2, 0, 1])
    attest_all(w, 1, members, MODEL, result_digest(*r1))
    task.distribute(1, *r1)
    selected = [(e.round, e.contributor, e.score) for e in events(task, "Selected")]
    assert selected == [(1, c, s) for c, s in zip(*r1, strict=True) if s]
    assert events(task, "Rewarded") == []  # nothing to pay: reward_per_round is 0
    assert [task.selections_of(m) for m in members] == [1, 0, 1]
    # Round 2: the last member does not commit; the round finalizes and is not distributed.
    commit_and_reveal(w, 2, members[:2])
    to_phase(w, 2, PHASE_ATTEST)
    r2 = sort_result(members[:2], [1, 1])
    attest_all(w, 2, members, MODEL, result_digest(*r2))
    assert task.phase(2) == PHASE_FINALIZED
    assert [task.reveals_of(m) for m in members] == [2, 2, 1]
    assert [task.selections_of(m) for m in members] == [1, 0, 1]
    # Round 3: all scored; then the counters outlive leaving and joining again.
    commit_and_reveal(w, 3, members)
    r3 = sort_result(members, [1, 1, 1])
    attest_all(w, 3, members, MODEL, result_digest(*r3))
    task.distribute(3, *r3)
    task.distribute(2, *r2)  # late, but it counts
    assert [(e.round, e.contributor, e.score) for e in events(task, "Selected")] == [
        (2, c, 1) for c in r2[0]
    ]
    assert [task.reveals_of(m) for m in members] == [3, 3, 2]
    assert [task.selections_of(m) for m in members] == [3, 2, 2]
    leaver = members[0]
    task.leave(sender=leaver)
    boa.env.time_travel(seconds=COOLDOWN)
    task.withdraw(sender=leaver)
    task.join("back", sender=leaver, value=ETHER)
    assert (task.selections_of(leaver), task.reveals_of(leaver)) == (3, 3)
    assert (task.selections_of(w.accounts[9]), task.reveals_of(w.accounts[9])) == (0, 0)


# ---------------------------------------------------------------- access policy


def test_can_download_members_only(world: World) -> None:
    a, b, outsider = world.accounts[:3]
    join(world, [a, b])
    world.token.mint(outsider, 1)  # tokens do not help under this policy
    assert world.task.can_download(a)
    assert not world.task.can_download(outsider)
    world.task.leave(sender=b)
    assert not world.task.can_download(b)


def test_can_download_token_holders(make_world: Any) -> None:
    w = make_world(access_policy=ACCESS_TOKEN_HOLDERS)
    member, holder, nobody = w.accounts[:3]
    join(w, [member])
    w.token.mint(holder, 1)
    assert w.task.can_download(holder)
    assert w.task.can_download(member)
    assert not w.task.can_download(nobody)
    w.token.transfer(nobody, 1, sender=holder)
    assert w.task.can_download(nobody)
    assert not w.task.can_download(holder)


@pytest.mark.parametrize("policy", [ACCESS_MEMBERS, ACCESS_TOKEN_HOLDERS])
def test_readers_can_download_whatever_the_policy(make_world: Any, policy: int) -> None:
    w = make_world(access_policy=policy)
    reader, outsider = w.accounts[:2]
    task = w.task
    assert not task.can_download(reader)
    with boa.reverts("ownable: caller is not the owner"):
        task.grant_reader(reader, sender=outsider)
    task.grant_reader(reader)
    granted = [e for e in task.get_logs() if type(e).__name__ == "ReaderGranted"]
    assert [e.account for e in granted] == [reader]
    assert task.readers(reader)
    assert task.can_download(reader)
    assert not task.can_download(outsider)  # neither a member nor a reader
    assert task.status_of(reader) == STATUS_NONE  # read access is no membership
    with boa.reverts("ownable: caller is not the owner"):
        task.revoke_reader(reader, sender=reader)
    task.revoke_reader(reader)
    revoked = [e for e in task.get_logs() if type(e).__name__ == "ReaderRevoked"]
    assert [e.account for e in revoked] == [reader]
    assert not task.readers(reader)
    assert not task.can_download(reader)


def test_can_download_public(make_world: Any) -> None:
    w = make_world(access_policy=ACCESS_PUBLIC)
    assert w.task.can_download(w.accounts[0])
    assert w.task.can_download("0x" + "00" * 20)


# ---------------------------------------------------------------- a whole task, and gas


def test_three_rounds_end_to_end(world: World) -> None:
    members = world.accounts[:5]
    join(world, members)
    world.task.start()
    minted = 0
    for r in (1, 2, 3):
        commit_and_reveal(world, r, members)
        contributors, scores = sort_result(members, [r, 1, 1, 1, 1])
        attest_all(world, r, members, digest(100 + r), result_digest(contributors, scores))
        assert world.task.phase(r) == PHASE_FINALIZED
        assert world.task.model_digest(r) == digest(100 + r)
        world.task.distribute(r, contributors, scores)
        minted += sum(REWARD * s // sum(scores) for s in scores)
        assert world.token.totalSupply() == minted
    assert world.task.current_round() == 4
    assert boa.env.get_balance(world.task.address) == 5 * ETHER


def _tx_gas(contract: Any, calldata_fn: str, args: Sequence[Any]) -> int:
    """Execution gas of the last call plus the intrinsic cost (21000 + calldata)."""
    execution: int = contract._computation.get_gas_used()
    data = getattr(contract, calldata_fn).prepare_calldata(*args)
    calldata = sum(16 if byte else 4 for byte in data)
    return execution + 21000 + calldata


def test_gas_of_commit_reveal_attest(world: World) -> None:
    """titanoboa keeps a contract's storage slots warm from one call to the next, so these
    figures are below a real chain's (benchmarks/ledger.py --gas measures transactions on the
    embedded chain): they bound the work, and show it does not depend on the model."""
    members = world.accounts[:5]
    join(world, members)
    world.task.start()
    salts = [salt(i) for i in range(1, 6)]
    digests = [digest(i) for i in range(1, 6)]
    commits = [commitment(digests[i], m, 1, salts[i]) for i, m in enumerate(members)]
    commit_gas = []
    for m, c in zip(members, commits, strict=True):
        world.task.commit(1, c, sender=m)
        commit_gas.append(_tx_gas(world.task, "commit", [1, c]))
    assert world.task.phase(1) == PHASE_REVEAL  # the last commit closed the commit phase
    reveal_gas = []
    for i, m in enumerate(members):
        args = [1, digests[i], CID, 100, salts[i]]
        world.task.reveal(*args, sender=m)
        reveal_gas.append(_tx_gas(world.task, "reveal", args))
    assert world.task.phase(1) == PHASE_ATTEST  # the last reveal closed the reveal phase
    contributors, scores = sort_result(members, [1, 2, 3, 4, 5])
    result = result_digest(contributors, scores)
    world.task.attest(1, MODEL, result, sender=members[1])
    attest_gas = _tx_gas(world.task, "attest", [1, MODEL, result])
    world.task.attest(1, MODEL, result, sender=members[2])
    world.task.attest(1, MODEL, result, sender=members[3])  # the quorum: finalizes
    finalize_gas = _tx_gas(world.task, "attest", [1, MODEL, result])
    assert world.task.phase(1) == PHASE_FINALIZED
    world.task.distribute(1, contributors, scores)
    distribute_gas = _tx_gas(world.task, "distribute", [1, contributors, scores])
    # Round 2: each member's reputation counters are no longer zero.
    commit_and_reveal(world, 2, members)
    args = [2, update(2, 4), CID, 104, salt(4)]
    steady_reveal_gas = _tx_gas(world.task, "reveal", args)  # the closing reveal
    print(
        f"gas: commit {commit_gas[0]} (first), {commit_gas[1]} (next), "
        f"{commit_gas[-1]} (closing); reveal {reveal_gas[0]} (first), {reveal_gas[1]} (next), "
        f"{reveal_gas[-1]} (closing), {steady_reveal_gas} (closing, round 2); "
        f"attest {attest_gas}, finalizing attest {finalize_gas}; "
        f"distribute {distribute_gas} (5 contributors)"
    )
    # Storage must not grow with the model: a commit is one slot (plus the round's counter),
    # a reveal three (the digest, the example count and the digest's anti-replay flag, plus
    # the round's and the member's counters); the closing ones also record when the phase
    # closed. A member's first reveal also creates its reputation counter.
    assert max(commit_gas) < 80_000
    assert max(reveal_gas) < 160_000
    assert steady_reveal_gas < reveal_gas[-1] - 15_000
    assert attest_gas < 100_000
    assert finalize_gas < 250_000
    # Each contributor's first selection creates its counter and its token balance.
    assert distribute_gas < 80_000 + 5 * 65_000
