"""The embedded chain's journal: what it mined, block by block, to rebuild it later.

A journal is a JSON-lines file: a header (:class:`JournalHeader`: the format, its version, the
chain id, the chain's settings and its genesis hash), then one line per mined block
(:class:`BlockRecord`: number, timestamp, hash and raw signed transactions in hex).
:meth:`~fedledger.ledger.chain.embedded.EmbeddedChain.save` writes it (:func:`write_journal`),
:meth:`~fedledger.ledger.chain.embedded.EmbeddedChain.replay` reads it (:func:`read_journal`)
and re-executes it, checking every block hash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fedledger.errors import LedgerError

__all__ = [
    "JOURNAL_FORMAT",
    "JOURNAL_VERSION",
    "BlockRecord",
    "JournalHeader",
    "read_journal",
    "write_journal",
]

JOURNAL_FORMAT: Final = "fedledger.embedded-chain"
JOURNAL_VERSION: Final = 1


@dataclass(frozen=True, kw_only=True)
class BlockRecord:
    """One mined block: enough to mine it again identically."""

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
    def from_json(cls, line: str) -> BlockRecord:
        item = json.loads(line)
        return cls(
            number=int(item["block"]),
            timestamp=int(item["timestamp"]),
            hash=bytes.fromhex(item["hash"][2:]),
            transactions=tuple(bytes.fromhex(raw[2:]) for raw in item["transactions"]),
        )


@dataclass(frozen=True, kw_only=True)
class JournalHeader:
    """The chain a journal starts from: replay builds it with these settings first."""

    chain_id: int
    accounts: int
    gas_limit: int
    genesis_timestamp: int
    genesis_hash: bytes

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": JOURNAL_FORMAT,
                "version": JOURNAL_VERSION,
                "chain_id": self.chain_id,
                "accounts": self.accounts,
                "gas_limit": self.gas_limit,
                "genesis_timestamp": self.genesis_timestamp,
                "genesis_hash": "0x" + self.genesis_hash.hex(),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> JournalHeader:
        item = json.loads(line)
        if item.get("format") != JOURNAL_FORMAT or item.get("version") != JOURNAL_VERSION:
            raise ValueError(f"not a {JOURNAL_FORMAT} v{JOURNAL_VERSION} journal")
        return cls(
            chain_id=int(item["chain_id"]),
            accounts=int(item["accounts"]),
            gas_limit=int(item["gas_limit"]),
            genesis_timestamp=int(item["genesis_timestamp"]),
            genesis_hash=bytes.fromhex(str(item["genesis_hash"]).removeprefix("0x")),
        )


def write_journal(
    path: str | os.PathLike[str], header: JournalHeader, records: Iterable[BlockRecord]
) -> None:
    """Write a journal atomically (a ``.partial`` file, then renamed)."""
    target = Path(path)
    lines = [header.to_json(), *(record.to_json() for record in records)]
    partial = target.with_name(target.name + ".partial")
    try:
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(partial, target)
    except OSError as exc:
        raise LedgerError(f"cannot write the chain journal {path}: {exc}") from exc


def read_journal(path: str | os.PathLike[str]) -> tuple[JournalHeader, list[BlockRecord]]:
    """A journal's header and block records; a missing or malformed file is a LedgerError."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        header = JournalHeader.from_json(lines[0])
        records = [BlockRecord.from_json(line) for line in lines[1:] if line.strip()]
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise LedgerError(f"cannot read the chain journal {path}: {exc}") from exc
    return header, records
