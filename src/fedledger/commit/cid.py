"""Content addressing: sha256 digests and IPFS CIDv1 strings.

A blob's CID is CIDv1 with the ``raw`` codec (0x55) and a sha2-256 multihash, in multibase
base32 (lowercase, prefix ``b``): the form ``ipfs add --cid-version 1 --raw-leaves`` gives a
blob that fits one block, so the same string names the blob on IPFS. The chain stores the
32-byte digest; the CID is derived from it and back without loss.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from fedledger.errors import CodecError

_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])  # CIDv1, raw, sha2-256, 32 bytes


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte sha256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def cid_from_digest(digest: bytes) -> str:
    """The CIDv1 (raw, sha2-256, base32) string for a sha256 digest."""
    return _cid_from_digest(bytes(digest))


@functools.lru_cache(maxsize=1 << 16)
def _cid_from_digest(digest: bytes) -> str:
    """Cached: nodes turn the digests of a round's messages into CIDs at every tick, and with
    hundreds of members base32 became a tenth of a node's time."""
    if len(digest) != 32:
        raise CodecError(f"a sha256 digest has 32 bytes, got {len(digest)}")
    return "b" + base64.b32encode(_PREFIX + digest).decode("ascii").lower().rstrip("=")


def cid_of(data: bytes | bytearray | memoryview) -> str:
    """The CID of a blob."""
    return cid_from_digest(sha256(data))


@functools.lru_cache(maxsize=8192)
def digest_from_cid(cid: str) -> bytes:
    """The sha256 digest inside a CIDv1 raw sha2-256 base32 string; CodecError otherwise.

    Cached: CIDs recur in every message about a round, and validation is pure.
    """
    if not isinstance(cid, str) or not cid.startswith("b") or not cid[1:].isalnum():
        raise CodecError(f"not a base32 CIDv1 string: {cid!r}")
    body = cid[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError as exc:
        raise CodecError(f"not a base32 CIDv1 string: {cid!r}") from exc
    if len(raw) != 36 or raw[:4] != _PREFIX:
        raise CodecError(f"not a CIDv1 raw sha2-256 identifier: {cid!r}")
    digest = raw[4:]
    if cid_from_digest(digest) != cid:
        raise CodecError(f"CID is not in canonical form: {cid!r}")
    return digest


def verify(data: bytes | bytearray | memoryview, cid: str) -> None:
    """Raise CodecError unless ``data`` hashes to ``cid``."""
    expected = digest_from_cid(cid)
    if sha256(data) != expected:
        raise CodecError(f"content does not match {cid}")
