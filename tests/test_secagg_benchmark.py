"""benchmarks/secagg.py on a tiny task (breast_cancer, 4 members, 2 rounds): the unmasked sum
equals plain FedAvg for every dropout fraction, and the two runs' figures are their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.secagg import run_benchmark

ROOT = Path(__file__).resolve().parents[1]
CANCER = ROOT / "examples" / "breast_cancer.toml"


@pytest.mark.slow
def test_a_tiny_benchmark_is_exact_and_writes_its_ratios(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_benchmark(config=CANCER, nodes=4, rounds=2, out=tmp_path, echo=lines.append)
    written = json.loads((tmp_path / "secagg.json").read_text())
    assert written == json.loads(json.dumps(result))
    cells = written["exactness"]["cells"]
    assert [c["dropped"] for c in cells] == [0, 0, 1, 1]
    assert all(c["exact"] for c in cells)
    ex = written["exactness"]
    assert ex["plain_update_bytes"] < ex["masked_update_bytes"] < 2 * ex["plain_update_bytes"] + 200
    runs = written["runs"]
    assert runs["plain"]["rounds_finalized"] == 2
    assert runs["secure"]["rounds_finalized"] == 2
    assert runs["bytes_ratio"] == runs["secure"]["bytes"] / runs["plain"]["bytes"]
    assert runs["bytes_ratio"] > 1.0  # masked updates, reveals and key blobs cost something
    table = (tmp_path / "results.md").read_text()
    assert "| ratio |" in table
    assert len(lines) == 6
