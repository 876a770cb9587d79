"""Real `fedledger run`s on the embedded chain that several tests share, and what tests read
from them or do to them: the messages on chain, a stored update blob altered."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedledger.cli import main
from fedledger.gossip.blobs import FileBlobStore
from fedledger.ledger.chain import EmbeddedChain
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.records import Submitted
from fedledger.rundir import JOURNAL_FILE, LedgerDeployment

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits.toml"


def embedded_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, *, nodes: int, rounds: int
) -> Path:
    """A finished `fedledger run` of the digits task on the embedded chain (memory
    transport), in a new directory named after ``name``."""
    out = tmp_path_factory.mktemp(f"{name}-run")
    # Every node trains in this one process: on a loaded machine the last finishes seconds
    # after the first. A patient designated submitter (collect) still sends one batch a round;
    # it costs nothing when every message is in, since it sends at once then.
    config = tmp_path_factory.mktemp(f"{name}-config") / "digits.toml"
    config.write_text(DIGITS.read_text() + "\n[ledger]\ncollect = 60.0\nfallback = 120.0\n")
    code = main(["run", "--config", str(config), "--out", str(out), "--rounds", str(rounds),
                 "--nodes", str(nodes), "--transport", "memory", "--timeout", "300"])  # fmt: skip
    assert code == 0
    return out


def submitted(run: Path) -> list[Submitted]:
    """The run's messages that carry an update, from its chain."""
    deployment = LedgerDeployment.read(run)
    chain = EmbeddedChain.replay(run / JOURNAL_FILE)
    ledger = ContractLedger(chain, deployment.task, None)
    return [e for e in ledger.events(deployment.first_block)
            if isinstance(e, Submitted) and any(e.update)]  # fmt: skip


def alter_blob(run: Path, cid: str) -> int:
    """Flip the last bit of blob ``cid`` in every node store of ``run`` that holds it; how many
    copies were altered."""
    altered = 0
    for store_dir in run.glob("node-*/state/blobs"):
        store = FileBlobStore(store_dir, durable=False)
        if store.has(cid):
            path = store._path(cid)
            data = bytearray(path.read_bytes())
            data[-1] ^= 0x01
            path.write_bytes(bytes(data))
            altered += 1
    return altered
