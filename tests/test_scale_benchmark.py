"""benchmarks/scale.py runs end to end on tiny sizes: one fresh process per size, the table,
the JSON and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import scale


def test_the_scale_benchmark_measures_each_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert scale.main(["--nodes", "3,2", "--rounds", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "scale.json").read_text())
    assert [r["nodes"] for r in rows] == [2, 3]
    for r in rows:
        assert r["s_per_round"] > 0
        assert r["peak_mb"] > 50  # torch alone is more
        assert r["sent_per_node_round"] > 0
        assert r["finalized"] is None  # no ledger by default
    assert (tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "| 3 |" in out
    assert (tmp_path / "results.md").read_text().startswith("| nodes | committee | s/round")


def test_gossip_mode_on_a_sparse_graph(tmp_path: Path) -> None:
    """The thousand-node mode: gossip on a regular graph, each node talking to its degree."""
    args = ["--nodes", "6", "--rounds", "2", "--mode", "gossip", "--topology", "regular",
            "--degree", "2", "--out", str(tmp_path)]  # fmt: skip
    assert scale.main(args) == 0
    (row,) = json.loads((tmp_path / "scale.json").read_text())
    assert row["mode"] == "gossip"
    assert row["nodes"] == 6
    assert row["sent_per_node_round"] > 0
    assert 0.0 < row["acc"] <= 1.0


def test_a_ledger_with_gossip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        scale.main(["--mode", "gossip", "--chain", "embedded", "--out", str(tmp_path)])


def test_a_committee_above_its_size(tmp_path: Path) -> None:
    """`--committee 3` on the embedded chain: the 6-node run draws committees of 3 (every
    round finalized), the 3-node run has none (no more members than the committee)."""
    args = ["--nodes", "3,6", "--rounds", "2", "--chain", "embedded", "--committee", "3",
            "--out", str(tmp_path)]  # fmt: skip
    assert scale.main(args) == 0
    rows = json.loads((tmp_path / "scale.json").read_text())
    assert [(r["nodes"], r["committee"], r["finalized"]) for r in rows] == [(3, 0, 2), (6, 3, 2)]


def test_a_committee_needs_the_ledger(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        scale.main(["--committee", "3", "--out", str(tmp_path)])
