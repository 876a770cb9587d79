"""Compressed updates: int8 quantization and top-k sparsification of a node's delta.

A task with a ``[compression]`` table (:class:`fedledger.config.task.CompressionConfig`) has
its members publish, instead of their trained model, the *delta* from the round's base model,
compressed, as a canonical safetensors blob (:func:`fedledger.commit.codec.encode_tensors`)
with ``__metadata__`` ``{"base": <sha256 of the base model blob, hex>, "format":
"fedledger.delta.v1", "scheme": <scheme>}`` and, for a base model of ``T`` float arrays with
``N`` coordinates in all (``k_i`` of them kept from array ``i`` by top-k, ``K`` in all):

============  ==========================================================================
scheme        tensors, in this order (``p000000``, ``p000001``, ...)
============  ==========================================================================
``int8``      scales ``F32[T]``; values ``I8[N]``
``topk``      indices ``I32[K]``; values ``F32[K]``
``topk_int8`` indices ``I32[K]``; scales ``F32[T]``; values ``I8[K]``
============  ==========================================================================

Arrays are concatenated in the base model's order, each flattened in C order; an index is a
position inside its own array (``I64`` instead of ``I32`` when an array has 2**31 entries or
more). ``k_i = min(n_i, max(1, ceil(topk * n_i)))`` for an array of ``n_i > 0`` entries.

**Encoding** (deterministic, in float64 then one rounding): int8 scales are per array and
symmetric, ``scale = float32(max|d| / 127)`` (0 when that is below float32's smallest normal
number: the whole array is then sent as zeros), ``q = clip(rint(d / scale), -127, 127)``
(round half to even). Top-k keeps the ``k_i`` entries of largest magnitude, ties to the lower
index, judged on what is sent (the float32 value, or ``q``: with int8 the scale is the whole
array's, so the largest entry is always kept and has ``|q| = 127``); indices ascending.

**Canonical**: exactly one blob per decoded delta. The decoder rejects (:class:`CodecError`)
a blob whose size, metadata, tensor dtypes or shapes are not the task's; an index out of its
array's range, or not strictly ascending; a scale that is not a finite non-negative float32,
a nonzero scale below float32's smallest normal number, a zero scale with a nonzero value, a
nonzero scale whose largest ``|q|`` is not 127; a ``q`` of -128; a float value that is not
finite or is ``-0.0``; a kept zero at an index above one not kept (ties go to lower indices).

**Decoding** is exact: ``q * scale`` is exact in float64 (8 by 24 bits), a float32 value
widens exactly, and the model is ``float64(base) + delta`` rounded once to the base array's
dtype: IEEE operations element by element, so every machine gets the same bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedledger.commit.codec import MAX_BLOB_BYTES, decode, decode_tensors, encode_tensors
from fedledger.commit.codec import encoded_size as _encoded_size
from fedledger.errors import CodecError

DELTA_FORMAT = "fedledger.delta.v1"
SCHEMES = ("int8", "topk", "topk_int8")
QMAX = 127
F32_TINY = float(np.finfo(np.float32).tiny)
"""float32's smallest normal number: a smaller nonzero scale is not used."""

Blob = bytes | bytearray | memoryview
Spec = Sequence[tuple[tuple[int, ...], np.dtype]]


@dataclass(frozen=True, kw_only=True)
class Scheme:
    """What a task's updates are compressed with: ``int8`` quantization, ``topk`` (the
    fraction of each array's entries kept), or both."""

    int8: bool = False
    topk: float | None = None

    def __post_init__(self) -> None:
        if self.topk is not None and not (0.0 < self.topk < 1.0):
            raise CodecError(f"topk must be in (0, 1), got {self.topk!r}")
        if not self.int8 and self.topk is None:
            raise CodecError("a compression scheme quantizes, sparsifies, or both")

    @property
    def name(self) -> str:
        if self.topk is None:
            return "int8"
        return "topk_int8" if self.int8 else "topk"

    def k(self, size: int) -> int:
        """How many entries of an array of ``size`` are sent."""
        if self.topk is None:
            return size
        return 0 if size == 0 else min(size, max(1, math.ceil(self.topk * size)))


