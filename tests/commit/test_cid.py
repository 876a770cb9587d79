"""Content identifiers: CIDv1, raw codec, sha2-256, base32."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedledger.commit import cid_from_digest, cid_of, digest_from_cid, sha256, verify
from fedledger.errors import CodecError


def test_cid_of_empty_blob_matches_ipfs() -> None:
    # `ipfs add --cid-version 1 --raw-leaves` of an empty file.
    assert cid_of(b"") == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_cid_structure() -> None:
    cid = cid_of(b"hello")
    raw = base64.b32decode(cid[1:].upper() + "=" * (-len(cid[1:]) % 8))
    assert cid[0] == "b"  # multibase base32
    assert raw[0] == 0x01  # CID version 1
    assert raw[1] == 0x55  # raw codec
    assert raw[2:4] == bytes([0x12, 0x20])  # sha2-256, 32 bytes
    assert raw[4:] == hashlib.sha256(b"hello").digest()


@given(st.binary(max_size=2000))
def test_round_trip(data: bytes) -> None:
    cid = cid_of(data)
    assert digest_from_cid(cid) == sha256(data)
    assert cid_from_digest(sha256(data)) == cid
    verify(data, cid)


@given(st.binary(max_size=200), st.binary(min_size=1, max_size=20))
def test_verify_rejects_other_content(data: bytes, extra: bytes) -> None:
    with pytest.raises(CodecError, match="does not match"):
        verify(data + extra, cid_of(data))


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "b",
        "Qmfoo",  # CIDv0 / base58
        "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",  # base58btc multibase
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk",  # truncated
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykuaa",  # too long
        "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",  # dag-cbor codec
        "BAFKREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU",  # upper case
        "bafkrei!dwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    ],
)
def test_malformed_cids_are_rejected(bad: str) -> None:
    with pytest.raises(CodecError):
        digest_from_cid(bad)


def test_digest_length_is_checked() -> None:
    with pytest.raises(CodecError, match="32 bytes"):
        cid_from_digest(b"\x00" * 31)
