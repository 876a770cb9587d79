"""The Task (ledger v2) and RewardToken contracts on titanoboa's EVM: every function and every
revert."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boa
import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from fedledger.errors import MessageError
from fedledger.gossip.identity import Identity
from fedledger.ledger.messages import ROUND_TYPE, RoundMessage, domain_separator, pair_hash
from fedledger.ledger.rules import (
    ACCESS_MEMBERS,
    ACCESS_PUBLIC,
    ACCESS_TOKEN_HOLDERS,
    STATUS_ACTIVE,
    STATUS_LEFT,
    STATUS_NONE,
    STATUS_SLASHED,
    lineage_hash,
    result_digest,
    sort_result,
)

# Task.phase(round), ledger v2 (rules.PHASE_* still carry the v1 names).
PHASE_NOT_STARTED = 0
PHASE_OPEN = 1
PHASE_AGGREGATE = 2
PHASE_ATTEST = 3
PHASE_FINALIZED = 4
PHASE_FAILED = 5

ROOT = Path(__file__).resolve().parents[2]
ETHER = 10**18
WINDOW = 100  # seconds: a round's message phase at the longest
GRACE = 10  # seconds after a quorum of stake's messages are in
COOLDOWN = 50
MAX_ROUNDS = 3
REWARD = 100 * ETHER
RULE_PARAMS = b"\x11" * 32
DOCUMENT = b'{"name":"contracts","seed":1}'  # any bytes: the contract only hashes them
CONFIG = hashlib.sha256(DOCUMENT).digest()
ZERO = b"\x00" * 32
MODEL = b"\xaa" * 32
OTHER_MODEL = b"\xbb" * 32
CHAIN_ID = 1  # titanoboa's chain id
SEED = 7
ZERO_ADDRESS = "0x" + "00" * 20
HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
IDS = [Identity.from_seed(SEED, i) for i in range(12)]


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
    ids: list[Identity]
    submitter: str

    @property
    def accounts(self) -> list[str]:
        return [i.address for i in self.ids]


def task_args(token_address: str, treasury_address: str, **overrides: Any) -> list[Any]:
    rules: dict[str, Any] = {
        "token": token_address,
        "rule_id": 1,
        "rule_params_digest": RULE_PARAMS,
        "config_digest": CONFIG,
        "quorum_bps": 6000,
        "min_stake": ETHER,
        "window": WINDOW,
        "grace": GRACE,
        "max_rounds": MAX_ROUNDS,
        "max_participants": 10,
        "allowlist_only": False,
        "reward_per_round": REWARD,
        "access_policy": ACCESS_MEMBERS,
        "cooldown": COOLDOWN,
        "treasury": treasury_address,
        "governor": ZERO_ADDRESS,
        "committee": 0,
        "config_document": DOCUMENT,
    }
    unknown = set(overrides) - set(rules)
    assert not unknown, unknown
    rules.update(overrides)
    return list(rules.values())


@pytest.fixture
def make_world(deployers: tuple[Any, Any]) -> Any:
    token_deployer, task_deployer = deployers

    def make(ids: Sequence[Identity] = IDS, **overrides: Any) -> World:
        owner = boa.env.eoa
        token = token_deployer.deploy("fedledger reward", "FLR", 18, "fedledger reward", "1")
        treasury = boa.env.generate_address("treasury")
        task = task_deployer.deploy(*task_args(token.address, treasury, **overrides))
        token.set_minter(task.address, True)
        for identity in ids:
            boa.env.set_balance(identity.address, 1000 * ETHER)
        submitter = boa.env.generate_address("submitter")
        return World(token, task, owner, treasury, list(ids), submitter)

    return make


@pytest.fixture
def world(make_world: Any) -> World:
    w: World = make_world()
    return w


def join(w: World, members: Sequence[Identity], stake: int = ETHER) -> None:
    for i, m in enumerate(members):
        w.task.join(f"127.0.0.1:{5000 + i}", b"", sender=m.address, value=stake)


def started(w: World, n: int = 3, stake: int = ETHER) -> list[Identity]:
    """`n` members with `stake` each, and round 1 open."""
    members = w.ids[:n]
    join(w, members, stake)
    w.task.start()
    return members


def events(contract: Any, name: str) -> list[Any]:
    return [e for e in contract.get_logs() if type(e).__name__ == name]


# ---------------------------------------------------------------- signed messages


@dataclass(frozen=True)
class Signed:
    """One signed round message (possibly one RoundMessage would refuse to build)."""

    signer: str
    round: int
    update: bytes
    examples: int
    model: bytes
    result: bytes
    r: int
    vs: int

    def evidence(self) -> tuple[bytes, int, bytes, bytes, int, int]:
        """The contract's `Message` struct (for `slash`)."""
        return self.update, self.examples, self.model, self.result, self.r, self.vs


def raw_digest(
    rnd: int, upd: bytes, examples: int, model: bytes, result: bytes, chain_id: int, task: str
) -> bytes:
    """The EIP-712 digest without RoundMessage's checks (to sign what it refuses)."""
    struct = keccak(
        abi_encode(
            ["bytes32", "uint256", "bytes32", "uint256", "bytes32", "bytes32"],
            [keccak(ROUND_TYPE.encode()), rnd, upd, examples, model, result],
        )
    )
    return keccak(b"\x19\x01" + domain_separator(chain_id, task) + struct)


def sign(
    w: World,
    who: Identity,
    rnd: int,
    upd: bytes = ZERO,
    examples: int = 0,
    model: bytes = ZERO,
    result: bytes = ZERO,
    *,
    chain_id: int = CHAIN_ID,
    task: str | None = None,
) -> Signed:
    address = task or w.task.address
    try:
        message = RoundMessage(round=rnd, update=upd, examples=examples, model=model, result=result)
    except MessageError:
        signature = who.sign_digest(
            raw_digest(rnd, upd, examples, model, result, chain_id, address)
        )
        r = int.from_bytes(signature[:32], "big")
        vs = int.from_bytes(signature[32:64], "big") | ((signature[64] - 27) << 255)
    else:
        signed = message.sign(who, chain_id, address)
        r, vs = signed.r, signed.vs
    return Signed(who.address, rnd, upd, examples, model, result, r, vs)


def update(rnd: int, who: Identity) -> bytes:
    """A member's update digest in a round: never the same twice."""
    return hashlib.sha256(f"update/{rnd}/{who.address}".encode()).digest()


def messages(
    w: World, rnd: int, members: Sequence[Identity], pair: tuple[bytes, bytes] = (ZERO, ZERO)
) -> list[Signed]:
    """Every member's message for `rnd`: its update (none after the last round) and its
    attestation of `pair`."""
    last = w.task.max_rounds()
    return [
        sign(w, m, rnd, update(rnd, m), 100 + k, *pair)
        if rnd <= last
        else sign(w, m, rnd, ZERO, 0, *pair)
        for k, m in enumerate(members)
    ]


def batch(msgs: Sequence[Signed]) -> tuple[list[tuple[bytes, bytes]], list[tuple[Any, ...]]]:
    """`submit`'s pairs and entries for these messages."""
    pairs: list[tuple[bytes, bytes]] = []
    entries: list[tuple[Any, ...]] = []
    for m in msgs:
        pair = (m.model, m.result)
        if pair not in pairs:
            pairs.append(pair)
        entries.append((m.update, m.examples, pairs.index(pair), m.r, m.vs))
    return pairs, entries


def submit(
    w: World,
    rnd: int,
    msgs: Sequence[Signed],
    contributors: Sequence[str] = (),
    scores: Sequence[int] = (),
    transcript: bytes = ZERO,
    *,
    sender: str | None = None,
    task: Any = None,
) -> None:
    pairs, entries = batch(msgs)
    (task or w.task).submit(
        rnd, pairs, entries, list(contributors), list(scores), transcript,
        sender=sender or w.submitter,
    )  # fmt: skip


def close(w: World, rnd: int) -> None:
    """Move the clock to the end of `rnd`'s message phase."""
    end = w.task.closes_at(rnd)
    if boa.env.timestamp < end:
        boa.env.time_travel(seconds=end - boa.env.timestamp)
    assert w.task.phase(rnd) not in (PHASE_NOT_STARTED, PHASE_OPEN)


def finalize_round_1(
    w: World,
    members: Sequence[Identity],
    scores: Sequence[int] | None = None,
    *,
    pay: bool = True,
) -> tuple[list[str], list[int]]:
    """Round 1: every member's update (the phase closes early); round 2: every member attests
    (MODEL, round 1's result), which finalizes round 1 (and pays it if `pay`)."""
    submit(w, 1, messages(w, 1, members))
    result = sort_result([m.address for m in members], scores or [1] * len(members))
    pair = (MODEL, result_digest(*result))
    submit(w, 2, messages(w, 2, members, pair), *(result if pay else ((), ())))
    assert [e.round for e in events(w.task, "Finalized")] == [1]  # keeps the call's logs
    return result


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
    assert task.window() == WINDOW
    assert task.grace() == GRACE
    assert task.max_rounds() == MAX_ROUNDS
    assert task.max_participants() == 10
    assert task.allowlist_only() is False
    assert task.reward_per_round() == REWARD
    assert task.access_policy() == ACCESS_MEMBERS
    assert task.cooldown() == COOLDOWN
    assert task.treasury() == world.treasury
    assert task.governor() == ZERO_ADDRESS
    assert task.owner() == world.owner
    assert task.lineage() == (0, ZERO)
    assert (
        task.rules_at(0)
        == task.rules_at(1)
        == task.rules_at(10**6)
        == (1, RULE_PARAMS, CONFIG, 6000, ETHER, False, REWARD, ACCESS_MEMBERS, 1)
    )
    assert task.current_round() == 0
    assert task.members() == []
    assert task.member_count() == 0
    assert task.active_stake() == 0
    totals = (task.total_staked(), task.total_withdrawn(), task.total_slashed())
    assert totals == (0, 0, 0)
    assert (task.total_earned(), task.total_claimed()) == (0, 0)
    assert task.finished() is False


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"token": ZERO_ADDRESS}, "token is zero"),
        ({"treasury": ZERO_ADDRESS}, "treasury is zero"),
        ({"quorum_bps": 5000}, "quorum not in (5000, 10000]"),
        ({"quorum_bps": 10001}, "quorum not in (5000, 10000]"),
        ({"min_stake": 0}, "min stake is zero"),
        ({"min_stake": 2**96}, "min stake above 2**96 - 1"),
        ({"window": 0, "grace": 0}, "window not in (0, 7 days]"),
        ({"window": 7 * 86400 + 1}, "window not in (0, 7 days]"),
        ({"grace": WINDOW + 1}, "grace above the window"),
        ({"cooldown": 0}, "cooldown not in (0, 365 days]"),
        ({"cooldown": 365 * 86400 + 1}, "cooldown not in (0, 365 days]"),
        ({"max_rounds": 0}, "max rounds not in (0, 1000000]"),
        ({"max_rounds": 1000001}, "max rounds not in (0, 1000000]"),
        ({"max_participants": 0}, "max participants is zero"),
        ({"max_participants": 257}, "max participants above MAX"),
        ({"reward_per_round": 2**88 // MAX_ROUNDS + 1}, "total reward above 2**88 - 1"),
        ({"access_policy": 3}, "unknown access policy"),
        (
            {"config_document": b"", "config_digest": hashlib.sha256(b"").digest()},
            "config document is empty",
        ),
        ({"config_digest": b"\x22" * 32}, "config digest is not the document's"),
        ({"config_document": DOCUMENT + b" "}, "config digest is not the document's"),
    ],
)
def test_constructor_rejects_bad_rules(
    deployers: tuple[Any, Any], overrides: dict[str, Any], reason: str
) -> None:
    token = deployers[0].deploy("t", "T", 18, "t", "1")
    treasury = boa.env.generate_address()
    with boa.reverts(reason):
        deployers[1].deploy(*task_args(token.address, treasury, **overrides))


