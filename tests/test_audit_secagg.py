"""The audit of secure-aggregation tasks: `fedledger run` on the embedded chain with
``[privacy] secure_aggregation = true``, then the audit recomputes each round's model from the
masked blobs, the key blobs and the round's transcript alone (it never sees an update).

An honest run (with a member that drops out from round 2 on, so the transcripts hold dropouts'
mask keys too) verifies round by round; a damaged transcript, masked blob or key blob fails the
rounds that need it; and a run whose every node colludes (the same patch in each: they run in
this process) to commit a transcript with a wrong seed, a wrong model or wrong scores fails
exactly those rounds, naming the check.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedledger.aggregation import SCORE_TOTAL
from fedledger.audit import AuditReport, audit_run, run_blob_stores
from fedledger.cli import main
from fedledger.commit import cid_from_digest, decode, encode
from fedledger.config import PrivacyConfig, TaskConfig, load_config
from fedledger.ledger.chain import EmbeddedChain
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.messages import ZERO32
from fedledger.ledger.records import Distributed, Keys, LedgerEvent, Submitted
from fedledger.node.drivers import secagg as driver
from fedledger.privacy import secagg_round
from fedledger.privacy.secagg_round import MASKED_MAGIC, Transcript
from fedledger.run.task import run_task
from fedledger.rundir import JOURNAL_FILE, LedgerDeployment
from tests.ledger_runs import alter_blob

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits.toml"
ROUNDS = 4


def _secure_task() -> TaskConfig:
    return replace(load_config(DIGITS), nodes=5, rounds=ROUNDS,
                   privacy=PrivacyConfig(secure_aggregation=True))  # fmt: skip


def _run(out: Path, **kwargs: Any) -> dict[str, Any]:
    report = run_task(_secure_task(), out=out, transport="memory", chain="embedded",
                      timeout=300, **kwargs)  # fmt: skip
    return report.to_dict()


def _events(run: Path) -> list[LedgerEvent]:
    deployment = LedgerDeployment.read(run)
    chain = EmbeddedChain.replay(run / JOURNAL_FILE)
    return ContractLedger(chain, deployment.task, None).events(deployment.first_block)


def _distributed(run: Path) -> dict[int, Distributed]:
    return {e.round: e for e in _events(run) if isinstance(e, Distributed)}


def _blob(run: Path, cid: str) -> bytes:
    for store in run_blob_stores(run):
        if store.has(cid):
            return store.get(cid)
    raise AssertionError(f"no store of {run} holds {cid}")


def _transcript(run: Path, rnd: int) -> Transcript:
    return Transcript.from_bytes(_blob(run, cid_from_digest(_distributed(run)[rnd].transcript)))


def _failures(report: AuditReport, rnd: int) -> dict[str, str]:
    (verdict,) = [v for v in report.rounds if v.round == rnd]
    return {c.name: c.detail for c in verdict.failures}


@pytest.fixture(scope="module")
def honest_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 members, 4 rounds; one drops out (sends no update) from round 2 on."""
    out = tmp_path_factory.mktemp("secure-run")
    report = _run(out, attack="dropout", attackers=0.2)
    assert report["final"]["rounds_finalized"] == ROUNDS
    return out


@pytest.fixture
def run_copy(honest_run: Path, tmp_path: Path) -> Path:
    """A copy of the honest run to damage (the other tests share it)."""
    run = tmp_path / "run"
    shutil.copytree(honest_run, run)
    return run


def test_a_secure_run_with_a_dropout_audits_ok_round_by_round(honest_run: Path) -> None:
    report = json.loads((honest_run / "report.json").read_text())
    assert report["final"]["audit_ok"] is True
    verdict = audit_run(honest_run)
    assert verdict.ok, verdict.failures()
    assert [v.round for v in verdict.rounds] == list(range(1, ROUNDS + 1))
    assert all(v.status == "finalized" for v in verdict.rounds)
    for v in verdict.rounds:
        assert {c.name for c in v.checks} >= {"blobs", "aggregate", "exclusion", "scores"}
    # The audit had the masked blobs only: every update on chain names one.
    events = _events(honest_run)
    updates = [e for e in events if isinstance(e, Submitted) and e.update != ZERO32]
    assert updates
    for e in updates:
        assert _blob(honest_run, cid_from_digest(e.update)).startswith(MASKED_MAGIC)
    members = sorted({e.member.lower() for e in events if isinstance(e, Keys)})
    assert len(members) == 5
    # Round 1 had every member; from round 2 on one dropped out, and its mask key (never its
    # seed) is in the transcript the audit unmasked with.
    first = _transcript(honest_run, 1)
    assert sorted(s.member for s in first.survivors) == members
    assert first.dropouts == ()
    dropped = set()
    for rnd in range(2, ROUNDS + 1):
        t = _transcript(honest_run, rnd)
        assert len(t.survivors) == 4
        assert len(t.dropouts) == 1
        dropped.add(t.dropouts[0].member)
        paid = _distributed(honest_run)[rnd]
        assert sorted(a.lower() for a in paid.contributors) == sorted(s.member for s in t.survivors)
        assert sum(paid.scores) == SCORE_TOTAL
    assert len(dropped) == 1


