"""Canonical parameter bytes: round trips, canonicality, strict rejection, safetensors interop."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
import safetensors.numpy as stn
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedledger.commit import decode, encode, params_digest
from fedledger.errors import CodecError

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8]

arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
)


@settings(max_examples=200, deadline=None)
@given(st.lists(arrays, max_size=6))
def test_round_trip_is_exact(params: list[np.ndarray]) -> None:
    blob = encode(params)
    back = decode(blob)
    assert len(back) == len(params)
    for a, b in zip(params, back, strict=True):
        assert a.dtype == b.dtype
        assert a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # bit-exact, NaN payloads and -0.0 included
        assert b.flags.writeable
        assert b.flags.c_contiguous
    assert encode(back) == blob


@settings(max_examples=100, deadline=None)
@given(st.lists(arrays, min_size=1, max_size=4))
def test_safetensors_reads_our_blobs(params: list[np.ndarray]) -> None:
    loaded = stn.load(encode(params))
    assert sorted(loaded) == [f"p{i:06d}" for i in range(len(params))]
    for i, a in enumerate(params):
        assert loaded[f"p{i:06d}"].tobytes() == a.tobytes()


def test_layout_is_canonical_and_documented() -> None:
    blob = encode([np.arange(3, dtype=np.float32)])
    (hlen,) = struct.unpack("<Q", blob[:8])
    assert hlen % 8 == 0
    header = json.loads(blob[8 : 8 + hlen])
    assert header == {
        "__metadata__": {"format": "fedledger.params.v1"},
        "p000000": {"data_offsets": [0, 12], "dtype": "F32", "shape": [3]},
    }
    assert blob[8 + hlen :] == np.arange(3, dtype="<f4").tobytes()


def test_non_contiguous_and_big_endian_inputs_encode_like_their_values() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert encode([a.T]) == encode([np.ascontiguousarray(a.T)])
    assert encode([a.astype(">f4")]) == encode([a])


def test_digest_changes_with_any_value_shape_or_dtype() -> None:
    a = np.zeros((2, 2), dtype=np.float32)
    base = params_digest([a])
    b = a.copy()
    b[1, 1] = np.float32(1e-30)
    assert params_digest([b]) != base
    assert params_digest([a.reshape(4)]) != base
    assert params_digest([a.astype(np.float64)]) != base
    assert params_digest([a, a]) != base
    assert len(base) == 32


def test_safetensors_library_output_is_not_accepted_unless_canonical() -> None:
    # safetensors writes its own header layout; fedledger accepts one form only.
    foreign = stn.save({"p000000": np.arange(3, dtype=np.float32)})
    with pytest.raises(CodecError):
        decode(foreign)


def _blob_with_header(header: object, body: bytes = b"") -> bytes:
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


META = {"__metadata__": {"format": "fedledger.params.v1"}}


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "too short"),
        (b"\x00" * 7, "too short"),
        (struct.pack("<Q", 1 << 40) + b"{}", "header length"),
        (struct.pack("<Q", 8) + b"not json", "not valid JSON"),
        (struct.pack("<Q", 8) + b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8", "not valid JSON"),
        (_blob_with_header([1, 2]), "__metadata__"),
        (_blob_with_header({"p000000": {}}), "__metadata__"),
        (_blob_with_header({**META, "p000001": {"dtype": "F32", "shape": [1],
                                                 "data_offsets": [0, 4]}}, b"\0" * 4), "missing"),
        (_blob_with_header({**META, "p000000": {"dtype": "X9", "shape": [1],
                                                 "data_offsets": [0, 4]}}, b"\0" * 4), "dtype"),
        (_blob_with_header({**META, "p000000": {"dtype": "F32", "shape": [-1],
                                                 "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
        (_blob_with_header({**META, "p000000": {"dtype": "F32", "shape": [True],
                                                 "data_offsets": [0, 4]}}, b"\0" * 4), "shape"),
        (_blob_with_header({**META, "p000000": {"dtype": "F32", "shape": [1 << 30, 1 << 30],
                                                 "data_offsets": [0, 4]}}, b"\0" * 4), "claims"),
        (_blob_with_header({**META, "p000000": {"dtype": "F32", "shape": [1],
                                                 "data_offsets": [0, 8]}}, b"\0" * 8), "canonical"),
        (encode([np.zeros(2, np.float32)]) + b"\0", "exactly fill"),
        (encode([np.zeros(2, np.float32)])[:-1], "exactly fill"),
    ],
)  # fmt: skip
def test_malformed_blobs_are_rejected_with_a_reason(blob: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        decode(blob)


def test_size_limit() -> None:
    blob = encode([np.zeros(1000, np.float32)])
    assert len(decode(blob, max_bytes=len(blob))[0]) == 1000
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode(blob, max_bytes=len(blob) - 1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255))
def test_single_byte_corruptions_are_rejected_or_change_the_digest(pos: int, value: int) -> None:
    params: list[np.ndarray] = [np.linspace(-1, 1, 7, dtype=np.float32), np.ones((2, 3))]
    blob = bytearray(encode(params))
    pos %= len(blob)
    if blob[pos] == value:
        return
    blob[pos] = value
    try:
        back = decode(bytes(blob))
    except CodecError:
        return
    assert encode(back) == bytes(blob)  # accepted only if canonical, so it names other params
    assert params_digest(back) != params_digest(params)


def test_unsupported_inputs_are_rejected() -> None:
    with pytest.raises(CodecError, match="unsupported dtype"):
        encode([np.array(["a"])])
    with pytest.raises(CodecError, match="not a numpy array"):
        encode([[1.0, 2.0]])  # type: ignore[list-item]
