"""Canonical bytes for a parameter list.

A parameter list is encoded as a `safetensors <https://github.com/huggingface/safetensors>`_
file, so any safetensors reader in any language opens a fedledger blob, but fedledger writes
and accepts only one *canonical* form of it, so that one parameter list has exactly one digest:

* tensors are named ``p000000``, ``p000001``, ... in list order, stored in that order,
  little-endian, C order, with no gaps;
* the header is compact JSON (``separators=(",", ":")``, keys sorted), with
  ``"__metadata__": {"format": "fedledger.params.v1"}``, padded with spaces to a multiple of 8;
* nothing follows the last tensor.

The decoder is strict: it parses the header itself (JSON only: nothing is ever unpickled),
enforces a size limit, and rejects any input whose header is not exactly the canonical one.

The same layout with other metadata carries other canonical tensor lists (a compressed update,
:mod:`fedledger.commit.compression`): :func:`encode_tensors` and :func:`decode_tensors` take
the ``__metadata__`` (string keys and values, ``format`` among them) explicitly.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence

import numpy as np

from fedledger.errors import CodecError

FORMAT = "fedledger.params.v1"
MAX_BLOB_BYTES = 1 << 31
"""Default decode limit (2 GiB); nodes pass their configured, smaller limit."""
MAX_HEADER_BYTES = 1 << 24
MAX_ARRAYS = 100_000
MAX_METADATA_ENTRIES = 16
MAX_METADATA_CHARS = 256

_DTYPES: dict[str, np.dtype] = {
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}


def _name(i: int) -> str:
    return f"p{i:06d}"


def _header(
    entries: Sequence[tuple[str, tuple[int, ...], int]], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Canonical header bytes for (dtype code, shape, nbytes) entries."""
    meta = {"format": FORMAT} if metadata is None else dict(metadata)
    header: dict[str, object] = {"__metadata__": meta}
    offset = 0
    for i, (code, shape, nbytes) in enumerate(entries):
        header[_name(i)] = {
            "dtype": code,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("ascii")
    return raw + b" " * (-len(raw) % 8)


def _check_metadata(metadata: object) -> dict[str, str]:
    """``metadata`` as a ``__metadata__`` table: a few short strings, ``format`` among them."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get("format"), str):
        raise CodecError("__metadata__ must be a table of strings with a format")
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise CodecError(f"__metadata__ has more than {MAX_METADATA_ENTRIES} entries")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise CodecError("__metadata__ must map strings to strings")
        if len(key) > MAX_METADATA_CHARS or len(value) > MAX_METADATA_CHARS:
            raise CodecError(f"__metadata__ entries are at most {MAX_METADATA_CHARS} characters")
    return dict(metadata)


def encode(params: Sequence[np.ndarray]) -> bytes:
    """The canonical safetensors bytes of a parameter list."""
    return encode_tensors(params, metadata={"format": FORMAT})


def encode_tensors(params: Sequence[np.ndarray], *, metadata: Mapping[str, str]) -> bytes:
    """The canonical safetensors bytes of a tensor list with this ``__metadata__``."""
    meta = _check_metadata(dict(metadata))
    if len(params) > MAX_ARRAYS:
        raise CodecError(f"{len(params)} arrays exceed the limit of {MAX_ARRAYS}")
    arrays: list[np.ndarray] = []
    entries: list[tuple[str, tuple[int, ...], int]] = []
    for i, a in enumerate(params):
        if not isinstance(a, np.ndarray):
            raise CodecError(f"item {i} is a {type(a).__name__}, not a numpy array")
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        code = _CODES.get(np.dtype(dtype))
        if code is None:
            raise CodecError(f"array {i} has unsupported dtype {a.dtype}")
        le = np.asarray(a, dtype=_DTYPES[code], order="C")  # keeps 0-d arrays 0-d
        arrays.append(le)
        entries.append((code, tuple(int(s) for s in le.shape), le.nbytes))
    header = _header(entries, meta)
    return b"".join([struct.pack("<Q", len(header)), header, *(a.tobytes() for a in arrays)])


def encoded_size(
    spec: Sequence[tuple[Sequence[int], np.dtype | str]],
    *,
    metadata: Mapping[str, str] | None = None,
) -> int:
    """The exact length of :func:`encode`'s output for arrays of these ``(shape, dtype)``.

    The encoding is canonical, so shapes and dtypes alone fix its size: a node sets the blob
    limit of updates and models to ``encoded_size(spec_of(initial_params))`` and refuses any
    longer blob while it streams in. Raises :class:`CodecError` for an unsupported dtype or a
    negative dimension, like :func:`encode`. ``metadata``: that of :func:`encode_tensors`
    (default: a parameter blob's).
    """
    meta = None if metadata is None else _check_metadata(dict(metadata))
    if len(spec) > MAX_ARRAYS:
        raise CodecError(f"{len(spec)} arrays exceed the limit of {MAX_ARRAYS}")
    entries: list[tuple[str, tuple[int, ...], int]] = []
    for i, (shape, dtype) in enumerate(spec):
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise CodecError(f"array {i} has an invalid dtype {dtype!r}") from exc
        le = dt.newbyteorder("<") if dt.byteorder == ">" else dt
        code = _CODES.get(le)
        if code is None:
            raise CodecError(f"array {i} has unsupported dtype {dt}")
        dims = tuple(int(s) for s in shape)
        if any(s < 0 for s in dims):
            raise CodecError(f"array {i} has a negative dimension in {dims}")
        count = 1
        for s in dims:
            count *= s
        entries.append((code, dims, count * _DTYPES[code].itemsize))
    return 8 + len(_header(entries, meta)) + sum(e[2] for e in entries)


def decode(
    data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_BLOB_BYTES
) -> list[np.ndarray]:
    """Parse canonical bytes back into a parameter list; :class:`CodecError` on anything else."""
    _, arrays = _parse(data, max_bytes=max_bytes, format=FORMAT, exact=True)
    return arrays


def decode_tensors(
    data: bytes | bytearray | memoryview, *, format: str, max_bytes: int = MAX_BLOB_BYTES
) -> tuple[dict[str, str], list[np.ndarray]]:
    """Parse canonical bytes of a tensor list whose ``__metadata__`` names ``format``: the
    metadata and the tensors; :class:`CodecError` on anything else (the caller checks the
    other metadata entries)."""
    return _parse(data, max_bytes=max_bytes, format=format, exact=False)


def _parse(
    data: bytes | bytearray | memoryview, *, max_bytes: int, format: str, exact: bool
) -> tuple[dict[str, str], list[np.ndarray]]:
    view = memoryview(data).cast("B")
    if len(view) > max_bytes:
        raise CodecError(f"blob of {len(view)} bytes exceeds the limit of {max_bytes}")
    if len(view) < 8:
        raise CodecError("blob too short for a safetensors header")
    (hlen,) = struct.unpack("<Q", view[:8])
    if hlen > MAX_HEADER_BYTES or 8 + hlen > len(view):
        raise CodecError(f"header length {hlen} is invalid for a blob of {len(view)} bytes")
    raw_header = bytes(view[8 : 8 + hlen])
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CodecError(f"header is not valid JSON: {exc}") from exc
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    wrong = (metadata != {"format": format} if exact
             else not isinstance(metadata, dict) or metadata.get("format") != format)  # fmt: skip
    if wrong:
        raise CodecError(f"not a {format} blob (missing or wrong __metadata__)")
    metadata = _check_metadata(metadata)
    count = len(header) - 1
    if count > MAX_ARRAYS:
        raise CodecError(f"{count} arrays exceed the limit of {MAX_ARRAYS}")
    entries: list[tuple[str, tuple[int, ...], int]] = []
    for i in range(count):
        entry = header.get(_name(i))
        if not isinstance(entry, dict):
            raise CodecError(f"tensor {_name(i)} missing from the header")
        code, shape = entry.get("dtype"), entry.get("shape")
        if code not in _DTYPES:
            raise CodecError(f"tensor {_name(i)} has unsupported dtype {code!r}")
        if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 1 << 40 for s in shape
        ):
            raise CodecError(f"tensor {_name(i)} has an invalid shape {shape!r}")
        size = 1
        for s in shape:
            size *= s
        nbytes = size * _DTYPES[code].itemsize
        if nbytes > len(view):
            raise CodecError(f"tensor {_name(i)} claims {nbytes} bytes, more than the blob")
        entries.append((code, tuple(shape), nbytes))
    if _header(entries, metadata) != raw_header:
        raise CodecError("header is not in canonical form")
    body = view[8 + hlen :]
    if sum(e[2] for e in entries) != len(body):
        raise CodecError("tensor data does not exactly fill the blob")
    out: list[np.ndarray] = []
    offset = 0
    for code, shape, nbytes in entries:
        chunk = body[offset : offset + nbytes]
        out.append(
            np.frombuffer(chunk, dtype=_DTYPES[code])
            .reshape(shape)
            .astype(_DTYPES[code].newbyteorder("="), copy=True)
        )
        offset += nbytes
    return metadata, out


def params_digest(params: Sequence[np.ndarray]) -> bytes:
    """sha256 of the canonical bytes: the digest nodes attest and compare."""
    return hashlib.sha256(encode(params)).digest()
