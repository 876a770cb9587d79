"""`fedledger propose`, `vote`, `execute` and `proposals` against a real anvil: a governed
task's members, holding the rewards they claimed, switch its rule to the median; the change is
in force from the next round, and `proposals` shows the vote and the change. Bad input gets a
one-line error."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fedledger.keys import DEPLOYER_KEY_ENV, PASSWORD_ENV
from fedledger.ledger.chain.anvil import AnvilProcess
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.governance import STATE_NAMES
from fedledger.ledger.rules import RULE_IDS, result_digest, sort_result
from tests.cli.test_rewards_cli import _key_file
from tests.cli.test_task_cli import (
    STAKE,
    TASK_TOML,
    _deploy,
    _members,
    _one_line_error,
    _play,
    _run,
    _task_toml,
)

GOVERNED_TOML = (
    TASK_TOML.replace("rounds = 2", "rounds = 4")
    + """
[governance]
voting_period = 60
quorum = 0.5
timelock = 5
"""
)


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEPLOYER_KEY_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


def test_token_holders_switch_the_rule_through_the_timelock(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = anvil.url
    config = _task_toml(tmp_path, GOVERNED_TOML)
    deployed = _deploy(capsys, url, config)
    task, governor = str(deployed["task"]), str(deployed["governor"])
    assert deployed["timelock"]
    assert deployed["nft"]
    members = _members(anvil, task, 3)
    for i, m in enumerate(members):
        m.join(f"10.0.0.{i + 1}:50051", STAKE)
    code, _, err = _run(capsys, "task", "start", "--rpc", url, "--task", task,
                        "--config", str(config))  # fmt: skip
    assert code == 0, err
    # Round 1's rewards are paid in round 2 and claimed: the members hold votes.
    contributors, scores = sort_result([m.account for m in members], [1, 1, 1])
    _play(members, 1)
    model1 = hashlib.sha256(b"model 1").digest()
    _play(members, 2, (model1, result_digest(contributors, scores)), contributors, scores)
    for m in members:
        m.claim(m.account)
    keys = [_key_file(tmp_path, m) for m in members]
    where = ["--rpc", url, "--task", task]

    # A change a vote may not make is refused before any transaction.
    line = _one_line_error(capsys, "propose", *where, "--key", str(keys[0]),
                           "--set", "task.rounds=9")  # fmt: skip
    assert "a vote may change only aggregation" in line
    assert line.endswith("the proposal changes rounds")

    proposed = _json(capsys, "propose", *where, "--key", str(keys[0]), "--json",
                     "--set", "aggregation.rule=median", "--set", "aggregation.f=1")  # fmt: skip
    assert proposed["changes"]["aggregation.rule"] == ["fedavg", "median"]
    pid = proposed["id"]
    for key in keys[:2]:  # two thirds of the supply: above the 50 % quorum
        voted = _json(capsys, "vote", *where, "--key", str(key), "--proposal", pid,
                      "--support", "for", "--json")  # fmt: skip
        assert voted["weight"] == 10 * 10**18
    line = _one_line_error(capsys, "vote", *where, "--key", str(keys[0]), "--proposal", pid,
                           "--support", "against")  # fmt: skip
    assert "already voted" in line
    # Not yet: the vote is open.
    line = _one_line_error(capsys, "execute", *where, "--key", str(keys[2]), "--proposal", pid)
    assert "is active" in line
    anvil.chain().time_travel(61)
    code, out, err = _run(capsys, "execute", *where, "--key", str(keys[2]), "--proposal", pid)
    assert code == 0, err
    assert "queued" in out
    line = _one_line_error(capsys, "execute", *where, "--key", str(keys[2]), "--proposal", pid)
    assert "is queued: the timelock runs it from chain time" in line
    anvil.chain().time_travel(6)
    code, out, err = _run(capsys, "execute", *where, "--key", str(keys[2]), "--proposal", pid)
    assert code == 0, err
    assert "executed" in out

    # In force from round 3 (round 2 is open): the contract's rules and `proposals` agree.
    reader = ContractLedger(anvil.chain(), task, None)
    assert reader.rules_at(2).rule_id == RULE_IDS["fedavg"]
    assert reader.rules_at(3).rule_id == RULE_IDS["median"]
    listed = _json(capsys, "proposals", *where, "--json")
    assert listed["governor"] == governor
    (p,) = listed["proposals"]
    assert (p["state"], p["valid"]) == ("executed", True)
    assert p["for"] == 20 * 10**18
    assert p["changes"]["aggregation.rule"] == ["fedavg", "median"]
    assert listed["changes"] == [{"from_round": 3, "rule": "median"}]
    code, out, err = _run(capsys, "proposals", *where)
    assert code == 0, err
    assert "executed" in out
    assert "in force from round 3: rule median" in out

    # A member mints the finalized model (round 1) as an NFT owned by the timelock.
    nft = ["--rpc", url, "--task", task, "--nft", str(deployed["nft"])]
    code, out, err = _run(capsys, "model", "mint", *nft, "--key", str(keys[1]))
    assert code == 0, err
    assert out.startswith(f"minted model #1 ({model1.hex()[:16]})")
    code, out, err = _run(capsys, "model", "mint", *nft, "--key", str(keys[1]))
    assert code == 0, err
    assert "nothing to mint" in out
    (token,) = _json(capsys, "model", "nfts", *nft, "--json")["models"]
    assert (token["round"], token["parent"], token["epsilon"]) == (1, 0, 0.0)
    assert token["owner"] == deployed["timelock"]
    from fedledger.commit.cid import cid_from_digest

    assert token["token_uri"] == "ipfs://" + cid_from_digest(model1)

    # The explorer, from the chain alone, finds the governor and shows the proposal; given the
    # NFT contract, round 1's page names its token.
    from fedledger.explorer.app import create_app, running
    from fedledger.explorer.data import RpcSource

    source = RpcSource(url, task, nft=str(deployed["nft"]))
    snap = source.snapshot()
    assert snap.governor == governor
    assert [STATE_NAMES[p.state] for p in snap.proposals] == ["executed"]
    with running(create_app(source)) as page:
        with urllib.request.urlopen(page, timeout=60) as response:
            html = response.read().decode()
        assert governor in html
        assert "<td>executed</td>" in html
        with urllib.request.urlopen(page + "rounds/1", timeout=60) as response:
            assert "#1 ipfs://" + cid_from_digest(model1) in response.read().decode()


def test_a_task_without_governance_has_no_proposals(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed = _deploy(capsys, anvil.url, _task_toml(tmp_path))
    assert deployed["governor"] is None
    line = _one_line_error(capsys, "proposals", "--rpc", anvil.url, "--task",
                           str(deployed["task"]))  # fmt: skip
    assert "has no governance" in line
