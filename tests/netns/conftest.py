"""Fixtures for tests on real (namespaced) hosts: skipped, with the reason, where namespaces
cannot be made; always cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.netns.harness import Network, unavailable


@pytest.fixture
def make_network(tmp_path: Path) -> Iterator[Callable[[int], Network]]:
    """``make_network(n)``: a started :class:`Network` of ``n`` hosts, closed after the test
    whatever happens (processes killed, namespaces deleted)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    made: list[Network] = []

    def make(hosts: int) -> Network:
        net = Network(hosts, tmp_path / f"net{len(made)}")
        made.append(net)
        return net.start()

    try:
        yield make
    finally:
        for net in made:
            net.close()
