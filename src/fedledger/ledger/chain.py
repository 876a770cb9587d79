"""Chain backends: one narrow interface (:class:`Chain`), two implementations.

* :class:`EmbeddedChain` — an in-process EVM (web3.py's ``EthereumTesterProvider`` over
  eth-tester's py-evm backend). Zero set-up, deterministic, and journaled: every block it mines
  is recorded (timestamp, hash and the raw signed transactions) so that :meth:`EmbeddedChain.save`
  and :meth:`EmbeddedChain.replay` rebuild an identical chain later, for the audit.
* :class:`RpcChain` — any JSON-RPC node over HTTP (tested against anvil on 127.0.0.1).

Both share the same semantics, implemented once in :class:`_Web3Chain`:

* Transactions are signed locally with the sender's key (never ``eth_sendTransaction``), with
  locally managed nonces (the pending nonce is read once per sender, then incremented; it is
  read again after a nonce error, which is retried).
* The gas limit is always explicit. When the caller gives none, the default for a
  ``(contract address, function signature)`` pair is estimated once, the first time, and
  ``ceil(estimate * 1.5)`` is reused for every later call (estimating runs the transaction an
  extra time, and py-evm's estimate runs it several times). A transaction that runs out of gas
  under that default raises :class:`TransactionReverted` with reason ``"out of gas"`` and drops
  the cached default, so the next call estimates again.
* A revert, whether found while estimating or in a mined receipt (status 0), raises
  :class:`TransactionReverted` with the decoded ``Error(string)`` reason when there is one: the
  same exception and reason on both backends (eth-tester's ``TransactionFailed`` and web3's
  ``ContractLogicError`` are both translated). For a mined failure, the reason is recovered by
  replaying the transaction with ``eth_call`` on the state before its block.
* Views (:meth:`Chain.call`) and other reads are retried on transient connection errors, a
  bounded number of times; then :class:`ChainUnavailable` is raised.
* Events are read in bounded block windows (:meth:`Chain.events`).

Time on the embedded chain
--------------------------
Block timestamps come from a clock policy, and every block's timestamp is journaled:

* ``clock=None`` (the default): logical time. The genesis block has ``genesis_timestamp``
  (default :data:`DEFAULT_GENESIS_TIMESTAMP`), every new block is its parent plus one second,
  and :meth:`EmbeddedChain.time_travel` jumps ahead. Runs are reproducible bit for bit.
* ``clock=time.time`` (or any injected clock): a block's timestamp is the clock's time (plus the
  total of all time travels) when its first transaction arrives, never less than its parent + 1.
* ``clock=time.time, pace="elapsed"``: a block's timestamp is its parent's plus the whole
  seconds elapsed on the clock since the parent was mined (at least 1). Busy stretches run
  ahead of the wall clock (one second per block), idle ones at its rate.

``prevrandao`` (the header's mix hash) is derived from the parent hash instead of being random.
So a replay, which forces each block's recorded timestamp, reproduces every block hash, and
:meth:`EmbeddedChain.replay` checks each one.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar, cast

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ABI, BlockNumber, ChecksumAddress, HexStr
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.contract.contract import ContractEvent, ContractFunction
from web3.exceptions import ContractLogicError
from web3.exceptions import TransactionNotFound as Web3TransactionNotFound
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import (
    BlockIdentifier,
    EventData,
    LogReceipt,
    Nonce,
    RPCEndpoint,
    RPCResponse,
    TxParams,
    TxReceipt,
    Wei,
)

from fedledger.errors import (
    ChainUnavailable,
    ConfigError,
    LedgerError,
    TransactionReverted,
)

__all__ = [
    "DEFAULT_BLOCK_GAS_LIMIT",
    "DEFAULT_GENESIS_TIMESTAMP",
    "GAS_BUFFER",
    "OUT_OF_GAS",
    "Chain",
    "ChainUnavailable",
    "EmbeddedChain",
    "LedgerError",
    "Receipt",
    "RpcChain",
    "TransactionReverted",
]

T = TypeVar("T")

GAS_BUFFER: Final = 1.5
"""Default gas limit = ceil(first estimate * GAS_BUFFER), cached per (contract, function)."""
OUT_OF_GAS: Final = "out of gas"
"""The :attr:`TransactionReverted.reason` of a transaction that used all of its gas."""
DEFAULT_BLOCK_GAS_LIMIT: Final = 100_000_000
"""The embedded chain's block gas limit (eth-tester's default is about 30 M)."""
DEFAULT_GENESIS_TIMESTAMP: Final = 1_735_689_600
"""The embedded chain's genesis time with the logical clock: 2025-01-01T00:00:00Z."""
JOURNAL_FORMAT: Final = "fedledger.embedded-chain"
JOURNAL_VERSION: Final = 1

_READ_ATTEMPTS: Final = 4
_SEND_ATTEMPTS: Final = 3
_FEE_REFRESH_EVERY: Final = 64
_ERROR_SELECTOR: Final = bytes.fromhex("08c379a0")  # Error(string)
_PANIC_SELECTOR: Final = bytes.fromhex("4e487b71")  # Panic(uint256)
_RECEIPT_POLL_MAX: Final = 0.05


# --------------------------------------------------------------------------------------------
# Errors (to move into fedledger.errors)
# --------------------------------------------------------------------------------------------


# LedgerError, TransactionReverted and ChainUnavailable live in fedledger.errors (imported
# above) with the rest of the exception tree.


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """A mined transaction. ``logs`` are raw; decode them with :meth:`decode` or
    ``event.process_log(log)``."""

    tx_hash: str
    block: int
    gas_used: int
    status: int
    logs: list[LogReceipt]
    gas_limit: int
    """The transaction's gas limit: what was passed, or the cached default."""
    effective_gas_price: int
    contract_address: str | None = None
    """The new contract's address, for a deployment."""

    @property
    def fee(self) -> int:
        """What the sender paid for gas, in wei."""
        return self.gas_used * self.effective_gas_price

    def decode(self, event: ContractEvent) -> list[EventData]:
        """The logs emitted as ``event`` by ``event``'s contract, decoded."""
        topic = HexBytes(event.topic)
        address = event.address
        return [
            event.process_log(log)
            for log in self.logs
            if log["topics"]
            and HexBytes(log["topics"][0]) == topic
            and (address is None or log["address"] == address)
        ]


