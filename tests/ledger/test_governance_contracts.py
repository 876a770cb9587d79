"""RewardToken's votes, Timelock, Governor and ModelNFT on titanoboa's EVM: every function and
every revert.

ModelNFT reads four views of its task (``lineage``, ``governor``, ``owner``, ``status_of``):
here a test-only stand-in provides them (tests/ledger/lineage_task.vy), chaining finalized
rounds into its lineage as the Task does.

boa does not mine a block per transaction: the tests move the block number themselves
(``next_block``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boa
import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from fedledger.commit.cid import cid_from_digest
from fedledger.ledger.governance import (
    STATE_ACTIVE,
    STATE_CANCELED,
    STATE_DEFEATED,
    STATE_EXECUTED,
    STATE_QUEUED,
    STATE_SUCCEEDED,
    STATE_UNKNOWN,
    VOTE_ABSTAIN,
    VOTE_AGAINST,
    VOTE_FOR,
    lineage_hash,
    proposal_id,
)

ROOT = Path(__file__).resolve().parents[2]
LINEAGE_TASK = Path(__file__).resolve().parent / "lineage_task.vy"
ETHER = 10**18
PERIOD = 1000  # seconds of voting
DELAY = 600  # the timelock's minimum delay
QUORUM_BPS = 4000
ZERO = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
PROPOSER_ROLE = keccak(b"PROPOSER_ROLE")
EXECUTOR_ROLE = keccak(b"EXECUTOR_ROLE")
CANCELLER_ROLE = keccak(b"CANCELLER_ROLE")
UPDATE_DELAY = keccak(b"update_delay(uint256)")[:4]
MINT = keccak(b"mint(address,uint256)")[:4]
TRANSFER = keccak(b"transfer(address,uint256)")[:4]


@pytest.fixture(scope="module")
def deployers() -> dict[str, Any]:
    found = {n: boa.load_partial(str(ROOT / "contracts" / f"{n}.vy"))
             for n in ("RewardToken", "Timelock", "Governor", "ModelNFT")}  # fmt: skip
    found["LineageTask"] = boa.load_partial(str(LINEAGE_TASK))
    return found


@pytest.fixture(autouse=True)
def fresh_chain() -> Iterator[None]:
    with boa.env.anchor():
        yield


def next_block(n: int = 1) -> None:
    boa.env.time_travel(blocks=n)


def block() -> int:
    return int(boa.env.evm.patch.block_number)


def now() -> int:
    return int(boa.env.evm.patch.timestamp)


# ---------------------------------------------------------------- RewardToken: votes


@pytest.fixture
def token(deployers: dict[str, Any]) -> Any:
    return deployers["RewardToken"].deploy("fedledger reward", "FLR", 18, "fedledger reward", "1")


def addresses(n: int) -> list[str]:
    return [boa.env.generate_address(f"holder{i}") for i in range(n)]


def test_clock_is_the_block_number(token: Any) -> None:
    assert token.clock() == block()
    next_block(5)
    assert token.clock() == block()
    assert token.CLOCK_MODE() == "mode=blocknumber&from=default"


def test_votes_follow_balances_block_by_block(token: Any) -> None:
    a, b, c, spender = addresses(4)
    history: dict[int, dict[str, int]] = {}  # block -> balances at its end (and "supply")

    def end_block() -> None:
        balances = {x: token.balanceOf(x) for x in (a, b, c, spender)}
        balances["supply"] = token.totalSupply()
        history[block()] = balances
        next_block()

    start = block()
    end_block()  # nothing yet
    token.mint(a, 100)
    end_block()
    token.transfer(b, 30, sender=a)
    token.transfer(c, 10, sender=b)  # b's second change in the block: one checkpoint
    token.mint(b, 5)
    end_block()
    end_block()  # a block without changes
    token.burn(20, sender=a)
    token.approve(spender, 25, sender=b)  # approvals move no votes
    end_block()
    token.transferFrom(b, spender, 15, sender=spender)
    token.approve(spender, 10, sender=c)
    token.burn_from(c, 4, sender=spender)
    end_block()
    token.transfer(a, 0, sender=c)  # nothing moves: no checkpoint
    token.transfer(c, 1, sender=c)  # to itself: nothing moves
    end_block()
    token.mint(c, 7)
    token.burn(7, sender=c)  # back to where it was, still a checkpoint
    end_block()

    for b_, balances in history.items():
        for account in (a, b, c, spender):
            assert token.getPastVotes(account, b_) == balances[account], (b_, account)
        assert token.getPastTotalSupply(b_) == balances["supply"]
    for account in (a, b, c, spender):
        assert token.getVotes(account) == token.balanceOf(account)
    # One checkpoint per block in which a balance changed (the last value of the block).
    changed = {x: [b_ for b_ in history if b_ > start
                   and history[b_][x] != history[b_ - 1][x]] for x in (a, b, spender)}  # fmt: skip
    assert token.numCheckpoints(a) == len(changed[a]) == 3
    assert token.numCheckpoints(b) == len(changed[b]) == 2
    assert token.numCheckpoints(spender) == 1
    assert token.numCheckpoints(c) == 3  # received, burned from, minted and burned
    assert [tuple(token.checkpoints(b, i)) for i in range(2)] == [
        (start + 2, 25), (start + 5, 10),
    ]  # fmt: skip
    assert token.numCheckpoints(ZERO_ADDRESS) == 0
    with pytest.raises(Exception, match="checkpoint index out of bounds"):
        token.checkpoints(b, 2)


def test_future_lookups_revert(token: Any) -> None:
    (a,) = addresses(1)
    token.mint(a, 1)
    for timepoint in (block(), block() + 1, 2**256 - 1):
        with boa.reverts("future lookup"):
            token.getPastVotes(a, timepoint)
        with boa.reverts("future lookup"):
            token.getPastTotalSupply(timepoint)
    next_block()
    assert token.getPastVotes(a, block() - 1) == 1
    assert token.getPastVotes(a, 0) == 0
    assert token.getPastTotalSupply(block() - 1) == 1


def test_many_checkpoints_are_searched(token: Any) -> None:
    a, b = addresses(2)
    expected = []
    for i in range(70):
        token.mint(a, i + 1)
        if i % 3 == 0:
            token.transfer(b, 1, sender=a)
        expected.append((block(), token.balanceOf(a), token.totalSupply()))
        next_block(1 + i % 2)
    assert token.numCheckpoints(a) == 70
    for at, balance, supply in expected:
        assert token.getPastVotes(a, at) == balance
        assert token.getPastTotalSupply(at) == supply
        before = [x[1] for x in expected if x[0] < at]
        assert token.getPastVotes(a, at - 1) == (before[-1] if before else 0)


def test_minting_and_ownership_are_unchanged(token: Any) -> None:
    owner = boa.env.eoa
    a, task = addresses(2)
    assert token.owner() == owner
    assert token.is_minter(owner)
    with boa.reverts("erc20: access is denied"):
        token.mint(a, 1, sender=a)
    token.set_minter(task, True)
    token.mint(a, 5, sender=task)
    assert token.balanceOf(a) == token.getVotes(a) == 5
    with boa.reverts("erc20: transfer amount exceeds balance"):
        token.transfer(task, 6, sender=a)
    with boa.reverts("erc20: insufficient allowance"):
        token.transferFrom(a, task, 1, sender=task)
    with boa.reverts("erc20: burn amount exceeds balance"):
        token.burn(6, sender=a)
    with boa.reverts("erc20: mint to the zero address"):
        token.mint(ZERO_ADDRESS, 1)
    token.renounce_ownership()
    assert not token.is_minter(owner)
    with boa.reverts("erc20: access is denied"):
        token.mint(a, 1)


def test_supply_is_capped_for_the_checkpoints(token: Any) -> None:
    a, b = addresses(2)
    token.mint(a, 2**160 - 2)
    with boa.reverts("votes: total supply over 2**160 - 1"):
        token.mint(b, 2)
    token.mint(b, 1)
    next_block()
    assert token.getPastTotalSupply(block() - 1) == 2**160 - 1
    assert token.getPastVotes(a, block() - 1) == 2**160 - 2


# ---------------------------------------------------------------- Timelock


@pytest.fixture
def timelock(deployers: dict[str, Any]) -> Any:
    admin = boa.env.eoa
    return deployers["Timelock"].deploy(DELAY, [admin], [admin], ZERO_ADDRESS)


def test_timelock_schedules_calls_longer_than_the_module_takes(timelock: Any) -> None:
    payload = UPDATE_DELAY + abi_encode(["uint256"], [5])  # update_delay(5)
    payload_long = payload + b"\x01" * 9000  # trailing bytes: the call still decodes
    salt = b"\x07" * 32
    for data in (payload, payload_long):
        assert timelock.hash_operation(timelock.address, 0, data, ZERO, salt) == keccak(
            abi_encode(["address", "uint256", "bytes", "bytes32", "bytes32"],
                       [timelock.address, 0, data, ZERO, salt])
        )  # fmt: skip
    op = timelock.hash_operation(timelock.address, 0, payload_long, ZERO, salt)
    timelock.schedule(timelock.address, 0, payload_long, ZERO, salt, DELAY)
    logs = timelock.get_logs()
    scheduled = [e for e in logs if type(e).__name__ == "CallScheduled"]
    assert len(scheduled) == 1
    assert scheduled[0].payload == payload_long
    assert scheduled[0].id == op
    assert scheduled[0].delay == DELAY
    assert timelock.is_operation_pending(op)
    assert not timelock.is_operation_ready(op)
    with boa.reverts("timelock_controller: operation already scheduled"):
        timelock.schedule(timelock.address, 0, payload_long, ZERO, salt, DELAY)
    with boa.reverts("timelock_controller: insufficient delay"):
        timelock.schedule(timelock.address, 0, payload, ZERO, salt, DELAY - 1)
    outsider = boa.env.generate_address("outsider")
    with boa.reverts("access_control: account is missing role"):
        timelock.schedule(timelock.address, 0, payload, ZERO, salt, DELAY, sender=outsider)
    with boa.reverts("timelock_controller: operation is not ready"):
        timelock.execute(timelock.address, 0, payload_long, ZERO, salt)
    boa.env.time_travel(seconds=DELAY)
    with boa.reverts("access_control: account is missing role"):
        timelock.execute(timelock.address, 0, payload_long, ZERO, salt, sender=outsider)
    timelock.execute(timelock.address, 0, payload_long, ZERO, salt)
    executed = [e for e in timelock.get_logs() if type(e).__name__ == "CallExecuted"]
    assert len(executed) == 1
    assert executed[0].payload == payload_long
    assert timelock.is_operation_done(op)
    assert timelock.get_minimum_delay() == 5
    with boa.reverts("timelock_controller: operation is not ready"):
        timelock.execute(timelock.address, 0, payload_long, ZERO, salt)
    with boa.reverts("timelock_controller: caller must be timelock"):
        timelock.update_delay(1)


def test_timelock_bubbles_up_a_reverting_call(timelock: Any, deployers: dict[str, Any]) -> None:
    # A revert without a reason (update_delay without its argument): the module's message.
    payload = UPDATE_DELAY
    timelock.schedule(timelock.address, 0, payload, ZERO, ZERO, DELAY)
    boa.env.time_travel(seconds=DELAY)
    with boa.reverts("timelock_controller: underlying transaction reverted"):
        timelock.execute(timelock.address, 0, payload, ZERO, ZERO)
    # A revert with a reason is passed on as it is: another timelock refuses update_delay
    # from anyone but itself.
    other = deployers["Timelock"].deploy(DELAY, [], [], ZERO_ADDRESS)
    good = UPDATE_DELAY + abi_encode(["uint256"], [1])
    timelock.schedule(other.address, 0, good, ZERO, ZERO, DELAY)
    boa.env.time_travel(seconds=DELAY)
    with boa.reverts("timelock_controller: caller must be timelock"):
        timelock.execute(other.address, 0, good, ZERO, ZERO)
    assert timelock.is_operation_ready(timelock.hash_operation(other.address, 0, good, ZERO, ZERO))


def test_timelock_keeps_the_module_interface(timelock: Any) -> None:
    admin = boa.env.eoa
    assert timelock.hasRole(PROPOSER_ROLE, admin)
    assert timelock.hasRole(CANCELLER_ROLE, admin)
    assert timelock.hasRole(EXECUTOR_ROLE, admin)
    assert not timelock.hasRole(b"\x00" * 32, admin)  # self-administered
    assert timelock.hasRole(b"\x00" * 32, timelock.address)
    assert timelock.supportsInterface(bytes.fromhex("01ffc9a7"))
    assert timelock.MAX_CALL() == 10240
    assert timelock.onERC721Received(admin, admin, 1, b"") == bytes.fromhex("150b7a02")
    op = timelock.hash_operation(admin, 0, b"", ZERO, ZERO)
    timelock.schedule(admin, 0, b"", ZERO, ZERO, DELAY)
    timelock.cancel(op)
    assert not timelock.is_operation(op)


# ---------------------------------------------------------------- Governor


@dataclass
class Gov:
    token: Any
    timelock: Any
    governor: Any
    holders: list[str]  # 60, 30 and 10 tokens (100 in all)
    outsider: str


def make_governance(deployers: dict[str, Any], threshold: int = 0, quorum: int = QUORUM_BPS,
                    open_executor: bool = False) -> Gov:  # fmt: skip
    owner = boa.env.eoa
    token = deployers["RewardToken"].deploy("fedledger reward", "FLR", 18, "fedledger", "1")
    holders = addresses(3)
    for holder, amount in zip(holders, (60, 30, 10), strict=True):
        token.mint(holder, amount * ETHER)
    timelock = deployers["Timelock"].deploy(DELAY, [], [], owner)
    governor = deployers["Governor"].deploy(token.address, timelock.address, PERIOD, quorum,
                                            threshold)  # fmt: skip
    timelock.grantRole(PROPOSER_ROLE, governor.address)
    timelock.grantRole(CANCELLER_ROLE, governor.address)
    timelock.grantRole(EXECUTOR_ROLE, ZERO_ADDRESS if open_executor else governor.address)
    timelock.renounceRole(b"\x00" * 32, owner)
    token.set_minter(timelock.address, True)
    next_block()
    return Gov(token, timelock, governor, holders, boa.env.generate_address("outsider"))


@pytest.fixture
def gov(deployers: dict[str, Any]) -> Gov:
    return make_governance(deployers)


def update_delay(g: Gov, delay: int) -> tuple[str, bytes]:
    return g.timelock.address, UPDATE_DELAY + abi_encode(["uint256"], [delay])


def mint_call(g: Gov, to: str, amount: int) -> tuple[str, bytes]:
    return g.token.address, MINT + abi_encode(["address", "uint256"], [to, amount])


def test_constructor_checks(deployers: dict[str, Any]) -> None:
    g = deployers["Governor"]
    t = boa.env.generate_address("t")
    for args, reason in (
        ((ZERO_ADDRESS, t, 1, 1, 0), "token is the zero address"),
        ((t, ZERO_ADDRESS, 1, 1, 0), "timelock is the zero address"),
        ((t, t, 0, 1, 0), "voting period is zero"),
        ((t, t, 2**32, 1, 0), "voting period above 2**32 - 1 seconds"),
        ((t, t, 1, 0, 0), "quorum out of range"),
        ((t, t, 1, 10001, 0), "quorum out of range"),
    ):
        with boa.reverts(reason):
            g.deploy(*args)
    governor = g.deploy(t, t, 2**32 - 1, 10000, 5)
    assert (governor.voting_period(), governor.quorum_bps(), governor.proposal_threshold()) == (
        2**32 - 1, 10000, 5,
    )  # fmt: skip
    assert governor.MAX_CALL() == 10240
    assert governor.MAX_DESCRIPTION() == 1024


def test_a_proposal_passes_and_runs_through_the_timelock(gov: Gov) -> None:
    g = gov
    a, b, c = g.holders
    target, data = update_delay(g, 42)
    description = "a shorter timelock delay"
    pid = g.governor.propose(target, data, description, sender=c)
    (created,) = [e for e in g.governor.get_logs() if type(e).__name__ == "ProposalCreated"]
    assert (
        pid
        == proposal_id(target, data, description)
        == g.governor.proposal_id(target, data, description)
    )
    assert (created.id, created.proposer, created.target, created.data, created.description) == (
        pid, c, target, data, description,
    )  # fmt: skip
    assert created.snapshot == block() - 1
    assert created.deadline == now() + PERIOD
    assert g.governor.state(pid) == STATE_ACTIVE
    assert g.governor.castVote(pid, VOTE_FOR, sender=a) == 60 * ETHER
    (cast,) = [e for e in g.governor.get_logs() if type(e).__name__ == "VoteCast"]
    assert (cast.voter, cast.id, cast.support, cast.weight) == (a, pid, VOTE_FOR, 60 * ETHER)
    g.governor.castVote(pid, VOTE_AGAINST, sender=b)
    g.governor.castVote(pid, VOTE_ABSTAIN, sender=c)
    assert g.governor.has_voted(pid, a)
    assert not g.governor.has_voted(pid, g.outsider)
    view = g.governor.proposal(pid)
    assert (view.proposer, view.snapshot, view.deadline) == (c, created.snapshot, created.deadline)
    assert (view.for_votes, view.against_votes, view.abstain_votes) == (
        60 * ETHER, 30 * ETHER, 10 * ETHER,
    )  # fmt: skip
    assert (view.quorum, view.operation, view.eta, view.state) == (40 * ETHER, ZERO, 0, 1)

    boa.env.time_travel(seconds=PERIOD)  # the deadline itself is still open
    assert g.governor.state(pid) == STATE_ACTIVE
    next_block()
    assert g.governor.state(pid) == STATE_SUCCEEDED
    with boa.reverts("voting is closed"):
        g.governor.castVote(pid, VOTE_FOR, sender=g.outsider)
    with boa.reverts("proposal is not queued"):
        g.governor.execute(target, data, description)
    g.governor.queue(target, data, description, sender=g.outsider)  # anyone
    assert g.governor.state(pid) == STATE_QUEUED
    operation = keccak(abi_encode(["address", "uint256", "bytes", "bytes32", "bytes32"],
                                  [target, 0, data, ZERO, pid.to_bytes(32, "big")]))  # fmt: skip
    view = g.governor.proposal(pid)
    assert view.operation == operation
    assert view.eta == now() + DELAY
    assert g.timelock.is_operation_pending(operation)
    with boa.reverts("proposal has not succeeded"):
        g.governor.queue(target, data, description)
    boa.env.time_travel(seconds=DELAY - 1)
    with boa.reverts("timelock delay not over"):
        g.governor.execute(target, data, description)
    boa.env.time_travel(seconds=1)
    g.governor.execute(target, data, description, sender=g.outsider)  # anyone
    assert g.governor.state(pid) == STATE_EXECUTED
    assert g.governor.proposal(pid).eta == 1
    assert g.timelock.get_minimum_delay() == 42
    with boa.reverts("proposal is not queued"):
        g.governor.execute(target, data, description)
    # Nobody but the governor can use the timelock.
    with boa.reverts("access_control: account is missing role"):
        g.timelock.schedule(target, 0, data, ZERO, ZERO, DELAY, sender=a)


def test_one_vote_per_account_and_only_with_votes(gov: Gov) -> None:
    g = gov
    a, b, _ = g.holders
    target, data = mint_call(g, g.outsider, 1)
    pid = g.governor.propose(target, data, "x", sender=g.outsider)  # threshold 0: anyone
    g.governor.castVote(pid, VOTE_FOR, sender=a)
    with boa.reverts("already voted"):
        g.governor.castVote(pid, VOTE_AGAINST, sender=a)
    with boa.reverts("no votes"):
        g.governor.castVote(pid, VOTE_FOR, sender=g.outsider)
    with boa.reverts("invalid vote type"):
        g.governor.castVote(pid, 3, sender=b)
    with boa.reverts("unknown proposal"):
        g.governor.castVote(pid + 1, VOTE_FOR, sender=b)
    assert g.governor.state(pid + 1) == STATE_UNKNOWN


def test_only_votes_at_the_snapshot_count(gov: Gov) -> None:
    """Tokens received in the proposal's block or later weigh nothing on it; tokens sent away
    after the snapshot still count for the sender."""
    g = gov
    a, b, _ = g.holders
    late, later = boa.env.generate_address("late"), boa.env.generate_address("later")
    g.token.transfer(late, 20 * ETHER, sender=b)  # in the proposal's block: too late
    target, data = mint_call(g, late, 1)
    pid = g.governor.propose(target, data, "snapshot", sender=a)
    next_block()
    g.token.transfer(later, 60 * ETHER, sender=a)  # after the snapshot
    g.token.mint(later, 1000 * ETHER)  # the supply at the snapshot sets the quorum
    next_block()
    with boa.reverts("no votes"):
        g.governor.castVote(pid, VOTE_FOR, sender=late)
    with boa.reverts("no votes"):
        g.governor.castVote(pid, VOTE_FOR, sender=later)
    assert g.governor.castVote(pid, VOTE_FOR, sender=a) == 60 * ETHER  # none left, still 60
    assert g.governor.castVote(pid, VOTE_AGAINST, sender=b) == 30 * ETHER  # 10 now, 30 then
    assert g.governor.quorum(g.governor.proposal(pid).snapshot) == 40 * ETHER
    boa.env.time_travel(seconds=PERIOD + 1)
    assert g.governor.state(pid) == STATE_SUCCEEDED
    with boa.reverts("future lookup"):
        g.governor.quorum(block())


@pytest.mark.parametrize(
    ("votes", "state"),
    [
        ({0: VOTE_FOR, 1: VOTE_AGAINST}, STATE_SUCCEEDED),  # 60 for, 30 against
        ({1: VOTE_FOR, 0: VOTE_AGAINST}, STATE_DEFEATED),  # 30 for, 60 against
        ({1: VOTE_FOR}, STATE_DEFEATED),  # 30 for: under the quorum (40)
        ({1: VOTE_FOR, 2: VOTE_ABSTAIN}, STATE_SUCCEEDED),  # 30 + 10 abstain reach it
        ({2: VOTE_FOR}, STATE_DEFEATED),  # 10
        ({0: VOTE_ABSTAIN}, STATE_DEFEATED),  # quorum, but nothing for
        ({}, STATE_DEFEATED),  # no vote at all
    ],
)
def test_outcomes(gov: Gov, votes: dict[int, int], state: int) -> None:
    g = gov
    target, data = update_delay(g, 1)
    pid = g.governor.propose(target, data, "outcome")
    for holder, support in votes.items():
        g.governor.castVote(pid, support, sender=g.holders[holder])
    boa.env.time_travel(seconds=PERIOD + 1)
    assert g.governor.state(pid) == state
    if state == STATE_DEFEATED:
        with boa.reverts("proposal has not succeeded"):
            g.governor.queue(target, data, "outcome")
    else:
        g.governor.queue(target, data, "outcome")


def test_a_tie_is_defeated(deployers: dict[str, Any]) -> None:
    g = make_governance(deployers)
    a, b, c = g.holders
    g.token.transfer(b, 20 * ETHER, sender=a)  # 40 / 50 / 10
    g.token.transfer(b, 5 * ETHER, sender=c)  # 40 / 55 / 5: for a 45-45 tie below
    next_block()
    target, data = update_delay(g, 1)
    pid = g.governor.propose(target, data, "tie")
    g.governor.castVote(pid, VOTE_FOR, sender=a)
    g.governor.castVote(pid, VOTE_FOR, sender=c)
    g.governor.castVote(pid, VOTE_AGAINST, sender=b)
    boa.env.time_travel(seconds=PERIOD + 1)
    view = g.governor.proposal(pid)
    assert view.for_votes == 45 * ETHER
    assert view.against_votes == 55 * ETHER
    assert g.governor.state(pid) == STATE_DEFEATED


def test_quorum_rounds_up(deployers: dict[str, Any]) -> None:
    g = make_governance(deployers, quorum=3333)
    g.token.mint(g.outsider, 7)  # supply 100 ETHER + 7 wei
    next_block()
    snapshot = block() - 1
    supply = 100 * ETHER + 7
    assert g.governor.quorum(snapshot) == -(-supply * 3333 // 10000)
    assert g.governor.quorum(snapshot) * 10000 >= supply * 3333


def test_proposal_threshold(deployers: dict[str, Any]) -> None:
    g = make_governance(deployers, threshold=30 * ETHER)
    a, b, c = g.holders
    target, data = update_delay(g, 1)
    with boa.reverts("below the proposal threshold"):
        g.governor.propose(target, data, "c", sender=c)
    g.token.transfer(c, 20 * ETHER, sender=a)  # counts from the next block on
    with boa.reverts("below the proposal threshold"):
        g.governor.propose(target, data, "c", sender=c)
    next_block()
    g.governor.propose(target, data, "c", sender=c)  # 30 at the previous block
    g.governor.propose(target, data, "b", sender=b)


def test_proposal_ids_and_arguments(gov: Gov) -> None:
    g = gov
    target, data = update_delay(g, 1)
    g.governor.propose(target, data, "once")
    with boa.reverts("proposal exists"):
        g.governor.propose(target, data, "once", sender=g.holders[0])
    g.governor.propose(target, data, "twice")  # another description: another proposal
    with boa.reverts("target is the zero address"):
        g.governor.propose(ZERO_ADDRESS, data, "x")
    big = b"\x01" * 10240
    pid = g.governor.propose(target, big, "d" * 1024)
    assert pid == proposal_id(target, big, "d" * 1024)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the ABI refuses it
        g.governor.propose(target, big + b"\x01", "x")


def test_cancel(gov: Gov) -> None:
    g = gov
    a, b, _ = g.holders
    target, data = update_delay(g, 1)
    pid = g.governor.propose(target, data, "cancel me", sender=a)
    with boa.reverts("not the proposer"):
        g.governor.cancel(target, data, "cancel me", sender=b)
    with boa.reverts("unknown proposal"):
        g.governor.cancel(target, data, "another", sender=a)
    assert g.governor.cancel(target, data, "cancel me", sender=a) == pid
    assert g.governor.state(pid) == STATE_CANCELED
    with boa.reverts("voting is closed"):
        g.governor.castVote(pid, VOTE_FOR, sender=a)
    with boa.reverts("proposal is not active"):
        g.governor.cancel(target, data, "cancel me", sender=a)
    boa.env.time_travel(seconds=PERIOD + 1)
    assert g.governor.state(pid) == STATE_CANCELED
    with boa.reverts("proposal has not succeeded"):
        g.governor.queue(target, data, "cancel me")
    # Not once a vote is cast, nor after the vote.
    pid = g.governor.propose(target, data, "voted", sender=a)
    g.governor.castVote(pid, VOTE_AGAINST, sender=b)
    with boa.reverts("votes were cast"):
        g.governor.cancel(target, data, "voted", sender=a)
    boa.env.time_travel(seconds=PERIOD + 1)
    with boa.reverts("proposal is not active"):
        g.governor.cancel(target, data, "voted", sender=a)


def test_a_failing_call_keeps_the_proposal_queued(gov: Gov) -> None:
    g = gov
    a = g.holders[0]
    # The timelock holds no tokens: its transfer reverts, with the token's reason.
    target = g.token.address
    data = TRANSFER + abi_encode(["address", "uint256"], [a, 1])
    pid = g.governor.propose(target, data, "pay from the timelock")
    g.governor.castVote(pid, VOTE_FOR, sender=a)
    boa.env.time_travel(seconds=PERIOD + 1)
    g.governor.queue(target, data, "pay from the timelock")
    boa.env.time_travel(seconds=DELAY)
    with boa.reverts("erc20: transfer amount exceeds balance"):
        g.governor.execute(target, data, "pay from the timelock")
    assert g.governor.state(pid) == STATE_QUEUED
    g.token.mint(g.timelock.address, 1)
    g.governor.execute(target, data, "pay from the timelock")
    assert g.governor.state(pid) == STATE_EXECUTED
    assert g.token.balanceOf(g.timelock.address) == 0


def test_a_proposal_mints_and_an_open_executor(deployers: dict[str, Any]) -> None:
    g = make_governance(deployers, open_executor=True)
    a = g.holders[0]
    target, data = mint_call(g, g.outsider, 7 * ETHER)
    pid = g.governor.propose(target, data, "pay the curator")
    g.governor.castVote(pid, VOTE_FOR, sender=a)
    boa.env.time_travel(seconds=PERIOD + 1)
    g.governor.queue(target, data, "pay the curator")
    boa.env.time_travel(seconds=DELAY)
    # The executor role is open: anyone may run the operation on the timelock directly, and
    # the governor sees it executed.
    g.timelock.execute(target, 0, data, ZERO, pid.to_bytes(32, "big"), sender=g.outsider)
    assert g.governor.state(pid) == STATE_EXECUTED
    assert g.token.balanceOf(g.outsider) == 7 * ETHER
    with boa.reverts("proposal is not queued"):
        g.governor.execute(target, data, "pay the curator")


def test_an_operation_canceled_on_the_timelock(deployers: dict[str, Any]) -> None:
    owner = boa.env.eoa
    token = deployers["RewardToken"].deploy("fedledger reward", "FLR", 18, "fedledger", "1")
    token.mint(owner, ETHER)
    timelock = deployers["Timelock"].deploy(DELAY, [], [], owner)
    governor = deployers["Governor"].deploy(token.address, timelock.address, PERIOD, 5000, 0)
    timelock.grantRole(PROPOSER_ROLE, governor.address)
    timelock.grantRole(EXECUTOR_ROLE, governor.address)
    timelock.grantRole(CANCELLER_ROLE, owner)  # a guardian that may veto queued operations
    next_block()
    data = UPDATE_DELAY + abi_encode(["uint256"], [1])
    pid = governor.propose(timelock.address, data, "veto me")
    governor.castVote(pid, VOTE_FOR)
    boa.env.time_travel(seconds=PERIOD + 1)
    governor.queue(timelock.address, data, "veto me")
    timelock.cancel(governor.proposal(pid).operation)
    assert governor.state(pid) == STATE_CANCELED
    boa.env.time_travel(seconds=DELAY)
    with boa.reverts("proposal is not queued"):
        governor.execute(timelock.address, data, "veto me")


# ---------------------------------------------------------------- ModelNFT


@dataclass
class Nft:
    task: Any
    nft: Any
    member: str
    outsider: str


@pytest.fixture
def nft(deployers: dict[str, Any]) -> Nft:
    task = deployers["LineageTask"].deploy()
    nft = deployers["ModelNFT"].deploy(task.address, "fedledger model", "FLM", "fedledger", "1")
    member, outsider = boa.env.generate_address("member"), boa.env.generate_address("outsider")
    task.set_status(member, 1)
    return Nft(task, nft, member, outsider)


def digest(r: int) -> bytes:
    return hashlib.sha256(b"model %d" % r).digest()


def finalize(n: Nft, rounds: list[int]) -> list[bytes]:
    models = [digest(r) for r in rounds]
    for r, m in zip(rounds, models, strict=True):
        n.task.finalize(r, m)
    return models


def test_nft_metadata(nft: Nft, deployers: dict[str, Any]) -> None:
    assert nft.nft.task() == nft.task.address
    assert (nft.nft.name(), nft.nft.symbol()) == ("fedledger model", "FLM")
    assert nft.nft.totalSupply() == nft.nft.last_minted() == 0
    assert nft.nft.last_hash() == ZERO
    assert nft.nft.MAX_CHAIN() == 1024
    assert nft.nft.MAX_MINT() == 64
    assert nft.nft.supportsInterface(bytes.fromhex("80ac58cd"))  # ERC-721
    with boa.reverts("task is the zero address"):
        deployers["ModelNFT"].deploy(ZERO_ADDRESS, "a", "b", "c", "1")


def test_nft_mints_the_lineage_in_order(nft: Nft) -> None:
    n = nft
    rounds = [1, 2, 5]
    models = finalize(n, rounds)
    assert n.task.lineage() == (5, lineage_hash(rounds, models))
    assert n.nft.mint(rounds, models, [0, 1_500_000, 0], sender=n.member) == 3
    minted = [e for e in n.nft.get_logs() if type(e).__name__ == "ModelMinted"]
    assert [(e.round, e.model, e.parent, e.epsilon) for e in minted] == [
        (1, models[0], 0, 0), (2, models[1], 1, 1_500_000), (5, models[2], 2, 0),
    ]  # fmt: skip
    assert n.nft.totalSupply() == 3
    assert [n.nft.tokenByIndex(i) for i in range(3)] == rounds
    for r, m in zip(rounds, models, strict=True):
        assert n.nft.ownerOf(r) == n.task.address  # no governor: the task holds its models
        assert n.nft.model_of(r) == m
        assert n.nft.tokenURI(r) == "ipfs://" + cid_from_digest(m)
    assert [n.nft.parent_of(r) for r in rounds] == [0, 1, 2]
    assert [n.nft.epsilon_of(r) for r in rounds] == [0, 1_500_000, 0]
    assert n.nft.last_minted() == 5
    assert n.nft.last_hash() == lineage_hash(rounds, models)
    for view in ("model_of", "parent_of", "epsilon_of", "tokenURI", "ownerOf"):
        with boa.reverts("erc721: invalid token ID"):
            getattr(n.nft, view)(3)
    # Later rounds extend the lineage; with a governor, they are its tokens.
    governor = boa.env.generate_address("governor")
    n.task.set_governor(governor)
    more = finalize(n, [6, 9])
    with boa.reverts("rounds not increasing"):
        n.nft.mint([5, 6, 9], [models[2], *more], [0, 0, 0], sender=governor)
    n.nft.mint([6, 9], more, [7, 7], sender=governor)
    assert n.nft.ownerOf(6) == n.nft.ownerOf(9) == governor
    assert n.nft.parent_of(6) == 5
    assert n.nft.parent_of(9) == 6
    assert n.nft.balanceOf(governor) == 2
    assert n.nft.balanceOf(n.task.address) == 3
    # The governor may transfer (or sell) a model: standard ERC-721.
    buyer = boa.env.generate_address("buyer")
    n.nft.transferFrom(governor, buyer, 9, sender=governor)
    assert n.nft.ownerOf(9) == buyer
    with boa.reverts("erc721: caller is not token owner or approved"):
        n.nft.transferFrom(buyer, governor, 9, sender=governor)


@pytest.mark.parametrize(
    "case",
    [
        "a model changed",
        "a round skipped",
        "rounds swapped",
        "a round not finalized",
        "not up to the last",
        "another start",
        "a round changed",
    ],
)
def test_nft_refuses_anything_but_the_lineage(nft: Nft, case: str) -> None:
    n = nft
    rounds = [1, 2, 3, 4]
    models = finalize(n, rounds)
    eps = [0] * 4
    bad_rounds, bad_models = list(rounds), list(models)
    if case == "a model changed":
        bad_models[2] = digest(99)
    elif case == "a round skipped":
        del bad_rounds[1], bad_models[1]
    elif case == "rounds swapped":
        bad_models[1], bad_models[2] = bad_models[2], bad_models[1]
    elif case == "a round not finalized":
        bad_rounds, bad_models = [*rounds, 5], [*models, digest(5)]
    elif case == "not up to the last":
        bad_rounds, bad_models = rounds[:3], models[:3]
    elif case == "another start":
        n.nft.mint(rounds, models, eps, sender=n.member)
        finalize(n, [5])
        bad_rounds, bad_models = [5], [digest(6)]
    elif case == "a round changed":
        bad_rounds[3] = 7
    k = len(bad_rounds)
    with boa.reverts("not the task's lineage"):
        n.nft.mint(bad_rounds, bad_models, [0] * k, sender=n.member)


def test_nft_who_may_mint(nft: Nft) -> None:
    n = nft
    models = finalize(n, [1])
    with boa.reverts("not a member, owner or governor"):
        n.nft.mint([1], models, [0], sender=n.outsider)
    n.task.set_status(n.outsider, 2)  # a member that left
    with boa.reverts("not a member, owner or governor"):
        n.nft.mint([1], models, [0], sender=n.outsider)
    with boa.reverts("not a member, owner or governor"):
        n.nft.mint([1], models, [0], sender=ZERO_ADDRESS)  # no governor is not a governor
    n.nft.mint([1], models, [0])  # the task's owner (the deployer)
    models = finalize(n, [2])
    n.nft.mint([2], models, [0], sender=n.member)
    with boa.reverts("nothing to mint"):
        n.nft.mint([], [], [], sender=n.member)
    with boa.reverts("length mismatch"):
        n.nft.mint([3], [], [0], sender=n.member)
    with boa.reverts("length mismatch"):
        n.nft.mint([3], models, [], sender=n.member)
    with boa.reverts("rounds not increasing"):
        n.nft.mint([2], models, [0], sender=n.member)  # minted already


def test_nft_mints_a_long_backlog_in_chunks(nft: Nft) -> None:
    n = nft
    rounds = list(range(1, 1 + 64 + 10))
    models = finalize(n, rounds)
    eps = list(range(len(rounds)))
    with pytest.raises(Exception):  # noqa: B017, PT011 - more than MAX_MINT: the ABI refuses
        n.nft.mint(rounds, models, eps, sender=n.member)
    head, rest = slice(0, 64), slice(64, None)
    with boa.reverts("not the task's lineage"):
        n.nft.mint(rounds[head], models[head], eps[head], sender=n.member)
    with boa.reverts("not the task's lineage"):  # the rest does not reach the task's lineage
        n.nft.mint_prefix(rounds[head], models[head], eps[head], rounds[64:-1], models[64:-1],
                          sender=n.member)  # fmt: skip
    with boa.reverts("not the task's lineage"):  # nor does a tampered one
        n.nft.mint_prefix(rounds[head], models[head], eps[head], rounds[rest],
                          [*models[64:-1], digest(0)], sender=n.member)  # fmt: skip
    with boa.reverts("rounds not increasing"):
        n.nft.mint_prefix(rounds[head], models[head], eps[head], [64, *rounds[65:]],
                          models[rest], sender=n.member)  # fmt: skip
    with boa.reverts("length mismatch"):
        n.nft.mint_prefix(rounds[head], models[head], eps[head], rounds[rest], models[65:],
                          sender=n.member)  # fmt: skip
    with boa.reverts("not a member, owner or governor"):
        n.nft.mint_prefix(rounds[head], models[head], eps[head], rounds[rest], models[rest],
                          sender=n.outsider)  # fmt: skip
    got = n.nft.mint_prefix(rounds[head], models[head], eps[head], rounds[rest], models[rest],
                            sender=n.member)  # fmt: skip
    assert got == 64
    assert n.nft.last_minted() == 64
    assert n.nft.totalSupply() == 64
    assert n.nft.last_hash() == lineage_hash(rounds[head], models[head])
    with boa.reverts("rounds not increasing"):  # only the rest: not from the start again
        n.nft.mint(rounds[head], models[head], eps[head], sender=n.member)
    assert n.nft.mint(rounds[rest], models[rest], eps[rest], sender=n.member) == 10
    assert n.nft.totalSupply() == len(rounds)
    assert n.nft.last_hash() == n.task.lineage()[1]
    assert n.nft.parent_of(65) == 64
    assert n.nft.epsilon_of(74) == 73


def test_cid_uri_matches_python(nft: Nft) -> None:
    digests = [ZERO, b"\xff" * 32, bytes(range(32))]
    digests += [hashlib.sha256(b"%d" % i).digest() for i in range(30)]
    for d in digests:
        assert nft.nft.cid_uri(d) == "ipfs://" + cid_from_digest(d)
