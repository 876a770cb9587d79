"""`fedledger chain up`: a local anvil on 127.0.0.1 that stops with its command."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request

from tests.support import ProcessOutput


def _rpc(url: str, method: str) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).encode()
    request = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["result"]


def test_chain_up_serves_json_rpc_on_loopback_and_stops_on_sigterm() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedledger", "chain", "up", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
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
