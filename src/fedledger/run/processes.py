"""One OS process per node (``fedledger node``), watched from this process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from fedledger.config.node import NodeConfig
from fedledger.errors import RunFailed
from fedledger.run.plan import ProgressFn
from fedledger.rundir import SUMMARY_FILE, read_rounds

log = logging.getLogger("fedledger.run")


def _progress_of(configs: Sequence[NodeConfig]) -> tuple[int, float]:
    last: list[dict[str, Any] | None] = []
    for cfg in configs:
        records = read_rounds(cfg)
        last.append(max(records, key=lambda r: r["round"]) if records else None)
    done = min((r["round"] if r else 0) for r in last)
    accs = [r["acc"] for r in last if r]
    return done, (sum(accs) / len(accs) if accs else 0.0)


def start_node_process(cfg: NodeConfig) -> subprocess.Popen[bytes]:
    node_dir = cfg.state_dir.parent
    log_file = (node_dir / "stderr.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "fedledger", "node", "--config", str(node_dir / "node.toml")],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run_processes(
    configs: Sequence[NodeConfig],
    *,
    progress: ProgressFn | None = None,
    timeout: float | None = None,
    on_poll: Callable[[dict[int, subprocess.Popen[bytes]]], None] | None = None,
) -> list[dict[str, Any]]:
    """One OS process per node; wait for all of them and return their summaries.

    ``on_poll`` is called every poll with the live processes, by node index: tests use it to
    kill and restart a node mid-run.
    """
    procs = {cfg.index: start_node_process(cfg) for cfg in configs}
    deadline = None if timeout is None else time.monotonic() + timeout
    total = configs[0].task.rounds
    try:
        while any(p.poll() is None for p in procs.values()):
            if deadline is not None and time.monotonic() > deadline:
                raise RunFailed(f"the run did not finish within {timeout} s")
            if on_poll is not None:
                on_poll(procs)
            if progress is not None:
                done, acc = _progress_of(configs)
                progress(done, total, acc)
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    # A node that did not complete its task exits non-zero after writing its summary (which
    # says why); one that died before writing it is reported by its exit status.
    summaries: list[dict[str, Any]] = []
    for cfg in configs:
        path = cfg.state_dir / SUMMARY_FILE
        code = procs[cfg.index].returncode
        if path.exists():
            summaries.append(json.loads(path.read_text()))
        else:
            where = cfg.state_dir.parent / "stderr.log"
            failure = f"node process exited with status {code}; see {where}"
            summaries.append({"node": cfg.index, "final_model": None, "failure": failure})
    return summaries
