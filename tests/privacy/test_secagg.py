"""Secure aggregation's pieces: arithmetic modulo 2**56, the ChaCha20 mask stream, X25519
pair seeds, Shamir shares (PyCryptodome) and a whole masked round with dropouts, run as the
protocol will: exact sums, no individual input revealed, an abort below the threshold."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedledger.aggregation import fixedpoint as fx
from fedledger.errors import PrivacyError
from fedledger.privacy.secagg import (
    ELEMENT_BYTES,
    MODULUS,
    SecAggAbort,
    add,
    combine_secret,
    commitment,
    decode_sum,
    encode_input,
    from_bytes,
    mask,
    pair_context,
    pair_seed,
    prg,
    split_secret,
    sub,
    to_bytes,
    unmask,
)


def _ring(values: list[int]) -> np.ndarray:
    return np.array([v % MODULUS for v in values], dtype=np.uint64)


def test_ring_arithmetic_is_integer_arithmetic_modulo_2_56() -> None:
    gen = np.random.default_rng(0)  # test data, not secrets
    a = [int(v) for v in gen.integers(0, MODULUS, 500)] + [0, 1, MODULUS - 1, 2**55]
    b = [int(v) for v in gen.integers(0, MODULUS, 500)] + [MODULUS - 1, MODULUS - 1, 1, 2**55]
    ra, rb = _ring(a), _ring(b)
    assert add(ra, rb).tolist() == [(x + y) % MODULUS for x, y in zip(a, b, strict=True)]
    assert sub(ra, rb).tolist() == [(x - y) % MODULUS for x, y in zip(a, b, strict=True)]
    with pytest.raises(PrivacyError):
        add(ra, _ring([1, 2]))
    with pytest.raises(PrivacyError):
        add(ra.astype(np.int64), rb)


def test_inputs_encode_weighted_and_sums_decode_signed() -> None:
    q = np.array([0, 1, -1, 2**31 - 1, -(2**31) + 1, 12345], dtype=np.int64)
    x = encode_input(q, 65535)
    assert decode_sum(x).tolist() == [v * 65535 for v in q.tolist()]
    # The largest sum the bounds allow still decodes exactly: 256 members at the limits.
    big = encode_input(np.array([2**31 - 1, -(2**31) + 1], dtype=np.int64), 2**16 - 1)
    total = np.zeros(2, np.uint64)
    for _ in range(256):
        total = add(total, big)
    assert decode_sum(total).tolist() == [256 * (2**16 - 1) * (2**31 - 1),
                                          -256 * (2**16 - 1) * (2**31 - 1)]  # fmt: skip
    for bad_q, weight in ((np.array([2**31]), 1), (np.array([1]), 0), (np.array([1]), 2**16),
                          (np.array([1.0]), 1)):  # fmt: skip
        with pytest.raises(PrivacyError):
            encode_input(np.asarray(bad_q), weight)
    with pytest.raises(PrivacyError):
        encode_input(np.array([1], dtype=np.int64), True)


def test_seven_bytes_a_coordinate_on_the_wire() -> None:
    v = prg(bytes(range(32)), 1000)
    data = to_bytes(v)
    assert len(data) == 1000 * ELEMENT_BYTES == 7000
    assert np.array_equal(from_bytes(data), v)
    with pytest.raises(PrivacyError):
        from_bytes(data[:-1])


def test_prg_is_a_keyed_stream() -> None:
    seed = bytes(range(32))
    a = prg(seed, 1000)
    assert np.array_equal(a, prg(seed, 1000))
    assert np.array_equal(prg(seed, 10), a[:10])
    assert not np.array_equal(a, prg(bytes(32), 1000))
    assert int(a.max()) < MODULUS
    # About uniform on the ring: the mean is near 2**55.
    assert abs(float(np.mean(a.astype(np.float64))) / 2**55 - 1) < 0.1
    with pytest.raises(PrivacyError):
        prg(b"short", 4)


def test_pair_seeds_are_symmetric_and_bound_to_their_context() -> None:
    a, b, c = (X25519PrivateKey.generate() for _ in range(3))
    ctx = pair_context("task", 3, "0xAa", "0xbB")
    assert ctx == pair_context("task", 3, "0xbb", "0xaa")
    ab = pair_seed(a, b.public_key(), context=ctx)
    assert ab == pair_seed(b, a.public_key(), context=ctx)
    assert ab != pair_seed(a, c.public_key(), context=ctx)
    assert ab != pair_seed(a, b.public_key(), context=pair_context("task", 4, "0xaa", "0xbb"))


def test_shamir_shares_rebuild_the_secret_and_resist_a_wrong_share() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, threshold=4, parties=7)
    assert [i for i, _ in shares] == list(range(1, 8))
    assert combine_secret(shares[2:6], threshold=4) == secret
    assert combine_secret(shares[:4], threshold=4, expect=commitment(secret)) == secret
    bad = [(i, bytes(32)) if i == 1 else (i, s) for i, s in shares]
    # More shares than the threshold: the commitment picks a set without the wrong one.
    assert combine_secret(bad, threshold=4, expect=commitment(secret)) == secret
    # Exactly the threshold, one of them wrong: refused, never a wrong secret.
    with pytest.raises(SecAggAbort, match="no set"):
        combine_secret(bad[:4], threshold=4, expect=commitment(secret))
    with pytest.raises(SecAggAbort, match="threshold"):
        combine_secret(shares[:3], threshold=4)
    with pytest.raises(PrivacyError):
        split_secret(secret, threshold=8, parties=7)


class Member:
    """One member's secrets for a round: its own seed and a per-round X25519 key."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.own = os.urandom(32)
        self.key = X25519PrivateKey.generate()
        self.key_bytes = self.key.private_bytes_raw()


