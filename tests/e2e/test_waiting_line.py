"""End to end: the run's progress line says whom the nodes wait for, from the status files the
nodes write; here a node that announces its update and serves its blob to nobody."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from fedledger.config import load_config
from fedledger.gossip.topology import TopologySpec
from fedledger.node.consensus import Timeouts
from fedledger.node.state import read_status
from fedledger.run.local import run_in_memory
from fedledger.run.plan import plan
from fedledger.run.progress import RunProgress
from fedledger.run.results import merge_report
from fedledger.run.task import within

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


def test_the_progress_line_names_the_node_that_withholds_its_update(tmp_path: Path) -> None:
    # Consensus mode: the honest nodes see the withholder's announcement, cannot fetch its
    # blob, and wait for it each round until the collect deadline (at least a second here).
    task = replace(load_config(DIGITS), nodes=3, rounds=3)
    task_path = tmp_path / "task.toml"
    task_path.write_text(task.to_toml(), encoding="utf-8")
    withholder = 2
    configs = plan(task, task_path=task_path, out=tmp_path, mode="consensus",
                   topology=TopologySpec(), transport="memory",
                   timeouts=Timeouts(initial=2.0, minimum=1.0, maximum=4.0),
                   attack="withhold", attackers=(withholder,))  # fmt: skip
    seen: list[RunProgress] = []
    summaries = within(300, run_in_memory(configs, progress=seen.append))

    report = merge_report(configs, summaries, mode="consensus", transport="memory",
                          topology=TopologySpec())  # fmt: skip
    assert report.final["rounds_completed"] == 3
    assert report.final["model_digests_agree"] is True
    address = next(p.address for p in configs[0].peers if p.index == withholder)
    named = f"waiting for updates from node {withholder} ({address[:6]}…) until "
    lines = [p.waiting for p in seen if p.waiting is not None and named in p.waiting]
    assert lines, [p.waiting for p in seen]
    assert all(re.fullmatch(rf"round [123]: {re.escape(named)}\d\d:\d\d:\d\d", x) for x in lines)
    assert seen[-1].total == 3
    # Every node cleared its status file on the way out: nobody waits any more.
    for cfg in configs:
        status = read_status(cfg.state_dir)
        assert status is not None
        assert status["node"] == cfg.index
        assert status["waiting"] is None
