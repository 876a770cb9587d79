"""ClippedGossip in real gossip-mode runs (10 nodes in one process over the memory transport,
real training on digits): on two cliques joined by one edge, two Gaussian-noise attackers wreck
plain mean mixing, while self-centred clipping keeps the honest nodes near the clean accuracy.
Measurements in docs/aggregation.md ("Gossip mode: ClippedGossip")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedledger.config import MixingConfig, load_config
from fedledger.gossip.topology import TopologySpec, build_topology
from fedledger.run.task import run_task

ROOT = Path(__file__).resolve().parents[2]
# Seed 3 draws attackers 3 and 8 (20 %): one in each clique, neither on the bridge 4-5, so every
# honest node has at most one Byzantine neighbour (a share of 1/4 of its neighbour weight with
# Metropolis-Hastings weights; 1/5 on the bridge) and the honest nodes stay connected.
TASK = replace(load_config(ROOT / "examples" / "digits.toml"), rounds=20, seed=3)
TOPOLOGY = TopologySpec(kind="two_cliques")
CLIPPED = MixingConfig(rule="clipped", delta=0.3)


def run(tmp: Path, mixing: MixingConfig, attack: str | None) -> dict[str, Any]:
    task = replace(TASK, gossip=mixing)
    report = run_task(task, out=tmp, mode="gossip", transport="memory", topology=TOPOLOGY,
                      attack=attack, attackers=0.2 if attack else 0.0)  # fmt: skip
    return report.to_dict()


def honest_acc(report: dict[str, Any]) -> float:
    final = report["final"]
    return float(final.get("honest_acc_mean", final["acc_mean"]))


def test_the_placement_the_runs_rely_on() -> None:
    topo = build_topology(TOPOLOGY, 10, seed=TASK.seed)
    assert topo[4] == (0, 1, 2, 3, 5)
    assert topo[5] == (4, 6, 7, 8, 9)
    assert topo[0] == (1, 2, 3, 4)


@pytest.mark.slow  # about 70 s: three runs of 20 iterations
def test_clipped_gossip_holds_where_mean_mixing_collapses(tmp_path: Path) -> None:
    clean = run(tmp_path / "clean", CLIPPED, None)
    mean = run(tmp_path / "mean", MixingConfig(), "gaussian")
    clipped = run(tmp_path / "clipped", CLIPPED, "gaussian")
    assert mean["attack"] == clipped["attack"] == {"name": "gaussian", "attackers": [3, 8]}
    assert clean["mode"] == mean["mode"] == "gossip"
    assert clean["final"]["rounds_completed"] == 20
    # clean, clipping costs (almost) nothing: measured 0.929, as plain mean mixing
    assert clean["final"]["acc_mean"] >= 0.88
    # two noisy neighbours drag every honest node to chance level with plain mixing (0.15) ...
    assert honest_acc(mean) < 0.3
    # ... while ClippedGossip keeps them within a few points of the clean run (0.915)
    assert honest_acc(clipped) >= clean["final"]["acc_mean"] - 0.05
