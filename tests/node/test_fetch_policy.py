"""A node's fetch bounds when many nodes share one process (simulations of hundreds)."""

from __future__ import annotations

import os

import pytest

from fedledger.gossip.fetching import FetchPolicy
from fedledger.node.core import FETCH_HEDGE, fetch_policy


def test_a_node_of_its_own_gets_the_default_hedged_policy() -> None:
    assert fetch_policy() == FetchPolicy(hedge=FETCH_HEDGE)
    assert fetch_policy(sharing=os.cpu_count() or 1) == FetchPolicy(hedge=FETCH_HEDGE)


def test_time_bounds_stretch_with_the_nodes_per_core_and_the_rate_does_not() -> None:
    cores = os.cpu_count() or 1
    base = fetch_policy()
    shared = fetch_policy(sharing=10 * cores)
    assert shared.grace == pytest.approx(10 * base.grace)
    assert shared.stall == pytest.approx(10 * base.stall)
    assert shared.deadline == pytest.approx(10 * base.deadline)
    assert shared.hedge == pytest.approx(10 * base.hedge)
    assert shared.min_rate == base.min_rate
    assert shared.parallel == base.parallel
    capped = fetch_policy(sharing=1000 * cores)
    assert capped.grace == pytest.approx(50 * base.grace)


@pytest.mark.parametrize("sharing", [0, -3, True, 2.5])
def test_bad_sharing(sharing: object) -> None:
    with pytest.raises(ValueError, match="sharing"):
        fetch_policy(sharing=sharing)  # type: ignore[arg-type]
