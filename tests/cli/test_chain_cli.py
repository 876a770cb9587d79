"""`fedledger chain up`: a local anvil on 127.0.0.1 that stops with its command, and keeps
its chain in a data directory across restarts unless told --ephemeral."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fedledger.cli import main
from fedledger.gossip.identity import Identity
from tests.support import ProcessOutput, interruptible


def _rpc(url: str, method: str, params: list[object] | None = None) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                       "params": params or []}).encode()  # fmt: skip
    request = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["result"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    return {**env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **extra}


class Chain:
    """A running `fedledger chain up`: its URL, its banner, its output."""

    def __init__(self, proc: subprocess.Popen[str], output: ProcessOutput) -> None:
        self.proc = proc
        self.output = output
        self.url = output.wait_for(r"anvil listening on (http://127\.0\.0\.1:\d+)",
                                   timeout=180, what="the chain's URL").group(1)  # fmt: skip
        self.state = output.wait_for(r"chain state: (.*)$", timeout=30,
                                     what="where the chain is kept").group(1)  # fmt: skip
        output.wait_for(r"Ctrl-C stops it", timeout=30, what="the end of the banner")

    def block_number(self) -> int:
        return int(str(_rpc(self.url, "eth_blockNumber")), 16)

    def balance(self, address: str) -> int:
        return int(str(_rpc(self.url, "eth_getBalance", [address, "latest"])), 16)


@contextmanager
def chain_up(*args: str, sig: int = signal.SIGINT, env: dict[str, str] | None = None,
             stopped: list[str] | None = None) -> Iterator[Chain]:  # fmt: skip
    """`fedledger chain up --port 0 ARGS`, stopped with ``sig`` at the end of the block; its
    whole output is appended to ``stopped``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedledger", "chain", "up", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or _env(),
        preexec_fn=interruptible,
    )
    try:
        output = ProcessOutput(proc)
        yield Chain(proc, output)
        proc.send_signal(sig)
        text = output.finish(timeout=150)
        assert proc.returncode == 0, text
        if stopped is not None:
            stopped.append(text)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_chain_up_serves_json_rpc_on_loopback_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedledger", "chain", "up", "--port", "0", "--ephemeral"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        output = ProcessOutput(proc)
        # Ready when the command says so, not when anvil first answers: until it prints its
        # URL it is still starting, and a SIGTERM then stops it before it ever served.
        # (A clean checkout may install anvil from npm first.)
        url, port = output.wait_for(
            r"anvil listening on (http://127\.0\.0\.1:(\d+))", timeout=180, what="the chain's URL"
        ).groups()
        output.wait_for(r"Ctrl-C stops it", timeout=30, what="the end of the banner")
        assert len(re.findall(r"funded test account 0x[0-9a-fA-F]{40}", output.text)) == 3
        assert int(str(_rpc(url, "eth_chainId")), 16) == 31337  # anvil's default
        proc.send_signal(signal.SIGTERM)
        out = output.finish(timeout=30)
        assert proc.returncode == 0, out
        with socket.socket() as s:  # the port is free again: anvil stopped with the command
            assert s.connect_ex(("127.0.0.1", int(port))) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _fund(url: str, address: str, eth: str) -> None:
    assert main(["keys", "fund", address, "--rpc", url, "--eth", eth]) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_chain_up_keeps_its_chain_in_the_data_dir_across_restarts(tmp_path: Path, sig: int) -> None:
    data_dir = tmp_path / "xdg" / "fedledger" / "chain"
    state = data_dir / "anvil-state.json"
    hospital = Identity.generate().address
    stopped: list[str] = []
    with chain_up("--data-dir", str(data_dir), sig=sig, stopped=stopped) as first:
        assert first.state == f"{state} (new chain)"
        _fund(first.url, hospital, "2.5")
        blocks = first.block_number()
        assert blocks >= 1
        assert first.balance(hospital) == 25 * 10**17
        # One anvil per data directory: a second would overwrite the first one's chain.
        other = subprocess.run(
            [sys.executable, "-m", "fedledger", "chain", "up", "--port", "0", "--data-dir",
             str(data_dir)], capture_output=True, text=True, timeout=120, env=_env(),
        )  # fmt: skip
        assert other.returncode == 2
        assert other.stderr.splitlines() == [
            f"error: data-dir: another `fedledger chain up` is using {str(data_dir)!r}: stop "
            "it, or give another --data-dir"
        ]
    assert f"chain state saved in {state}" in stopped[0]
    assert state.is_file()

    # The default data directory is $XDG_DATA_HOME/fedledger/chain: the same one here.
    env = _env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    with chain_up(env=env, sig=sig) as again:
        assert again.state == f"{state} (reloaded, block {blocks})"
        assert again.block_number() == blocks
        assert again.balance(hospital) == 25 * 10**17
        _fund(again.url, hospital, "1")
    with chain_up("--data-dir", str(data_dir), sig=sig) as third:
        assert third.block_number() == blocks + 1
        assert third.balance(hospital) == 35 * 10**17


def test_chain_up_ephemeral_forgets_its_chain(tmp_path: Path) -> None:
    hospital = Identity.generate().address
    env = _env(XDG_DATA_HOME=str(tmp_path / "xdg"))
    for _ in range(2):
        with chain_up("--ephemeral", env=env) as chain:
            assert chain.state.startswith("in memory only")
            assert chain.block_number() == 0
            assert chain.balance(hospital) == 0
            _fund(chain.url, hospital, "1")
            assert chain.balance(hospital) == 10**18
    assert not (tmp_path / "xdg").exists()  # nothing written to the data directory


def test_chain_up_with_a_state_file_anvil_cannot_load(tmp_path: Path) -> None:
    (tmp_path / "anvil-state.json").write_text("{ not json")
    proc = subprocess.run(
        [sys.executable, "-m", "fedledger", "chain", "up", "--port", "0", "--data-dir",
         str(tmp_path)], capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        f"error: anvil cannot load the chain state {str(tmp_path / 'anvil-state.json')!r}"
    )
    assert "move the file away" in lines[0]
    assert (tmp_path / "anvil-state.json").read_text() == "{ not json"  # left as it was
    # --ephemeral with a data directory is a contradiction.
    proc = subprocess.run(
        [sys.executable, "-m", "fedledger", "chain", "up", "--port", "0", "--ephemeral",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--ephemeral" in proc.stderr