def test_constructor_accepts_the_bounds(make_world: Any) -> None:
    w = make_world(
        quorum_bps=10000,
        min_stake=2**96 - 1,
        window=7 * 86400,
        grace=7 * 86400,
        cooldown=365 * 86400,
        max_rounds=1000000,
        max_participants=256,
        reward_per_round=(2**88 - 1) // 1000000,
        access_policy=ACCESS_PUBLIC,
    )
    assert (w.task.quorum_bps(), w.task.max_participants()) == (10000, 256)
    assert (w.task.window(), w.task.grace(), w.task.cooldown()) == (
        7 * 86400,
        7 * 86400,
        365 * 86400,
    )
    w = make_world(quorum_bps=5001, grace=0, max_rounds=1, reward_per_round=2**88 - 1)
    assert (w.task.grace(), w.task.reward_per_round()) == (0, 2**88 - 1)


def test_the_deployment_emits_the_configuration_document(world: World) -> None:
    (configured,) = events(world.task, "Configured")
    assert configured.from_round == 1
    assert configured.document == DOCUMENT
    assert configured.config_digest == CONFIG == hashlib.sha256(DOCUMENT).digest()


def test_constructor_takes_a_document_up_to_max_config(make_world: Any) -> None:
    document = b"x" * 8192
    w = make_world(config_document=document, config_digest=hashlib.sha256(document).digest())
    assert w.task.config_digest() == hashlib.sha256(document).digest()


def test_ownership_transfer_is_owner_only(world: World) -> None:
    outsider = world.accounts[0]
    with boa.reverts("ownable: caller is not the owner"):
        world.task.transfer_ownership(outsider, sender=outsider)
    world.task.transfer_ownership(outsider)
    assert world.task.owner() == outsider
    with boa.reverts("ownable: caller is not the owner"):
        world.task.start()
    with boa.reverts("ownable: caller is not the owner"):
        world.task.renounce_ownership()
    world.task.renounce_ownership(sender=outsider)
    assert world.task.owner() == ZERO_ADDRESS
    with boa.reverts("ownable: caller is not the owner"):
        world.task.start(sender=outsider)


def test_eip712_domain(world: World) -> None:
    fields, name, version, chain_id, contract, salt, extensions = world.task.eip712Domain()
    assert fields == b"\x0f"
    assert (name, version, chain_id, contract) == ("fedledger", "2", CHAIN_ID, world.task.address)
    assert salt == ZERO
    assert list(extensions) == []


def test_message_hash_is_the_python_digest(world: World) -> None:
    task = world.task
    for message in (
        RoundMessage(round=1, update=b"\x01" * 32, examples=3),
        RoundMessage(round=2, model=MODEL, result=b"\x02" * 32),
        RoundMessage(round=7, update=b"\x03" * 32, examples=2**64 - 1, model=MODEL, result=MODEL),
    ):
        args = (message.round, message.update, message.examples, message.model, message.result)
        assert task.message_hash(*args) == message.digest(1, task.address)
        assert task.message_hash(*args) == raw_digest(*args, CHAIN_ID, task.address)
        assert task.message_hash(*args) != message.digest(5, task.address)
    # A signature over it verifies in Python as in the contract.
    signed = RoundMessage(round=1, update=b"\x01" * 32, examples=3).sign(IDS[0], 1, task.address)
    assert signed.verify(1, task.address)
    assert not signed.verify(1, world.token.address)


HASHES = """
# pragma version ~=0.4.3
@external
@pure
def result_digest(contributors: DynArray[address, 256], scores: DynArray[uint256, 256]) -> bytes32:
    return keccak256(abi_encode(contributors, scores))

@external
@pure
def transcript_digest(
    contributors: DynArray[address, 256], scores: DynArray[uint256, 256], transcript: bytes32
) -> bytes32:
    return keccak256(abi_encode(contributors, scores, transcript))

@external
@pure
def pair_hash(model: bytes32, result: bytes32) -> bytes32:
    return keccak256(abi_encode(model, result))
"""


def test_python_hashes_match_vyper(world: World) -> None:
    hashes = boa.loads(HASHES)
    members = world.accounts[:3]
    contributors, scores = sort_result(members, [1, 2, 3])
    assert hashes.result_digest(contributors, scores) == result_digest(contributors, scores)
    assert hashes.result_digest([], []) == result_digest([], [])
    assert result_digest(contributors, scores) != result_digest(contributors, [1, 2, 4])
    transcript = b"\x5a" * 32
    assert hashes.transcript_digest(contributors, scores, transcript) == result_digest(
        contributors, scores, transcript
    )
    assert hashes.transcript_digest([], [], transcript) == result_digest([], [], transcript)
    # No transcript, or a zero one: the digest without it.
    assert result_digest(contributors, scores, ZERO) == result_digest(contributors, scores)
    assert result_digest(contributors, scores, None) == result_digest(contributors, scores)
    assert result_digest(contributors, scores, transcript) != result_digest(contributors, scores)
    with pytest.raises(ValueError, match="32 bytes"):
        result_digest(contributors, scores, b"\x01" * 31)
    assert hashes.pair_hash(MODEL, OTHER_MODEL) == pair_hash(MODEL, OTHER_MODEL)
    with pytest.raises(ValueError, match="duplicate"):
        sort_result([members[0], members[0]], [1, 2])
    assert sort_result(list(reversed(contributors)), list(reversed(scores))) == (
        contributors,
        scores,
    )


# ---------------------------------------------------------------- membership


def test_join_records_member(world: World) -> None:
    task, a = world.task, world.accounts[0]
    task.join("10.0.0.1:7000", b"", sender=a, value=2 * ETHER)
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
    assert task.first_round_of(a) == 1
    assert task.last_round_of(a) == 0
    assert task.earned_of(a) == 0
    assert task.endpoint_of(a) == "10.0.0.1:7000"
    assert task.active_stake() == 2 * ETHER
    assert task.total_staked() == 2 * ETHER
    assert boa.env.get_balance(task.address) == 2 * ETHER


def test_join_during_a_round_takes_part_from_the_next(world: World) -> None:
    started(world, 2)
    late = world.accounts[5]
    world.task.join("late", b"", sender=late, value=ETHER)
    (log,) = events(world.task, "Joined")
    assert log.first_round == 2
    assert world.task.first_round_of(late) == 2
    assert world.task.round_members(1) == 2
    assert world.task.round_stake(1) == 2 * ETHER


def test_join_stake_bounds(world: World) -> None:
    a, b, c = world.accounts[:3]
    with boa.reverts("stake below minimum"):
        world.task.join("x", b"", sender=a, value=ETHER - 1)
    boa.env.set_balance(b, 2**97)
    with boa.reverts("stake above 2**96 - 1"):
        world.task.join("x", b"", sender=b, value=2**96)
    world.task.join("x", b"", sender=b, value=2**96 - 1)
    assert world.task.stake_of(b) == 2**96 - 1
    world.task.join("x", b"", sender=c, value=ETHER)
    assert world.task.stake_of(c) == ETHER


def test_double_join_reverts(world: World) -> None:
    join(world, world.ids[:1])
    with boa.reverts("already a member"):
        world.task.join("x", b"", sender=world.accounts[0], value=ETHER)


def test_join_full_task_reverts(make_world: Any) -> None:
    w = make_world(max_participants=3)
    join(w, w.ids[:3])
    with boa.reverts("task is full"):
        w.task.join("x", b"", sender=w.accounts[3], value=ETHER)
    # Leaving frees a place.
    w.task.leave(sender=w.accounts[0])
    w.task.join("x", b"", sender=w.accounts[3], value=ETHER)
    assert sorted(w.task.members()) == sorted(w.accounts[1:4])


def test_allowlist(make_world: Any) -> None:
    w = make_world(allowlist_only=True)
    a, b = w.accounts[:2]
    with boa.reverts("not allowlisted"):
        w.task.join("x", b"", sender=a, value=ETHER)
    w.task.allow(a)
    assert [e.account for e in events(w.task, "Allowed")] == [a]
    assert w.task.allowed(a)
    w.task.join("x", b"", sender=a, value=ETHER)
    w.task.allow(b)
    w.task.disallow(b)
    assert [e.account for e in events(w.task, "Disallowed")] == [b]
    assert not w.task.allowed(b)
    with boa.reverts("not allowlisted"):
        w.task.join("x", b"", sender=b, value=ETHER)


def test_allow_and_disallow_are_owner_only(world: World) -> None:
    a = world.accounts[0]
    with boa.reverts("ownable: caller is not the owner"):
        world.task.allow(a, sender=a)
    with boa.reverts("ownable: caller is not the owner"):
        world.task.disallow(a, sender=a)


def test_allowlist_ignored_when_open(world: World) -> None:
    join(world, world.ids[:1])  # nobody allowlisted
    assert world.task.is_member(world.accounts[0])


def test_leave_then_withdraw_after_window_and_cooldown(world: World) -> None:
    task = world.task
    a, b, c = world.accounts[:3]
    join(world, world.ids[:3])
    task.leave(sender=b)
    left_at = boa.env.timestamp
    (log,) = events(task, "Left")
    assert (log.member, log.withdraw_after) == (b, left_at + WINDOW + COOLDOWN)
    assert task.withdraw_after(b) == left_at + WINDOW + COOLDOWN
    assert task.status_of(b) == STATUS_LEFT
    assert not task.is_member(b)
    assert sorted(task.members()) == sorted([a, c])
    assert task.active_stake() == 2 * ETHER
    assert task.stake_of(b) == ETHER  # still held
    with boa.reverts("cooldown not over"):
        task.withdraw(sender=b)
    boa.env.time_travel(seconds=WINDOW + COOLDOWN - 1)
    with boa.reverts("cooldown not over"):
        task.withdraw(sender=b)
    boa.env.time_travel(seconds=1)
    before = boa.env.get_balance(b)
    task.withdraw(sender=b)
    (log,) = events(task, "Withdrawn")
    assert (log.member, log.amount) == (b, ETHER)
    assert boa.env.get_balance(b) == before + ETHER
    assert boa.env.get_balance(task.address) == 2 * ETHER
    assert task.stake_of(b) == 0
    assert task.status_of(b) == STATUS_NONE
    assert task.withdraw_after(b) == 0
    assert task.total_withdrawn() == ETHER
    with boa.reverts("nothing to withdraw"):
        task.withdraw(sender=b)
    # A withdrawn member may join again.
    task.join("again", b"", sender=b, value=ETHER)
    assert task.is_member(b)


