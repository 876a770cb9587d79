"""Free-riding: an update identical to the round's base model is rejected by every rule."""

from __future__ import annotations

import numpy as np
import pytest

from fedledger.aggregation import RULES, aggregate, spec_of
from fedledger.aggregation.rules import FREE_RIDING

BASE = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), np.ones(2, np.float32)]


def params_for(rule: str) -> dict[str, float]:
    return {"trimmed_mean": {"beta": 0.2}, "centered_clipping": {"tau": 10.0}}.get(rule, {})


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_copy_of_the_base_is_rejected_and_scores_zero(rule: str) -> None:
    rng = np.random.default_rng(3)
    trained = [[p + rng.normal(0, 0.1, p.shape).astype(np.float32) for p in BASE] for _ in range(7)]
    lazy = [p.copy() for p in BASE]
    updates = [*trained[:3], lazy, *trained[3:]]
    f = 0 if rule == "fedavg" else 1
    result = aggregate(rule, updates, [10] * len(updates), f=f, params=params_for(rule),
                       spec=spec_of(BASE), center=BASE)  # fmt: skip
    assert result.rejected == {3: FREE_RIDING}
    assert result.scores[3] == 0
    assert 3 not in result.kept
    # Without the base model the rule cannot tell: the copy counts as an update.
    blind = aggregate(rule, updates, [10] * len(updates), f=f, params=params_for(rule),
                      spec=spec_of(BASE))  # fmt: skip
    assert 3 not in blind.rejected


def test_an_update_that_differs_by_one_quantum_is_not_free_riding() -> None:
    nudged = [BASE[0].copy(), BASE[1] + np.float32(2**-20)]
    result = aggregate("fedavg", [nudged, nudged], [1, 1], spec=spec_of(BASE), center=BASE)
    assert result.rejected == {}


def test_norm_bound_rejects_steps_far_longer_than_the_rounds_median() -> None:
    rng = np.random.default_rng(4)
    trained = [[p + rng.normal(0, 0.1, p.shape).astype(np.float32) for p in BASE] for _ in range(7)]
    boosted = [BASE[0] + 10 * (trained[0][0] - BASE[0]), BASE[1] + 10 * (trained[0][1] - BASE[1])]
    updates = [*trained, boosted]
    result = aggregate("fedavg", updates, [1] * 8, params={"norm_bound": 3.0},
                       spec=spec_of(BASE), center=BASE)  # fmt: skip
    assert set(result.rejected) == {7}
    assert "longer than 3.0 x the round's median" in result.rejected[7]
    assert result.scores[7] == 0
    # The same verdict and bytes under any order of the inputs.
    order = [7, 3, 0, 5, 1, 6, 2, 4]
    shuffled = aggregate("fedavg", [updates[i] for i in order], [1] * 8,
                         params={"norm_bound": 3.0}, spec=spec_of(BASE), center=BASE)  # fmt: skip
    assert set(shuffled.rejected) == {0}
    assert all(np.array_equal(a, b) for a, b in zip(result.params, shuffled.params, strict=True))
    # A looser bound keeps it; no bound keeps it.
    loose = aggregate("fedavg", updates, [1] * 8, params={"norm_bound": 20.0},
                      spec=spec_of(BASE), center=BASE)  # fmt: skip
    assert loose.rejected == {}


def test_norm_bound_needs_a_positive_number() -> None:
    from fedledger.config import AggregationConfig
    from fedledger.errors import AggregationError, ConfigError

    with pytest.raises(AggregationError):
        aggregate("median", [BASE, BASE], params={"norm_bound": 0}, spec=spec_of(BASE),
                  center=BASE)  # fmt: skip
    with pytest.raises(ConfigError, match="norm_bound"):
        AggregationConfig(rule="median", params={"norm_bound": -1})
    assert (
        AggregationConfig(rule="krum", f=1, params={"norm_bound": 2.5}).params["norm_bound"] == 2.5
    )
