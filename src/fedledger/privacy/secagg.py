"""Secure aggregation's arithmetic and cryptography, as pure functions (issue 14, part 2).

The protocol (Bonawitz et al. 2017, without a server; docs/privacy.md) masks each member's
fixed-point input ``x_i`` (its example-weighted update, exact integers) modulo ``2**56``:

    y_i = x_i + PRG(b_i) + sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij)   (mod 2**56)

where ``b_i`` is the member's own seed for the round and ``s_ij = s_ji`` the seed it shares with
member ``j`` (X25519 key agreement, then HKDF-SHA256 bound to the task and round). Summed over
every member the pairwise masks cancel; a member that dropped out after others masked has its
pairwise seeds revealed by the survivors (its per-round X25519 private key, rebuilt from
Shamir shares and checked against its public key), a survivor its own seed ``b_i`` (rebuilt from
shares, checked against its hash commitment). Nobody ever holds both for one member, so an
individual input is never revealed, only the survivors' sum.

This module holds the pieces: the ring (uint64 arrays modulo ``2**56``: :func:`add`,
:func:`sub`, :func:`encode_input`, :func:`decode_sum`, 7 bytes a coordinate on the wire with
:func:`to_bytes`), :func:`prg` (ChaCha20 key stream from the ``cryptography`` package),
:func:`pair_seed`, :func:`mask`, :func:`unmask`, and :func:`split_secret` /
:func:`combine_secret` (Shamir over GF(2**128), PyCryptodome's implementation; 32-byte secrets
as two 16-byte halves). Never ``numpy.random``: every random byte comes from the operating
system.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedledger.errors import PrivacyError

RING_BITS = 56
"""Masked inputs live in the integers modulo ``2**56``: 7 bytes a coordinate on the wire, 1.75
times a float32 update."""
MODULUS = 1 << RING_BITS
ELEMENT_BYTES = RING_BITS // 8
INPUT_BITS = 31
"""A fixed-point input (``fixedpoint.quantize``: 24 fractional bits) must satisfy
``|q| < 2**31``: parameters below 128 in magnitude."""
WEIGHT_BITS = 16
"""Weights (example counts) are capped below ``2**16``."""
MAX_MEMBERS = 256
"""With these bounds any sum satisfies ``|sum w_i q_i| < 2**55``: it decodes exactly."""
SEED_BYTES = 32
_NONCE = bytes(16)
_U64 = np.uint64
_MASK = np.uint64(MODULUS - 1)
MAX_COMBINATIONS = 1000
"""Share subsets :func:`combine_secret` tries against a commitment before it gives up."""

Ring = np.ndarray
"""A vector of the ring: uint64 values below ``2**56``."""


class SecAggAbort(PrivacyError):
    """A round's secure aggregation cannot complete: fewer shares than the threshold, or
    shares that rebuild no committed secret. The round is skipped, nothing is revealed."""


def _check(v: Ring) -> Ring:
    if not isinstance(v, np.ndarray) or v.dtype != _U64 or v.ndim != 1:
        raise PrivacyError("a ring vector is a one-dimensional uint64 array")
    return v


def add(a: Ring, b: Ring) -> Ring:
    """``a + b`` modulo ``2**56``."""
    if _check(a).shape != _check(b).shape:
        raise PrivacyError(f"vectors of {a.size} and {b.size} coordinates")
    out: Ring = (a + b) & _MASK  # uint64 wraps modulo 2**64, a multiple of 2**56
    return out


def sub(a: Ring, b: Ring) -> Ring:
    """``a - b`` modulo ``2**56``."""
    if _check(a).shape != _check(b).shape:
        raise PrivacyError(f"vectors of {a.size} and {b.size} coordinates")
    out: Ring = (a - b) & _MASK
    return out


def encode_input(q: np.ndarray, weight: int) -> Ring:
    """A member's input: its fixed-point update ``q`` (int64, ``|q| < 2**31``) times its
    ``weight`` (``1 <= weight < 2**16``), in the ring."""
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int)
        or not 1 <= weight < 1 << WEIGHT_BITS
    ):
        raise PrivacyError(f"a weight is an integer in [1, 2**{WEIGHT_BITS}), got {weight!r}")
    q = np.asarray(q)
    if q.dtype != np.int64 or q.ndim != 1:
        raise PrivacyError("a fixed-point input is a one-dimensional int64 array")
    if q.size and int(np.abs(q).max()) >= 1 << INPUT_BITS:
        raise PrivacyError(f"a fixed-point input must be below 2**{INPUT_BITS} in magnitude "
                           "(parameters below 128)")  # fmt: skip
    out: Ring = (q * np.int64(weight)).astype(_U64) & _MASK  # two's complement, then mod 2**56
    return out


def decode_sum(s: Ring) -> np.ndarray:
    """The signed sum (int64) a ring vector encodes: values from ``2**55`` up are negative."""
    v = _check(s).astype(np.int64)
    out: np.ndarray = np.where(v >= 1 << (RING_BITS - 1), v - np.int64(MODULUS), v)
    return out


def to_bytes(v: Ring) -> bytes:
    """7 little-endian bytes a coordinate."""
    raw = _check(v).astype("<u8").view(np.uint8).reshape(-1, 8)[:, :ELEMENT_BYTES]
    return raw.tobytes()


def from_bytes(data: bytes) -> Ring:
    """The inverse of :func:`to_bytes`."""
    if len(data) % ELEMENT_BYTES:
        raise PrivacyError(f"{len(data)} bytes is not a whole number of {ELEMENT_BYTES}-byte "
                           "coordinates")  # fmt: skip
    raw = np.frombuffer(data, np.uint8).reshape(-1, ELEMENT_BYTES)
    padded = np.zeros((raw.shape[0], 8), np.uint8)
    padded[:, :ELEMENT_BYTES] = raw
    out: Ring = padded.view("<u8").reshape(-1).astype(_U64)
    return out


def prg(seed: bytes, n: int) -> Ring:
    """``n`` pseudo-random ring elements from a 32-byte seed (ChaCha20 key stream)."""
    if len(seed) != SEED_BYTES:
        raise PrivacyError(f"a seed is {SEED_BYTES} bytes, got {len(seed)}")
    if n < 0:
        raise PrivacyError(f"n must be >= 0, got {n}")
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    words = np.frombuffer(stream.update(bytes(8 * n)), dtype="<u8").astype(_U64)
    out: Ring = words & _MASK
    return out


def pair_seed(mine: X25519PrivateKey, theirs: X25519PublicKey, *, context: bytes) -> bytes:
    """The seed two members share: X25519, then HKDF-SHA256 bound to ``context`` (the task,
    the round and both members' addresses, in a fixed order)."""
    shared = mine.exchange(theirs)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None,
                info=b"fedledger/secagg/pair/v1|" + context)  # fmt: skip
    return hkdf.derive(shared)


