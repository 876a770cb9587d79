"""Validation of aggregation inputs, and their canonical order.

A rule never aborts because of one bad input: each input is checked here, rejected with a
reason, or quantized to fixed point and put in a canonical order (by the digest of its quantized
content), so the rule's result cannot depend on the order its caller listed the inputs in.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedledger.aggregation.fixedpoint import MAX_ABS_VALUE, quantize
from fedledger.errors import AggregationError, InvalidUpdateError

ArraySpec = tuple[tuple[int, ...], np.dtype]
"""Shape and dtype of one parameter array."""

ParamSpec = tuple[ArraySpec, ...]
"""Shapes and dtypes of a whole parameter list: every input must match it."""

_FLOAT_KINDS = ("f",)


def spec_of(params: Sequence[np.ndarray]) -> ParamSpec:
    """The spec (shapes and dtypes) of a parameter list."""
    return tuple((tuple(int(s) for s in a.shape), np.dtype(a.dtype)) for a in params)


def check_update(params: object, spec: ParamSpec) -> None:
    """Raise :class:`InvalidUpdateError` with a reason unless ``params`` matches ``spec`` and is
    finite and within the fixed-point range."""
    if isinstance(params, np.ndarray | str | bytes) or not isinstance(params, Sequence):
        raise InvalidUpdateError("not a list of arrays")
    if len(params) != len(spec):
        raise InvalidUpdateError(f"has {len(params)} arrays, expected {len(spec)}")
    for i, (a, (shape, dtype)) in enumerate(zip(params, spec, strict=True)):
        if not isinstance(a, np.ndarray):
            raise InvalidUpdateError(f"array {i} is a {type(a).__name__}, not a numpy array")
        if a.dtype != dtype:
            raise InvalidUpdateError(f"array {i} has dtype {a.dtype}, expected {dtype}")
        if a.shape != shape:
            raise InvalidUpdateError(f"array {i} has shape {a.shape}, expected {shape}")
        if not np.all(np.isfinite(a)):
            raise InvalidUpdateError(f"array {i} has NaN or Inf values")
        if a.size and float(np.max(np.abs(a))) >= MAX_ABS_VALUE:
            raise InvalidUpdateError(
                f"array {i} has a value of magnitude >= {MAX_ABS_VALUE:g}, "
                "outside the fixed-point range"
            )


def check_weight(weight: object) -> int:
    """A self-reported example count: a positive integer."""
    if isinstance(weight, bool) or not isinstance(weight, int | np.integer):
        raise InvalidUpdateError(f"weight {weight!r} is not an integer")
    if weight <= 0:
        raise InvalidUpdateError(f"weight {weight} is not positive")
    return int(weight)


def _signature(params: object) -> ParamSpec | None:
    if isinstance(params, np.ndarray | str | bytes) or not isinstance(params, Sequence):
        return None
    if not all(isinstance(a, np.ndarray) for a in params):
        return None
    spec = spec_of(params)
    if not spec or any(dtype.kind not in _FLOAT_KINDS for _, dtype in spec):
        return None
    return spec


def infer_spec(updates: Sequence[object]) -> ParamSpec | None:
    """The most common well-formed signature among the inputs (ties: the smallest repr).

    Independent of input order. None when no input is a list of float arrays.
    """
    counts = Counter(sig for sig in map(_signature, updates) if sig is not None)
    if not counts:
        return None
    best = max(counts.values())
    return min((sig for sig, c in counts.items() if c == best), key=repr)


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """Valid inputs in canonical order, as one fixed-point matrix."""

    spec: ParamSpec
    index: tuple[int, ...]
    """Caller's index of each row of ``matrix``."""
    matrix: np.ndarray
    """int64, shape (n_valid, n_coordinates), rows in canonical order."""
    weights: tuple[int, ...]
    """Weight of each row (1 where the rule ignores weights)."""
    rejected: Mapping[int, str]
    """Caller's index -> reason, for every rejected input."""
    n_inputs: int

    @property
    def n(self) -> int:
        return len(self.index)

    def without(self, reasons: Mapping[int, str]) -> Prepared:
        """These inputs (by caller index) rejected too, with their reasons."""
        if not reasons:
            return self
        keep = [r for r, i in enumerate(self.index) if i not in reasons]
        return Prepared(
            spec=self.spec,
            index=tuple(self.index[r] for r in keep),
            matrix=self.matrix[keep],
            weights=tuple(self.weights[r] for r in keep),
            rejected={**self.rejected, **reasons},
            n_inputs=self.n_inputs,
        )


def prepare(
    updates: Sequence[object] | Prepared,
    weights: Sequence[object] | None = None,
    *,
    spec: ParamSpec | None = None,
) -> Prepared:
    """Validate, quantize and canonically order the inputs of a rule.

    Inputs that are already :class:`Prepared` are returned as they are: a rule called from
    :func:`fedledger.aggregation.aggregate` receives its inputs prepared once, after the
    screens and mixing, and does not validate or quantize them again.
    """
    if isinstance(updates, Prepared):
        return updates
    if weights is not None and len(weights) != len(updates):
        raise AggregationError(f"{len(weights)} weights for {len(updates)} updates")
    if spec is None:
        spec = infer_spec(updates)
    rejected: dict[int, str] = {}
    rows: list[tuple[int, np.ndarray, int]] = []
    for i, params in enumerate(updates):
        try:
            if spec is None:
                raise InvalidUpdateError("not a list of float arrays")
            check_update(params, spec)
            w = 1 if weights is None else check_weight(weights[i])
        except InvalidUpdateError as exc:
            rejected[i] = str(exc)
            continue
        assert isinstance(params, Sequence)
        flat = np.concatenate([quantize(a).reshape(-1) for a in params]) if spec else _EMPTY
        rows.append((i, flat, w))
    return canonical(spec or (), rows, rejected=rejected, n_inputs=len(updates))


def canonical(
    spec: ParamSpec,
    rows: Sequence[tuple[int, np.ndarray, int]],
    *,
    rejected: Mapping[int, str],
    n_inputs: int,
) -> Prepared:
    """Valid fixed-point rows ``(caller index, int64 row, weight)`` in canonical order: by the
    sha256 of their values and weight (then index), so every permutation of the same inputs
    gives the same matrix."""
    keyed = [
        (hashlib.sha256(flat.astype("<i8").tobytes() + w.to_bytes(8, "big")).digest(), i, flat, w)
        for i, flat, w in rows
    ]
    keyed.sort(key=lambda r: (r[0], r[1]))
    size = sum(int(np.prod(shape)) for shape, _ in spec)
    matrix = np.stack([r[2] for r in keyed]) if keyed else np.zeros((0, size), dtype=np.int64)
    return Prepared(
        spec=spec,
        index=tuple(r[1] for r in keyed),
        matrix=matrix,
        weights=tuple(r[3] for r in keyed),
        rejected=dict(rejected),
        n_inputs=n_inputs,
    )


_EMPTY = np.zeros(0, dtype=np.int64)


def unflatten(flat: np.ndarray, spec: ParamSpec) -> list[np.ndarray]:
    """Split a flat float vector back into arrays of the spec's shapes and dtypes."""
    out: list[np.ndarray] = []
    offset = 0
    for shape, dtype in spec:
        size = int(np.prod(shape))
        out.append(np.asarray(flat[offset : offset + size].reshape(shape), dtype=dtype, order="C"))
        offset += size
    return out
