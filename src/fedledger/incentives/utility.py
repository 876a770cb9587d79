"""A round's utility ``v(S)``: how many validation examples the model aggregated from the
coalition ``S`` classifies correctly, computed exactly in integers.

Scores decide payouts, so every node and the audit must compute the same utility on any
machine: no floating point (BLAS sums in an order that depends on the machine and its threads,
and one flipped near-tie would change a score). :class:`DenseNetwork` evaluates the task
models that are chains of linear layers with ReLU between them (``logreg``, ``mlp``) in fixed
point: activations with ``ACT_BITS`` fractional bits, weights with ``WEIGHT_BITS``, int64
products checked against overflow before each layer, each layer's output rounded half up back
to ``ACT_BITS``. The prediction is the first index of the largest output.

``S``'s model is plain FedAvg of its members' models in the aggregation rules' fixed point
(:func:`fedledger.aggregation.fixedpoint.weighted_mean`, weights the example counts); the
empty coalition's is the round's base model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedledger.aggregation import fixedpoint as fx
from fedledger.errors import AggregationError

ACT_BITS = 12
WEIGHT_BITS = 16
_LIMIT = 1 << 62


def _to_bits(q24: np.ndarray, bits: int) -> np.ndarray:
    """Fixed point with 24 fractional bits to ``bits`` (< 24), rounding half up."""
    shift = fx.FRAC_BITS - bits
    out: np.ndarray = np.right_shift(q24 + np.int64(1 << (shift - 1)), shift)
    return out


class DenseNetwork:
    """A chain of linear layers (``weight (out, in)``, ``bias (out,)``), ReLU between them,
    evaluated exactly in integers. ``flat`` is the model's parameters in the aggregation's fixed
    point (24 fractional bits), in state-dict order; ``shapes`` their shapes."""

    def __init__(self, flat: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> None:
        if len(shapes) % 2 or not shapes:
            raise AggregationError("a dense network is pairs of (weight, bias)")
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        offset = 0
        for k in range(0, len(shapes), 2):
            w_shape, b_shape = tuple(shapes[k]), tuple(shapes[k + 1])
            if len(w_shape) != 2 or b_shape != (w_shape[0],):
                raise AggregationError(f"layer {k // 2}: weight {w_shape} and bias {b_shape} "
                                       "are not a linear layer's")  # fmt: skip
            if self.layers and self.layers[-1][0].shape[0] != w_shape[1]:
                raise AggregationError(f"layer {k // 2} takes {w_shape[1]} inputs, the one "
                                       f"before gives {self.layers[-1][0].shape[0]}")  # fmt: skip
            size_w, size_b = w_shape[0] * w_shape[1], w_shape[0]
            w = flat[offset : offset + size_w].reshape(w_shape)
            b = flat[offset + size_w : offset + size_w + size_b]
            offset += size_w + size_b
            # Weights at WEIGHT_BITS; the bias at the product's scale (ACT + WEIGHT bits).
            bias = np.left_shift(_to_bits(b, ACT_BITS), WEIGHT_BITS)
            self.layers.append((_to_bits(w, WEIGHT_BITS).T.copy(), bias))
        if offset != flat.size:
            raise AggregationError(f"{flat.size} parameters, the layers hold {offset}")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The predicted class of each row of ``x`` (activations at ACT_BITS, int64)."""
        a = x
        for i, (w, b) in enumerate(self.layers):
            bound = int(np.abs(a).max(initial=0)) * int(np.abs(w).max(initial=0)) * w.shape[0]
            if bound + int(np.abs(b).max(initial=0)) >= _LIMIT:
                raise AggregationError(f"layer {i}: values too large to evaluate exactly")
            z = a @ w + b  # exact: int64, bounded above
            a = np.right_shift(z + np.int64(1 << (WEIGHT_BITS - 1)), WEIGHT_BITS)
            if i + 1 < len(self.layers):
                a = np.maximum(a, 0)
        out: np.ndarray = np.argmax(a, axis=1)
        return out


def quantize_inputs(x: np.ndarray) -> np.ndarray:
    """Validation features at ACT_BITS fractional bits (finite, below the rules' bound)."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if not np.all(np.isfinite(flat)) or np.abs(flat).max(initial=0) >= fx.MAX_ABS_VALUE:
        raise AggregationError("validation features must be finite and below 2**17")
    out: np.ndarray = np.rint(flat * float(1 << ACT_BITS)).astype(np.int64)
    return out


class RoundUtility:
    """``v(S)`` for a round: ``models`` are the members' fixed-point models (24 fractional
    bits, flattened), ``weights`` their example counts, ``base`` the round's base model."""

    def __init__(self, *, base: np.ndarray, models: Sequence[np.ndarray],
                 weights: Sequence[int], shapes: Sequence[tuple[int, ...]], x: np.ndarray,
                 y: np.ndarray) -> None:  # fmt: skip
        if len(models) != len(weights):
            raise AggregationError(f"{len(models)} models but {len(weights)} weights")
        if any(m.shape != base.shape for m in models):
            raise AggregationError("every model must have the base model's parameters")
        if len(x) != len(y) or not len(x):
            raise AggregationError("the validation set needs as many labels as examples, >= 1")
        self.base, self.models = base, list(models)
        self.weights = [max(1, int(w)) for w in weights]
        self.shapes = [tuple(s) for s in shapes]
        self.x = quantize_inputs(x)
        self.y = np.asarray(y, dtype=np.int64)
        DenseNetwork(base, self.shapes)  # the architecture is checked once, first

    def model_of(self, s: frozenset[int]) -> np.ndarray:
        if not s:
            return self.base
        members = sorted(s)
        return fx.weighted_mean([self.models[i] for i in members],
                                [self.weights[i] for i in members])  # fmt: skip

    def __call__(self, s: frozenset[int]) -> int:
        predicted = DenseNetwork(self.model_of(s), self.shapes).predict(self.x)
        return int(np.count_nonzero(predicted == self.y))
