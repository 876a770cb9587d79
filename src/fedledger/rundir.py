"""The run directory's format: what ``fedledger run`` writes and ``fedledger audit`` reads.

::

    OUT/task.toml          the effective task (overrides included), for every node
    OUT/ledger.json        where the task lives on chain (:class:`LedgerDeployment`)
    OUT/chain.jsonl        the embedded chain's journal (raw transactions, timestamps)
    OUT/report.json        the merged report (docs/report.md)
    OUT/report.png         the report drawn (``fedledger run``: fedledger.plots)
    OUT/audit.json         the audit's verdict
    OUT/node-N/node.toml   node N's configuration; node.key its key (gRPC runs)
    OUT/node-N/state/      its state.json, rounds.jsonl, summary.json and blobs/; status.json:
                           whom it waits for now (fedledger.node.waiting)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedledger.config.node import NodeConfig
from fedledger.errors import ConfigError
from fedledger.node.state import read_rounds as _read_state_rounds

TASK_FILE = "task.toml"
LEDGER_FILE = "ledger.json"
JOURNAL_FILE = "chain.jsonl"
REPORT_FILE = "report.json"
AUDIT_FILE = "audit.json"
SUMMARY_FILE = "summary.json"


def is_hex_address(text: str) -> bool:
    """``0x`` and 40 hex digits (any case)."""
    body = text[2:]
    return text[:2] == "0x" and len(body) == 40 and all(c in "0123456789abcdefABCDEF" for c in body)


def node_dir(out: Path, index: int) -> Path:
    return out / f"node-{index}"


RUN_FILES = (TASK_FILE, LEDGER_FILE, JOURNAL_FILE, REPORT_FILE, AUDIT_FILE, "report.png")
"""The files a run writes in its directory, beside one ``node-<i>/`` directory per node."""


def previous_run(out: Path) -> list[Path]:
    """What a run left in ``out``: its files and node directories (nothing else of the
    directory's is a run's)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir()
                  if p.name in RUN_FILES or (p.is_dir() and _is_node_dir(p.name)))  # fmt: skip


def _is_node_dir(name: str) -> bool:
    prefix, _, index = name.partition("-")
    return prefix == "node" and index.isdigit()


def clear_run(out: Path, *, overwrite: bool) -> None:
    """Make ``out`` ready for a new run. A previous run's nodes would take their saved state
    for this run's (a new embedded chain has the same addresses), so a directory that holds
    one is refused, or with ``overwrite`` its run files and node directories are removed
    (other files stay)."""
    found = previous_run(out)
    if not found:
        return
    if not overwrite:
        names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise ConfigError(f"{out} holds a previous run ({names}): choose another --out, or "
                          "pass --overwrite to replace it", field="out")  # fmt: skip
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def read_rounds(cfg: NodeConfig) -> list[dict[str, Any]]:
    """Node ``cfg``'s round records so far."""
    return _read_state_rounds(cfg.state_dir)


@dataclass(frozen=True, kw_only=True)
class LedgerDeployment:
    """Where a run's task lives on chain (written to ``ledger.json`` in the run directory)."""

    backend: str
    """``"embedded"`` or the JSON-RPC URL."""
    chain_id: int
    task: str
    token: str
    owner: str
    first_block: int
    """The block before the deployment: events are read from here on."""
    nft: str | None = None
    """The task's model NFT contract (each finalized model a token), if deployed."""
    governor: str | None = None
    """The task's Governor (``[governance]``), if any."""
    timelock: str | None = None
    """Its Timelock: the Task's governor, which runs passed proposals."""

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str) or not self.backend:
            raise ConfigError(f"must be 'embedded' or a URL, got {self.backend!r}", field="backend")
        for name in ("chain_id", "first_block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise ConfigError(f"must be an integer in [0, 2**63), got {value!r}", field=name)
        for name in ("task", "token", "owner", "nft", "governor", "timelock"):
            value = getattr(self, name)
            if value is None and name in ("nft", "governor", "timelock"):
                continue
            if not isinstance(value, str) or not is_hex_address(value):
                raise ConfigError(f"must be a 0x-prefixed 20-byte address, got {value!r}",
                                  field=name)  # fmt: skip

    def write(self, out: Path) -> None:
        (out / LEDGER_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, out: Path) -> LedgerDeployment:
        try:
            return cls(**json.loads((out / LEDGER_FILE).read_text()))
        except ConfigError as exc:
            raise ConfigError(f"{out / LEDGER_FILE}: {exc}") from exc
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"{out / LEDGER_FILE} is missing or not a ledger file: {exc}"
            ) from exc