def test_the_audit_cli_verifies_a_secure_run(
    honest_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--run", str(honest_run)]) == 0
    table = capsys.readouterr().out
    assert "audit: OK, every round verifies" in table
    assert "not a parameter blob" not in table  # no plain-update check misfires on masks


def test_a_damaged_transcript_fails_its_round(run_copy: Path) -> None:
    cid = cid_from_digest(_distributed(run_copy)[2].transcript)
    assert alter_blob(run_copy, cid) > 0
    report = audit_run(run_copy)
    assert not report.ok
    assert [v.ok for v in report.rounds] == [True, False, True, True]
    failed = _failures(report, 2)
    assert f"the round's transcript {cid} is altered" in failed["blobs"]
    assert failed["aggregate"].startswith("secure aggregation: cannot recompute: the transcript")


def test_a_damaged_masked_blob_fails_its_round(run_copy: Path) -> None:
    paid = _distributed(run_copy)[3]
    victim = next(e for e in _events(run_copy) if isinstance(e, Submitted) and e.round == 3
                  and e.member in paid.contributors)  # fmt: skip
    assert alter_blob(run_copy, cid_from_digest(victim.update)) > 0
    report = audit_run(run_copy)
    assert [v.ok for v in report.rounds] == [True, True, False, True]
    failed = _failures(report, 3)
    assert victim.member in failed["blobs"]
    assert "altered" in failed["blobs"]
    assert "no verified masked blob" in failed["aggregate"]
    assert victim.member in failed["aggregate"]


def test_a_damaged_key_blob_fails_every_round(run_copy: Path) -> None:
    keys = next(e for e in _events(run_copy) if isinstance(e, Keys) and e.keys_digest != ZERO32)
    assert alter_blob(run_copy, cid_from_digest(keys.keys_digest)) > 0
    report = audit_run(run_copy)
    assert not any(v.ok for v in report.rounds)
    for v in report.rounds:
        failed = _failures(report, v.round)
        assert f"{keys.member}'s key blob" in failed["blobs"]
        assert "the masking set is unknown" in failed["aggregate"]


# -- a colluding quorum -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colluding_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every node (they all run in this process) commits, in round 2, a transcript whose
    first survivor's seed is altered (it unmasks with the right one, so the model is right);
    in round 3, another model than the unmasked one; in round 4, every point to one member."""
    out = tmp_path_factory.mktemp("colluding-run")
    real_round = driver.SecAggParty._unmask
    honest: dict[bytes, Transcript] = {}

    def rebuild(**kwargs: Any) -> Transcript:
        t = secagg_round.rebuild(**kwargs)
        if t.round != 2:
            return t
        first = replace(t.survivors[0], seed=bytes(b ^ 0xFF for b in t.survivors[0].seed))
        forged = replace(t, survivors=(first, *t.survivors[1:]))
        honest[forged.to_bytes()] = t
        return forged

    def check_transcript(t: Transcript, **kwargs: Any) -> None:
        secagg_round.check_transcript(honest.get(t.to_bytes(), t), **kwargs)

    def unmask_sum(t: Transcript, **kwargs: Any) -> Any:
        return secagg_round.unmask_sum(honest.get(t.to_bytes(), t), **kwargs)

    async def unmask(self: driver.SecAggParty, rnd: int, *args: Any) -> Any:
        model, scores, transcript = await real_round(self, rnd, *args)
        if rnd == 3:
            params = [p + np.float32(0.01) for p in decode(self.services.store.get(model))]
            model = self.services.store.put(encode(params))
        elif rnd == 4:
            scores = [SCORE_TOTAL] + [0] * (len(scores) - 1)
        return model, scores, transcript

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(f"{driver.__name__}.rebuild", rebuild)
        mp.setattr(f"{driver.__name__}.check_transcript", check_transcript)
        mp.setattr(f"{driver.__name__}.unmask_sum", unmask_sum)
        mp.setattr(driver.SecAggParty, "_unmask", unmask)
        report = _run(out)
    assert report["final"]["rounds_finalized"] == ROUNDS
    assert report["final"]["audit_ok"] is False
    return out


def test_a_colluding_quorum_fails_the_rounds_it_forged(colluding_run: Path) -> None:
    report = audit_run(colluding_run)
    assert [v.ok for v in report.rounds] == [True, False, False, False]
    # Round 2: a transcript seed that is not the one the key blob commits to.
    forged = _transcript(colluding_run, 2).survivors[0].member
    assert _failures(report, 2) == {
        "aggregate": f"secure aggregation: round 2's transcript does not verify: round 2: "
        f"{forged}'s seed is not the committed one"
    }
    # Round 3: the transcript is right, the model is not the unmasked sum's.
    failed = _failures(report, 3)
    assert list(failed) == ["aggregate"]
    assert failed["aggregate"].startswith("secure aggregation: the unmasked sum gives model ")
    # Round 4: the model is right, the points are not the survivors' weights.
    failed = _failures(report, 4)
    assert list(failed) == ["scores"]
    assert failed["scores"].startswith("the survivors' weights give ")
    lines = report.failures()
    assert any(line.startswith("round 2: aggregate: secure aggregation:") for line in lines)


def test_with_noise_too_every_survivor_weighs_one_and_the_audit_agrees(tmp_path: Path) -> None:
    # Differential privacy on top: the nodes weigh every masked input 1 (the accountant's
    # sensitivity), and so does the audit's recomputation of the transcript and the scores.
    privacy = PrivacyConfig(clip=1.0, noise_multiplier=1.0, secure_aggregation=True)
    task = replace(_secure_task(), rounds=2, privacy=privacy)
    report = run_task(task, out=tmp_path, transport="memory", chain="embedded", timeout=300)
    assert report.to_dict()["final"]["rounds_finalized"] == 2
    verdict = audit_run(tmp_path)
    assert verdict.ok, verdict.failures()
    for rnd, paid in _distributed(tmp_path).items():
        assert {s.weight for s in _transcript(tmp_path, rnd).survivors} == {1}
        assert max(paid.scores) - min(paid.scores) <= 1