def pair_context(task: str, rnd: int, a: str, b: str) -> bytes:
    """The context of the seed members ``a`` and ``b`` share in round ``rnd`` (symmetric)."""
    first, second = sorted((a.lower(), b.lower()))
    return f"{task}|{rnd}|{first}|{second}".encode()


def commitment(secret: bytes) -> bytes:
    """The hash commitment a member publishes for its own seed (checked when it is rebuilt)."""
    return hashlib.sha256(b"fedledger/secagg/seed/v1|" + secret).digest()


def mask(x: Ring, *, me: str, self_seed: bytes, pair_seeds: Mapping[str, bytes]) -> Ring:
    """``me``'s masked input: ``x`` plus its own mask, plus the pairwise mask of each member
    in ``pair_seeds`` (added toward a higher address, subtracted toward a lower one)."""
    n = _check(x).size
    y = add(x, prg(self_seed, n))
    for peer, seed in sorted(pair_seeds.items()):
        if peer.lower() == me.lower():
            raise PrivacyError("a member shares no pairwise seed with itself")
        y = add(y, prg(seed, n)) if me.lower() < peer.lower() else sub(y, prg(seed, n))
    return y


def unmask(
    masked: Mapping[str, Ring],
    *,
    self_seeds: Mapping[str, bytes],
    dropped_pair_seeds: Mapping[tuple[str, str], bytes],
) -> Ring:
    """The sum of the survivors' inputs from their masked inputs (``masked``, by member),
    their own seeds (``self_seeds``, one per survivor), and, for each member that dropped
    out after the others masked, its seed with each survivor (``dropped_pair_seeds``, keyed
    ``(dropped, survivor)``): every survivor's mask toward a dropped member is removed."""
    if not masked:
        raise SecAggAbort("no masked input")
    if len(masked) > MAX_MEMBERS:
        raise SecAggAbort(f"more than {MAX_MEMBERS} masked inputs")
    if set(self_seeds) != set(masked):
        raise SecAggAbort("the survivors' own seeds do not match the masked inputs")
    n = _check(next(iter(masked.values()))).size
    total = np.zeros(n, _U64)
    for member, y in masked.items():
        total = sub(add(total, y), prg(self_seeds[member], n))
    for (dropped, survivor), seed in sorted(dropped_pair_seeds.items()):
        if survivor not in masked or dropped in masked:
            raise SecAggAbort(f"a pairwise seed of {dropped} and {survivor} is not a "
                              "dropped member's with a survivor")  # fmt: skip
        # The survivor added this mask if its address is lower, subtracted it otherwise.
        pad = prg(seed, n)
        total = sub(total, pad) if survivor.lower() < dropped.lower() else add(total, pad)
    return total