Outcome = tuple[list[int], list[int], list[np.ndarray], list[int]]


def _round(n: int, dropped: int, threshold: int) -> Outcome:
    """A masked round of ``n`` members whose last ``dropped`` drop out after the others
    masked: the plain sum of the survivors' inputs, and the sum secure aggregation rebuilds
    (from shares only), and the survivors' fixed-point updates and weights."""
    gen = np.random.default_rng(n * 100 + dropped)  # test inputs, not secrets
    members = [Member(f"0x{i:040x}") for i in range(1, n + 1)]
    task, rnd = "task", 7
    params = gen.normal(0, 0.5, 300)
    inputs: dict[str, np.ndarray] = {}
    plain: dict[str, list[int]] = {}
    quantized: dict[str, tuple[np.ndarray, int]] = {}
    for m in members:  # each member's example-weighted fixed-point update
        weight = int(gen.integers(1, 500))
        q = fx.quantize(params + gen.normal(0, 0.1, params.size))
        quantized[m.address] = (q, weight)
        plain[m.address] = [weight * int(v) for v in q]
        inputs[m.address] = encode_input(q, weight)
    # Shares of each member's own seed and round key, one per member (sent encrypted).
    own_shares = {m.address: split_secret(m.own, threshold=threshold, parties=n) for m in members}
    key_shares = {m.address: split_secret(m.key_bytes, threshold=threshold, parties=n)
                  for m in members}  # fmt: skip
    publics = {m.address: m.key.public_key() for m in members}

    def seeds(m: Member) -> dict[str, bytes]:
        return {o.address: pair_seed(m.key, publics[o.address],
                                     context=pair_context(task, rnd, m.address, o.address))
                for o in members if o is not m}  # fmt: skip

    masked = {m.address: mask(inputs[m.address], me=m.address, self_seed=m.own,
                              pair_seeds=seeds(m)) for m in members}  # fmt: skip
    survivors = members[: n - dropped]
    gone = members[n - dropped :]
    # Each survivor (share index = its position + 1) reveals its share of every survivor's own
    # seed and of every dropped member's round key: never both for one member.
    held = [i + 1 for i, m in enumerate(members) if m in survivors]
    own = {m.address: combine_secret([own_shares[m.address][i - 1] for i in held],
                                     threshold=threshold, expect=commitment(m.own))
           for m in survivors}  # fmt: skip
    pairs: dict[tuple[str, str], bytes] = {}
    for d in gone:
        key = combine_secret([key_shares[d.address][i - 1] for i in held], threshold=threshold)
        rebuilt = X25519PrivateKey.from_private_bytes(key)
        assert rebuilt.public_key().public_bytes_raw() == publics[d.address].public_bytes_raw()
        for s in survivors:
            pairs[(d.address, s.address)] = pair_seed(
                rebuilt, publics[s.address], context=pair_context(task, rnd, d.address, s.address)
            )
    total = unmask({s.address: masked[s.address] for s in survivors}, self_seeds=own,
                   dropped_pair_seeds=pairs)  # fmt: skip
    expected = [sum(col) for col in zip(*(plain[s.address] for s in survivors), strict=True)]
    # What a late masked input of a dropped member shows, its pairwise masks removed: still
    # hidden by its own seed, whose shares nobody revealed.
    for d in gone:
        residual = masked[d.address]
        for s in survivors:
            seed = pairs[(d.address, s.address)]
            pad = prg(seed, residual.size)
            residual = (
                sub(residual, pad) if d.address.lower() < s.address.lower() else add(residual, pad)
            )
        others = [o for o in gone if o is not d]
        for o in others:  # the masks between two dropped members stay too
            seed = pair_seed(d.key, publics[o.address],
                             context=pair_context(task, rnd, d.address, o.address))  # fmt: skip
            pad = prg(seed, residual.size)
            residual = (
                sub(residual, pad) if d.address.lower() < o.address.lower() else add(residual, pad)
            )
        assert not np.array_equal(residual, inputs[d.address])
        assert np.array_equal(sub(residual, prg(d.own, residual.size)), inputs[d.address])
    kept = [quantized[s.address] for s in survivors]
    return expected, decode_sum(total).tolist(), [q for q, _ in kept], [w for _, w in kept]


