"""What the explorer's tests share: one small real run on the embedded chain (3 nodes, 3
rounds, the memory transport), a copy of it with one update blob of round 2 altered, and a
copy that looks like a run in progress (no journal, no report yet)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedledger.cli import main
from fedledger.commit import cid_from_digest
from fedledger.gossip.blobs import FileBlobStore
from fedledger.ledger.chain import EmbeddedChain
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.records import Submitted
from fedledger.rundir import AUDIT_FILE, JOURNAL_FILE, REPORT_FILE, LedgerDeployment

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"
NODES = 3
ROUNDS = 3


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `fedledger run` on the embedded chain (shared: tests copy it to change it)."""
    out = tmp_path_factory.mktemp("explorer-run")
    # Every node trains in this one process: a patient designated submitter still sends one
    # batch a round (as in tests/e2e/test_ledger_run.py).
    config = tmp_path_factory.mktemp("explorer-config") / "digits.toml"
    config.write_text(DIGITS.read_text() + "\n[ledger]\ncollect = 60.0\nfallback = 120.0\n")
    code = main(["run", "--config", str(config), "--out", str(out), "--rounds", str(ROUNDS),
                 "--nodes", str(NODES), "--transport", "memory", "--timeout", "300"])  # fmt: skip
    assert code == 0
    return out


def submitted(run: Path) -> list[Submitted]:
    """The run's messages that carry an update, from its chain."""
    deployment = LedgerDeployment.read(run)
    chain = EmbeddedChain.replay(run / JOURNAL_FILE)
    ledger = ContractLedger(chain, deployment.task, None)
    return [e for e in ledger.events(deployment.first_block)
            if isinstance(e, Submitted) and any(e.update)]  # fmt: skip


@pytest.fixture(scope="session")
def tampered(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Submitted]:
    """A copy of the run whose stored copies of one round-2 update are altered (a flipped
    bit), and that update's message."""
    run = tmp_path_factory.mktemp("explorer-tampered") / "run"
    shutil.copytree(run_dir, run)
    victim = next(e for e in submitted(run) if e.round == 2)
    cid = cid_from_digest(victim.update)
    altered = 0
    for store_dir in run.glob("node-*/state/blobs"):
        store = FileBlobStore(store_dir, durable=False)
        if store.has(cid):
            path = store._path(cid)
            data = bytearray(path.read_bytes())
            data[-1] ^= 0x01
            path.write_bytes(bytes(data))
            altered += 1
    assert altered > 0
    return run, victim


def in_progress_copy(run_dir: Path, where: Path) -> Path:
    """A copy of the run as it looks while running: the nodes' records, no journal, no
    report, no audit."""
    run = where / "in-progress"
    shutil.copytree(run_dir, run)
    for name in (JOURNAL_FILE, REPORT_FILE, AUDIT_FILE):
        (run / name).unlink()
    return run
