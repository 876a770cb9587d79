"""The task ledger on chain: :class:`ContractLedger` over a deployed Task contract.

A :class:`~fedledger.ledger.records.Ledger` backed by the Task contract (and its RewardToken)
through a :class:`~fedledger.ledger.chain.Chain`, embedded or JSON-RPC; :func:`deploy_task`
deploys both with a task configuration's rules. Every public method raises only fedledger's
errors: the chain's, and web3's own (a malformed address, an argument the ABI refuses, a log
that does not decode) translated by :func:`~fedledger.ledger.chain.base.map_chain_errors`.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
import weakref
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Final

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3.contract import Contract

from fedledger.config import TaskConfig
from fedledger.config.task import config_from_document
from fedledger.errors import ConfigError, LedgerError, TransactionReverted
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import OUT_OF_GAS, Chain, Receipt
from fedledger.ledger.chain.base import map_chain_errors, translated
from fedledger.ledger.messages import ZERO32, SignedRound
from fedledger.ledger.records import (
    EVENT_TYPES,
    GOVERNABLE_RULES,
    LedgerEvent,
    Member,
    RoundClock,
    TaskRules,
    TaskTransactions,
    TxResult,
)
from fedledger.ledger.rules import (
    PHASE_AGGREGATE,
    PHASE_ATTEST,
    PHASE_FAILED,
    PHASE_FINALIZED,
    PHASE_NOT_STARTED,
    PHASE_OPEN,
    ZERO_ADDRESS,
    rules_for,
)

__all__ = [
    "CONFIG_LOG_WINDOW",
    "DISTRIBUTE_GAS_BASE",
    "DISTRIBUTE_GAS_EACH",
    "GAS_LIMITS",
    "MAX_CONFIG_BYTES",
    "SUBMIT_GAS_BASE",
    "SUBMIT_GAS_EACH",
    "ContractLedger",
    "TaskContracts",
    "deploy_task",
    "deploy_task_contracts",
]

#: Fixed gas limits, above each call's costliest path (a fixed limit costs nothing, since only
#: gas used is paid, and saves an estimate: join with a 256-byte endpoint about 300k).
GAS_LIMITS: Final[Mapping[str, int]] = {
    "join": 500_000,
    "set_consent": 200_000,
    "reconfigure": 800_000,
    "move": 300_000,
    "set_keys": 100_000,
    "close": 100_000,
    "claim": 200_000,
    "slash": 300_000,
}
SUBMIT_GAS_BASE: Final = 250_000
SUBMIT_GAS_EACH: Final = 70_000
"""``submit``'s limit: base + each x (messages + contributors). A message costs at most about
45k (a signature, a member's first record write, its event), a contributor paid in the same
call about 30k."""
DISTRIBUTE_GAS_BASE: Final = 150_000
DISTRIBUTE_GAS_EACH: Final = 40_000
"""``distribute``'s limit: base + each x contributors."""

MAX_CONFIG_BYTES: Final = 8192
"""The Task's MAX_CONFIG: the longest configuration document a task can publish."""
CONFIG_LOG_WINDOW: Final = 10_000
"""Blocks per log query while looking for the ``Configured`` event."""

_RULE_FIELDS: Final = (
    "token", "rule_id", "rule_params_digest", "config_digest", "quorum_bps", "min_stake",
    "window", "grace", "max_rounds", "max_participants", "allowlist_only",
    "reward_per_round", "access_policy", "cooldown", "treasury", "governor", "committee",
)  # fmt: skip
"""The Task constructor's arguments before the configuration document, in order."""
_FIXED_RULES: Final = tuple(name for name in _RULE_FIELDS if name not in GOVERNABLE_RULES)
"""The rules no governor changes (immutables: read once)."""


def deploy_task(
    chain: Chain,
    task: TaskConfig,
    *,
    owner: LocalAccount,
    treasury: str | None = None,
    governor: str | None = None,
    token_name: str = "fedledger reward",
    token_symbol: str = "FLR",
    token: str | None = None,
) -> tuple[str, str]:
    """Deploy a RewardToken and a Task with ``task``'s rules and its whole configuration
    document (emitted in the Task's ``Configured`` event), owned by ``owner``; the Task is made
    the token's minter. ``governor`` may change the governable rules (None: nobody, ever).
    ``token``: a RewardToken ``owner`` already deployed (and owns), instead of a new one.
    Returns ``(task address, token address)``."""
    with map_chain_errors("deploying the task"):
        token_art, task_art = load_artifact("RewardToken"), load_artifact("Task")
        if token is None:
            reward: Contract = chain.deploy(token_art["abi"], token_art["bytecode"],
                                            token_name[:25], token_symbol[:5], 18,
                                            token_name[:50], "1", sender=owner)  # fmt: skip
        else:
            reward = chain.contract(to_checksum_address(token), token_art["abi"])
        rules = rules_for(task, token=reward.address, treasury=treasury or owner.address,
                          governor=governor or ZERO_ADDRESS)  # fmt: skip
        args = [getattr(rules, name) for name in _RULE_FIELDS]
        document = task.document()
        if len(document) > MAX_CONFIG_BYTES:
            raise ConfigError(f"the task's configuration document is {len(document)} bytes, "
                              f"the contract takes at most {MAX_CONFIG_BYTES}")  # fmt: skip
        args.append(document)
        contract = chain.deploy(task_art["abi"], task_art["bytecode"], *args, sender=owner)
        chain.transact(reward.functions.set_minter(contract.address, True), sender=owner)
        return str(contract.address), str(reward.address)


@dataclass(frozen=True, kw_only=True)
class TaskContracts:
    """A task's contracts (:func:`deploy_task_contracts`)."""

    task: str
    token: str
    nft: str
    """The model NFT: each finalized model a token, minted in order by a call."""
    governor: str | None = None
    """The Governor (``[governance]``); None: the rules never change."""
    timelock: str | None = None
    """The Timelock running passed proposals: the Task's governor and the NFTs' owner."""


def deploy_task_contracts(
    chain: Chain, task: TaskConfig, *, owner: LocalAccount, treasury: str | None = None
) -> TaskContracts:
    """Everything a task needs: the reward token; with ``[governance]`` a Timelock and a
    Governor voting with the token (the Timelock governs the Task); the Task
    (:func:`deploy_task`); its model NFT contract."""
    from fedledger.ledger.governance import deploy_governance, deploy_model_nft

    with map_chain_errors("deploying the task"):
        art = load_artifact("RewardToken")
        token = chain.deploy(art["abi"], art["bytecode"], "fedledger reward", "FLR", 18,
                             "fedledger reward", "1", sender=owner)  # fmt: skip
    governance = None
    if task.governance is not None:
        g = task.governance
        governance = deploy_governance(chain, token=str(token.address), owner=owner,
                                       voting_period=g.voting_period, quorum_bps=g.quorum_bps,
                                       timelock_delay=g.timelock,
                                       proposal_threshold=g.threshold_wei)  # fmt: skip
    address, _ = deploy_task(chain, task, owner=owner, treasury=treasury, token=str(token.address),
                             governor=governance.timelock if governance else None)  # fmt: skip
    nft = deploy_model_nft(chain, task=address, owner=owner)
    return TaskContracts(task=address, token=str(token.address), nft=nft,
                         governor=governance.governor if governance else None,
                         timelock=governance.timelock if governance else None)  # fmt: skip


def _plain(value: Any) -> Any:
    """An event argument as the records hold it: addresses checksummed, bytes as bytes,
    arrays as tuples."""
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


@dataclass
class _Feed:
    """A task's decoded events, read once per process and shared by every handle on the same
    chain object (the nodes of one ``fedledger run`` poll one chain). Assumes no reorgs, as
    on the embedded chain and anvil; the audit reads afresh."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    read_from: int = -1
    read_to: int = -1
    events: list[LedgerEvent] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)


_FEEDS: weakref.WeakKeyDictionary[Any, dict[str, _Feed]] = weakref.WeakKeyDictionary()
_FEEDS_LOCK = threading.Lock()


def _feed_of(chain: Chain, address: str) -> _Feed:
    with _FEEDS_LOCK:
        feeds = _FEEDS.setdefault(chain, {})
        return feeds.setdefault(address, _Feed())


class ContractLedger(TaskTransactions):
    """:class:`Ledger` over a deployed Task contract, signing as ``account``.

    ``account`` may be ``None`` for a read-only handle (the audit): transactions then raise
    :class:`~fedledger.errors.LedgerError`. Every public method raises only fedledger's errors
    (the chain's, and web3's own translated: a malformed address or argument, a log that does
    not decode).
    """

    def __init__(
        self,
        chain: Chain,
        task_address: str,
        account: LocalAccount | None,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.chain = chain
        self._where = f"task at {task_address}"
        self._account = account
        self.timeout = timeout
        self._rules: TaskRules | None = None  # a task without a governor: its only rules
        self._fixed: dict[str, Any] | None = None
        self._by_round: dict[int, TaskRules] = {}  # rules of rounds opened already: final
        self._opened = 0  # the latest current_round seen
        self._document: bytes | None = None
        self._token: Contract | None = None
        self._times: dict[int, int] = {}
        self._topics: dict[bytes, Any] = {}
        with self._errors():
            self.contract: Contract = chain.contract(task_address, load_artifact("Task")["abi"])
            for name in EVENT_TYPES:
                event = self.contract.events[name]()
                self._topics[bytes(HexBytes(event.topic))] = event

    def _errors(self) -> AbstractContextManager[None]:
        """The error boundary of every public method (the chain's own raise fedledger's)."""
        return map_chain_errors(self._where)

    # -- identity ----------------------------------------------------------------------------

    @property
    def account(self) -> str:
        return ZERO_ADDRESS if self._account is None else str(self._account.address)

    @property
    def task_address(self) -> str:
        return str(self.contract.address)

    @property
    def chain_id(self) -> int:
        return int(self.chain.chain_id)

    @property
    @translated
    def token(self) -> Contract:
        if self._token is None:
            self._token = self.chain.contract(self.rules().token,
                                              load_artifact("RewardToken")["abi"])  # fmt: skip
        return self._token

    # -- reads -------------------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> Any:
        return self.chain.call(self.contract.functions[name](*args))

    @translated
    def rules(self) -> TaskRules:
        """The rules in force for the current round (read once for a task without a
        governor: they never change)."""
        if self._rules is not None:
            return self._rules
        if int(self._fixed_rules()["governor"], 16) == 0:
            self._rules = self._rules_at(0)
            return self._rules
        current = int(self._call("current_round"))
        self._opened = max(self._opened, current)
        return self._final_rules_at(current)

    @translated
    def rules_at(self, round: int) -> TaskRules:
        if self._rules is not None:
            return self._rules
        if int(self._fixed_rules()["governor"], 16) == 0:
            return self.rules()
        return self._final_rules_at(round)

    def _final_rules_at(self, round: int) -> TaskRules:
        """Round ``round``'s rules; cached once the round opened (a change takes effect from
        the next round to open only, so an open round's rules are final)."""
        key = max(round, 1)  # round 0's rules are round 1's
        if key in self._by_round:
            return self._by_round[key]
        if key > self._opened:
            self._opened = max(self._opened, int(self._call("current_round")))
        rules = self._rules_at(key)
        if key <= self._opened:
            self._by_round[key] = rules
        return rules

    def _fixed_rules(self) -> dict[str, Any]:
        if self._fixed is None:
            self._fixed = {name: self._call(name) for name in _FIXED_RULES}
        return self._fixed

    def _rules_at(self, round: int) -> TaskRules:
        # The Rules struct: the governable rules, in GOVERNABLE_RULES' order, then from_round.
        *governable, from_round = self._call("rules_at", round)
        values = dict(zip(GOVERNABLE_RULES, governable, strict=True))
        return TaskRules(**self._fixed_rules(), **values, from_round=int(from_round))

    @translated
    def config_document(self, from_block: int = 0) -> bytes:
        """The task's configuration document, from the ``Configured`` event its deployment
        emitted (looked for from ``from_block`` on, :data:`CONFIG_LOG_WINDOW` blocks at a
        time: give the deployment block if known): the document of round 1's rules (a
        governance change before the start replaces it; later ones do not). Checked against
        round 1's ``config_digest`` (:meth:`rules_at`): an RPC node that forges the log is
        caught here. Raises :class:`~fedledger.errors.LedgerError` if there is no such event
        or it does not match.
        """
        if self._document is not None:
            return self._document
        event = self.contract.events["Configured"]()
        topic = bytes(HexBytes(event.topic))
        expected = self.rules_at(1).config_digest
        head = self.head()
        start = max(0, from_block)
        while start <= head:
            end = min(start + CONFIG_LOG_WINDOW - 1, head)
            for log in self.chain.logs(self.task_address, from_block=start, to_block=end,
                                       window=CONFIG_LOG_WINDOW):  # fmt: skip
                topics = log["topics"]
                if not topics or bytes(HexBytes(topics[0])) != topic:
                    continue
                args = event.process_log(log)["args"]
                if args["from_round"] != 1 or bytes(args["config_digest"]) != expected:
                    continue  # a later round's rules, or round 1's replaced before the start
                document = bytes(args["document"])
                if hashlib.sha256(document).digest() != expected:
                    raise LedgerError(
                        f"{self._where}: the Configured event's document does not hash to the "
                        "contract's config digest"
                    )
                self._document = document
                return document
            start = end + 1
        raise LedgerError(
            f"{self._where}: no Configured event from block {from_block} on (a task deployed "
            "before configurations were published on chain?)"
        )

    @translated
    def task_config(self, from_block: int = 0) -> TaskConfig:
        """The task's configuration, read from the chain (:meth:`config_document`)."""
        document = self.config_document(from_block)
        try:
            return config_from_document(document)
        except ConfigError as exc:
            raise LedgerError(f"{self._where}: the published configuration is not one this "
                              f"version reads: {exc}") from exc  # fmt: skip

    @translated
    def is_reader(self, account: str) -> bool:
        """Whether the owner granted ``account`` read access (:meth:`grant_reader`)."""
        return bool(self._call("readers", to_checksum_address(account)))

    @translated
    def now(self) -> int:
        return self.chain.now()

    @translated
    def head(self) -> int:
        return self.chain.block_number()

    @translated
    def block_hash(self, number: int) -> bytes:
        return self.chain.block_hash(number)

    def _time_of(self, block: int) -> int:
        if block not in self._times:
            self._times[block] = self.chain.block_timestamp(block)
        return self._times[block]

    @translated
    def events(self, after: int, until: int | None = None) -> list[LedgerEvent]:
        last = self.head() if until is None else until
        if last <= after:
            return []
        feed = _feed_of(self.chain, self.task_address)
        with feed.lock:
            if feed.read_to < 0 and feed.read_from < 0:
                feed.read_from = feed.read_to = after  # start where the first reader starts
            if after < feed.read_from:  # older than the shared feed: read it directly
                return self._decode(
                    self.chain.logs(self.task_address, from_block=after + 1, to_block=last)
                )
            if last > feed.read_to:
                logs = self.chain.logs(self.task_address, from_block=feed.read_to + 1,
                                       to_block=last)  # fmt: skip
                new = self._decode(logs)
                feed.events += new
                feed.blocks += [e.block for e in new]
                feed.read_to = last
            lo = bisect.bisect_right(feed.blocks, after)
            hi = bisect.bisect_right(feed.blocks, last)
            return feed.events[lo:hi]

    def _decode(self, logs: Sequence[Any]) -> list[LedgerEvent]:
        out: list[LedgerEvent] = []
        for log in logs:
            topics = log["topics"]
            event = self._topics.get(bytes(HexBytes(topics[0]))) if topics else None
            if event is None:
                continue
            data = event.process_log(log)
            cls = EVENT_TYPES[data["event"]]
            args = {k: _plain(v) for k, v in data["args"].items()}
            block = int(log["blockNumber"])
            out.append(cls(block=block, time=self._time_of(block),
                           tx=HexBytes(log["transactionHash"]).to_0x_hex(),
                           index=int(log["logIndex"]), **args))  # fmt: skip
        return out

    @translated
    def members(self) -> list[Member]:
        found = []
        for address in self._call("members"):
            found.append(Member(
                address=to_checksum_address(address),
                endpoint=str(self._call("endpoint_of", address)),
                stake=int(self._call("stake_of", address)),
                first_round=int(self._call("first_round_of", address)),
            ))  # fmt: skip
        return sorted(found, key=lambda m: m.address.lower())

    @translated
    def member_array(self) -> list[str]:
        """The Task's member array in its own order (joins append; a member that leaves is
        replaced by the last): the order committees are drawn over."""
        return [to_checksum_address(a) for a in self._call("members")]

    @translated
    def member_count(self) -> int:
        return int(self._call("member_count"))

    @translated
    def status_of(self, account: str) -> int:
        return int(self._call("status_of", to_checksum_address(account)))

    @translated
    def reputation(self, account: str) -> tuple[int, int]:
        """``(selections, updates)`` from the task's events (the contract keeps no counters)."""
        from fedledger.ledger.reputation import reputation_from_events

        return reputation_from_events(self.events(-1), to_checksum_address(account))

    @translated
    def current_round(self) -> int:
        return int(self._call("current_round"))

    @translated
    def round_clock(self, round: int) -> RoundClock:
        return RoundClock(start=int(self._call("round_start", round)),
                          closes_at=int(self._call("closes_at", round)))  # fmt: skip

    @translated
    def phase(self, round: int) -> int:
        """The phase at :meth:`now` (the ``phase`` view answers for the latest block's time,
        stale while the chain is idle)."""
        phase = int(self._call("phase", round))
        if phase in (PHASE_NOT_STARTED, PHASE_FINALIZED):
            return phase
        now = self.now()
        if now < int(self._call("closes_at", round)):
            return PHASE_OPEN
        if round == self.current_round():
            return PHASE_AGGREGATE
        if now < int(self._call("closes_at", round + 1)):
            return PHASE_ATTEST
        return PHASE_FAILED

    @translated
    def earned_of(self, account: str) -> int:
        return int(self._call("earned_of", to_checksum_address(account)))

    @translated
    def claimed_of(self, account: str) -> int:
        return int(self._call("claimed_of", to_checksum_address(account)))

    @translated
    def model_digest(self, round: int) -> bytes:
        return bytes(self._call("model_digest", round))

    @translated
    def lineage(self) -> tuple[int, bytes]:
        last, chained = self._call("lineage")
        return int(last), bytes(chained)

    @translated
    def can_download(self, account: str) -> bool:
        return bool(self._call("can_download", to_checksum_address(account)))

    @translated
    def token_balance(self, account: str) -> int:
        return int(self.chain.call(self.token.functions.balanceOf(to_checksum_address(account))))

    @translated
    def token_supply(self) -> int:
        return int(self.chain.call(self.token.functions.totalSupply()))

    @translated
    def decode_input(self, tx_hash: str) -> tuple[str, dict[str, Any]]:
        """The Task function a mined transaction called, and its arguments (calldata that is
        not a Task call raises :class:`~fedledger.errors.LedgerError`)."""
        fn, args = self.contract.decode_function_input(self.chain.transaction_input(tx_hash))
        return str(fn.fn_name), dict(args)

    # -- transactions ----------------------------------------------------------------------

    @translated
    def allow(self, account: str) -> TxResult:
        return self._send("allow", to_checksum_address(account))

    @translated
    def grant_reader(self, account: str) -> TxResult:
        return self._send("grant_reader", to_checksum_address(account))

    @translated
    def revoke_reader(self, account: str) -> TxResult:
        return self._send("revoke_reader", to_checksum_address(account))

    @translated
    def submit(
        self,
        round: int,
        messages: Sequence[SignedRound],
        contributors: Sequence[str] = (),
        scores: Sequence[int] = (),
        transcript: bytes = ZERO32,
    ) -> TxResult:
        checksummed = [to_checksum_address(a) for a in contributors]
        return super().submit(round, messages, checksummed, scores, transcript)

    @translated
    def distribute(
        self,
        round: int,
        contributors: Sequence[str],
        scores: Sequence[int],
        transcript: bytes = ZERO32,
    ) -> TxResult:
        return self._send("distribute", round, [to_checksum_address(a) for a in contributors],
                          list(scores), transcript)  # fmt: skip

    @translated
    def claim(self, account: str) -> TxResult:
        return self._send("claim", to_checksum_address(account))

    @translated
    def _send(self, name: str, *args: Any, value: int = 0) -> TxResult:
        if self._account is None:
            raise LedgerError("this ledger handle is read-only (no account)")
        fn = self.contract.functions[name](*args)
        gas = GAS_LIMITS.get(name)
        if name == "distribute":
            gas = DISTRIBUTE_GAS_BASE + DISTRIBUTE_GAS_EACH * len(args[1])
        elif name == "submit":
            gas = SUBMIT_GAS_BASE + SUBMIT_GAS_EACH * (len(args[2]) + len(args[3]))
        try:
            receipt: Receipt = self.chain.transact(fn, sender=self._account, value=value,
                                                   gas=gas, timeout=self.timeout)  # fmt: skip
        except TransactionReverted as exc:
            if exc.reason != OUT_OF_GAS:
                raise
            # A limit too low for this path (the chain estimates functions without a fixed
            # limit once, then reuses that): estimate afresh, once.
            receipt = self.chain.transact(fn, sender=self._account, value=value,
                                          gas=None, timeout=self.timeout)  # fmt: skip
        return TxResult(tx=receipt.tx_hash, block=receipt.block, gas_used=receipt.gas_used)