# -- Shamir secret sharing (PyCryptodome) ------------------------------------------------------


def split_secret(secret: bytes, *, threshold: int, parties: int) -> list[tuple[int, bytes]]:
    """``parties`` shares of a 32-byte ``secret``, any ``threshold`` of which rebuild it; share
    ``i`` (1-based) is ``(i, 32 bytes)``: the shares of its two 16-byte halves."""
    from Crypto.Protocol.SecretSharing import Shamir

    if len(secret) != SEED_BYTES:
        raise PrivacyError(f"a shared secret is {SEED_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= parties or parties > 255:
        raise PrivacyError(f"need 1 <= threshold <= parties <= 255, got {threshold}/{parties}")
    halves = [Shamir.split(threshold, parties, secret[:16], False),
              Shamir.split(threshold, parties, secret[16:], False)]  # fmt: skip
    return [(i, a + b) for (i, a), (_, b) in zip(*halves, strict=True)]


def combine_secret(shares: Sequence[tuple[int, bytes]], *, threshold: int,
                   expect: bytes | None = None,
                   valid: Callable[[bytes], bool] | None = None) -> bytes:  # fmt: skip
    """The secret that ``threshold`` of ``shares`` rebuild. With ``expect`` (a
    :func:`commitment`) or ``valid`` (a check of the secret, e.g. against a public key),
    shares are tried ``threshold`` at a time (at most ``MAX_COMBINATIONS`` sets) until a
    combination passes, so a few wrong shares cannot change the result; :class:`SecAggAbort`
    when fewer than ``threshold`` distinct shares are given or no combination passes."""
    from itertools import combinations, islice

    from Crypto.Protocol.SecretSharing import Shamir

    distinct = dict(shares)
    if len(distinct) < threshold:
        raise SecAggAbort(f"{len(distinct)} shares, the threshold is {threshold}")
    if any(len(s) != SEED_BYTES or not 1 <= i <= 255 for i, s in distinct.items()):
        raise SecAggAbort("a share is not an index in [1, 255] and 32 bytes")
    items = sorted(distinct.items())
    for subset in islice(combinations(items, threshold), MAX_COMBINATIONS):
        first = Shamir.combine([(i, s[:16]) for i, s in subset], False)
        second = Shamir.combine([(i, s[16:]) for i, s in subset], False)
        secret = first + second
        if (expect is None or commitment(secret) == expect) and (valid is None or valid(secret)):
            return secret
        if len(items) == threshold:
            break
    raise SecAggAbort("no set of shares rebuilds the committed secret")


# -- sealed shares (ChaCha20-Poly1305) ---------------------------------------------------------

SEAL_OVERHEAD = 12 + 16
"""A sealed message is its plaintext plus a 12-byte random nonce and a 16-byte tag."""


def _seal_key(mine: X25519PrivateKey, theirs: X25519PublicKey, context: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"fedledger/secagg/seal/v1|" + context)  # fmt: skip
    return hkdf.derive(mine.exchange(theirs))


def seal(mine: X25519PrivateKey, theirs: X25519PublicKey, *, context: bytes,
         plaintext: bytes) -> bytes:  # fmt: skip
    """``plaintext`` for the holder of ``theirs`` only: ChaCha20-Poly1305 under a key from
    HKDF of the pair's X25519 secret and ``context`` (which the recipient must name too), with
    a random nonce from the operating system."""
    nonce = os.urandom(12)
    return nonce + ChaCha20Poly1305(_seal_key(mine, theirs, context)).encrypt(
        nonce, plaintext, context
    )


def open_sealed(mine: X25519PrivateKey, theirs: X25519PublicKey, *, context: bytes,
                sealed: bytes) -> bytes:  # fmt: skip
    """The plaintext of :func:`seal`'s output; :class:`PrivacyError` if it was not sealed by
    the holder of ``theirs`` for this key and ``context``, or was altered."""
    if len(sealed) < SEAL_OVERHEAD:
        raise PrivacyError(f"a sealed message is at least {SEAL_OVERHEAD} bytes")
    try:
        return ChaCha20Poly1305(_seal_key(mine, theirs, context)).decrypt(
            sealed[:12], sealed[12:], context
        )
    except InvalidTag as exc:
        raise PrivacyError("a sealed message does not open with this key and context") from exc
