"""An in-process EVM: :class:`EmbeddedChain`, eth-tester's py-evm backend behind web3.

Zero set-up, deterministic, and journaled: every block it mines is recorded (timestamp, hash
and the raw signed transactions, :mod:`fedledger.ledger.chain.journal`) so that
:meth:`EmbeddedChain.save` and :meth:`EmbeddedChain.replay` rebuild an identical chain later,
for the audit.

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

eth-tester and py-evm are imported lazily (:func:`_backend_class`), so that importing
:mod:`fedledger.ledger.chain` for an :class:`~fedledger.ledger.chain.rpc.RpcChain` does not
import py-evm.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from functools import cache
from typing import Any, Final

from eth_account import Account
from eth_typing import BlockNumber
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractEvent
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import EventData, LogReceipt, RPCEndpoint, RPCResponse

from fedledger.errors import ConfigError, LedgerError, TransactionReverted
from fedledger.ledger.chain.base import (
    Receipt,
    decode_reason,
    map_chain_errors,
    to_bytes,
    translated,
)
from fedledger.ledger.chain.journal import BlockRecord, JournalHeader, read_journal, write_journal
from fedledger.ledger.chain.web3 import Web3Chain

__all__ = ["DEFAULT_BLOCK_GAS_LIMIT", "DEFAULT_GENESIS_TIMESTAMP", "EmbeddedChain"]

DEFAULT_BLOCK_GAS_LIMIT: Final = 100_000_000
"""The embedded chain's block gas limit (eth-tester's default is about 30 M)."""
DEFAULT_GENESIS_TIMESTAMP: Final = 1_735_689_600
"""The embedded chain's genesis time with the logical clock: 2025-01-01T00:00:00Z."""


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
            self.records: list[BlockRecord] = []
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
                    BlockRecord(
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

        def replay_block(self, record: BlockRecord) -> None:
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


class EmbeddedChain(Web3Chain):
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
        with map_chain_errors(type(self).__name__, self._revert_of):
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
        self._watchers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        keys = [Account.from_key(key.to_bytes()) for key in self._backend.account_keys]
        super().__init__(Web3(_LockedTesterProvider(tester, self._lock)), keys)

    def _revert_of(self, exc: BaseException) -> TransactionReverted | None:
        from eth_tester.exceptions import TransactionFailed

        if isinstance(exc, TransactionFailed):
            first = exc.args[0] if exc.args else None
            data = to_bytes(first)
            return TransactionReverted(decode_reason(data, str(first)), data=data)
        return super()._revert_of(exc)

    def _priority_fee(self) -> int:
        return 0

    def _raw_logs(self, address: str, start: int, end: int) -> list[LogReceipt]:
        with self._lock:
            return list(self._backend.find_logs(to_canonical_address(address), None, start, end))

    # -- fast paths: straight to eth-tester, without web3's request and formatting layers ----

    def _send_raw(self, raw: bytes) -> str:
        with self._lock:
            tx = str(self._tester.send_raw_transaction("0x" + raw.hex()))
        self._notify()
        return tx

    @translated
    def block_event(self) -> asyncio.Event:
        """An event of the running loop set whenever a transaction is mined (one block per
        transaction): nodes in this process wait on it instead of polling blind."""
        event = asyncio.Event()
        with self._lock:
            self._watchers.append((asyncio.get_running_loop(), event))
        return event

    def _notify(self) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for loop, event in watchers:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # its loop is closed
                with self._lock:
                    if (loop, event) in self._watchers:
                        self._watchers.remove((loop, event))

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

    @translated
    def raw_transaction(self, tx_hash: str) -> bytes:
        wanted = bytes(HexBytes(tx_hash))
        with self._lock:
            number = self._backend.tx_index.get(wanted)
            records = [r for r in self._backend.records if r.number == number]
        for raw in records[0].transactions if records else ():
            if keccak(raw) == wanted:
                return bytes(raw)
        raise LedgerError(f"no mined transaction {tx_hash}")

    @translated
    def block_number(self) -> int:
        with self._lock:
            return int(self._backend.chain.get_canonical_head().block_number)

    @translated
    def block_timestamp(self, number: int) -> int:
        with self._lock:
            header = self._backend.chain.get_canonical_block_header_by_number(number)
            return int(header.timestamp)

    @translated
    def block_hash(self, number: int) -> bytes:
        with self._lock:
            header = self._backend.chain.get_canonical_block_header_by_number(number)
            return bytes(header.hash)

    @translated
    def block_randomness(self, number: int) -> tuple[int, bytes]:
        # eth-tester runs a block's transactions with prevrandao 0 and draws the mined
        # header's mixHash afterwards: 0 is what the contracts saw. (One process runs this
        # chain: its randomness protects nothing; a committee's seed varies by the parent.)
        with self._lock:
            header = self._backend.chain.get_canonical_block_header_by_number(number)
            return 0, bytes(header.parent_hash)

    @translated
    def now(self) -> int:
        with self._lock:
            return int(self._backend._next_timestamp())

    def _logs(self, event: ContractEvent, start: int, end: int) -> list[EventData]:
        address = to_canonical_address(event.address) if event.address else None
        topic0 = None if event.abi.get("anonymous") else bytes(HexBytes(event.topic))
        with self._lock:
            logs = self._backend.find_logs(address, topic0, start, end)
        return [event.process_log(log) for log in logs]

    @translated
    def time_travel(self, seconds: int) -> None:
        if seconds < 0:
            raise ConfigError(f"cannot travel back in time ({seconds} s)", field="seconds")
        with self._lock:
            self._backend.advance(seconds)

    # -- journal ------------------------------------------------------------------------------

    def _genesis_hash(self) -> bytes:
        return bytes(self._backend.chain.get_canonical_block_header_by_number(0).hash)

    @translated
    def recorded_transactions(self) -> list[bytes]:
        """Every raw signed transaction mined so far, in order."""
        with self._lock:
            return [raw for record in self._backend.records for raw in record.transactions]

    @translated
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the journal (:mod:`fedledger.ledger.chain.journal`), atomically."""
        with self._lock:
            header = JournalHeader(
                chain_id=self.chain_id,
                accounts=self._settings["accounts"],
                gas_limit=self._settings["gas_limit"],
                genesis_timestamp=self._settings["genesis_timestamp"],
                genesis_hash=self._genesis_hash(),
            )
            records = list(self._backend.records)
        write_journal(path, header, records)

    @classmethod
    def replay(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] | None = None
    ) -> EmbeddedChain:
        """Rebuild the chain saved at ``path`` by re-sending its transactions block by block
        with the recorded timestamps; every block hash is checked. The returned chain goes on
        (with ``clock`` for new blocks) and keeps journaling. A journal that cannot be read or
        does not rebuild the same chain raises :class:`~fedledger.errors.LedgerError`."""
        header, records = read_journal(path)
        chain = cls(
            clock=clock,
            accounts=header.accounts,
            gas_limit=header.gas_limit,
            genesis_timestamp=header.genesis_timestamp,
        )
        if chain._genesis_hash() != header.genesis_hash:
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