class Chain(Protocol):
    """What fedledger needs from a chain; see the module docstring for the semantics."""

    chain_id: int

    def accounts(self) -> list[LocalAccount]:
        """Funded local accounts with their keys (eth-tester's, or the ones given)."""
        ...

    def deploy(
        self,
        abi: ABI,
        bytecode: str | bytes,
        *args: Any,
        sender: LocalAccount,
        value: int = 0,
        gas: int | None = None,
        timeout: float = 30.0,
    ) -> Contract:
        """Deploy a contract; return a web3 Contract bound to its address."""
        ...

    def contract(self, address: str, abi: ABI) -> Contract:
        """A web3 Contract bound to an existing address."""
        ...

    def transact(
        self,
        fn: ContractFunction,
        *,
        sender: LocalAccount,
        value: int = 0,
        gas: int | None = None,
        timeout: float = 30.0,
    ) -> Receipt:
        """Sign ``fn`` locally, send it, wait for its receipt; raise on revert."""
        ...

    def transfer(
        self, to: str, value: int, *, sender: LocalAccount, timeout: float = 30.0
    ) -> Receipt:
        """Send ``value`` wei to ``to`` (e.g. to fund a node's own key)."""
        ...

    def call(self, fn: ContractFunction, *, block: int | None = None) -> Any:
        """Call a view (at ``block``, default latest); retried on transient errors."""
        ...

    def events(
        self,
        event: ContractEvent,
        *,
        from_block: int,
        to_block: int | None = None,
        window: int = 1000,
    ) -> list[EventData]:
        """Decoded ``event`` logs in ``[from_block, to_block]``, read ``window`` blocks at a
        time."""
        ...

    def balance(self, address: str) -> int:
        """The balance of ``address``, in wei."""
        ...

    def block_number(self) -> int:
        """The number of the latest mined block."""
        ...

    def block_timestamp(self, number: int) -> int:
        """The timestamp of mined block ``number``."""
        ...

    def now(self) -> int:
        """A lower bound on the timestamp of the next block: what a transaction sent now will
        see as ``block.timestamp`` (at least). Used to tell which window of a round is open
        while the chain is idle, when the latest block's timestamp is stale."""
        ...

    def logs(
        self, address: str, *, from_block: int, to_block: int | None = None, window: int = 1000
    ) -> list[LogReceipt]:
        """Every raw log ``address`` emitted in ``[from_block, to_block]``, in chain order,
        read ``window`` blocks at a time."""
        ...

    def raw_transaction(self, tx_hash: str) -> bytes:
        """The signed transaction as mined (its sender can be recovered from it)."""
        ...

    def transaction_input(self, tx_hash: str) -> bytes:
        """A mined transaction's calldata."""
        ...

    def code(self, address: str) -> bytes:
        """The runtime code deployed at ``address``."""
        ...

    def time_travel(self, seconds: int) -> None:
        """Test helper: mine a block at least ``seconds`` later than the latest one."""
        ...


# --------------------------------------------------------------------------------------------
# The shared implementation
# --------------------------------------------------------------------------------------------


def _to_bytes(data: Any) -> bytes | None:
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."}
        return _to_bytes(data.get("data"))
    return None


def _decode_reason(data: bytes | None, message: str | None) -> str | None:
    """The revert reason from revert data (preferred) or from a node's error message."""
    if data is not None and data[:4] == _ERROR_SELECTOR:
        try:
            return str(abi_decode(["string"], data[4:])[0])
        except Exception:  # malformed Error(string) payload: fall back to the message
            pass
    if data is not None and data[:4] == _PANIC_SELECTOR and len(data) >= 36:
        return f"panic 0x{int.from_bytes(data[4:36], 'big'):02x}"
    if message is None:
        return None
    text = message.strip()
    for prefix in ("execution reverted:", "execution reverted"):
        if text.startswith(prefix):
            text = text[len(prefix) :].strip()
            break
    # eth-tester renders a revert without reason as the raw bytes (b'') or as "Revert(b'')".
    if not text or text.startswith(("b'", 'b"', "Revert(")):
        return None
    return text


def _message_of(exc: BaseException) -> str:
    if exc.args and isinstance(exc.args[0], dict):
        return str(exc.args[0].get("message", exc.args[0]))
    return str(exc)


def _is_nonce_error(exc: BaseException) -> bool:
    return "nonce" in _message_of(exc).lower()


def _is_fee_error(exc: BaseException) -> bool:
    text = _message_of(exc).lower()
    return "base fee" in text or "underpriced" in text or "fee cap" in text


def _is_already_known(exc: BaseException) -> bool:
    text = _message_of(exc).lower()
    return "already known" in text or "known transaction" in text or "nonce too low" in text


def _to_receipt(raw: TxReceipt, gas_limit: int) -> Receipt:
    contract_address = raw.get("contractAddress")
    return Receipt(
        tx_hash=HexBytes(raw["transactionHash"]).to_0x_hex(),
        block=int(raw["blockNumber"]),
        gas_used=int(raw["gasUsed"]),
        status=int(raw["status"]),
        logs=[cast(LogReceipt, dict(log)) for log in raw["logs"]],
        gas_limit=gas_limit,
        effective_gas_price=int(raw.get("effectiveGasPrice", 0)),
        contract_address=str(contract_address) if contract_address else None,
    )


