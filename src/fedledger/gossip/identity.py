"""Node identities: secp256k1 keys that sign in Ethereum's format.

Every node owns one secp256k1 key; its Ethereum address (EIP-55 checksummed) is the node's name
everywhere: on the wire, in the ledger and in the audit. A node signs each message payload the
way ``personal_sign`` (EIP-191, version ``0x45``) signs a 32-byte message:

* ``h = keccak256(payload)``;
* the signed digest, :func:`signing_hash`, is
  ``keccak256(b"\\x19Ethereum Signed Message:\\n32" + h)``;
* the signature is 65 bytes ``r || s || v`` with ``v`` in ``{27, 28}`` and a low ``s`` (EIP-2).

So a contract checks a signature with ``ecrecover(signing_hash(payload), v, r, s)`` (or
OpenZeppelin's ``ECDSA.recover(MessageHashUtils.toEthSignedMessageHash(keccak256(payload)),
sig)``), and ``eth_account`` with
``Account.recover_message(encode_defunct(primitive=keccak(payload)), signature=sig)``.

Signing and recovery call libsecp256k1 through coincurve directly (about 50 µs to sign and
100 µs to recover, 2-5x faster than the ``eth_account`` path), which matters because every
gossip frame is signed once and verified by every node it reaches.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from coincurve import PrivateKey, PublicKey
from sha3 import keccak_256

from fedledger.errors import ConfigError, MessageError

__all__ = [
    "SIGNATURE_BYTES",
    "Identity",
    "checksum_address",
    "is_checksum_address",
    "read_private_file",
    "recover_digest",
    "recover_signer",
    "signing_hash",
]

SIGNATURE_BYTES = 65
"""Length of a signature: ``r`` (32) ``|| s`` (32) ``|| v`` (1)."""

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""Order of the secp256k1 group."""
_HALF_N = _N // 2
_PERSONAL_PREFIX = b"\x19Ethereum Signed Message:\n32"
_HEX = frozenset("0123456789abcdefABCDEF")


def keccak(data: bytes | bytearray | memoryview) -> bytes:
    """Ethereum's keccak256, from safe-pysha3's C code: eth-hash's default backend
    (pycryptodome) costs 6 us a call in Python glue, and every message takes three."""
    digest: bytes = keccak_256(data).digest()
    return digest


@functools.lru_cache(maxsize=4096)
def checksum_address(raw: bytes) -> str:
    """The EIP-55 checksummed ``0x`` form of a 20-byte address (cached: a task's few members
    sign every message, and keccak is the cost)."""
    if len(raw) != 20:
        raise ValueError(f"an address has 20 bytes, got {len(raw)}")
    low = raw.hex()
    digest = keccak(low.encode("ascii")).hex()
    return "0x" + "".join(
        c.upper() if c > "9" and digest[i] > "7" else c for i, c in enumerate(low)
    )


def is_checksum_address(value: object) -> bool:
    """Whether ``value`` is a ``0x`` address string in its exact EIP-55 checksummed form."""
    if not isinstance(value, str) or len(value) != 42 or not value.startswith("0x"):
        return False
    return _is_checksum_str(value)


@functools.lru_cache(maxsize=4096)
def _is_checksum_str(value: str) -> bool:
    """Cached: the same members' addresses appear in every message."""
    body = value[2:]
    if not _HEX.issuperset(body):
        return False
    return checksum_address(bytes.fromhex(body)) == value


def _address_of(public_key: PublicKey) -> str:
    return _address_of_point(public_key.format(compressed=False))


@functools.lru_cache(maxsize=4096)
def _address_of_point(point: bytes) -> str:
    """Cached: a task's few members recover to the same public keys again and again."""
    return checksum_address(keccak(point[1:])[-20:])


def read_private_file(path: str | os.PathLike[str], *, what: str) -> bytes:
    """The bytes of a secret file (a key, a password), refused on POSIX if group or others have
    any access to it: :class:`ConfigError` naming the file, its mode and ``chmod 600``.

    The mode is checked on the open file (``fstat``), the very file that is read.
    """
    where = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise ConfigError(f"{what} {where!r} is not a regular file")
            if os.name == "posix" and mode & 0o077:
                raise ConfigError(
                    f"{what} {where!r} is accessible by group or others (mode "
                    f"{stat.S_IMODE(mode):04o}); make it private: chmod 600 {where}"
                )
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {where!r}: {exc.strerror or exc}") from exc


