"""The Task contract's numbering and formulas, in Python, without a chain.

Nodes, the in-memory ledger and the audit compute exactly what the contract computes, from
here: the phase, status and access-policy numbers, the aggregation rules' on-chain ids, the
result digest the contract checks (:func:`result_digest`; the signed round message is
:mod:`fedledger.ledger.messages`), the quorum (:func:`quorum_stake`), the model lineage's
hash chain (:func:`lineage_hash`), a round's committee (:func:`committee_seed`,
:func:`sample_committee`), a consent policy's digest (:func:`consent_digest`) and the
rules a task configuration asks for (:func:`rules_for`).

Hashing uses eth_abi and eth_utils (the contract's ABI encoding and keccak256); nothing here
imports web3 or talks to a chain.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak

from fedledger.config import ACCESS_POLICIES, TaskConfig

if TYPE_CHECKING:
    from fedledger.ledger.records import TaskRules

__all__ = [
    "ACCESS_MEMBERS",
    "ACCESS_PUBLIC",
    "ACCESS_TOKEN_HOLDERS",
    "BPS",
    "MAX_PARTICIPANTS",
    "PHASE_AGGREGATE",
    "PHASE_ATTEST",
    "PHASE_FAILED",
    "PHASE_FINALIZED",
    "PHASE_NAMES",
    "PHASE_NOT_STARTED",
    "PHASE_OPEN",
    "RULE_IDS",
    "RULE_NAMES",
    "STATUS_ACTIVE",
    "STATUS_LEFT",
    "STATUS_NONE",
    "STATUS_SLASHED",
    "ZERO_ADDRESS",
    "committee_seed",
    "consent_digest",
    "lineage_hash",
    "quorum_stake",
    "result_digest",
    "rule_params_digest",
    "rules_for",
    "sample_committee",
    "sort_result",
]

# Task.phase(round)
PHASE_NOT_STARTED: Final = 0
PHASE_OPEN: Final = 1
"""The round takes its members' signed messages (updates, and attestations of round - 1)."""
PHASE_AGGREGATE: Final = 2
"""Closed; round + 1 not open yet: nodes aggregate the round's updates."""
PHASE_ATTEST: Final = 3
"""Round + 1 is open: its messages attest this round."""
PHASE_FINALIZED: Final = 4
PHASE_FAILED: Final = 5
PHASE_NAMES: Final[Mapping[int, str]] = {
    PHASE_NOT_STARTED: "not started", PHASE_OPEN: "open", PHASE_AGGREGATE: "aggregate",
    PHASE_ATTEST: "attest", PHASE_FINALIZED: "finalized", PHASE_FAILED: "failed",
}  # fmt: skip

# Task.status_of(address)
STATUS_NONE: Final = 0
STATUS_ACTIVE: Final = 1
STATUS_LEFT: Final = 2
STATUS_SLASHED: Final = 3

# Task.access_policy()
ACCESS_MEMBERS: Final = 0
ACCESS_TOKEN_HOLDERS: Final = 1
ACCESS_PUBLIC: Final = 2

#: Task's MAX: the most members at once, and the most contributors a result can name.
MAX_PARTICIPANTS: Final = 256

#: Basis points: ``quorum_bps`` is out of this.
BPS: Final = 10_000

ZERO_ADDRESS: Final = "0x" + "00" * 20
_ZERO32: Final = b"\x00" * 32

#: The on-chain id of each aggregation rule (``Task.rule_id``). Never renumber.
RULE_IDS: Final[Mapping[str, int]] = {
    "fedavg": 1,
    "median": 2,
    "trimmed_mean": 3,
    "krum": 4,
    "multi_krum": 5,
    "centered_clipping": 6,
    "geometric_median": 7,
}
RULE_NAMES: Final[Mapping[int, str]] = {v: k for k, v in RULE_IDS.items()}


def result_digest(
    contributors: Sequence[str | bytes], scores: Sequence[int], transcript: bytes | None = None
) -> bytes:
    """The round's result digest: keccak256(abi_encode(contributors, scores)), or with a
    secure-aggregation transcript digest (32 bytes, not zero)
    keccak256(abi_encode(contributors, scores, transcript)). ``None`` or 32 zero bytes: no
    transcript (the first formula).

    ``contributors`` must be strictly increasing addresses (as the contract requires to
    distribute): :func:`sort_result` orders a result that way.
    """
    if len(contributors) != len(scores):
        raise ValueError("contributors and scores differ in length")
    addresses = [to_canonical_address(a) for a in contributors]
    if transcript is None or _bytes32(transcript) == _ZERO32:
        return keccak(abi_encode(["address[]", "uint256[]"], [addresses, list(scores)]))
    return keccak(
        abi_encode(["address[]", "uint256[]", "bytes32"], [addresses, list(scores), transcript])
    )