REENTRANT_MEMBER = """
# pragma version ~=0.4.3
interface ITask:
    def join(endpoint: String[256], consent: Bytes[2048]): payable
    def leave(): nonpayable
    def withdraw(): nonpayable

task: address

@deploy
def __init__(task: address):
    self.task = task

@external
@payable
def enter():
    extcall ITask(self.task).join("evil", b"", value=msg.value)

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
    attacker.enter(sender=world.accounts[0], value=ETHER)
    join(world, world.ids[1:2])
    attacker.go(True)
    boa.env.time_travel(seconds=WINDOW + COOLDOWN)
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
    join(world, world.ids[:1])
    with boa.reverts("nothing to withdraw"):
        world.task.withdraw(sender=a)  # active, not left
    world.task.leave(sender=a)
    with boa.reverts("not a member"):
        world.task.leave(sender=a)
    with boa.reverts("withdraw first"):
        world.task.join("x", b"", sender=a, value=ETHER)


def test_set_keys_emits_keys_and_stores_nothing(world: World) -> None:
    task = world.task
    a, b = world.accounts[:2]
    key, blob = b"\x0c" * 32, b"\x0d" * 32
    with boa.reverts("not a member"):
        task.set_keys(key, blob, 1, 30, 3, sender=a)
    join(world, world.ids[:2])
    with boa.reverts("zero key"):
        task.set_keys(ZERO, blob, 1, 30, 3, sender=a)
    for rounds in ((0, 30), (2, 1), (0, 0)):
        with boa.reverts("bad rounds"):
            task.set_keys(key, blob, *rounds, 3, sender=a)
    for first, last, recipients in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        with boa.reverts("bad rounds"):
            task.set_keys(key, ZERO, first, last, recipients, sender=a)
    before = task.active_stake(), task.stake_of(a), task.last_round_of(a)
    task.set_keys(key, blob, 1, 1, 2, sender=a)
    (keys,) = events(task, "Keys")
    assert (keys.member, keys.channel_key, keys.keys_digest) == (a, key, blob)
    assert (keys.first_round, keys.last_round, keys.recipients) == (1, 1, 2)
    task.set_keys(key, ZERO, 0, 0, 0, sender=b)  # a channel key alone
    (keys,) = events(task, "Keys")
    assert (keys.member, keys.keys_digest, keys.first_round, keys.recipients) == (b, ZERO, 0, 0)
    assert (task.active_stake(), task.stake_of(a), task.last_round_of(a)) == before
    task.leave(sender=a)
    with boa.reverts("not a member"):
        task.set_keys(key, blob, 1, 30, 3, sender=a)


def test_members_list_stays_consistent(world: World) -> None:
    accounts = world.accounts[:6]
    join(world, world.ids[:6])
    for leaver in (accounts[0], accounts[5], accounts[2]):
        world.task.leave(sender=leaver)
    assert sorted(world.task.members()) == sorted([accounts[1], accounts[3], accounts[4]])
    assert world.task.member_count() == 3


def test_rejoining_keeps_earned_reward_and_last_round(world: World) -> None:
    members = started(world)
    finalize_round_1(world, members, [1, 1, 2])
    a = members[0].address
    earned = world.task.earned_of(a)
    assert earned > 0
    assert world.task.last_round_of(a) == 2
    world.task.leave(sender=a)
    boa.env.time_travel(seconds=WINDOW + COOLDOWN)
    world.task.withdraw(sender=a)
    world.task.join("back", b"", sender=a, value=ETHER)
    assert world.task.earned_of(a) == earned
    assert world.task.last_round_of(a) == 2
    assert world.task.first_round_of(a) == world.task.current_round() + 1
    world.task.claim(a)
    assert world.token.balanceOf(a) == earned


# ---------------------------------------------------------------- access policy


def test_can_download_members_only(world: World) -> None:
    a, b, outsider = world.accounts[:3]
    join(world, world.ids[:2])
    world.token.mint(outsider, 1)  # tokens do not help under this policy
    assert world.task.can_download(a)
    assert not world.task.can_download(outsider)
    world.task.leave(sender=b)
    assert not world.task.can_download(b)


def test_can_download_token_holders(make_world: Any) -> None:
    w = make_world(access_policy=ACCESS_TOKEN_HOLDERS)
    member, holder, nobody = w.accounts[:3]
    join(w, w.ids[:1])
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
    assert [e.account for e in events(task, "ReaderGranted")] == [reader]
    assert task.readers(reader)
    assert task.can_download(reader)
    assert not task.can_download(outsider)  # neither a member nor a reader
    assert task.status_of(reader) == STATUS_NONE  # read access is no membership
    with boa.reverts("ownable: caller is not the owner"):
        task.revoke_reader(reader, sender=reader)
    task.revoke_reader(reader)
    assert [e.account for e in events(task, "ReaderRevoked")] == [reader]
    assert not task.readers(reader)
    assert not task.can_download(reader)


def test_can_download_public(make_world: Any) -> None:
    w = make_world(access_policy=ACCESS_PUBLIC)
    assert w.task.can_download(w.accounts[0])
    assert w.task.can_download(ZERO_ADDRESS)


# ---------------------------------------------------------------- rounds


def test_start_is_owner_only_and_once(world: World) -> None:
    join(world, world.ids[:3])
    with boa.reverts("ownable: caller is not the owner"):
        world.task.start(sender=world.accounts[0])
    world.task.start()
    (log,) = events(world.task, "RoundStarted")
    now = boa.env.timestamp
    assert (log.round, log.start, log.active_stake, log.members) == (1, now, 3 * ETHER, 3)
    assert world.task.current_round() == 1
    assert world.task.round_start(1) == now
    assert world.task.round_members(1) == 3
    assert world.task.round_stake(1) == 3 * ETHER
    assert world.task.submitted_stake(1) == 0
    assert world.task.message_count(1) == 0
    with boa.reverts("already started"):
        world.task.start()


def test_submit_and_close_before_start_revert(world: World) -> None:
    join(world, world.ids[:3])
    with boa.reverts("not started"):
        submit(world, 1, messages(world, 1, world.ids[:3]))
    with boa.reverts("not started"):
        world.task.close()


def test_phase_in_every_state(world: World) -> None:
    task = world.task
    assert task.phase(1) == PHASE_NOT_STARTED
    members = started(world)
    assert task.phase(0) == PHASE_NOT_STARTED
    assert task.phase(1) == PHASE_OPEN
    assert task.phase(2) == PHASE_NOT_STARTED
    submit(world, 1, messages(world, 1, members[:1]))
    close(world, 1)
    assert task.phase(1) == PHASE_AGGREGATE
    # Round 2 opens: its messages attest round 1 (one attestation: no quorum).
    submit(world, 2, messages(world, 2, members[:1], (MODEL, MODEL)))
    assert task.phase(1) == PHASE_ATTEST
    assert task.phase(2) == PHASE_OPEN
    close(world, 2)
    assert task.phase(1) == PHASE_FAILED  # by the clock, before anyone says so
    assert task.phase(2) == PHASE_AGGREGATE
    submit(world, 3, messages(world, 3, members, (MODEL, MODEL)))
    assert [e.round for e in events(task, "Skipped")] == [1]
    assert task.phase(1) == PHASE_FAILED
    assert task.phase(2) == PHASE_FINALIZED
    assert task.phase(3) == PHASE_AGGREGATE  # every member's message in: closed at once
    assert task.phase(4) == PHASE_NOT_STARTED


def test_closes_at_the_window_without_a_quorum(world: World) -> None:
    members = started(world)
    start = world.task.round_start(1)
    assert world.task.closes_at(2) == 0  # not started
    submit(world, 1, messages(world, 1, members[:1]))  # 1/3 of the stake
    assert events(world.task, "Quorate") == []
    assert world.task.closes_at(1) == start + WINDOW
    boa.env.time_travel(seconds=start + WINDOW - 1 - boa.env.timestamp)
    assert world.task.phase(1) == PHASE_OPEN
    boa.env.time_travel(seconds=1)
    assert world.task.phase(1) == PHASE_AGGREGATE
    with boa.reverts("round closed"):
        submit(world, 1, messages(world, 1, members[1:]))


def test_closes_early_when_every_eligible_member_is_in(world: World) -> None:
    members = started(world)
    late = world.ids[5]
    join(world, [late])  # not eligible in round 1: it does not hold the round open
    boa.env.time_travel(seconds=7)
    submit(world, 1, messages(world, 1, members))
    assert [e.round for e in events(world.task, "Closed")] == [1]
    assert events(world.task, "Quorate") == []  # closed already: no grace to announce
    assert world.task.closes_at(1) == boa.env.timestamp
    assert world.task.phase(1) == PHASE_AGGREGATE
    assert world.task.message_count(1) == world.task.round_members(1) == 3


def test_closes_grace_after_a_quorum(world: World) -> None:
    members = started(world)
    boa.env.time_travel(seconds=5)
    submit(world, 1, messages(world, 1, members[:1]))
    assert events(world.task, "Quorate") == []
    submit(world, 1, messages(world, 1, members[1:2]))  # 2/3 >= 60 %
    assert [e.round for e in events(world.task, "Quorate")] == [1]
    assert events(world.task, "Closed") == []
    quorum_at = boa.env.timestamp
    assert world.task.closes_at(1) == quorum_at + GRACE
    boa.env.time_travel(seconds=GRACE - 1)
    submit(world, 1, messages(world, 1, members[2:]))  # in time; closes at once
    assert world.task.closes_at(1) == boa.env.timestamp


def test_grace_never_extends_the_window(world: World) -> None:
    members = started(world)
    start = world.task.round_start(1)
    boa.env.time_travel(seconds=WINDOW - 3)
    submit(world, 1, messages(world, 1, members[:2]))
    assert [e.round for e in events(world.task, "Quorate")] == [1]
    assert world.task.closes_at(1) == start + WINDOW
    boa.env.time_travel(seconds=3)
    with boa.reverts("round closed"):
        submit(world, 1, messages(world, 1, members[2:]))


def test_quorum_stake_rounds_up(world: World) -> None:
    join(world, world.ids[:2], ETHER)
    join(world, world.ids[2:3], ETHER + 1)
    world.task.start()
    stake = 3 * ETHER + 1
    assert world.task.round_stake(1) == stake
    assert world.task.quorum_stake(1) == -(-6000 * stake // 10000) == 6 * stake // 10 + 1
    assert world.task.quorum_stake(2) == 0  # not started


def test_quorum_stake_of_a_round_not_started_is_zero(world: World) -> None:
    started(world)
    assert world.task.round_stake(9) == 0
    assert world.task.quorum_stake(9) == 0


def test_submit_records_each_message(world: World) -> None:
    task = world.task
    members = started(world)
    msgs = messages(world, 1, members[:2])
    submit(world, 1, msgs, sender=world.accounts[9])  # anyone submits
    logged = events(task, "Submitted")
    assert [
        (e.round, e.member, e.update, e.examples, e.model, e.result, e.r, e.vs) for e in logged
    ] == [(1, m.signer, m.update, m.examples, m.model, m.result, m.r, m.vs) for m in msgs]
    assert task.message_count(1) == 2
    assert task.submitted_stake(1) == 2 * ETHER
    assert [task.last_round_of(m.address) for m in members] == [1, 1, 0]
    assert events(task, "RoundStarted") == []


def test_anyone_opens_the_next_round_with_an_empty_batch(world: World) -> None:
    members = started(world)
    submit(world, 1, messages(world, 1, members[:1]))
    with boa.reverts("current round still open"):
        submit(world, 2, [])
    close(world, 1)
    submit(world, 2, [], sender=world.accounts[9])
    (log,) = events(world.task, "RoundStarted")
    assert (log.round, log.start, log.active_stake, log.members) == (
        2,
        boa.env.timestamp,
        3 * ETHER,
        3,
    )
    assert world.task.current_round() == 2
    assert world.task.phase(1) == PHASE_ATTEST


def test_submit_not_the_current_round(world: World) -> None:
    members = started(world)
    with boa.reverts("not the current round"):
        submit(world, 3, messages(world, 3, members))
    with boa.reverts("not the current round"):
        submit(world, 0, [])
    submit(world, 1, messages(world, 1, members))
    submit(world, 2, messages(world, 2, members[:1]))
    with boa.reverts("not the current round"):
        submit(world, 1, messages(world, 1, members))


def test_submit_next_round_while_current_still_open(world: World) -> None:
    members = started(world)
    submit(world, 1, messages(world, 1, members[:2]))  # quorate: open for GRACE more
    with boa.reverts("current round still open"):
        submit(world, 2, messages(world, 2, members))
    boa.env.time_travel(seconds=GRACE)
    submit(world, 2, messages(world, 2, members))
    assert world.task.current_round() == 2


def test_submit_after_the_round_closed(world: World) -> None:
    members = started(world)
    close(world, 1)
    with boa.reverts("round closed"):
        submit(world, 1, messages(world, 1, members))


def test_submit_pair_index_out_of_range(world: World) -> None:
    members = started(world)
    pairs, entries = batch(messages(world, 1, members[:1]))
    bad = [(*entries[0][:2], 1, *entries[0][3:])]
    with boa.reverts("pair index out of range"):
        world.task.submit(1, pairs, bad, [], [], ZERO)
    with boa.reverts("pair index out of range"):
        world.task.submit(1, [], entries, [], [], ZERO)


def test_submit_needs_a_member_signer(world: World) -> None:
    members = started(world)
    outsider = world.ids[9]
    with boa.reverts("signer is not a member"):
        submit(world, 1, messages(world, 1, [outsider]))
    world.task.leave(sender=members[2].address)
    with boa.reverts("signer is not a member"):
        submit(world, 1, messages(world, 1, members[2:]))
    # One bad entry rejects the whole batch.
    with boa.reverts("signer is not a member"):
        submit(world, 1, messages(world, 1, [members[0], outsider]))
    assert world.task.message_count(1) == 0


def test_submit_bad_signatures(world: World) -> None:
    members = started(world)
    (m,) = messages(world, 1, members[:1])
    pairs, _ = batch([m])
    # Another valid-looking signature recovers someone else.
    forged = (m.update, m.examples, 0, m.r, m.vs ^ 1)
    with boa.reverts("signer is not a member"):
        world.task.submit(1, pairs, [forged], [], [], ZERO)
    with boa.reverts("ecdsa: invalid signature"):
        world.task.submit(1, pairs, [(m.update, m.examples, 0, 0, m.vs)], [], [], ZERO)
    high_s = (m.update, m.examples, 0, m.r, HALF_N + 1)
    with boa.reverts("ecdsa: invalid signature `s` value"):
        world.task.submit(1, pairs, [high_s], [], [], ZERO)


def test_submit_signer_joined_during_this_round(world: World) -> None:
    started(world)
    late = world.ids[5]
    join(world, [late])
    with boa.reverts("signer joined during this round"):
        submit(world, 1, messages(world, 1, [late]))


def test_submit_examples_rules(world: World) -> None:
    members = started(world)
    a, b, _ = members
    with boa.reverts("examples without an update"):
        submit(world, 1, [sign(world, a, 1, ZERO, 5)])
    with boa.reverts("examples not in [1, 2**64)"):
        submit(world, 1, [sign(world, a, 1, update(1, a), 0)])
    with boa.reverts("examples not in [1, 2**64)"):
        submit(world, 1, [sign(world, a, 1, update(1, a), 2**64)])
    submit(world, 1, [sign(world, a, 1, update(1, a), 2**64 - 1), sign(world, b, 1)])
    assert [(e.update, e.examples) for e in events(world.task, "Submitted")] == [
        (update(1, a), 2**64 - 1),
        (ZERO, 0),  # an attestation-only message: no update, no examples
    ]


def test_duplicate_message_is_a_no_op(world: World) -> None:
    task = world.task
    members = started(world)
    msgs = messages(world, 1, members[:2])
    submit(world, 1, msgs)
    stake, count = task.submitted_stake(1), task.message_count(1)
    submit(world, 1, msgs, sender=world.accounts[9])
    assert events(task, "Submitted") == []
    assert (task.submitted_stake(1), task.message_count(1)) == (stake, count)
    # Twice in one batch: once.
    (third,) = messages(world, 1, members[2:])
    submit(world, 1, [third, third])
    assert len(events(task, "Submitted")) == 1
    assert task.message_count(1) == 3


def test_a_different_message_of_a_member_already_in_is_skipped(world: World) -> None:
    task = world.task
    members = started(world, 4)
    submit(world, 1, messages(world, 1, members))
    first = sign(world, members[0], 2, update(2, members[0]), 5, MODEL, MODEL)
    second = sign(world, members[0], 2, update(2, members[0]), 5, OTHER_MODEL, MODEL)
    submit(world, 2, [first])
    submit(world, 2, [second])  # evidence for `slash`, never counted
    assert events(task, "Submitted") == []
    assert task.tally(1, OTHER_MODEL, MODEL) == 0
    assert task.tally(1, MODEL, MODEL) == ETHER
    assert task.message_count(2) == 1


def test_no_updates_after_the_last_round(make_world: Any) -> None:
    w = make_world(max_rounds=1)
    members = started(w)
    submit(w, 1, messages(w, 1, members))
    pair = (MODEL, result_digest([], []))
    with boa.reverts("no updates after the last round"):
        submit(w, 2, [sign(w, members[0], 2, update(2, members[0]), 5, *pair)])
    submit(w, 2, messages(w, 2, members, pair))  # attestations only
    assert w.task.phase(1) == PHASE_FINALIZED
    assert w.task.finished()
    close(w, 2)
    with boa.reverts("task is over"):
        submit(w, 3, [])


# ---------------------------------------------------------------- attestation and quorum


def test_finalization_when_a_quorum_attests_one_pair(world: World) -> None:
    task = world.task
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    a, b, c = members
    submit(world, 2, messages(world, 2, [a], (MODEL, MODEL)))
    assert task.tally(1, MODEL, MODEL) == ETHER
    submit(world, 2, messages(world, 2, [b], (OTHER_MODEL, MODEL)))  # a split vote
    assert task.tally(1, OTHER_MODEL, MODEL) == ETHER
    assert task.phase(1) == PHASE_ATTEST
    assert events(task, "Finalized") == []
    assert task.quorum_stake(1) == 18 * ETHER // 10
    submit(world, 2, messages(world, 2, [c], (MODEL, MODEL)))
    (log,) = events(task, "Finalized")
    assert (log.round, log.model_digest, log.result_digest, log.stake) == (
        1,
        MODEL,
        MODEL,
        2 * ETHER,
    )
    assert task.phase(1) == PHASE_FINALIZED
    assert (task.model_digest(1), task.result_digest(1)) == (MODEL, MODEL)


def test_tally_keeps_what_batches_below_the_quorum_counted(world: World) -> None:
    """`tally` holds the stake of the batches that ended below the quorum; the batch that
    reaches it finalizes from memory, and later attestations count for nothing."""
    task = world.task
    members = started(world, 4)  # quorum: 2.4 of 4
    submit(world, 1, messages(world, 1, members))
    msgs = messages(world, 2, members, (MODEL, MODEL))
    submit(world, 2, msgs[:1])
    assert task.tally(1, MODEL, MODEL) == ETHER
    submit(world, 2, msgs[1:])  # the third attestation reaches 3/4 >= 60 %
    (log,) = events(task, "Finalized")
    assert log.stake == 3 * ETHER
    assert len(events(task, "Submitted")) == 3  # the fourth is in, too
    assert task.message_count(2) == 4
    assert task.tally(1, MODEL, MODEL) == ETHER


def test_round_one_messages_attest_nothing(world: World) -> None:
    members = started(world)
    submit(world, 1, messages(world, 1, members, (MODEL, MODEL)))
    assert events(world.task, "Finalized") == []
    assert world.task.tally(0, MODEL, MODEL) == 0
    assert world.task.phase(0) == PHASE_NOT_STARTED


def test_stake_weighted_quorum(world: World) -> None:
    big, small = world.ids[0], world.ids[1:3]
    join(world, [big], 3 * ETHER)
    join(world, small, ETHER)
    world.task.start()
    submit(world, 1, messages(world, 1, [big, *small]))
    submit(world, 2, messages(world, 2, [big], (MODEL, MODEL)))  # 3/5 = 60 %
    assert world.task.phase(1) == PHASE_FINALIZED


def test_member_joined_in_the_previous_round_does_not_count_for_its_quorum(
    world: World,
) -> None:
    task = world.task
    members = started(world)
    late = world.ids[5]
    join(world, [late])  # during round 1: eligible from round 2
    submit(world, 1, messages(world, 1, members))
    assert task.round_stake(2) == 0  # round 2 not open yet
    submit(world, 2, messages(world, 2, [late, members[0]], (MODEL, MODEL)))
    assert [e.member for e in events(task, "Submitted")] == [late.address, members[0].address]
    assert task.tally(1, MODEL, MODEL) == ETHER  # only the member eligible in round 1
    assert task.round_stake(2) == 4 * ETHER
    assert task.phase(1) == PHASE_ATTEST
    submit(world, 2, messages(world, 2, members[1:2], (MODEL, MODEL)))
    (log,) = events(task, "Finalized")
    assert log.stake == 2 * ETHER


def test_leaving_does_not_lower_the_quorum(world: World) -> None:
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    quorum = world.task.quorum_stake(1)
    world.task.leave(sender=members[2].address)
    assert world.task.quorum_stake(1) == quorum
    with boa.reverts("signer is not a member"):
        submit(world, 2, messages(world, 2, members[2:], (MODEL, MODEL)))
    submit(world, 2, messages(world, 2, members[:1], (MODEL, MODEL)))
    assert world.task.phase(1) == PHASE_ATTEST  # 1 of 3: no quorum
    assert world.task.round_members(2) == 2


def test_failure_is_emitted_when_the_round_after_next_opens(world: World) -> None:
    task = world.task
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    submit(world, 2, messages(world, 2, members[:1], (MODEL, MODEL)))
    close(world, 2)
    assert task.phase(1) == PHASE_FAILED
    submit(world, 3, messages(world, 3, members[:1]))
    assert [e.round for e in events(task, "Skipped")] == [1]
    assert task.model_digest(1) == ZERO
    # A failed round pays nothing.
    with boa.reverts("round not finalized, or already distributed"):
        task.distribute(1, [], [], ZERO)


def test_close_fails_an_unattested_last_round(make_world: Any) -> None:
    w = make_world(max_rounds=1)
    task = w.task
    members = started(w)
    with boa.reverts("current round still open"):
        task.close()
    submit(w, 1, messages(w, 1, members))
    with boa.reverts("nothing to close"):
        task.close()  # round 1 closed: it attests nothing
    submit(w, 2, messages(w, 2, members[:1], (MODEL, MODEL)))
    with boa.reverts("current round still open"):
        task.close()
    assert not task.finished()
    close(w, 2)
    assert task.phase(1) == PHASE_FAILED
    task.close(sender=w.accounts[9])  # anyone
    assert [e.round for e in events(task, "Skipped")] == [1]
    assert task.finished()
    with boa.reverts("nothing to close"):
        task.close()


def test_close_mid_task_fails_once(world: World) -> None:
    task = world.task
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    submit(world, 2, messages(world, 2, members[:1], (MODEL, MODEL)))
    close(world, 2)
    task.close()
    assert [e.round for e in events(task, "Skipped")] == [1]
    submit(world, 3, messages(world, 3, members))
    assert events(task, "Skipped") == []  # not twice
    assert task.phase(1) == PHASE_FAILED


def test_nothing_to_close_once_finalized(world: World) -> None:
    members = started(world)
    finalize_round_1(world, members)
    close(world, 2)
    with boa.reverts("nothing to close"):
        world.task.close()


def test_a_whole_task_finishes(world: World) -> None:
    task = world.task
    members = started(world, 5)
    previous: tuple[list[str], list[int]] = ([], [])
    for rnd in range(1, MAX_ROUNDS + 2):
        if rnd > 1:
            close(world, rnd - 1)
        pair = (ZERO, ZERO)
        if rnd > 1:
            previous = sort_result([m.address for m in members], [rnd, 1, 1, 1, 1])
            pair = (bytes([rnd]) * 32, result_digest(*previous))
        assert not task.finished()
        submit(world, rnd, messages(world, rnd, members, pair), *previous)
        if rnd > 1:
            assert task.phase(rnd - 1) == PHASE_FINALIZED
            assert task.model_digest(rnd - 1) == bytes([rnd]) * 32
            assert task.distributed(rnd - 1)
    assert task.finished()
    assert task.current_round() == MAX_ROUNDS + 1
    assert task.total_earned() <= MAX_ROUNDS * REWARD
    assert task.total_earned() == sum(task.earned_of(m.address) for m in members)
    assert boa.env.get_balance(task.address) == 5 * ETHER


def test_rounds_older_than_the_ring_keep_only_their_outcome(make_world: Any) -> None:
    """A round's state lives in a ring of 8 slots: once round r + 8 opened, round r keeps
    its phase (finalized or failed) and its events, not its digests, nor its payment."""
    w = make_world(max_rounds=12)
    task = w.task
    members = started(w)
    submit(w, 1, messages(w, 1, members))
    submit(w, 2, messages(w, 2, members[:1], (MODEL, MODEL)))  # round 1 will fail
    close(w, 2)
    for rnd in range(3, 11):
        close(w, rnd - 1)
        submit(w, rnd, messages(w, rnd, members, (bytes([rnd]) * 32, result_digest([], []))))
        assert task.phase(rnd - 1) == PHASE_FINALIZED
    assert task.current_round() == 10
    assert (task.phase(1), task.phase(2)) == (PHASE_FAILED, PHASE_FINALIZED)
    assert task.model_digest(2) == task.result_digest(2) == ZERO  # slot reused by round 10
    assert (task.round_start(2), task.closes_at(2), task.round_stake(2)) == (0, 0, 0)
    assert (task.message_count(2), task.submitted_stake(2), task.round_members(2)) == (0, 0, 0)
    with boa.reverts("round not finalized, or already distributed"):
        task.distribute(2, [], [], ZERO)  # too late: never paid
    assert task.model_digest(3) == bytes([4]) * 32  # still in the ring
    assert task.result_digest(3) == result_digest([], [])
    task.distribute(3, [], [], ZERO)
    assert task.distributed(3)


def test_a_pair_listed_twice_in_a_batch_cannot_split_the_quorum(world: World) -> None:
    task = world.task
    members = started(world, 4)  # quorum: 2.4 of 4
    submit(world, 1, messages(world, 1, members))
    msgs = messages(world, 2, members[:3], (MODEL, MODEL))
    pairs = [(MODEL, MODEL)] * 3
    entries = [(m.update, m.examples, i, m.r, m.vs) for i, m in enumerate(msgs)]
    try:
        task.submit(2, pairs, entries, [], [], ZERO)
    except boa.BoaError:
        return  # refusing such a batch would do as well
    # 3 of 4 attested (MODEL, MODEL): round 1 is final (the contract counts 1 and fails it).
    assert task.phase(1) == PHASE_FINALIZED


# ---------------------------------------------------------------- rewards


def test_submit_pays_the_finalized_round_pro_rata(world: World) -> None:
    task = world.task
    members = started(world)
    contributors, scores = finalize_round_1(world, members, [1, 2, 4])
    expected = {a: REWARD * s // 7 for a, s in zip(contributors, scores, strict=True)}
    (dist,) = events(task, "Distributed")
    assert (dist.round, dist.total) == (1, sum(expected.values()))
    assert (list(dist.contributors), list(dist.scores)) == (contributors, scores)
    assert task.distributed(1)
    for a, amount in expected.items():
        assert task.earned_of(a) == amount
        assert world.token.balanceOf(a) == 0  # credited, not minted: see claim
    assert task.total_earned() == sum(expected.values()) == REWARD - 1  # rounded down
    assert world.token.totalSupply() == 0


def test_submit_pays_a_round_finalized_by_an_earlier_batch(world: World) -> None:
    task = world.task
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    result = sort_result([m.address for m in members], [1, 1, 2])
    pair = (MODEL, result_digest(*result))
    submit(world, 2, messages(world, 2, members[:2], pair))
    assert task.phase(1) == PHASE_FINALIZED
    assert not task.distributed(1)
    submit(world, 2, messages(world, 2, members[2:], pair), *result)
    assert task.distributed(1)
    assert task.total_earned() == REWARD


def test_submit_with_a_wrong_result_pays_nothing(world: World) -> None:
    task = world.task
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    contributors, scores = sort_result([m.address for m in members], [1, 1, 1])
    pair = (MODEL, result_digest(contributors, scores))
    msgs = messages(world, 2, members, pair)
    submit(world, 2, msgs[:2], contributors, [1, 1, 2])  # finalizes; the result is wrong
    assert task.phase(1) == PHASE_FINALIZED
    assert events(task, "Distributed") == []
    assert not task.distributed(1)
    submit(world, 2, msgs[2:], contributors, scores[:2])  # lengths differ: ignored too
    assert not task.distributed(1)
    task.distribute(1, contributors, scores, ZERO)
    assert task.distributed(1)


def test_distribute_pro_rata(world: World) -> None:
    task = world.task
    members = started(world)
    contributors, scores = finalize_round_1(world, members, [1, 2, 4], pay=False)
    assert not task.distributed(1)
    task.distribute(1, contributors, scores, ZERO, sender=world.accounts[9])  # anyone
    expected = {a: REWARD * s // 7 for a, s in zip(contributors, scores, strict=True)}
    (dist,) = events(task, "Distributed")
    assert (dist.round, dist.total) == (1, sum(expected.values()))
    assert (list(dist.contributors), list(dist.scores)) == (contributors, scores)
    assert dist.transcript == ZERO
    assert {a: task.earned_of(a) for a in contributors} == expected
    assert task.total_earned() == sum(expected.values())
    assert task.distributed(1)


def test_distribute_not_finalized_or_twice(world: World) -> None:
    task = world.task
    members = started(world)
    with boa.reverts("round not finalized, or already distributed"):
        task.distribute(1, [], [], ZERO)
    submit(world, 1, messages(world, 1, members))
    result = sort_result([m.address for m in members], [1, 1, 1])
    msgs = messages(world, 2, members, (MODEL, result_digest(*result)))
    submit(world, 2, msgs[:2], *result)  # finalized and paid
    with boa.reverts("round not finalized, or already distributed"):
        task.distribute(1, *result, ZERO)
    with boa.reverts("round not finalized, or already distributed"):
        task.distribute(2, [], [], ZERO)
    with boa.reverts("round not finalized, or already distributed"):
        task.distribute(0, [], [], ZERO)
    # Not twice through submit either.
    submit(world, 2, msgs[2:], *result)
    assert events(task, "Distributed") == []
    assert task.total_earned() == REWARD // 3 * 3


def test_distribute_result_digest_mismatch(world: World) -> None:
    members = started(world)
    contributors, scores = finalize_round_1(world, members, [1, 2, 3], pay=False)
    with boa.reverts("result digest mismatch"):
        world.task.distribute(1, contributors, [1, 2, 4], ZERO)
    with boa.reverts("result digest mismatch"):
        world.task.distribute(1, contributors, scores[:2], ZERO)
    with boa.reverts("result digest mismatch"):
        world.task.distribute(1, contributors[:2], scores[:2], ZERO)


@pytest.mark.parametrize("kind", ["unsorted", "duplicate"])
def test_distribute_contributors_not_strictly_increasing(world: World, kind: str) -> None:
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    ordered, _ = sort_result([m.address for m in members], [1, 1, 1])
    contributors = list(reversed(ordered)) if kind == "unsorted" else [ordered[0], ordered[0]]
    scores = [1] * len(contributors)
    pair = (MODEL, result_digest(contributors, scores))
    submit(world, 2, messages(world, 2, members, pair))
    assert world.task.phase(1) == PHASE_FINALIZED
    with boa.reverts("contributors not strictly increasing"):
        world.task.distribute(1, contributors, scores, ZERO)


def test_score_bounds(world: World) -> None:
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    result = sort_result([m.address for m in members[:2]], [2**128 - 1, 2**128 - 1])
    submit(world, 2, messages(world, 2, members, (MODEL, result_digest(*result))))
    world.task.distribute(1, *result, ZERO)
    assert [world.task.earned_of(a) for a in result[0]] == [REWARD // 2, REWARD // 2]
    # One above: see test_hole5.


def test_a_result_with_a_transcript_is_paid_with_it(world: World) -> None:
    task = world.task
    members = started(world)
    transcript = b"\x7e" * 32
    submit(world, 1, messages(world, 1, members))
    result = sort_result([m.address for m in members], [1, 2, 4])
    pair = (MODEL, result_digest(*result, transcript))
    msgs = messages(world, 2, members, pair)
    # Without the transcript, or with another, the batch pays nothing (and does not revert).
    submit(world, 2, msgs[:2], *result)
    submit(world, 2, msgs[2:], *result, b"\x7f" * 32)
    assert task.phase(1) == PHASE_FINALIZED
    assert task.result_digest(1) == pair[1]
    assert events(task, "Distributed") == []
    with boa.reverts("result digest mismatch"):
        task.distribute(1, *result, ZERO)
    with boa.reverts("result digest mismatch"):
        task.distribute(1, *result, b"\x7f" * 32)
    task.distribute(1, *result, transcript)
    (dist,) = events(task, "Distributed")
    assert (dist.round, dist.transcript) == (1, transcript)
    assert (list(dist.contributors), list(dist.scores)) == result
    assert task.distributed(1)


def test_zero_scores_earn_nothing(world: World) -> None:
    task = world.task
    members = started(world)
    contributors, scores = finalize_round_1(world, members, [0, 3, 0], pay=False)
    task.distribute(1, contributors, scores, ZERO)
    (dist,) = events(task, "Distributed")
    assert (dist.total, list(dist.scores)) == (REWARD, scores)
    assert [task.earned_of(m.address) for m in members] == [0, REWARD, 0]


def test_all_zero_and_empty_results_pay_nothing(world: World) -> None:
    task = world.task
    members = started(world)
    finalize_round_1(world, members, [0, 0, 0])
    assert [(e.round, e.total) for e in events(task, "Distributed")] == [(1, 0)]
    assert task.distributed(1)
    # Round 2's result is empty: submit cannot carry it (nothing to pass), distribute can.
    close(world, 2)
    empty = (MODEL, result_digest([], []))
    submit(world, 3, messages(world, 3, members, empty))
    assert task.phase(2) == PHASE_FINALIZED
    assert not task.distributed(2)
    task.distribute(2, [], [], ZERO)
    (dist,) = events(task, "Distributed")
    assert (dist.round, dist.total, list(dist.contributors)) == (2, 0, [])
    assert task.total_earned() == 0


def test_slashed_contributor_earns_nothing(world: World) -> None:
    task = world.task
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    contributors, scores = sort_result([m.address for m in members], [1, 1, 2])
    pair = (MODEL, result_digest(contributors, scores))
    msgs = messages(world, 2, members, pair)
    submit(world, 2, msgs)
    cheat = members[0]
    other = sign(world, cheat, 2, update(2, cheat), 100, OTHER_MODEL, MODEL)
    task.slash(2, msgs[0].evidence(), other.evidence())
    task.distribute(1, contributors, scores, ZERO)
    (dist,) = events(task, "Distributed")
    expected = {a: REWARD * s // 4 for a, s in zip(contributors, scores, strict=True)}
    expected[cheat.address] = 0
    assert {a: task.earned_of(a) for a in contributors} == expected
    assert dist.total == task.total_earned() == sum(expected.values()) < REWARD


def test_claim_mints_to_the_account_once(world: World) -> None:
    task, token = world.task, world.token
    members = started(world)
    contributors, scores = finalize_round_1(world, members, [1, 1, 2])
    a = contributors[0]
    earned = task.earned_of(a)
    task.claim(a, sender=world.accounts[9])  # anyone; the tokens go to `a`
    (log,) = events(task, "Claimed")
    assert (log.member, log.amount) == (a, earned)
    assert token.balanceOf(a) == earned
    assert token.balanceOf(world.accounts[9]) == 0
    assert task.claimed_of(a) == earned
    assert task.total_claimed() == earned
    with boa.reverts("nothing to claim"):
        task.claim(a)
    with boa.reverts("nothing to claim"):
        task.claim(world.accounts[9])
    # Round 2 pays again: only the difference is minted.
    close(world, 2)
    pair = (MODEL, result_digest(contributors, scores))
    submit(world, 3, messages(world, 3, members, pair), contributors, scores)
    task.claim(a)
    assert token.balanceOf(a) == task.earned_of(a) == task.claimed_of(a) == 2 * earned
    assert task.total_claimed() == 2 * earned
    assert token.totalSupply() == task.total_claimed()


def test_claim_needs_the_minter_role(world: World) -> None:
    members = started(world)
    contributors, _ = finalize_round_1(world, members)
    world.token.set_minter(world.task.address, False)
    with boa.reverts("erc20: access is denied"):
        world.task.claim(contributors[0])
    assert world.task.claimed_of(contributors[0]) == 0


# ---------------------------------------------------------------- evidence and slashing


def test_slash_the_same_message_twice_reverts(world: World) -> None:
    members = started(world)
    (m,) = messages(world, 1, members[:1])
    with boa.reverts("the messages are the same"):
        world.task.slash(1, m.evidence(), m.evidence())
    # Even with another signature over it: the content is what counts.
    with boa.reverts("the messages are the same"):
        world.task.slash(1, m.evidence(), (*m.evidence()[:4], 0, 0))


def test_slash_different_signers_reverts(world: World) -> None:
    a, b, _ = started(world)
    ma = sign(world, a, 1, update(1, a), 5)
    mb = sign(world, b, 1, update(1, b), 5)
    with boa.reverts("different signers"):
        world.task.slash(1, ma.evidence(), mb.evidence())
    # A member's messages of two rounds are not evidence either.
    later = sign(world, a, 2, update(2, a), 5)
    with boa.reverts("different signers"):
        world.task.slash(1, ma.evidence(), later.evidence())


def test_slash_two_messages_for_one_round(world: World) -> None:
    task = world.task
    stake = 2 * ETHER + 9
    cheat = world.ids[0]
    join(world, [cheat], stake)
    join(world, world.ids[1:3])
    task.start()
    a = sign(world, cheat, 1, update(1, cheat), 5)
    b = sign(world, cheat, 1, update(1, cheat), 6)  # never submitted: still evidence
    submit(world, 1, [a])
    hunter = world.accounts[9]
    before = (boa.env.get_balance(hunter), boa.env.get_balance(world.treasury))
    held = boa.env.get_balance(task.address)
    task.slash(1, a.evidence(), b.evidence(), sender=hunter)
    share = stake * 1000 // 10000
    assert share == stake // 10
    assert stake - share == 18 * ETHER // 10 + 9
    (eq,) = events(task, "Equivocated")
    (log,) = events(task, "Slashed")
    ha = task.message_hash(1, a.update, a.examples, ZERO, ZERO)
    hb = task.message_hash(1, b.update, b.examples, ZERO, ZERO)
    assert (eq.round, eq.member, eq.first, eq.second) == (1, cheat.address, ha, hb)
    assert (log.member, log.amount, log.submitter, log.share) == (
        cheat.address,
        stake,
        hunter,
        share,
    )
    assert boa.env.get_balance(hunter) == before[0] + share
    assert boa.env.get_balance(world.treasury) == before[1] + stake - share
    assert boa.env.get_balance(task.address) == held - stake
    assert task.status_of(cheat.address) == STATUS_SLASHED
    assert not task.is_member(cheat.address)
    assert task.stake_of(cheat.address) == 0
    assert cheat.address not in task.members()
    assert task.active_stake() == 2 * ETHER
    assert task.total_slashed() == stake
    # Its message already counted stays counted; later ones are refused.
    assert task.message_count(1) == 1
    assert task.submitted_stake(1) == stake
    with boa.reverts("signer is not a member"):
        submit(world, 1, [sign(world, cheat, 1, ZERO, 0, MODEL, MODEL)])
    with boa.reverts("no stake to slash"):
        task.slash(1, a.evidence(), b.evidence())
    with boa.reverts("slashed"):
        task.join("again", b"", sender=cheat.address, value=ETHER)


def test_slash_a_member_that_left_during_its_cooldown(world: World) -> None:
    task = world.task
    members = started(world)
    leaver = members[2]
    a = sign(world, leaver, 1, update(1, leaver), 5)
    b = sign(world, leaver, 1, update(1, leaver), 7)
    submit(world, 1, [a])
    task.leave(sender=leaver.address)
    boa.env.time_travel(seconds=WINDOW + COOLDOWN - 1)
    before = boa.env.get_balance(world.treasury)
    task.slash(1, a.evidence(), b.evidence(), sender=world.accounts[9])
    assert boa.env.get_balance(world.accounts[9]) == 1000 * ETHER + ETHER // 10
    assert boa.env.get_balance(world.treasury) == before + ETHER - ETHER // 10
    assert task.status_of(leaver.address) == STATUS_SLASHED
    assert task.withdraw_after(leaver.address) == 0
    assert task.active_stake() == 2 * ETHER  # unchanged: it left already
    assert task.member_count() == 2
    boa.env.time_travel(seconds=1)
    with boa.reverts("nothing to withdraw"):
        task.withdraw(sender=leaver.address)


def test_nothing_to_slash(world: World) -> None:
    task = world.task
    members = started(world)
    stranger = world.ids[9]
    a = sign(world, stranger, 1, update(1, stranger), 5)
    b = sign(world, stranger, 1, update(1, stranger), 6)
    with boa.reverts("no stake to slash"):
        task.slash(1, a.evidence(), b.evidence())
    # After the withdrawal there is nothing left to take.
    leaver = members[0]
    a = sign(world, leaver, 1, update(1, leaver), 5)
    b = sign(world, leaver, 1, update(1, leaver), 6)
    task.leave(sender=leaver.address)
    boa.env.time_travel(seconds=WINDOW + COOLDOWN)
    task.withdraw(sender=leaver.address)
    with boa.reverts("no stake to slash"):
        task.slash(1, a.evidence(), b.evidence())


REFUSER = """
# pragma version ~=0.4.3
@external
@payable
def __default__():
    raise "no thanks"
