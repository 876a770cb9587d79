"""`fedledger task deploy|start|allow` and `fedledger status` against a real anvil: what a
coordinator runs for a deployment over several machines, and what everyone reads back."""

from __future__ import annotations

import hashlib
import json
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from fedledger.cli import main
from fedledger.commit.cid import cid_from_digest
from fedledger.config import load_config
from fedledger.errors import TransactionReverted
from fedledger.gossip.identity import Identity
from fedledger.keys import DEPLOYER_KEY_ENV, PASSWORD_ENV
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import RpcChain
from fedledger.ledger.chain.anvil import (
    AnvilProcess,
    find_anvil,
    install_anvil,
    mnemonic_accounts,
    start_anvil,
)
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.messages import ZERO32, RoundMessage, SignedRound
from fedledger.ledger.records import TxResult
from fedledger.ledger.rules import result_digest, sort_result
from tests.support import refusing_port

ROOT = Path(__file__).resolve().parents[2]
STAKE = 10**16
TASK_TOML = """\
[task]
name = "hospitals"
seed = 7
rounds = 2
nodes = 3

[data]
dataset = "breast_cancer"

[model]
name = "logreg"

[ledger]
min_stake = 1e16
reward_per_round = 30.0
"""


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEPLOYER_KEY_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


def _task_toml(directory: Path, text: str = TASK_TOML, name: str = "task.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, _, err = _run(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def _deploy(capsys: pytest.CaptureFixture[str], url: str, config: Path) -> dict[str, Any]:
    code, out, err = _run(capsys, "task", "deploy", "--config", str(config), "--rpc", url,
                          "--json")  # fmt: skip
    assert code == 0, err
    deployed = json.loads(out)
    assert isinstance(deployed, dict)
    return deployed


def _status(capsys: pytest.CaptureFixture[str], url: str, task: str) -> dict[str, Any]:
    code, out, err = _run(capsys, "status", "--rpc", url, "--task", task, "--json")
    assert code == 0, err
    status = json.loads(out)
    assert isinstance(status, dict)
    return status


def _members(anvil: AnvilProcess, task: str, n: int) -> list[ContractLedger]:
    """Handles on the task for anvil's funded accounts 1..n (0 deploys)."""
    chain = anvil.chain()
    return [ContractLedger(chain, task, account) for account in mnemonic_accounts(n + 1)[1:]]


def _started(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str = TASK_TOML
) -> tuple[dict[str, Any], list[ContractLedger]]:
    """A task deployed from ``text`` (what `task deploy --json` printed), three members joined
    with STAKE each, and the task started; the members' handles."""
    config = _task_toml(tmp_path, text)
    deployed = _deploy(capsys, anvil.url, config)
    task = str(deployed["task"])
    members = _members(anvil, task, 3)
    for i, m in enumerate(members):
        m.join(f"10.0.0.{i + 1}:50051", STAKE)
    code, _, err = _run(capsys, "task", "start", "--rpc", anvil.url, "--task", task,
                        "--config", str(config))  # fmt: skip
    assert code == 0, err
    return deployed, members


def test_deploy_prints_the_task_and_what_each_site_needs(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _task_toml(tmp_path)
    cfg = load_config(config)
    code, out, err = _run(capsys, "task", "deploy", "--config", str(config), "--rpc", anvil.url)
    assert code == 0, err
    fields = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "address":
            fields[parts[0]] = parts[2]
    task, token = fields["task"], fields["token"]
    chain = RpcChain(anvil.url)
    runtime = bytes.fromhex(load_artifact("Task")["bytecode_runtime"].removeprefix("0x"))
    assert chain.code(task).startswith(runtime)  # the address printed has the Task's code
    assert chain.code(token)
    assert f"0x{cfg.digest().hex()}" in out  # the config digest: the task's identity on chain
    assert hashlib.sha256(config.read_bytes()).hexdigest() in out  # task.toml's own sha256
    assert "chain id        31337" in out
    assert f'chain = "{anvil.url}"' in out
    assert f'task_address = "{task}"' in out
    assert "fedledger task start" in out
    nft = out.split("model NFT")[1].split()[0]
    assert chain.code(nft)
    assert f"fedledger explorer --rpc {anvil.url} --task {task} --nft {nft}" in out

    # --json: one object, the node.toml snippet a site can start from.
    deployed = _deploy(capsys, anvil.url, config)
    assert deployed["chain_id"] == 31337
    assert deployed["config_digest"] == f"0x{cfg.digest().hex()}"
    assert deployed["owner"] == mnemonic_accounts(1)[0].address
    assert deployed["nodes"] == 3
    assert deployed["min_stake"] == STAKE
    snippet = tomllib.loads(str(deployed["node_toml"]))
    assert snippet["chain"] == anvil.url
    assert snippet["task_address"] == deployed["task"]
    assert snippet["task"] == "task.toml"
    assert {"key_file", "state_dir", "data", "listen", "index"} <= set(snippet)
    ledger = ContractLedger(chain, str(deployed["task"]), None)
    assert ledger.rules().config_digest == cfg.digest()

    # A fresh task: nobody joined, not started.
    status = _status(capsys, anvil.url, str(deployed["task"]))
    assert status["current_round"] == 0
    assert status["phase"] == "not started"
    assert status["members"] == []
    assert status["rounds"] == []
    assert status["token"] == deployed["token"]
    assert status["owner"] == deployed["owner"]


def test_start_waits_for_the_members_and_the_right_task_toml(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _task_toml(tmp_path)
    task = str(_deploy(capsys, anvil.url, config)["task"])
    start = ["task", "start", "--rpc", anvil.url, "--task", task, "--config", str(config)]
    a, b, c = _members(anvil, task, 3)

    line = _one_line_error(capsys, *start)
    assert "0 of 3 members joined (none): 3 missing" in line
    a.join("10.0.0.1:50051", STAKE)
    b.join("10.0.0.2:50051", STAKE)
    line = _one_line_error(capsys, *start)
    assert "2 of 3 members joined" in line
    assert "1 missing" in line
    assert a.account in line
    assert b.account in line

    # Another task.toml (one setting changed): not the deployed task.
    other = _task_toml(tmp_path, TASK_TOML.replace("rounds = 2", "rounds = 3"), "other.toml")
    line = _one_line_error(capsys, "task", "start", "--rpc", anvil.url, "--task", task,
                           "--config", str(other))  # fmt: skip
    assert "is not the task deployed at" in line
    assert "config digest" in line

    c.join("10.0.0.3:50051", STAKE)
    code, out, err = _run(capsys, *start)
    assert code == 0, err
    assert out.splitlines()[-1] == "round 1 started"
    for member, endpoint in ((a, "10.0.0.1:50051"), (b, "10.0.0.2:50051"),
                             (c, "10.0.0.3:50051")):  # fmt: skip
        assert f"{member.account}  stake 0.01 ETH  {endpoint}" in out
    assert a.current_round() == 1

    line = _one_line_error(capsys, *start)
    assert "already started (round 1)" in line

    status = _status(capsys, anvil.url, task)
    assert status["current_round"] == 1
    assert status["phase"] == "open"
    members = status["members"]
    assert isinstance(members, list)
    assert [m["address"] for m in members] == [a.account, b.account, c.account]
    assert {m["status"] for m in members} == {"active"}
    assert [m["stake"] for m in members] == [STAKE] * 3
    assert members[0]["endpoint"] == "10.0.0.1:50051"
    rounds = status["rounds"]
    assert isinstance(rounds, list)
    assert len(rounds) == 1
    assert rounds[0]["round"] == 1
    assert rounds[0]["outcome"] == "open"
    assert (rounds[0]["messages"], rounds[0]["updates"], rounds[0]["transactions"]) == (0, 0, 0)
    assert {(m["earned"], m["claimed"], m["updates"], m["selections"]) for m in members} == {
        (0, 0, 0, 0)
    }


def test_start_with_fewer_members_than_nodes_when_asked(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _task_toml(tmp_path)
    task = str(_deploy(capsys, anvil.url, config)["task"])
    (a,) = _members(anvil, task, 1)
    a.join("10.0.0.1:50051", STAKE)
    start = ["task", "start", "--rpc", anvil.url, "--task", task, "--config", str(config)]
    assert "1 of 2 members joined" in _one_line_error(capsys, *start, "--min-members", "2")
    code, out, err = _run(capsys, *start, "--min-members", "1")
    assert code == 0, err
    assert "round 1 started" in out


_KEYS: dict[str, Identity] = {
    str(a.address): Identity.from_hex("0x" + bytes(a.key).hex()) for a in mnemonic_accounts(8)
}
"""The signing keys of anvil's funded accounts (what each site's node signs its messages with)."""


def _message(
    ledger: ContractLedger,
    member: str,
    rnd: int,
    pair: tuple[bytes, bytes] = (ZERO32, ZERO32),
    *,
    update: bool = True,
) -> SignedRound:
    """``member``'s signed round message for ``rnd``: its own update (unless ``update=False``),
    attesting ``pair`` (round ``rnd - 1``'s model and result digests)."""
    digest = hashlib.sha256(f"{member}/{rnd}".encode()).digest() if update else ZERO32
    message = RoundMessage(round=rnd, update=digest, examples=10 if update else 0,
                           model=pair[0], result=pair[1])  # fmt: skip
    return message.sign(_KEYS[member], ledger.chain_id, ledger.task_address)


def _play(
    members: list[ContractLedger],
    rnd: int,
    pair: tuple[bytes, bytes] = (ZERO32, ZERO32),
    contributors: list[str] | tuple[str, ...] = (),
    scores: list[int] | tuple[int, ...] = (),
) -> TxResult:
    """Every member signs its message for ``rnd`` (gossip, off chain); the first one submits
    the batch in one transaction, with round ``rnd - 1``'s result to pay if it finalizes."""
    sender = members[0]
    messages = [_message(sender, m.account, rnd, pair) for m in members]
    return sender.submit(rnd, messages, contributors, scores)


def test_status_shows_finalized_rounds_and_rewards(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed, members = _started(anvil, tmp_path, capsys)
    task = str(deployed["task"])

    # Round 1: everyone's signed update, in one batch (the round closes: all are in). Round 2's
    # messages attest round 1's model and result: round 1 finalizes and is paid in that call.
    contributors, scores = sort_result([m.account for m in members], [1, 1, 1])
    model1 = hashlib.sha256(b"model 1").digest()
    _play(members, 1)
    _play(members, 2, (model1, result_digest(contributors, scores)), contributors, scores)

    status = _status(capsys, anvil.url, task)
    rounds = status["rounds"]
    assert isinstance(rounds, list)
    first = rounds[0]
    assert first["outcome"] == "finalized"
    assert first["model_digest"] == "0x" + model1.hex()
    assert first["model_cid"] == cid_from_digest(model1)
    assert first["attesters"] == 3
    assert first["messages"] == 3
    assert first["updates"] == 3
    assert first["transactions"] == 1
    assert first["rewarded"] == 30 * 10**18 - 30 * 10**18 % 3
    assert status["current_round"] == 2
    assert status["total_earned"] == first["rewarded"]
    assert status["token_supply"] == 0  # earned, not minted until claimed
    assert status["max_rounds"] == 2
    by_address = {m["address"]: m for m in status["members"]}
    for m in members:
        mine = by_address[m.account]
        assert (mine["earned"], mine["claimed"], mine["tokens"]) == (10 * 10**18, 0, 0)
        assert (mine["updates"], mine["selections"]) == (2, 1)
    second = rounds[1]
    assert second["outcome"] == "aggregate"  # every message in: closed; round 3 not open yet
    assert second["model_cid"] is None
    assert (second["messages"], second["updates"], second["transactions"]) == (3, 3, 1)
    assert second["rewarded"] is None

    # A claim mints what a member earned.
    members[0].claim(members[0].account)
    status = _status(capsys, anvil.url, task)
    mine = {m["address"]: m for m in status["members"]}[members[0].account]
    assert mine["claimed"] == mine["tokens"] == mine["earned"] == 10 * 10**18
    assert status["token_supply"] == 10 * 10**18

    # Reading the events from the deployment's first block on gives the same answer.
    code, out, err = _run(capsys, "status", "--rpc", anvil.url, "--task", task, "--json",
                          "--from-block", str(deployed["first_block"]))  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == status
    code, out, err = _run(capsys, "status", "--rpc", anvil.url, "--task", task)
    assert code == 0, err
    assert cid_from_digest(model1) in out
    assert "finalized" in out
    for column in ("earned", "claimed", "updates", "selected", "messages", "transactions"):
        assert column in out
    assert "rewards: 30 tokens earned (token supply 10)" in out


def test_status_names_an_equivocator(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed, members = _started(anvil, tmp_path, capsys)
    task = str(deployed["task"])
    a, _, c = members
    _play(members, 1)
    # c also signed another round-1 message (gossiped, never submitted): with the one on
    # chain it is evidence, and anyone who has both takes c's whole stake.
    on_chain = _message(a, c.account, 1)
    other = RoundMessage(round=1, update=hashlib.sha256(b"another update").digest(),
                         examples=10).sign(_KEYS[c.account], a.chain_id, task)  # fmt: skip
    a.slash(1, on_chain, other)

    status = _status(capsys, anvil.url, task)
    slashes = status["slashes"]
    assert isinstance(slashes, list)
    assert len(slashes) == 1
    assert slashes[0]["member"] == c.account
    assert slashes[0]["amount"] == STAKE
    assert slashes[0]["round"] == 1
    assert "equivocated" in slashes[0]["reason"]
    by_address = {m["address"]: m for m in status["members"]}
    assert by_address[c.account]["status"] == "slashed"
    assert by_address[c.account]["stake"] == 0
    assert by_address[a.account]["status"] == "active"
    assert status["total_slashed"] == STAKE
    assert status["rounds"][0]["outcome"] == "aggregate"
    assert status["rounds"][0]["messages"] == 3

    # The human form: rich tables on stdout, whole addresses.
    code, out, err = _run(capsys, "status", "--rpc", anvil.url, "--task", task)
    assert code == 0, err
    assert "members" in out
    assert "rounds" in out
    assert "slashes" in out
    assert c.account in out
    assert "equivocated" in out
    assert "slashed" in out
    assert "round 1, aggregate" in out


def test_status_says_whom_the_open_round_waits_for_as_the_run_does(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedledger.ledger.records import RoundStarted
    from fedledger.node.waiting import describe_waiting

    deployed, members = _started(anvil, tmp_path, capsys)
    task = str(deployed["task"])
    a, b, c = members
    status = _status(capsys, anvil.url, task)
    waiting = status["waiting"]
    assert (waiting["round"], waiting["what"]) == (1, "messages")
    assert waiting["members"] == [a.account, b.account, c.account]
    # Two of three messages in: short of the quorum (67 % of the stake), the phase stays open
    # until its window ends, waiting for c alone.
    _play([a, b], 1)
    status = _status(capsys, anvil.url, task)
    assert status["phase"] == "open"
    waiting = status["waiting"]
    assert waiting["members"] == [c.account]
    started = a.events(-1, a.head())
    (start,) = [e.start for e in started if isinstance(e, RoundStarted)]
    assert waiting["until"] == start + a.rules().window
    code, out, err = _run(capsys, "status", "--rpc", anvil.url, "--task", task)
    assert code == 0, err
    line = describe_waiting(1, "messages", [c.account], waiting["until"])
    assert line in out
    assert line.startswith(f"round 1: waiting for messages from {c.account[:6]}… until ")
    # Every message in: the round closed, nobody is waited for.
    _play([c], 1)
    assert _status(capsys, anvil.url, task)["waiting"] is None


def test_allow_lets_accounts_join_an_allowlist_task(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _task_toml(tmp_path, TASK_TOML + "allowlist = true\n")
    task = str(_deploy(capsys, anvil.url, config)["task"])
    (a,) = _members(anvil, task, 1)
    with pytest.raises(TransactionReverted, match="not allowlisted"):
        a.join("10.0.0.1:50051", STAKE)
    code, out, err = _run(capsys, "task", "allow", "--rpc", anvil.url, "--task", task,
                          a.account.lower())  # fmt: skip
    assert code == 0, err
    assert out.strip() == f"allowed {a.account}"
    a.join("10.0.0.1:50051", STAKE)
    assert a.status_of(a.account) == 1

    open_task = str(_deploy(capsys, anvil.url, _task_toml(tmp_path))["task"])
    line = _one_line_error(capsys, "task", "allow", "--rpc", anvil.url, "--task", open_task,
                           a.account)  # fmt: skip
    assert "has no allowlist" in line


def test_bad_inputs_are_one_line_errors(
    anvil: AnvilProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = _task_toml(tmp_path)
    deployed = _deploy(capsys, anvil.url, config)
    task, token = str(deployed["task"]), str(deployed["token"])
    url = anvil.url
    nobody = "0x" + "ab" * 20  # no code there

    def err(*argv: str) -> str:
        return _one_line_error(capsys, *argv)

    assert "not an http(s) JSON-RPC URL" in err("status", "--rpc", "ftp://x", "--task", task)
    assert "not a JSON-RPC URL" in err("status", "--rpc", "http://h:99999", "--task", task)
    assert "not an address" in err("status", "--rpc", url, "--task", "0x1234")
    assert "not an address" in err("status", "--rpc", url, "--task", "0x" + "zz" * 20)
    line = err("status", "--rpc", url, "--task", nobody)
    assert f"no Task contract at {to_checksum_address(nobody)}" in line
    assert "not a Task" in err("status", "--rpc", url, "--task", token)
    with refusing_port() as port:
        assert "unavailable" in err("status", "--rpc", f"http://127.0.0.1:{port}", "--task", task)
        assert "unavailable" in err("task", "deploy", "--config", str(config), "--rpc",
                                    f"http://127.0.0.1:{port}")  # fmt: skip
    assert "not found" in err("task", "deploy", "--config", str(tmp_path / "missing.toml"),
                              "--rpc", url)  # fmt: skip
    bad = _task_toml(tmp_path, TASK_TOML.replace("nodes = 3", "nodes = 0"), "bad.toml")
    assert "task.nodes" in err("task", "deploy", "--config", str(bad), "--rpc", url)
    start = ["task", "start", "--rpc", url, "--task", task, "--config", str(config)]
    assert "--password-file" in err(*start, "--password-file", str(tmp_path / "pw"))
    assert "min-members" in err(*start, "--min-members", "0")
    assert "not an address" in err("task", "allow", "--rpc", url, "--task", task, "0x12")

    # A key that is not the task's owner (anvil's funded account 5, in a key file).
    stranger = mnemonic_accounts(6)[5]
    keyfile = tmp_path / "stranger.key"
    Identity.from_hex("0x" + bytes(stranger.key).hex()).save(keyfile)
    line = err(*start, "--deployer-keyfile", str(keyfile))
    assert "only the task's owner" in line
    assert stranger.address in line
    # ... also from the environment; both at once is refused.
    monkeypatch.setenv(DEPLOYER_KEY_ENV, "0x" + bytes(stranger.key).hex())
    assert "only the task's owner" in err(*start)
    assert "not both" in err(*start, "--deployer-keyfile", str(keyfile))
    # A key with no ETH cannot deploy.
    poor = Identity.generate()
    monkeypatch.setenv(DEPLOYER_KEY_ENV, "0x" + poor.private_key.hex())
    assert "no ETH" in err("task", "deploy", "--config", str(config), "--rpc", url)


def test_a_chain_that_is_not_a_development_chain_needs_the_deployers_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _task_toml(tmp_path)
    binary = find_anvil(ROOT) or install_anvil(ROOT)
    deployer = mnemonic_accounts(3)[2]  # funded on any anvil, but not anvil's default deployer
    with start_anvil(anvil=binary, chain_id=8453) as node:  # not a development chain id
        line = _one_line_error(capsys, "task", "deploy", "--config", str(config), "--rpc",
                               node.url)  # fmt: skip
        assert "not a local development chain" in line
        assert DEPLOYER_KEY_ENV in line

        # An encrypted keystore, its password in a private file.
        keystore = tmp_path / "deployer.json"
        Identity.from_hex("0x" + bytes(deployer.key).hex()).save_keystore(
            keystore, "s3cret", iterations=2**10
        )
        password = tmp_path / "password"
        password.write_text("s3cret\n")
        password.chmod(0o600)
        keys = ["--deployer-keyfile", str(keystore), "--password-file", str(password)]
        code, out, err = _run(capsys, "task", "deploy", "--config", str(config), "--rpc",
                              node.url, "--json", *keys)  # fmt: skip
        assert code == 0, err
        deployed = json.loads(out)
        assert deployed["chain_id"] == 8453
        assert deployed["owner"] == deployer.address
        task = deployed["task"]

        # The same key starts the task; without it nothing is sent.
        (a,) = _members(node, task, 1)
        a.join("10.0.0.1:50051", STAKE)
        start = ["task", "start", "--rpc", node.url, "--task", task, "--config", str(config),
                 "--min-members", "1"]  # fmt: skip
        assert "not a local development chain" in _one_line_error(capsys, *start)
        code, out, err = _run(capsys, *start, *keys)
        assert code == 0, err
        assert "round 1 started" in out


def test_the_explorer_reads_a_deployed_task_from_the_chain(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fedledger explorer --rpc URL --task ADDR`: the task page of a task deployed on anvil,
    its members with their stake and endpoints, read from the chain alone."""
    from fedledger.explorer.app import create_app, running
    from fedledger.explorer.data import RpcSource

    deployed, members = _started(anvil, tmp_path, capsys)
    task = str(deployed["task"])
    with running(create_app(RpcSource(anvil.url, task))) as url:
        with urllib.request.urlopen(url, timeout=60) as response:
            assert response.status == 200
            html = response.read().decode()
        assert task in html
        for i, m in enumerate(members):
            assert m.account[:6] in html
            assert f"10.0.0.{i + 1}:50051" in html
        with urllib.request.urlopen(url + "rounds", timeout=60) as response:
            assert response.status == 200
            rounds = response.read().decode()
        assert 'id="round-1"' in rounds  # the task started: round 1 is open