class _Web3Chain:
    """The semantics of :class:`Chain` over a web3 instance; subclasses add the transport."""

    _transient: tuple[type[BaseException], ...] = ()
    """Exceptions worth retrying for idempotent requests (none in process)."""

    def __init__(self, w3: Web3, accounts: Sequence[LocalAccount]) -> None:
        # web3's default middlewares cost a request each per call (validation asks the chain
        # id every time) and do nothing for us: transactions are signed here with explicit
        # chain id, gas and fees, and there are no ENS names.
        for name in ("validation", "ens_name_to_address", "gas_price_strategy", "gas_estimate"):
            if name in w3.middleware_onion:
                w3.middleware_onion.remove(name)
        self.w3 = w3
        self._accounts = list(accounts)
        # Views are called "from" a fixed address: the tester provider would otherwise ask
        # for the node's accounts on every call to fill one in.
        self._call_from = accounts[0].address if accounts else "0x" + "00" * 20
        self._send_lock = threading.RLock()
        self._nonces: dict[str, int] = {}
        self._gas_defaults: dict[tuple[str, str], int] = {}
        self._coders: dict[str, tuple[bytes, tuple[str, ...]]] = {}
        self._fees: tuple[int, int] | None = None
        self._sends_since_fees = 0
        self.chain_id: int = self._read(lambda: w3.eth.chain_id)
        latest = self._read(lambda: w3.eth.get_block("latest"))
        self.block_gas_limit: int = int(latest["gasLimit"])

    # -- hooks ------------------------------------------------------------------------------

    def _where(self) -> str:
        return type(self).__name__

    def _revert_of(self, exc: BaseException) -> TransactionReverted | None:
        """``exc`` as a TransactionReverted if it is a revert, else None."""
        if isinstance(exc, ContractLogicError):
            data = _to_bytes(exc.data)
            return TransactionReverted(_decode_reason(data, exc.message), data=data)
        return None

    def _priority_fee(self) -> int:
        try:
            return int(self._read(lambda: self.w3.eth.max_priority_fee))
        except ChainUnavailable:
            raise
        except Exception:  # a node without eth_maxPriorityFeePerGas
            return 10**9

    def _logs(self, event: ContractEvent, start: int, end: int) -> list[EventData]:
        return self._read(lambda: list(event.get_logs(from_block=start, to_block=end)))

    # -- reads ------------------------------------------------------------------------------

    def _read(self, op: Callable[[], T]) -> T:
        """Run an idempotent request: retried on transient errors, reverts translated."""
        delay = 0.05
        for attempt in range(_READ_ATTEMPTS):
            try:
                return op()
            except self._transient as exc:
                if attempt == _READ_ATTEMPTS - 1:
                    raise ChainUnavailable(f"{self._where()}: {exc}") from exc
                time.sleep(delay)
                delay *= 2
            except Exception as exc:
                reverted = self._revert_of(exc)
                if reverted is not None:
                    raise reverted from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def accounts(self) -> list[LocalAccount]:
        return list(self._accounts)

    def contract(self, address: str, abi: ABI) -> Contract:
        return self.w3.eth.contract(address=to_checksum_address(address), abi=abi)

    def call(self, fn: ContractFunction, *, block: int | None = None) -> Any:
        where: BlockIdentifier = "latest" if block is None else BlockNumber(block)
        return self._read(lambda: fn.call({"from": self._call_from}, block_identifier=where))

    def balance(self, address: str) -> int:
        checksum = to_checksum_address(address)
        return int(self._read(lambda: self.w3.eth.get_balance(checksum)))

    def block_number(self) -> int:
        return int(self._read(lambda: self.w3.eth.block_number))

    def block_timestamp(self, number: int) -> int:
        return int(self._read(lambda: self.w3.eth.get_block(BlockNumber(number))["timestamp"]))

    def now(self) -> int:
        latest = int(self._read(lambda: self.w3.eth.get_block("latest"))["timestamp"])
        return max(latest, int(time.time()))

    def raw_transaction(self, tx_hash: str) -> bytes:
        try:
            return bytes(self._read(lambda: self.w3.eth.get_raw_transaction(HexStr(tx_hash))))
        except Web3TransactionNotFound as exc:
            raise LedgerError(f"no mined transaction {tx_hash}") from exc

    def transaction_input(self, tx_hash: str) -> bytes:
        try:
            tx = self._read(lambda: self.w3.eth.get_transaction(HexStr(tx_hash)))
        except Web3TransactionNotFound as exc:
            raise LedgerError(f"no mined transaction {tx_hash}") from exc
        return bytes(tx["input"])

    def code(self, address: str) -> bytes:
        checksum = to_checksum_address(address)
        return bytes(self._read(lambda: self.w3.eth.get_code(checksum)))

    def _raw_logs(self, address: str, start: int, end: int) -> list[LogReceipt]:
        checksum = to_checksum_address(address)
        return list(
            self._read(
                lambda: self.w3.eth.get_logs(
                    {
                        "address": checksum,
                        "fromBlock": BlockNumber(start),
                        "toBlock": BlockNumber(end),
                    }
                )
            )
        )

    def logs(
        self, address: str, *, from_block: int, to_block: int | None = None, window: int = 1000
    ) -> list[LogReceipt]:
        return self._windowed(lambda a, b: self._raw_logs(address, a, b), from_block, to_block,
                              window)  # fmt: skip

    def _windowed(
        self, read: Callable[[int, int], list[T]], from_block: int, to_block: int | None,
        window: int,
    ) -> list[T]:  # fmt: skip
        """``read(start, end)`` over ``[from_block, to_block]``, ``window`` blocks at a time."""
        if window < 1:
            raise ConfigError(f"must be at least 1, got {window}", field="window")
        if from_block < 0:
            raise ConfigError(f"must not be negative, got {from_block}", field="from_block")
        last = self.block_number() if to_block is None else to_block
        found: list[T] = []
        start = from_block
        while start <= last:
            end = min(start + window - 1, last)
            found.extend(read(start, end))
            start = end + 1
        return found

    def events(
        self,
        event: ContractEvent,
        *,
        from_block: int,
        to_block: int | None = None,
        window: int = 1000,
    ) -> list[EventData]:
        return self._windowed(lambda a, b: self._logs(event, a, b), from_block, to_block, window)

    # -- transactions -----------------------------------------------------------------------

    def deploy(
        self,
        abi: ABI,
        bytecode: str | bytes,
        *args: Any,
        sender: LocalAccount,
        value: int = 0,
        gas: int | None = None,
        timeout: float = 30.0,
    ) -> Contract:
        factory = self.w3.eth.contract(abi=abi, bytecode=HexBytes(bytecode))
        data = factory.constructor(*args).data_in_transaction
        params: TxParams = {"data": data, "value": Wei(value)}
        if gas is None:  # deployments are rare: estimated every time, not cached
            gas = self._buffered(self._estimate({"from": sender.address, **params}))
        receipt = self._submit({**params, "gas": gas}, sender, timeout)
        if receipt.contract_address is None:
            raise LedgerError(f"deployment {receipt.tx_hash} created no contract")
        return self.contract(receipt.contract_address, abi)

    def transact(
        self,
        fn: ContractFunction,
        *,
        sender: LocalAccount,
        value: int = 0,
        gas: int | None = None,
        timeout: float = 30.0,
    ) -> Receipt:
        if not fn.address:
            raise ConfigError("the function is not bound to a deployed contract", field="fn")
        data = self._calldata(fn, value)
        key = (str(fn.address), str(fn.signature))
        if gas is None:
            gas = self._gas_defaults.get(key)
            if gas is None:
                request: TxParams = {
                    "from": sender.address,
                    "to": fn.address,
                    "data": data,
                    "value": Wei(value),
                }
                gas = self._gas_defaults[key] = self._buffered(self._estimate(request))
        params: TxParams = {"to": fn.address, "data": data, "value": Wei(value), "gas": gas}
        try:
            return self._submit(params, sender, timeout)
        except TransactionReverted as exc:
            if exc.reason == OUT_OF_GAS:
                self._gas_defaults.pop(key, None)  # estimate again next time
            raise

    def transfer(
        self, to: str, value: int, *, sender: LocalAccount, timeout: float = 30.0
    ) -> Receipt:
        target = to_checksum_address(to)
        code = self._read(lambda: self.w3.eth.get_code(target))
        params: TxParams = {"to": target, "value": Wei(value)}
        gas = (
            21_000
            if not code
            else self._buffered(self._estimate({"from": sender.address, **params}))
        )
        return self._submit({**params, "gas": gas}, sender, timeout)

    def default_gas(self, fn: ContractFunction) -> int | None:
        """The cached default gas limit for ``fn``'s contract and signature, if any yet."""
        return self._gas_defaults.get((str(fn.address), str(fn.signature)))

    def _calldata(self, fn: ContractFunction, value: int) -> HexStr:
        # Fast path: the function's selector and input types, cached, and eth_abi's encoder
        # (web3's build_transaction looks the ABI element up again on every call: a few ms).
        abi = getattr(fn, "abi", None)
        if abi and not fn.kwargs and (value == 0 or abi.get("stateMutability") == "payable"):
            key = str(fn.signature)
            coder = self._coders.get(key)
            if coder is None:
                coder = self._coders[key] = (
                    function_abi_to_4byte_selector(abi),
                    tuple(get_abi_input_types(abi)),
                )
            selector, types = coder
            try:
                return HexStr("0x" + (selector + abi_encode(types, list(fn.args))).hex())
            except Exception:  # let web3 encode it, and raise its clearer error
                pass
        # build_transaction with every field given makes no request; it encodes and checks.
        filled: TxParams = {
            "chainId": self.chain_id,
            "nonce": Nonce(0),
            "gas": 0,
            "maxFeePerGas": Wei(0),
            "maxPriorityFeePerGas": Wei(0),
            "value": Wei(value),
        }
        return cast(HexStr, fn.build_transaction(filled)["data"])

    def _estimate(self, request: TxParams) -> int:
        return int(self._read(lambda: self.w3.eth.estimate_gas(request)))

    def _buffered(self, estimate: int) -> int:
        return max(estimate, min(math.ceil(estimate * GAS_BUFFER), self.block_gas_limit))

    def _fee_params(self) -> tuple[int, int]:
        if self._fees is None or self._sends_since_fees >= _FEE_REFRESH_EVERY:
            latest = self._read(lambda: self.w3.eth.get_block("latest"))
            base = int(latest.get("baseFeePerGas", 0))
            tip = self._priority_fee()
            self._fees = (2 * base + tip, tip)
            self._sends_since_fees = 0
        self._sends_since_fees += 1
        return self._fees

    def _submit(self, params: TxParams, sender: LocalAccount, timeout: float) -> Receipt:
        with self._send_lock:
            tx_hash, tx = self._sign_and_send(params, sender)
        receipt = self._await_receipt(tx_hash, int(tx["gas"]), timeout)
        if receipt.status != 1:
            raise self._failure(tx, receipt, sender.address)
        return receipt

    def _sign_and_send(self, params: TxParams, sender: LocalAccount) -> tuple[str, TxParams]:
        address = sender.address
        for attempt in range(_SEND_ATTEMPTS):
            nonce = self._nonces.get(address)
            if nonce is None:
                nonce = self._read(lambda: self.w3.eth.get_transaction_count(address, "pending"))
            max_fee, tip = self._fee_params()
            tx: TxParams = {
                "type": 2,
                "chainId": self.chain_id,
                "nonce": Nonce(nonce),
                "maxFeePerGas": Wei(max_fee),
                "maxPriorityFeePerGas": Wei(tip),
                **params,
            }
            raw = bytes(sender.sign_transaction(cast(dict[str, Any], tx)).raw_transaction)
            try:
                tx_hash = self._send_raw(raw)
            except ChainUnavailable:
                self._nonces.pop(address, None)
                raise
            except Exception as exc:
                self._nonces.pop(address, None)  # read it again next time
                last = attempt == _SEND_ATTEMPTS - 1
                if _is_nonce_error(exc) and not last:
                    continue
                if _is_fee_error(exc) and not last:
                    self._fees = None
                    continue
                reverted = self._revert_of(exc)
                if reverted is not None:
                    raise reverted from exc
                raise LedgerError(f"transaction rejected: {_message_of(exc)}") from exc
            self._nonces[address] = nonce + 1
            return tx_hash, tx
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_raw(self, raw: bytes) -> str:
        """Send a signed transaction; the same bytes are resent after a transient error."""
        delay = 0.05
        for attempt in range(_READ_ATTEMPTS):
            try:
                return HexBytes(self.w3.eth.send_raw_transaction(raw)).to_0x_hex()
            except self._transient as exc:
                if attempt == _READ_ATTEMPTS - 1:
                    raise ChainUnavailable(f"{self._where()}: {exc}") from exc
                time.sleep(delay)
                delay *= 2
            except Exception as exc:
                if attempt > 0 and _is_already_known(exc):
                    return HexBytes(keccak(raw)).to_0x_hex()  # an earlier attempt got through
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _await_receipt(self, tx_hash: str, gas_limit: int, timeout: float) -> Receipt:
        deadline = time.monotonic() + timeout
        delay = 0.001
        failures = 0
        while True:
            try:
                raw = self.w3.eth.get_transaction_receipt(HexStr(tx_hash))
                return _to_receipt(raw, gas_limit)
            except Web3TransactionNotFound:
                failures = 0
            except self._transient as exc:
                failures += 1
                if failures >= _READ_ATTEMPTS:
                    raise ChainUnavailable(
                        f"{self._where()}: lost while waiting for {tx_hash}: {exc}"
                    ) from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChainUnavailable(
                    f"{self._where()}: no receipt for {tx_hash} within {timeout} s"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _RECEIPT_POLL_MAX)

    def _failure(
        self, tx: TxParams, receipt: Receipt, sender: ChecksumAddress
    ) -> TransactionReverted:
        if receipt.gas_used >= receipt.gas_limit:
            return TransactionReverted(OUT_OF_GAS, receipt=receipt)
        # The reason: run it again as a call in its own block: with that block's timestamp
        # (time-dependent checks must see the time the transaction saw) and its post-state,
        # which with one transaction per block differs from the pre-state only by the
        # reverted transaction's fee and nonce.
        replay: TxParams = {
            "from": sender,
            "data": tx.get("data", b""),
            "value": tx.get("value", Wei(0)),
            "gas": tx["gas"],
        }
        if "to" in tx:
            replay["to"] = tx["to"]
        try:
            self.w3.eth.call(replay, block_identifier=BlockNumber(receipt.block))
        except Exception as exc:
            reverted = self._revert_of(exc)
            if reverted is not None:
                return TransactionReverted(reverted.reason, data=reverted.data, receipt=receipt)
        return TransactionReverted(None, receipt=receipt)


