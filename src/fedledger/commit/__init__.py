"""Commit stage: canonical parameter bytes, their digests and content identifiers."""

from fedledger.commit.cid import cid_from_digest, cid_of, digest_from_cid, sha256, verify
from fedledger.commit.codec import decode, encode, params_digest

__all__ = [
    "cid_from_digest",
    "cid_of",
    "decode",
    "digest_from_cid",
    "encode",
    "params_digest",
    "sha256",
    "verify",
]
