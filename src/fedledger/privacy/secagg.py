"""Secure aggregation's arithmetic and cryptography, as pure functions (issue 14, part 2).

The protocol (Bonawitz et al. 2017, without a server; docs/privacy.md) masks each member's
fixed-point input ``x_i`` (its example-weighted update, exact integers) modulo ``2**128``:

    y_i = x_i + PRG(b_i) + sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij)   (mod 2**128)

where ``b_i`` is the member's own seed for the round and ``s_ij = s_ji`` the seed it shares with
member ``j`` (X25519 key agreement, then HKDF-SHA256 bound to the task and round). Summed over
every member the pairwise masks cancel; a member that dropped out after others masked has its
pairwise seeds revealed by the survivors (its per-round X25519 private key, rebuilt from
Shamir shares and checked against its public key), a survivor its own seed ``b_i`` (rebuilt from
shares, checked against its hash commitment). Nobody ever holds both for one member, so an
individual input is never revealed, only the survivors' sum.

This module holds the pieces: :class:`Vec128` (vectors modulo ``2**128`` as two uint64
arrays), :func:`prg` (ChaCha20 key stream from the ``cryptography`` package), :func:`pair_seed`,
:func:`mask`, :func:`unmask`, and :func:`split_secret` / :func:`combine_secret` (Shamir over
GF(2**128), PyCryptodome's implementation; 32-byte secrets as two 16-byte halves). Never
``numpy.random``: every random byte comes from the operating system.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedledger.errors import PrivacyError

BITS = 128
MODULUS = 1 << BITS
SEED_BYTES = 32
_NONCE = bytes(16)
_U64 = np.uint64
MAX_COMBINATIONS = 1000
"""Share subsets :func:`combine_secret` tries against a commitment before it gives up."""


class SecAggAbort(PrivacyError):
    """A round's secure aggregation cannot complete: fewer shares than the threshold, or
    shares that rebuild no committed secret. The round is skipped, nothing is revealed."""


@dataclass(frozen=True)
class Vec128:
    """A vector of integers modulo ``2**128``: low and high 64-bit words."""

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self) -> None:
        if self.lo.dtype != _U64 or self.hi.dtype != _U64 or self.lo.shape != self.hi.shape:
            raise PrivacyError("a Vec128 is two uint64 arrays of one shape")

    def __len__(self) -> int:
        return int(self.lo.shape[0])

    @classmethod
    def zeros(cls, n: int) -> Vec128:
        return cls(np.zeros(n, _U64), np.zeros(n, _U64))

    @classmethod
    def from_ints(cls, values: Iterable[int]) -> Vec128:
        """Python integers (any sign, ``|v| < 2**127``) in two's complement."""
        words = [int(v) % MODULUS for v in values]
        lo = np.fromiter((w & 0xFFFF_FFFF_FFFF_FFFF for w in words), _U64, len(words))
        hi = np.fromiter((w >> 64 for w in words), _U64, len(words))
        return cls(lo, hi)

    def to_ints(self) -> list[int]:
        """The signed integers in ``[-2**127, 2**127)`` these words encode."""
        out = []
        for lo, hi in zip(self.lo.tolist(), self.hi.tolist(), strict=True):
            w = (int(hi) << 64) | int(lo)
            out.append(w - MODULUS if w >= MODULUS >> 1 else w)
        return out

    def __add__(self, other: Vec128) -> Vec128:
        _same(self, other)
        lo = self.lo + other.lo  # wraps modulo 2**64
        carry = (lo < self.lo).astype(_U64)
        return Vec128(lo, self.hi + other.hi + carry)

    def __neg__(self) -> Vec128:
        lo = ~self.lo + _U64(1)
        carry = (lo == 0).astype(_U64)
        return Vec128(lo, ~self.hi + carry)

    def __sub__(self, other: Vec128) -> Vec128:
        return self + (-other)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Vec128) and np.array_equal(self.lo, other.lo)
                and np.array_equal(self.hi, other.hi))  # fmt: skip

    __hash__ = None  # type: ignore[assignment]


def _same(a: Vec128, b: Vec128) -> None:
    if a.lo.shape != b.lo.shape:
        raise PrivacyError(f"vectors of {len(a)} and {len(b)} coordinates")


def prg(seed: bytes, n: int) -> Vec128:
    """``n`` pseudo-random elements of the ring from a 32-byte seed (ChaCha20 key stream)."""
    if len(seed) != SEED_BYTES:
        raise PrivacyError(f"a seed is {SEED_BYTES} bytes, got {len(seed)}")
    if n < 0:
        raise PrivacyError(f"n must be >= 0, got {n}")
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    words = np.frombuffer(stream.update(bytes(16 * n)), dtype="<u8").reshape(n, 2)
    return Vec128(np.ascontiguousarray(words[:, 0], _U64), np.ascontiguousarray(words[:, 1], _U64))


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


def mask(x: Vec128, *, me: str, self_seed: bytes, pair_seeds: Mapping[str, bytes]) -> Vec128:
    """``me``'s masked input: ``x`` plus its own mask, plus the pairwise mask of each member
    in ``pair_seeds`` (added toward a higher address, subtracted toward a lower one)."""
    n = len(x)
    y = x + prg(self_seed, n)
    for peer, seed in sorted(pair_seeds.items()):
        if peer.lower() == me.lower():
            raise PrivacyError("a member shares no pairwise seed with itself")
        y = y + prg(seed, n) if me.lower() < peer.lower() else y - prg(seed, n)
    return y


def unmask(
    masked: Mapping[str, Vec128],
    *,
    self_seeds: Mapping[str, bytes],
    dropped_pair_seeds: Mapping[tuple[str, str], bytes],
) -> Vec128:
    """The sum of the survivors' inputs from their masked inputs (``masked``, by member),
    their own seeds (``self_seeds``, one per survivor), and, for each member that dropped
    out after the others masked, its seed with each survivor (``dropped_pair_seeds``, keyed
    ``(dropped, survivor)``): every survivor's mask toward a dropped member is removed."""
    if not masked:
        raise SecAggAbort("no masked input")
    if set(self_seeds) != set(masked):
        raise SecAggAbort("the survivors' own seeds do not match the masked inputs")
    n = len(next(iter(masked.values())))
    total = Vec128.zeros(n)
    for member, y in masked.items():
        total = total + y - prg(self_seeds[member], n)
    for (dropped, survivor), seed in sorted(dropped_pair_seeds.items()):
        if survivor not in masked or dropped in masked:
            raise SecAggAbort(f"a pairwise seed of {dropped} and {survivor} is not a "
                              "dropped member's with a survivor")  # fmt: skip
        # The survivor added this mask if its address is lower, subtracted it otherwise.
        m = prg(seed, n)
        total = total - m if survivor.lower() < dropped.lower() else total + m
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
                   expect: bytes | None = None) -> bytes:  # fmt: skip
    """The secret that ``threshold`` of ``shares`` rebuild. With ``expect`` (a
    :func:`commitment`), shares are tried ``threshold`` at a time (at most
    ``MAX_COMBINATIONS`` sets) until a combination matches it, so a few wrong shares cannot
    change the result; :class:`SecAggAbort` when fewer than ``threshold`` distinct shares are
    given or no combination matches."""
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
        if expect is None or commitment(secret) == expect:
            return secret
        if len(items) == threshold:
            break
    raise SecAggAbort("no set of shares rebuilds the committed secret")
