"""benchmarks/startup.py's pieces, without Flower: memory of a process tree from /proc, the
phases of a run, the export of the task for the Flower app, the table and its quoted baseline;
and one tiny end-to-end run of fedledger alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from benchmarks import startup

from fedledger.config import load_config
from fedledger.seeds import derive_seed
from fedledger.task import prepare_task


def test_memory_of_a_process_and_of_its_tree() -> None:
    mine = startup.smaps_rollup(os.getpid())
    assert mine is not None
    assert mine["rss"] >= mine["pss"] >= mine["uss"] > 0
    assert startup.smaps_rollup(2**22 + 1) is None  # no such process
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    try:
        table = startup.process_table()
        assert table[child.pid][0] == os.getpid()
        assert child.pid in startup.descendants(os.getpid(), table)
        assert os.getpid() not in startup.descendants(child.pid, table)
        assert startup.role_of(child.pid, os.getpid(), table) == "other"
        assert startup.role_of(os.getpid(), os.getpid(), table) == "launcher"
        tree = startup.TreeMemory(os.getpid())
        tree.sample()
        tree.sample()
        summary = tree.summary()
    finally:
        child.communicate(b"")
    assert summary["samples"] == 2
    assert summary["roles"]["other"]["processes"] >= 1
    assert summary["roles"]["launcher"]["rss_mb_max"] >= summary["roles"]["launcher"]["uss_mb_max"]
    assert summary["total_rss_mb"] >= summary["total_pss_mb"] > 0


def test_roles_tell_the_fork_server_from_its_forks() -> None:
    server = "python -c from multiprocessing.forkserver import main; main(3, 4)"
    table = {1: (0, "python -m fedledger run"), 2: (1, server), 3: (2, server),
             4: (1, "python -c from multiprocessing.resource_tracker import main"),
             5: (1, "python -m fedledger node --config n/node.toml")}  # fmt: skip
    roles = {pid: startup.role_of(pid, 1, table) for pid in table}
    assert roles == {1: "launcher", 2: "fork-server", 3: "node", 4: "resource-tracker", 5: "node"}


def test_phases_from_the_nodes_rounds(tmp_path: Path) -> None:
    for node, times in ((0, (10.0, 11.0, 12.0)), (1, (10.5, 11.2, 12.5))):
        state = tmp_path / f"node-{node}" / "state"
        state.mkdir(parents=True)
        lines = [json.dumps({"round": r, "t": t}) for r, t in enumerate(times, 1)]
        (state / "rounds.jsonl").write_text("\n".join(lines) + "\n")
    ends = startup.round_ends(tmp_path)
    assert ends == [10.5, 11.2, 12.5]
    ph = startup.phases(ends, launched=2.5, wall=11.0)
    assert ph == {"startup_s": 8.0, "rounds_s": 2.0, "exit_s": 1.0}
    assert all(v != v for v in startup.phases([], launched=0.0, wall=1.0).values())  # NaN


def test_the_export_holds_fedledgers_own_partition_and_seeds(tmp_path: Path) -> None:
    config = startup.DEFAULT_CONFIG
    settings = startup.export_task(config, tmp_path / "task.npz", rounds=2, nodes=4)
    assert settings["nodes"] == 4
    assert settings["rounds"] == 2
    cfg = load_config(config)
    assert settings["lr"] == cfg.train.lr
    assert settings["batch_size"] == cfg.train.batch_size
    task = prepare_task(replace(cfg, nodes=4))
    with np.load(tmp_path / "task.npz") as data:
        for node in task.data.nodes:
            assert np.array_equal(data[f"x{node.node}"], node.train.x)
            assert np.array_equal(data[f"y{node.node}"], node.train.y)
        assert np.array_equal(data["test_y"], task.data.test.y)
        init = task.trainer.init_params(derive_seed(cfg.seed, "init"))
        for k, p in enumerate(init):
            assert np.array_equal(data[f"init{k}"], p)
        assert data["fit_seeds"].shape == (2, 4)
        assert int(data["fit_seeds"][1, 3]) == derive_seed(cfg.seed, "fit", 2, 3)


def _row(system: str, wall: float, pss: float) -> dict[str, object]:
    memory = {"processes": 3, "total_pss_mb": pss, "total_rss_mb": 2 * pss,
              "roles": {"node": {"processes": 2, "rss_mb_mean": 300.0, "pss_mb_mean": 90.0,
                                 "uss_mb_mean": 60.0}}}  # fmt: skip
    phases = {"startup_s": 5.0, "rounds_s": 10.0, "exit_s": 1.0}
    return {"system": system, "wall_s": wall, "acc": 0.96, "memory": memory, "phases": phases}


def test_the_table_compares_with_flower_or_says_the_figure_is_quoted() -> None:
    runs = [_row("Flower 1.42.0 simulation", 30.0, 2000.0), _row("fedledger (fork)", 36.0, 900.0),
            _row("fedledger (fork)", 40.0, 950.0)]  # fmt: skip
    rows = startup.summarize(runs)
    assert [r["system"] for r in rows] == ["Flower 1.42.0 simulation", "fedledger (fork)"]
    assert rows[1]["walls"] == [36.0, 40.0]
    assert rows[1]["wall_s"] == 38.0
    assert rows[1]["memory"]["total_pss_mb"] == 950.0  # the larger run's
    baseline = startup.baseline_of(rows)
    assert baseline["measured"] is True
    lines = startup.table(rows, baseline)
    assert "| fedledger (fork) | 38.0 (36.0, 40.0) | 1.27 |" in lines[3]
    assert "300 / 90 / 60" in lines[3]
    quoted = startup.baseline_of(rows[1:])
    assert quoted["measured"] is False
    assert quoted["label"] == "Flower (quoted)"
    assert "x Flower (quoted)" in startup.table(rows[1:], quoted)[0]


def test_the_flower_environment_is_pinned() -> None:
    pins = [line for line in startup.FLOWER_REQUIREMENTS.read_text().splitlines()
            if line and not line.startswith("#")]  # fmt: skip
    assert all("==" in line for line in pins)
    assert "flwr==1.42.0" in pins
    assert any(line.startswith("torch==2.13.0+cpu") for line in pins)  # never a CUDA build
    cmd = startup.flower_install_command(Path("/v"))
    assert cmd[:3] == ["/v/bin/python", "-m", "pip"]
    assert str(startup.FLOWER_REQUIREMENTS) in cmd


@pytest.mark.slow
def test_a_tiny_run_of_fedledger_alone(tmp_path: Path) -> None:
    args = ["--no-flower", "--modes", "fork", "--rounds", "2", "--nodes", "3", "--repeat", "1",
            "--out", str(tmp_path)]  # fmt: skip
    assert startup.main(args) == 0
    result = json.loads((tmp_path / "startup.json").read_text())
    assert result["baseline"]["measured"] is False
    (run,) = result["runs"]
    assert run["rounds"] == 2
    roles = run["memory"]["roles"]
    assert roles["node"]["processes"] == 3
    assert roles["fork-server"]["processes"] == 1
    # forked nodes share the fork server's pages: each one's own (USS) is far below its RSS
    assert roles["node"]["uss_mb_max"] < roles["node"]["rss_mb_mean"] / 2
    assert run["phases"]["rounds_s"] >= 0
    assert (tmp_path / "results.md").read_text().startswith("| system |")
