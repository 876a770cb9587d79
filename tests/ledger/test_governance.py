"""fedledger.ledger.governance on the embedded chain: deployment, the Governance and ModelNFT
handles, their errors (fedledger's only), and the gas of every call (docs/governance.md)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import vyper
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.contract import Contract

from fedledger.commit.cid import cid_from_digest
from fedledger.errors import ConfigError, LedgerError, TransactionReverted
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import EmbeddedChain
from fedledger.ledger.governance import (
    MAX_CALL,
    MAX_MINT,
    STATE_ACTIVE,
    STATE_DEFEATED,
    STATE_EXECUTED,
    STATE_QUEUED,
    STATE_SUCCEEDED,
    STATE_UNKNOWN,
    VOTE_ABSTAIN,
    VOTE_AGAINST,
    VOTE_FOR,
    Governance,
    ModelNFT,
    deploy_governance,
    deploy_model_nft,
    lineage_hash,
    proposal_id,
)

ETHER = 10**18
PERIOD = 100
DELAY = 50
QUORUM_BPS = 4000
LINEAGE_TASK = Path(__file__).resolve().parent / "lineage_task.vy"

#: Gas used by each call, filled by the tests (printed with -s by the last test).
GAS: dict[str, int] = {}


@dataclass
class World:
    chain: EmbeddedChain
    owner: LocalAccount
    holders: list[LocalAccount]  # 60, 30 and 10 tokens
    outsider: LocalAccount  # no tokens
    token: Contract
    timelock: str
    governor: str

    def governance(self, account: LocalAccount | None) -> Governance:
        return Governance(self.chain, self.governor, account)


def calldata(contract: Contract, name: str, *args: Any) -> bytes:
    return bytes(HexBytes(contract.encode_abi(name, args=list(args))))


@pytest.fixture
def world() -> World:
    chain = EmbeddedChain(accounts=6)
    owner, a, b, c, outsider = chain.accounts()[:5]
    art = load_artifact("RewardToken")
    token = chain.deploy(art["abi"], art["bytecode"], "fedledger reward", "FLR", 18,
                         "fedledger reward", "1", sender=owner)  # fmt: skip
    for holder, amount in ((a, 60), (b, 30), (c, 10)):
        chain.transact(token.functions.mint(holder.address, amount * ETHER), sender=owner)
    addresses = deploy_governance(chain, token=str(token.address), owner=owner,
                                  voting_period=PERIOD, quorum_bps=QUORUM_BPS,
                                  timelock_delay=DELAY)  # fmt: skip
    # The timelock may mint: proposals can pay from the token.
    chain.transact(token.functions.set_minter(addresses.timelock, True), sender=owner)
    return World(chain, owner, [a, b, c], outsider, token, addresses.timelock,
                 addresses.governor)  # fmt: skip


def test_deploy_governance_hands_the_timelock_to_the_governor(world: World) -> None:
    chain = world.chain
    timelock = chain.contract(world.timelock, load_artifact("Timelock")["abi"])
    gov = world.governance(None)
    assert gov.token == world.token.address
    assert gov.timelock == world.timelock
    assert (gov.voting_period(), gov.quorum_bps(), gov.proposal_threshold()) == (
        PERIOD, QUORUM_BPS, 0,
    )  # fmt: skip
    assert gov.timelock_delay() == DELAY
    for role in ("PROPOSER_ROLE", "CANCELLER_ROLE", "EXECUTOR_ROLE"):
        role_id = chain.call(timelock.functions[role]())
        assert chain.call(timelock.functions.hasRole(role_id, world.governor))
        assert not chain.call(timelock.functions.hasRole(role_id, world.owner.address))
    # Nobody administers the timelock but itself: the deployer renounced its admin role.
    admin = chain.call(timelock.functions.DEFAULT_ADMIN_ROLE())
    assert not chain.call(timelock.functions.hasRole(admin, world.owner.address))
    assert chain.call(timelock.functions.hasRole(admin, world.timelock))


def test_deploy_governance_checks_its_arguments(world: World) -> None:
    token = str(world.token.address)
    good: dict[str, Any] = {"voting_period": 10, "quorum_bps": 1, "timelock_delay": 0}
    for field, bad in (("voting_period", 0), ("quorum_bps", 0), ("quorum_bps", 10_001),
                       ("timelock_delay", -1), ("proposal_threshold", -1),
                       ("voting_period", True)):  # fmt: skip
        with pytest.raises(ConfigError, match=field):
            deploy_governance(world.chain, token=token, owner=world.owner, **{**good, field: bad})
    with pytest.raises(LedgerError):  # not an address: web3's error, translated
        deploy_governance(world.chain, token="0x1234", owner=world.owner, **good)
    with pytest.raises(ConfigError, match="name"):
        deploy_model_nft(world.chain, task=token, owner=world.owner, name="x" * 26)


def test_a_proposal_from_vote_to_execution(world: World) -> None:
    chain = world.chain
    a, b, c = world.holders
    receiver = world.outsider.address
    data = calldata(world.token, "mint", receiver, 5 * ETHER)
    description = "pay 5 FLR to the data curator"
    target = str(world.token.address)
    proposed = world.governance(a).propose(target, data, description)
    GAS["propose (a 68-byte call)"] = proposed.gas_used
    pid = proposed.id
    assert pid == proposal_id(target, data, description)
    gov = world.governance(None)
    assert gov.state(pid) == STATE_ACTIVE
    GAS["vote (first for)"] = world.governance(a).vote(pid, VOTE_FOR).gas_used
    GAS["vote (first against)"] = world.governance(b).vote(pid, VOTE_AGAINST).gas_used
    GAS["vote (first abstain)"] = world.governance(c).vote(pid, VOTE_ABSTAIN).gas_used
    assert gov.has_voted(pid, a.address)
    assert not gov.has_voted(pid, receiver)
    with pytest.raises(TransactionReverted) as info:
        world.governance(a).vote(pid, VOTE_FOR)
    assert info.value.reason == "already voted"
    with pytest.raises(TransactionReverted) as info:
        world.governance(world.outsider).vote(pid, VOTE_FOR)
    assert info.value.reason == "no votes"
    with pytest.raises(TransactionReverted) as info:
        world.governance(a).queue(target, data, description)
    assert info.value.reason == "proposal has not succeeded"

    chain.time_travel(PERIOD + 1)
    assert gov.state(pid) == STATE_SUCCEEDED
    GAS["queue"] = world.governance(b).queue(target, data, description).gas_used
    assert gov.state(pid) == STATE_QUEUED
    with pytest.raises(TransactionReverted) as info:
        world.governance(b).execute(target, data, description)
    assert info.value.reason == "timelock delay not over"
    chain.time_travel(DELAY)
    GAS["execute (a mint)"] = world.governance(c).execute(target, data, description).gas_used
    assert gov.state(pid) == STATE_EXECUTED
    assert chain.call(world.token.functions.balanceOf(receiver)) == 5 * ETHER

    (p,) = gov.proposals()
    assert (p.id, p.proposer, p.target, p.data, p.description) == (
        pid, a.address, target, data, description,
    )  # fmt: skip
    assert (p.for_votes, p.against_votes, p.abstain_votes) == (60 * ETHER, 30 * ETHER, 10 * ETHER)
    assert p.quorum == 40 * ETHER  # 40 % of the supply at the snapshot (100)
    assert p.snapshot == p.block - 1
    assert p.deadline == chain.block_timestamp(p.block) + PERIOD
    assert (p.state, p.state_name, p.eta) == (STATE_EXECUTED, "executed", 1)
    votes = gov.votes_of(pid)
    assert [(v.voter, v.support, v.weight) for v in votes] == [
        (a.address, VOTE_FOR, 60 * ETHER),
        (b.address, VOTE_AGAINST, 30 * ETHER),
        (c.address, VOTE_ABSTAIN, 10 * ETHER),
    ]
    assert gov.votes_of(pid + 1) == []
    assert gov.votes(a.address) == 60 * ETHER
    assert gov.votes(receiver) == 5 * ETHER
    assert gov.votes(receiver, p.block) == 0


def test_a_defeated_proposal_and_a_cancel(world: World) -> None:
    a, b, c = world.holders
    target = world.timelock
    timelock = world.chain.contract(target, load_artifact("Timelock")["abi"])
    data = calldata(timelock, "update_delay", 1)
    pid = world.governance(c).propose(target, data, "shorter delay").id
    world.governance(c).vote(pid, VOTE_FOR)
    world.governance(b).vote(pid, VOTE_AGAINST)
    # A second proposal, withdrawn by its proposer before any vote.
    other = world.governance(a).propose(target, data, "shorter delay, again").id
    with pytest.raises(TransactionReverted) as info:
        world.governance(b).cancel(target, data, "shorter delay, again")
    assert info.value.reason == "not the proposer"
    GAS["cancel"] = world.governance(a).cancel(target, data, "shorter delay, again").gas_used
    world.chain.time_travel(PERIOD + 1)
    gov = world.governance(None)
    assert gov.state(pid) == STATE_DEFEATED
    assert [p.state_name for p in gov.proposals()] == ["defeated", "canceled"]
    assert gov.state(other + 1) == STATE_UNKNOWN
    with pytest.raises(TransactionReverted) as info:
        world.governance(a).queue(target, data, "shorter delay")
    assert info.value.reason == "proposal has not succeeded"


def test_a_large_proposal_goes_through_the_timelock(world: World) -> None:
    """A call of about a Task.reconfigure's size (an 8 KB document): the timelock takes it (its
    module's own functions stop at 1,024 bytes). The call here is the Governor's own propose,
    made by the timelock."""
    a, b, _ = world.holders
    governor = world.governance(a).contract
    inner = bytes(range(256)) * 32  # 8,192 bytes
    data = calldata(governor, "propose", world.timelock, inner, "the timelock's proposal" * 10)
    assert 8_484 < len(data) <= MAX_CALL  # a reconfigure with an 8 KB document: 8,484 bytes
    proposed = world.governance(a).propose(world.governor, data, "a proposal that proposes")
    GAS["propose (8.5 KB call)"] = proposed.gas_used
    pid = proposed.id
    world.governance(a).vote(pid, VOTE_FOR)
    world.chain.time_travel(PERIOD + 1)
    GAS["queue (8.5 KB call)"] = (
        world.governance(b).queue(world.governor, data, "a proposal that proposes").gas_used
    )
    world.chain.time_travel(DELAY + 1)
    result = world.governance(b).execute(world.governor, data, "a proposal that proposes")
    GAS["execute (8.5 KB call: a propose)"] = result.gas_used
    proposals = world.governance(None).proposals()
    assert [p.proposer for p in proposals] == [a.address, world.timelock]
    assert proposals[1].data == inner
    assert proposals[0].data == data


def test_handle_errors_are_fedledgers(world: World) -> None:
    a = world.holders[0]
    with pytest.raises(LedgerError, match="read-only"):
        world.governance(None).propose(world.timelock, b"", "x")
    with pytest.raises(ConfigError, match="support"):
        world.governance(a).vote(1, 3)
    with pytest.raises(ConfigError, match="data"):
        world.governance(a).propose(world.timelock, b"\x00" * (MAX_CALL + 1), "x")
    with pytest.raises(ConfigError, match="description"):
        world.governance(a).propose(world.timelock, b"", "é" * 513)
    with pytest.raises(TransactionReverted) as info:
        world.governance(a).vote(12345, VOTE_FOR)
    assert info.value.reason == "unknown proposal"
    with pytest.raises(TransactionReverted) as info:
        world.governance(a).propose("0x" + "00" * 20, b"", "x")
    assert info.value.reason == "target is the zero address"
    pid = world.governance(a).propose(world.timelock, b"", "x").id
    with pytest.raises(TransactionReverted) as info:
        world.governance(a).propose(world.timelock, b"", "x")
    assert info.value.reason == "proposal exists"
    assert world.governance(None).state(pid) == STATE_ACTIVE
    with pytest.raises(LedgerError):
        Governance(world.chain, "not an address", a)


# ---------------------------------------------------------------- the model NFT


def deploy_lineage_task(chain: EmbeddedChain, owner: LocalAccount) -> Contract:
    out = vyper.compile_code(LINEAGE_TASK.read_text(), output_formats=["abi", "bytecode"])
    return chain.deploy(out["abi"], out["bytecode"], sender=owner)


def test_model_nft_mints_the_lineage(world: World) -> None:
    chain, owner = world.chain, world.owner
    member, outsider = world.holders[0], world.outsider
    task = deploy_lineage_task(chain, owner)
    chain.transact(task.functions.set_status(member.address, 1), sender=owner)
    address = deploy_model_nft(chain, task=str(task.address), owner=owner)
    rounds = [1, 2, 4, 5, *range(7, 7 + MAX_MINT + 3)]  # 4 + 67 rounds, gaps too
    models = [hashlib.sha256(r.to_bytes(4, "big")).digest() for r in rounds]
    epsilons = [r * 1000 for r in rounds]
    for r, m in zip(rounds[:4], models[:4], strict=True):
        chain.transact(task.functions.finalize(r, m), sender=owner)
    assert chain.call(task.functions.lineage())[1] == lineage_hash(rounds[:4], models[:4])

    nft = ModelNFT(chain, address, member)
    assert nft.task == task.address
    assert nft.last_minted() == (0, b"\x00" * 32)
    with pytest.raises(TransactionReverted) as info:
        ModelNFT(chain, address, outsider).mint(rounds[:4], models[:4], epsilons[:4])
    assert info.value.reason == "not a member, owner or governor"
    with pytest.raises(TransactionReverted) as info:
        nft.mint(rounds[:3], models[:3], epsilons[:3])
    assert info.value.reason == "not the task's lineage"
    (first,) = nft.mint(rounds[:1] + rounds[1:4], models[:4], epsilons[:4])
    GAS["nft mint (4 rounds)"] = first.gas_used
    minted = nft.minted()
    assert [(t.round, t.model, t.parent, t.epsilon) for t in minted] == [
        (1, models[0], 0, 1000), (2, models[1], 1, 2000), (4, models[2], 2, 4000),
        (5, models[3], 4, 5000),
    ]  # fmt: skip
    assert {t.owner for t in minted} == {task.address}  # no governor: the task holds them
    assert [t.token_uri for t in minted] == ["ipfs://" + cid_from_digest(m) for m in models[:4]]
    assert nft.last_minted() == (5, lineage_hash(rounds[:4], models[:4]))

    # With a governor, later tokens are the governor's; a backlog longer than MAX_MINT takes
    # two transactions.
    chain.transact(task.functions.set_governor(world.timelock), sender=owner)
    for r, m in zip(rounds[4:], models[4:], strict=True):
        chain.transact(task.functions.finalize(r, m), sender=owner)
    results = ModelNFT(chain, address, owner).mint(rounds[4:], models[4:], epsilons[4:])
    assert len(results) == 2
    GAS[f"nft mint ({MAX_MINT} rounds)"] = results[0].gas_used
    GAS["nft mint (3 rounds)"] = results[1].gas_used
    minted = nft.minted()
    assert [t.round for t in minted] == rounds
    assert {t.owner for t in minted[4:]} == {world.timelock}
    assert minted[4].parent == 5
    assert nft.last_minted() == (rounds[-1], lineage_hash(rounds, models))
    with pytest.raises(ConfigError, match="rounds"):
        nft.mint([1], [], [])


def test_gas_figures() -> None:
    """Prints what the tests above measured (run with -s); docs/governance.md lists them."""
    for name, gas in sorted(GAS.items()):
        print(f"{name:40s} {gas:>10,}")