def sort_result(
    contributors: Sequence[str | bytes], scores: Sequence[int]
) -> tuple[list[str], list[int]]:
    """Contributors (checksummed) and their scores, in the increasing address order."""
    if len(contributors) != len(scores):
        raise ValueError("contributors and scores differ in length")
    pairs = sorted(zip((to_canonical_address(a) for a in contributors), scores, strict=True))
    if any(a == b for (a, _), (b, _) in itertools.pairwise(pairs)):
        raise ValueError("duplicate contributor")
    return [to_checksum_address(a) for a, _ in pairs], [s for _, s in pairs]


def _bytes32(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError(f"expected 32 bytes, got {len(value)}")
    return value


def lineage_hash(previous: bytes, round: int, model: bytes) -> bytes:
    """The model lineage after finalized round ``round`` with model digest ``model``:
    keccak256(abi_encode(previous, round, model)), ``previous`` being the lineage before it
    (32 zero bytes before the first finalized round), as the contract chains it
    (``Task.lineage``)."""
    return keccak(
        abi_encode(["bytes32", "uint256", "bytes32"], [_bytes32(previous), round, _bytes32(model)])
    )


def consent_digest(policy: bytes) -> bytes:
    """A consent policy's digest in the ``Consent`` event: sha256 of the policy, 32 zero bytes
    for an empty one."""
    return hashlib.sha256(policy).digest() if policy else _ZERO32


def committee_seed(*, prevrandao: bytes | int, parent_hash: bytes, task: str, round: int) -> bytes:
    """The seed of round ``round``'s committee, as the contract draws it in the block that
    opened round ``round - 1``: keccak256(abi_encode(prevrandao, blockhash(number - 1), task,
    round)), from that block's ``prevRandao`` (``mixHash``) and its parent's hash."""
    randao = prevrandao if isinstance(prevrandao, int) else int.from_bytes(prevrandao, "big")
    if not 0 <= randao < 2**256 or len(parent_hash) != 32 or round < 1:
        raise ValueError("prevrandao must be a uint256, parent_hash 32 bytes, round >= 1")
    return keccak(abi_encode(["uint256", "bytes32", "address", "uint256"],
                             [randao, parent_hash, to_checksum_address(task), round]))  # fmt: skip


def sample_committee(seed: bytes, members: Sequence[str], size: int) -> tuple[str, ...]:
    """The committee the contract draws from ``seed`` over ``members`` (the Task's member
    array, in its order, when the draw happened): a partial Fisher-Yates shuffle of the
    positions, draw ``j`` taking position ``j + keccak256(abi_encode(seed, j)) % (n - j)``.
    Returns the ``size`` members in draw order; no committee (every member) when there are at
    most ``size`` members."""
    n = len(members)
    if len(seed) != 32 or size < 1:
        raise ValueError("the seed must be 32 bytes and the committee at least 1 member")
    if n <= size:
        return tuple(members)
    order = list(range(n))
    chosen = []
    for j in range(size):
        draw = int.from_bytes(keccak(abi_encode(["bytes32", "uint256"], [seed, j])), "big")
        k = j + draw % (n - j)
        order[j], order[k] = order[k], order[j]
        chosen.append(members[order[j]])
    return tuple(chosen)


def quorum_stake(rules: TaskRules, round_stake: int) -> int:
    """ceil(quorum_bps * round_stake / 10000), as the contract computes it."""
    return -(-rules.quorum_bps * round_stake // BPS)


def rule_params_digest(task: TaskConfig) -> bytes:
    """sha256 of the canonical JSON of the aggregation rule, its ``f`` and its parameters."""
    agg = task.aggregation
    blob = json.dumps({"rule": agg.rule, "f": agg.f, "params": dict(agg.params)},
                      sort_keys=True, separators=(",", ":"))  # fmt: skip
    return hashlib.sha256(blob.encode()).digest()


def rules_for(
    task: TaskConfig, *, token: str, treasury: str, governor: str = ZERO_ADDRESS
) -> TaskRules:
    """The contract rules a task configuration asks for (``governor``: who may change the
    governable ones; the zero address: nobody)."""
    # Imported here: the records import this module's numbering (a record's phase, its rule).
    from fedledger.ledger.records import TaskRules

    task.check_ledger()
    cfg = task.ledger
    return TaskRules(
        token=to_checksum_address(token),
        rule_id=RULE_IDS[task.aggregation.rule],
        rule_params_digest=rule_params_digest(task),
        config_digest=task.digest(),
        quorum_bps=cfg.quorum_bps,
        min_stake=cfg.min_stake,
        window=cfg.window,
        grace=cfg.grace,
        max_rounds=task.rounds,
        max_participants=cfg.max_participants,
        allowlist_only=cfg.allowlist,
        reward_per_round=cfg.reward_wei,
        access_policy=ACCESS_POLICIES.index(cfg.access),
        cooldown=cfg.cooldown,
        treasury=to_checksum_address(treasury),
        governor=to_checksum_address(governor),
        committee=cfg.committee,
    )
