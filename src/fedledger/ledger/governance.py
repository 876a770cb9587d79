"""Governance on chain: token-weighted proposals through a timelock, and the model NFT.

The contracts (docs/governance.md):

* **Timelock** (snekmate's ``timelock_controller``): runs the calls that passed a vote, after a
  minimum delay, from its own address; it owns, or governs, what the token holders govern.
* **Governor**: proposals of one call each, voted with the reward token's checkpointed balances
  at the block before the proposal, for ``voting_period`` seconds; one that succeeded (more for
  than against, for + abstain at least the quorum) is queued on the timelock, then executed.
* **ModelNFT**: one ERC-721 token per finalized round of a task (token id = round), minted
  lazily and in order against the task's lineage hash, owned by the task's governor.

:func:`deploy_governance` deploys a timelock and a governor for a token, :func:`deploy_model_nft`
a task's NFT contract. :class:`Governance` and :class:`ModelNFT` are one account's handles
(``account=None``: read-only). Every public function and method raises only fedledger's errors
(:mod:`fedledger.ledger.chain.base`): a revert is a :class:`~fedledger.errors.TransactionReverted`
whose ``reason`` is the contract's (``"already voted"``, ``"no votes"``...), an argument checked
here before any transaction a :class:`~fedledger.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3.contract import Contract
from web3.contract.contract import ContractFunction

from fedledger.errors import ConfigError, LedgerError, TransactionReverted
from fedledger.ledger import rules
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import OUT_OF_GAS, Chain, Receipt
from fedledger.ledger.chain.base import map_chain_errors, translated
from fedledger.ledger.records import TxResult

__all__ = [
    "MAX_CALL",
    "MAX_CHAIN",
    "MAX_DESCRIPTION",
    "MAX_MINT",
    "STATE_ACTIVE",
    "STATE_CANCELED",
    "STATE_DEFEATED",
    "STATE_EXECUTED",
    "STATE_NAMES",
    "STATE_QUEUED",
    "STATE_SUCCEEDED",
    "STATE_UNKNOWN",
    "VOTE_ABSTAIN",
    "VOTE_AGAINST",
    "VOTE_FOR",
    "Governance",
    "GovernanceAddresses",
    "MintedModel",
    "ModelNFT",
    "Proposal",
    "Proposed",
    "Vote",
    "deploy_governance",
    "deploy_model_nft",
    "lineage_hash",
    "proposal_id",
]

# Governor.state(id)
STATE_UNKNOWN: Final = 0
STATE_ACTIVE: Final = 1
STATE_DEFEATED: Final = 2
STATE_SUCCEEDED: Final = 3
STATE_QUEUED: Final = 4
STATE_EXECUTED: Final = 5
STATE_CANCELED: Final = 6
STATE_NAMES: Final = {
    STATE_UNKNOWN: "unknown",
    STATE_ACTIVE: "active",
    STATE_DEFEATED: "defeated",
    STATE_SUCCEEDED: "succeeded",
    STATE_QUEUED: "queued",
    STATE_EXECUTED: "executed",
    STATE_CANCELED: "canceled",
}

# Governor.castVote(id, support)
VOTE_AGAINST: Final = 0
VOTE_FOR: Final = 1
VOTE_ABSTAIN: Final = 2

MAX_CALL: Final = 10240
"""The longest calldata of a proposal (the Governor's and the Timelock's MAX_CALL)."""
MAX_DESCRIPTION: Final = 1024
"""The longest description of a proposal, in UTF-8 bytes."""
MAX_CHAIN: Final = 1024
"""The most later rounds (checked, not minted) one ModelNFT.mint_prefix call takes."""
MAX_MINT: Final = 64
"""The most tokens one ModelNFT.mint call mints."""

BPS: Final = 10_000
ZERO32: Final = b"\x00" * 32
PROPOSER_ROLE: Final = keccak(text="PROPOSER_ROLE")
EXECUTOR_ROLE: Final = keccak(text="EXECUTOR_ROLE")
CANCELLER_ROLE: Final = keccak(text="CANCELLER_ROLE")
DEFAULT_ADMIN_ROLE: Final = ZERO32

# Gas limits: a fixed limit above each call's costliest path costs nothing (only gas used is
# paid) and saves an estimate; per byte of calldata and per token where the cost grows.
_GAS_PROPOSE = 200_000
_GAS_VOTE = 150_000
_GAS_CANCEL = 100_000
_GAS_QUEUE = 250_000
_GAS_EXECUTE = 1_000_000
"""execute also pays for the target's call: more than enough for a reconfiguration; a call
that needs more runs out of gas once, then is estimated (see :meth:`Governance.execute`)."""
_GAS_PER_BYTE = 60
_GAS_MINT_BASE = 120_000
_GAS_MINT_EACH_CHECKED = 3_000
_GAS_MINT_EACH_MINTED = 200_000


def proposal_id(target: str, data: bytes, description: str) -> int:
    """A proposal's id, as the Governor computes it: keccak256(abi_encode(target,
    keccak256(data), keccak256(description)))."""
    encoded = abi_encode(
        ["address", "bytes32", "bytes32"],
        [to_checksum_address(target), keccak(data), keccak(description.encode("utf-8"))],
    )
    return int.from_bytes(keccak(encoded), "big")


def lineage_hash(rounds: Sequence[int], models: Sequence[bytes], start: bytes = ZERO32) -> bytes:
    """A task's lineage hash: ``h = keccak256(abi_encode(h, round, model))`` over its finalized
    rounds in order, from ``start`` (zero before the first)."""
    if len(rounds) != len(models):
        raise ConfigError(f"{len(rounds)} rounds but {len(models)} models", field="models")
    h = bytes(start)
    for r, m in zip(rounds, models, strict=True):
        h = rules.lineage_hash(h, r, bytes(m))
    return h


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GovernanceAddresses:
    """A deployed timelock and its governor."""

    timelock: str
    governor: str


@dataclass(frozen=True, kw_only=True)
class Proposal:
    """A proposal: its ``ProposalCreated`` event, and its counters and state now."""

    id: int
    proposer: str
    target: str
    data: bytes
    description: str
    snapshot: int
    """Votes are the token balances at the end of this block (the one before the proposal's)."""
    deadline: int
    """Voting is open while block timestamps are at most this."""
    block: int
    """The block the proposal was created in."""
    tx: str
    for_votes: int
    against_votes: int
    abstain_votes: int
    quorum: int
    """for + abstain must reach this (quorum_bps of the total supply at the snapshot)."""
    state: int
    """One of the ``STATE_*`` constants (:data:`STATE_NAMES`)."""
    eta: int
    """When the timelock may run it (0: not queued; 1: executed)."""

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, str(self.state))


