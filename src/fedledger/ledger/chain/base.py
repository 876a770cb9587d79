"""The chain interface (:class:`Chain`), its :class:`Receipt`, and the error boundary.

Every public method of a chain backend raises only fedledger's errors, with the original
exception kept as ``__cause__``:

* :class:`~fedledger.errors.TransactionReverted` (``.reason``): a transaction, a gas estimate or
  a view reverted (eth-tester's ``TransactionFailed``, web3's ``ContractLogicError``);
* :class:`~fedledger.errors.ChainUnavailable`: the node cannot be reached, stopped answering,
  timed out or did not mine in time (connection errors and timeouts of requests, aiohttp or the
  socket layer, web3's ``ProviderConnectionError``, ``TimeExhausted``, ``RequestTimedOut``);
* :class:`~fedledger.errors.LedgerError`: anything else the chain libraries raise — the node's
  error answer (web3's ``Web3RPCError``), a malformed address or argument (``Web3ValueError``,
  eth_utils' ``ValidationError``, ``ValueError``), no contract at an address (web3's
  ``BadFunctionCallOutput``), an unknown block or transaction;
* :class:`~fedledger.errors.ConfigError` for an argument the backend checks itself before any
  request (a negative window, a function not bound to a contract, travelling back in time).

:func:`translate_error` is the one mapping, :func:`map_chain_errors` the context manager that
applies it (modelled on httpx's ``map_httpcore_exceptions``); the web3 layer wraps every public
method in it, and retries idempotent reads when the mapping says ``ChainUnavailable``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Concatenate, Final, ParamSpec, Protocol, TypeVar

import aiohttp
import requests
from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_typing import ABI
from hexbytes import HexBytes
from web3.contract import Contract
from web3.contract.contract import ContractEvent, ContractFunction
from web3.exceptions import (
    BadFunctionCallOutput,
    ContractLogicError,
    PersistentConnectionError,
    ProviderConnectionError,
    RequestTimedOut,
    TimeExhausted,
    TooManyRequests,
    Web3RPCError,
)
from web3.types import EventData, LogReceipt

from fedledger.errors import ChainUnavailable, FedledgerError, LedgerError, TransactionReverted

__all__ = [
    "GAS_BUFFER",
    "OUT_OF_GAS",
    "Chain",
    "ErrorBoundary",
    "Receipt",
    "RevertOf",
    "decode_reason",
    "map_chain_errors",
    "message_of",
    "revert_of",
    "to_bytes",
    "translate_error",
    "translated",
]

GAS_BUFFER: Final = 1.5
"""Default gas limit = ceil(first estimate * GAS_BUFFER), cached per (contract, function)."""
OUT_OF_GAS: Final = "out of gas"
"""The :attr:`TransactionReverted.reason` of a transaction that used all of its gas."""

_ERROR_SELECTOR: Final = bytes.fromhex("08c379a0")  # Error(string)
_PANIC_SELECTOR: Final = bytes.fromhex("4e487b71")  # Panic(uint256)


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
        with map_chain_errors(f"receipt {self.tx_hash}"):
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
    """What fedledger needs from a chain; see :mod:`fedledger.ledger.chain` for the semantics
    and this module's docstring for the errors every method may raise."""

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
        """Sign ``fn`` locally, send it, wait for its receipt; raise on revert. A function of
        an address without code raises :class:`~fedledger.errors.LedgerError`."""
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

    def block_hash(self, number: int) -> bytes:
        """The hash of mined block ``number`` (32 bytes)."""
        ...

    def block_randomness(self, number: int) -> tuple[int, bytes]:
        """Mined block ``number``'s ``prevrandao`` (its header's ``mixHash``) and its parent's
        hash: what a contract's ``block.prevrandao`` and ``blockhash(block.number - 1)`` were
        in it (a committee's seed, :func:`fedledger.ledger.rules.committee_seed`)."""
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
# Shared helpers: revert data and node messages
# --------------------------------------------------------------------------------------------


