"""`fedledger keys new | import | address | fund`: key files for real deployments, written
private from the start and never over another, their secrets never on the command line, and
ETH sent to them on a real anvil."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedledger.cli import main
from fedledger.gossip.identity import Identity
from fedledger.keys import DEPLOYER_KEY_ENV, IMPORT_KEY_ENV, LIGHT_SCRYPT_N, PASSWORD_ENV
from fedledger.ledger.chain.anvil import AnvilProcess, find_anvil, install_anvil, start_anvil
from tests.support import refusing_port

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


@pytest.fixture(autouse=True)
def _no_secrets_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (PASSWORD_ENV, IMPORT_KEY_ENV, DEPLOYER_KEY_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def anvil_binary() -> Path:
    return find_anvil(ROOT) or install_anvil(ROOT)


@pytest.fixture(scope="module")
def dev_chain(anvil_binary: Path) -> Iterator[AnvilProcess]:
    with start_anvil(anvil=anvil_binary) as node:  # chain id 31337 on 127.0.0.1
        yield node


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _keys(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["keys", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def _printed_address(out: str) -> str:
    """stdout is the address alone, on one line."""
    assert ADDRESS.fullmatch(out.rstrip("\n")), out
    assert out.count("\n") == 1
    return out.strip()


def _fedledger(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in (PASSWORD_ENV, IMPORT_KEY_ENV)}
    return subprocess.run(
        [sys.executable, "-m", "fedledger", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, "COLUMNS": "200", **env},
    )


# --------------------------------------------------------------------------------------------
# keys new
# --------------------------------------------------------------------------------------------


def test_new_keystore_through_the_real_cli_with_the_password_in_the_environment(
    tmp_path: Path,
) -> None:
    out = tmp_path / "node.json"
    done = _fedledger("keys", "new", "--out", str(out), env={PASSWORD_ENV: "pass phrase"})
    assert done.returncode == 0, done.stderr
    address = _printed_address(done.stdout)
    assert "keys fund" in done.stderr  # what to do next
    assert "minimum stake plus gas" in done.stderr
    keystore = json.loads(out.read_text())
    assert keystore["version"] == 3
    assert keystore["crypto"]["kdf"] == "scrypt"
    assert keystore["crypto"]["kdfparams"]["n"] == 2**18  # eth-account's default strength
    assert "0x" + keystore["address"].lower() == address.lower()
    assert Identity.load(out, password="pass phrase").address == address
    if os.name == "posix":
        assert out.stat().st_mode & 0o777 == 0o600

    wrong = _fedledger("keys", "address", str(out), env={PASSWORD_ENV: "not it"})
    assert wrong.returncode == 2
    assert wrong.stdout == ""
    assert wrong.stderr.splitlines() == [f"error: key file {str(out)!r}: wrong password"]


def test_new_keystore_with_a_password_file_matches_keys_address_and_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = _private(tmp_path / "pw", "correct horse\nignored\n")
    out = tmp_path / "k.json"
    code, stdout, err = _keys(
        capsys, "new", "--out", str(out), "--password-file", str(password), "--light-kdf"
    )
    assert code == 0, err
    address = _printed_address(stdout)
    assert json.loads(out.read_text())["crypto"]["kdfparams"]["n"] == LIGHT_SCRYPT_N
    assert Identity.load(out, password="correct horse").address == address

    code, stdout, err = _keys(capsys, "address", str(out), "--password-file", str(password))
    assert code == 0, err
    assert _printed_address(stdout) == address

    # Another call: another random key.
    code, stdout, err = _keys(capsys, "new", "--out", str(tmp_path / "k2.json"),
                              "--password-file", str(password), "--light-kdf")  # fmt: skip
    assert code == 0, err
    assert _printed_address(stdout) != address


def test_new_plain_writes_hex_for_development_chains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "ignored for --plain")
    out = tmp_path / "dev.key"
    code, stdout, err = _keys(capsys, "new", "--out", str(out), "--plain")
    assert code == 0, err
    address = _printed_address(stdout)
    assert "development chains only" in err
    assert re.fullmatch(r"0x[0-9a-f]{64}\n", out.read_text())
    assert Identity.load(out).address == address
    code, stdout, _ = _keys(capsys, "address", str(out))
    assert code == 0
    assert _printed_address(stdout) == address


@posix_only
def test_new_key_files_are_0600_whatever_the_umask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = _private(tmp_path / "pw", "pw\n")
    old = os.umask(0)  # a umask that would leave a plain open() world-readable
    try:
        assert _keys(capsys, "new", "--out", str(tmp_path / "a.key"), "--plain")[0] == 0
        assert _keys(capsys, "new", "--out", str(tmp_path / "b.json"), "--password-file",
                     str(password), "--light-kdf")[0] == 0  # fmt: skip
    finally:
        os.umask(old)
    for name in ("a.key", "b.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key", "b.json", "pw"]  # no temp


@pytest.mark.parametrize("plain", [True, False])
def test_new_never_overwrites_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, plain: bool
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    out = _private(tmp_path / "taken", "someone's key\n")
    kind = "--plain" if plain else "--light-kdf"
    code, stdout, err = _keys(capsys, "new", "--out", str(out), kind)
    assert f"{str(out)!r} already exists" in _one_line_error(code, err)
    assert stdout == ""
    assert out.read_text() == "someone's key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_new_without_a_password_says_how_to_give_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "k.json"
    code, stdout, err = _keys(capsys, "new", "--out", str(out))
    line = _one_line_error(code, err)
    for hint in ("--password-file", PASSWORD_ENV, "--plain"):
        assert hint in line
    assert stdout == ""
    assert not out.exists()


@posix_only
def test_new_refuses_a_password_file_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = tmp_path / "pw"
    password.write_text("pw\n")
    password.chmod(0o644)
    code, _, err = _keys(capsys, "new", "--out", str(tmp_path / "k.json"), "--password-file",
                         str(password))  # fmt: skip
    assert "chmod 600" in _one_line_error(code, err)
    assert not (tmp_path / "k.json").exists()


def test_new_plain_with_a_password_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = _private(tmp_path / "pw", "pw\n")
    code, _, err = _keys(capsys, "new", "--out", str(tmp_path / "k"), "--plain",
                         "--password-file", str(password))  # fmt: skip
    assert "--plain" in _one_line_error(code, err)
    assert not (tmp_path / "k").exists()


# --------------------------------------------------------------------------------------------
# keys import
# --------------------------------------------------------------------------------------------

ALICE = Identity.from_seed(11, 0)
ALICE_HEX = "0x" + ALICE.private_key.hex()


def test_import_from_a_private_hex_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hex_file = _private(tmp_path / "alice.hex", ALICE_HEX + "\n")
    password = _private(tmp_path / "pw", "pw\n")
    out = tmp_path / "alice.json"
    code, stdout, err = _keys(capsys, "import", "--out", str(out), "--hex-file", str(hex_file),
                              "--password-file", str(password), "--light-kdf")  # fmt: skip
    assert code == 0, err
    assert _printed_address(stdout) == ALICE.address
    assert json.loads(out.read_text())["version"] == 3  # an encrypted keystore, not hex
    assert ALICE.private_key.hex() not in out.read_text()
    assert Identity.load(out, password="pw") == ALICE
    if os.name == "posix":
        assert out.stat().st_mode & 0o777 == 0o600
    # Not over an existing file.
    code, _, err = _keys(capsys, "import", "--out", str(out), "--hex-file", str(hex_file),
                         "--password-file", str(password))  # fmt: skip
    assert "already exists" in _one_line_error(code, err)


def test_import_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(IMPORT_KEY_ENV, ALICE_HEX)
    monkeypatch.setenv(PASSWORD_ENV, "from env")
    out = tmp_path / "alice.json"
    code, stdout, err = _keys(capsys, "import", "--out", str(out), "--light-kdf")
    assert code == 0, err
    assert _printed_address(stdout) == ALICE.address
    assert Identity.load(out, password="from env") == ALICE

    # The key once only: the environment or a file.
    hex_file = _private(tmp_path / "alice.hex", ALICE_HEX)
    code, _, err = _keys(capsys, "import", "--out", str(tmp_path / "b.json"), "--hex-file",
                         str(hex_file))  # fmt: skip
    assert "not both" in _one_line_error(code, err)
    # A malformed key is refused without being quoted.
    monkeypatch.setenv(IMPORT_KEY_ENV, ALICE_HEX[:-2] + "zz")
    code, _, err = _keys(capsys, "import", "--out", str(tmp_path / "c.json"))
    line = _one_line_error(code, err)
    assert IMPORT_KEY_ENV in line
    assert ALICE_HEX[4:-2] not in line
    assert not (tmp_path / "b.json").exists()
    assert not (tmp_path / "c.json").exists()


@posix_only
def test_import_refuses_a_hex_file_the_group_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    hex_file = tmp_path / "alice.hex"
    hex_file.write_text(ALICE_HEX)
    hex_file.chmod(0o640)
    code, stdout, err = _keys(capsys, "import", "--out", str(tmp_path / "a.json"), "--hex-file",
                              str(hex_file))  # fmt: skip
    line = _one_line_error(code, err)
    assert "accessible by group or others" in line
    assert f"chmod 600 {hex_file}" in line
    assert stdout == ""
    assert not (tmp_path / "a.json").exists()


def test_import_needs_a_key_and_a_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    code, _, err = _keys(capsys, "import", "--out", str(tmp_path / "a.json"))
    line = _one_line_error(code, err)
    assert "--hex-file" in line
    assert IMPORT_KEY_ENV in line
    monkeypatch.delenv(PASSWORD_ENV)
    monkeypatch.setenv(IMPORT_KEY_ENV, ALICE_HEX)
    code, _, err = _keys(capsys, "import", "--out", str(tmp_path / "a.json"))
    assert "--password-file" in _one_line_error(code, err)
    assert not (tmp_path / "a.json").exists()
    # An import is a keystore: there is no --plain.
    with pytest.raises(SystemExit):
        main(["keys", "import", "--out", str(tmp_path / "a.json"), "--plain"])


# --------------------------------------------------------------------------------------------
# keys address
# --------------------------------------------------------------------------------------------


def test_address_with_a_wrong_password_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "k.json"
    ALICE.save_keystore(out, "right", iterations=LIGHT_SCRYPT_N)
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    code, stdout, err = _keys(capsys, "address", str(out))
    assert _one_line_error(code, err) == f"error: key file {str(out)!r}: wrong password"
    assert stdout == ""
    wrong = _private(tmp_path / "pw", "also wrong\n")
    code, _, err = _keys(capsys, "address", str(out), "--password-file", str(wrong))
    assert _one_line_error(code, err) == f"error: key file {str(out)!r}: wrong password"
    monkeypatch.delenv(PASSWORD_ENV)
    code, _, err = _keys(capsys, "address", str(out))
    assert "needs its password" in _one_line_error(code, err)
    code, _, err = _keys(capsys, "address", str(tmp_path / "missing.json"))
    assert "missing.json" in _one_line_error(code, err)


def test_address_with_rpc_prints_the_balance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dev_chain: AnvilProcess
) -> None:
    rich = tmp_path / "rich.key"
    Identity.from_hex(dev_chain.accounts()[9].key.hex()).save(rich)  # 10000 ETH on anvil
    code, stdout, err = _keys(capsys, "address", str(rich), "--rpc", dev_chain.url)
    assert code == 0, err
    assert stdout.splitlines() == [dev_chain.accounts()[9].address, "10000 ETH"]
    code, _, err = _keys(capsys, "address", str(rich), "--rpc", "ftp://example.org")
    assert "not an http(s) JSON-RPC URL" in _one_line_error(code, err)


# --------------------------------------------------------------------------------------------
# keys fund
# --------------------------------------------------------------------------------------------


def _balance_line(capsys: pytest.CaptureFixture[str], key: Path, url: str) -> str:
    code, stdout, err = _keys(capsys, "address", str(key), "--rpc", url)
    assert code == 0, err
    return stdout.splitlines()[1]


def test_fund_new_keys_on_a_development_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dev_chain: AnvilProcess
) -> None:
    files = [tmp_path / "a.key", tmp_path / "b.key"]
    addresses = []
    for path in files:
        code, stdout, err = _keys(capsys, "new", "--out", str(path), "--plain")
        assert code == 0, err
        addresses.append(_printed_address(stdout))
        assert _balance_line(capsys, path, dev_chain.url) == "0 ETH"
    # Lower case is an address too (no checksum to check).
    code, stdout, err = _keys(capsys, "fund", addresses[0], addresses[1].lower(), "--rpc",
                              dev_chain.url, "--eth", "1.25")  # fmt: skip
    assert code == 0, err
    lines = stdout.splitlines()
    assert len(lines) == 2
    for line, address in zip(lines, addresses, strict=True):
        assert re.fullmatch(rf"{address} 1\.25 ETH tx 0x[0-9a-f]{{64}} block \d+", line), line
    assert "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266" in err  # anvil's first account paid
    for path in files:
        assert _balance_line(capsys, path, dev_chain.url) == "1.25 ETH"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0x1234", "--eth", "1"], "not an address"),
        (["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92267", "--eth", "1"], "checksum"),
        (["0x" + "00" * 20, "--eth", "1"], "zero address"),
        (["0x" + "ab" * 20, "--eth", "0"], "positive"),
        (["0x" + "ab" * 20, "--eth", "-2"], "positive"),
        (["0x" + "ab" * 20, "--eth", "nan"], "positive"),
        (["0x" + "ab" * 20, "--eth", "inf"], "positive"),
        (["0x" + "ab" * 20, "--eth", "1e-19"], "18 decimals"),
        (["0x" + "ab" * 20, "--eth", "lots"], "not an amount"),
        (["0x" + "ab" * 20, "0x" + "AB" * 20, "--eth", "1"], "more than once"),
    ],
)
def test_fund_checks_addresses_and_amounts_first(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with refusing_port() as port:  # checked before any chain is contacted
        code, stdout, err = _keys(capsys, "fund", *args, "--rpc", f"http://127.0.0.1:{port}")
    assert message in _one_line_error(code, err)
    assert stdout == ""


def test_fund_elsewhere_needs_the_deployers_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    anvil_binary: Path,
) -> None:
    target = Identity.generate().address
    with start_anvil(anvil=anvil_binary, chain_id=8453) as node:  # not a development chain
        code, stdout, err = _keys(capsys, "fund", target, "--rpc", node.url, "--eth", "2")
        line = _one_line_error(code, err)
        assert "not a local development chain" in line
        assert "--from-keyfile" in line
        assert DEPLOYER_KEY_ENV in line
        assert stdout == ""
        assert node.chain().balance(target) == 0

        # The deployer's key from a keystore, its password from a file.
        funder = Identity.from_hex(node.accounts()[1].key.hex())
        keystore = tmp_path / "funder.json"
        funder.save_keystore(keystore, "pw", iterations=LIGHT_SCRYPT_N)
        password = _private(tmp_path / "pw", "pw\n")
        code, stdout, err = _keys(capsys, "fund", target, "--rpc", node.url, "--eth", "2",
                                  "--from-keyfile", str(keystore), "--password-file",
                                  str(password))  # fmt: skip
        assert code == 0, err
        assert stdout.startswith(f"{target} 2 ETH tx 0x")
        assert funder.address in err
        assert node.chain().balance(target) == 2 * 10**18

        # From $FEDLEDGER_DEPLOYER_KEY; not together with --from-keyfile.
        monkeypatch.setenv(DEPLOYER_KEY_ENV, node.accounts()[2].key.hex())
        code, _, err = _keys(capsys, "fund", target, "--rpc", node.url, "--eth", "0.5")
        assert code == 0, err
        assert node.chain().balance(target) == 25 * 10**17
        code, _, err = _keys(capsys, "fund", target, "--rpc", node.url, "--eth", "1",
                             "--from-keyfile", str(keystore), "--password-file",
                             str(password))  # fmt: skip
        assert "not both" in _one_line_error(code, err)

        # A funder without the ETH: refused before anything is sent.
        poor = Identity.generate()
        monkeypatch.setenv(DEPLOYER_KEY_ENV, "0x" + poor.private_key.hex())
        code, stdout, err = _keys(capsys, "fund", target, "--rpc", node.url, "--eth", "1")
        line = _one_line_error(code, err)
        assert f"{poor.address} has 0 ETH" in line
        assert stdout == ""
        assert node.chain().balance(target) == 25 * 10**17


def test_fund_an_unreachable_chain_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with refusing_port() as port:
        code, _, err = _keys(capsys, "fund", "0x" + "ab" * 20, "--rpc",
                             f"http://127.0.0.1:{port}", "--eth", "1")  # fmt: skip
    assert f"127.0.0.1:{port}" in _one_line_error(code, err)
