"""Committees on the Task contract (titanoboa): above `committee` active members, each round's
messages come from a committee drawn one round ahead from the chain's randomness; only its
members sign, its stake is the round's stake, and round r's committee attests round r - 1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import boa
import pytest

from fedledger.gossip.identity import Identity
from fedledger.ledger.rules import result_digest, sample_committee, sort_result
from tests.ledger.test_contracts import (
    ETHER,
    IDS,
    MODEL,
    World,
    close,
    events,
    join,
    messages,
    submit,
)

pytestmark = pytest.mark.usefixtures("fresh_chain")
K = 3
MEMBERS = 8


@pytest.fixture
def fresh_chain() -> Any:
    with boa.env.anchor():
        yield


@pytest.fixture(scope="module")
def deployers() -> tuple[Any, Any]:
    from tests.ledger.test_contracts import ROOT

    return (
        boa.load_partial(str(ROOT / "contracts" / "RewardToken.vy")),
        boa.load_partial(str(ROOT / "contracts" / "Task.vy")),
    )


@pytest.fixture
def world(deployers: tuple[Any, Any]) -> World:
    from tests.ledger.test_contracts import task_args

    token_deployer, task_deployer = deployers
    token = token_deployer.deploy("fedledger reward", "FLR", 18, "fedledger reward", "1")
    treasury = boa.env.generate_address("treasury")
    task = task_deployer.deploy(*task_args(token.address, treasury, max_rounds=4, committee=K))
    token.set_minter(task.address, True)
    for identity in IDS:
        boa.env.set_balance(identity.address, 1000 * ETHER)
    return World(token, task, boa.env.eoa, treasury, list(IDS), boa.env.generate_address("s"))


def drawn(w: World) -> dict[int, tuple[str, ...]]:
    """Each round's committee, from the `CommitteeSampled` events of the last call."""
    return {e.round: tuple(str(a) for a in e.members) for e in events(w.task, "CommitteeSampled")}


def by_address(addresses: Sequence[str]) -> list[Identity]:
    index = {i.address.lower(): i for i in IDS}
    return [index[a.lower()] for a in addresses]


def start(w: World, n: int = MEMBERS, stakes: Sequence[int] | None = None) -> dict[int, Any]:
    for i, m in enumerate(w.ids[:n]):
        w.task.join(f"127.0.0.1:{6000 + i}", b"", sender=m.address,
                    value=(stakes[i] if stakes else ETHER))  # fmt: skip
    w.task.start()
    return {e.round: e for e in events(w.task, "CommitteeSampled")}


def test_the_constructor_checks_the_committee_size(deployers: tuple[Any, Any]) -> None:
    from tests.ledger.test_contracts import task_args

    _, task_deployer = deployers
    for bad in (1, 2, 10):  # max_participants is 10 in task_args
        with boa.reverts("committee not 0 or in [3, max)"):
            task_deployer.deploy(*task_args(IDS[0].address, IDS[1].address, committee=bad))
    task = task_deployer.deploy(*task_args(IDS[0].address, IDS[1].address, committee=9))
    assert task.committee() == 9


def test_start_draws_rounds_1_and_2_as_the_python_sampler_does(world: World) -> None:
    sampled = start(world)
    members = [str(a) for a in world.task.members()]
    assert sorted(sampled) == [1, 2]
    for event in sampled.values():
        assert len(event.members) == K
        assert len(set(event.members)) == K
        # The draw is a pure function of the seed and the member array: the audit's.
        assert tuple(str(a) for a in event.members) == sample_committee(event.seed, members, K)
        stakes = sum(world.task.stake_of(a) for a in event.members)
        assert event.stake == stakes
    assert sampled[1].seed != sampled[2].seed  # the round is in the seed
    # Round 1's stake and member count are its committee's.
    assert world.task.round_members(1) == K
    assert world.task.round_stake(1) == sampled[1].stake


