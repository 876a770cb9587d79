"""What the command-line tests share: one anvil per test module (port 0, chain id 31337)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedledger.ledger.chain.anvil import AnvilProcess, find_anvil, install_anvil, start_anvil

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilProcess]:
    binary = find_anvil(ROOT) or install_anvil(ROOT)
    with start_anvil(anvil=binary) as node:  # a development chain
        yield node
