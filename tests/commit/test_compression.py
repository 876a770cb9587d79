"""Compressed updates (int8, top-k, both): round trips, canonical bytes, strict rejection of
malformed blobs, exact and deterministic decoding, error feedback's bookkeeping."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import safetensors.numpy as stn
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedledger.commit import decode, encode
from fedledger.commit.codec import decode_tensors, encode_tensors
from fedledger.commit.compression import (
    DELTA_FORMAT,
    Scheme,
    apply_delta,
    compress,
    compressed_size,
    decode_delta,
    decode_update,
    encode_update,
)
from fedledger.errors import CodecError

BASE = hashlib.sha256(b"the round's base model").digest()
OTHER = hashlib.sha256(b"another base model").digest()
SCHEMES = [Scheme(int8=True), Scheme(topk=0.1), Scheme(int8=True, topk=0.1)]
IDS = [s.name for s in SCHEMES]


def _model(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(8, 6)).astype(np.float32),
        rng.normal(size=6).astype(np.float32),
        rng.normal(size=(6, 3)).astype(np.float32),
        np.zeros((0, 4), dtype=np.float32),
        rng.normal(size=3).astype(np.float32),
    ]


def _trained(base: list[np.ndarray], seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(b + rng.normal(scale=0.05, size=b.shape)).astype(np.float32) for b in base]


def _spec(params: list[np.ndarray]) -> list[tuple[tuple[int, ...], np.dtype]]:
    return [(a.shape, a.dtype) for a in params]


deltas = st.lists(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=9),
        elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=True),
    ),
    min_size=1,
    max_size=4,
)
schemes = st.builds(
    lambda int8, topk: Scheme(int8=int8 or topk is None, topk=topk),
    st.booleans(),
    st.one_of(st.none(), st.floats(0.01, 0.99)),
)


def _safe_scheme(int8: bool, topk: float | None) -> Scheme | None:
    try:
        return Scheme(int8=int8, topk=topk)
    except CodecError:
        return None


@settings(max_examples=150, deadline=None)
@given(deltas, st.booleans(), st.one_of(st.none(), st.floats(0.01, 0.99)))
def test_round_trip_is_canonical_and_bounded(
    delta: list[np.ndarray], int8: bool, topk: float | None
) -> None:
    scheme = _safe_scheme(int8, topk)
    if scheme is None:
        return
    spec = _spec(delta)
    blob, sent = compress(delta, scheme, base_digest=BASE)
    assert len(blob) == compressed_size(spec, scheme)
    back = decode_delta(blob, spec, scheme, base_digest=BASE)
    for s, b in zip(sent, back, strict=True):
        assert s.tobytes() == b.tobytes()
    # One encoding per content: what decodes from a blob encodes back to the same bytes.
    assert compress(back, scheme, base_digest=BASE)[0] == blob
    for d, s in zip(delta, sent, strict=True):
        flat, kept = d.astype(np.float64).reshape(-1), s.reshape(-1)
        nonzero = np.flatnonzero(kept)
        assert len(nonzero) <= scheme.k(flat.size)
        if scheme.int8:
            scale = float(np.float32(np.max(np.abs(flat)) / 127)) if flat.size else 0.0
            # Each sent entry is within half a step of its value.
            assert np.all(np.abs(flat[nonzero] - kept[nonzero]) <= scale / 2 * (1 + 1e-6))
        else:
            assert np.array_equal(kept[nonzero], flat[nonzero].astype(np.float32))
        if scheme.topk is not None and not scheme.int8 and flat.size:
            unsent = np.setdiff1d(np.arange(flat.size), nonzero)
            if unsent.size and nonzero.size:  # the largest magnitudes went
                assert np.min(np.abs(kept[nonzero])) >= np.max(np.abs(flat[unsent]).astype(
                    np.float32))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(deltas, schemes)
def test_decoding_is_deterministic_and_exact(delta: list[np.ndarray], scheme: Scheme) -> None:
    base = [np.full(d.shape, 0.5, dtype=np.float32) for d in delta]
    trained = [b + d for b, d in zip(base, delta, strict=True)]
    blob, residual = encode_update(trained, base=base, base_digest=BASE, scheme=scheme)
    again, residual2 = encode_update(trained, base=base, base_digest=BASE, scheme=scheme)
    assert again == blob
    assert all(np.array_equal(a, b) for a, b in zip(residual, residual2, strict=True))
    one = decode_update(blob, base=base, base_digest=BASE, scheme=scheme)
    two = decode_update(bytes(blob), base=base, base_digest=BASE, scheme=scheme)
    sent = decode_delta(blob, _spec(base), scheme, base_digest=BASE)
    for a, b, b0, s in zip(one, two, base, sent, strict=True):
        assert a.dtype == b0.dtype
        assert a.shape == b0.shape
        assert a.tobytes() == b.tobytes()
        # The model is base + delta rounded once: the float64 sum, cast.
        assert a.tobytes() == (b0.astype(np.float64) + s).astype(np.float32).tobytes()


def test_error_feedback_keeps_what_was_not_sent() -> None:
    base = _model()
    trained = _trained(base)
    for scheme in SCHEMES:
        blob, residual = encode_update(trained, base=base, base_digest=BASE, scheme=scheme)
        sent = decode_delta(blob, _spec(base), scheme, base_digest=BASE)
        for t, b, s, r in zip(trained, base, sent, residual, strict=True):
            delta = t.astype(np.float64) - b
            assert r.dtype == np.float32
            np.testing.assert_allclose(s + r, delta, atol=1e-6)
        # The residual is added to the next delta: sending it all back cancels it.
        blob2, residual2 = encode_update(base, base=base, base_digest=BASE, scheme=scheme,
                                         residual=residual)  # fmt: skip
        sent2 = decode_delta(blob2, _spec(base), scheme, base_digest=BASE)
        for r, s2, r2 in zip(residual, sent2, residual2, strict=True):
            np.testing.assert_allclose(s2 + r2, r, atol=1e-6)


def test_known_bytes_and_model_digests() -> None:
    """The same inputs give these bytes on every machine (the audit recomputes them)."""
    base = _model()
    trained = _trained(base)
    got = {}
    for scheme in SCHEMES:
        blob, _ = encode_update(trained, base=base, base_digest=BASE, scheme=scheme)
        model = decode_update(blob, base=base, base_digest=BASE, scheme=scheme)
        got[scheme.name] = (hashlib.sha256(blob).hexdigest()[:16],
                            hashlib.sha256(encode(model)).hexdigest()[:16])  # fmt: skip
    assert got == GOLDEN


GOLDEN = {
    "int8": ("350459309aa5e4c5", "e8e9854c4f90604b"),
    "topk": ("6c4338e5520614e5", "25d6edf4fccd3711"),
    "topk_int8": ("dc532dcb613f9898", "81da626ad40c8399"),
}


def test_layout_is_documented_and_safetensors_reads_it() -> None:
    base = _model()
    blob, _ = encode_update(_trained(base), base=base, base_digest=BASE,
                            scheme=Scheme(int8=True, topk=0.1))  # fmt: skip
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + hlen])
    assert header["__metadata__"] == {"base": BASE.hex(), "format": DELTA_FORMAT,
                                      "scheme": "topk_int8"}  # fmt: skip
    sizes = [48, 6, 18, 0, 3]
    ks = [5, 1, 2, 0, 1]  # ceil(0.1 n), at least 1 of a non-empty array
    assert [Scheme(topk=0.1).k(n) for n in sizes] == ks
    assert {k: (v["dtype"], v["shape"]) for k, v in header.items() if k != "__metadata__"} == {
        "p000000": ("I32", [sum(ks)]),
        "p000001": ("F32", [len(sizes)]),
        "p000002": ("I8", [sum(ks)]),
    }
    loaded = stn.load(blob)
    assert sorted(loaded) == ["p000000", "p000001", "p000002"]


def _tensors(blob: bytes) -> tuple[dict[str, str], list[np.ndarray]]:
    return decode_tensors(blob, format=DELTA_FORMAT)


def _rebuilt(blob: bytes, edit: object, meta_edit: dict[str, str] | None = None) -> bytes:
    meta, tensors = _tensors(blob)
    assert callable(edit)
    edit(tensors)
    return encode_tensors(tensors, metadata={**meta, **(meta_edit or {})})


def _set(i: int, j: int, value: float) -> object:
    def edit(t: list[np.ndarray]) -> None:
        t[i][j] = value

    return edit


def _swap(i: int) -> object:
    def edit(t: list[np.ndarray]) -> None:
        t[i][[0, 1]] = t[i][[1, 0]]

    return edit


def _same(t: list[np.ndarray]) -> None:
    return None


@pytest.fixture
def blobs() -> dict[str, bytes]:
    base = _model()
    trained = _trained(base)
    return {s.name: encode_update(trained, base=base, base_digest=BASE, scheme=s)[0]
            for s in SCHEMES}  # fmt: skip


MALFORMED = [
    ("int8", _set(0, 0, float("nan")), "scale"),
    ("int8", _set(0, 0, float("inf")), "scale"),
    ("int8", _set(0, 0, -1.0), "scale"),
    ("int8", _set(0, 1, 1e-40), "smallest normal"),
    ("int8", _set(0, 0, 0.0), "zero scale"),
    ("int8", _set(1, 0, -128), "-128"),
    ("topk_int8", _set(1, 0, float("nan")), "scale"),
    ("topk", _set(0, 4, 10_000), "outside"),
    ("topk", _set(0, 0, -1), "outside"),
    ("topk", _swap(0), "ascending"),
    ("topk", _set(0, 1, 0), "ascending"),  # a duplicate index
    ("topk", _set(1, 0, float("nan")), "finite"),
    ("topk", _set(1, 0, -0.0), "-0.0"),
]


@pytest.mark.parametrize(("scheme", "edit", "reason"), MALFORMED)
def test_malformed_blobs_are_rejected(
    blobs: dict[str, bytes], scheme: str, edit: object, reason: str | None
) -> None:
    target = {s.name: s for s in SCHEMES}[scheme]
    bad = _rebuilt(blobs[scheme], edit)
    base = _model()
    with pytest.raises(CodecError, match=reason):
        decode_update(bad, base=base, base_digest=BASE, scheme=target)


def test_scale_normalization_is_checked(blobs: dict[str, bytes]) -> None:
    # Half the scale and double the values: the same delta, not the canonical bytes.
    def halve(t: list[np.ndarray]) -> None:
        t[0][:] = t[0] * 2
        t[1][:] = (t[1] // 2).astype(np.int8)

    with pytest.raises(CodecError, match="not 127"):
        decode_update(_rebuilt(blobs["int8"], halve), base=_model(), base_digest=BASE,
                      scheme=SCHEMES[0])  # fmt: skip


def test_a_kept_zero_above_an_unkept_index_is_not_canonical() -> None:
    base = [np.zeros(10, dtype=np.float32)]
    trained = [np.zeros(10, dtype=np.float32)]
    trained[0][7] = 1.0
    scheme = Scheme(topk=0.3)  # k = 3: index 7, then zeros at 0 and 1
    blob, _ = encode_update(trained, base=base, base_digest=BASE, scheme=scheme)
    meta, (idx, vals) = _tensors(blob)
    assert idx.tolist() == [0, 1, 7]
    idx[1] = 4  # a zero at 4 kept while 1..3 are not
    bad = encode_tensors([idx, vals], metadata=meta)
    with pytest.raises(CodecError, match="kept zero"):
        decode_update(bad, base=base, base_digest=BASE, scheme=scheme)


def test_blobs_of_another_base_scheme_or_shape_are_rejected(blobs: dict[str, bytes]) -> None:
    base = _model()
    int8, topk = SCHEMES[0], SCHEMES[1]
    with pytest.raises(CodecError, match="against base"):
        decode_update(blobs["int8"], base=base, base_digest=OTHER, scheme=int8)
    with pytest.raises(CodecError, match="bytes here"):  # another scheme's size
        decode_update(blobs["topk"], base=base, base_digest=BASE, scheme=int8)
    with pytest.raises(CodecError):
        decode_update(blobs["topk"], base=base, base_digest=BASE, scheme=Scheme(topk=0.2))
    with pytest.raises(CodecError, match="bytes here"):  # a plain parameter blob
        decode_update(encode(base), base=base, base_digest=BASE, scheme=topk)
    with pytest.raises(CodecError):  # a delta where a parameter blob is expected
        decode_update(blobs["topk"], base=base, base_digest=BASE, scheme=None)
    # The same size, another scheme's name in the metadata.
    forged = _rebuilt(blobs["topk"], _same, {"scheme": "xxxx"})
    with pytest.raises(CodecError, match="not a topk update"):
        decode_update(forged, base=base, base_digest=BASE, scheme=topk)
    # Indices as I64 where the layout says I32 (bigger, so the size is wrong first).
    meta, (idx, vals) = _tensors(blobs["topk"])
    wide = encode_tensors([idx.astype(np.int64), vals], metadata=meta)
    with pytest.raises(CodecError):
        decode_update(wide, base=base, base_digest=BASE, scheme=topk)
    # Values as I32 and indices as F32: the same sizes, the wrong dtypes.
    swapped = encode_tensors([idx.view(np.float32), vals.view(np.int32)], metadata=meta)
    with pytest.raises(CodecError, match="dtypes or shapes"):
        decode_update(swapped, base=base, base_digest=BASE, scheme=topk)
    for cut in (blobs["int8"][:-1], blobs["int8"] + b" ", b"", b"\0" * 8):
        with pytest.raises(CodecError):
            decode_update(cut, base=base, base_digest=BASE, scheme=int8)


def test_a_model_with_non_float_arrays_or_non_finite_deltas_is_refused() -> None:
    with pytest.raises(CodecError, match="not a float array"):
        compressed_size([((3,), np.dtype(np.int32))], SCHEMES[0])
    with pytest.raises(CodecError, match="NaN"):
        compress([np.array([np.nan], dtype=np.float32)], SCHEMES[1], base_digest=BASE)
    with pytest.raises(CodecError, match="topk"):
        Scheme(topk=1.0)
    with pytest.raises(CodecError):
        Scheme()


def test_apply_delta_rounds_once_to_the_base_dtype() -> None:
    base: list[np.ndarray] = [np.array([1.0, 2.0], np.float32), np.array([1.0], np.float64)]
    delta: list[np.ndarray] = [np.array([2.0**-30, 0.5]), np.array([2.0**-40])]
    out = apply_delta(base, delta)
    assert out[0].dtype == np.float32
    assert out[0].tolist() == [1.0, 2.5]
    assert out[1].dtype == np.float64
    assert out[1].tolist() == [1.0 + 2.0**-40]


def test_tensor_blobs_name_their_format_and_parameter_decoding_refuses_others(
    blobs: dict[str, bytes],
) -> None:
    with pytest.raises(CodecError, match=r"fedledger\.params\.v1"):
        decode(blobs["topk"])
    with pytest.raises(CodecError, match=r"fedledger\.residual\.v1"):
        decode_tensors(blobs["topk"], format="fedledger.residual.v1")
    with pytest.raises(CodecError, match="format"):
        encode_tensors([np.zeros(1, np.float32)], metadata={"scheme": "topk"})
    with pytest.raises(CodecError, match="strings"):
        encode_tensors([np.zeros(1, np.float32)], metadata={"format": "x", "n": 1})  # type: ignore[dict-item]
    # A metadata value that is not a string, written by hand: refused on decode.
    raw = json.dumps({"__metadata__": {"format": DELTA_FORMAT, "base": 7}},
                     separators=(",", ":"), sort_keys=True).encode()  # fmt: skip
    raw += b" " * (-len(raw) % 8)
    with pytest.raises(CodecError, match="strings"):
        decode_tensors(struct.pack("<Q", len(raw)) + raw, format=DELTA_FORMAT)
