"""What ``fedledger run`` shows while the nodes work: the rounds every node finished, their
mean accuracy, and whom they wait for (each node's ``state_dir/status.json``, said by
:func:`fedledger.node.waiting.waiting_line`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fedledger.config.node import NodeConfig
from fedledger.node.state import read_status
from fedledger.node.waiting import waiting_line
from fedledger.rundir import read_rounds


@dataclass(frozen=True, kw_only=True)
class RunProgress:
    """One look at a running task."""

    done: int
    """Rounds every node finished."""
    total: int
    """The task's rounds."""
    acc: float
    """Mean test accuracy of the nodes' latest rounds (0 before any)."""
    waiting: str | None = None
    """Whom the nodes wait for, as :func:`~fedledger.node.waiting.describe_waiting` says it
    (``round 4: waiting for update blobs from node 3 (0x3f1a…) until 12:03:10``), or None."""


ProgressFn = Callable[[RunProgress], None]
"""Called about five times a second while a run's nodes work."""


def node_names(configs: Sequence[NodeConfig]) -> dict[str, str]:
    """``node N`` by address, for every node of the run (from the configurations' peers)."""
    return {p.address: f"node {p.index}" for cfg in configs for p in cfg.peers}


def waiting_of(configs: Sequence[NodeConfig]) -> str | None:
    """Whom the run's nodes wait for, from their status files (None: nobody)."""
    statuses = [read_status(cfg.state_dir) for cfg in configs]
    waits = [s.get("waiting") for s in statuses if s is not None]
    return waiting_line([w for w in waits if isinstance(w, dict)], names=node_names(configs))


def progress_of(configs: Sequence[NodeConfig]) -> RunProgress:
    """The run's progress from its nodes' files (``rounds.jsonl`` and ``status.json``)."""
    last: list[dict[str, Any] | None] = []
    for cfg in configs:
        records = read_rounds(cfg)
        last.append(max(records, key=lambda r: r["round"]) if records else None)
    return of_records(configs, last)


def of_records(configs: Sequence[NodeConfig], last: Sequence[dict[str, Any] | None]) -> RunProgress:
    """The run's progress from each node's latest round record (None: none yet) and its
    status file."""
    done = min((r["round"] if r else 0) for r in last) if last else 0
    accs = [r["acc"] for r in last if r]
    return RunProgress(done=done, total=configs[0].task.rounds if configs else 0,
                       acc=sum(accs) / len(accs) if accs else 0.0,
                       waiting=waiting_of(configs))  # fmt: skip