"""


def test_a_treasury_that_refuses_cannot_block_slashing(make_world: Any) -> None:
    refuser = boa.loads(REFUSER)
    world = make_world(treasury=refuser.address)
    task = world.task
    members = started(world)
    cheat = members[0]
    a = sign(world, cheat, 1, update(1, cheat), 5)
    b = sign(world, cheat, 1, update(1, cheat), 6)
    task.slash(1, a.evidence(), b.evidence(), sender=world.accounts[9])
    assert task.status_of(cheat.address) == STATUS_SLASHED
    owed = ETHER - ETHER // 10
    assert task.treasury_owed() == owed
    assert boa.env.get_balance(task.address) == 2 * ETHER + owed
    with boa.reverts():
        task.pay_treasury()  # still refused: nothing is lost
    assert task.treasury_owed() == owed


def test_pay_treasury_with_nothing_owed_reverts(world: World) -> None:
    with boa.reverts("nothing owed"):
        world.task.pay_treasury()


def test_evidence_from_before_a_membership_does_not_slash_it(world: World) -> None:
    """A member that left, withdrew and joined again answers only for its new membership."""
    task = world.task
    members = started(world)
    member = members[0]
    a = sign(world, member, 1, update(1, member), 5)
    b = sign(world, member, 1, update(1, member), 6)
    task.leave(sender=member.address)
    boa.env.time_travel(seconds=WINDOW + COOLDOWN)
    task.withdraw(sender=member.address)
    task.join("again", b"", sender=member.address, value=ETHER)
    assert task.first_round_of(member.address) == 2
    with boa.reverts("offence before this membership"):
        task.slash(1, a.evidence(), b.evidence())


def test_slashed_members_unclaimed_reward_is_forfeit(world: World) -> None:
    task, token = world.task, world.token
    members = started(world)
    finalize_round_1(world, members, [1, 1, 2])
    cheat = members[0]
    earned = task.earned_of(cheat.address)
    assert earned > 0
    a = sign(world, cheat, 3, update(3, cheat), 1)
    b = sign(world, cheat, 3, update(3, cheat), 2)
    task.slash(3, a.evidence(), b.evidence())
    assert task.earned_of(cheat.address) == earned  # recorded, never minted
    with boa.reverts("slashed"):
        task.claim(cheat.address)
    assert token.balanceOf(cheat.address) == 0
    # The others claim as usual.
    task.claim(members[1].address)
    assert token.balanceOf(members[1].address) == task.earned_of(members[1].address)


# ---------------------------------------------------------------- The six holes of ledger v1


def test_hole1_an_update_digest_is_bound_to_its_signer(world: World) -> None:
    """A copier cannot take another member's update: the digest and the example count are
    inside the message its signer signed. Re-signing the victim's digest makes it the
    copier's own commitment, and only while the round is open (the blob is served only once
    it closed)."""
    task = world.task
    victim, copier, third = started(world)
    theirs = sign(world, victim, 1, update(1, victim), 100)
    # Whoever sends the victim's message, it is the victim's.
    submit(world, 1, [theirs], sender=copier.address)
    (log,) = events(task, "Submitted")
    assert (log.member, log.update) == (victim.address, update(1, victim))
    # Changing the example count (or the digest) in the entry changes the recovered signer.
    pairs, _ = batch([theirs])
    for bad in (
        (theirs.update, 10**6, 0, theirs.r, theirs.vs),
        (update(1, copier), theirs.examples, 0, theirs.r, theirs.vs),
    ):
        with boa.reverts("signer is not a member"):
            task.submit(1, pairs, [bad], [], [], ZERO)
    # The copier's own message with the victim's digest is the copier's commitment...
    copied = sign(world, copier, 1, update(1, victim), 100)
    submit(world, 1, [copied])
    (log,) = events(task, "Submitted")
    assert (log.member, log.update) == (copier.address, update(1, victim))
    assert task.last_round_of(copier.address) == 1
    # ...and once the round closed (the blob is out) a copy is too late.
    close(world, 1)
    late = sign(world, third, 1, update(1, victim), 100)
    with boa.reverts("round closed"):
        submit(world, 1, [late])
    assert task.last_round_of(third.address) == 0


def test_hole2_the_same_message_twice_never_slashes(world: World) -> None:
    """A node that restarts and submits its message again changes nothing, and its two
    copies are no evidence: signing is deterministic, and the same content is never two
    messages."""
    task = world.task
    members = started(world)
    honest = members[0]
    first = sign(world, honest, 1, update(1, honest), 42)
    again = sign(world, honest, 1, update(1, honest), 42)  # after the restart
    assert (first.r, first.vs) == (again.r, again.vs)
    submit(world, 1, [first])
    count, stake = task.message_count(1), task.submitted_stake(1)
    submit(world, 1, [again], sender=world.accounts[9])
    assert events(task, "Submitted") == []
    assert (task.message_count(1), task.submitted_stake(1)) == (count, stake)
    with boa.reverts("the messages are the same"):
        task.slash(1, first.evidence(), again.evidence())
    assert task.status_of(honest.address) == STATUS_ACTIVE
    assert task.stake_of(honest.address) == ETHER


def test_hole3_attest_and_leave_cannot_escape_the_evidence(world: World) -> None:
    """A member that attests and leaves at once keeps its stake locked for window +
    cooldown, and evidence brought meanwhile slashes it."""
    task = world.task
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    cheat = members[0]
    pair = (MODEL, result_digest([], []))
    attest = sign(world, cheat, 2, update(2, cheat), 100, *pair)
    submit(world, 2, [attest, *messages(world, 2, members[1:2], pair)])
    assert task.phase(1) == PHASE_FINALIZED
    task.leave(sender=cheat.address)
    boa.env.time_travel(seconds=WINDOW)
    with boa.reverts("cooldown not over"):
        task.withdraw(sender=cheat.address)
    boa.env.time_travel(seconds=COOLDOWN - 1)
    with boa.reverts("cooldown not over"):
        task.withdraw(sender=cheat.address)
    # Its conflicting attestation, gossiped to another member, is evidence.
    conflicting = sign(world, cheat, 2, update(2, cheat), 100, OTHER_MODEL, pair[1])
    task.slash(2, attest.evidence(), conflicting.evidence(), sender=members[1].address)
    (log,) = events(task, "Slashed")
    assert (log.member, log.amount) == (cheat.address, ETHER)
    boa.env.time_travel(seconds=1)
    with boa.reverts("nothing to withdraw"):
        task.withdraw(sender=cheat.address)
    assert task.phase(1) == PHASE_FINALIZED  # its counted attestation stays counted


def test_hole4_no_rounds_after_max_rounds_and_earned_is_capped(make_world: Any) -> None:
    """Round max_rounds + 1 carries attestations only, no round comes after it, and the
    total earned is at most max_rounds * reward_per_round."""
    w = make_world(max_rounds=2)
    task = w.task
    members = started(w)
    result = sort_result([m.address for m in members], [1, 1, 1])
    pair = (MODEL, result_digest(*result))
    submit(w, 1, messages(w, 1, members))
    submit(w, 2, messages(w, 2, members, pair), *result)
    close(w, 2)
    with boa.reverts("no updates after the last round"):
        submit(w, 3, [sign(w, members[0], 3, update(3, members[0]), 5, *pair)])
    submit(w, 3, messages(w, 3, members, pair), *result)
    assert task.finished()
    close(w, 3)
    with boa.reverts("task is over"):
        submit(w, 4, [])
    with boa.reverts("task is over"):
        submit(w, 4, messages(w, 4, members, pair), *result)
    with boa.reverts("round not finalized, or already distributed"):
        task.distribute(3, *result, ZERO)  # round max_rounds + 1 is never finalized
    assert task.total_earned() == sum(task.earned_of(m.address) for m in members)
    assert task.total_earned() <= 2 * REWARD
    assert task.total_earned() == 2 * (REWARD // 3 * 3)


def test_hole5_an_oversized_score_blocks_nothing_else(world: World) -> None:
    """A finalized result with a score of 2**250 cannot be paid, and does not keep the next
    rounds from finalizing (the batch that carries the result goes through, unpaid)."""
    task = world.task
    members = started(world)
    submit(world, 1, messages(world, 1, members))
    bad = sort_result([m.address for m in members], [1, 2**250, 1])
    pair = (MODEL, result_digest(*bad))
    msgs = messages(world, 2, members, pair)
    submit(world, 2, msgs, *bad)
    assert task.phase(1) == PHASE_FINALIZED
    assert task.message_count(2) == len(members)
    with boa.reverts("score above 2**128 - 1"):
        task.distribute(1, *bad, ZERO)
    assert not task.distributed(1)
    # The next rounds finalize and pay as usual.
    good = sort_result([m.address for m in members], [1, 1, 2])
    close(world, 2)
    submit(world, 3, messages(world, 3, members, (MODEL, result_digest(*good))), *good)
    assert task.phase(2) == PHASE_FINALIZED
    assert task.distributed(2)
    assert task.total_earned() == REWARD


def test_hole6_a_message_for_another_task_or_chain_does_not_verify(
    world: World, deployers: tuple[Any, Any]
) -> None:
    """A message signed for another task (or chain) recovers another address here."""
    task = world.task
    members = started(world)
    other = deployers[1].deploy(*task_args(world.token.address, world.treasury))
    for m in members:
        other.join("x", b"", sender=m.address, value=ETHER)
    other.start()
    member = members[0]
    for_other = sign(world, member, 1, update(1, member), 5, task=other.address)
    other_chain = sign(world, member, 1, update(1, member), 5, chain_id=5)
    for foreign in (for_other, other_chain):
        with boa.reverts("signer is not a member"):
            submit(world, 1, [foreign])
    assert task.message_count(1) == 0
    # The recovered address differs: the domain (chain id, contract) is in the digest.
    signed = RoundMessage(round=1, update=update(1, member), examples=5).sign(
        member, CHAIN_ID, other.address
    )
    assert signed.recover(CHAIN_ID, other.address) == member.address
    assert signed.recover(CHAIN_ID, task.address) != member.address
    assert signed.recover(5, other.address) != member.address
    # On its own task it verifies.
    submit(world, 1, [for_other], task=other)
    assert [e.member for e in events(other, "Submitted")] == [member.address]


# ---------------------------------------------------------------- governance


GOVERNOR = boa.env.generate_address("governor")


def rules_of(rule_id: int = 2, quorum: int = 7000, min_stake: int = 2 * ETHER,
             allowlist: bool = False, reward: int = 3 * ETHER, access: int = ACCESS_PUBLIC,
             document: bytes = b"amended") -> tuple[Any, ...]:  # fmt: skip
    """`reconfigure`'s arguments (its rule params digest: the document's, reversed)."""
    params = hashlib.sha256(document[::-1]).digest()
    return rule_id, params, quorum, min_stake, allowlist, reward, access, document


def rules_view(args: Sequence[Any], from_round: int) -> tuple[Any, ...]:
    """What `rules_at` returns for rules set by `reconfigure(*args)`."""
    rule_id, params, quorum, min_stake, allowlist, reward, access, document = args
    digest = hashlib.sha256(document).digest()
    return rule_id, params, digest, quorum, min_stake, allowlist, reward, access, from_round


@pytest.fixture
def governed(make_world: Any) -> World:
    w: World = make_world(governor=GOVERNOR)
    return w


def test_reconfigure_is_the_governors_and_checked(world: World, governed: World) -> None:
    with boa.reverts("no governor"):
        world.task.reconfigure(*rules_of(), sender=GOVERNOR)
    task = governed.task
    assert task.governor() == GOVERNOR
    for sender in (governed.owner, governed.accounts[0]):
        with boa.reverts("not the governor"):
            task.reconfigure(*rules_of(), sender=sender)
    for change, reason in (
        ({"quorum": 5000}, "quorum not in (5000, 10000]"),
        ({"quorum": 10001}, "quorum not in (5000, 10000]"),
        ({"min_stake": 0}, "min stake is zero"),
        ({"min_stake": 2**96}, "min stake above 2**96 - 1"),
        ({"reward": 2**88 // MAX_ROUNDS + 1}, "total reward above 2**88 - 1"),
        ({"access": 3}, "unknown access policy"),
        ({"document": b""}, "config document is empty"),
    ):
        with boa.reverts(reason):
            task.reconfigure(*rules_of(**change), sender=GOVERNOR)
    assert events(task, "Configured") == []
    edge = rules_of(quorum=10000, min_stake=2**96 - 1, reward=(2**88 - 1) // MAX_ROUNDS,
                    document=b"x" * 8192)  # fmt: skip
    task.reconfigure(*edge, sender=GOVERNOR)
    (configured,) = events(task, "Configured")
    assert (configured.from_round, configured.document) == (1, b"x" * 8192)
    assert configured.config_digest == hashlib.sha256(b"x" * 8192).digest()
    assert task.rules_at(1) == rules_view(edge, 1)
    assert task.config_digest() == configured.config_digest


def test_views_follow_the_current_round(governed: World) -> None:
    task = governed.task
    members = started(governed, 3)
    args = rules_of(rule_id=3, quorum=9000, min_stake=5, allowlist=True, reward=7,
                    access=ACCESS_TOKEN_HOLDERS)  # fmt: skip
    task.reconfigure(*args, sender=GOVERNOR)
    assert task.rules_at(1)[-1] == 1
    assert task.rules_at(2) == rules_view(args, 2)
    current = (task.rule_id(), task.rule_params_digest(), task.config_digest(),
               task.quorum_bps(), task.min_stake(), task.allowlist_only(),
               task.reward_per_round(), task.access_policy())  # fmt: skip
    assert current == (1, RULE_PARAMS, CONFIG, 6000, ETHER, False, REWARD, ACCESS_MEMBERS)
    submit(governed, 1, messages(governed, 1, members))
    submit(governed, 2, messages(governed, 2, members))
    current = (task.rule_id(), task.rule_params_digest(), task.config_digest(),
               task.quorum_bps(), task.min_stake(), task.allowlist_only(),
               task.reward_per_round(), task.access_policy())  # fmt: skip
    assert current == rules_view(args, 2)[:-1]
    assert task.quorum_stake(2) == 3 * ETHER * 9000 // 10000
    assert task.quorum_stake(1) == -(-3 * ETHER * 6000 // 10000)


def test_rules_history_survives_many_changes(make_world: Any) -> None:
    """Changes in many rounds (some replaced before their round opened): `rules_at` answers
    for every round, also those older than the ring, and for rounds not open yet (the latest
    rules, a pending change included)."""
    rounds = 12
    w = make_world(governor=GOVERNOR, max_rounds=rounds)
    task = w.task
    started(w, 3)
    epochs = [(1, RULE_PARAMS, CONFIG, 6000, ETHER, False, REWARD, ACCESS_MEMBERS, 1)]

    def expected(r: int) -> tuple[Any, ...]:
        return next((e for e in reversed(epochs) if e[-1] <= r), epochs[0])

    for rnd in range(1, rounds + 1):
        if rnd % 3 != 0:  # a change from rnd + 1 (twice in rounds 1, 4, ...: replaced)
            for k in range(2 if rnd % 3 == 1 else 1):
                args = rules_of(quorum=6000 + 100 * rnd + k, reward=rnd * ETHER + k,
                                document=f"rules {rnd} {k}".encode())  # fmt: skip
                task.reconfigure(*args, sender=GOVERNOR)
                new = rules_view(args, rnd + 1)
                if epochs[-1][-1] == rnd + 1:
                    epochs[-1] = new
                else:
                    epochs.append(new)
        for r in range(0, rnd + 3):
            assert task.rules_at(r) == expected(r), (rnd, r)
        assert task.quorum_bps() == expected(rnd)[3]
        close(w, rnd)
        if rnd < rounds:
            task.submit(rnd + 1, [], [], [], [], ZERO, sender=w.submitter)  # opens rnd + 1
    assert len(epochs) == 9
    for r in range(0, rounds + 3):
        assert task.rules_at(r) == expected(r)


def test_each_round_is_paid_its_own_reward_across_changes(make_world: Any) -> None:
    w = make_world(governor=GOVERNOR, max_rounds=12)
    task = w.task
    members = started(w, 3)
    rewards: dict[int, int] = {}
    results: dict[int, tuple[list[str], list[int]]] = {}
    for rnd in range(1, 10):
        rewards[rnd] = task.rules_at(rnd)[6]
        pair = (ZERO, ZERO)
        if rnd > 1:
            pair = (bytes([rnd]) * 32, result_digest(*results[rnd - 1]))
        submit(w, rnd, messages(w, rnd, members, pair))
        results[rnd] = sort_result([m.address for m in members], [1, 2, rnd])
        task.reconfigure(*rules_of(reward=(rnd + 1) * ETHER + 1), sender=GOVERNOR)
        close(w, rnd)
    assert len(set(rewards.values())) == 9
    earned = dict.fromkeys((m.address for m in members), 0)
    for rnd in range(2, 9):  # rounds 2..8 are in the ring (current: 9)
        task.distribute(rnd, *results[rnd], ZERO)
        (paid,) = events(task, "Distributed")
        contributors, scores = results[rnd]
        amounts = [rewards[rnd] * x // sum(scores) for x in scores]
        assert paid.total == sum(amounts), rnd
        for c, amount in zip(contributors, amounts, strict=True):
            earned[c] += amount
    with boa.reverts("round not finalized, or already distributed"):
        task.distribute(1, *results[1], ZERO)  # older than the ring
    assert {a: task.earned_of(a) for a in earned} == earned


# ---------------------------------------------------------------- lineage


def test_lineage_chains_finalized_rounds_only(make_world: Any) -> None:
    w = make_world(max_rounds=6)
    task = w.task
    assert task.lineage() == (0, ZERO)
    members = started(w, 3)
    chained, last = ZERO, 0
    for rnd in range(1, 8):
        model = bytes([rnd]) * 32
        pair = (model, b"\x01" * 32) if rnd > 1 else (ZERO, ZERO)
        who = members[:1] if rnd in (3, 4) else members  # rounds 2 and 3 fail
        submit(w, rnd, messages(w, rnd, members if rnd == 1 else who, pair))
        if rnd > 1 and rnd not in (3, 4):
            chained, last = lineage_hash(chained, rnd - 1, model), rnd - 1
        assert task.lineage() == (last, chained), rnd
        close(w, rnd)
    with boa.reverts("nothing to close"):
        task.close()
    assert task.lineage() == (6, chained)
    assert [task.phase(r) for r in range(1, 7)] == [PHASE_FINALIZED, PHASE_FAILED, PHASE_FAILED,
                                                     PHASE_FINALIZED, PHASE_FINALIZED,
                                                     PHASE_FINALIZED]  # fmt: skip


def test_lineage_hash_is_the_contracts(world: World) -> None:
    hashes = boa.loads(LINEAGE)
    for previous, rnd, model in ((ZERO, 1, MODEL), (b"\x07" * 32, 2**32 - 1, OTHER_MODEL)):
        assert hashes.lineage_hash(previous, rnd, model) == lineage_hash(previous, rnd, model)


LINEAGE = """
# pragma version ~=0.4.3
@external
@pure
def lineage_hash(previous: bytes32, round: uint256, model: bytes32) -> bytes32:
    return keccak256(abi_encode(previous, round, model))