@dataclass(frozen=True, kw_only=True)
class Proposed(TxResult):
    """The transaction that created a proposal, and the proposal's id."""

    id: int


@dataclass(frozen=True, kw_only=True)
class Vote:
    """One ``VoteCast`` event."""

    proposal: int
    voter: str
    support: int
    """``VOTE_AGAINST``, ``VOTE_FOR`` or ``VOTE_ABSTAIN``."""
    weight: int
    block: int
    tx: str


@dataclass(frozen=True, kw_only=True)
class MintedModel:
    """One model NFT: token id ``round``."""

    round: int
    model: bytes
    parent: int
    """The task's previous finalized round (0: the first)."""
    epsilon: int
    """The epsilon the minter claimed, in millionths (0: no differential privacy)."""
    owner: str
    token_uri: str


# --------------------------------------------------------------------------------------------
# Deployment
# --------------------------------------------------------------------------------------------


def _check_int(value: int, field: str, low: int, high: int | None = None) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"must be an integer {bound}, got {value!r}", field=field)


def deploy_governance(
    chain: Chain,
    *,
    token: str,
    owner: LocalAccount,
    voting_period: int,
    quorum_bps: int,
    timelock_delay: int,
    proposal_threshold: int = 0,
) -> GovernanceAddresses:
    """Deploy a Timelock (minimum delay ``timelock_delay`` seconds) and a Governor voting with
    ``token``'s checkpointed balances, both from ``owner``. The governor gets the timelock's
    proposer, canceller and executor roles (it alone schedules, cancels and runs operations),
    and ``owner``'s admin role on the timelock is renounced at the end: from then on only a
    passed proposal changes the timelock. Hand the governed contract to the timelock
    afterwards (its owner or governor)."""
    _check_int(voting_period, "voting_period", 1, 2**32 - 1)
    _check_int(quorum_bps, "quorum_bps", 1, BPS)
    _check_int(timelock_delay, "timelock_delay", 0)
    _check_int(proposal_threshold, "proposal_threshold", 0)
    with map_chain_errors("deploying governance"):
        token = to_checksum_address(token)
        timelock_art, governor_art = load_artifact("Timelock"), load_artifact("Governor")
        timelock = chain.deploy(timelock_art["abi"], timelock_art["bytecode"], timelock_delay,
                                [], [], owner.address, sender=owner)  # fmt: skip
        governor = chain.deploy(governor_art["abi"], governor_art["bytecode"], token,
                                timelock.address, voting_period, quorum_bps, proposal_threshold,
                                sender=owner)  # fmt: skip
        for role in (PROPOSER_ROLE, CANCELLER_ROLE, EXECUTOR_ROLE):
            chain.transact(timelock.functions.grantRole(role, governor.address), sender=owner,
                           gas=100_000)  # fmt: skip
        chain.transact(timelock.functions.renounceRole(DEFAULT_ADMIN_ROLE, owner.address),
                       sender=owner, gas=100_000)  # fmt: skip
        return GovernanceAddresses(timelock=str(timelock.address), governor=str(governor.address))


