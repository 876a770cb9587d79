"""Random call sequences against the Task contract (ledger v2), checked against a model.

A hypothesis state machine drives one Task (and its RewardToken) with random joins, leaves,
withdrawals, `start`, signed-message batches (`submit`), distributions, `close`, claims,
slashes and clock moves. Every member signs its round messages off chain (EIP-712, compact
``r, vs``); batches mix honest messages, conflicting ones (another update or another attested
pair: equivocation), exact duplicates, messages by non-members or members that joined during
the round, messages signed for another round, malformed ones (examples without an update, an
update without examples, updates after the last round), garbage signatures and out-of-range
pair indexes, for the current round or the next one, with random contributors and scores
(huge ones, scores above 2**128 - 1, unsorted contributors), some results committing to a
secure-aggregation transcript digest (paid with it, or offered with the wrong one). Members
register secure-aggregation keys (`set_keys`, good and malformed) and their data owners' consent
policies (`join`'s and `set_consent`). The governor (and others, refused) changes the governable
rules (`reconfigure`: quorum, minimum stake, reward, access policy, allowlist; some invalid),
from the next round on. `slash` gets genuine evidence
(two different messages a member signed for one round: the test records every message every
account signed) and fake evidence (the same message twice, two signers, a tampered message, the
wrong round, a garbage signature).

Before every call a Python model of the rules (the contract's docstrings) predicts the
outcome: the exact revert reason, or success and its effects; the call must agree. After every
step the invariants are checked on chain:

- ETH: the contract's balance is total_staked - total_withdrawn - total_slashed (and each of
  those is the model's); the treasury holds what slashes sent it;
- members: `members()` is the model's active list (order included), `active_stake` the sum of
  their stakes, each account's status, stake, first and last round, earned and claimed amounts
  and withdraw time are the model's, and `is_member` agrees with the status;
- no slashing without evidence: every slashed account signed two different messages for one
  round (in the test's record of signatures);
- rewards: total_earned <= max_rounds * reward_per_round, the sum of the distributed rounds'
  rewards, and the sum of earned_of; total_claimed <= total_earned; the token's total supply is
  total_claimed;
- rounds: current_round <= max_rounds + 1; each round's start, members, message count,
  stakes, close time, phase and distribution flag are the model's; a finalized round's tally
  for its pair is at least its quorum stake (its own rules' quorum, rounded up), and its
  digests are the attested pair; a round is paid its own rules' reward;
- governance: `rules_at` of the rounds around the current one and the current-round views are
  the model's rules in force;
- lineage: `lineage()` is the model's hash chain over the finalized rounds;
- every revert predicted has one of the contract's reason strings (Task.vy and the snekmate
  modules it uses), and the call reverts with exactly that reason.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import boa
import pytest
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

from fedledger.errors import MessageError
from fedledger.gossip.identity import Identity, recover_digest
from fedledger.ledger.artifacts import _snekmate_root, compile_contract, source_path
from fedledger.ledger.messages import ROUND_TYPE, domain_separator, pair_hash
from fedledger.ledger.rules import (
    ACCESS_MEMBERS,
    STATUS_ACTIVE,
    STATUS_LEFT,
    STATUS_NONE,
    STATUS_SLASHED,
    lineage_hash,
    result_digest,
)

ETHER = 10**18
# Stakes of a few wei: 67 % of them is rarely a whole number, so the quorum's rounding (up,
# never down) is exercised; 10 % of a slashed stake of 7 wei rounds down to 0.
MIN_STAKE = 7
MAX_STAKE = 2**96 - 1
WINDOW = 10
GRACE = 3
COOLDOWN = 15
QUORUM_BPS = 6700
MAX_ROUNDS = 3
MAX_PARTICIPANTS = 4
# Not a multiple of every score sum: the per-contributor amounts round down.
REWARD = 1000 * ETHER + 7
MAX_SCORE = 2**128 - 1
SLASH_SHARE_BPS = 1000
N_ACCOUNTS = 6  # more than MAX_PARTICIPANTS, so "task is full" happens
SEED = 2098
ZERO = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
ROUND_TYPEHASH = keccak(ROUND_TYPE.encode())
CONFIG_DOCUMENT = b'{"name":"stateful-v2"}'
RULE_PARAMS = b"\x01" * 32
# reconfigure's valid choices, and its invalid values (one per call at most: each revert).
QUORUMS = [6700, 5001, 10000, 9000]
MIN_STAKES = [MIN_STAKE, MIN_STAKE, 10, 30]
REWARDS = [REWARD, 7, 0, (2**88 - 1) // MAX_ROUNDS]
ACCESS = [0, 0, 1, 2]
INVALID: dict[str, tuple[str, int]] = {
    "quorum_low": ("quorum", 5000), "quorum_high": ("quorum", 10001),
    "stake_zero": ("min_stake", 0), "stake_high": ("min_stake", MAX_STAKE + 1),
    "reward": ("reward", (2**88 - 1) // MAX_ROUNDS + 1), "access": ("access", 3),
    "empty": ("document", 0),  # an empty document
}  # fmt: skip
POLICIES = [b"", b"", b'{"purposes":["x"]}', b"p" * 2048]

# Batches that list one pair twice (`pairs[i] == pairs[j]`): the tally of the pair is the
# sum over both indexes (the spec: stake attesting keccak256(model, result)).
DUPLICATE_PAIRS = True
EXAMPLES = 1000  # sequences; each is one example of the state machine
QUICK_EXAMPLES = 50
STEPS = 27

# Round outcomes in the model.
OPEN, FINALIZED, FAILED = 0, 1, 2
# Task.phase(round)
PHASE_NOT_STARTED, PHASE_OPEN, PHASE_AGGREGATE, PHASE_ATTEST = 0, 1, 2, 3
PHASE_FINALIZED, PHASE_FAILED = 4, 5

#: How often each (function, outcome) happened, over all sequences: shows what was covered.
OUTCOMES: Counter[str] = Counter()


def contract_reasons() -> frozenset[str]:
    """Every revert reason string in Task.vy and the snekmate modules it calls into (`assert`,
    and Task's `_require`)."""
    snekmate = _snekmate_root() / "snekmate"
    texts = [source_path("Task").read_text()]
    texts += [(snekmate / p).read_text() for p in ("utils/ecdsa.vy", "auth/ownable.vy")]
    pattern = r'(?:assert |self\._require\()[^#\n]*?,\s*"([^"]+)"'
    return frozenset(m for t in texts for m in re.findall(pattern, t))


REASONS = contract_reasons()


@dataclass
class Deployed:
    token: Any
    task: Any
    owner: str
    treasury: str
    governor: str
    ids: list[Identity]  # N_ACCOUNTS members-to-be, then an outsider that never joins
    accounts: list[str]
    domain: bytes


def deploy_source(name: str, args: list[Any]) -> Any:
    """Compile the contract from contracts/ (the source under test, not a stale artifact) and
    deploy it wrapped by its ABI (calls through the ABI are much faster in boa than through a
    source-level contract, whose reverts build a storage dump)."""
    artifact = compile_contract(name)
    constructor = next(x for x in artifact["abi"] if x["type"] == "constructor")
    types = [i["type"] for i in constructor["inputs"]]
    code = bytes.fromhex(artifact["bytecode"].removeprefix("0x")) + abi_encode(types, args)
    address, _ = boa.env.deploy_code(bytecode=code)
    return boa.loads_abi(json.dumps(artifact["abi"]), name=name).at(address)


def deploy() -> Deployed:
    """One deployment for all sequences; each sequence runs inside a boa anchor."""
    owner = boa.env.eoa
    token = deploy_source("RewardToken", ["fedledger reward", "FLR", 18, "fedledger", "1"])
    treasury = boa.env.generate_address("stateful-treasury")
    governor = boa.env.generate_address("stateful-governor")
    task = deploy_source(
        "Task",
        [
            token.address,
            1,  # rule_id
            RULE_PARAMS,
            hashlib.sha256(CONFIG_DOCUMENT).digest(),
            QUORUM_BPS,
            MIN_STAKE,
            WINDOW,
            GRACE,
            MAX_ROUNDS,
            MAX_PARTICIPANTS,
            False,  # allowlist_only
            REWARD,
            ACCESS_MEMBERS,
            COOLDOWN,
            treasury,
            governor,
            0,  # committee: none
            CONFIG_DOCUMENT,
        ],
    )
    token.set_minter(task.address, True)
    ids = [Identity.from_seed(SEED, i) for i in range(N_ACCOUNTS + 1)]
    for i in ids:
        boa.env.set_balance(i.address, 2**100)
    chain_id = boa.env.evm.patch.chain_id
    domain = domain_separator(chain_id, str(task.address))
    deployed = Deployed(token, task, owner, str(treasury), str(governor), ids,
                        [i.address for i in ids], domain)  # fmt: skip
    # The test's EIP-712 digest is the contract's.
    msg = (2, b"\x01" * 32, 3, b"\x02" * 32, b"\x03" * 32)
    assert task.message_hash(*msg) == message_digest(domain, *msg)
    return deployed


# ---------------------------------------------------------------- signatures

Msg = tuple[int, bytes, int, bytes, bytes]  # round, update, examples, model, result


@functools.lru_cache(maxsize=1 << 16)
def message_digest(
    domain: bytes, rnd: int, update: bytes, examples: int, model: bytes, result: bytes
) -> bytes:
    """Task.message_hash, for any fields (also those RoundMessage refuses to build)."""
    struct = keccak(
        abi_encode(
            ["bytes32", "uint256", "bytes32", "uint256", "bytes32", "bytes32"],
            [ROUND_TYPEHASH, rnd, update, examples, model, result],
        )
    )
    return keccak(b"\x19\x01" + domain + struct)


@functools.lru_cache(maxsize=1 << 16)
def sign(identity: Identity, domain: bytes, msg: Msg) -> tuple[int, int]:
    signature = identity.sign_digest(message_digest(domain, *msg))
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    return r, s | ((signature[64] - 27) << 255)


@functools.lru_cache(maxsize=1 << 16)
def recover(digest: bytes, r: int, vs: int) -> tuple[str | None, str | None]:
    """What snekmate's `_try_recover_r_vs` does: (signer, None) or (None, revert reason)."""
    s = vs & ((1 << 255) - 1)
    if s > HALF_N:
        return None, "ecdsa: invalid signature `s` value"
    if not 0 < r < 2**256:
        return None, "ecdsa: invalid signature"
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((27 + (vs >> 255),))
    try:
        return recover_digest(digest, signature), None
    except MessageError:
        return None, "ecdsa: invalid signature"


def update_of(rnd: int, account: int, variant: int) -> bytes:
    return hashlib.sha256(f"update/{rnd}/{account}/{variant}".encode()).digest()


def model_of(rnd: int, variant: int) -> bytes:
    return hashlib.sha256(f"model/{rnd}/{variant}".encode()).digest()


def transcript_of(rnd: int) -> bytes:
    return hashlib.sha256(f"transcript/{rnd}".encode()).digest()


def other_transcript(transcript: bytes) -> bytes:
    """A wrong transcript for a result: none for one that has one, else one."""
    return ZERO if transcript != ZERO else b"\x7e" * 32


# ---------------------------------------------------------------- the model


@dataclass
class Round:
    start: int
    members: int
    stake: int
    quorum_at: int = 0
    closed_at: int = 0
    count: int = 0
    submitted: int = 0
    outcome: int = OPEN
    distributed: bool = False


@dataclass(frozen=True)
class Rules:
    """The governable rules in force from round `from_round` on (`Task.rules_at`)."""

    rule_id: int = 1
    rule_params_digest: bytes = RULE_PARAMS
    config_digest: bytes = hashlib.sha256(CONFIG_DOCUMENT).digest()
    quorum_bps: int = QUORUM_BPS
    min_stake: int = MIN_STAKE
    allowlist_only: bool = False
    reward_per_round: int = REWARD
    access_policy: int = ACCESS_MEMBERS
    from_round: int = 1

    def view(self) -> tuple[Any, ...]:
        return (self.rule_id, self.rule_params_digest, self.config_digest, self.quorum_bps,
                self.min_stake, self.allowlist_only, self.reward_per_round, self.access_policy,
                self.from_round)  # fmt: skip


@dataclass
class Model:
    """The rules of Task.vy (its docstrings), in Python."""

    status: dict[str, int] = field(default_factory=dict)
    stake: dict[str, int] = field(default_factory=dict)
    first_round: dict[str, int] = field(default_factory=dict)
    last_round: dict[str, int] = field(default_factory=dict)
    earned: dict[str, int] = field(default_factory=dict)
    claimed: dict[str, int] = field(default_factory=dict)
    withdraw_after: dict[str, int] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)  # the contract's order (swap and pop)
    current: int = 0
    rounds: dict[int, Round] = field(default_factory=dict)
    # The stored tally (Task.tally): a batch that finalizes a round keeps its sums in memory.
    tally: dict[tuple[int, bytes], int] = field(default_factory=dict)
    finalized_stake: dict[int, int] = field(default_factory=dict)  # the Finalized event's
    finalized: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    accepted: dict[tuple[int, str], Msg] = field(default_factory=dict)
    total_staked: int = 0
    total_withdrawn: int = 0
    total_slashed: int = 0
    total_earned: int = 0
    total_claimed: int = 0
    treasury: int = 0
    distributed_rewards: int = 0  # each distributed round's reward_per_round
    epochs: list[Rules] = field(default_factory=lambda: [Rules()])
    lineage: tuple[int, bytes] = (0, ZERO)

    def rules_at(self, r: int) -> Rules:
        return next((e for e in reversed(self.epochs) if e.from_round <= r), self.epochs[0])

    def max_reward(self) -> int:
        return max(e.reward_per_round for e in self.epochs)

    def active_stake(self) -> int:
        return sum(self.stake[a] for a in self.members)

    def outcome(self, r: int) -> int:
        return self.rounds[r].outcome if r in self.rounds else OPEN

    def quorum_stake(self, r: int) -> int:
        stake = self.rounds[r].stake if r in self.rounds else 0
        return -(-self.rules_at(r).quorum_bps * stake // 10000)

    def closes_at(self, r: int) -> int:
        if r not in self.rounds:
            return 0
        w = self.rounds[r]
        if w.closed_at:
            return w.closed_at
        end = w.start + WINDOW
        if w.quorum_at and w.quorum_at + GRACE < end:
            return w.quorum_at + GRACE
        return end

    def phase(self, r: int, now: int) -> int:
        if r == 0 or r > self.current:
            return PHASE_NOT_STARTED
        if self.outcome(r) == FINALIZED:
            return PHASE_FINALIZED
        if self.outcome(r) == FAILED:
            return PHASE_FAILED
        if now < self.closes_at(r):
            return PHASE_OPEN
        if r == self.current:
            return PHASE_AGGREGATE
        if now < self.closes_at(r + 1):
            return PHASE_ATTEST
        return PHASE_FAILED

    def open(self, r: int, now: int) -> None:
        self.current = r
        self.rounds[r] = Round(start=now, members=len(self.members), stake=self.active_stake())

    def fail(self, r: int) -> None:
        if r != 0 and self.rounds[r].outcome == OPEN:
            self.rounds[r].outcome = FAILED

    def deactivate(self, a: str) -> None:
        i = self.members.index(a)
        last = self.members.pop()
        if last != a:
            self.members[i] = last

    def distribute(
        self, r: int, contributors: list[str], scores: list[int], transcript: bytes, strict: bool
    ) -> str | None:
        """Task._distribute: a revert reason, or None (done, or silently skipped)."""
        w = self.rounds.get(r)
        if w is None or w.outcome != FINALIZED or w.distributed:
            return "round not finalized, or already distributed" if strict else None
        if len(contributors) != len(scores) or (
            result_digest(contributors, scores, transcript) != self.finalized[r][1]
        ):
            return "result digest mismatch" if strict else None
        previous = 0
        for c, s in zip(contributors, scores, strict=True):
            # In a batch (not strict), a result that cannot be paid is left unpaid.
            if int(c, 16) <= previous:
                return "contributors not strictly increasing" if strict else None
            previous = int(c, 16)
            if s > MAX_SCORE:
                return "score above 2**128 - 1" if strict else None
        w.distributed = True
        reward = self.rules_at(r).reward_per_round  # the round's own
        self.distributed_rewards += reward
        total = sum(scores)
        for c, s in zip(contributors, scores, strict=True):
            if total and s:
                amount = 0 if self.status.get(c) == STATUS_SLASHED else reward * s // total
                self.earned[c] = self.earned.get(c, 0) + amount
                self.total_earned += amount
        return None


# ---------------------------------------------------------------- strategies

ACCOUNT = st.integers(0, N_ACCOUNTS)  # the last one is the outsider
# Who acts: two times in three an active member (if any), else any account.
ACTOR = st.integers(0, 3 * (N_ACCOUNTS + 1) - 1)
# Entries that a batch may hold any number of (the honest message, or conflicting ones).
GOOD_KINDS = [
    "honest", "honest", "honest",
    "alt_update",  # another update: equivocation with "honest"
    "alt_pair",  # another attested pair: equivocation with "honest"
    "no_attest",  # update only (differs from "honest" when round - 1 has a pair)
    "attest_only",  # no update (differs from "honest" when the round takes updates)
    "dup_pair",  # the honest message, its pair listed twice in the batch's pairs
]  # fmt: skip
# At most one per batch: each makes the whole batch revert, unless skipped (its signer's
# message for the round is already in).
BAD_KINDS = [
    "prev_round",  # signed for round - 1, sent for this round
    "next_round",  # signed for round + 1, sent for this round
    "no_examples",  # an update with 0 examples
    "examples_only",  # examples without an update
    "too_many_examples",  # 2**64 examples
    "garbage",  # r = 0
    "bad_pair",  # pair index out of range
    "outsider",  # the honest message of an account that is not a member
    "newcomer",  # the honest message of a member that joined during the round
]  # fmt: skip
SLASH_VARIANTS = ["genuine"] * 3 + [
    "same", "two_signers", "tampered", "wrong_round", "garbage", "high_s"
]  # fmt: skip
# How round r's honest result scores its contributors (drawn per round and sequence);
# "transcript": as "small", its digest committing to a secure-aggregation transcript too.
SCORE_STYLES = ["small"] * 3 + ["transcript"] * 2 + ["huge"] * 2 + [
    "zero", "empty", "over", "unsorted", "zero_address"
]  # fmt: skip
# set_keys's channel key, key blob digest and (first_round, last_round, recipients).
KEY_ROUNDS = [(1, MAX_ROUNDS, 3), (2, 2, 0), (0, 0, 0), (0, 3, 1), (3, 2, 1), (0, 0, 2)]


class TaskMachine(RuleBasedStateMachine):
    #: Set before running: deployed outside the sequences (each sequence runs in an anchor).
    deployment: ClassVar[Deployed | None] = None

    def __init__(self) -> None:
        super().__init__()
        assert self.deployment is not None, "set TaskMachine.deployment first"
        self.d = self.deployment
        self.task = self.d.task
        self.token = self.d.token
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(boa.env.anchor())
        self.m = Model()
        # Every message each account signed, by (account, round): off chain, never reverted.
        self.signed: dict[tuple[str, int], set[Msg]] = {}
        # Every result the test computed (contributors, scores, transcript), by its digest.
        self.results: dict[bytes, tuple[list[str], list[int], bytes]] = {}
        self.styles = ["small"] * (MAX_ROUNDS + 2)
        self.pairs_by_hash: dict[bytes, tuple[bytes, bytes]] = {}
        self.checked_rounds: dict[int, bool] = {}
        self.touched: set[str] = set()
        self.changed = True  # some call succeeded since the last invariant check
        self.rules_seen: tuple[int, int, bytes] | None = None  # the rules last checked
        self.clock_moved = False

    def teardown(self) -> None:
        OUTCOMES["sequences"] += 1
        try:
            self.accounts_agree(self.d.accounts)
            for r in range(1, self.m.current + 2):
                self.round_agrees(r)
            for (r, pair), value in self.m.tally.items():
                assert self.task.tally(r, *self.pairs_by_hash[pair]) == value
        finally:
            self._stack.close()

    # ------------------------------------------------------------ helpers

    @property
    def now(self) -> int:
        return int(boa.env.evm.patch.timestamp)

    def pick(self, who: int, wanted: Any) -> str:
        """Two times in three an account for which `wanted` holds (if any), else any account."""
        accounts = [a for a in self.d.accounts if wanted(a)]
        if who < 2 * (N_ACCOUNTS + 1) and accounts:
            return accounts[who % len(accounts)]
        return self.d.accounts[who % (N_ACCOUNTS + 1)]

    def actor(self, who: int) -> str:
        return self.pick(who, lambda a: a in self.m.members)

    def identity(self, a: str) -> Identity:
        return self.d.ids[self.d.accounts.index(a)]

    def expect(self, name: str, reason: str | None, call: Any) -> Any:
        """Make the call; it must revert with exactly `reason`, or succeed if that is None."""
        OUTCOMES[f"{name}: {reason or 'ok'}"] += 1
        if reason is None:
            out = call()
            self.changed = True
            return out
        assert reason in REASONS, f"the model predicts a reason the contract lacks: {reason}"
        with boa.reverts(reason):
            call()
        return None

    def sign_as(self, a: str, msg: Msg) -> tuple[int, int]:
        """`a` signs `msg` (recorded: every message signed is potential evidence)."""
        self.signed.setdefault((a, msg[0]), set()).add(msg)
        return sign(self.identity(a), self.d.domain, msg)

    # ------------------------------------------------------------ membership

    @initialize(
        stakes=st.lists(st.sampled_from([MIN_STAKE, MIN_STAKE, 10, 13, 1000]), max_size=4),
        started=st.sampled_from([True] * 7 + [False]),
        styles=st.lists(
            st.sampled_from(SCORE_STYLES), min_size=MAX_ROUNDS + 2, max_size=MAX_ROUNDS + 2
        ),
    )
    def members_join_and_start(self, stakes: list[int], started: bool, styles: list[str]) -> None:
        """Most sequences begin with a few members and a started task."""
        self.styles = styles
        for i, stake in enumerate(stakes):
            self.join_as(self.d.accounts[i], stake)
        if started:
            self.start_as(self.d.owner)

    @rule(
        who=ACTOR,
        stake=st.sampled_from(
            [MIN_STAKE - 1, MIN_STAKE, MIN_STAKE, 10, 29, 1000, MAX_STAKE, MAX_STAKE + 1]
        ),
        policy=st.sampled_from(POLICIES),
    )
    def join(self, who: int, stake: int, policy: bytes) -> None:
        self.join_as(self.pick(who, lambda a: a not in self.m.members), stake, policy)

    def join_as(self, a: str, stake: int, policy: bytes = b"") -> None:
        m = self.m
        rules = m.rules_at(m.current)  # admission: the current round's rules
        reason = {
            STATUS_ACTIVE: "already a member",
            STATUS_LEFT: "withdraw first",
            STATUS_SLASHED: "slashed",
        }.get(m.status.get(a, STATUS_NONE))
        if reason is None and stake < rules.min_stake:
            reason = "stake below minimum"
        if reason is None and stake > MAX_STAKE:
            reason = "stake above 2**96 - 1"
        if reason is None and len(m.members) >= MAX_PARTICIPANTS:
            reason = "task is full"
        if reason is None and rules.allowlist_only:
            reason = "not allowlisted"  # nobody is allowlisted
        self.expect("join", reason,
                    lambda: self.task.join(f"node-{a}", policy, sender=a, value=stake))  # fmt: skip
        if reason is None:
            consent = self.consent_events()
            if policy:
                assert consent == [(a, hashlib.sha256(policy).digest(), policy, m.current + 1)]
                OUTCOMES["join: with consent"] += 1
            else:
                assert consent == []
            m.status[a] = STATUS_ACTIVE
            m.stake[a] = stake
            m.first_round[a] = m.current + 1
            m.members.append(a)
            m.total_staked += stake
            self.touched.add(a)

    @rule(who=ACTOR)
    def leave(self, who: int) -> None:
        a = self.actor(who)
        m = self.m
        reason = None if m.status.get(a) == STATUS_ACTIVE else "not a member"
        self.expect("leave", reason, lambda: self.task.leave(sender=a))
        if reason is None:
            m.deactivate(a)
            m.status[a] = STATUS_LEFT
            m.withdraw_after[a] = self.now + WINDOW + COOLDOWN
            self.touched.add(a)

    @rule(who=ACTOR)
    def withdraw(self, who: int) -> None:
        m = self.m
        a = self.pick(who, lambda a: m.status.get(a) == STATUS_LEFT)
        reason = None
        if m.status.get(a, STATUS_NONE) != STATUS_LEFT:
            reason = "nothing to withdraw"
        elif self.now < m.withdraw_after[a]:
            reason = "cooldown not over"
        before = boa.env.get_balance(a)
        self.expect("withdraw", reason, lambda: self.task.withdraw(sender=a))
        if reason is None:
            assert boa.env.get_balance(a) == before + m.stake[a]
            m.total_withdrawn += m.stake[a]
            m.stake[a] = 0
            m.status[a] = STATUS_NONE
            m.withdraw_after[a] = 0
            self.touched.add(a)

    def consent_events(self) -> list[tuple[Any, ...]]:
        return [(e.member, e.digest, e.policy, e.from_round) for e in self.task.get_logs()
                if type(e).__name__ == "Consent"]  # fmt: skip

    def set_consent(self, who: int, policy: bytes) -> None:
        """An account registers its data owner's consent policy: a Consent event only."""
        a = self.actor(who)
        reason = None if self.m.status.get(a) == STATUS_ACTIVE else "not a member"
        self.expect("set_consent", reason, lambda: self.task.set_consent(policy, sender=a))
        if reason is None:
            digest = hashlib.sha256(policy).digest() if policy else ZERO
            assert self.consent_events() == [(a, digest, policy, self.m.current + 1)]

    # ------------------------------------------------------------ governance

    @rule(
        by=st.sampled_from(["governor"] * 5 + ["owner", "member"]),
        quorum=st.sampled_from(QUORUMS),
        min_stake=st.sampled_from(MIN_STAKES),
        reward=st.sampled_from(REWARDS),
        access=st.sampled_from(ACCESS),
        allowlist=st.sampled_from([False, False, True]),
        invalid=st.sampled_from([None] * 7 + sorted(INVALID)),
        rule_id=st.integers(0, 7),
    )
    def reconfigure(self, by: str, quorum: int, min_stake: int, reward: int, access: int,
                    allowlist: bool, invalid: str | None, rule_id: int) -> None:  # fmt: skip
        """The governor (or someone else, refused) changes the governable rules from the next
        round on; a change not in force yet is replaced."""
        m = self.m
        sender = {"governor": self.d.governor, "owner": self.d.owner,
                  "member": self.d.accounts[0]}[by]  # fmt: skip
        document = f"rules/{quorum}/{min_stake}/{reward}/{access}/{allowlist}".encode()
        if invalid is not None:
            name, value = INVALID[invalid]
            quorum = value if name == "quorum" else quorum
            min_stake = value if name == "min_stake" else min_stake
            reward = value if name == "reward" else reward
            access = value if name == "access" else access
            document = b"" if name == "document" else document
        params = hashlib.sha256(b"params" + document).digest()
        reason = None
        if sender != self.d.governor:
            reason = "not the governor"
        elif not 5000 < quorum <= 10000:
            reason = "quorum not in (5000, 10000]"
        elif min_stake == 0:
            reason = "min stake is zero"
        elif min_stake > MAX_STAKE:
            reason = "min stake above 2**96 - 1"
        elif reward * MAX_ROUNDS > 2**88 - 1:
            reason = "total reward above 2**88 - 1"
        elif access > 2:
            reason = "unknown access policy"
        elif not document:
            reason = "config document is empty"
        args = (rule_id, params, quorum, min_stake, allowlist, reward, access, document)
        self.expect("reconfigure", reason, lambda: self.task.reconfigure(*args, sender=sender))
        if reason is None:
            new = Rules(rule_id, params, hashlib.sha256(document).digest(), quorum, min_stake,
                        allowlist, reward, access, m.current + 1)  # fmt: skip
            if m.epochs[-1].from_round == new.from_round:
                m.epochs[-1] = new
                OUTCOMES["reconfigure: replaced a pending change"] += 1
            else:
                m.epochs.append(new)
            (event,) = (e for e in self.task.get_logs() if type(e).__name__ == "Configured")
            assert (event.from_round, event.config_digest, event.document) == (
                new.from_round,
                new.config_digest,
                document,
            )

    # ------------------------------------------------------------ rounds

    @rule(by_owner=st.sampled_from([True, True, False]))
    def start(self, by_owner: bool) -> None:
        self.start_as(self.d.owner if by_owner else self.d.accounts[0])

    def start_as(self, sender: str) -> None:
        reason = None
        if sender != self.d.owner:
            reason = "ownable: caller is not the owner"
        elif self.m.current != 0:
            reason = "already started"
        self.expect("start", reason, lambda: self.task.start(sender=sender))
        if reason is None:
            self.m.open(1, self.now)

    @rule(
        kind=st.sampled_from(["one", "grace", "close", "close", "window", "cooldown"]),
    )
    def clock(self, kind: str) -> None:
        """Move the clock: a second, `grace`, to the current round's close, a window, or a
        window and a cooldown (a leaver may withdraw)."""
        seconds = {"one": 1, "grace": GRACE, "window": WINDOW, "cooldown": WINDOW + COOLDOWN}
        to_close = self.m.closes_at(self.m.current) - self.now
        step = to_close if kind == "close" else seconds[kind]
        boa.env.time_travel(seconds=max(step, 1))
        self.clock_moved = True

    def honest_result(self, p: int) -> tuple[list[str], list[int], bytes]:
        """Round p's result as honest nodes would compute it, scored in round p's style
        (some styles make a result that can never be distributed), and its transcript digest
        (zero: none)."""
        m = self.m
        style = self.styles[min(p, MAX_ROUNDS + 1)]
        updates = sorted(
            ((a, msg) for (r, a), msg in m.accepted.items() if r == p and msg[1] != ZERO),
            key=lambda x: int(x[0], 16),
        )
        contributors = [a for a, _ in updates]
        if style == "huge":
            scores = [MAX_SCORE - (msg[2] % 3) for _, msg in updates]
        elif style == "zero":
            scores = [0] * len(updates)
        elif style == "empty":
            contributors, scores = [], []
        else:
            scores = [msg[2] % 7 for _, msg in updates]
        if style == "over" and scores:
            scores[-1] = MAX_SCORE + 1
        elif style == "unsorted" and len(contributors) > 1:
            contributors.reverse()
        elif style == "zero_address":
            contributors, scores = [ZERO_ADDRESS, *contributors], [1, *scores]
        transcript = transcript_of(p) if style == "transcript" else ZERO
        self.results[result_digest(contributors, scores, transcript)] = (
            contributors, scores, transcript
        )  # fmt: skip
        return contributors, scores, transcript

    def pairs_for(self, rnd: int, dup: bool = False) -> list[tuple[bytes, bytes]]:
        """[honest pair, conflicting pair, no attestation] for round `rnd`'s messages, and
        with `dup` the honest pair again."""
        p = rnd - 1
        if p <= 0:
            pairs = [(ZERO, ZERO), (model_of(p, 1), model_of(p, 2)), (ZERO, ZERO)]
            return [*pairs, pairs[0]] if dup else pairs
        honest = result_digest(*self.honest_result(p))
        pairs = [(model_of(p, 0), honest), (model_of(p, 1), honest), (ZERO, ZERO)]
        if dup:
            pairs.append(pairs[0])
        for pair in pairs:
            self.pairs_by_hash[pair_hash(*pair)] = pair
        return pairs

    def entry(
        self, a: str, rnd: int, kind: str, pairs: list[tuple[bytes, bytes]]
    ) -> tuple[bytes, int, int, int, int]:
        """One entry (update, examples, pair index, r, vs) of a batch for round `rnd`."""
        i = self.d.accounts.index(a)
        examples = 10 + i
        update = update_of(rnd, i, 0)
        if rnd > MAX_ROUNDS:
            update, examples = ZERO, 0
        pair = 0
        signed_round = rnd
        if kind == "alt_update":
            update, examples = update_of(rnd, i, 1), 20 + i
        elif kind == "alt_pair":
            pair = 1
        elif kind == "no_attest":
            pair = 2
        elif kind == "dup_pair" and len(pairs) > 3:
            pair = 3
        elif kind == "attest_only":
            update, examples = ZERO, 0
        elif kind in ("prev_round", "next_round"):
            signed_round = rnd - 1 if kind == "prev_round" else rnd + 1
        elif kind == "no_examples":
            update, examples = update_of(rnd, i, 2), 0
        elif kind == "examples_only":
            update, examples = ZERO, 5
        elif kind == "too_many_examples":
            update, examples = update_of(rnd, i, 3), 2**64
        if kind == "garbage":
            return update, examples, pair, 0, 1
        if kind == "bad_pair":
            return update, examples, len(pairs), 1, 1
        if signed_round < 1:
            signed_round = rnd + 1
        r, vs = self.sign_as(a, (signed_round, update, examples, *pairs[pair]))
        return update, examples, pair, r, vs

    @rule(
        which=st.sampled_from(["auto"] * 6 + ["current", "next", "previous", "after_next"]),
        base=st.sampled_from(["all", "all", "all", "none"]),
        extra=st.lists(st.tuples(ACTOR, st.sampled_from(GOOD_KINDS)), max_size=4),
        extra_first=st.booleans(),
        bad=st.sampled_from([None] * 18 + BAD_KINDS),
        bad_at=st.integers(0, 8),
        dup=st.sampled_from([False] * 7 + [DUPLICATE_PAIRS]),
        pay=st.sampled_from(
            ["right", "right", "right", "none", "none", "tampered", "longer", "other_transcript"]
        ),
        sender=ACCOUNT,
    )
    def submit(
        self,
        which: str,
        base: str,
        extra: list[tuple[int, str]],
        extra_first: bool,
        bad: str | None,
        bad_at: int,
        dup: bool,
        pay: str,
        sender: int,
    ) -> None:
        """A batch for the current round (`auto`: the next one once the current one closed;
        or another round): the honest message of every member eligible in the round (`all`),
        random other messages by eligible members, one that makes the batch revert (`bad`),
        paying round - 1 with its honest result (`right`), nothing, a tampered one, one with
        an extra score or one with the wrong transcript."""
        m = self.m
        offset = {"current": 0, "next": 1, "previous": -1, "after_next": 2}.get(which, 0)
        if which == "auto" and m.current and self.now >= m.closes_at(m.current):
            offset = 1
        rnd = max(m.current + offset, 0)
        pairs = self.pairs_for(rnd, dup) if rnd else [(ZERO, ZERO)]
        entries = []
        if rnd:
            eligible = [a for a in m.members if m.first_round[a] <= rnd]
            if base == "all":
                entries += [self.entry(a, rnd, "honest", pairs) for a in eligible]
            others = [
                self.entry(eligible[who % len(eligible)], rnd, kind, pairs)
                for who, kind in extra
                if eligible
            ]
            entries = others + entries if extra_first else entries + others
            if bad is not None:
                who = eligible[bad_at % len(eligible)] if eligible else self.d.accounts[0]
                if bad == "outsider":
                    who = self.d.accounts[N_ACCOUNTS]
                elif bad == "newcomer":
                    newcomers = [a for a in m.members if a not in eligible]
                    who = newcomers[0] if newcomers else self.d.accounts[N_ACCOUNTS]
                kind = "honest" if bad in ("outsider", "newcomer") else bad
                entries.insert(bad_at % (len(entries) + 1), self.entry(who, rnd, kind, pairs))
        contributors: list[str] = []
        scores: list[int] = []
        transcript = ZERO
        if pay != "none" and rnd > 1:
            honest_who, honest_points, transcript = self.honest_result(rnd - 1)
            contributors, scores = list(honest_who), list(honest_points)
            if pay == "tampered":
                scores = [s + 1 for s in scores]
            elif pay == "longer":
                scores = [*scores, 1]
            elif pay == "other_transcript":
                transcript = other_transcript(transcript)
        self.submit_batch(rnd, pairs, entries, contributors, scores, transcript,
                          self.d.accounts[sender])  # fmt: skip

    @rule(pay=st.sampled_from(["right", "right", "other_transcript"]), sender=ACCOUNT)
    def honest_round(self, pay: str, sender: int) -> None:
        """The common case, so that sequences get far (payments, claims, the last round):
        every eligible member's honest message for the current round, or the next once the
        current one closed, paying round - 1 with its honest result (or the wrong
        transcript)."""
        self.submit("auto", "all", [], False, None, 0, False, pay, sender)

    def submit_batch(
        self,
        rnd: int,
        pairs: list[tuple[bytes, bytes]],
        entries: list[tuple[bytes, int, int, int, int]],
        contributors: list[str],
        scores: list[int],
        transcript: bytes,
        sender: str,
    ) -> None:
        after = copy.deepcopy(self.m)
        reason = self.simulate_submit(after, rnd, pairs, entries, contributors, scores, transcript)
        self.expect(
            "submit",
            reason,
            lambda: self.task.submit(
                rnd, pairs, entries, contributors, scores, transcript, sender=sender
            ),
        )
        if reason is None:
            for event in self.task.get_logs():
                if type(event).__name__ == "Distributed":
                    assert event.transcript == transcript
                    if transcript != ZERO:
                        OUTCOMES["submit: paid with a transcript"] += 1
            finalized = [e for e in self.task.get_logs() if type(e).__name__ == "Finalized"]
            assert len(finalized) == len(after.finalized) - len(self.m.finalized)
            for event in finalized:
                r = event.round
                assert event.stake == after.finalized_stake[r] >= after.quorum_stake(r) > 0
                assert (event.model_digest, event.result_digest) == after.finalized[r]
            for r in range(max(rnd - 2, 1), rnd + 1):  # advancing fails round - 2
                if self.m.outcome(r) != after.outcome(r):
                    OUTCOMES[
                        f"submit: round {'finalized' if after.outcome(r) == 1 else 'failed'}"
                    ] += 1
            if after.total_earned != self.m.total_earned:
                OUTCOMES["submit: paid"] += 1
            if (
                rnd in after.rounds
                and after.rounds[rnd].closed_at
                and not (rnd in self.m.rounds and self.m.rounds[rnd].closed_at)
            ):
                OUTCOMES["submit: closed early"] += 1
            self.m = after
            self.touched.update(self.d.accounts)

    def simulate_submit(
        self,
        m: Model,
        rnd: int,
        pairs: list[tuple[bytes, bytes]],
        entries: list[tuple[bytes, int, int, int, int]],
        contributors: list[str],
        scores: list[int],
        transcript: bytes,
    ) -> str | None:
        """Task.submit on the model `m` (changed in place): a revert reason or None."""
        now = self.now
        if rnd != m.current:
            if m.current == 0:
                return "not started"
            if rnd != m.current + 1:
                return "not the current round"
            if rnd > MAX_ROUNDS + 1:
                return "task is over"
            if now < m.closes_at(m.current):
                return "current round still open"
            m.fail(m.current - 1)
            m.open(rnd, now)
        if now >= m.closes_at(rnd):
            return "round closed"
        w = m.rounds[rnd]
        previous = rnd - 1
        prev_open = previous != 0 and m.outcome(previous) == OPEN
        quorum = m.quorum_stake(previous) if previous else 0
        sums: dict[bytes, int] = {}  # this batch's tallies of round - 1, by pair
        for update, examples, index, r, vs in entries:
            if index >= len(pairs):
                return "pair index out of range"
            model, result = pairs[index]
            signer, error = recover(
                message_digest(self.d.domain, rnd, update, examples, model, result), r, vs
            )
            if error:
                return error
            assert signer is not None
            if m.status.get(signer) != STATUS_ACTIVE:
                return "signer is not a member"
            if m.first_round[signer] > rnd:
                return "signer joined during this round"
            if m.last_round.get(signer, 0) == rnd:
                OUTCOMES["submit: skipped a second message"] += 1
                continue
            if update == ZERO:
                if examples != 0:
                    return "examples without an update"
            else:
                if rnd > MAX_ROUNDS:
                    return "no updates after the last round"
                if not 1 <= examples < 2**64:
                    return "examples not in [1, 2**64)"
            stake = m.stake[signer]
            m.last_round[signer] = rnd
            m.accepted[(rnd, signer)] = (rnd, update, examples, model, result)
            w.count += 1
            w.submitted += stake
            if prev_open and m.first_round[signer] <= previous and model != ZERO:
                h = pair_hash(model, result)
                sums[h] = sums.get(h, m.tally.get((previous, h), 0)) + stake
                if sums[h] >= quorum:
                    prev_open = False
                    m.rounds[previous].outcome = FINALIZED
                    m.finalized[previous] = (model, result)
                    m.finalized_stake[previous] = sums[h]
                    m.lineage = (previous, lineage_hash(m.lineage[1], previous, model))
        if prev_open:
            m.tally.update(((previous, h), v) for h, v in sums.items())
        if w.quorum_at == 0 and w.submitted >= m.quorum_stake(rnd):
            w.quorum_at = now
        if w.closed_at == 0 and w.count == w.members:
            w.closed_at = now
        if contributors and previous != 0:
            return m.distribute(previous, contributors, scores, transcript, strict=False)
        return None

    @rule(
        offset=st.sampled_from([None, None, None, -1, -2, 0]),
        variant=st.sampled_from(
            ["right", "right", "right", "tampered", "empty", "other_transcript"]
        ),
    )
    def distribute(self, offset: int | None, variant: str) -> None:
        """Distribute a round: the latest finalized one not paid yet (None), or another."""
        m = self.m
        pending = [r for r in m.finalized if not m.rounds[r].distributed]
        default = m.current + (-1 if offset is None else offset)
        r = pending[-1] if offset is None and pending else max(default, 0)
        contributors: list[str] = []
        scores: list[int] = []
        transcript = ZERO
        if r in m.finalized and m.finalized[r][1] in self.results and variant != "empty":
            who, points, transcript = self.results[m.finalized[r][1]]
            contributors, scores = list(who), list(points)
            if variant == "tampered":
                scores = [s + 1 for s in scores] if scores else [1]
                contributors = contributors or [self.d.accounts[0]]
            elif variant == "other_transcript":
                transcript = other_transcript(transcript)
        after = copy.deepcopy(m)
        reason = after.distribute(r, contributors, scores, transcript, strict=True)
        self.expect(
            "distribute",
            reason,
            lambda: self.task.distribute(r, contributors, scores, transcript),
        )
        if reason is None:
            (event,) = (e for e in self.task.get_logs() if type(e).__name__ == "Distributed")
            assert (event.round, event.transcript) == (r, transcript)
            if transcript != ZERO:
                OUTCOMES["distribute: paid with a transcript"] += 1
            self.m = after
            self.touched.update(contributors)

    @rule()
    def close(self) -> None:
        m = self.m
        reason = None
        if m.current == 0:
            reason = "not started"
        elif self.now < m.closes_at(m.current):
            reason = "current round still open"
        elif m.current == 1 or m.outcome(m.current - 1) != OPEN:
            reason = "nothing to close"
        self.expect("close", reason, lambda: self.task.close())
        if reason is None:
            OUTCOMES["close: failed a round"] += 1
            m.fail(m.current - 1)

    @rule(who=ACTOR, zero_key=st.sampled_from([False] * 5 + [True]),
          blob=st.booleans(), rounds=st.sampled_from(KEY_ROUNDS),
          consent=st.sampled_from([None, None, *POLICIES]))  # fmt: skip
    def set_keys(self, who: int, zero_key: bool, blob: bool, rounds: tuple[int, int, int],
                 consent: bytes | None) -> None:  # fmt: skip
        """An account registers secure-aggregation keys (a Keys event, nothing stored), or
        (`consent` not None) its data owner's consent policy (one rule for both: every rule
        more makes the sequences' other steps rarer)."""
        if consent is not None:
            self.set_consent(who, consent)
            return
        a = self.actor(who)
        key = ZERO if zero_key else hashlib.sha256(f"channel/{a}".encode()).digest()
        digest = hashlib.sha256(f"keys/{a}/{rounds}".encode()).digest() if blob else ZERO
        first, last = rounds[:2]
        reason = None
        if self.m.status.get(a) != STATUS_ACTIVE:
            reason = "not a member"
        elif key == ZERO:
            reason = "zero key"
        elif (digest != ZERO and not 1 <= first <= last) or (
            digest == ZERO and rounds != (0, 0, 0)
        ):
            reason = "bad rounds"
        self.expect("set_keys", reason,
                    lambda: self.task.set_keys(key, digest, *rounds, sender=a))  # fmt: skip
        if reason is None:
            (event,) = self.task.get_logs()
            assert type(event).__name__ == "Keys"
            assert (event.member, event.channel_key, event.keys_digest) == (a, key, digest)
            assert (event.first_round, event.last_round, event.recipients) == rounds

    @rule(who=ACTOR, sender=ACCOUNT)
    def claim(self, who: int, sender: int) -> None:
        """Two times in three for an account with something to claim (if any)."""
        m = self.m
        a = self.pick(who, lambda a: m.earned.get(a, 0) > m.claimed.get(a, 0))
        amount = m.earned.get(a, 0) - m.claimed.get(a, 0)
        reason = None
        if m.status.get(a) == STATUS_SLASHED:
            reason = "slashed"
        elif amount == 0:
            reason = "nothing to claim"
        self.expect("claim", reason, lambda: self.task.claim(a, sender=self.d.accounts[sender]))
        if reason is None:
            m.claimed[a] = m.earned[a]
            m.total_claimed += amount
            assert self.token.balanceOf(a) == m.claimed[a]
            self.touched.add(a)

    # ------------------------------------------------------------ evidence

    @rule(
        pick=st.integers(0, 2**16),
        variant=st.sampled_from(SLASH_VARIANTS),
        sender=ACCOUNT,
    )
    def slash(self, pick: int, variant: str, sender: int) -> None:
        """Evidence against the signer of a recorded message: two different messages it
        signed for one round (`genuine`, or sent for the wrong round, or one with a garbage or
        malleable signature), or fake: the same message twice, two signers' messages, a
        message changed after signing."""
        evidence = sorted(
            ((k, sorted(v)) for k, v in self.signed.items() if len(v) > 1),
            key=lambda x: (x[0][1], self.d.accounts.index(x[0][0])),
        )
        signed = sorted(self.signed.items(), key=lambda x: (x[0][1], x[0][0]))
        if variant in ("genuine", "wrong_round", "garbage", "high_s") and evidence:
            (a, rnd), msgs = evidence[pick % len(evidence)]
            first, second = msgs[pick % len(msgs)], msgs[(pick + 1) % len(msgs)]
            one, two = (a, first), (a, second)
        elif signed:
            (a, rnd), recorded = signed[pick % len(signed)]
            first = sorted(recorded)[0]
            one = two = (a, first)
            if variant == "two_signers":
                others = [(b, sorted(v)[0]) for (b, r2), v in signed if r2 == rnd and b != a]
                if others:
                    two = others[pick % len(others)]
            elif variant == "tampered":
                two = (a, (rnd, first[1], first[2] + 1, first[3], first[4]))
        else:
            OUTCOMES["slash: no message signed yet"] += 1
            return
        ma = self.message(one[0], one[1], real=True)
        mb = self.message(two[0], two[1], real=variant != "tampered")
        if variant == "tampered":  # the signature of the untampered message
            mb = (*mb[:4], ma[4], ma[5])
        if variant == "garbage":
            mb = (*mb[:4], 0, 1)
        elif variant == "high_s":
            mb = (*mb[:4], mb[4], (mb[5] & (1 << 255)) | (HALF_N + 1))
        if variant == "wrong_round":
            rnd += 1
        self.slash_with(rnd, ma, mb, self.d.accounts[sender])

    def message(self, a: str, msg: Msg, real: bool) -> tuple[bytes, int, bytes, bytes, int, int]:
        """A Message struct (update, examples, model, result, r, vs) as `a` signed it."""
        r, vs = sign(self.identity(a), self.d.domain, msg) if real else (1, 1)
        return msg[1], msg[2], msg[3], msg[4], r, vs

    def slash_with(self, rnd: int, ma: tuple[Any, ...], mb: tuple[Any, ...], sender: str) -> None:
        m = self.m
        ha = message_digest(self.d.domain, rnd, *ma[:4])
        hb = message_digest(self.d.domain, rnd, *mb[:4])
        reason: str | None = None
        signer: str | None = None
        if ha == hb:
            reason = "the messages are the same"
        else:
            signer, reason = recover(ha, ma[4], ma[5])
            if reason is None:
                other, reason = recover(hb, mb[4], mb[5])
                if reason is None and other != signer:
                    reason = "different signers"
        if reason is None and (
            signer is None or m.status.get(signer) not in (STATUS_ACTIVE, STATUS_LEFT)
        ):
            reason = "no stake to slash"
        if reason is None and signer is not None and rnd < m.first_round[signer]:
            reason = "offence before this membership"
        treasury = boa.env.get_balance(self.d.treasury)
        caller = boa.env.get_balance(sender)
        self.expect("slash", reason, lambda: self.task.slash(rnd, ma, mb, sender=sender))
        if reason is not None:
            return
        assert signer is not None
        # No slashing without evidence: the test's record holds two different messages that
        # `signer` signed for `rnd`.
        messages = self.signed.get((signer, rnd), set())
        assert {(rnd, *ma[:4]), (rnd, *mb[:4])} <= messages
        assert len(messages) >= 2
        stake = m.stake[signer]
        share = stake * SLASH_SHARE_BPS // 10000
        if m.status[signer] == STATUS_ACTIVE:
            m.deactivate(signer)
            OUTCOMES["slash: an active member"] += 1
        else:
            OUTCOMES["slash: a member that left"] += 1
        m.status[signer] = STATUS_SLASHED
        m.stake[signer] = 0
        m.withdraw_after[signer] = 0
        m.total_slashed += stake
        m.treasury += stake - share
        assert boa.env.get_balance(self.d.treasury) == treasury + stake - share
        if sender != self.d.treasury:
            assert boa.env.get_balance(sender) == caller + share
        self.touched.add(signer)

    # ------------------------------------------------------------ invariants

    @invariant()
    def chain_obeys_the_rules(self) -> None:
        """Checked after every step. A reverted call changes nothing on chain, so the checks
        that read contract state run after the steps in which some call succeeded (the phase
        check after the clock moved); the ETH and model checks run always."""
        m = self.m
        self.eth_balance_is_stakes_in_minus_out()
        self.model_is_consistent()
        if self.changed:
            task = self.task
            assert task.current_round() == m.current <= MAX_ROUNDS + 1
            assert [str(a) for a in task.members()] == m.members
            assert task.active_stake() == m.active_stake()
            self.rewards_add_up()
            self.accounts_agree(sorted(self.touched))
            for r in range(max(m.current - 1, 1), m.current + 1):
                self.round_agrees(r)
            self.finalized_rounds_reached_quorum()
            self.rules_agree()
        elif self.clock_moved and m.current:
            assert self.task.phase(m.current) == m.phase(m.current, self.now)
        self.changed = self.clock_moved = False
        self.touched.clear()

    def eth_balance_is_stakes_in_minus_out(self) -> None:
        m = self.m
        expected = m.total_staked - m.total_withdrawn - m.total_slashed
        assert boa.env.get_balance(self.task.address) == expected
        assert boa.env.get_balance(self.d.treasury) == m.treasury
        if self.changed:
            assert self.task.treasury_owed() == 0  # the treasury (an account) takes payments
            assert self.task.total_staked() == m.total_staked
            assert self.task.total_withdrawn() == m.total_withdrawn
            assert self.task.total_slashed() == m.total_slashed

    def model_is_consistent(self) -> None:
        """The model's own invariants (the chain is compared with the model elsewhere)."""
        m = self.m
        assert m.members == [a for a in m.members if m.status[a] == STATUS_ACTIVE]
        assert len(set(m.members)) == len(m.members) <= MAX_PARTICIPANTS
        assert {a for a, s in m.status.items() if s == STATUS_ACTIVE} == set(m.members)
        for a, s in m.status.items():
            if s == STATUS_SLASHED:  # no slashing without evidence
                assert any(len(v) > 1 for (b, _), v in self.signed.items() if b == a)
                assert m.stake[a] == 0
        assert m.total_earned <= m.distributed_rewards <= MAX_ROUNDS * m.max_reward()
        assert m.total_earned == sum(m.earned.values())
        assert m.total_claimed == sum(m.claimed.values()) <= m.total_earned

    def rewards_add_up(self) -> None:
        m, task = self.m, self.task
        earned, claimed = task.total_earned(), task.total_claimed()
        assert earned == m.total_earned <= MAX_ROUNDS * m.max_reward()
        assert claimed == m.total_claimed <= earned
        assert self.token.totalSupply() == claimed

    def accounts_agree(self, accounts: Any) -> None:
        m, task = self.m, self.task
        for a in accounts:
            if a == ZERO_ADDRESS or a not in self.d.accounts:
                continue
            status = m.status.get(a, STATUS_NONE)
            assert task.status_of(a) == status
            assert task.is_member(a) == (status == STATUS_ACTIVE)
            assert task.stake_of(a) == m.stake.get(a, 0)
            assert task.first_round_of(a) == m.first_round.get(a, 0)
            assert task.last_round_of(a) == m.last_round.get(a, 0)
            assert task.earned_of(a) == m.earned.get(a, 0)
            assert task.claimed_of(a) == m.claimed.get(a, 0)
            assert task.withdraw_after(a) == m.withdraw_after.get(a, 0)
            if status == STATUS_SLASHED:
                assert any(len(v) > 1 for (b, _), v in self.signed.items() if b == a)

    def round_agrees(self, r: int) -> None:
        m, task = self.m, self.task
        now = self.now
        assert task.phase(r) == m.phase(r, now)
        assert task.closes_at(r) == m.closes_at(r)
        w = m.rounds.get(r)
        if w is None:
            assert task.round_start(r) == 0
            return
        assert task.round_start(r) == w.start
        assert task.round_members(r) == w.members
        assert task.message_count(r) == w.count == sum(1 for (q, _) in m.accepted if q == r)
        assert w.count <= w.members
        assert task.round_stake(r) == w.stake
        assert task.submitted_stake(r) == w.submitted <= w.stake
        assert task.distributed(r) == w.distributed
        if r == MAX_ROUNDS:
            assert task.finished() == (w.outcome != OPEN)

    def rules_agree(self) -> None:
        """The lineage; the rules in force around the current round, and the current-round
        views (when a round opened or the rules changed since the last check)."""
        m, task = self.m, self.task
        assert task.lineage() == m.lineage
        seen = (m.current, len(m.epochs), m.epochs[-1].config_digest)
        if seen == self.rules_seen:
            return
        self.rules_seen = seen
        for r in range(max(m.current - 1, 0), m.current + 2):
            assert task.rules_at(r) == m.rules_at(r).view()
        rules = m.rules_at(m.current)
        assert (task.quorum_bps(), task.min_stake(), task.reward_per_round()) == (
            rules.quorum_bps,
            rules.min_stake,
            rules.reward_per_round,
        )
        assert (task.access_policy(), task.allowlist_only(), task.config_digest()) == (
            rules.access_policy,
            rules.allowlist_only,
            rules.config_digest,
        )

    def finalized_rounds_reached_quorum(self) -> None:
        m = self.m
        for r, (model, result) in m.finalized.items():
            if self.checked_rounds.get(r) == m.rounds[r].distributed:
                continue  # checked already, and nothing changed since
            assert self.task.phase(r) == PHASE_FINALIZED
            assert self.task.model_digest(r) == model
            assert self.task.result_digest(r) == result
            # The tally that finalized the round (the Finalized event's, checked then).
            tally = m.finalized_stake[r]
            quorum = self.task.quorum_stake(r)
            assert quorum == m.quorum_stake(r)
            bps = m.rules_at(r).quorum_bps  # the round's own
            assert quorum * 10000 >= bps * self.task.round_stake(r)
            assert tally >= quorum > 0
            self.checked_rounds[r] = m.rounds[r].distributed


@pytest.fixture(scope="module")
def deployment() -> Deployed:
    return deploy()


def run(deployment: Deployed, examples: int) -> None:
    TaskMachine.deployment = deployment
    OUTCOMES.clear()
    run_state_machine_as_test(
        TaskMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            # The same sequences every run: reproducible in CI, and the coverage checks below
            # cannot flake on an unlucky draw.
            derandomize=True,
            database=None,
        ),
    )
    assert OUTCOMES["sequences"] >= examples