def _sizes(spec: Spec) -> list[int]:
    out = []
    for i, (shape, dtype) in enumerate(spec):
        if np.dtype(dtype).kind != "f":
            raise CodecError(f"array {i} of the base model is not a float array ({dtype})")
        out.append(math.prod(int(s) for s in shape))
    return out


def _index_dtype(sizes: Sequence[int]) -> np.dtype:
    return np.dtype("<i4") if max(sizes, default=0) < 2**31 else np.dtype("<i8")


def _layout(spec: Spec, scheme: Scheme) -> list[tuple[tuple[int, ...], np.dtype]]:
    """The blob's tensors (shape, dtype) for a base model of ``spec``."""
    sizes = _sizes(spec)
    scales = ((len(sizes),), np.dtype("<f4"))
    if scheme.topk is None:
        return [scales, ((sum(sizes),), np.dtype("i1"))]
    kept = (sum(scheme.k(n) for n in sizes),)
    index = (kept, _index_dtype(sizes))
    if scheme.int8:
        return [index, scales, (kept, np.dtype("i1"))]
    return [index, (kept, np.dtype("<f4"))]


def _metadata(scheme: Scheme, base_digest: bytes) -> dict[str, str]:
    if len(base_digest) != 32:
        raise CodecError(f"a base digest has 32 bytes, got {len(base_digest)}")
    return {"base": base_digest.hex(), "format": DELTA_FORMAT, "scheme": scheme.name}


def compressed_size(spec: Spec, scheme: Scheme) -> int:
    """The exact size of every compressed update for a base model of ``spec``."""
    return _encoded_size(_layout(spec, scheme), metadata=_metadata(scheme, bytes(32)))


# -- encoding -------------------------------------------------------------------------------------


def _scale(flat: np.ndarray) -> float:
    """The symmetric int8 scale of ``flat`` (float64): float32(max|x| / 127), 0 if tiny."""
    if flat.size == 0:
        return 0.0
    top = float(np.max(np.abs(flat)))
    scale = float(np.float32(top / QMAX))
    if not math.isfinite(scale):
        raise CodecError("an update's delta is too large for an int8 scale")
    return scale if scale >= F32_TINY else 0.0


def _quantize(flat: np.ndarray, scale: float) -> np.ndarray:
    if scale == 0.0:
        return np.zeros(flat.shape, dtype=np.int8)
    return np.clip(np.rint(flat / scale), -QMAX, QMAX).astype(np.int8)


