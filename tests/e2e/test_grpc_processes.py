"""End to end: one OS process per node, talking gRPC over real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedledger.baseline import run_fedavg
from fedledger.commit import params_digest
from fedledger.config import load_config
from fedledger.gossip.topology import TopologySpec
from fedledger.node.consensus import Timeouts
from fedledger.run.plan import plan
from fedledger.run.processes import run_processes, start_node_process
from fedledger.run.results import merge_report
from fedledger.run.task import run_task
from fedledger.task import prepare_task

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"

pytestmark = pytest.mark.slow


def test_five_node_processes_reach_consensus_on_the_fedavg_model(tmp_path: Path) -> None:
    task = replace(load_config(DIGITS), nodes=5, rounds=10)
    baseline, params = run_fedavg(prepare_task(task))
    report = run_task(task, out=tmp_path, transport="grpc", chain="none", timeout=600).to_dict()
    final = report["final"]
    assert final["rounds_completed"] == 10
    assert final["model_digests_agree"] is True
    assert all(r["model_digests_agree"] and r["nodes_reporting"] == 5 for r in report["rounds"])
    # The bar is "within 2 points of the in-process FedAvg baseline"; consensus mode
    # does better: with every update collected, it computes the very same model, bit for bit.
    assert abs(final["acc_mean"] - baseline.final["acc_mean"]) <= 0.02
    assert final["model_digest"] == params_digest(params).hex()
    assert final["frames_rejected"] == 0
    for i in range(5):  # every node was its own process, with its own key and state
        node_dir = tmp_path / f"node-{i}"
        assert (node_dir / "node.key").stat().st_mode & 0o777 == 0o600
        summary = json.loads((node_dir / "state" / "summary.json").read_text())
        assert summary["final_model"] == final["model_cid"]


def _rounds_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # not a line a running node is still writing
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def test_node_killed_mid_run_restarts_from_disk_and_catches_up(tmp_path: Path) -> None:
    # Long enough that the four survivors are still training when the victim is back.
    # A restart takes 5-20 s on 2 busy cores (importing torch) and rounds ~0.25 s: the
    # survivors must still be training when the victim is back.
    rounds = 300
    task = replace(load_config(DIGITS), nodes=5, rounds=rounds)
    (tmp_path / "task.toml").write_text(task.to_toml())
    configs = plan(task, task_path=tmp_path / "task.toml", out=tmp_path, mode="consensus",
                   topology=TopologySpec(), transport="grpc",
                   timeouts=Timeouts(initial=10.0, minimum=1.0, maximum=20.0))  # fmt: skip
    victim = configs[2]
    rounds_file = victim.state_dir / "rounds.jsonl"
    survivor_file = configs[0].state_dir / "rounds.jsonl"
    events: dict[str, Any] = {}

    def chaos(procs: dict[int, subprocess.Popen[bytes]]) -> None:
        done = _rounds_of(rounds_file)
        if "killed" not in events and len(done) >= 3:
            procs[2].send_signal(signal.SIGKILL)  # no goodbye: a crash
            procs[2].wait()
            events["killed"] = True
            events["rounds_before"] = max(r["round"] for r in done)
        elif (
            "killed" in events
            and "restarted" not in events
            # down until the others have gone on without it: it missed rounds for certain
            and max((r["round"] for r in _rounds_of(survivor_file)), default=0)
            >= events["rounds_before"] + 2
        ):
            procs[2] = start_node_process(victim)
            events["restarted"] = True

    summaries = run_processes(configs, timeout=600, on_poll=chaos)
    assert events.get("restarted"), "the run ended before the node could be restarted"
    report = merge_report(configs, summaries, mode="consensus", transport="grpc",
                          topology=TopologySpec()).to_dict()  # fmt: skip
    assert report["final"]["model_digests_agree"] is True  # the restarted node agrees
    assert report["final"]["rounds_completed"] == rounds
    assert report["final"]["acc_mean"] >= 0.85
    victim_rounds = [r["round"] for r in _rounds_of(rounds_file)]
    assert victim_rounds[-1] == rounds
    missed = set(range(1, rounds + 1)) - set(victim_rounds)
    assert missed, "the victim should have missed rounds while it was down"
    assert min(missed) > events["rounds_before"]
    # it resumed from its state on disk (it never re-ran its early rounds)
    assert victim_rounds.count(1) == 1
    # and it contributed again after catching up: a later round includes all five updates
    rejoined = min(r for r in victim_rounds if r > events["rounds_before"])
    survivor = _rounds_of(configs[0].state_dir / "rounds.jsonl")
    assert any(r["included"] == 5 for r in survivor if r["round"] > rejoined), "never rejoined"
