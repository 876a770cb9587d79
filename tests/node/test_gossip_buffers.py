"""Gossip mode keeps a bounded set of blobs per node (its degree plus a few), whatever the
number of iterations: what a thousand nodes in one process need."""

from __future__ import annotations

from fedledger.node.consensus import Timeouts
from fedledger.node.gossip_mode import KEEP_PUBLISHED, GossipLearner, Mix

A = "0xAaaa000000000000000000000000000000000001"
B = "0xBbbb000000000000000000000000000000000002"
C = "0xCccc000000000000000000000000000000000003"


def _iterate(node: GossipLearner, it: int, now: float) -> tuple[float, list[str]]:
    """One iteration with both neighbours fresh; what the node released after it."""
    node.trained(it, f"a{it}", 10, now)
    node.on_model(B, it, f"b{it}", now)
    node.blob_ready(f"b{it}", now)
    actions = node.on_model(C, it, f"c{it}", now) + node.blob_ready(f"c{it}", now)
    assert any(isinstance(a, Mix) for a in actions)
    node.mixed(it, f"m{it}", now)
    return now + 1.0, node.release()


def test_a_node_forgets_what_it_no_longer_needs_and_keeps_what_peers_may_fetch() -> None:
    third = 1 / 3
    node = GossipLearner(me=A, weights={A: third, B: third, C: third}, iterations=50,
                         initial_model="m0", timeouts=Timeouts(initial=5.0))  # fmt: skip
    node.start(0.0)
    now = 1.0
    released: list[str] = []
    for it in range(1, 41):
        now, gone = _iterate(node, it, now)
        released += gone
        # Its model, its last announced ones, each neighbour's latest: nothing else.
        assert node.blobs == {
            f"m{it}",
            f"b{it}",
            f"c{it}",
            *(f"a{j}" for j in range(it - KEEP_PUBLISHED + 1, it + 1) if j > 0),
        }
    assert len(node.blobs) <= 3 + KEEP_PUBLISHED
    assert {"m0", "b1", "a1"} <= set(released)
    assert not {"m40", "b40", "c40", "a40"} & set(released)
    assert len(released) == len(set(released))  # each forgotten once


def test_a_neighbours_model_still_being_fetched_is_kept() -> None:
    half = 1 / 2
    node = GossipLearner(me=A, weights={A: half, B: half}, iterations=5, initial_model="m0",
                         timeouts=Timeouts(initial=5.0), staleness=1)  # fmt: skip
    node.start(0.0)
    node.trained(1, "a1", 10, 0.0)
    node.on_model(B, 1, "b1", 0.0)  # fetch in flight
    assert "b1" not in node.release()
    node.blob_ready("b1", 0.1)
    node.mixed(1, "m1", 0.2)
    assert "b1" not in node.release()  # still B's latest model
