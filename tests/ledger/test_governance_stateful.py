"""Random call sequences against RewardToken's votes, the Governor (with its Timelock) and
ModelNFT, each checked against a Python model.

Three hypothesis state machines; before every call the model predicts the outcome (the exact
revert reason, or success and its effects) and the call must agree:

- **checkpoints** (`CheckpointMachine`): mints, transfers, transferFroms, burns and burn_froms
  of random (also zero, too large, self-addressed) amounts over random block moves. At every
  past block, `getPastVotes` of every account is the model's balance at the end of that block
  and `getPastTotalSupply` the sum of the balances; `getVotes` is the balance; the number of
  checkpoints is the number of blocks in which a nonzero amount moved to or from the account;
  a lookup at the current block or later reverts ("future lookup").
- **proposals** (`GovernorMachine`): proposals (timelock delay changes, mints, payments from
  the timelock that fail while it holds too little), votes, cancels, queues and executions by
  random accounts, among token transfers, mints and clock moves. No account votes twice on a
  proposal; a vote weighs the voter's balance at the proposal's snapshot (tokens moved after it
  change nothing); every proposal's state, tallies and timelock operation are the model's; an
  execution runs only once the timelock delay (as it was at queue time) is over, and its effect
  (the delay, a balance) follows.
- **model NFT** (`NftMachine`): a stand-in task finalizes rounds (with gaps, sometimes more
  than a mint takes at once); members, non-members, the owner and the governor mint correct
  and corrupted chains; the governor transfers tokens. The NFT's lineage is always a prefix of
  the task's, every minted token's owner, model, parent and epsilon are the model's, and the
  supply is the number minted.

Every revert reason predicted is one of the contracts' (checked against their sources).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import boa
import pytest
import vyper
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from fedledger.commit.cid import cid_from_digest
from fedledger.ledger.artifacts import _snekmate_root, compile_contract, source_path
from fedledger.ledger.governance import (
    STATE_ACTIVE,
    STATE_CANCELED,
    STATE_DEFEATED,
    STATE_EXECUTED,
    STATE_QUEUED,
    STATE_SUCCEEDED,
    STATE_UNKNOWN,
    lineage_hash,
    proposal_id,
)

ZERO = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
LINEAGE_TASK = Path(__file__).resolve().parent / "lineage_task.vy"
STEPS = 25
# Sequences (examples) per machine: over 1,000 in all in the slow test.
EXAMPLES = {"checkpoints": 400, "governor": 350, "nft": 300}
QUICK_EXAMPLES = 25

#: How often each (function, outcome) happened: shows what the sequences covered.
OUTCOMES: Counter[str] = Counter()


def contract_reasons() -> frozenset[str]:
    """Every revert reason string in the governance contracts and the snekmate modules."""
    snekmate = _snekmate_root() / "snekmate"
    texts = [source_path(n).read_text() for n in ("RewardToken", "Governor", "Timelock",
                                                  "ModelNFT")]  # fmt: skip
    texts += [(snekmate / p).read_text() for p in (
        "tokens/erc20.vy", "tokens/erc721.vy", "governance/timelock_controller.vy",
        "auth/access_control.vy", "auth/ownable.vy",
    )]  # fmt: skip
    # `assert cond, "reason"`, `assert (...), "reason"` over lines, and `raise "reason"`.
    pattern = r'(?:assert [^#\n]*?,|\),|raise)\s*"([^"]+)"'
    found = {m for t in texts for m in re.findall(pattern, t)}
    return frozenset(found)


REASONS = contract_reasons()


def deploy_abi(abi: list[Any], bytecode: str, args: list[Any], name: str) -> Any:
    """Deploy from bytecode and wrap with the ABI (much faster calls in boa than a source-level
    contract)."""
    constructor = next((x for x in abi if x["type"] == "constructor"), None)
    types = [i["type"] for i in constructor["inputs"]] if constructor else []
    code = bytes.fromhex(bytecode.removeprefix("0x")) + abi_encode(types, args)
    address, _ = boa.env.deploy_code(bytecode=code)
    return boa.loads_abi(json.dumps(abi), name=name).at(address)


def deploy_source(name: str, args: list[Any]) -> Any:
    """A contract compiled from contracts/ (the source under test, not a stale artifact)."""
    artifact = compile_contract(name)
    return deploy_abi(artifact["abi"], artifact["bytecode"], args, name)


def block() -> int:
    return int(boa.env.evm.patch.block_number)


def now() -> int:
    return int(boa.env.evm.patch.timestamp)


class Machine(RuleBasedStateMachine):
    """What the machines share: a boa anchor per sequence, and predicted calls."""

    def __init__(self) -> None:
        super().__init__()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(boa.env.anchor())

    def teardown(self) -> None:
        OUTCOMES[f"{type(self).__name__}: sequences"] += 1
        try:
            self.final_checks()
        finally:
            self._stack.close()

    def final_checks(self) -> None:
        pass

    def expect(self, name: str, reason: str | None, call: Any) -> Any:
        """Make the call; it must revert with exactly `reason`, or succeed if that is None."""
        OUTCOMES[f"{name}: {reason or 'ok'}"] += 1
        if reason is None:
            return call()
        assert reason in REASONS, f"the model predicts a reason the contracts lack: {reason}"
        with boa.reverts(reason):
            call()
        return None


class History:
    """Values over blocks: the value at the end of each block (the model of checkpoints)."""

    def __init__(self) -> None:
        self.points: dict[str, list[tuple[int, int]]] = {}

    def set(self, key: str, value: int) -> None:
        points = self.points.setdefault(key, [])
        b = block()
        if points and points[-1][0] == b:
            points[-1] = (b, value)
        else:
            points.append((b, value))

    def at(self, key: str, b: int) -> int:
        value = 0
        for at, v in self.points.get(key, []):
            if at > b:
                break
            value = v
        return value

    def blocks(self, key: str) -> int:
        return len(self.points.get(key, []))


# ================================================================= checkpoints


@dataclass
class TokenDeployment:
    token: Any
    owner: str
    accounts: list[str]  # holders; the last one is never a minter


class CheckpointMachine(Machine):
    deployment: ClassVar[TokenDeployment | None] = None

    def __init__(self) -> None:
        super().__init__()
        assert self.deployment is not None
        self.d = self.deployment
        self.token = self.d.token
        self.balances = dict.fromkeys(self.d.accounts, 0)
        self.allowance: dict[tuple[str, str], int] = {}
        self.history = History()
        self.start = block()
        self.touched: set[str] = set()

    amounts = st.one_of(
        st.integers(0, 1000),
        st.sampled_from([0, 1, 10**18, 2**100, 2**159]),
    )
    who = st.integers(0, 3)

    def moved(self, frm: str | None, to: str | None, amount: int) -> None:
        if amount == 0 or frm == to:
            return
        if frm is not None:
            self.balances[frm] -= amount
            self.history.set(frm, self.balances[frm])
        if to is not None:
            self.balances[to] += amount
            self.history.set(to, self.balances[to])
        if frm is None or to is None:
            self.history.set("supply", sum(self.balances.values()))
        self.touched.update(a for a in (frm, to) if a is not None)

    @rule(to=who, amount=amounts, by_minter=st.booleans())
    def mint(self, to: int, amount: int, by_minter: bool) -> None:
        account = self.d.accounts[to]
        sender = self.d.owner if by_minter else self.d.accounts[-1]
        supply = sum(self.balances.values())
        reason = None
        if not by_minter:
            reason = "erc20: access is denied"
        elif supply + amount >= 2**160:
            reason = "votes: total supply over 2**160 - 1"
        self.expect("mint", reason, lambda: self.token.mint(account, amount, sender=sender))
        if reason is None:
            self.moved(None, account, amount)

    @rule(frm=who, to=who, amount=amounts, share=st.sampled_from([None, 1, 2]))
    def transfer(self, frm: int, to: int, amount: int, share: int | None) -> None:
        a, b = self.d.accounts[frm], self.d.accounts[to]
        if share is not None:  # a part of the balance, so transfers succeed often
            amount = self.balances[a] // share
        reason = "erc20: transfer amount exceeds balance" if amount > self.balances[a] else None
        self.expect("transfer", reason, lambda: self.token.transfer(b, amount, sender=a))
        if reason is None:
            self.moved(a, b, amount)

    @rule(spender=who, frm=who, to=who, approved=amounts, amount=amounts, share=st.booleans())
    def transfer_from(
        self, spender: int, frm: int, to: int, approved: int, amount: int, share: bool
    ) -> None:
        s, a, b = (self.d.accounts[i] for i in (spender, frm, to))
        self.token.approve(s, approved, sender=a)
        if share:
            amount = min(approved, self.balances[a])
        reason = None
        if amount > approved:
            reason = "erc20: insufficient allowance"
        elif amount > self.balances[a]:
            reason = "erc20: transfer amount exceeds balance"
        self.expect("transferFrom", reason,
                    lambda: self.token.transferFrom(a, b, amount, sender=s))  # fmt: skip
        if reason is None:
            self.moved(a, b, amount)

    @rule(frm=who, amount=amounts, share=st.booleans())
    def burn(self, frm: int, amount: int, share: bool) -> None:
        a = self.d.accounts[frm]
        if share:
            amount = self.balances[a] // 2
        reason = "erc20: burn amount exceeds balance" if amount > self.balances[a] else None
        self.expect("burn", reason, lambda: self.token.burn(amount, sender=a))
        if reason is None:
            self.moved(a, None, amount)

    @rule(spender=who, frm=who, amount=amounts, share=st.booleans())
    def burn_from(self, spender: int, frm: int, amount: int, share: bool) -> None:
        s, a = self.d.accounts[spender], self.d.accounts[frm]
        if share:
            amount = self.balances[a]
        self.token.approve(s, amount, sender=a)
        reason = "erc20: burn amount exceeds balance" if amount > self.balances[a] else None
        self.expect("burn_from", reason, lambda: self.token.burn_from(a, amount, sender=s))
        if reason is None:
            self.moved(a, None, amount)

    @rule(blocks=st.sampled_from([1, 1, 1, 2, 5]))
    def next_block(self, blocks: int) -> None:
        boa.env.time_travel(blocks=blocks)

    @rule(who=who, back=st.integers(0, 40), ahead=st.integers(0, 3))
    def look_up(self, who: int, back: int, ahead: int) -> None:
        a = self.d.accounts[who]
        b = max(0, block() - 1 - back)
        assert self.token.getPastVotes(a, b) == self.history.at(a, b)
        assert self.token.getPastTotalSupply(b) == self.history.at("supply", b)
        future = block() + ahead
        self.expect("getPastVotes", "future lookup", lambda: self.token.getPastVotes(a, future))
        self.expect("getPastTotalSupply", "future lookup",
                    lambda: self.token.getPastTotalSupply(future))  # fmt: skip

    @invariant()
    def votes_are_balances(self) -> None:
        for a in self.touched:
            assert self.token.getVotes(a) == self.token.balanceOf(a) == self.balances[a]
            n = self.history.blocks(a)
            assert self.token.numCheckpoints(a) == n
            last = self.token.checkpoints(a, n - 1)
            assert tuple(last) == self.history.points[a][-1]
        self.touched.clear()

    def final_checks(self) -> None:
        assert self.token.totalSupply() == sum(self.balances.values())
        for b in range(self.start, block()):
            assert self.token.getPastTotalSupply(b) == self.history.at("supply", b)
            for a in self.d.accounts:
                if a in self.history.points:
                    assert self.token.getPastVotes(a, b) == self.history.at(a, b), (a, b)
        for a in self.d.accounts:
            points = self.history.points.get(a, [])
            assert [tuple(self.token.checkpoints(a, i)) for i in range(len(points))] == points


# ================================================================= proposals

PERIOD = 300
DELAY = 120
QUORUM_BPS = 3000
THRESHOLD = 5
ETHER = 10**18


@dataclass
class GovDeployment:
    token: Any
    timelock: Any
    governor: Any
    owner: str
    holders: list[str]  # four holders, then an outsider with no tokens at first
    initial: list[int]


@dataclass
class Prop:
    id: int
    target: str
    data: bytes
    description: str
    kind: str  # "delay", "mint" or "pay"
    arg: tuple[Any, ...]
    proposer: str
    snapshot: int
    deadline: int
    votes: list[int] = field(default_factory=lambda: [0, 0, 0])  # against, for, abstain
    voters: set[str] = field(default_factory=set)
    canceled: bool = False
    operation: bytes = ZERO
    eta: int = 0
    executed: bool = False


class GovernorMachine(Machine):
    deployment: ClassVar[GovDeployment | None] = None

    def __init__(self) -> None:
        super().__init__()
        assert self.deployment is not None
        self.d = self.deployment
        self.accounts = [*self.d.holders, str(self.d.timelock.address)]
        self.balances = dict(zip(self.d.holders, self.d.initial, strict=False))
        for a in self.accounts:
            self.balances.setdefault(a, 0)
        self.history = History()
        boa.env.time_travel(blocks=1)
        self.history_start = block()
        # The balances before this sequence are all of the chain's past that matters here.
        for a, v in self.balances.items():
            self.history.points[a] = [(0, v)]
        self.history.points["supply"] = [(0, sum(self.balances.values()))]
        self.delay = DELAY
        self.props: list[Prop] = []

    who = st.integers(0, 4)  # a holder, or the outsider (index 4)

    # ------------------------------------------------------------ the model

    def set_balance(self, a: str, value: int) -> None:
        self.balances[a] = value
        self.history.set(a, value)

    def quorum(self, snapshot: int) -> int:
        supply = self.history.at("supply", snapshot)
        return -(-supply * QUORUM_BPS // 10_000)

    def state(self, p: Prop) -> int:
        if p.canceled:
            return STATE_CANCELED
        if now() <= p.deadline:
            return STATE_ACTIVE
        if p.operation != ZERO:
            return STATE_EXECUTED if p.executed else STATE_QUEUED
        against, for_, abstain = p.votes
        if for_ > against and for_ + abstain >= self.quorum(p.snapshot):
            return STATE_SUCCEEDED
        return STATE_DEFEATED

    def pick(self, index: int) -> Prop | None:
        return self.props[index % len(self.props)] if self.props else None

    # ------------------------------------------------------------ tokens and time

    @rule(frm=st.integers(0, 3), to=st.integers(0, 5), share=st.sampled_from([1, 2, 4]))
    def transfer(self, frm: int, to: int, share: int) -> None:
        a, b = self.accounts[frm], self.accounts[to]
        amount = self.balances[a] // share
        self.d.token.transfer(b, amount, sender=a)
        if amount and a != b:
            self.set_balance(a, self.balances[a] - amount)
            self.set_balance(b, self.balances[b] + amount)

    @rule(to=st.integers(0, 5), amount=st.sampled_from([1, 3, 10 * ETHER]))
    def mint(self, to: int, amount: int) -> None:
        a = self.accounts[to]
        self.d.token.mint(a, amount, sender=self.d.owner)
        self.set_balance(a, self.balances[a] + amount)
        self.history.set("supply", sum(self.balances.values()))

    @rule(seconds=st.sampled_from([1, 13, PERIOD // 2, PERIOD, PERIOD + 1, DELAY, 2 * DELAY]))
    def wait(self, seconds: int) -> None:
        if seconds > 0:
            boa.env.time_travel(seconds=seconds)

    # ------------------------------------------------------------ proposals

    @rule(
        who=who,
        kind=st.sampled_from(["delay", "mint", "pay"]),
        value=st.sampled_from([0, 1, 50, 10 * ETHER]),
        to=st.integers(0, 5),
        label=st.integers(0, 2),  # few descriptions: the same proposal twice happens
    )
    def propose(self, who: int, kind: str, value: int, to: int, label: int) -> None:
        sender = self.accounts[who]
        recipient = self.accounts[to]
        if kind == "delay":
            target = str(self.d.timelock.address)
            data = keccak(b"update_delay(uint256)")[:4] + abi_encode(["uint256"], [value])
            arg: tuple[Any, ...] = (value,)
        else:
            target = str(self.d.token.address)
            signature = b"mint(address,uint256)" if kind == "mint" else b"transfer(address,uint256)"
            data = keccak(signature)[:4] + abi_encode(["address", "uint256"], [recipient, value])
            arg = (recipient, value)
        description = f"proposal {label}"
        pid = proposal_id(target, data, description)
        snapshot = block() - 1
        reason = None
        if self.history.at(sender, snapshot) < THRESHOLD:
            reason = "below the proposal threshold"
        elif any(p.id == pid for p in self.props):
            reason = "proposal exists"
        got = self.expect("propose", reason, lambda: self.d.governor.propose(
            target, data, description, sender=sender))  # fmt: skip
        if reason is None:
            assert got == pid
            self.props.append(Prop(pid, target, data, description, kind, arg, sender, snapshot,
                                   now() + PERIOD))  # fmt: skip

    @rule(who=who, index=st.integers(0, 10), support=st.sampled_from([0, 1, 1, 2, 3]))
    def vote(self, who: int, index: int, support: int) -> None:
        p = self.pick(index)
        voter = self.accounts[who]
        pid = p.id if p is not None else 12345
        weight = self.history.at(voter, p.snapshot) if p is not None else 0
        reason = None
        if support > 2:
            reason = "invalid vote type"
        elif p is None:
            reason = "unknown proposal"
        elif self.state(p) != STATE_ACTIVE:
            reason = "voting is closed"
        elif voter in p.voters:
            reason = "already voted"
        elif weight == 0:
            reason = "no votes"
        got = self.expect("castVote", reason,
                          lambda: self.d.governor.castVote(pid, support, sender=voter))  # fmt: skip
        if reason is None:
            assert p is not None
            assert got == weight
            p.voters.add(voter)
            p.votes[support] += weight

    @rule(who=who, index=st.integers(0, 10))
    def cancel(self, who: int, index: int) -> None:
        p = self.pick(index)
        if p is None:
            return
        sender = self.accounts[who]
        reason = None
        if sender != p.proposer:
            reason = "not the proposer"
        elif self.state(p) != STATE_ACTIVE:
            reason = "proposal is not active"
        elif p.voters:
            reason = "votes were cast"
        self.expect("cancel", reason, lambda: self.d.governor.cancel(
            p.target, p.data, p.description, sender=sender))  # fmt: skip
        if reason is None:
            p.canceled = True

    @rule(index=st.integers(0, 10))
    def queue(self, index: int) -> None:
        p = self.pick(index)
        if p is None:
            return
        reason = None if self.state(p) == STATE_SUCCEEDED else "proposal has not succeeded"
        self.expect("queue", reason,
                    lambda: self.d.governor.queue(p.target, p.data, p.description))  # fmt: skip
        if reason is None:
            p.operation = keccak(abi_encode(
                ["address", "uint256", "bytes", "bytes32", "bytes32"],
                [p.target, 0, p.data, ZERO, p.id.to_bytes(32, "big")],
            ))  # fmt: skip
            p.eta = now() + self.delay

    @rule(index=st.integers(0, 10))
    def execute(self, index: int) -> None:
        p = self.pick(index)
        if p is None:
            return
        timelock = str(self.d.timelock.address)
        reason = None
        if self.state(p) != STATE_QUEUED:
            reason = "proposal is not queued"
        elif now() < p.eta:
            reason = "timelock delay not over"
        elif p.kind == "pay" and self.balances[timelock] < p.arg[1]:
            reason = "erc20: transfer amount exceeds balance"
        self.expect(f"execute {p.kind}", reason,
                    lambda: self.d.governor.execute(p.target, p.data, p.description))  # fmt: skip
        if reason is not None:
            return
        p.executed = True
        if p.kind == "delay":
            self.delay = p.arg[0]
        elif p.arg[1] > 0:
            to, amount = p.arg
            if p.kind == "mint":
                self.set_balance(to, self.balances[to] + amount)
                self.history.set("supply", sum(self.balances.values()))
            elif to != timelock:
                self.set_balance(timelock, self.balances[timelock] - amount)
                self.set_balance(to, self.balances[to] + amount)

    @initialize(kinds=st.lists(st.sampled_from(["delay", "mint", "pay"]), max_size=2))
    def start(self, kinds: list[str]) -> None:
        for i, kind in enumerate(kinds):
            self.propose(0, kind, [0, 50, 1][i % 3], i, i)

    @rule(
        index=st.integers(0, 10),
        supports=st.lists(st.sampled_from([1, 1, 1, 0, 0, 2]), min_size=4, max_size=4),
        stop=st.sampled_from(["voted", "queued", "early", "executed", "executed"]),
    )
    def progress(self, index: int, supports: list[int], stop: str) -> None:
        """Move a proposal along, so that whole lives are common: the holders' votes that
        are missing (while it is active) and the end of the vote, then its queueing if it
        succeeded, then its execution (at the delay's end, or before)."""
        p = self.pick(index)
        if p is None:
            return
        if self.state(p) == STATE_ACTIVE:
            for i in range(4):
                voter = self.accounts[i]
                if voter not in p.voters and self.history.at(voter, p.snapshot) > 0:
                    self.vote(i, index, supports[i])
            self.wait(p.deadline + 1 - now())
            if stop == "voted":
                return
        if self.state(p) == STATE_SUCCEEDED:
            self.queue(index)
            if stop == "queued":
                return
        if self.state(p) == STATE_QUEUED:
            if stop != "early" and now() < p.eta:
                self.wait(p.eta - now())
            self.execute(index)

    # ------------------------------------------------------------ invariants

    @invariant()
    def proposals_agree(self) -> None:
        g = self.d.governor
        for p in self.props:
            view = g.proposal(p.id)
            assert view.state == self.state(p)
            assert (view.against_votes, view.for_votes, view.abstain_votes) == tuple(p.votes)
            assert view.operation == p.operation
            assert view.eta == (1 if p.executed else p.eta)
            assert (view.proposer, view.snapshot, view.deadline) == (p.proposer, p.snapshot,
                                                                     p.deadline)  # fmt: skip

    def final_checks(self) -> None:
        g = self.d.governor
        assert self.d.timelock.get_minimum_delay() == self.delay
        for a in self.accounts:
            assert self.d.token.balanceOf(a) == self.balances[a]
        for p in self.props:
            for a in self.accounts:
                assert g.has_voted(p.id, a) == (a in p.voters)
            # The tallies are the voters' balances at the snapshot, whatever moved since.
            assert sum(p.votes) == sum(self.history.at(v, p.snapshot) for v in p.voters)
            assert g.quorum(p.snapshot) == self.quorum(p.snapshot)
        assert g.state(12345) == STATE_UNKNOWN


# ================================================================= model NFT

MAX_MINT = 64


@dataclass
class NftDeployment:
    task: Any
    nft: Any
    owner: str  # the task's owner
    accounts: list[str]  # members-to-be
    governors: list[str]


class NftMachine(Machine):
    deployment: ClassVar[NftDeployment | None] = None

    def __init__(self) -> None:
        super().__init__()
        assert self.deployment is not None
        self.d = self.deployment
        self.finalized: list[tuple[int, bytes]] = []
        self.minted: list[tuple[int, bytes, int, int]] = []  # round, model, parent, epsilon
        self.owners: dict[int, str] = {}
        self.governor = ZERO_ADDRESS
        self.status = dict.fromkeys(self.d.accounts, 0)

    @property
    def task(self) -> str:
        return str(self.d.task.address)

    @initialize(
        rounds=st.integers(0, 6),
        statuses=st.lists(st.sampled_from([0, 1, 1, 2]), min_size=3, max_size=3),
        governor=st.integers(0, 2),
    )
    def start(self, rounds: int, statuses: list[int], governor: int) -> None:
        self.finalize(1, 0, rounds)
        for i, status in enumerate(statuses):
            self.set_status(i, status)
        self.set_governor(governor)

    @rule(gap=st.integers(1, 3), seed=st.integers(0, 3), many=st.sampled_from([1] * 9 + [70]))
    def finalize(self, gap: int, seed: int, many: int) -> None:
        for _ in range(many):
            r = (self.finalized[-1][0] if self.finalized else 0) + gap
            model = hashlib.sha256(b"%d %d" % (r, seed)).digest()
            self.d.task.finalize(r, model)
            self.finalized.append((r, model))

    @rule(choice=st.integers(0, 2))
    def set_governor(self, choice: int) -> None:
        self.governor = [ZERO_ADDRESS, *self.d.governors][choice]
        self.d.task.set_governor(self.governor)

    @rule(who=st.integers(0, 2), status=st.sampled_from([0, 1, 1, 2, 3]))
    def set_status(self, who: int, status: int) -> None:
        a = self.d.accounts[who]
        self.status[a] = status
        self.d.task.set_status(a, status)

    @rule(
        who=st.integers(0, 5),
        variant=st.sampled_from(
            ["right"] * 6 + ["short", "tampered", "skipped", "again", "empty", "lengths"]
        ),
        epsilon=st.sampled_from([0, 1, 2_000_000, 2**256 - 1]),
    )
    def mint(self, who: int, variant: str, epsilon: int) -> None:
        # 0-2: accounts (members or not), 3: the task's owner, 4-5: the governors.
        sender = [*self.d.accounts, self.d.owner, *self.d.governors][who]
        pending = self.finalized[len(self.minted) :]
        rounds = [r for r, _ in pending]
        models = [m for _, m in pending]
        epsilons = [epsilon] * len(rounds)
        last = self.minted[-1][0] if self.minted else 0
        if variant == "short" and rounds:
            rounds, models, epsilons = rounds[:-1], models[:-1], epsilons[:-1]
        elif variant == "tampered" and rounds:
            models[-1] = hashlib.sha256(models[-1]).digest()
        elif variant == "skipped" and len(rounds) > 1:
            del rounds[0], models[0], epsilons[0]
        elif variant == "again" and self.minted:
            rounds = [last, *rounds]
            models = [self.minted[-1][1], *models]
            epsilons = [0, *epsilons]
        elif variant == "empty":
            rounds, models, epsilons = [], [], []
        # More than MAX_MINT rounds: mint_prefix mints the first MAX_MINT, checks the rest.
        head = slice(0, MAX_MINT)
        rounds, models, epsilons, later_rounds, later_models = (
            rounds[head], models[head], epsilons[head], rounds[MAX_MINT:], models[MAX_MINT:]
        )  # fmt: skip
        if variant == "lengths":
            epsilons = epsilons[:-1] if epsilons else [0]
        allowed = (
            self.status.get(sender) == 1
            or sender == self.d.owner
            or (self.governor != ZERO_ADDRESS and sender == self.governor)
        )
        chain = ZERO
        if len(rounds) == len(models):
            chain = lineage_hash([*rounds, *later_rounds], [*models, *later_models],
                                 self.minted_hash())  # fmt: skip
        reason = None
        if not rounds:
            reason = "nothing to mint"
        elif not len(models) == len(epsilons) == len(rounds):
            reason = "length mismatch"
        elif not allowed:
            reason = "not a member, owner or governor"
        elif rounds[0] <= last:
            reason = "rounds not increasing"
        elif chain != self.task_hash():
            reason = "not the task's lineage"
        nft = self.d.nft
        if later_rounds:
            name = f"mint_prefix {variant}"
            call = lambda: nft.mint_prefix(rounds, models, epsilons, later_rounds,  # noqa: E731
                                           later_models, sender=sender)  # fmt: skip
        else:
            name = f"mint {variant}"
            call = lambda: nft.mint(rounds, models, epsilons, sender=sender)  # noqa: E731
        got = self.expect(name, reason, call)
        if reason is not None:
            return
        assert got == len(rounds)
        owner = self.governor if self.governor != ZERO_ADDRESS else self.task
        for r, m, e in zip(rounds, models, epsilons, strict=True):
            parent = self.minted[-1][0] if self.minted else 0
            self.minted.append((r, m, parent, e))
            self.owners[r] = owner

    @rule(index=st.integers(0, 100), to=st.integers(0, 4), by_owner=st.booleans())
    def transfer(self, index: int, to: int, by_owner: bool) -> None:
        held = [r for r, _, _, _ in self.minted if self.owners[r] in self.d.governors]
        if not held:
            return
        token = held[index % len(held)]
        owner = self.owners[token]
        receiver = [*self.d.accounts, *self.d.governors][to]
        sender = owner if by_owner else self.d.accounts[0]
        reason = None
        if sender != owner:
            reason = "erc721: caller is not token owner or approved"
        self.expect("transferFrom", reason, lambda: self.d.nft.transferFrom(
            owner, receiver, token, sender=sender))  # fmt: skip
        if reason is None:
            self.owners[token] = receiver

    def minted_hash(self) -> bytes:
        return lineage_hash([r for r, *_ in self.minted], [m for _, m, *_ in self.minted])

    def task_hash(self) -> bytes:
        return lineage_hash([r for r, _ in self.finalized], [m for _, m in self.finalized])

    @invariant()
    def lineage_is_a_prefix(self) -> None:
        nft = self.d.nft
        assert nft.totalSupply() == len(self.minted)
        assert nft.last_minted() == (self.minted[-1][0] if self.minted else 0)
        assert nft.last_hash() == self.minted_hash()
        assert [(r, m) for r, m, *_ in self.minted] == self.finalized[: len(self.minted)]

    def final_checks(self) -> None:
        nft = self.d.nft
        for i, (r, m, parent, epsilon) in enumerate(self.minted):
            assert nft.tokenByIndex(i) == r
            assert nft.ownerOf(r) == self.owners[r]
            assert nft.model_of(r) == m
            assert nft.parent_of(r) == parent
            assert nft.epsilon_of(r) == epsilon
        for r, m, *_ in self.minted[-2:]:
            assert nft.tokenURI(r) == "ipfs://" + cid_from_digest(m)
        holders = [*self.d.accounts, *self.d.governors, self.task]
        for h in holders:
            assert nft.balanceOf(h) == sum(1 for o in self.owners.values() if o == h)


# ================================================================= running


@pytest.fixture(scope="module")
def deployments() -> tuple[TokenDeployment, GovDeployment, NftDeployment]:
    owner = boa.env.eoa
    accounts = [boa.env.generate_address(f"stateful-{i}") for i in range(4)]
    token = deploy_source("RewardToken", ["fedledger reward", "FLR", 18, "fedledger", "1"])
    tokens = TokenDeployment(token, owner, accounts)

    gtoken = deploy_source("RewardToken", ["fedledger reward", "FLR", 18, "fedledger", "1"])
    holders = [boa.env.generate_address(f"holder-{i}") for i in range(5)]
    initial = [40, 25, 10, 4]  # the fourth is below the proposal threshold (5)
    for h, amount in zip(holders, initial, strict=False):
        gtoken.mint(h, amount)
    timelock = deploy_source("Timelock", [DELAY, [], [], owner])
    governor = deploy_source("Governor", [gtoken.address, timelock.address, PERIOD, QUORUM_BPS,
                                          THRESHOLD])  # fmt: skip
    for role in (b"PROPOSER_ROLE", b"CANCELLER_ROLE", b"EXECUTOR_ROLE"):
        timelock.grantRole(keccak(role), governor.address)
    timelock.renounceRole(ZERO, owner)
    gtoken.set_minter(timelock.address, True)
    gov = GovDeployment(gtoken, timelock, governor, owner, holders, initial)

    out = vyper.compile_code(LINEAGE_TASK.read_text(), output_formats=["abi", "bytecode"])
    task = deploy_abi(out["abi"], out["bytecode"], [], "LineageTask")
    nft = deploy_source("ModelNFT", [task.address, "fedledger model", "FLM", "fedledger", "1"])
    members = [boa.env.generate_address(f"member-{i}") for i in range(3)]
    governors = [boa.env.generate_address(f"governor-{i}") for i in range(2)]
    nfts = NftDeployment(task, nft, owner, members, governors)
    boa.env.time_travel(blocks=1)
    return tokens, gov, nfts


def run(machine: type[Machine], examples: int) -> None:
    key = f"{machine.__name__}: sequences"
    before = OUTCOMES[key]
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same sequences every run: reproducible, no flaky coverage
            database=None,
        ),
    )
    assert OUTCOMES[key] - before >= examples


