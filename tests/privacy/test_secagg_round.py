"""A whole secure-aggregation round from key blobs: masking, reveals, the transcript, the
exact sum with 0, 10, 20 and 33 % of the members dropped, an abort below the threshold, a
dropout's update never revealed, and a tampered transcript refused."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedledger.aggregation import fedavg
from fedledger.aggregation import fixedpoint as fx
from fedledger.aggregation.validation import spec_of
from fedledger.errors import PrivacyError
from fedledger.privacy.secagg import (
    SecAggAbort,
    decode_sum,
    encode_input,
    open_sealed,
    seal,
    sub,
)
from fedledger.privacy.secagg_keys import (
    KeyBlob,
    channel_private,
    make_key_blob,
    open_share,
    public_bytes,
    threshold_for,
)
from fedledger.privacy.secagg_round import (
    Reveal,
    Transcript,
    check_transcript,
    decode_masked,
    encode_masked,
    flatten_q,
    make_reveal,
    mask_update,
    rebuild,
    secagg_model,
    unmask_sum,
    weight_of,
)

SCOPE = "31337:0x00000000000000000000000000000000000000aa"
RND = 3


def _key(i: int) -> bytes:
    return hashlib.sha256(f"node {i}".encode()).digest()


def _addr(i: int) -> str:
    return "0x" + hashlib.sha256(f"addr {i}".encode()).hexdigest()[:40]


class Members:
    def __init__(self, n: int, *, first: int = 1, last: int = 5) -> None:
        self.keys = {_addr(i): _key(i) for i in range(n)}
        channels = {a: public_bytes(channel_private(k, SCOPE)) for a, k in self.keys.items()}
        self.blobs = {
            a: make_key_blob(k, scope=SCOPE, member=a, first_round=first, last_round=last,
                             recipients=channels)
            for a, k in self.keys.items()
        }  # fmt: skip
        rng = np.random.default_rng(n)
        self.params = {
            a: [rng.normal(0, 1, (6, 5)).astype(np.float32), rng.normal(0, 1, 5).astype(np.float32)]
            for a in self.keys
        }
        self.examples = {a: int(rng.integers(1, 500)) for a in self.keys}

    def masked(self) -> dict[str, np.ndarray]:
        peers = {a: b.keys_of(RND).mask_key for a, b in self.blobs.items()}
        return {a: mask_update(k, scope=SCOPE, rnd=RND, me=a, params=self.params[a],
                               weight=weight_of(self.examples[a]), peers=peers)
                for a, k in self.keys.items()}  # fmt: skip

    def reveals(self, survivors: list[str], dropouts: list[str],
                revealers: list[str]) -> list[Reveal]:  # fmt: skip
        return [make_reveal(self.keys[a], scope=SCOPE, rnd=RND, me=a, survivors=survivors,
                            dropouts=dropouts, blobs=self.blobs) for a in revealers]  # fmt: skip


@pytest.mark.parametrize(("n", "dropped"), [(10, 0), (10, 1), (10, 2), (9, 3), (12, 4)])
def test_the_unmasked_sum_is_exactly_fedavg_of_the_survivors(n: int, dropped: int) -> None:
    m = Members(n)
    order = sorted(m.keys)
    survivors, dropouts = order[dropped:], order[:dropped]
    masked = m.masked()
    # The dropouts mask too (they had their blob in), but their message never reached the
    # chain; only survivors reveal.
    reveals = m.reveals(survivors, dropouts, survivors)
    weights = {a: (f"cid-{a}", weight_of(m.examples[a])) for a in survivors}
    t = rebuild(scope=SCOPE, rnd=RND, dropouts=dropouts, blobs=m.blobs, reveals=reveals,
                survivors=weights)  # fmt: skip
    check_transcript(t, blobs=m.blobs, masking_set=order)
    total, weight = unmask_sum(t, masked={a: masked[a] for a in survivors}, blobs=m.blobs)
    plain = sum(flatten_q(m.params[a]) * m.examples[a] for a in survivors)
    assert np.array_equal(total, plain)
    spec = spec_of(m.params[order[0]])
    model = secagg_model(total, weight, spec)
    expected = fedavg([m.params[a] for a in survivors], [m.examples[a] for a in survivors])
    for got, want in zip(model, expected.params, strict=True):
        assert np.array_equal(fx.quantize(got), fx.quantize(want))
    # Canonical: a transcript rebuilt from other reveals is the same bytes.
    other = rebuild(scope=SCOPE, rnd=RND, dropouts=dropouts, blobs=m.blobs,
                    reveals=list(reversed(reveals))[: len(reveals) - 1] or reveals,
                    survivors={a: (f"cid-{a}", weight_of(m.examples[a]))
                               for a in survivors})  # fmt: skip
    assert other.to_bytes() == t.to_bytes()
    assert Transcript.from_bytes(t.to_bytes()) == t


def test_below_the_threshold_the_round_aborts() -> None:
    m = Members(10)
    order = sorted(m.keys)
    t = threshold_for(10)
    dropouts = order[: 10 - t + 1]  # one survivor short of the threshold
    survivors = order[10 - t + 1 :]
    reveals = m.reveals(survivors, dropouts, survivors)
    with pytest.raises(SecAggAbort):
        rebuild(scope=SCOPE, rnd=RND, dropouts=dropouts, blobs=m.blobs, reveals=reveals,
                survivors=dict.fromkeys(survivors, ("cid", 1)))  # fmt: skip


def test_a_dropouts_update_is_never_revealed() -> None:
    """Everything the honest members reveal about a dropout is its mask key: its masked blob
    (if anyone saw it) minus every pairwise mask still carries its self mask."""
    m = Members(8)
    order = sorted(m.keys)
    d, survivors = order[0], order[1:]
    masked = m.masked()
    reveals = m.reveals(survivors, [d], survivors)
    assert all(d not in r.seeds for r in reveals)  # nobody shares the dropout's seed
    t = rebuild(scope=SCOPE, rnd=RND, dropouts=[d], blobs=m.blobs, reveals=reveals,
                survivors={a: ("cid", weight_of(m.examples[a])) for a in survivors})  # fmt: skip
    # The strongest observer: the dropout's masked input, its rebuilt mask key, and every
    # survivor's rebuilt seed and mask key (as if they all colluded after the round).
    from fedledger.privacy.secagg import pair_context, pair_seed, prg

    key = next(x.key for x in t.dropouts if x.member == d)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    priv = X25519PrivateKey.from_private_bytes(key)
    y = masked[d]
    for s in survivors:
        pub = X25519PublicKey.from_public_bytes(m.blobs[s].keys_of(RND).mask_key)
        seed = pair_seed(priv, pub, context=pair_context(SCOPE, RND, d, s))
        pad = prg(seed, y.size)
        y = sub(y, pad) if d < s else (y + pad) & np.uint64((1 << 56) - 1)
    x = encode_input(flatten_q(m.params[d]), weight_of(m.examples[d]))
    left = decode_sum(sub(y, x))  # what is left is the self mask: uniform, not zero
    assert np.count_nonzero(left) > 0.99 * left.size
    assert all(s.member != d for s in t.survivors)


def test_a_tampered_transcript_is_refused() -> None:
    m = Members(6)
    order = sorted(m.keys)
    reveals = m.reveals(order, [], order)
    t = rebuild(scope=SCOPE, rnd=RND, dropouts=[], blobs=m.blobs, reveals=reveals,
                survivors={a: ("cid", weight_of(m.examples[a])) for a in order})  # fmt: skip
    s0 = t.survivors[0]
    bad = Transcript(scope=t.scope, round=t.round, dropouts=t.dropouts,
                     survivors=(type(s0)(member=s0.member, update=s0.update, weight=s0.weight,
                                         seed=bytes(32)), *t.survivors[1:]))  # fmt: skip
    with pytest.raises(PrivacyError, match="not the committed one"):
        check_transcript(bad, blobs=m.blobs, masking_set=order)
    with pytest.raises(PrivacyError, match="not the masking set"):
        check_transcript(t, blobs=m.blobs, masking_set=order[1:])


def test_wrong_shares_do_not_change_the_rebuilt_secret() -> None:
    m = Members(10)
    order = sorted(m.keys)
    d, survivors = order[0], order[1:]
    reveals = m.reveals(survivors, [d], survivors)
    liar = reveals[0]
    forged = Reveal(round=RND, member=liar.member, seeds=liar.seeds, own=liar.own,
                    keys={d: (liar.keys[d][0], bytes(32))})  # fmt: skip
    t = rebuild(scope=SCOPE, rnd=RND, dropouts=[d], blobs=m.blobs,
                reveals=[forged, *reveals[1:]],
                survivors=dict.fromkeys(survivors, ("cid", 1)))  # fmt: skip
    check_transcript(t, blobs=m.blobs, masking_set=order)


def test_key_blobs_are_canonical_and_shares_open_only_for_their_recipient() -> None:
    m = Members(4)
    a, b, c, _ = sorted(m.keys)
    blob = m.blobs[a]
    assert KeyBlob.from_bytes(blob.to_bytes()) == blob
    assert blob.threshold == 2
    assert len(blob.recipients) == 3
    share = open_share(m.keys[b], blob, me=b, rnd=RND)
    assert share is not None
    assert share.index == 1
    with pytest.raises(PrivacyError):  # c's key does not open b's share
        open_share(m.keys[c], blob, me=b, rnd=RND)
    assert open_share(m.keys[a], blob, me=a, rnd=RND) is None  # not its own recipient
    with pytest.raises(PrivacyError, match="canonical"):
        KeyBlob.from_bytes(blob.to_bytes().replace(b'{"channel', b'{ "channel'))
    with pytest.raises(PrivacyError, match="does not cover"):
        blob.keys_of(9)


def test_a_sealed_message_opens_only_with_its_context() -> None:
    k1, k2 = channel_private(_key(1), SCOPE), channel_private(_key(2), SCOPE)
    box = seal(k1, k2.public_key(), context=b"ctx", plaintext=b"secret")
    assert open_sealed(k2, k1.public_key(), context=b"ctx", sealed=box) == b"secret"
    with pytest.raises(PrivacyError):
        open_sealed(k2, k1.public_key(), context=b"other", sealed=box)
    with pytest.raises(PrivacyError):
        open_sealed(k2, k1.public_key(), context=b"ctx", sealed=box[:-1] + bytes([box[-1] ^ 1]))


def test_masked_blobs_round_trip_and_are_checked() -> None:
    m = Members(3)
    a = sorted(m.keys)[0]
    y = m.masked()[a]
    blob = encode_masked(rnd=RND, member=a, weight=7, masked=y)
    weight, back = decode_masked(blob, rnd=RND, member=a, size=y.size)
    assert weight == 7
    assert np.array_equal(back, y)
    with pytest.raises(PrivacyError):
        decode_masked(blob, rnd=RND + 1, member=a, size=y.size)
    with pytest.raises(PrivacyError):
        decode_masked(blob[:-1], rnd=RND, member=a, size=y.size)
    # 7 bytes a coordinate: 1.75 times float32, plus a short header.
    assert len(blob) < 1.75 * 4 * y.size + 120


def test_thresholds() -> None:
    assert [threshold_for(n) for n in (3, 4, 10, 100)] == [2, 2, 6, 66]
    with pytest.raises(PrivacyError):
        threshold_for(2)


def test_a_survivor_that_goes_silent_after_committing_is_unmasked_from_the_others_shares() -> None:
    """Its masked update is on chain, but it never reveals: its self seed is rebuilt from the
    threshold of the others' shares, and the sum is still exact."""
    m = Members(10)
    order = sorted(m.keys)
    silent = order[4]
    masked = m.masked()
    revealers = [a for a in order if a != silent]
    reveals = m.reveals(order, [], revealers)
    assert all(r.own is not None for r in reveals)
    weights = {a: ("cid", weight_of(m.examples[a])) for a in order}
    t = rebuild(scope=SCOPE, rnd=RND, dropouts=[], blobs=m.blobs, reveals=reveals,
                survivors=weights)  # fmt: skip
    check_transcript(t, blobs=m.blobs, masking_set=order)
    total, _ = unmask_sum(t, masked=masked, blobs=m.blobs)
    assert np.array_equal(total, sum(flatten_q(m.params[a]) * m.examples[a] for a in order))
    # With fewer than the threshold of others revealing, its seed cannot be rebuilt.
    few = reveals[: threshold_for(10) - 1]
    with pytest.raises(SecAggAbort):
        rebuild(scope=SCOPE, rnd=RND, dropouts=[], blobs=m.blobs, reveals=few, survivors=weights)