def _top(magnitude: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``magnitude`` entries (ties: lower index), ascending."""
    if k >= magnitude.size:
        return np.arange(magnitude.size, dtype=np.int64)
    order = np.lexsort((np.arange(magnitude.size), -magnitude))
    return np.sort(order[:k])


def compress(
    delta: Sequence[np.ndarray], scheme: Scheme, *, base_digest: bytes
) -> tuple[bytes, list[np.ndarray]]:
    """The canonical compressed blob of ``delta`` (one array per base model array) against the
    base model whose blob hashes to ``base_digest``, and what it decodes to (float64 arrays of
    ``delta``'s shapes): ``delta`` minus the decoded delta is what was not sent."""
    spec = [(tuple(int(s) for s in d.shape), np.dtype(np.float64)) for d in delta]
    sizes = _sizes(spec)
    index_dtype = _index_dtype(sizes)
    scales: list[float] = []
    indices: list[np.ndarray] = []
    values: list[np.ndarray] = []
    sent: list[np.ndarray] = []
    for d in delta:
        flat = np.asarray(d, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(flat)):
            raise CodecError("an update's delta has NaN or Inf values")
        k = scheme.k(flat.size)
        dense = np.zeros(flat.size, dtype=np.float64)
        if scheme.int8:
            scale = _scale(flat)
            q = _quantize(flat, scale)
            idx = _top(np.abs(q.astype(np.int64)), k)
            scales.append(scale)
            values.append(q[idx])
            dense[idx] = q[idx].astype(np.float64) * scale
        else:
            v32 = flat.astype(np.float32) + np.float32(0.0)  # -0.0 is sent as 0.0
            if not np.all(np.isfinite(v32)):
                raise CodecError("an update's delta overflows float32")
            idx = _top(np.abs(v32), k)
            values.append(v32[idx])
            dense[idx] = v32[idx].astype(np.float64)
        indices.append(idx.astype(index_dtype))
        sent.append(dense.reshape(d.shape))
    tensors: list[np.ndarray] = []
    scale_array = np.asarray(scales, dtype="<f4")
    if scheme.topk is not None:
        tensors.append(_cat(indices, index_dtype))
    if scheme.int8:
        tensors.append(scale_array)
    tensors.append(_cat(values, np.dtype("i1") if scheme.int8 else np.dtype("<f4")))
    blob = encode_tensors(tensors, metadata=_metadata(scheme, base_digest))
    return blob, sent


def _cat(parts: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray:
    return np.concatenate([p.astype(dtype) for p in parts]) if parts else np.zeros(0, dtype)


# -- decoding -------------------------------------------------------------------------------------


def decode_delta(blob: Blob, spec: Spec, scheme: Scheme, *, base_digest: bytes) -> list[np.ndarray]:
    """The delta (float64 arrays of ``spec``'s shapes) a compressed blob carries; a
    :class:`CodecError` unless the blob is exactly the canonical one for the task's ``scheme``,
    against the base model whose blob hashes to ``base_digest``."""
    layout = _layout(spec, scheme)
    metadata = _metadata(scheme, base_digest)
    size = _encoded_size(layout, metadata=metadata)
    if len(blob) != size:
        raise CodecError(f"a compressed update has {size} bytes here, got {len(blob)}")
    got_meta, tensors = decode_tensors(blob, format=DELTA_FORMAT, max_bytes=size)
    if got_meta.get("scheme") != metadata["scheme"] or set(got_meta) != set(metadata):
        raise CodecError(f"not a {scheme.name} update (metadata {got_meta})")
    if got_meta["base"] != metadata["base"]:
        raise CodecError(f"the delta is against base {got_meta['base'][:16]}..., not this "
                         f"round's {metadata['base'][:16]}...")  # fmt: skip
    if [(t.shape, t.dtype) for t in tensors] != [(s, d.newbyteorder("=")) for s, d in layout]:
        raise CodecError("tensor dtypes or shapes are not the scheme's")
    sizes = _sizes(spec)
    it = iter(tensors)
    index = next(it) if scheme.topk is not None else None
    scales = next(it).astype(np.float64) if scheme.int8 else None
    values = next(it)
    if scales is not None:
        _check_scales(scales)
    if not scheme.int8 and not np.all(np.isfinite(values)):
        raise CodecError("a value is not finite")
    if not scheme.int8 and np.any(np.signbit(values) & (values == 0)):
        raise CodecError("a value is -0.0 (sent as 0.0)")
    if scheme.int8 and np.any(values == -128):
        raise CodecError("a value is -128 (the scale is symmetric: -127..127)")
    out: list[np.ndarray] = []
    start = 0
    for i, ((shape, _), n) in enumerate(zip(spec, sizes, strict=True)):
        k = scheme.k(n)
        v = values[start : start + k]
        scale = 0.0 if scales is None else float(scales[i])
        if scheme.int8:
            _check_quantized(i, v, scale)
            dense_values = v.astype(np.float64) * scale
            zero = v == 0
        else:
            dense_values = v.astype(np.float64)
            zero = v == 0
        if index is None:
            flat = dense_values
        else:
            idx = index[start : start + k].astype(np.int64)
            _check_indices(i, idx, n, zero)
            flat = np.zeros(n, dtype=np.float64)
            flat[idx] = dense_values
        out.append(flat.reshape(shape))
        start += k
    return out


def _check_scales(scales: np.ndarray) -> None:
    if not np.all(np.isfinite(scales)) or np.any(scales < 0) or np.any(np.signbit(scales)):
        raise CodecError("a scale is not a finite non-negative number")
    if np.any((scales > 0) & (scales < F32_TINY)):
        raise CodecError("a nonzero scale is below float32's smallest normal number")


def _check_quantized(i: int, v: np.ndarray, scale: float) -> None:
    top = int(np.max(np.abs(v.astype(np.int64)))) if v.size else 0
    if scale == 0.0 and top != 0:
        raise CodecError(f"array {i}: a zero scale with nonzero values")
    if scale > 0.0 and top != QMAX:
        raise CodecError(f"array {i}: the largest |value| is {top}, not {QMAX} (not the "
                         "canonical scale)")  # fmt: skip


def _check_indices(i: int, idx: np.ndarray, n: int, zero: np.ndarray) -> None:
    if idx.size and (int(idx[0]) < 0 or int(idx[-1]) >= n):
        raise CodecError(f"array {i}: an index is outside [0, {n})")
    if idx.size > 1 and not np.all(idx[1:] > idx[:-1]):
        raise CodecError(f"array {i}: indices are not strictly ascending")
    if np.any(zero):
        last = int(np.flatnonzero(zero)[-1])
        if int(idx[last]) != last:  # an unkept (zero) entry below a kept zero: ties go lower
            raise CodecError(f"array {i}: a kept zero at index {int(idx[last])} above an "
                             "index not kept (not the canonical selection)")  # fmt: skip


def apply_delta(base: Sequence[np.ndarray], delta: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``base + delta``, computed in float64 and rounded once to each base array's dtype."""
    if len(base) != len(delta):
        raise CodecError(f"{len(delta)} delta arrays for {len(base)} base arrays")
    out = []
    for b, d in zip(base, delta, strict=True):
        with np.errstate(over="ignore", invalid="ignore"):  # Inf is rejected by validation
            out.append((b.astype(np.float64) + d).astype(b.dtype))
    return out


def decode_update(
    blob: Blob,
    *,
    base: Sequence[np.ndarray],
    base_digest: bytes,
    scheme: Scheme | None,
    max_bytes: int = MAX_BLOB_BYTES,
) -> list[np.ndarray]:
    """An update blob as the model it proposes: the one decoding path for nodes and the audit.

    Without a scheme the blob is a parameter blob (:func:`fedledger.commit.decode`, at most
    ``max_bytes``); with one it is a compressed delta against ``base`` (whose blob hashes to
    ``base_digest``), and the model is ``base + delta`` (:func:`apply_delta`)."""
    if scheme is None:
        return decode(blob, max_bytes=max_bytes)
    spec = [(tuple(int(s) for s in b.shape), np.dtype(b.dtype)) for b in base]
    return apply_delta(base, decode_delta(blob, spec, scheme, base_digest=base_digest))


def encode_update(
    trained: Sequence[np.ndarray],
    *,
    base: Sequence[np.ndarray],
    base_digest: bytes,
    scheme: Scheme,
    residual: Sequence[np.ndarray] | None = None,
) -> tuple[bytes, list[np.ndarray]]:
    """A node's compressed update: the blob of ``trained - base + residual`` and the new
    residual (float32: what was not sent, added to the next round's delta; error feedback)."""
    if len(trained) != len(base):
        raise CodecError(f"{len(trained)} trained arrays for {len(base)} base arrays")
    delta = [t.astype(np.float64) - b.astype(np.float64) for t, b in zip(trained, base,
                                                                          strict=True)]  # fmt: skip
    if residual is not None:
        if [r.shape for r in residual] != [d.shape for d in delta]:
            raise CodecError("the residual does not have the model's shapes")
        delta = [d + r.astype(np.float64) for d, r in zip(delta, residual, strict=True)]
    blob, sent = compress(delta, scheme, base_digest=base_digest)
    left = [(d - s).astype(np.float32) for d, s in zip(delta, sent, strict=True)]
    return blob, left
