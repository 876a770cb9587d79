"""A new user's path (README "As a library", examples/own_model/): their own PyTorch model on
their own CSV files, across three ``fedledger node`` processes, and from Python."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fedledger
from fedledger.node.state import read_rounds

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "own_model"
SITES = ("site_a", "site_b", "site_c")


def setup_sites(out: Path) -> None:
    subprocess.run([sys.executable, str(EXAMPLE / "setup_sites.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip


def start_sites(out: Path) -> list[subprocess.Popen[str]]:
    """One ``fedledger node`` process per site."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "fedledger", "node", "--config", str(out / s / "node.toml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in SITES
    ]


@pytest.mark.slow
def test_three_node_processes_train_the_users_model_on_their_own_csv_files(
    tmp_path: Path,
) -> None:
    setup_sites(tmp_path)
    for site in SITES:  # each site holds only its own file
        assert sorted(p.name for p in (tmp_path / site).iterdir()) == [
            "data.csv", "mymodel.py", "node.key", "node.toml",
        ]  # fmt: skip
    procs = start_sites(tmp_path)
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    summaries = [json.loads((tmp_path / s / "state" / "summary.json").read_text()) for s in SITES]
    finals = {s["final_model"] for s in summaries}
    assert len(finals) == 1
    assert None not in finals
    last = [read_rounds(tmp_path / s / "state")[-1] for s in SITES]
    assert [r["round"] for r in last] == [10, 10, 10]
    # each site's accuracy on its own validation rows, with the jointly trained model
    assert min(r["acc"] for r in last) > 0.85, last


@pytest.mark.slow
def test_the_library_runs_the_users_model_on_their_files_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_sites(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from mymodel import build  # type: ignore[import-not-found]

    report = fedledger.run_task(
        EXAMPLE / "task.toml",
        out=tmp_path / "run",
        model=build,
        data=[tmp_path / s / "data.csv" for s in SITES],
        label_column="diagnosis",
    )
    assert report.final["model_digests_agree"] is True
    assert report.final["rounds_completed"] == 10
    assert report.final["acc_min"] > 0.85
    assert (tmp_path / "run" / "report.json").exists()


def test_a_model_factory_that_is_no_module_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(fedledger.FedledgerError, match=r"not a torch\.nn\.Module"):
        fedledger.run_task(
            EXAMPLE / "task.toml",
            out=tmp_path,
            model=lambda: "nope",  # type: ignore[arg-type,return-value]
            data=[(np.zeros((20, 30), dtype=np.float32), np.arange(20) % 2)] * 3,
        )


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for RSS")
def test_a_junk_flood_does_not_grow_a_node_process_and_training_goes_on(tmp_path: Path) -> None:
    # Before: 400 junk frames of 1 MiB from one non-member raised a node's memory from 364 to
    # 766 MiB. Now the transport refuses them past the peer's budget, before parsing, and
    # buffers at most its concurrent calls' worth.
    import asyncio
    import os

    from fedledger.errors import TransportError
    from fedledger.gossip.grpc_transport import GrpcTransport
    from tests.support import wait_until

    setup_sites(tmp_path)
    task = (tmp_path / "task.toml").read_text().replace("rounds = 10", "rounds = 400")
    (tmp_path / "task.toml").write_text(task)
    procs = start_sites(tmp_path)
    try:
        state = tmp_path / "site_a" / "state"
        wait_until(lambda: len(read_rounds(state)) >= 3, timeout=300, what="site_a's round 3")
        # any site's endpoint, from the rendezvous; every process's memory is watched
        target = next((tmp_path / "endpoints").glob("*.endpoint")).read_text().strip()
        before = {p.pid: _rss_mib(p.pid) for p in procs}

        async def flood() -> int:
            client = GrpcTransport()
            try:
                junk = os.urandom((1 << 20) - 64)
                results = await asyncio.gather(
                    *(client.send(target, junk, timeout=30.0) for _ in range(400)),
                    return_exceptions=True,
                )
            finally:
                await client.close()
            return sum(isinstance(r, TransportError) for r in results)

        refused = asyncio.run(flood())
        after = {p.pid: _rss_mib(p.pid) for p in procs}
        # The peer's byte budget refused part of the flood before any handler: how much
        # depends on how fast the flood went (the budget refills with time), so only > 0.
        assert refused > 0
        growth = max(after[pid] - before[pid] for pid in before)
        # gRPC buffers at most max_concurrent_rpcs (128) messages of at most the frame limit
        # (1 MiB) before the server's budget refuses them: measured +176 MiB, against +400 MiB
        # (and growing with the flood) before the limits.
        assert growth < 300, (before, after)
        outputs = [p.communicate(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    finals = {json.loads((tmp_path / s / "state" / "summary.json").read_text())["final_model"]
              for s in SITES}  # fmt: skip
    assert len(finals) == 1
