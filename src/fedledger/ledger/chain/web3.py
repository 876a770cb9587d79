"""The semantics of :class:`~fedledger.ledger.chain.base.Chain` over a web3 instance, once.

:class:`Web3Chain` is shared by :class:`~fedledger.ledger.chain.rpc.RpcChain` and
:class:`~fedledger.ledger.chain.embedded.EmbeddedChain`, which add the transport (and, for the
embedded chain, fast paths straight to eth-tester). See :mod:`fedledger.ledger.chain` for the
semantics (local signing and nonces, explicit gas, reverts, retries, windows).

The error boundary: every public method runs inside :meth:`Web3Chain._errors`
(:func:`~fedledger.ledger.chain.base.map_chain_errors` with the backend's name and revert
hook), so it raises only fedledger's errors; idempotent reads (:meth:`Web3Chain._read`) retry
what :func:`~fedledger.ledger.chain.base.translate_error` calls ``ChainUnavailable``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, TypeVar, cast

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import ABI, BlockNumber, ChecksumAddress, HexStr
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractEvent, ContractFunction
from web3.exceptions import TransactionNotFound as Web3TransactionNotFound
from web3.types import BlockIdentifier, EventData, LogReceipt, Nonce, TxParams, TxReceipt, Wei

from fedledger.errors import (
    ChainUnavailable,
    ConfigError,
    FedledgerError,
    LedgerError,
    TransactionReverted,
)
from fedledger.ledger.chain.base import (
    GAS_BUFFER,
    OUT_OF_GAS,
    Receipt,
    map_chain_errors,
    message_of,
    revert_of,
    translate_error,
    translated,
)

__all__ = ["READ_ATTEMPTS", "Web3Chain"]

T = TypeVar("T")

READ_ATTEMPTS: Final = 4
"""How many times an idempotent request is tried on an unreachable chain (RpcChain)."""
_SEND_ATTEMPTS: Final = 3
_FEE_REFRESH_EVERY: Final = 64
_RECEIPT_POLL_MAX: Final = 0.05


def _is_nonce_error(exc: BaseException) -> bool:
    return "nonce" in message_of(exc).lower()


def _is_fee_error(exc: BaseException) -> bool:
    text = message_of(exc).lower()
    return "base fee" in text or "underpriced" in text or "fee cap" in text


def _is_already_known(exc: BaseException) -> bool:
    text = message_of(exc).lower()
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


class Web3Chain:
    """The semantics of :class:`Chain` over a web3 instance; subclasses add the transport."""

    _read_attempts: int = 1
    """Tries of an idempotent request when the chain is unavailable (1: no retry in process)."""

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
        self._with_code: set[str] = set()
        self._coders: dict[str, tuple[bytes, tuple[str, ...]]] = {}
        self._fees: tuple[int, int] | None = None
        self._sends_since_fees = 0
        with self._errors():
            self.chain_id: int = self._read(lambda: w3.eth.chain_id)
            latest = self._read(lambda: w3.eth.get_block("latest"))
            self.block_gas_limit: int = int(latest["gasLimit"])

    # -- hooks ------------------------------------------------------------------------------

    def _where(self) -> str:
        return type(self).__name__

    def _revert_of(self, exc: BaseException) -> TransactionReverted | None:
        """``exc`` as a TransactionReverted if it is a revert, else None."""
        return revert_of(exc)

    def _errors(self) -> AbstractContextManager[None]:
        """The error boundary: third-party errors leave it as fedledger's."""
        return map_chain_errors(self._where(), self._revert_of)

    def _translate(self, exc: Exception) -> FedledgerError:
        return translate_error(exc, where=self._where(), revert=self._revert_of)

    def _priority_fee(self) -> int:
        try:
            return int(self._read(lambda: self.w3.eth.max_priority_fee))
        except ChainUnavailable:
            raise
        except LedgerError:  # a node without eth_maxPriorityFeePerGas
            return 10**9

    def _logs(self, event: ContractEvent, start: int, end: int) -> list[EventData]:
        return self._read(lambda: list(event.get_logs(from_block=start, to_block=end)))

    # -- reads ------------------------------------------------------------------------------

    def _read(self, op: Callable[[], T]) -> T:
        """Run an idempotent request: retried while the chain is unavailable, every error
        translated."""
        delay = 0.05
        for attempt in range(self._read_attempts):
            try:
                return op()
            except Exception as exc:
                error = self._translate(exc)
                if error is exc:
                    raise
                if isinstance(error, ChainUnavailable) and attempt < self._read_attempts - 1:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise error from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @translated
    def accounts(self) -> list[LocalAccount]:
        return list(self._accounts)

    @translated
    def contract(self, address: str, abi: ABI) -> Contract:
        return self.w3.eth.contract(address=to_checksum_address(address), abi=abi)

    @translated
    def call(self, fn: ContractFunction, *, block: int | None = None) -> Any:
        where: BlockIdentifier = "latest" if block is None else BlockNumber(block)
        return self._read(lambda: fn.call({"from": self._call_from}, block_identifier=where))

    @translated
    def balance(self, address: str) -> int:
        checksum = to_checksum_address(address)
        return int(self._read(lambda: self.w3.eth.get_balance(checksum)))

    @translated
    def block_number(self) -> int:
        return int(self._read(lambda: self.w3.eth.block_number))

    @translated
    def block_timestamp(self, number: int) -> int:
        return int(self._read(lambda: self.w3.eth.get_block(BlockNumber(number))["timestamp"]))

    @translated
    def block_hash(self, number: int) -> bytes:
        return bytes(self._read(lambda: self.w3.eth.get_block(BlockNumber(number))["hash"]))

    @translated
    def block_randomness(self, number: int) -> tuple[int, bytes]:
        block = self._read(lambda: self.w3.eth.get_block(BlockNumber(number)))
        return int.from_bytes(bytes(block["mixHash"]), "big"), bytes(block["parentHash"])

    @translated
    def now(self) -> int:
        latest = int(self._read(lambda: self.w3.eth.get_block("latest"))["timestamp"])
        return max(latest, int(time.time()))

    @translated
    def raw_transaction(self, tx_hash: str) -> bytes:
        with self._not_found(tx_hash):
            return bytes(self._read(lambda: self.w3.eth.get_raw_transaction(HexStr(tx_hash))))

    @translated
    def transaction_input(self, tx_hash: str) -> bytes:
        with self._not_found(tx_hash):
            tx = self._read(lambda: self.w3.eth.get_transaction(HexStr(tx_hash)))
        return bytes(tx["input"])

    @contextlib.contextmanager
    def _not_found(self, tx_hash: str) -> Iterator[None]:
        """A transaction the node does not know: a LedgerError that says so."""
        try:
            yield
        except LedgerError as exc:
            if isinstance(exc.__cause__, Web3TransactionNotFound):
                raise LedgerError(f"no mined transaction {tx_hash}") from exc.__cause__
            raise

    @translated
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

    @translated
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

    @translated
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

    @translated
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

    @translated
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
        self._require_code(str(fn.address))
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

    def _require_code(self, address: str) -> None:
        """Refuse to call a function of an address without code (the EVM would run nothing,
        and succeed), checked once per address."""
        if address in self._with_code:
            return
        if not self._read(lambda: self.w3.eth.get_code(to_checksum_address(address))):
            raise LedgerError(f"{self._where()}: no contract at {address}")
        self._with_code.add(address)

    @translated
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

    @translated
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
            except FedledgerError:
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
                error = self._translate(exc)
                if isinstance(error, ChainUnavailable | TransactionReverted):
                    raise error from exc
                raise LedgerError(
                    f"{self._where()}: transaction rejected: {message_of(exc)}"
                ) from exc
            self._nonces[address] = nonce + 1
            return tx_hash, tx
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_raw(self, raw: bytes) -> str:
        """Send a signed transaction; the same bytes are resent while the chain is
        unavailable. Raises ChainUnavailable after the last try, the raw error otherwise."""
        delay = 0.05
        for attempt in range(self._read_attempts):
            try:
                return HexBytes(self.w3.eth.send_raw_transaction(raw)).to_0x_hex()
            except Exception as exc:
                if attempt > 0 and _is_already_known(exc):
                    return HexBytes(keccak(raw)).to_0x_hex()  # an earlier attempt got through
                error = self._translate(exc)
                if not isinstance(error, ChainUnavailable) or error is exc:
                    raise
                if attempt == self._read_attempts - 1:
                    raise error from exc
                time.sleep(delay)
                delay *= 2
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
            except Exception as exc:
                error = self._translate(exc)
                if not isinstance(error, ChainUnavailable):
                    raise error from exc
                failures += 1
                if failures >= max(self._read_attempts, 1):
                    raise ChainUnavailable(
                        f"{self._where()}: lost while waiting for {tx_hash}: {error}"
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
