"""`fedledger rewards` against a real anvil: what each member earned, claimed and may still
claim, the totals and the task's cap; `--claim --key` mints the key's own reward."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from fedledger.gossip.identity import Identity
from fedledger.keys import DEPLOYER_KEY_ENV, PASSWORD_ENV
from fedledger.ledger.chain.anvil import (
    AnvilProcess,
)
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.messages import RoundMessage
from fedledger.ledger.rules import result_digest, sort_result
from tests.cli.test_task_cli import (
    _KEYS,
    TASK_TOML,
    _deploy,
    _members,
    _message,
    _one_line_error,
    _play,
    _run,
    _started,
    _task_toml,
)
from tests.support import refusing_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = 10**18
REWARD = 30 * TOKEN  # TASK_TOML: reward_per_round = 30.0, rounds = 2
# A quorum of 60 % of the stake: two of three members finalize a round once one is slashed.
QUORUM_TOML = TASK_TOML + "quorum = 0.6\n"


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEPLOYER_KEY_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


def _rewards(capsys: pytest.CaptureFixture[str], url: str, task: str, *extra: str
             ) -> dict[str, Any]:  # fmt: skip
    code, out, err = _run(capsys, "rewards", "--rpc", url, "--task", task, "--json", *extra)
    assert code == 0, err
    rewards = json.loads(out)
    assert isinstance(rewards, dict)
    return rewards


def _by_address(rewards: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["address"]: m for m in rewards["members"]}


def _key_file(directory: Path, ledger: ContractLedger) -> Path:
    """``ledger``'s account's key in a hex key file (mode 0600)."""
    path = directory / f"{ledger.account}.key"
    _KEYS[ledger.account].save(path)
    return path


def test_a_fresh_task_has_earned_nothing(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed = _deploy(capsys, anvil.url, _task_toml(tmp_path))
    task = str(deployed["task"])
    rewards = _rewards(capsys, anvil.url, task)
    assert rewards["task"] == task
    assert rewards["chain_id"] == 31337
    assert rewards["token"] == deployed["token"]
    assert rewards["members"] == []
    assert (rewards["reward_per_round"], rewards["max_rounds"]) == (REWARD, 2)
    assert rewards["cap"] == 2 * REWARD
    totals = ("total_earned", "total_claimed", "total_claimable", "forfeit", "token_supply")
    assert {rewards[k] for k in totals} == {0}
    code, out, err = _run(capsys, "rewards", "--rpc", anvil.url, "--task", task)
    assert code == 0, err
    assert "no member joined yet" in out
    assert "at most 60 tokens over 2 rounds" in out


def test_rewards_claims_and_a_slashed_members_forfeit(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed, members = _started(anvil, tmp_path, capsys, QUORUM_TOML)
    task = str(deployed["task"])
    a, b, c = members
    url = anvil.url

    # Round 1: everyone's update. Round 2 attests round 1's result (scores 1, 2, 3 for a, b,
    # c): round 1 finalizes and the same transaction credits 30 tokens, 5, 10 and 15.
    accounts = [m.account for m in members]
    contributors, scores = sort_result(accounts, [1, 2, 3])
    share = {m.account: REWARD * s // 6 for m, s in zip(members, [1, 2, 3], strict=True)}
    _play(members, 1)
    model1 = hashlib.sha256(b"model 1").digest()
    _play(members, 2, (model1, result_digest(contributors, scores)), contributors, scores)

    rewards = _rewards(capsys, url, task)
    assert [m["address"] for m in rewards["members"]] == accounts  # in the order they joined
    for m in rewards["members"]:
        assert m["status"] == "active"
        assert m["earned"] == m["claimable"] == share[m["address"]]
        assert m["claimed"] == 0
    assert rewards["total_earned"] == rewards["total_claimable"] == REWARD
    assert rewards["total_claimed"] == rewards["token_supply"] == rewards["forfeit"] == 0
    assert rewards["cap"] == 2 * REWARD

    # a claims with its hex key file: one transaction, the amount printed.
    code, out, err = _run(capsys, "rewards", "--rpc", url, "--task", task, "--claim", "--key",
                          str(_key_file(tmp_path, a)))  # fmt: skip
    assert code == 0, err
    assert out.startswith(f"claimed 5 tokens for {a.account} (tx 0x")
    assert "its balance is 5 tokens" in out
    assert a.token_balance(a.account) == a.claimed_of(a.account) == 5 * TOKEN
    after_first_claim = a.head() + 1
    rewards = _rewards(capsys, url, task)
    mine = _by_address(rewards)[a.account]
    assert (mine["earned"], mine["claimed"], mine["claimable"]) == (5 * TOKEN, 5 * TOKEN, 0)
    assert rewards["total_claimed"] == rewards["token_supply"] == 5 * TOKEN
    assert rewards["total_claimable"] == 25 * TOKEN
    line = _one_line_error(capsys, "rewards", "--rpc", url, "--task", task, "--claim", "--key",
                           str(_key_file(tmp_path, a)))  # fmt: skip
    assert f"nothing to claim for {a.account}" in line

    # c signed two different round-2 messages: evidence; its unclaimed 15 tokens are forfeit.
    other = RoundMessage(round=2, update=hashlib.sha256(b"another update").digest(),
                         examples=10).sign(_KEYS[c.account], a.chain_id, task)  # fmt: skip
    a.slash(2, _message(a, c.account, 2, (model1, result_digest(contributors, scores))), other)
    rewards = _rewards(capsys, url, task)
    theirs = _by_address(rewards)[c.account]
    assert theirs["status"] == "slashed"
    assert (theirs["earned"], theirs["claimed"], theirs["claimable"]) == (15 * TOKEN, 0, 0)
    assert rewards["forfeit"] == 15 * TOKEN
    assert rewards["total_claimable"] == 10 * TOKEN
    line = _one_line_error(capsys, "rewards", "--rpc", url, "--task", task, "--claim", "--key",
                           str(_key_file(tmp_path, c)))  # fmt: skip
    assert "slashed" in line
    assert "15 tokens" in line
    assert "forfeit" in line

    # Round 3 (after the last round: attestations only) by a and b finalizes round 2; its
    # result pays a and b 10 tokens each (c, slashed since, earns nothing).
    contributors2, scores2 = sort_result(accounts, [1, 1, 1])
    pair2 = (hashlib.sha256(b"model 2").digest(), result_digest(contributors2, scores2))
    a.submit(3, [_message(a, m.account, 3, pair2, update=False) for m in (a, b)], contributors2,
             scores2)  # fmt: skip
    rewards = _rewards(capsys, url, task)
    assert rewards["total_earned"] == 50 * TOKEN  # of the cap: 2 rounds x 30 tokens
    assert {m["address"]: m["claimable"] for m in rewards["members"]} == {
        a.account: 10 * TOKEN,
        b.account: 20 * TOKEN,
        c.account: 0,
    }

    # b claims with an encrypted keystore, its password in a private file; --json.
    keystore = tmp_path / "b.json"
    _KEYS[b.account].save_keystore(keystore, "s3cret", iterations=2**10)
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    password.chmod(0o600)
    code, out, err = _run(capsys, "rewards", "--rpc", url, "--task", task, "--claim", "--key",
                          str(keystore), "--password-file", str(password), "--json")  # fmt: skip
    assert code == 0, err
    claim = json.loads(out)
    assert claim["account"] == b.account
    assert claim["amount"] == claim["balance"] == 20 * TOKEN
    assert claim["tx"].startswith("0x")
    assert claim["block"] == b.head()

    code, out, err = _run(capsys, "rewards", "--rpc", url, "--task", task, "--claim", "--key",
                          str(_key_file(tmp_path, a)))  # fmt: skip
    assert code == 0, err
    assert out.startswith(f"claimed 10 tokens for {a.account}")
    assert "its balance is 15 tokens" in out

    rewards = _rewards(capsys, url, task)
    got = {m["address"]: (m["earned"], m["claimed"], m["claimable"]) for m in rewards["members"]}
    assert got == {
        a.account: (15 * TOKEN, 15 * TOKEN, 0),
        b.account: (20 * TOKEN, 20 * TOKEN, 0),
        c.account: (15 * TOKEN, 0, 0),
    }
    assert rewards["total_claimed"] == rewards["token_supply"] == 35 * TOKEN
    assert rewards["total_claimable"] == 0
    assert rewards["forfeit"] == 15 * TOKEN

    # --from-block: the Claimed events from that block on only (a's first claim left out).
    later = _by_address(_rewards(capsys, url, task, "--from-block", str(after_first_claim)))
    assert later[a.account]["claimed"] == 10 * TOKEN
    assert later[b.account]["claimed"] == 20 * TOKEN

    # The human form: one table, whole addresses, the totals and the cap.
    code, out, err = _run(capsys, "rewards", "--rpc", url, "--task", task)
    assert code == 0, err
    for word in ("address", "status", "earned", "claimed", "claimable", a.account, c.account,
                 "slashed"):  # fmt: skip
        assert word in out
    assert ("total: 50 earned of the cap 60 (2 x 30), 35 claimed, 0 claimable, 15 forfeit "
            "(slashed); token supply 35") in out  # fmt: skip


def test_bad_inputs_are_one_line_errors(
    anvil: AnvilProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed = _deploy(capsys, anvil.url, _task_toml(tmp_path))
    task, token = str(deployed["task"]), str(deployed["token"])
    url = anvil.url
    nobody = "0x" + "ab" * 20
    (member,) = _members(anvil, task, 1)
    key = _key_file(tmp_path, member)
    base = ["rewards", "--rpc", url, "--task", task]

    def err(*argv: str) -> str:
        return _one_line_error(capsys, *argv)

    assert "not an http(s) JSON-RPC URL" in err("rewards", "--rpc", "ftp://x", "--task", task)
    assert "not an address" in err("rewards", "--rpc", url, "--task", "0x1234")
    assert f"no Task contract at {to_checksum_address(nobody)}" in err(
        "rewards", "--rpc", url, "--task", nobody
    )
    assert "not a Task" in err("rewards", "--rpc", url, "--task", token)
    assert "not a Task" in err("rewards", "--rpc", url, "--task", token, "--claim", "--key",
                               str(key))  # fmt: skip
    with refusing_port() as port:
        assert "unavailable" in err("rewards", "--rpc", f"http://127.0.0.1:{port}", "--task",
                                    task)  # fmt: skip
    assert "from-block" in err(*base, "--from-block", "-1")
    assert "--claim sends a transaction" in err(*base, "--claim")
    assert "--key is for --claim" in err(*base, "--key", str(key))
    assert "give both" in err(*base, "--password-file", str(tmp_path / "pw"))
    assert "key file" in err(*base, "--claim", "--key", str(tmp_path / "missing.key"))
    readable = tmp_path / "readable.key"
    readable.write_text(key.read_text())
    readable.chmod(0o644)
    assert "chmod 600" in err(*base, "--claim", "--key", str(readable))
    keystore = tmp_path / "keystore.json"
    _KEYS[member.account].save_keystore(keystore, "s3cret", iterations=2**10)
    assert "needs its password" in err(*base, "--claim", "--key", str(keystore))
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    wrong.chmod(0o600)
    assert "keystore.json" in err(*base, "--claim", "--key", str(keystore), "--password-file",
                                  str(wrong))  # fmt: skip

    # Nothing earned: nothing sent (a member, and a key the chain never saw).
    assert f"nothing to claim for {member.account}" in err(*base, "--claim", "--key", str(key))
    stranger = tmp_path / "stranger.key"
    fresh = Identity.generate()
    fresh.save(stranger)
    assert f"nothing to claim for {fresh.address}" in err(*base, "--claim", "--key",
                                                          str(stranger))  # fmt: skip
