"""Each input is validated and quantized once per aggregation, whatever the screens and
mixing in front of the rule (before: three validations and two quantizations per update
under the default robust rule, and the mixed means went back to float32 in between)."""

from __future__ import annotations

import numpy as np
import pytest

from fedledger.aggregation import aggregate, validation
from fedledger.aggregation.fixedpoint import quantize as real


@pytest.mark.parametrize(
    ("rule", "params"),
    [
        ("multi_krum", {"nnm": True, "norm_bound": 3.0}),
        ("trimmed_mean", {"beta": 0.3, "nnm": True}),
        ("centered_clipping", {"tau": 1.0, "norm_bound": 2.0}),
        ("fedavg", {"norm_bound": 3.0}),
    ],
)
def test_every_update_is_quantized_once(
    monkeypatch: pytest.MonkeyPatch, rule: str, params: dict[str, object]
) -> None:
    rng = np.random.default_rng(0)
    base = [rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)]
    updates = [[a + rng.normal(scale=0.1, size=a.shape).astype(np.float32) for a in base]
               for _ in range(9)]  # fmt: skip
    calls = []

    def counting(a: np.ndarray) -> np.ndarray:
        calls.append(a.shape)
        out: np.ndarray = real(a)
        return out

    monkeypatch.setattr(validation, "quantize", counting)
    f = 0 if rule == "fedavg" else 2
    result = aggregate(rule, updates, [10] * 9, f=f, params=params, center=base)
    assert not result.rejected
    # two arrays per update, plus the base model once for the screens
    assert len(calls) == 2 * len(updates) + 2 * (2 if rule == "centered_clipping" else 1)