def setup(deployments: tuple[TokenDeployment, GovDeployment, NftDeployment]) -> None:
    CheckpointMachine.deployment, GovernorMachine.deployment, NftMachine.deployment = deployments


def test_governance_state_machines_quick(
    deployments: tuple[TokenDeployment, GovDeployment, NftDeployment],
) -> None:
    setup(deployments)
    for machine in (CheckpointMachine, GovernorMachine, NftMachine):
        run(machine, QUICK_EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_governance_state_machine(
    deployments: tuple[TokenDeployment, GovDeployment, NftDeployment], name: str
) -> None:
    setup(deployments)
    machine = {"checkpoints": CheckpointMachine, "governor": GovernorMachine,
               "nft": NftMachine}[name]  # fmt: skip
    OUTCOMES.clear()
    run(machine, EXAMPLES[name])
    # The sequences reached the interesting outcomes, not only reverts.
    wanted = {
        "checkpoints": ["mint: ok", "transfer: ok", "transferFrom: ok", "burn: ok",
                        "burn_from: ok", "transfer: erc20: transfer amount exceeds balance",
                        "transferFrom: erc20: insufficient allowance",
                        "mint: erc20: access is denied", "getPastVotes: future lookup"],
        "governor": ["propose: ok", "propose: below the proposal threshold",
                     "propose: proposal exists", "castVote: ok", "castVote: already voted",
                     "castVote: no votes", "castVote: voting is closed", "cancel: ok",
                     "cancel: votes were cast", "queue: ok", "queue: proposal has not succeeded",
                     "execute delay: ok", "execute mint: ok", "execute pay: ok",
                     "execute pay: erc20: transfer amount exceeds balance",
                     "execute delay: timelock delay not over | execute mint: timelock delay "
                     "not over | execute pay: timelock delay not over"],
        "nft": ["mint right: ok", "mint short: not the task's lineage",
                "mint tampered: not the task's lineage", "mint again: rounds not increasing",
                "mint right: not a member, owner or governor", "mint_prefix right: ok",
                "transferFrom: ok", "transferFrom: erc721: caller is not token owner or approved"],
    }[name]  # fmt: skip
    # "a | b": either will do.
    missing = [o for o in wanted if not any(OUTCOMES[x] for x in o.split(" | "))]
    assert not missing, (missing, OUTCOMES)
