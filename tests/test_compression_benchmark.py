"""benchmarks/compression.py runs end to end on a tiny size: the baseline and a compressed
scheme, the table, the JSON and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import compression


def test_the_compression_benchmark_measures_each_scheme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--nodes", "2", "--rounds", "1", "--schemes", "topk_int8:0.05",
            "--out", str(tmp_path)]  # fmt: skip
    assert compression.main(argv) == 0
    doc = json.loads((tmp_path / "compression.json").read_text())
    rows = doc["rows"]
    assert [r["scheme"] for r in rows] == ["none", "topk_int8:0.05"]
    none, small = rows
    assert none["update_x"] == 1.0
    assert none["acc_points"] == 0.0
    assert small["update_bytes"] * 10 < none["update_bytes"]
    assert small["update_x"] > 10
    assert small["sent_x"] > 1
    assert all(r["agree"] and r["rounds"] == 1 for r in rows)
    assert (tmp_path / "compression.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| topk_int8:0.05 |" in capsys.readouterr().out
    assert (tmp_path / "results.md").read_text().startswith("| scheme | update bytes")


def test_an_unknown_scheme_fails_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown scheme"):
        compression.main(["--schemes", "zip:9", "--out", str(tmp_path)])
    assert not (tmp_path / "compression.json").exists()
