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