def to_bytes(data: Any) -> bytes | None:
    """Revert data as bytes, from bytes, ``0x`` hex or a node's ``{"data": "0x..."}``."""
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."}
        return to_bytes(data.get("data"))
    return None


def decode_reason(data: bytes | None, message: str | None) -> str | None:
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


def message_of(exc: BaseException) -> str:
    """An exception's message; a JSON-RPC error's ``message`` field when it carries one."""
    if isinstance(exc, Web3RPCError):
        error = (exc.rpc_response or {}).get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        return str(exc.message)
    if exc.args and isinstance(exc.args[0], dict):
        return str(exc.args[0].get("message", exc.args[0]))
    return str(exc)


# --------------------------------------------------------------------------------------------
# The error boundary
# --------------------------------------------------------------------------------------------

RevertOf = Callable[[BaseException], TransactionReverted | None]
"""Recognizes a backend's revert exception: the :class:`TransactionReverted` it means, or None."""

_UNAVAILABLE: Final[tuple[type[BaseException], ...]] = (
    OSError,  # sockets; TimeoutError, ConnectionError; aiohttp's ClientOSError
    requests.RequestException,  # an OSError too: connection refused or reset, timeouts, 5xx
    aiohttp.ClientConnectionError,
    ProviderConnectionError,
    PersistentConnectionError,
    RequestTimedOut,
    TimeExhausted,
    TooManyRequests,
)
"""Failures of the transport, not of the request: reads are retried, then ChainUnavailable."""


def revert_of(exc: BaseException) -> TransactionReverted | None:
    """web3's ``ContractLogicError`` (a node's "execution reverted") as TransactionReverted."""
    if isinstance(exc, ContractLogicError):
        data = to_bytes(exc.data)
        return TransactionReverted(decode_reason(data, exc.message), data=data)
    return None


def translate_error(exc: Exception, *, where: str, revert: RevertOf = revert_of) -> FedledgerError:
    """``exc`` as an error of fedledger's tree (``exc`` itself if it already is one).

    The caller raises the result ``from exc``. ``where`` names the chain in messages;
    ``revert`` recognizes the backend's own revert exception.
    """
    if isinstance(exc, FedledgerError):
        return exc
    reverted = revert(exc)
    if reverted is not None:
        return reverted
    if isinstance(exc, _UNAVAILABLE):
        return ChainUnavailable(f"{where}: unavailable: {type(exc).__name__}: {message_of(exc)}")
    if isinstance(exc, BadFunctionCallOutput):
        return LedgerError(
            f"{where}: the call returned nothing decodable (no contract at that address, or "
            f"one with another ABI): {message_of(exc)}"
        )
    if isinstance(exc, Web3RPCError):
        return LedgerError(f"{where}: the node refused the request: {message_of(exc)}")
    return LedgerError(f"{where}: {type(exc).__name__}: {message_of(exc)}")


@contextlib.contextmanager
def map_chain_errors(where: str, revert: RevertOf = revert_of) -> Iterator[None]:
    """Raise every exception of the block as fedledger's (see :func:`translate_error`), the
    original as ``__cause__``. fedledger's own errors, and ``BaseException``\\ s that are not
    ``Exception``\\ s (KeyboardInterrupt, cancellation), pass unchanged."""
    try:
        yield
    except FedledgerError:
        raise
    except Exception as exc:
        raise translate_error(exc, where=where, revert=revert) from exc


class ErrorBoundary(Protocol):
    """An object whose public methods run inside its :meth:`_errors` boundary."""

    def _errors(self) -> AbstractContextManager[None]:
        """Usually ``map_chain_errors(<what this object talks to>, <its revert hook>)``."""
        ...


_T = TypeVar("_T")
_P = ParamSpec("_P")
_B = TypeVar("_B", bound=ErrorBoundary)


def translated(method: Callable[Concatenate[_B, _P], _T]) -> Callable[Concatenate[_B, _P], _T]:
    """Run a public method inside its object's error boundary (:meth:`ErrorBoundary._errors`)."""

    @functools.wraps(method)
    def boundary(self: _B, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with self._errors():
            return method(self, *args, **kwargs)

    return boundary