def deploy_model_nft(
    chain: Chain,
    *,
    task: str,
    owner: LocalAccount,
    name: str = "fedledger model",
    symbol: str = "FLM",
) -> str:
    """Deploy the model NFT contract of the Task at ``task``; returns its address."""
    if len(name.encode()) > 25 or len(symbol.encode()) > 5:
        raise ConfigError("the name takes at most 25 bytes and the symbol 5", field="name")
    with map_chain_errors("deploying the model NFT"):
        art = load_artifact("ModelNFT")
        contract = chain.deploy(art["abi"], art["bytecode"], to_checksum_address(task), name,
                                symbol, name[:50], "1", sender=owner)  # fmt: skip
        return str(contract.address)


# --------------------------------------------------------------------------------------------
# Handles
# --------------------------------------------------------------------------------------------


class _Handle:
    """What both handles share: the contract at ``address`` (artifact ``name``), the error
    boundary and sending with a fixed gas limit."""

    def __init__(self, chain: Chain, address: str, account: LocalAccount | None, *, name: str,
                 where: str, timeout: float) -> None:  # fmt: skip
        self.chain = chain
        self._account = account
        self.timeout = timeout
        self._where = f"{where} at {address}"
        with self._errors():
            self.contract: Contract = chain.contract(to_checksum_address(address),
                                                     load_artifact(name)["abi"])  # fmt: skip

    def _errors(self) -> AbstractContextManager[None]:
        return map_chain_errors(self._where)

    @property
    def account(self) -> str | None:
        """The handle's account (``None``: read-only)."""
        return None if self._account is None else str(self._account.address)

    @property
    def address(self) -> str:
        return str(self.contract.address)

    def _call(self, name: str, *args: Any) -> Any:
        return self.chain.call(self.contract.functions[name](*args))

    def _send(self, fn: ContractFunction, gas: int) -> Receipt:
        if self._account is None:
            raise LedgerError(f"{self._where}: this handle is read-only (no account)")
        try:
            return self.chain.transact(fn, sender=self._account, gas=gas, timeout=self.timeout)
        except TransactionReverted as exc:
            if exc.reason != OUT_OF_GAS:
                raise
            # Above the fixed limit (an execute whose target needs more): estimate, once.
            return self.chain.transact(fn, sender=self._account, gas=None,
                                       timeout=self.timeout)  # fmt: skip


def _result(receipt: Receipt) -> TxResult:
    return TxResult(tx=receipt.tx_hash, block=receipt.block, gas_used=receipt.gas_used)


def _check_call(target: str, data: bytes, description: str) -> tuple[str, bytes, str]:
    if len(data) > MAX_CALL:
        raise ConfigError(f"{len(data)} bytes of calldata, at most {MAX_CALL}", field="data")
    if len(description.encode("utf-8")) > MAX_DESCRIPTION:
        raise ConfigError(f"more than {MAX_DESCRIPTION} bytes", field="description")
    return to_checksum_address(target), bytes(data), description