def _write_private(target: Path, text: str, *, overwrite: bool = True) -> None:
    """Write ``text`` to ``target`` with mode 0600, atomically (temporary file, then rename).

    With ``overwrite=False`` an existing ``target`` is left alone (:class:`ConfigError`): the
    complete temporary file is hard-linked to ``target``, which fails if anything is there.
    """
    if not overwrite and os.path.lexists(target):
        raise ConfigError(f"{os.fspath(target)!r} already exists: not overwritten")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write key file {os.fspath(target)!r}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_new(tmp, target, text)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ConfigError(f"cannot write key file {os.fspath(target)!r}: {exc}") from exc
        raise


def _link_new(tmp: str, target: Path, text: str) -> None:
    """Give the written file ``tmp`` the name ``target`` if nothing has it (and drop ``tmp``)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise ConfigError(f"{os.fspath(target)!r} already exists: not overwritten") from None
    except OSError:  # no hard links on this file system: create it exclusively, mode 0600
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError(f"{os.fspath(target)!r} already exists: not overwritten") from None
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    os.unlink(tmp)


_MAX_SCRYPT_BYTES = 1 << 31
"""A keystore whose scrypt needs more memory than this (2 GiB) is refused, not attempted."""
_MAX_PBKDF2_ROUNDS = 10**8


def _check_keystore(keystore: Any, where: str) -> None:
    """Refuse a keystore that is not a v3 JSON object, or whose KDF parameters would exhaust
    memory or time (a hand-edited or hostile file), before decrypting anything."""
    if not isinstance(keystore, dict) or keystore.get("version") != 3:
        raise ConfigError(f"key file {where!r} is not a keystore v3 JSON object")
    crypto = keystore.get("crypto", keystore.get("Crypto"))
    if not isinstance(crypto, dict) or not isinstance(params := crypto.get("kdfparams"), dict):
        raise ConfigError(f"key file {where!r} is not a valid keystore: no crypto.kdfparams")
    try:
        if crypto.get("kdf") == "scrypt":
            n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
            ok = n > 1 and r > 0 and p > 0 and 128 * r * n <= _MAX_SCRYPT_BYTES and p <= 16
        else:
            ok = 0 < int(params.get("c", 1)) <= _MAX_PBKDF2_ROUNDS
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"key file {where!r}: unsupported or excessive KDF parameters")


def signing_hash(payload: bytes | bytearray) -> bytes:
    """The 32-byte digest a signature over ``payload`` signs (what ``ecrecover`` is given).

    ``keccak256(b"\\x19Ethereum Signed Message:\\n32" + keccak256(payload))``.
    """
    return keccak(_PERSONAL_PREFIX + keccak(payload))


def recover_signer(payload: bytes | bytearray, signature: bytes | bytearray | memoryview) -> str:
    """The checksummed address that produced ``signature`` over ``payload`` (see
    :func:`recover_digest`: the digest is :func:`signing_hash` of ``payload``)."""
    return recover_digest(signing_hash(payload), signature)


def recover_digest(digest: bytes, signature: bytes | bytearray | memoryview) -> str:
    """The checksummed address that produced ``signature`` over the 32-byte ``digest``.

    Raises :class:`MessageError` for a malformed signature: not 65 bytes, ``v`` not 27 or 28,
    ``r`` or ``s`` zero or not below the group order, ``s`` in the upper half of the order
    (EIP-2: rejected so that signatures are not malleable), or no public key recoverable.
    A well-formed signature by another key (or over other bytes) recovers *another* address:
    callers compare the result with the claimed signer.
    """
    if not isinstance(signature, bytes | bytearray | memoryview):
        raise MessageError(f"signature: expected bytes, got {type(signature).__name__}")
    signature = bytes(signature)
    if len(signature) != SIGNATURE_BYTES:
        raise MessageError(f"signature: expected {SIGNATURE_BYTES} bytes, got {len(signature)}")
    v = signature[64]
    if v not in (27, 28):
        raise MessageError(f"signature: v must be 27 or 28, got {v}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < r < _N:
        raise MessageError("signature: r out of range")
    if not 0 < s < _N:
        raise MessageError("signature: s out of range")
    if s > _HALF_N:
        raise MessageError("signature: s in the upper half of the curve order (malleable, EIP-2)")
    try:
        public_key = PublicKey.from_signature_and_message(
            signature[:64] + bytes((v - 27,)), digest, hasher=None
        )
    except ValueError as exc:
        raise MessageError("signature: no public key recoverable") from exc
    return _address_of(public_key)


@dataclass(frozen=True, repr=False)
class Identity:
    """A node's secp256k1 key and its Ethereum address.

    ``repr`` shows the address only: the private key never appears in logs. Build one with
    :meth:`generate`, :meth:`from_seed`, :meth:`from_hex` or :meth:`load`; the constructor
    checks that ``address`` belongs to ``private_key`` (:class:`ConfigError` otherwise).
    """

    private_key: bytes
    """The 32-byte secret scalar."""
    address: str
    """The EIP-55 checksummed ``0x`` address of the key."""
    _key: PrivateKey = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        key = bytes(self.private_key) if isinstance(self.private_key, bytes | bytearray) else None
        if key is None or len(key) != 32 or not 0 < int.from_bytes(key, "big") < _N:
            raise ConfigError("a private key is 32 bytes encoding an integer in [1, n-1]")
        private = PrivateKey(key)
        address = _address_of(private.public_key)
        if self.address != address:
            raise ConfigError(f"address {self.address!r} does not belong to the private key")
        object.__setattr__(self, "private_key", key)
        object.__setattr__(self, "_key", private)

    def __repr__(self) -> str:
        return f"Identity(address={self.address!r})"

    @classmethod
    def _from_key(cls, key: bytes) -> Identity:
        if len(key) != 32 or not 0 < int.from_bytes(key, "big") < _N:
            raise ConfigError("a private key is 32 bytes encoding an integer in [1, n-1]")
        return cls(key, _address_of(PrivateKey(key).public_key))

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random key (from ``os.urandom``)."""
        while True:
            key = os.urandom(32)
            if 0 < int.from_bytes(key, "big") < _N:
                return cls._from_key(key)

    @classmethod
    def from_seed(cls, seed: int, index: int) -> Identity:
        """A deterministic key for simulations and tests: node ``index`` of run ``seed``.

        The key is ``keccak256(f"fedledger-sim/{seed}/{index}")``. **Insecure**: anyone who
        knows the seed and index knows the key. Never use it for a real deployment.
        """
        counter = 0
        while True:
            suffix = f"/{counter}" if counter else ""  # only if the hash is 0 or >= n (~2^-128)
            key = keccak(f"fedledger-sim/{seed}/{index}{suffix}".encode())
            if 0 < int.from_bytes(key, "big") < _N:
                return cls._from_key(key)
            counter += 1  # pragma: no cover

    @classmethod
    def from_hex(cls, key_hex: str) -> Identity:
        """A key from 64 hex digits (an optional ``0x`` prefix and surrounding space allowed).

        Raises :class:`ConfigError` (which never quotes the input) for anything else.
        """
        if not isinstance(key_hex, str):
            raise ConfigError(f"a private key in hex is a string, got {type(key_hex).__name__}")
        text = key_hex.strip()
        if text[:2] in ("0x", "0X"):
            text = text[2:]
        if len(text) != 64 or not _HEX.issuperset(text):
            raise ConfigError("a private key in hex is 64 hex digits (with an optional 0x)")
        return cls._from_key(bytes.fromhex(text))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, password: str | None = None) -> Identity:
        """Read a key file: hex (one line, as :meth:`save` writes it) or an encrypted keystore
        (Ethereum's keystore v3 JSON, as :meth:`save_keystore` and geth write it), told apart
        by its content. A keystore needs ``password``; a hex file ignores it.

        On POSIX the file must not be accessible by group or others (mode 0600 or stricter):
        a key others can read is refused, naming the file and ``chmod 600``. Every failure,
        a wrong password included, is a one-line :class:`ConfigError` naming the file.
        """
        where = os.fspath(path)
        raw = read_private_file(path, what="key file")
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"key file {where!r} is neither hex nor a keystore") from None
        if text.startswith(("{", "[")):  # JSON: a keystore
            return cls._from_keystore(text, where, password)
        try:
            return cls.from_hex(text)
        except ConfigError as exc:
            raise ConfigError(f"key file {where!r}: {exc}") from None

    @classmethod
    def _from_keystore(cls, text: str, where: str, password: str | None) -> Identity:
        from eth_account import Account

        if password is None:
            raise ConfigError(
                f"key file {where!r} is an encrypted keystore and needs its password "
                "(FEDLEDGER_KEY_PASSWORD or a password file)"
            )
        try:
            keystore = json.loads(text)
        except ValueError:
            raise ConfigError(f"key file {where!r} is not valid keystore JSON") from None
        _check_keystore(keystore, where)
        try:
            key = bytes(Account.decrypt(keystore, password))
        except ValueError as exc:
            if "mismatch" in str(exc):  # eth-keyfile: "MAC mismatch" (v3)
                raise ConfigError(f"key file {where!r}: wrong password") from exc
            raise ConfigError(f"key file {where!r} is not a valid keystore: {exc}") from exc
        except (KeyError, TypeError, NotImplementedError, OverflowError) as exc:
            raise ConfigError(f"key file {where!r} is not a valid keystore: {exc!r}") from exc
        identity = cls._from_key(key)
        stated = keystore.get("address")
        if isinstance(stated, str) and stated.lower().removeprefix("0x") != (
            identity.address.lower().removeprefix("0x")
        ):
            raise ConfigError(f"key file {where!r}: the key does not match its address field")
        return identity

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
        """Write the key as ``0x``-prefixed hex to ``path``, readable by the owner only (0600).

        The file is written to a temporary file in the same directory (created 0600) and then
        renamed over ``path``, so the key is never readable by others, even briefly. With
        ``overwrite=False`` an existing file at ``path`` is a :class:`ConfigError`.
        """
        _write_private(Path(path), "0x" + self.private_key.hex() + "\n", overwrite=overwrite)

    def save_keystore(
        self,
        path: str | os.PathLike[str],
        password: str,
        *,
        kdf: Literal["scrypt", "pbkdf2"] = "scrypt",
        iterations: int | None = None,
        overwrite: bool = True,
    ) -> None:
        """Write the key encrypted with ``password`` as an Ethereum keystore v3 JSON file
        (``eth_account.Account.encrypt``; geth and eth-account read it), mode 0600, atomically
        like :meth:`save`. ``iterations`` is the KDF's work factor (scrypt's n, pbkdf2's
        rounds); the default is eth-account's (scrypt n = 2**18, about 256 MiB and a second).
        With ``overwrite=False`` an existing file at ``path`` is a :class:`ConfigError`.
        """
        from eth_account import Account

        if not isinstance(password, str) or not password:
            raise ConfigError("a keystore needs a non-empty password")
        keystore = Account.encrypt(self.private_key, password, kdf=kdf, iterations=iterations)
        _write_private(Path(path), json.dumps(keystore) + "\n", overwrite=overwrite)

    def sign_digest(self, digest: bytes) -> bytes:
        """The 65-byte signature ``r || s || v`` (v in {27, 28}, low s) of a 32-byte digest
        (an EIP-712 message hash, say), deterministic (RFC 6979)."""
        if len(digest) != 32:
            raise MessageError(f"a digest to sign is 32 bytes, got {len(digest)}")
        signature = self._key.sign_recoverable(bytes(digest), hasher=None)
        return signature[:64] + bytes((signature[64] + 27,))

    def sign(self, payload: bytes | bytearray) -> bytes:
        """The 65-byte signature ``r || s || v`` (v in {27, 28}, low s) over ``payload``.

        What ``personal_sign`` gives for the 32-byte message ``keccak256(payload)``.
        """
        signature = self._key.sign_recoverable(signing_hash(payload), hasher=None)
        return signature[:64] + bytes((signature[64] + 27,))