"""


def test_tallies_of_several_batches_add_up(world: World) -> None:
    """Batches below the quorum store their counts (the round is marked as tallied once);
    the next batches add to them, whichever pair they attest."""
    task = world.task
    members = started(world, 5)  # quorum: 3 of 5
    submit(world, 1, messages(world, 1, members))
    a = messages(world, 2, members[:4], (MODEL, MODEL))
    b = messages(world, 2, members[4:], (OTHER_MODEL, MODEL))
    submit(world, 2, a[:1])
    submit(world, 2, [a[1], *b])
    assert task.tally(1, MODEL, MODEL) == 2 * ETHER
    assert task.tally(1, OTHER_MODEL, MODEL) == ETHER
    assert task.phase(1) == PHASE_ATTEST
    submit(world, 2, a[2:3])
    (log,) = events(task, "Finalized")
    assert (log.round, log.stake) == (1, 3 * ETHER)
    assert task.lineage() == (1, lineage_hash(ZERO, 1, MODEL))


# ---------------------------------------------------------------- consent


def test_consent_events_and_nothing_stored(world: World) -> None:
    task = world.task
    a, b = world.accounts[:2]
    policy = b"p" * 2048
    task.join("x", policy, sender=a, value=ETHER)
    joined, consent = (e for e in task.get_logs() if type(e).__name__ in ("Joined", "Consent"))
    assert type(joined).__name__ == "Joined"
    assert (consent.member, consent.digest, consent.policy, consent.from_round) == (
        a,
        hashlib.sha256(policy).digest(),
        policy,
        1,
    )
    with boa.reverts():
        task.join("x", policy + b"p", sender=b, value=ETHER)  # over 2048 bytes
    task.join("x", b"", sender=b, value=ETHER)
    assert events(task, "Consent") == []
    with boa.reverts("not a member"):
        task.set_consent(b"q", sender=world.accounts[2])
    task.start()
    task.set_consent(b"", sender=b)
    (consent,) = events(task, "Consent")
    assert (consent.member, consent.digest, consent.policy, consent.from_round) == (b, ZERO, b"", 2)
    task.leave(sender=b)
    with boa.reverts("not a member"):
        task.set_consent(b"q", sender=b)


# ---------------------------------------------------------------- gas


def _tx_gas(task: Any, args: Sequence[Any]) -> int:
    """The last submit's execution gas plus its intrinsic cost (21000 + calldata)."""
    execution: int = task._computation.get_gas_used()
    data = task.submit.prepare_calldata(*args)
    return execution + 21000 + sum(16 if byte else 4 for byte in data)


