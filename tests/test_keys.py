"""fedledger.keys: which keys a run uses, keystore passwords, the deployer's key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedledger.errors import ConfigError
from fedledger.gossip.identity import Identity
from fedledger.keys import (
    DEPLOYER_KEY_ENV,
    PASSWORD_ENV,
    deployer_identity,
    dev_deployer_key,
    is_dev_chain,
    key_password,
    load_key,
    node_identities,
)

ALICE = Identity.from_seed(5, 0)
CHEAP = 2**10  # scrypt n for tests
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


@pytest.mark.parametrize(
    ("chain_id", "url", "dev"),
    [
        (31337, "http://127.0.0.1:8545", True),  # anvil, hardhat
        (1337, "http://localhost:8545", True),  # ganache, geth --dev
        (31337, "http://[::1]:8545", True),
        (31337, "http://127.0.0.2:8545", True),  # all of 127/8 is loopback
        (1, "http://127.0.0.1:8545", False),  # a mainnet fork keeps mainnet's id
        (11155111, "http://127.0.0.1:8545", False),  # sepolia
        (8453, "http://localhost:8545", False),
        (1337, "http://10.0.0.5:8545", False),  # a private network that happens to use 1337
        (31337, "https://rpc.example.org", False),
        (31337, "http://[::1", False),
    ],
)
def test_dev_chain_is_a_dev_chain_id_on_loopback(chain_id: int, url: str, dev: bool) -> None:
    assert is_dev_chain(chain_id, url) is dev


def test_seeded_identities_are_the_public_simulation_keys_random_ones_are_fresh() -> None:
    seeded = node_identities(9, 4, seeded=True)
    assert seeded == [Identity.from_seed(9, i) for i in range(4)]
    assert node_identities(9, 4, seeded=True) == seeded
    random_ = node_identities(9, 4, seeded=False)
    again = node_identities(9, 4, seeded=False)
    assert len({i.address for i in random_ + again + seeded}) == 12


def test_dev_deployer_key_is_anvils_first_account() -> None:
    assert Identity._from_key(dev_deployer_key()).address == (
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    )


def test_password_from_file_first_line_else_environment(tmp_path: Path) -> None:
    assert key_password(environ={}) is None
    assert key_password(environ={PASSWORD_ENV: ""}) is None
    assert key_password(environ={PASSWORD_ENV: "from env"}) == "from env"
    path = tmp_path / "pw"
    path.write_text("  spaces kept  \nsecond line ignored\n")
    path.chmod(0o600)
    assert key_password(path, environ={PASSWORD_ENV: "from env"}) == "  spaces kept  "
    path.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        key_password(path, environ={})
    with pytest.raises(ConfigError, match="cannot read password file"):
        key_password(tmp_path / "missing", environ={})


@posix_only
def test_password_files_others_can_read_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("secret\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"password file .*chmod 600"):
        key_password(path, environ={})


def test_load_key_reads_hex_and_keystores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ALICE.save(tmp_path / "a.key")
    ALICE.save_keystore(tmp_path / "a.json", "pw", iterations=CHEAP)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert load_key(tmp_path / "a.key") == ALICE
    with pytest.raises(ConfigError, match="needs its password"):
        load_key(tmp_path / "a.json")
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    assert load_key(tmp_path / "a.json") == ALICE
    (tmp_path / "pw").write_text("wrong\n")
    (tmp_path / "pw").chmod(0o600)
    with pytest.raises(ConfigError, match="wrong password"):  # the file wins over the env
        load_key(tmp_path / "a.json", password_file=tmp_path / "pw")


def test_deployer_from_environment_or_key_file(tmp_path: Path) -> None:
    hex_key = "0x" + ALICE.private_key.hex()
    assert deployer_identity(environ={}) is None
    assert deployer_identity(environ={DEPLOYER_KEY_ENV: hex_key}) == ALICE
    ALICE.save_keystore(tmp_path / "d.json", "pw", iterations=CHEAP)
    assert deployer_identity(keyfile=tmp_path / "d.json", environ={PASSWORD_ENV: "pw"}) == ALICE
    with pytest.raises(ConfigError, match="not both"):
        deployer_identity(keyfile=tmp_path / "d.json", environ={DEPLOYER_KEY_ENV: hex_key})
    with pytest.raises(ConfigError, match=DEPLOYER_KEY_ENV) as info:
        deployer_identity(environ={DEPLOYER_KEY_ENV: hex_key[:-2] + "zz"})
    assert hex_key[4:] not in str(info.value)  # the key is never quoted


def test_a_node_without_a_key_file_gets_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedledger.run.node import load_identity

    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    plain = load_identity(tmp_path / "a" / "node.key")
    assert (tmp_path / "a" / "node.key").read_text().startswith("0x")
    assert load_identity(tmp_path / "a" / "node.key") == plain
    # With a password set, the new key is written as an encrypted keystore.
    password = tmp_path / "pw"
    password.write_text("pw\n")
    password.chmod(0o600)
    path = tmp_path / "b" / "node.json"
    sealed = load_identity(path, password_file=password)
    assert path.read_text().startswith("{")
    assert sealed.private_key.hex() not in path.read_text()
    assert Identity.load(path, password="pw") == sealed
    assert sealed not in (plain, ALICE)
