"""The audit on scripted rounds: honest ones verify; each kind of tampering is caught, named by
round and check.

The rounds are played by hand on an embedded chain (real Task contract, real transactions,
real parameter blobs and the task's real aggregation rule), so that a test can make a quorum
collude, or damage a blob after the fact, exactly where it wants.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from eth_account.signers.local import LocalAccount

from fedledger.aggregation import SCORE_TOTAL
from fedledger.aggregation.round import aggregate_round
from fedledger.audit import Auditor, BlobSource, format_report, initial_model
from fedledger.commit import decode, encode
from fedledger.config import AggregationConfig, DataConfig, LedgerConfig, TaskConfig
from fedledger.gossip.blobs import FileBlobStore
from fedledger.learning.trainer import ModelSpec
from fedledger.ledger.chain import EmbeddedChain
from fedledger.ledger.contract_ledger import ContractLedger, deploy_task
from fedledger.ledger.rules import commitment, result_digest, sort_result

TASK = TaskConfig(
    name="audit",
    seed=5,
    rounds=3,
    nodes=4,
    data=DataConfig(dataset="digits", partition="iid"),
    model=ModelSpec(name="logreg"),
    aggregation=AggregationConfig(rule="fedavg"),
    ledger=LedgerConfig(quorum=0.67, min_stake=10**15, commit_window=100, reveal_window=100,
                        attest_window=100),
)  # fmt: skip
EXAMPLES = [50, 30, 20, 40]


@pytest.fixture(scope="module")
def initial() -> bytes:
    return initial_model(TASK)


@dataclass
class World:
    chain: EmbeddedChain
    task: str
    members: list[ContractLedger]
    store: FileBlobStore
    base: bytes
    rng: np.random.Generator
    updates: dict[int, dict[str, str]] = field(default_factory=dict)

    def auditor(self, initial: bytes) -> Auditor:
        return Auditor(chain=self.chain, task_address=self.task, task=TASK,
                       blobs=BlobSource([self.store]), initial=initial)  # fmt: skip

    def play(self, rnd: int, *, collude: str | None = None) -> None:
        """One round: every member trains (noise around the base), commits, reveals; three of
        the four attest (the quorum); the lowest attester distributes. ``collude``:
        ``"model"`` (the quorum attests another model) or ``"scores"`` (the right model, but
        every reward to one member)."""
        base = decode(self.base)
        blobs: list[bytes] = []
        for _ in self.members:
            params = [p + self.rng.normal(0, 0.05, p.shape).astype(p.dtype) for p in base]
            blobs.append(encode(params))
        cids = [self.store.put(b) for b in blobs]
        self.updates[rnd] = {m.account: cid for m, cid in zip(self.members, cids, strict=True)}
        salts = [hashlib.sha256(f"{rnd}/{i}".encode()).digest() for i in range(len(blobs))]
        digests = [hashlib.sha256(b).digest() for b in blobs]
        for m, d, s in zip(self.members, digests, salts, strict=True):
            m.commit(rnd, commitment(d, m.account, rnd, s))
        for m, d, s, cid, n in zip(self.members, digests, salts, cids, EXAMPLES, strict=True):
            m.reveal(rnd, d, cid, n, s)
        order = sorted(range(len(self.members)), key=lambda i: self.members[i].account.lower())
        result = aggregate_round(
            TASK.aggregation,
            base=self.base,
            updates=[blobs[i] for i in order],
            num_examples=[EXAMPLES[i] for i in order],
        )
        model = result.model
        who, scores = sort_result([self.members[i].account for i in order], list(result.scores))
        if collude == "model":
            model = blobs[0]  # one member's update, passed off as the aggregate
        elif collude == "scores":
            scores = [SCORE_TOTAL] + [0] * (len(who) - 1)
        self.store.put(model)
        attesters = sorted(self.members[:3], key=lambda m: m.account.lower())
        for m in attesters:
            m.attest(rnd, hashlib.sha256(model).digest(), result_digest(who, scores))
        attesters[0].distribute(rnd, who, scores)
        self.base = model


@pytest.fixture
def world(initial: bytes, tmp_path: Path) -> World:
    chain = EmbeddedChain(accounts=5)
    accounts: list[LocalAccount] = chain.accounts()
    task, _ = deploy_task(chain, TASK, owner=accounts[0])
    members = [ContractLedger(chain, task, a) for a in accounts[1:5]]
    for m in members:
        m.join(f"127.0.0.1:{m.account[-4:]}", TASK.ledger.min_stake)
    ContractLedger(chain, task, accounts[0]).start()
    return World(chain=chain, task=task, members=members, store=FileBlobStore(tmp_path / "blobs"),
                 base=initial, rng=np.random.default_rng(0))  # fmt: skip


def failures(report_lines: list[str]) -> list[str]:
    return [line for line in report_lines if line.startswith("round ")]


def test_honest_rounds_verify(world: World, initial: bytes) -> None:
    for rnd in (1, 2, 3):
        world.play(rnd)
    report = world.auditor(initial).run()
    assert report.ok, report.failures()
    assert [r.round for r in report.rounds] == [1, 2, 3]
    assert all(r.status == "finalized" for r in report.rounds)
    names = {c.name for c in report.rounds[0].checks}
    assert names == {"signatures", "commitment", "blobs", "quorum", "aggregate", "scores",
                     "rewards"}  # fmt: skip
    assert report.to_dict()["ok"] is True
    assert format_report(report)[-1] == "audit: OK, every round verifies"


def test_an_audit_of_the_wrong_block_range_fails_instead_of_verifying_nothing(
    world: World, initial: bytes
) -> None:
    # Before: with the events read from a block past the task's history, no round was seen,
    # nothing was checked, and the audit said OK.
    for rnd in (1, 2):
        world.play(rnd)
    auditor = world.auditor(initial)
    auditor.from_block = world.chain.block_number() + 1000
    report = auditor.run()
    assert not report.ok
    history = next(c for c in report.task_checks if c.name == "history")
    assert not history.ok
    assert "[1, 2, 3]" in history.detail  # round 3 started when round 2 finalized
    assert world.auditor(initial).run().ok


def test_an_altered_blob_fails_its_round(world: World, initial: bytes) -> None:
    for rnd in (1, 2):
        world.play(rnd)
    victim = world.members[2].account
    cid = world.updates[2][victim]
    path = world.store._path(cid)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last parameter value
    path.write_bytes(bytes(data))

    report = world.auditor(initial).run()

    assert not report.ok
    assert report.rounds[0].ok  # round 1 is untouched
    bad = {c.name: c.detail for c in report.rounds[1].failures}
    assert "altered" in bad["blobs"]
    assert victim in bad["blobs"]
    assert "cannot recompute" in bad["aggregate"]
    assert any(line.startswith("round 2: blobs:") for line in report.failures())


def test_a_missing_blob_fails_its_round(world: World, initial: bytes) -> None:
    world.play(1)
    victim = world.members[0].account
    world.store._path(world.updates[1][victim]).unlink()

    report = world.auditor(initial).run()

    assert not report.ok
    bad = {c.name: c.detail for c in report.rounds[0].failures}
    assert "missing" in bad["blobs"]
    assert victim in bad["blobs"]


def test_a_wrong_aggregate_attested_by_a_colluding_quorum_fails(
    world: World, initial: bytes
) -> None:
    world.play(1)
    world.play(2, collude="model")
    world.play(3)

    report = world.auditor(initial).run()

    assert not report.ok
    assert [r.ok for r in report.rounds] == [True, False, True]
    bad = {c.name: c.detail for c in report.rounds[1].failures}
    assert set(bad) == {"aggregate"}
    assert "the quorum attested" in bad["aggregate"]
    # The chain itself accepted it: the quorum is real, only the recomputation disagrees.
    assert next(c for c in report.rounds[1].checks if c.name == "quorum").ok


def test_rewards_that_do_not_match_the_scores_fail(world: World, initial: bytes) -> None:
    world.play(1, collude="scores")

    report = world.auditor(initial).run()

    assert not report.ok
    bad = {c.name: c.detail for c in report.rounds[0].failures}
    assert set(bad) == {"scores"}
    assert str(SCORE_TOTAL) in bad["scores"]
    # The model is right: the aggregate check passes.
    assert next(c for c in report.rounds[0].checks if c.name == "aggregate").ok


def test_an_audit_against_another_configuration_fails_the_rules_check(
    world: World, initial: bytes
) -> None:
    world.play(1)
    from dataclasses import replace

    other = replace(TASK, seed=TASK.seed + 1)
    auditor = Auditor(chain=world.chain, task_address=world.task, task=other,
                      blobs=BlobSource([world.store]), initial=initial)  # fmt: skip
    report = auditor.run()
    assert not report.ok
    rules = next(c for c in report.task_checks if c.name == "rules")
    assert "config digest" in rules.detail
