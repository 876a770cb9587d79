"""Hundreds of nodes on one machine (issue 16): 200 ledger nodes in one process (memory
transport, the embedded chain) on 2 cores finalize every round in under 4 GB; 1,000 nodes
without the ledger (gossip mode on a 4-regular graph) finish their rounds in under 3 GB, each
node sending about as much as one of ten would."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks import scale

NODES = 200
ROUNDS = 2


@pytest.mark.slow
def test_two_hundred_ledger_nodes_finalize_every_round_in_under_4_gb(tmp_path: Path) -> None:
    # A fresh process: its peak memory (ru_maxrss) is the run's own.
    row = scale.measure(scale.DEFAULT_CONFIG, NODES, ROUNDS, "embedded", tmp_path)
    assert row["nodes"] == NODES
    assert row["finalized"] == ROUNDS
    assert row["peak_mb"] < 4096
    assert row["acc"] > 0.2  # 200 nodes hold about 7 training images each: learning, not chance


@pytest.mark.slow
def test_a_thousand_gossip_nodes_in_one_process(tmp_path: Path) -> None:
    big = scale.measure(scale.DEFAULT_CONFIG, 1000, ROUNDS, "none", tmp_path, mode="gossip",
                        topology="regular", degree=4)  # fmt: skip
    small = scale.measure(scale.DEFAULT_CONFIG, 10, ROUNDS, "none", tmp_path, mode="gossip",
                          topology="regular", degree=4)  # fmt: skip
    assert big["nodes"] == 1000
    assert big["peak_mb"] < 3072
    # Neighbourhood-scoped dissemination: a node's traffic does not grow with the nodes.
    assert big["sent_per_node_round"] < 1.5 * small["sent_per_node_round"]
