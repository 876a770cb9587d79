"""End to end with secure aggregation: `fedledger run` on the embedded chain with
``[privacy] secure_aggregation = true``. The members register key blobs before the start,
publish masked updates only, reveal shares once each round closed, and every node unmasks the
same sum; members that drop out are unmasked around, a withholder makes its rounds fail
without revealing anything, and the audit recomputes every round from the transcript."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedledger.audit import audit_run, run_blob_stores
from fedledger.commit import cid_from_digest, decode
from fedledger.config import PrivacyConfig, load_config
from fedledger.errors import CodecError
from fedledger.ledger.chain.anvil import find_anvil, install_anvil, start_anvil
from fedledger.ledger.chain.embedded import EmbeddedChain
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.messages import ZERO32
from fedledger.ledger.records import Distributed, Keys, Submitted
from fedledger.privacy.secagg_round import Transcript
from fedledger.run.task import run_task
from fedledger.rundir import JOURNAL_FILE, LedgerDeployment

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


def _run(out: Path, *, nodes: int, rounds: int, noise: float | None = None,
         attack: str | None = None, attackers: float = 0.0, transport: str = "memory",
         chain: str = "embedded") -> dict[str, Any]:  # fmt: skip
    privacy = PrivacyConfig(secure_aggregation=True, noise_multiplier=noise)
    task = replace(load_config(DIGITS), nodes=nodes, rounds=rounds, privacy=privacy)
    report: dict[str, Any] = run_task(task, out=out, transport=transport, chain=chain,
                                      timeout=600, attack=attack,
                                      attackers=attackers).to_dict()  # fmt: skip
    return report


def _events(out: Path) -> list[Any]:
    """Every event of the run's task, replayed from its journal."""
    chain = EmbeddedChain.replay(out / JOURNAL_FILE)
    ledger = ContractLedger(chain, LedgerDeployment.read(out).task, None)
    return list(ledger.events(-1, ledger.head()))


def _blob(out: Path, cid: str) -> bytes:
    for store in run_blob_stores(out):
        if store.has(cid):
            return store.get(cid)
    raise FileNotFoundError(cid)


def test_secure_run_with_dropouts_finalizes_every_round_and_the_audit_recomputes_it(
    tmp_path: Path,
) -> None:
    # gRPC between the nodes (one process): reveals and key blobs cross the real transport.
    report = _run(tmp_path, nodes=5, rounds=3, noise=0.5, attack="dropout", attackers=0.2,
                  transport="grpc")  # fmt: skip
    final = report["final"]
    assert final["rounds_finalized"] == 3
    assert final["audit_ok"] is True
    assert final["transactions_per_round"] == 1.0
    assert final["model_digests_agree"] is True
    assert final["secure_aggregation"] == {"unmasked_rounds": 3, "abandoned_rounds": [],
                                           "dropouts": {"1": 0, "2": 1, "3": 1}}  # fmt: skip
    # Every node reports epsilon; the dropout released one update, the others three.
    spent = final["privacy"]["epsilon"]
    assert len(spent) == 5
    assert len(set(spent.values())) == 2
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert all(r["ok"] for r in audit["rounds"])
    assert [r["round"] for r in audit["rounds"] if r["status"] == "finalized"] == [1, 2, 3]
    # What the chain and the blobs hold: key blobs registered by all before the start, masked
    # updates only (no parameter blob), and a transcript per round naming the dropout.
    events = _events(tmp_path)
    addresses = report["addresses"]
    keys = [e for e in events if isinstance(e, Keys) and e.keys_digest != ZERO32]
    assert {e.member for e in keys} == set(addresses)
    updates = [e for e in events if isinstance(e, Submitted) and e.update != ZERO32]
    for e in updates:
        with pytest.raises(CodecError):
            decode(_blob(tmp_path, cid_from_digest(e.update)))
    dropper = next(a for a in addresses
                   if sum(1 for e in updates if e.member == a) == 1)  # fmt: skip
    for d in (e for e in events if isinstance(e, Distributed)):
        t = Transcript.from_bytes(_blob(tmp_path, cid_from_digest(d.transcript)))
        assert t.round == d.round
        assert [s.member for s in t.survivors] == [c.lower() for c in d.contributors]
        if d.round >= 2:
            assert [x.member for x in t.dropouts] == [dropper.lower()]
            assert dropper not in d.contributors


@pytest.mark.slow
def test_a_withheld_masked_update_fails_its_rounds_and_reveals_nothing(tmp_path: Path) -> None:
    report = _run(tmp_path, nodes=4, rounds=2, attack="withhold", attackers=0.25)
    final = report["final"]
    # Nobody can unmask a sum without the withholder's masked update: both rounds fail, the
    # model stays the initial one, and no transcript (no seed, no key) was ever made.
    assert final["rounds_finalized"] == 0
    assert final["audit_ok"] is True
    events = _events(tmp_path)
    assert not [e for e in events if isinstance(e, Distributed)]


@pytest.mark.slow
def test_secure_run_of_node_processes_on_anvil(tmp_path: Path) -> None:
    """Each node its own OS process on a real JSON-RPC chain: keys registered before the
    owner starts the task, reveals gossiped over gRPC, the audit over RPC."""
    with start_anvil(anvil=find_anvil(ROOT) or install_anvil(ROOT)) as node:
        report = _run(tmp_path, nodes=4, rounds=2, noise=1.0, transport="grpc", chain=node.url)
        final = report["final"]
        assert final["rounds_finalized"] == 2
        assert final["model_digests_agree"] is True
        assert final["audit_ok"] is True
        assert final["secure_aggregation"]["unmasked_rounds"] == 2
        deployment = LedgerDeployment.read(tmp_path)
        verdict = audit_run(tmp_path, rpc=node.url, task_address=deployment.task,
                            config=tmp_path / "task.toml")  # fmt: skip
        assert verdict.ok, verdict.failures()