@pytest.mark.parametrize("dropped", [0, 1, 2, 3])  # 0, 10, 20, 30 % of 10 (a third: 3)
def test_the_unmasked_sum_is_exactly_the_plain_sum_with_dropouts(dropped: int) -> None:
    expected, got, updates, weights = _round(10, dropped, threshold=7)
    assert got == expected
    # Divided by the survivors' weight, it is the weighted mean the plain rule computes.
    total = sum(weights)
    assert [(v + total // 2) // total for v in got] == fx.weighted_mean(updates, weights).tolist()


def test_a_third_of_twelve_dropped_still_sums_exactly() -> None:
    expected, got, _, _ = _round(12, 4, threshold=8)
    assert got == expected


def test_below_the_threshold_the_round_aborts() -> None:
    with pytest.raises(SecAggAbort, match="threshold"):
        _round(10, 4, threshold=7)  # 6 survivors hold 6 shares of 7 needed


def test_unmasking_with_a_wrong_seed_does_not_give_the_sum() -> None:
    a, b = Member("0x" + "1" * 40), Member("0x" + "2" * 40)
    ctx = pair_context("t", 1, a.address, b.address)
    xa = encode_input(np.array([5, -7, 11], dtype=np.int64), 1)
    xb = encode_input(np.array([1, 2, -3], dtype=np.int64), 1)
    ab = pair_seed(a.key, b.key.public_key(), context=ctx)
    ya = mask(xa, me=a.address, self_seed=a.own, pair_seeds={b.address: ab})
    yb = mask(xb, me=b.address, self_seed=b.own, pair_seeds={a.address: ab})
    good = unmask({a.address: ya, b.address: yb}, self_seeds={a.address: a.own, b.address: b.own},
                  dropped_pair_seeds={})  # fmt: skip
    assert decode_sum(good).tolist() == [6, -5, 8]
    bad = unmask({a.address: ya, b.address: yb},
                 self_seeds={a.address: a.own, b.address: os.urandom(32)},
                 dropped_pair_seeds={})  # fmt: skip
    assert decode_sum(bad).tolist() != [6, -5, 8]
    with pytest.raises(SecAggAbort):
        unmask({a.address: ya}, self_seeds={}, dropped_pair_seeds={})
    with pytest.raises(PrivacyError):
        mask(xa, me=a.address, self_seed=a.own, pair_seeds={a.address: a.own})
