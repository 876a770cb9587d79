"""End to end on the embedded chain: the reward token's holders vote a running task from FedAvg
to the robust trimmed mean. Every node follows from the change's first round, a node whose data
owner's consent allows FedAvg only leaves the task, each finalized model is minted as an NFT,
and the audit recomputes every round with the rule in force in it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from fedledger.cli import main
from fedledger.config import GovernanceConfig, load_config
from fedledger.config.consent import ConsentPolicy
from fedledger.config.task import AggregationConfig, LedgerConfig
from fedledger.gossip.identity import Identity
from fedledger.ledger.chain import Chain
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.governance import STATE_EXECUTED, VOTE_FOR, Governance
from fedledger.ledger.proposals import reconfigure_call
from fedledger.ledger.records import Configured, Distributed, Left
from fedledger.run.task import run_task
from fedledger.rundir import LedgerDeployment

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"
NODES = 5
ROUNDS = 6
FEDAVG_ONLY = NODES - 1
IGNORER = 2


class Voters:
    """The test's token holders: once round 1's rewards are paid, every member's reward is
    claimed, three members propose and pass the switch to the trimmed mean, and it runs
    through the timelock (all while the nodes wait: one call of the run's hook)."""

    def __init__(self, robust: Any) -> None:
        self.robust = robust
        self.done = False
        self.proposal = 0

    def __call__(self, chain: Chain, deployment: LedgerDeployment) -> None:
        if self.done:
            return
        owner = chain.accounts()[0]
        ledger = ContractLedger(chain, deployment.task, owner)
        if not any(isinstance(e, Distributed) for e in ledger.events(deployment.first_block)):
            return
        members = [Identity.from_seed(0, i) for i in range(NODES)]
        for m in members:
            ledger.claim(m.address)
        # Member IGNORER registers a FedAvg-only policy, but its node does not hold it (it
        # will keep sending updates after the switch).
        ContractLedger(chain, deployment.task, Account.from_key(members[IGNORER].private_key)
                       ).set_consent(ConsentPolicy(rules=("fedavg",)).document())  # fmt: skip
        assert deployment.governor is not None
        voters = [Governance(chain, deployment.governor, Account.from_key(m.private_key))
                  for m in members[:3]]  # fmt: skip
        data = reconfigure_call(chain, deployment.task, self.robust)
        proposed = voters[0].propose(deployment.task, data, "switch to the trimmed mean")
        for v in voters:
            v.vote(proposed.id, VOTE_FOR)
        (p,) = voters[0].proposals(deployment.first_block)
        chain.time_travel(p.deadline - chain.now() + 1)
        voters[0].queue(deployment.task, data, "switch to the trimmed mean")
        voters[0].execute(deployment.task, data, "switch to the trimmed mean")
        assert voters[0].state(proposed.id) == STATE_EXECUTED
        self.proposal = proposed.id
        self.done = True


def test_a_vote_switches_the_rule_mid_run_and_a_node_leaves_on_its_consent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = load_config(DIGITS)
    task = replace(base, nodes=NODES, rounds=ROUNDS, data=replace(base.data, partition="iid"),
                   ledger=LedgerConfig(grace=60),
                   governance=GovernanceConfig(voting_period=10, quorum=0.3,
                                               timelock=0))  # fmt: skip
    robust = replace(task, aggregation=AggregationConfig(rule="trimmed_mean", f=1,
                                                         params={"beta": 0.25}))  # fmt: skip
    voters = Voters(robust)
    report = run_task(task, out=tmp_path, transport="memory", chain="embedded", timeout=600,
                      consents={FEDAVG_ONLY: ConsentPolicy(rules=("fedavg",))},
                      on_chain=voters).to_dict()  # fmt: skip
    assert voters.done
    final = report["final"]
    assert final["audit_ok"] is True
    deployment = LedgerDeployment.read(tmp_path)
    from fedledger.ledger.chain.embedded import EmbeddedChain

    chain = EmbeddedChain.replay(tmp_path / "chain.jsonl")
    events = ContractLedger(chain, deployment.task, None).events(deployment.first_block)
    changes = [e for e in events if isinstance(e, Configured) and e.from_round > 1]
    assert len(changes) == 1
    first = changes[0].from_round
    assert 2 <= first <= ROUNDS
    assert changes[0].document == robust.document()
    # The member whose consent allows FedAvg only left, and said why.
    leaver = report["addresses"][FEDAVG_ONLY]
    assert [e.member for e in events if isinstance(e, Left)] == [leaver]
    assert "trimmed_mean" in final["withdrew"][leaver]
    # The member that ignores its registered consent kept sending updates: every node left them
    # out of the rounds its policy does not cover, so it earned nothing for them.
    ignorer = report["addresses"][IGNORER]
    paid = [e for e in events if isinstance(e, Distributed)]
    assert any(ignorer in e.contributors for e in paid if e.round < first)
    assert all(ignorer not in e.contributors for e in paid if e.round >= first)
    assert [e for e in paid if e.round >= first]
    assert ignorer not in final["withdrew"]
    # The audit recomputed every finalized round, those after the change with its rule.
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["ok"] is True
    assert any(f"from round {first}" in n for n in audit["notes"])
    # Every finalized model is an NFT, in order, owned by the task's governance (the timelock).
    models = final["models"]
    assert len(models) == final["rounds_finalized"]
    assert [m["round"] for m in models] == sorted(m["round"] for m in models)
    assert all(m["owner"] == deployment.timelock for m in models)
    assert all(m["token_uri"].startswith("ipfs://b") for m in models)
    # `fedledger proposals --run` reads the proposal, its votes and the change from the run.
    capsys.readouterr()
    assert main(["proposals", "--run", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    (proposal,) = listed["proposals"]
    assert proposal["state"] == "executed"
    assert proposal["changes"]["aggregation.rule"] == ["fedavg", "trimmed_mean"]
    assert listed["changes"] == [{"from_round": first, "rule": "trimmed_mean"}]


def test_a_node_whose_consent_excludes_the_task_refuses_to_join(tmp_path: Path) -> None:
    base = load_config(DIGITS)
    task = replace(base, nodes=4, rounds=2, purpose="digit recognition",
                   data=replace(base.data, partition="iid"))  # fmt: skip
    report = run_task(task, out=tmp_path, transport="memory", chain="embedded", timeout=600,
                      consents={3: ConsentPolicy(purposes=("cancer research",)),
                                2: ConsentPolicy(purposes=("digit recognition",),
                                                 rules=("fedavg",))}).to_dict()  # fmt: skip
    final = report["final"]
    refuser = report["addresses"][3]
    assert list(final["refused"]) == [refuser]
    assert (
        "purpose 'digit recognition' is not one of 'cancer research'" in final["refused"][refuser]
    )
    assert final["rounds_finalized"] == 2
    assert final["audit_ok"] is True
    # The consenting node registered its policy at join: the Consent event holds it.
    from fedledger.ledger.chain.embedded import EmbeddedChain
    from fedledger.ledger.records import Consent, Joined

    deployment = LedgerDeployment.read(tmp_path)
    chain = EmbeddedChain.replay(tmp_path / "chain.jsonl")
    events = ContractLedger(chain, deployment.task, None).events(deployment.first_block)
    assert refuser not in {e.member for e in events if isinstance(e, Joined)}
    (consent,) = [e for e in events if isinstance(e, Consent)]
    assert consent.member == report["addresses"][2]
    assert consent.policy == ConsentPolicy(purposes=("digit recognition",),
                                           rules=("fedavg",)).document()  # fmt: skip


def test_a_model_token_with_a_wrong_epsilon_fails_the_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedledger.incentives.models as models
    from fedledger.audit import audit_run

    base = load_config(DIGITS)
    task = replace(base, nodes=3, rounds=2, data=replace(base.data, partition="iid"))
    with monkeypatch.context() as m:  # the run mints its tokens claiming epsilon 0.5
        m.setattr(models, "model_epsilon", lambda *_: 500_000)
        report = run_task(task, out=tmp_path, transport="memory", chain="embedded",
                          timeout=600, audit=False).to_dict()  # fmt: skip
    assert [t["epsilon"] for t in report["final"]["models"]] == [0.5, 0.5]
    verdict = audit_run(tmp_path)
    (check,) = [c for c in verdict.task_checks if c.name == "models"]
    assert not check.ok
    assert "token 1 states epsilon 0.5, the accountant gives 0" in check.detail
    assert not verdict.ok


def test_nodes_that_use_an_update_its_owner_did_not_consent_to_fail_the_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedledger.audit import audit_run
    from fedledger.config.consent import Consents

    base = load_config(DIGITS)
    task = replace(base, nodes=3, rounds=3, data=replace(base.data, partition="iid"))
    registered: list[int] = []

    def withdraw_consent(chain: Chain, deployment: LedgerDeployment) -> None:
        # Member 1 registers a policy the task's FedAvg does not meet (its node holds none).
        if not registered:
            member = Account.from_key(Identity.from_seed(task.seed, 1).private_key)
            ContractLedger(chain, deployment.task, member).set_consent(
                ConsentPolicy(rules=("median",)).document())  # fmt: skip
            registered.append(ContractLedger(chain, deployment.task, None).current_round())

    with monkeypatch.context() as m:  # colluding nodes: they keep every update
        m.setattr(Consents, "uncovered", lambda *_, **__: {})
        report = run_task(task, out=tmp_path, transport="memory", chain="embedded", timeout=600,
                          audit=False, on_chain=withdraw_consent).to_dict()  # fmt: skip
    assert report["final"]["rounds_finalized"] == 3
    verdict = audit_run(tmp_path)
    failed = {(r.round, c.name): c.detail for r in verdict.rounds for c in r.checks if not c.ok}
    first = registered[0] + 1
    member = report["addresses"][1]
    assert failed
    assert all(name == "consent" and rnd >= first for rnd, name in failed)
    assert f"{member}'s update is included: aggregation rule 'fedavg' is not one of median" in (
        failed[(first, "consent")])  # fmt: skip
