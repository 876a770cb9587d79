"""The exact blob size of a parameter spec: the limit a node puts on updates and models."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedledger.aggregation.validation import spec_of
from fedledger.commit.codec import encode, encoded_size
from fedledger.errors import BlobMismatch, CodecError
from fedledger.gossip.blobs import MemoryBlobStore

DTYPES = ["<f2", "<f4", "<f8", "i1", "<i2", "<i4", "<i8", "u1", "?", ">f4", ">i8"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(min_value=0, max_value=12), max_size=3),
            st.sampled_from(DTYPES),
        ),
        max_size=12,
    )
)
def test_encoded_size_is_the_length_of_the_encoding(spec: list[tuple[list[int], str]]) -> None:
    params = [np.zeros(shape, dtype=dtype) for shape, dtype in spec]
    assert encoded_size(spec_of(params)) == len(encode(params))


def test_a_small_model_gets_a_small_limit() -> None:
    # A 64-10 linear model (the digits task): about 2.6 KB, not the 1 GiB default.
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(64, 10)).astype("<f4"), np.zeros(10, dtype="<f4")]
    limit = encoded_size(spec_of(params))
    assert limit == len(encode(params)) < 4096
    store = MemoryBlobStore()
    blob = encode(params)
    good = store.put(blob)
    with store.writer(good, max_bytes=limit) as w:
        w.write(blob)
        assert w.commit() == good
    # A blob one byte longer is refused while it streams in.
    bigger = blob + b" "
    with pytest.raises(BlobMismatch), store.writer(good, max_bytes=limit) as w:
        w.write(bigger)


def test_encoded_size_refuses_what_encode_refuses() -> None:
    with pytest.raises(CodecError):
        encoded_size([((2,), "complex64")])
    with pytest.raises(CodecError):
        encoded_size([((-1,), "<f4")])
