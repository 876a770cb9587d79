"""The ledger's pure core imports no chain library: the I/O-free round logic
(``fedledger.node.ledger_round``), the records and the in-memory ledger run without web3."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CHAIN_LIBRARIES = ("web3", "eth_tester", "eth_account", "vyper")


def imported_after(*modules: str) -> set[str]:
    """The top-level packages in ``sys.modules`` after importing ``modules`` in a fresh
    interpreter."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "modules",
    [
        ("fedledger.node.ledger_round", "fedledger.ledger.records"),
        ("fedledger.ledger.rules", "fedledger.ledger.memory_ledger", "fedledger.ledger.reputation"),
    ],
)
def test_the_pure_core_imports_no_chain_library(modules: tuple[str, ...]) -> None:
    loaded = imported_after(*modules)
    assert "fedledger" in loaded
    assert loaded.isdisjoint(CHAIN_LIBRARIES), sorted(loaded & set(CHAIN_LIBRARIES))


def test_the_check_sees_a_chain_library() -> None:
    """The probe works: importing the chain backends does load web3."""
    assert "web3" in imported_after("fedledger.ledger.chain")