def test_task_state_machine_quick(deployment: Deployed) -> None:
    run(deployment, QUICK_EXAMPLES)


@pytest.mark.slow
def test_task_state_machine(deployment: Deployed) -> None:
    run(deployment, EXAMPLES)
    # The sequences reached the interesting states, not only reverts (a rare revert such as
    # distribute's "contributors not strictly increasing", or submit's "signer joined during
    # this round", is tested in test_contracts.py and the ledger suite).
    missing = [o for o in (
        "join: ok",
        "leave: ok",
        "withdraw: ok",
        "submit: ok",
        "submit: round finalized",
        "submit: round failed",
        "submit: paid",
        "submit: closed early",
        "submit: skipped a second message",
        "submit: signer is not a member",
        "submit: no updates after the last round",
        "submit: current round still open",
        "submit: round closed",
        "submit: paid with a transcript",
        "distribute: ok",
        "distribute: paid with a transcript",
        "distribute: result digest mismatch",
        "close: failed a round",
        "claim: ok",
        "set_keys: ok",
        "set_keys: not a member",
        "set_keys: zero key",
        "set_keys: bad rounds",
        "set_consent: ok",
        "set_consent: not a member",
        "join: with consent",
        "reconfigure: ok",
        "reconfigure: replaced a pending change",
        "reconfigure: not the governor",
        "reconfigure: quorum not in (5000, 10000]",
        "reconfigure: total reward above 2**88 - 1",
        "slash: an active member",
        "slash: a member that left",
        "slash: different signers",
        "slash: the messages are the same",
    ) if OUTCOMES[o] == 0]  # fmt: skip
    assert not missing, missing