# --------------------------------------------------------------------------------------------
# RpcChain
# --------------------------------------------------------------------------------------------


class RpcChain(_Web3Chain):
    """A chain behind a JSON-RPC HTTP URL (anvil, a testnet node, ...).

    Give the keys that will sign, as ``private_key`` (one) or ``accounts`` (several; keys or
    ``LocalAccount``\\ s); :meth:`accounts` returns them. With neither the chain is read-only.
    Connection failures raise :class:`ChainUnavailable`.
    """

    _transient = (OSError,)  # requests' errors (connection, timeout, HTTP) are OSErrors

    def __init__(
        self,
        url: str,
        *,
        private_key: str | bytes | None = None,
        accounts: Sequence[LocalAccount | str | bytes] | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        if private_key is not None and accounts is not None:
            raise ConfigError("give private_key or accounts, not both", field="accounts")
        keys: list[LocalAccount | str | bytes] = (
            [private_key] if private_key is not None else list(accounts or [])
        )
        local = [k if isinstance(k, LocalAccount) else Account.from_key(k) for k in keys]
        self.url = url
        provider = HTTPProvider(
            url,
            request_kwargs={"timeout": request_timeout},
            exception_retry_configuration=None,  # retries are ours, for idempotent calls only
        )
        super().__init__(Web3(provider), local)

    def _where(self) -> str:
        return f"chain at {self.url}"

    def time_travel(self, seconds: int) -> None:
        if seconds < 0:
            raise ConfigError(f"cannot travel back in time ({seconds} s)", field="seconds")
        manager = self.w3.manager
        self._read(lambda: manager.request_blocking(RPCEndpoint("evm_increaseTime"), [seconds]))
        self._read(lambda: manager.request_blocking(RPCEndpoint("evm_mine"), []))


# --------------------------------------------------------------------------------------------
# EmbeddedChain
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _BlockRecord:
    number: int
    timestamp: int
    hash: bytes
    transactions: tuple[bytes, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "block": self.number,
                "timestamp": self.timestamp,
                "hash": "0x" + self.hash.hex(),
                "transactions": ["0x" + raw.hex() for raw in self.transactions],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> _BlockRecord:
        item = json.loads(line)
        return cls(
            number=int(item["block"]),
            timestamp=int(item["timestamp"]),
            hash=bytes.fromhex(item["hash"][2:]),
            transactions=tuple(bytes.fromhex(raw[2:]) for raw in item["transactions"]),
        )


@cache
def _backend_class() -> type[Any]:
    """eth-tester's py-evm backend, journaled, deterministic and with O(1) receipt lookups.

    Built lazily so that importing this module (e.g. for RpcChain) does not import py-evm.
    """
    from eth.exceptions import InvalidInstruction as EVMInvalidInstruction
    from eth.exceptions import Revert as EVMRevert
    from eth.vm.forks.cancun.state import get_total_blob_gas
    from eth.vm.forks.prague import PragueVM
    from eth_bloom.bloom import BloomFilter
    from eth_tester import PyEVMBackend
    from eth_tester.backends.pyevm.serializers import (
        serialize_transaction,
        serialize_transaction_receipt,
    )
    from eth_tester.exceptions import TransactionNotFound

    class JournaledBackend(PyEVMBackend):  # type: ignore[misc]
        def __init__(
            self,
            *,
            num_accounts: int,
            gas_limit: int,
            genesis_timestamp: int,
            clock: Callable[[], float] | None,
            pace: str = "wall",
        ) -> None:
            self.clock = clock
            self.pace = pace
            self.head_clock = clock() if clock is not None else 0.0
            self.clock_offset = 0
            self.forced_timestamp: int | None = None
            self.pending_stamped = False
            self.records: list[_BlockRecord] = []
            self.tx_index: dict[bytes, int] = {}
            self.head_timestamp = genesis_timestamp
            params = PyEVMBackend.generate_genesis_params(
                overrides={"gas_limit": gas_limit, "timestamp": genesis_timestamp}
            )
            state = PyEVMBackend.generate_genesis_state(num_accounts=num_accounts)
            super().__init__(genesis_parameters=params, genesis_state=state)

        # -- time ---------------------------------------------------------------------------

        def _next_timestamp(self) -> int:
            if self.forced_timestamp is not None:
                return self.forced_timestamp
            if self.clock is None:
                return self.head_timestamp + 1
            if self.pace == "elapsed":
                idle = int(self.clock() - self.head_clock) + self.clock_offset
                return self.head_timestamp + max(1, idle)
            return max(self.head_timestamp + 1, int(self.clock()) + self.clock_offset)

        def _stamp_pending(self) -> None:
            if not self.pending_stamped:
                self.chain.header = self.chain.header.copy(timestamp=self._next_timestamp())
                self.pending_stamped = True

        def advance(self, seconds: int) -> None:
            if self.clock is None or self.pace == "elapsed":
                timestamp = self.head_timestamp + max(1, seconds)
            else:
                self.clock_offset += seconds
                timestamp = max(self.head_timestamp + 1, int(self.clock()) + self.clock_offset)
            self.time_travel(timestamp)

        def time_travel(self, to_timestamp: int) -> int:
            self.chain.header = self.chain.header.copy(timestamp=to_timestamp)
            self.pending_stamped = True
            self.mine_blocks()
            return to_timestamp

        # -- sending: the pending block gets its timestamp when its first transaction comes --

        def _stamped(self, send: Callable[[], bytes]) -> bytes:
            self._stamp_pending()
            try:
                return send()
            except Exception:  # let web3 encode it, and raise its clearer error
                if self.chain.header.gas_used == 0:
                    self.pending_stamped = False
                raise

        def send_raw_transaction(self, raw_transaction: bytes) -> bytes:
            return self._stamped(
                lambda: super(JournaledBackend, self).send_raw_transaction(raw_transaction)
            )

        def send_signed_transaction(
            self, signed_transaction: Any, block_number: Any = "latest"
        ) -> bytes:
            return self._stamped(
                lambda: super(JournaledBackend, self).send_signed_transaction(
                    signed_transaction, block_number
                )
            )

        def send_transaction(self, transaction: Any) -> bytes:
            return self._stamped(
                lambda: super(JournaledBackend, self).send_transaction(transaction)
            )

        # -- estimating at the pending block's own timestamp ----------------------------------

        def estimate_gas(self, transaction: Any, block_number: Any = "latest") -> int:
            """py-evm estimates on a fresh child of the head stamped with the wall clock's time;
            estimate on the pending block instead, with the timestamp the transaction will get,
            or time-dependent code (a round's windows) answers for the wrong time."""
            if block_number != "latest":
                return int(super().estimate_gas(transaction, block_number))
            from eth.vm.spoof import SpoofTransaction
            from eth_tester.exceptions import TransactionFailed

            self._stamp_pending()
            evm_tx = self._get_normalized_and_unsigned_evm_transaction(
                {**transaction, "gas": 21000}, block_number
            )
            spoofed = SpoofTransaction(evm_tx, from_=transaction["from"])
            vm = self.chain.get_vm()
            header = vm.get_header()
            if hasattr(header, "base_fee_per_gas"):
                header = header.copy(base_fee_per_gas=0)
            state = vm.build_state(vm.chaindb.db, header, vm.chain_context, vm.previous_hashes)
            snapshot = state.snapshot()
            try:
                return int(self.chain.gas_estimator(state, spoofed))
            except (EVMRevert, EVMInvalidInstruction) as exc:
                raise TransactionFailed(*exc.args) from exc
            finally:
                state.revert(snapshot)

        # -- mining: deterministic prevrandao, journal, transaction index ----------------------

        def mine_blocks(
            self, num_blocks: int = 1, coinbase: bytes = b"\x00" * 20
        ) -> tuple[bytes, ...]:
            hashes = []
            for _ in range(num_blocks):
                self._stamp_pending()
                pending = self.chain.get_block()
                kwargs: dict[str, Any] = {
                    "coinbase": coinbase,
                    "mix_hash": keccak(b"fedledger.prevrandao" + pending.header.parent_hash),
                }
                if isinstance(self.chain.get_vm(), PragueVM):
                    kwargs["blob_gas_used"] = sum(
                        get_total_blob_gas(tx) for tx in pending.transactions
                    )
                block = self.chain.mine_block(**kwargs)
                self.pending_stamped = False
                self.head_timestamp = block.header.timestamp
                if self.clock is not None:
                    self.head_clock = self.clock()
                    if self.pace == "elapsed":
                        self.clock_offset = 0
                self.records.append(
                    _BlockRecord(
                        number=block.number,
                        timestamp=block.header.timestamp,
                        hash=block.hash,
                        transactions=tuple(tx.encode() for tx in block.transactions),
                    )
                )
                for tx in block.transactions:
                    self.tx_index[tx.hash] = block.number
                hashes.append(block.hash)
            return tuple(hashes)

        def replay_block(self, record: _BlockRecord) -> None:
            self.forced_timestamp = record.timestamp
            try:
                for raw in record.transactions:
                    self.send_raw_transaction(raw)
                (mined,) = self.mine_blocks(1)
            finally:
                self.forced_timestamp = None
            if mined != record.hash:
                raise LedgerError(
                    f"replay diverged at block {record.number}: recorded hash "
                    f"0x{record.hash.hex()}, rebuilt 0x{bytes(mined).hex()}"
                )

        def revert_to_snapshot(self, snapshot: Any) -> None:
            super().revert_to_snapshot(snapshot)
            head = self.chain.get_canonical_head()
            dropped = [r for r in self.records if r.number > head.block_number]
            self.records = [r for r in self.records if r.number <= head.block_number]
            for record in dropped:
                for raw in record.transactions:
                    self.tx_index.pop(keccak(raw), None)
            self.head_timestamp = head.timestamp
            self.pending_stamped = False

        # -- lookups: by index instead of scanning the chain backwards -----------------------

        def _locate(self, transaction_hash: bytes) -> tuple[Any, Any, int]:
            number = self.tx_index.get(bytes(transaction_hash))
            block = (
                self.chain.get_block()
                if number is None
                else (self.chain.get_canonical_block_by_number(number))
            )
            for index, tx in enumerate(block.transactions):
                if tx.hash == transaction_hash:
                    return block, tx, index
            raise TransactionNotFound(
                f"No transaction found for transaction hash: 0x{bytes(transaction_hash).hex()}"
            )

        def get_transaction_by_hash(self, transaction_hash: bytes) -> Any:
            block, tx, index = self._locate(transaction_hash)
            is_pending = block.number == self.chain.get_block().number
            return serialize_transaction(block, tx, index, is_pending)

        def get_transaction_receipt(self, transaction_hash: bytes) -> Any:
            block, tx, index = self._locate(transaction_hash)
            is_pending = block.number == self.chain.get_block().number
            receipts = block.get_receipts(self.chain.chaindb)
            return serialize_transaction_receipt(
                block, receipts, tx, index, is_pending, self.chain.get_vm()
            )

        def find_logs(
            self, address: bytes | None, topic0: bytes | None, start: int, end: int
        ) -> list[LogReceipt]:
            """Logs from ``address`` with first topic ``topic0`` in mined blocks
            ``start..end``, read straight from the chain (blocks whose bloom excludes them
            are skipped without being decoded)."""
            head = self.chain.get_canonical_head().block_number
            wanted = [item for item in (address, topic0) if item is not None]
            topic_int = None if topic0 is None else int.from_bytes(topic0, "big")
            found: list[LogReceipt] = []
            for number in range(max(start, 0), min(end, head) + 1):
                header = self.chain.get_canonical_block_header_by_number(number)
                if wanted:
                    bloom = BloomFilter(header.bloom)
                    if any(item not in bloom for item in wanted):
                        continue
                block = self.chain.get_block_by_header(header)
                receipts = block.get_receipts(self.chain.chaindb)
                log_index = 0
                for tx_index, (tx, receipt) in enumerate(
                    zip(block.transactions, receipts, strict=True)
                ):
                    for log in receipt.logs:
                        if (address is None or log.address == address) and (
                            topic_int is None or (log.topics and log.topics[0] == topic_int)
                        ):
                            found.append(
                                {
                                    "address": to_checksum_address(log.address),
                                    "blockHash": HexBytes(block.hash),
                                    "blockNumber": BlockNumber(number),
                                    "data": HexBytes(log.data),
                                    "logIndex": log_index,
                                    "removed": False,
                                    "topics": [HexBytes(t.to_bytes(32, "big")) for t in log.topics],
                                    "transactionHash": HexBytes(tx.hash),
                                    "transactionIndex": tx_index,
                                }
                            )
                        log_index += 1
            return found

    return JournaledBackend


class _LockedTesterProvider(EthereumTesterProvider):
    """eth-tester is not thread-safe: one request at a time."""

    def __init__(self, tester: Any, lock: threading.RLock) -> None:
        super().__init__(tester)
        self._lock = lock

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._lock:
            return super().make_request(method, params)


class EmbeddedChain(_Web3Chain):
    """An in-process EVM: eth-tester's py-evm backend behind web3's EthereumTesterProvider.

    ``accounts`` funded accounts (keys 1, 2, ... as in eth-tester; 1 000 000 ether each), a
    block gas limit of ``gas_limit``, one block per transaction (auto-mine), timestamps from
    ``clock`` (``None``: logical time; see the module docstring). With a clock, ``pace``
    ``"wall"`` stamps blocks with the clock's time; ``"elapsed"`` stamps a block with its
    parent's timestamp plus the whole seconds the clock advanced since the parent was mined
    (at least one): chain time then runs one second per block and at the clock's rate while
    idle, so a window of ``w`` seconds closes after at most ``w`` seconds of waiting however
    many blocks came before (what ``fedledger run`` uses). Thread-safe: requests are
    serialized. Everything mined is journaled: :meth:`save` and :meth:`replay`.

    Only what goes through this object (or its ``w3``) is journaled; eth-tester's
    ``reset_to_genesis`` is not supported (``evm_revert`` to a snapshot is: the journal is
    truncated).
    """

    def __init__(
        self,
        *,
        accounts: int = 10,
        gas_limit: int = DEFAULT_BLOCK_GAS_LIMIT,
        genesis_timestamp: int | None = None,
        clock: Callable[[], float] | None = None,
        pace: str = "wall",
    ) -> None:
        from eth_tester import EthereumTester

        if accounts < 1:
            raise ConfigError(f"must be at least 1, got {accounts}", field="accounts")
        if pace not in ("wall", "elapsed"):
            raise ConfigError(f"unknown pace {pace!r}; known: wall, elapsed", field="pace")
        if genesis_timestamp is None:
            genesis_timestamp = (
                int(clock()) if clock is not None and pace == "wall" else DEFAULT_GENESIS_TIMESTAMP
            )
        self._lock = threading.RLock()
        self._backend = _backend_class()(
            num_accounts=accounts,
            gas_limit=gas_limit,
            genesis_timestamp=genesis_timestamp,
            clock=clock,
            pace=pace,
        )
        self._settings = {
            "accounts": accounts,
            "gas_limit": gas_limit,
            "genesis_timestamp": genesis_timestamp,
        }
        tester = EthereumTester(self._backend)
        self._tester = tester
        keys = [Account.from_key(key.to_bytes()) for key in self._backend.account_keys]
        super().__init__(Web3(_LockedTesterProvider(tester, self._lock)), keys)

    def _revert_of(self, exc: BaseException) -> TransactionReverted | None:
        from eth_tester.exceptions import TransactionFailed

        if isinstance(exc, TransactionFailed):
            first = exc.args[0] if exc.args else None
            data = _to_bytes(first)
            return TransactionReverted(_decode_reason(data, str(first)), data=data)
        return super()._revert_of(exc)

    def _priority_fee(self) -> int:
        return 0

    def _raw_logs(self, address: str, start: int, end: int) -> list[LogReceipt]:
        with self._lock:
            return list(self._backend.find_logs(to_canonical_address(address), None, start, end))

    # -- fast paths: straight to eth-tester, without web3's request and formatting layers ----

    def _send_raw(self, raw: bytes) -> str:
        with self._lock:
            return str(self._tester.send_raw_transaction("0x" + raw.hex()))

    def _await_receipt(self, tx_hash: str, gas_limit: int, timeout: float) -> Receipt:
        from eth_tester.exceptions import TransactionNotFound

        try:
            with self._lock:
                raw = self._tester.get_transaction_receipt(tx_hash)
        except TransactionNotFound:  # auto-mined: cannot happen, but keep the general path
            return super()._await_receipt(tx_hash, gas_limit, timeout)
        logs: list[LogReceipt] = [
            {
                "address": to_checksum_address(log["address"]),
                "blockHash": HexBytes(log["block_hash"]),
                "blockNumber": BlockNumber(int(log["block_number"])),
                "data": HexBytes(log["data"]),
                "logIndex": int(log["log_index"]),
                "removed": False,
                "topics": [HexBytes(t) for t in log["topics"]],
                "transactionHash": HexBytes(log["transaction_hash"]),
                "transactionIndex": int(log["transaction_index"]),
            }
            for log in raw["logs"]
        ]
        contract = raw.get("contract_address")
        return Receipt(
            tx_hash=HexBytes(raw["transaction_hash"]).to_0x_hex(),
            block=int(raw["block_number"]),
            gas_used=int(raw["gas_used"]),
            status=int(raw["status"]),
            logs=logs,
            gas_limit=gas_limit,
            effective_gas_price=int(raw.get("effective_gas_price") or 0),
            contract_address=to_checksum_address(contract) if contract else None,
        )

    def raw_transaction(self, tx_hash: str) -> bytes:
        wanted = bytes(HexBytes(tx_hash))
        with self._lock:
            number = self._backend.tx_index.get(wanted)
            records = [r for r in self._backend.records if r.number == number]
        for raw in records[0].transactions if records else ():
            if keccak(raw) == wanted:
                return bytes(raw)
        raise LedgerError(f"no mined transaction {tx_hash}")

    def block_number(self) -> int:
        with self._lock:
            return int(self._backend.chain.get_canonical_head().block_number)

    def block_timestamp(self, number: int) -> int:
        with self._lock:
            header = self._backend.chain.get_canonical_block_header_by_number(number)
            return int(header.timestamp)

    def now(self) -> int:
        with self._lock:
            return int(self._backend._next_timestamp())

    def _logs(self, event: ContractEvent, start: int, end: int) -> list[EventData]:
        address = to_canonical_address(event.address) if event.address else None
        topic0 = None if event.abi.get("anonymous") else bytes(HexBytes(event.topic))
        with self._lock:
            logs = self._backend.find_logs(address, topic0, start, end)
        return [event.process_log(log) for log in logs]

    def time_travel(self, seconds: int) -> None:
        if seconds < 0:
            raise ConfigError(f"cannot travel back in time ({seconds} s)", field="seconds")
        with self._lock:
            self._backend.advance(seconds)

    # -- journal ------------------------------------------------------------------------------

    def _genesis_hash(self) -> bytes:
        return bytes(self._backend.chain.get_canonical_block_header_by_number(0).hash)

    def recorded_transactions(self) -> list[bytes]:
        """Every raw signed transaction mined so far, in order."""
        with self._lock:
            return [raw for record in self._backend.records for raw in record.transactions]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the journal (JSON lines: a header, then one line per mined block with its
        timestamp, hash and raw transactions in hex), atomically."""
        target = Path(path)
        with self._lock:
            header = {
                "format": JOURNAL_FORMAT,
                "version": JOURNAL_VERSION,
                "chain_id": self.chain_id,
                **self._settings,
                "genesis_hash": "0x" + self._genesis_hash().hex(),
            }
            lines = [json.dumps(header, separators=(",", ":"))]
            lines.extend(record.to_json() for record in self._backend.records)
        partial = target.with_name(target.name + ".partial")
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(partial, target)

    @classmethod
    def replay(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] | None = None
    ) -> EmbeddedChain:
        """Rebuild the chain saved at ``path`` by re-sending its transactions block by block
        with the recorded timestamps; every block hash is checked. The returned chain goes on
        (with ``clock`` for new blocks) and keeps journaling."""
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
            header = json.loads(lines[0])
            if header.get("format") != JOURNAL_FORMAT or header.get("version") != JOURNAL_VERSION:
                raise ValueError(f"not a {JOURNAL_FORMAT} v{JOURNAL_VERSION} journal")
            records = [_BlockRecord.from_json(line) for line in lines[1:] if line.strip()]
            settings = {
                "accounts": int(header["accounts"]),
                "gas_limit": int(header["gas_limit"]),
                "genesis_timestamp": int(header["genesis_timestamp"]),
            }
            genesis_hash = str(header["genesis_hash"])
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise LedgerError(f"cannot read the chain journal {path}: {exc}") from exc
        chain = cls(
            clock=clock,
            accounts=settings["accounts"],
            gas_limit=settings["gas_limit"],
            genesis_timestamp=settings["genesis_timestamp"],
        )
        if "0x" + chain._genesis_hash().hex() != genesis_hash:
            raise LedgerError(f"replay diverged at genesis ({path})")
        with chain._lock:
            for record in records:
                try:
                    chain._backend.replay_block(record)
                except LedgerError:
                    raise
                except Exception as exc:
                    raise LedgerError(f"replay failed at block {record.number}: {exc}") from exc
        return chain
