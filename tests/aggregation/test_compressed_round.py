"""The round function with ``[compression]``: updates are compressed deltas from the round's
base, decoded once (``base + delta``, exactly) before the rule sees them; anything else is a
rejection with a reason, never an exception."""

from __future__ import annotations

import numpy as np

from fedledger.aggregation.round import aggregate_round
from fedledger.commit import encode, sha256
from fedledger.commit.compression import decode_update, encode_update
from fedledger.config import AggregationConfig, CompressionConfig

RULE = AggregationConfig(rule="fedavg")
COMPRESSION = CompressionConfig(quantize="int8", topk=0.25)


def _base() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=5).astype(np.float32)]


def _update(seed: int, base: list[np.ndarray], digest: bytes) -> bytes:
    rng = np.random.default_rng(seed)
    trained = [(b + rng.normal(scale=0.1, size=b.shape)).astype(np.float32) for b in base]
    blob, _ = encode_update(trained, base=base, base_digest=digest, scheme=COMPRESSION.scheme)
    return blob


def test_a_compressed_round_is_the_round_of_the_decoded_models() -> None:
    base = _base()
    base_blob = encode(base)
    digest = sha256(base_blob)
    updates = [_update(s, base, digest) for s in (1, 2, 3)]
    examples = [10, 20, 30]
    out = aggregate_round(RULE, base=base_blob, updates=updates, num_examples=examples,
                          compression=COMPRESSION)  # fmt: skip
    assert out.failure is None
    assert not out.rejected
    decoded = [encode(decode_update(u, base=base, base_digest=digest, scheme=COMPRESSION.scheme))
               for u in updates]  # fmt: skip
    plain = aggregate_round(RULE, base=base_blob, updates=decoded, num_examples=examples)
    assert out.model == plain.model
    assert out.scores == plain.scores
    # The same inputs in another order: the same bytes.
    again = aggregate_round(RULE, base=base_blob, updates=updates[::-1],
                            num_examples=examples[::-1], compression=COMPRESSION)  # fmt: skip
    assert again.model == out.model


def test_wrong_updates_are_rejected_with_a_reason() -> None:
    base = _base()
    base_blob = encode(base)
    digest = sha256(base_blob)
    other = sha256(b"another round's model")
    zero, _ = encode_update(base, base=base, base_digest=digest, scheme=COMPRESSION.scheme)
    updates: list[bytes | None] = [
        _update(1, base, digest),
        _update(2, base, digest),
        encode(base),  # a plain parameter blob where a delta is expected
        _update(3, base, other),  # a delta from another base
        zero,  # no training: the base itself
        b"junk",
    ]
    out = aggregate_round(RULE, base=base_blob, updates=updates, num_examples=[5] * 6,
                          compression=COMPRESSION)  # fmt: skip
    assert out.failure is None
    assert sorted(out.rejected) == [2, 3, 4, 5]
    assert out.rejected[2].startswith("not a topk_int8 compressed update")
    assert "against base" in out.rejected[3]
    assert "free-riding" in out.rejected[4]
    assert out.scores[2:] == (0, 0, 0, 0)
    # Without [compression], a delta is not a parameter blob.
    plain = aggregate_round(RULE, base=base_blob, updates=updates[:2], num_examples=[5, 5])
    assert plain.failure is not None
    assert all("parameter blob" in r for r in plain.rejected.values())
