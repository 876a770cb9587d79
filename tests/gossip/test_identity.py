"""Node identities: keys, addresses, Ethereum-compatible signatures."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import defunct_hash_message, encode_defunct
from eth_keys.backends.coincurve import CoinCurveECCBackend
from eth_keys.main import KeyAPI
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from fedledger.errors import ConfigError, MessageError
from fedledger.gossip.identity import (
    SIGNATURE_BYTES,
    Identity,
    checksum_address,
    is_checksum_address,
    recover_signer,
    signing_hash,
)

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F  # the field prime
ALICE = Identity.from_seed(7, 0)
BOB = Identity.from_seed(7, 1)
FAST = settings(max_examples=40, deadline=None)


def _rsv(signature: bytes) -> tuple[int, int, int]:
    return (
        int.from_bytes(signature[:32], "big"),
        int.from_bytes(signature[32:64], "big"),
        signature[64],
    )


def _sig(r: int, s: int, v: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((v,))


# -- keys and addresses ----------------------------------------------------------------------


def test_from_seed_is_deterministic_and_documented() -> None:
    a, b = Identity.from_seed(42, 3), Identity.from_seed(42, 3)
    assert a == b
    assert a.private_key == keccak(text="fedledger-sim/42/3")
    assert a.address == Account.from_key(a.private_key).address


def test_from_seed_differs_by_index_and_seed() -> None:
    addresses = {Identity.from_seed(seed, i).address for seed in range(3) for i in range(20)}
    assert len(addresses) == 60


def test_generate_gives_fresh_valid_keys() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert a.private_key != b.private_key
    for ident in (a, b):
        assert len(ident.private_key) == 32
        assert ident.address == Account.from_key(ident.private_key).address


def test_from_hex_accepts_prefix_case_and_space() -> None:
    key = ALICE.private_key.hex()
    for text in (key, "0x" + key, "0X" + key.upper(), f"  {key}\n"):
        assert Identity.from_hex(text) == ALICE


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0x",
        "12" * 31,
        "12" * 33,
        "zz" * 32,
        "00" * 32,  # zero is not a key
        f"{N:064x}",  # nor is the group order
        "ff" * 32,
    ],
)
def test_from_hex_rejects_bad_keys_without_quoting_them(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        Identity.from_hex(text)
    if len(text) > 8:
        assert text not in str(info.value)


def test_constructor_checks_address_belongs_to_key() -> None:
    assert Identity(ALICE.private_key, ALICE.address) == ALICE
    with pytest.raises(ConfigError, match="does not belong"):
        Identity(ALICE.private_key, BOB.address)
    with pytest.raises(ConfigError):
        Identity(ALICE.private_key, ALICE.address.lower())
    with pytest.raises(ConfigError):
        Identity(b"\x01" * 31, ALICE.address)


def test_repr_hides_the_private_key() -> None:
    key_hex = ALICE.private_key.hex()
    for text in (repr(ALICE), str(ALICE), f"{ALICE}", f"{ALICE!r}", repr([ALICE])):
        assert key_hex not in text
        assert key_hex.upper() not in text
        assert repr(ALICE.private_key) not in text
        assert ALICE.address in text


def test_save_load_round_trip_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    ALICE.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Identity.load(path) == ALICE
    assert Identity.load(str(path)) == ALICE
    # Overwriting a file that others could read leaves it private.
    path.write_text("junk")
    path.chmod(0o644)
    BOB.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Identity.load(path) == BOB
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temporary left behind


def test_load_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Identity.load(tmp_path / "missing.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(ConfigError, match=r"bad\.key.*64 hex digits"):
        Identity.load(bad)
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe")
    binary.chmod(0o600)
    with pytest.raises(ConfigError, match="neither hex nor a keystore"):
        Identity.load(binary)
    with pytest.raises(ConfigError, match=r"cannot read key file.*directory"):
        Identity.load(tmp_path)


# -- key files: permissions and encrypted keystores --------------------------------------------

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
CHEAP = 2**10  # scrypt n: fast tests; real keystores keep eth-account's 2**18


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601, 0o620])
def test_key_files_others_can_access_are_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    ALICE.save(path)
    path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        Identity.load(path)
    message = str(info.value)
    assert str(path) in message
    assert f"chmod 600 {path}" in message
    assert f"{mode:04o}" in message
    assert "\n" not in message
    path.chmod(0o600)
    assert Identity.load(path) == ALICE
    path.chmod(0o400)  # stricter is fine
    assert Identity.load(path) == ALICE


@posix_only
def test_keystores_others_can_access_are_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    ALICE.save_keystore(path, "pw", iterations=CHEAP)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Identity.load(path, password="pw")


def test_keystore_round_trip_is_eth_account_format(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    ALICE.save_keystore(path, "correct horse", iterations=CHEAP)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    keystore = json.loads(path.read_text())
    assert keystore["version"] == 3
    assert keystore["crypto"]["kdf"] == "scrypt"
    assert ALICE.private_key.hex() not in path.read_text()
    # eth-account (and so geth, MetaMask, ...) reads it, and fedledger reads it back.
    assert bytes(Account.decrypt(keystore, "correct horse")) == ALICE.private_key
    assert Identity.load(path, password="correct horse") == ALICE
    # pbkdf2 keystores, and ones written by eth-account itself, load as well.
    other = tmp_path / "bob.json"
    other.write_text(json.dumps(Account.encrypt(BOB.private_key, "pw", kdf="pbkdf2", iterations=2)))
    other.chmod(0o600)
    assert Identity.load(other, password="pw") == BOB
    # A hex key file ignores a password.
    ALICE.save(tmp_path / "alice.key")
    assert Identity.load(tmp_path / "alice.key", password="anything") == ALICE
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_keystore_wrong_or_missing_password_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "node.json"
    ALICE.save_keystore(path, "right", iterations=CHEAP)
    with pytest.raises(ConfigError) as info:
        Identity.load(path, password="wrong")
    assert str(info.value) == f"key file {str(path)!r}: wrong password"
    assert isinstance(info.value.__cause__, ValueError)  # eth-keyfile's, kept as the cause
    with pytest.raises(ConfigError, match="encrypted keystore and needs its password"):
        Identity.load(path)
    with pytest.raises(ConfigError, match="non-empty password"):
        ALICE.save_keystore(path, "")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{", "not valid keystore JSON"),
        ("[1]", "not a keystore v3"),
        ('{"version": 3}', "no crypto.kdfparams"),
        ('{"version": 4, "crypto": {}}', "not a keystore v3"),
        ("scrypt-huge", "excessive KDF parameters"),
        ("bad-kdf", "not a valid keystore"),
        ("bad-address", "does not match its address"),
        ("no-cipher", "not a valid keystore"),
    ],
)
def test_malformed_keystores_are_config_errors(tmp_path: Path, content: str, reason: str) -> None:
    keystore = Account.encrypt(ALICE.private_key, "pw", iterations=2**4)
    if content == "scrypt-huge":
        keystore["crypto"]["kdfparams"]["n"] = 2**40
        content = json.dumps(keystore)
    elif content == "bad-kdf":
        keystore["crypto"]["kdf"] = "argon2"
        content = json.dumps(keystore)
    elif content == "bad-address":
        keystore["address"] = BOB.address[2:].lower()
        content = json.dumps(keystore)
    elif content == "no-cipher":
        del keystore["crypto"]["ciphertext"]
        content = json.dumps(keystore)
    path = tmp_path / "node.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=reason) as info:
        Identity.load(path, password="pw")
    assert str(path) in str(info.value)


@FAST
@given(st.binary(min_size=20, max_size=20))
def test_checksum_address_matches_eth_utils(raw: bytes) -> None:
    address = checksum_address(raw)
    assert address == to_checksum_address(raw)
    assert is_checksum_address(address)
    if any(c.isalpha() for c in address[2:]):
        assert not is_checksum_address(address.lower()) or address == address.lower()
        assert not is_checksum_address("0x" + address[2:].upper()) or address[2:].isupper()


def test_is_checksum_address_rejects_other_forms() -> None:
    address = ALICE.address
    assert is_checksum_address(address)
    assert not is_checksum_address(address.lower())
    assert not is_checksum_address(address[2:])
    assert not is_checksum_address("0X" + address[2:])
    assert not is_checksum_address(address + "0")
    assert not is_checksum_address(address[:-1])
    assert not is_checksum_address(address[:-1] + "g")
    assert not is_checksum_address(address.encode())
    assert not is_checksum_address(None)
    assert not is_checksum_address(int(address, 16))
    with pytest.raises(ValueError, match="20 bytes"):
        checksum_address(b"\x00" * 19)


# -- signatures ------------------------------------------------------------------------------


def test_signing_hash_is_eip191_personal_sign_of_the_keccak() -> None:
    payload = b'{"hello":"world"}'
    expected = keccak(b"\x19Ethereum Signed Message:\n32" + keccak(payload))
    assert signing_hash(payload) == expected
    assert signing_hash(payload) == bytes(defunct_hash_message(primitive=keccak(payload)))


@FAST
@given(st.binary(max_size=512), st.integers(0, 10**6))
def test_sign_recover_round_trip(payload: bytes, index: int) -> None:
    ident = Identity.from_seed(1, index)
    signature = ident.sign(payload)
    assert len(signature) == SIGNATURE_BYTES
    r, s, v = _rsv(signature)
    assert v in (27, 28)
    assert 0 < r < N
    assert 0 < s <= N // 2  # low s (EIP-2)
    assert recover_signer(payload, signature) == ident.address
    assert recover_signer(bytearray(payload), bytearray(signature)) == ident.address
    # The same check through eth_keys' ecrecover on the digest, as a contract would do it.
    keys = KeyAPI(backend=CoinCurveECCBackend())
    vrs = keys.Signature(vrs=(v - 27, r, s))
    recovered = keys.ecdsa_recover(signing_hash(payload), vrs)
    assert recovered.to_checksum_address() == ident.address


def test_signing_is_deterministic_rfc6979() -> None:
    assert ALICE.sign(b"x") == ALICE.sign(b"x")
    assert ALICE.sign(b"x") != ALICE.sign(b"y")
    assert ALICE.sign(b"x") != BOB.sign(b"x")


def test_other_payload_recovers_another_address() -> None:
    signature = ALICE.sign(b"payload")
    assert recover_signer(b"payload!", signature) != ALICE.address


@FAST
@given(st.binary(max_size=256), st.integers(0, 1000))
def test_identity_signatures_are_accepted_by_eth_account(payload: bytes, index: int) -> None:
    ident = Identity.from_seed(2, index)
    signature = ident.sign(payload)
    message = encode_defunct(primitive=keccak(payload))
    assert Account.recover_message(message, signature=signature) == ident.address
    # eth_account signs the same bytes (both use RFC 6979 nonces and low s).
    assert bytes(Account.sign_message(message, ident.private_key).signature) == signature


@FAST
@given(st.binary(max_size=256), st.integers(0, 1000))
def test_eth_account_signatures_are_accepted_by_recover_signer(payload: bytes, index: int) -> None:
    account = Account.from_key(Identity.from_seed(3, index).private_key)
    signed = Account.sign_message(encode_defunct(primitive=keccak(payload)), account.key)
    assert recover_signer(payload, bytes(signed.signature)) == account.address


# -- malformed signatures --------------------------------------------------------------------


def test_rejects_wrong_length() -> None:
    signature = ALICE.sign(b"p")
    for bad in (b"", signature[:64], signature + b"\x00", signature * 2):
        with pytest.raises(MessageError, match="65 bytes"):
            recover_signer(b"p", bad)


def test_rejects_non_bytes() -> None:
    with pytest.raises(MessageError, match="expected bytes"):
        recover_signer(b"p", ALICE.sign(b"p").hex())  # type: ignore[arg-type]


@pytest.mark.parametrize("v", [0, 1, 2, 26, 29, 35, 255])
def test_rejects_bad_v(v: int) -> None:
    signature = ALICE.sign(b"p")
    with pytest.raises(MessageError, match="v must be 27 or 28"):
        recover_signer(b"p", signature[:64] + bytes((v,)))


def test_rejects_high_s_twin() -> None:
    # (r, n - s, v ^ 1) is the other valid ECDSA signature of the same key: EIP-2 forbids it.
    signature = ALICE.sign(b"p")
    r, s, v = _rsv(signature)
    twin = _sig(r, N - s, 27 if v == 28 else 28)
    with pytest.raises(MessageError, match="upper half"):
        recover_signer(b"p", twin)
    # eth_keys (without the EIP-2 check) would accept the twin for the same key.
    keys = KeyAPI(backend=CoinCurveECCBackend())
    twin_vrs = keys.Signature(vrs=((v - 27) ^ 1, r, N - s))
    recovered = keys.ecdsa_recover(signing_hash(b"p"), twin_vrs)
    assert recovered.to_checksum_address() == ALICE.address


@pytest.mark.parametrize(
    ("r", "s", "reason"),
    [
        (0, 1, "r out of range"),
        (N, 1, "r out of range"),
        (2**256 - 1, 1, "r out of range"),
        (1, 0, "s out of range"),
        (1, N, "s out of range"),
        (1, 2**256 - 1, "s out of range"),
        (1, N // 2 + 1, "upper half"),
    ],
)
def test_rejects_r_s_out_of_range(r: int, s: int, reason: str) -> None:
    for v in (27, 28):
        with pytest.raises(MessageError, match=reason):
            recover_signer(b"p", _sig(r, s, v))


def test_rejects_r_that_is_not_on_the_curve() -> None:
    # An r whose x^3 + 7 is not a square mod p names no curve point: nothing to recover.
    r = next(x for x in range(1, 100) if pow((x**3 + 7) % P, (P - 1) // 2, P) == P - 1)
    with pytest.raises(MessageError, match="no public key"):
        recover_signer(b"p", _sig(r, 1, 27))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=64))
def test_arbitrary_signatures_never_raise_anything_else(signature: bytes, payload: bytes) -> None:
    try:
        address = recover_signer(payload, signature)
    except MessageError:
        return
    assert is_checksum_address(address)
