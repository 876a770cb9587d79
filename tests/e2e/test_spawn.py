"""Node processes forked from the fork server (fedledger.run.spawn): each is its own OS process
with its own stderr.log, environment and working directory, reports its exit status like a
Popen, and can be killed and started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedledger.config import load_config
from fedledger.gossip.topology import TopologySpec
from fedledger.run.plan import plan
from fedledger.run.processes import run_processes, start_node_process
from fedledger.run.results import merge_report
from fedledger.run.spawn import ForkedProcess, fork_node

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def _memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    return fields


def test_a_forked_command_runs_in_its_cwd_with_its_env_and_writes_stderr_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "node.toml").write_text("this is not TOML =\n")
    log = tmp_path / "stderr.log"
    log.write_text("before\n")
    env = {**os.environ, "FEDLEDGER_DEBUG": "1"}
    # A relative path: found only in the working directory of this process, not the server's.
    proc = fork_node(["node", "--config", "node.toml"], stderr=log, env=env)
    assert isinstance(proc, ForkedProcess)
    assert isinstance(proc, subprocess.Popen)
    assert proc.pid != os.getpid()
    assert proc.wait(timeout=120) == 2  # fedledger's exit status for a FedledgerError
    assert proc.returncode == 2
    assert proc.poll() == 2
    text = log.read_text()
    assert text.startswith("before\n")  # appended, as Popen's stderr file was
    assert "error:" in text
    assert "node.toml" in text
    assert "Traceback" in text  # FEDLEDGER_DEBUG reached it: its env is the one given
    proc.send_signal(signal.SIGTERM)  # a finished process: nothing happens


def test_wait_times_out_like_popen_and_a_kill_is_reported_as_the_signal(tmp_path: Path) -> None:
    # `fedledger node` on a config without peers waits for them: alive until killed.
    task = replace(load_config(DIGITS), nodes=2, rounds=5)
    (tmp_path / "task.toml").write_text(task.to_toml())
    configs = plan(task, task_path=tmp_path / "task.toml", out=tmp_path, mode="consensus",
                   topology=TopologySpec(), transport="grpc")  # fmt: skip
    proc = start_node_process(configs[0])
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)
    assert proc.poll() is None
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert proc.returncode == -signal.SIGKILL


def _rounds_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


@pytest.mark.slow
def test_forked_nodes_are_their_own_processes_and_a_killed_one_restarts(tmp_path: Path) -> None:
    rounds = 40
    task = replace(load_config(DIGITS), nodes=3, rounds=rounds)
    (tmp_path / "task.toml").write_text(task.to_toml())
    configs = plan(task, task_path=tmp_path / "task.toml", out=tmp_path, mode="consensus",
                   topology=TopologySpec(), transport="grpc")  # fmt: skip
    victim = configs[1]
    seen: dict[str, Any] = {}

    def chaos(procs: dict[int, subprocess.Popen[bytes]]) -> None:
        done = _rounds_of(victim.state_dir / "rounds.jsonl")
        alive = all(p.poll() is None for p in procs.values())
        if "killed" not in seen and len(done) >= 2 and alive:
            pids = {i: p.pid for i, p in procs.items()}
            assert len(set(pids.values())) == 3
            assert os.getpid() not in pids.values()
            servers = {_parent_of(pid) for pid in pids.values()}
            assert len(servers) == 1
            assert os.getpid() not in servers
            (server,) = servers
            seen["memory"] = {i: _memory_kb(pid) for i, pid in pids.items()}
            seen["server"] = _memory_kb(server)
            procs[1].send_signal(signal.SIGKILL)
            seen["status"] = procs[1].wait()
            seen["killed"] = True
            seen["killed_pid"] = procs[1].pid
            procs[1] = start_node_process(victim)
            seen["restarted_pid"] = procs[1].pid

    summaries = run_processes(configs, timeout=600, on_poll=chaos)
    assert seen["status"] == -signal.SIGKILL
    assert seen["restarted_pid"] not in (seen["killed_pid"], os.getpid())
    for mem in seen["memory"].values():
        # Its own process: private pages of its own (its data, model, gRPC), and far fewer
        # than it maps: the modules it shares with the fork server, copy-on-write.
        private = mem["Private_Clean"] + mem["Private_Dirty"]
        assert private > 10 * 1024
        assert private < mem["Rss"] / 2
        assert mem["Pss"] < mem["Rss"]
    report = merge_report(configs, summaries, mode="consensus", transport="grpc",
                          topology=TopologySpec()).to_dict()  # fmt: skip
    assert report["final"]["rounds_completed"] == rounds
    assert report["final"]["model_digests_agree"] is True
    victim_rounds = [r["round"] for r in _rounds_of(victim.state_dir / "rounds.jsonl")]
    assert victim_rounds[-1] == rounds
    assert victim_rounds.count(1) == 1  # resumed from its state directory
    log = (victim.state_dir.parent / "stderr.log").read_text()
    assert log.count("consensus mode") == 2  # both lives wrote to its stderr.log
    assert "finished: model" in log
