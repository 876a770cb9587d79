"""The fault suite runs on real (namespaced) hosts: skipped, with the reason, where network
namespaces cannot be made."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedledger.config import TaskConfig
from tests.faults.cluster import Cluster
from tests.netns.harness import Network, unavailable


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[[TaskConfig], Cluster]]:
    """``make_cluster(task)``: a started :class:`Cluster` (the task running on its hosts); its
    network closed after the test whatever happens."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    nets: list[Network] = []

    def make(task: TaskConfig) -> Cluster:
        net = Network(task.nodes, tmp_path / f"net{len(nets)}")
        nets.append(net)
        net.start()
        cluster = Cluster(net, task, tmp_path / f"run{len(nets)}")
        cluster.start()
        return cluster

    try:
        yield make
    finally:
        for net in nets:
            net.close()
