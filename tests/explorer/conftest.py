"""What the explorer's tests share: one small real run on the embedded chain (3 nodes, 3
rounds, the memory transport), a copy of it with one update blob of round 2 altered, and a
copy that looks like a run in progress (no journal, no report yet)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedledger.commit import cid_from_digest
from fedledger.ledger.records import Submitted
from fedledger.rundir import AUDIT_FILE, JOURNAL_FILE, REPORT_FILE
from tests.ledger_runs import alter_blob, embedded_run, submitted

NODES = 3
ROUNDS = 3


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `fedledger run` on the embedded chain (shared: tests copy it to change it)."""
    return embedded_run(tmp_path_factory, "explorer", nodes=NODES, rounds=ROUNDS)


@pytest.fixture(scope="session")
def tampered(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Submitted]:
    """A copy of the run whose stored copies of one round-2 update are altered (a flipped
    bit), and that update's message."""
    run = tmp_path_factory.mktemp("explorer-tampered") / "run"
    shutil.copytree(run_dir, run)
    victim = next(e for e in submitted(run) if e.round == 2)
    assert alter_blob(run, cid_from_digest(victim.update)) > 0
    return run, victim


def in_progress_copy(run_dir: Path, where: Path) -> Path:
    """A copy of the run as it looks while running: the nodes' records, no journal, no
    report, no audit."""
    run = where / "in-progress"
    shutil.copytree(run_dir, run)
    for name in (JOURNAL_FILE, REPORT_FILE, AUDIT_FILE):
        (run / name).unlink()
    return run