def _new_transaction() -> None:
    """Start the next call as a transaction of its own. titanoboa never ends one: storage it
    touched stays warm, and every slot it wrote counts as written already in this transaction,
    so its figures would be about 5,000 gas per message below a chain's (a cold read, 2,100,
    and a first write, 2,900, of each member's record). Locking the changes is what a node
    does between transactions; it also drops titanoboa's snapshots, so only in an Env of its
    own."""
    boa.env.evm.vm.state.lock_changes()


@pytest.mark.parametrize(
    ("n", "per_member"),
    [
        (10, 40_000),
        (100, 20_000),
    ],
)
def test_gas_per_member_of_a_round(make_world: Any, n: int, per_member: int) -> None:
    """A round's batch (every member's update and attestation; from round 2 on the
    finalization of the previous round and its payment) costs on average at most `per_member`
    gas per member as a transaction, intrinsic cost and calldata included. (The task's first
    writes of its lineage and ring slots make round 2 the dearest: about 19,940 at 100
    members, against 19,140-19,620 for the next rounds; benchmarks/ledger.py measures whole
    runs.)"""
    ids = [Identity.from_seed(SEED, i) for i in range(n)]
    costs = []
    with boa.swap_env(boa.Env()):
        w = make_world(ids, max_participants=256)
        members = started(w, n)
        result: tuple[list[str], list[int]] = ([], [])
        for rnd in range(1, MAX_ROUNDS + 2):
            pair = (ZERO, ZERO)
            if rnd > 1:
                close(w, rnd - 1)
                result = sort_result([m.address for m in members], list(range(1, n + 1)))
                pair = (bytes([rnd]) * 32, result_digest(*result))
            pairs, entries = batch(messages(w, rnd, members, pair))
            args = [rnd, pairs, entries, list(result[0]), list(result[1]), ZERO]
            _new_transaction()
            w.task.submit(*args, sender=w.submitter)
            costs.append(_tx_gas(w.task, args))
            assert rnd == 1 or w.task.distributed(rnd - 1)
        assert w.task.finished()
    print(f"gas per member, {n} members, rounds 1-{MAX_ROUNDS + 1}:", [c // n for c in costs])
    assert sum(costs) / len(costs) <= per_member * n