def test_only_the_committee_signs_and_its_messages_close_the_round(world: World) -> None:
    sampled = start(world)
    committee = by_address(sampled[1].members)
    outsider = next(i for i in world.ids[:MEMBERS] if i not in committee)
    with boa.reverts("signer not in the committee"):
        submit(world, 1, messages(world, 1, [outsider]))
    submit(world, 1, messages(world, 1, committee))
    assert [e.round for e in events(world.task, "Closed")] == [1]  # every eligible message in
    assert world.task.message_count(1) == K


def test_round_r_committee_attests_r_minus_1_against_its_own_stake(world: World) -> None:
    # Unequal stakes: the quorum (60 %) is over round 2's committee stake, not the task's.
    stakes = [(i + 1) * ETHER for i in range(MEMBERS)]
    sampled = start(world, stakes=stakes)
    first, second = by_address(sampled[1].members), by_address(sampled[2].members)
    submit(world, 1, messages(world, 1, first))
    close(world, 1)
    result = sort_result([m.address for m in first], [1] * K)
    pair = (MODEL, result_digest(*result))
    # Round 2 opens with this batch and draws round 3's committee.
    heavy = sorted(second, key=lambda m: world.task.stake_of(m.address), reverse=True)
    quorum = -(-6000 * sampled[2].stake // 10_000)
    needed: list[Identity] = []
    for m in heavy:
        needed.append(m)
        if sum(world.task.stake_of(x.address) for x in needed) >= quorum:
            break
    assert sum(world.task.stake_of(x.address) for x in needed) < 0.6 * world.task.active_stake()
    submit(world, 2, messages(world, 2, needed, pair), *result)
    assert [e.round for e in events(world.task, "CommitteeSampled")] == [3]
    finalized = events(world.task, "Finalized")
    assert [e.round for e in finalized] == [1]
    assert finalized[0].stake >= quorum
    # Round 1's committee was paid: only its members earned.
    for i in world.ids[:MEMBERS]:
        assert (world.task.earned_of(i.address) > 0) == (i in first)


def test_fewer_members_than_the_committee_means_every_member_signs(world: World) -> None:
    assert start(world, n=K) == {}  # no draw
    everyone = world.ids[:K]
    submit(world, 1, messages(world, 1, everyone))
    assert world.task.round_members(1) == K
    assert world.task.round_stake(1) == K * ETHER


def test_a_member_that_joins_or_moves_after_a_draw_gets_no_seat(world: World) -> None:
    sampled = start(world)
    first = by_address(sampled[1].members)
    # A member left: the last member of the array moves into its position.
    leaver = next(i for i in world.ids[:MEMBERS] if i not in first)
    world.task.leave(sender=leaver.address)
    late = world.ids[MEMBERS]
    join(world, [late])
    with boa.reverts("signer is not a member"):
        submit(world, 1, messages(world, 1, [leaver]))
    submit(world, 1, messages(world, 1, first))  # the drawn members still sign
    close(world, 1)
    # Round 2's committee was drawn before `late` joined (now in the leaver's old position, or
    # after the member that moved into it): no seat in round 2.
    with boa.reverts("signer not in the committee"):
        submit(world, 2, messages(world, 2, [late]))
    second = by_address(sampled[2].members)
    submit(world, 2, messages(world, 2, [m for m in second if m != leaver]))
    third = {e.round: e for e in events(world.task, "CommitteeSampled")}[3]
    assert leaver.address not in third.members  # drawn over the active members only
    close(world, 2)
    if late.address not in third.members:
        with boa.reverts("signer not in the committee"):
            submit(world, 3, messages(world, 3, [late]))


def test_each_round_draws_the_next(world: World) -> None:
    committees = {r: by_address(e.members) for r, e in start(world).items()}
    pair = (b"\x00" * 32, b"\x00" * 32)
    for rnd in range(1, 6):  # rounds 1-4 and the attestation-only round 5
        # The batch that opens round rnd draws rnd + 1: one round ahead.
        submit(world, rnd, messages(world, rnd, committees[rnd], pair))
        committees.update({r: by_address(m) for r, m in drawn(world).items()})
        close(world, rnd)
    assert sorted(committees) == [1, 2, 3, 4, 5]  # max_rounds + 1 is drawn, nothing after
    assert world.task.current_round() == 5
