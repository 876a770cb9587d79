"""Keys through the command line: seeded keys only where nothing is at stake, encrypted
keystores with the password from the environment, the deployer's key never on the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from fedledger.cli import main
from fedledger.gossip.identity import Identity
from fedledger.keys import DEPLOYER_KEY_ENV, PASSWORD_ENV, dev_deployer_key
from fedledger.ledger.chain.anvil import find_anvil, install_anvil, start_anvil
from fedledger.rundir import LEDGER_FILE

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"
CHEAP = 2**10  # scrypt n for tests


def _balance(url: str, address: str) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance",
                       "params": [address, "latest"]}).encode()  # fmt: skip
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.loads(response.read())["result"], 16)


def _node_keys(out: Path, n: int) -> list[Identity]:
    return [Identity.load(out / f"node-{i}" / "node.key") for i in range(n)]


@pytest.fixture(scope="module")
def anvil_binary() -> Path:
    return find_anvil(ROOT) or install_anvil(ROOT)


def _run(out: Path, url: str, *extra: str) -> int:
    # --timeout 1: the run stops (status 2) once the task is deployed, the members funded and
    # their key files written: all this test looks at.
    return main(["run", "--config", str(DIGITS), "--out", str(out), "--nodes", "2", "--rounds",
                 "1", "--chain", url, "--timeout", "1", "--no-audit", *extra])  # fmt: skip


def test_dev_chain_gets_seeded_keys_and_anvils_deployer(
    tmp_path: Path,
    anvil_binary: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(DEPLOYER_KEY_ENV, raising=False)
    with start_anvil(anvil=anvil_binary) as node:  # chain id 31337 on 127.0.0.1
        assert _run(tmp_path, node.url) == 2
        assert "did not finish within 1.0 s" in capsys.readouterr().err
        keys = _node_keys(tmp_path, 2)
        assert keys == [Identity.from_seed(0, i) for i in range(2)]  # reproducible
        deployment = json.loads((tmp_path / LEDGER_FILE).read_text())
        assert deployment["chain_id"] == 31337
        assert deployment["owner"] == Identity._from_key(dev_deployer_key()).address


def test_other_chains_get_random_keys_and_need_a_deployer_key(
    tmp_path: Path,
    anvil_binary: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(DEPLOYER_KEY_ENV, raising=False)
    deployer = Identity._from_key(dev_deployer_key())  # funded on any anvil
    with start_anvil(anvil=anvil_binary, chain_id=8453) as node:  # not a development chain id
        # No deployer key: refused before anything is deployed or written.
        assert _run(tmp_path / "a", node.url) == 2
        err = capsys.readouterr().err
        assert "not a local development chain" in err
        assert DEPLOYER_KEY_ENV in err
        assert not (tmp_path / "a" / LEDGER_FILE).exists()

        # The deployer's key from an encrypted keystore, its password from the environment.
        keystore = tmp_path / "deployer.json"
        deployer.save_keystore(keystore, "s3cret", iterations=CHEAP)
        monkeypatch.setenv(PASSWORD_ENV, "s3cret")
        assert _run(tmp_path / "b", node.url, "--deployer-keyfile", str(keystore)) == 2
        assert "did not finish within 1.0 s" in capsys.readouterr().err
        b = _node_keys(tmp_path / "b", 2)
        assert json.loads((tmp_path / "b" / LEDGER_FILE).read_text())["owner"] == deployer.address

        # The same from $FEDLEDGER_DEPLOYER_KEY: new random keys again.
        monkeypatch.setenv(DEPLOYER_KEY_ENV, "0x" + deployer.private_key.hex())
        assert _run(tmp_path / "c", node.url) == 2
        assert "did not finish within 1.0 s" in capsys.readouterr().err
        c = _node_keys(tmp_path / "c", 2)

        seeded = {Identity.from_seed(0, i) for i in range(2)}
        assert not seeded & set(b + c)  # nobody holding task.toml can sign for these nodes
        assert len({k.address for k in b + c}) == 4
        for key in b + c:  # each was funded with stake and gas by the deployer
            assert _balance(node.url, key.address) > 0
        for i in range(2):
            assert (tmp_path / "b" / f"node-{i}" / "node.key").stat().st_mode & 0o077 == 0

        # The keystore with a wrong password: one line, nothing deployed.
        monkeypatch.delenv(DEPLOYER_KEY_ENV)
        monkeypatch.setenv(PASSWORD_ENV, "wrong")
        capsys.readouterr()
        assert _run(tmp_path / "d", node.url, "--deployer-keyfile", str(keystore)) == 2
        assert (
            capsys.readouterr().err.strip() == f"error: key file {str(keystore)!r}: wrong password"
        )


def test_deployer_keyfile_needs_a_chain_url(tmp_path: Path) -> None:
    Identity.from_seed(1, 1).save(tmp_path / "d.key")
    code = main(["run", "--config", str(DIGITS), "--out", str(tmp_path), "--chain", "embedded",
                 "--deployer-keyfile", str(tmp_path / "d.key")])  # fmt: skip
    assert code == 2


ONE_NODE_TASK = """
[task]
name = "one"
seed = 3
rounds = 1
nodes = 1
[data]
dataset = "breast_cancer"
partition = "iid"
[model]
name = "logreg"
"""


def test_node_with_a_keystore_and_the_password_in_the_environment(tmp_path: Path) -> None:
    (tmp_path / "task.toml").write_text(ONE_NODE_TASK)
    (tmp_path / "node.toml").write_text(
        'task = "task.toml"\nindex = 0\nkey_file = "node.json"\nstate_dir = "state"\n'
        'listen = "127.0.0.1:0"\nlinger = 0.0\n'
    )
    me = Identity.generate()
    me.save_keystore(tmp_path / "node.json", "pass phrase", iterations=CHEAP)

    def node(password: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
        if password is not None:
            env[PASSWORD_ENV] = password
        return subprocess.run(
            [sys.executable, "-m", "fedledger", "node", "--config", str(tmp_path / "node.toml")],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip

    wrong = node("not it")
    assert wrong.returncode == 2
    assert (
        wrong.stderr.strip() == f"error: key file {str(tmp_path / 'node.json')!r}: wrong password"
    )
    missing = node(None)
    assert missing.returncode == 2
    assert "needs its password" in missing.stderr
    assert "Traceback" not in wrong.stderr + missing.stderr

    done = node("pass phrase")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "state" / "summary.json").read_text())
    assert summary["address"] == me.address


def test_node_keystore_password_from_a_file(tmp_path: Path) -> None:
    """--password-file: checked (mode 0600) before the node starts."""
    (tmp_path / "task.toml").write_text(ONE_NODE_TASK)
    (tmp_path / "node.toml").write_text(
        'task = "task.toml"\nindex = 0\nkey_file = "node.json"\nstate_dir = "state"\n'
    )
    Identity.generate().save_keystore(tmp_path / "node.json", "right", iterations=CHEAP)
    password = tmp_path / "password"
    password.write_text("wrong\n")
    password.chmod(0o600)
    args = ["node", "--config", str(tmp_path / "node.toml"), "--password-file", str(password)]
    assert main(args) == 2
    if os.name == "posix":
        password.chmod(0o644)
        assert main(args) == 2
