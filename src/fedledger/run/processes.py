"""One OS process per node (``fedledger node``), watched from this process."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from fedledger.config.node import NodeConfig
from fedledger.errors import RunFailed
from fedledger.run.plan import ProgressFn
from fedledger.run.progress import RunProgress, progress_of
from fedledger.run.spawn import start_node
from fedledger.rundir import SUMMARY_FILE

log = logging.getLogger("fedledger.run")


def _progress_of(configs: Sequence[NodeConfig]) -> RunProgress:
    """From the node processes' files: rounds done, accuracy, whom they wait for."""
    return progress_of(configs)


def start_node_process(cfg: NodeConfig) -> subprocess.Popen[bytes]:
    """``fedledger node`` for ``cfg`` in its own OS process, its stderr appended to its node
    directory's stderr.log: forked from this process's fork server, which imported torch and
    fedledger once (:mod:`fedledger.run.spawn`; ``FEDLEDGER_NODE_START=exec``: a fresh
    interpreter instead). Called again for a node, it restarts it from its state directory."""
    node_dir = cfg.state_dir.parent
    return start_node(["node", "--config", str(node_dir / "node.toml")],
                      stderr=node_dir / "stderr.log", ledger=cfg.chain is not None)  # fmt: skip


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
    try:
        while any(p.poll() is None for p in procs.values()):
            if deadline is not None and time.monotonic() > deadline:
                raise RunFailed(f"the run did not finish within {timeout} s")
            if on_poll is not None:
                on_poll(procs)
            if progress is not None:
                progress(_progress_of(configs))
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