class Governance(_Handle):
    """One account's handle on a Governor (``account=None``: read-only).

    Proposals are named by their id (:func:`proposal_id`); ``queue``, ``execute`` and ``cancel``
    take the proposal's call and description again, as the contract does (it stores their hash
    only): :meth:`proposals` reads them back from the ``ProposalCreated`` events.
    """

    def __init__(
        self,
        chain: Chain,
        governor: str,
        account: LocalAccount | None,
        *,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(chain, governor, account, name="Governor", where="governor",
                         timeout=timeout)  # fmt: skip
        with self._errors():
            token_abi = load_artifact("RewardToken")["abi"]
            self._token = chain.contract(self._call("token"), token_abi)
            self._timelock = chain.contract(self._call("timelock"),
                                            load_artifact("Timelock")["abi"])  # fmt: skip

    # -- parameters ----------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return str(self._token.address)

    @property
    def timelock(self) -> str:
        return str(self._timelock.address)

    @translated
    def voting_period(self) -> int:
        return int(self._call("voting_period"))

    @translated
    def quorum_bps(self) -> int:
        return int(self._call("quorum_bps"))

    @translated
    def proposal_threshold(self) -> int:
        return int(self._call("proposal_threshold"))

    @translated
    def timelock_delay(self) -> int:
        """The timelock's minimum delay now (a passed proposal may change it)."""
        return int(self.chain.call(self._timelock.functions.get_minimum_delay()))

    # -- votes ---------------------------------------------------------------------------------

    @translated
    def votes(self, account: str, block: int | None = None) -> int:
        """``account``'s votes: now (its balance), or at the end of a past ``block``."""
        checksum = to_checksum_address(account)
        if block is None:
            return int(self.chain.call(self._token.functions.getVotes(checksum)))
        return int(self.chain.call(self._token.functions.getPastVotes(checksum, block)))

    # -- transactions --------------------------------------------------------------------------

    @translated
    def propose(self, target: str, data: bytes, description: str) -> Proposed:
        """Propose that the timelock call ``target`` with ``data``; the result carries the
        proposal's id."""
        target, data, description = _check_call(target, data, description)
        gas = _GAS_PROPOSE + _GAS_PER_BYTE * (len(data) + len(description.encode()))
        receipt = self._send(self.contract.functions.propose(target, data, description), gas)
        (event,) = receipt.decode(self.contract.events.ProposalCreated())
        return Proposed(tx=receipt.tx_hash, block=receipt.block, gas_used=receipt.gas_used,
                        id=int(event["args"]["id"]))  # fmt: skip

    @translated
    def vote(self, proposal: int, support: int) -> TxResult:
        """Vote on an active proposal: ``VOTE_AGAINST``, ``VOTE_FOR`` or ``VOTE_ABSTAIN``."""
        if support not in (VOTE_AGAINST, VOTE_FOR, VOTE_ABSTAIN):
            raise ConfigError(f"must be 0 (against), 1 (for) or 2 (abstain), got {support!r}",
                              field="support")  # fmt: skip
        return _result(self._send(self.contract.functions.castVote(proposal, support), _GAS_VOTE))

    def _by_call(
        self, name: str, base: int, target: str, data: bytes, description: str
    ) -> TxResult:
        target, data, description = _check_call(target, data, description)
        fn = self.contract.functions[name](target, data, description)
        gas = base + _GAS_PER_BYTE * (len(data) + len(description.encode()))
        return _result(self._send(fn, gas))

    @translated
    def queue(self, target: str, data: bytes, description: str) -> TxResult:
        """Schedule a succeeded proposal on the timelock (anyone may)."""
        return self._by_call("queue", _GAS_QUEUE, target, data, description)

    @translated
    def execute(self, target: str, data: bytes, description: str) -> TxResult:
        """Run a queued proposal whose timelock delay is over (anyone may)."""
        return self._by_call("execute", _GAS_EXECUTE, target, data, description)

    @translated
    def cancel(self, target: str, data: bytes, description: str) -> TxResult:
        """The proposer withdraws its active proposal, before any vote."""
        return self._by_call("cancel", _GAS_CANCEL, target, data, description)

    # -- reads ---------------------------------------------------------------------------------

    @translated
    def state(self, proposal: int) -> int:
        """The proposal's state now: one of the ``STATE_*`` constants."""
        return int(self._call("state", proposal))

    @translated
    def has_voted(self, proposal: int, account: str) -> bool:
        return bool(self._call("has_voted", proposal, to_checksum_address(account)))

    @translated
    def proposals(self, from_block: int = 0) -> list[Proposal]:
        """Every proposal created from ``from_block`` on, oldest first, with its counters and
        state now."""
        found = []
        for log in self.chain.events(self.contract.events.ProposalCreated(),
                                     from_block=from_block):  # fmt: skip
            args = log["args"]
            view = self._call("proposal", int(args["id"]))
            found.append(Proposal(
                id=int(args["id"]),
                proposer=to_checksum_address(args["proposer"]),
                target=to_checksum_address(args["target"]),
                data=bytes(args["data"]),
                description=str(args["description"]),
                snapshot=int(args["snapshot"]),
                deadline=int(args["deadline"]),
                block=int(log["blockNumber"]),
                tx=HexBytes(log["transactionHash"]).to_0x_hex(),
                for_votes=int(view[3]),
                against_votes=int(view[4]),
                abstain_votes=int(view[5]),
                quorum=int(view[6]),
                eta=int(view[8]),
                state=int(view[9]),
            ))  # fmt: skip
        return found

    @translated
    def votes_of(self, proposal: int, from_block: int = 0) -> list[Vote]:
        """Every vote cast on ``proposal``, in chain order."""
        return [
            Vote(
                proposal=int(log["args"]["id"]),
                voter=to_checksum_address(log["args"]["voter"]),
                support=int(log["args"]["support"]),
                weight=int(log["args"]["weight"]),
                block=int(log["blockNumber"]),
                tx=HexBytes(log["transactionHash"]).to_0x_hex(),
            )
            for log in self.chain.events(self.contract.events.VoteCast(), from_block=from_block)
            if int(log["args"]["id"]) == proposal
        ]


class ModelNFT(_Handle):
    """One account's handle on a task's model NFT contract (``account=None``: read-only)."""

    def __init__(
        self,
        chain: Chain,
        address: str,
        account: LocalAccount | None,
        *,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(chain, address, account, name="ModelNFT", where="model NFT",
                         timeout=timeout)  # fmt: skip

    @property
    @translated
    def task(self) -> str:
        return to_checksum_address(self._call("task"))

    @translated
    def last_minted(self) -> tuple[int, bytes]:
        """The last round minted (0: none) and the lineage hash up to it."""
        return int(self._call("last_minted")), bytes(self._call("last_hash"))

    @translated
    def mint(
        self, rounds: Sequence[int], models: Sequence[bytes], epsilons: Sequence[int]
    ) -> list[TxResult]:
        """Mint the task's finalized rounds after :meth:`last_minted`: ``rounds`` (increasing),
        their model digests and claimed epsilons (millionths), every finalized round up to the
        task's last. At most :data:`MAX_MINT` tokens a transaction: a longer backlog takes
        several (``mint_prefix``, each given the rest of the chain, at most :data:`MAX_CHAIN`
        rounds). Returns the transactions."""
        if not len(rounds) == len(models) == len(epsilons):
            raise ConfigError(f"{len(rounds)} rounds, {len(models)} models and "
                              f"{len(epsilons)} epsilons", field="rounds")  # fmt: skip
        if len(rounds) > MAX_MINT + MAX_CHAIN:
            limit = MAX_MINT + MAX_CHAIN
            raise ConfigError(f"{len(rounds)} rounds to mint: at most {limit} can be checked "
                              "against the task's lineage", field="rounds")  # fmt: skip
        done: list[TxResult] = []
        start = 0
        while start < len(rounds):
            end = min(start + MAX_MINT, len(rounds))
            args: list[Any] = [list(rounds[start:end]), [bytes(m) for m in models[start:end]],
                               list(epsilons[start:end])]  # fmt: skip
            if end == len(rounds):
                fn = self.contract.functions.mint(*args)
            else:
                later = [list(rounds[end:]), [bytes(m) for m in models[end:]]]
                fn = self.contract.functions.mint_prefix(*args, *later)
            gas = (_GAS_MINT_BASE + _GAS_MINT_EACH_MINTED * (end - start)
                   + _GAS_MINT_EACH_CHECKED * (len(rounds) - end))  # fmt: skip
            done.append(_result(self._send(fn, gas)))
            start = end
        return done

    @translated
    def minted(self) -> list[MintedModel]:
        """Every token minted, in round order."""
        out = []
        for index in range(int(self._call("totalSupply"))):
            token = int(self._call("tokenByIndex", index))
            out.append(MintedModel(
                round=token,
                model=bytes(self._call("model_of", token)),
                parent=int(self._call("parent_of", token)),
                epsilon=int(self._call("epsilon_of", token)),
                owner=to_checksum_address(self._call("ownerOf", token)),
                token_uri=str(self._call("tokenURI", token)),
            ))  # fmt: skip
        return out
