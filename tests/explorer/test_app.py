"""The explorer's HTTP endpoints, served by uvicorn on 127.0.0.1 (port 0), and its command."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fedledger.cli import main
from fedledger.explorer.app import create_app, running
from fedledger.explorer.data import RunSource
from fedledger.ledger.records import Submitted
from tests.explorer.conftest import NODES, ROUNDS
from tests.support import ProcessOutput, interruptible, refusing_port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _post(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_every_page_is_served_with_its_data(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    with running(create_app(RunSource(run_dir))) as url:
        status, html = _get(url)
        assert status == 200
        assert report["final"]["task_address"] in html
        assert all(a[:6] in html for a in report["addresses"])
        status, html = _get(url + "rounds")
        assert status == 200
        assert all(f'id="round-{r}"' in html for r in range(1, ROUNDS + 1))
        assert html.count('class="audit"') == ROUNDS
        status, html = _get(url + "rounds/2")
        assert status == 200
        assert "Round 2: finalized" in html
        assert html.count('<tr class="included">') == NODES
        for page, text in (("accuracy", "<svg"), ("rewards", "<svg"), ("network", "<svg")):
            status, html = _get(url + page)
            assert status == 200
            assert text in html
        status, html = _get(url + "rounds/99")
        assert status == 404
        assert "no such round" in html
        status, script = _get(url + "static/explorer.js")
        assert status == 200
        assert "/api/version" in script
        status, body = _get(url + "api/version")
        assert status == 200
        assert json.loads(body)["in_progress"] is False
        status, body = _get(url + "api/rounds")
        assert [r["round"] for r in json.loads(body)] == [1, 2, 3, 4]


def test_the_audit_endpoint_recomputes_a_round(
    run_dir: Path, tampered: tuple[Path, Submitted]
) -> None:
    with running(create_app(RunSource(run_dir))) as url:
        status, verdict = _post(url + "api/rounds/2/audit")
        assert status == 200
        assert verdict["ok"] is True
        names = [c["name"] for c in verdict["checks"]]
        assert names[:4] == ["signatures", "phases", "committee", "blobs"]
        status, answer = _post(url + "api/rounds/9/audit")
        assert status == 404
        assert "round 9 was not started" in answer["error"]
    run, victim = tampered
    with running(create_app(RunSource(run))) as url:
        status, verdict = _post(url + "api/rounds/2/audit")
        assert status == 200
        assert verdict["ok"] is False
        failed = {c["name"]: c["detail"] for c in verdict["checks"] if not c["ok"]}
        assert set(failed) == {"blobs", "aggregate"}
        assert victim.member in failed["blobs"]
        assert "altered" in failed["blobs"]
        assert _post(url + "api/rounds/1/audit")[1]["ok"] is True


def test_the_command_serves_until_interrupted(run_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedledger", "explorer", "--run", str(run_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=interruptible,
    )
    out = ProcessOutput(proc)
    try:
        found = out.wait_for(r"(http://127\.0\.0\.1:\d+/)", timeout=120, what="the URL")
        status, html = _get(found.group(1) + "rounds")
        assert status == 200
        assert 'id="round-3"' in html
    finally:
        proc.send_signal(signal.SIGINT)
        text = out.finish(timeout=60)
    assert proc.returncode == 130  # Ctrl-C, as every fedledger command exits on it
    assert "Traceback" not in text


def _one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["explorer", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:")
    assert "\n" not in err
    assert "Traceback" not in err
    return err


def test_bad_input_is_one_line_on_stderr(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "no run directory" in _one_line_error(capsys, "--run", str(tmp_path / "nope"))
    assert "give --run DIR" in _one_line_error(capsys)
    assert "not an http(s) JSON-RPC URL" in _one_line_error(
        capsys, "--rpc", "ftp://x", "--task", "0x" + "11" * 20
    )
    assert "not an address" in _one_line_error(
        capsys, "--rpc", "http://127.0.0.1:1", "--task", "0x12"
    )
    assert "nft: not an address" in _one_line_error(
        capsys, "--rpc", "http://127.0.0.1:1", "--task", "0x" + "11" * 20, "--nft", "0x12"
    )
    assert "--governor goes with --rpc" in _one_line_error(
        capsys, "--run", str(run_dir), "--governor", "0x" + "11" * 20
    )
    with refusing_port() as port:  # nothing answers there
        err = _one_line_error(capsys, "--rpc", f"http://127.0.0.1:{port}", "--task",
                              "0x" + "11" * 20)  # fmt: skip
    assert "127.0.0.1" in err
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        err = _one_line_error(capsys, "--run", str(run_dir), "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}" in err
