"""Real hosts on one machine: Linux network namespaces joined by a switch with netem's
impairments, one process per host (``ip netns exec``), and anvil in a namespace of its own.

::

    with Network(hosts=5, workdir=tmp_path) as net:        # skip first: unavailable()
        net.impair_all(delay=20, jitter=5, loss=0.01)      # every link, as tc netem would
        chain = NamespacedAnvil(net, state=tmp_path / "chain.json")
        chain.start()                                      # http://10.X.Y.254:8545
        proc = net.exec(net.hosts[0], [sys.executable, "-m", "fedledger", ...])
        net.partition([0], [1, 2, 3, 4])                   # cut the hosts apart
        net.heal()

Every namespace is named ``fl<pid><k>-<host>`` (``<k>`` a letter per Network of the process),
so that only this project's namespaces are ever touched: :func:`sweep_stale` removes only
names of that shape whose pid is dead (a harness killed before it could clean up), and
:meth:`Network.close` (also run by a finalizer and on ``with`` exit, failure or not) kills the
processes it started, stops the switch (its TAP devices vanish with it) and deletes its
namespaces. The test process, in the root namespace, reaches every host through one more port
of the switch (address ``.1``, never impaired nor partitioned), as a coordinator or an auditor
would.

Links: each host has one TAP device, ``eth0``-like, plugged into tests/netns/switch.py (a
userspace learning switch; its docstring says why not ``tc netem`` on veth pairs: the kernel
may have no ``sch_netem``). Impairments are netem's: delay and jitter in ms, loss and
duplication as probabilities, per link; partitions drop the frames between chosen hosts.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SWITCH = Path(__file__).resolve().with_name("switch.py")
NAME = re.compile(r"^fl(\d+)[a-z]-\w+$")
"""This harness's namespace names: ``fl<pid><k>-<host>``."""
CHAIN_PORT = 8545
NODE_PORT = 7001
_counter = itertools.count()
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy", "no_proxy")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (a pytest skip reason), or None."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux's; this is {sys.platform}"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "no `ip` command: install iproute2 (requirements/apt.txt)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun: the kernel has no TUN/TAP devices for the hosts' links"
    probe = f"fl{os.getpid()}z-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"the kernel refuses `ip netns add`: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete the namespaces of harnesses whose process is dead (names ``fl<pid><k>-...``
    only, never another's); the names deleted."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    removed = []
    for line in listed:
        name = line.split(" ")[0].strip()
        found = NAME.match(name)
        stale = found is not None and not _alive(int(found.group(1)))
        if stale and _ip("netns", "del", name, check=False).returncode == 0:
            removed.append(name)
    return removed


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process on a host: no proxies (the hosts' subnet is direct)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    return {**env, "PYTHONUNBUFFERED": "1", **(extra or {})}


@dataclass(frozen=True)
class Host:
    index: int
    """The host's number; the chain's host is ``hosts`` and the test's own port ``hosts + 1``
    on the switch."""
    namespace: str
    ip: str

    def endpoint(self, port: int = NODE_PORT) -> str:
        return f"{self.ip}:{port}"


def _subnet() -> str:
    """A /24 in 10.64.0.0/10 no route of the root namespace covers yet."""
    routes = _ip("-4", "route", "show", check=False).stdout
    start = (os.getpid() * 7919 + next(_counter) * 104729) % (64 * 256)
    for step in range(64 * 256):
        k = (start + step) % (64 * 256)
        prefix = f"10.{64 + k // 256}.{k % 256}"
        if f"{prefix}." not in routes:
            return prefix
    raise RuntimeError("no free 10.64.0.0/10 subnet for the hosts")


class Network:
    """``hosts`` namespaces and one for the chain, on an impairing switch. See the module."""

    def __init__(self, hosts: int, workdir: Path) -> None:
        if hosts < 1:
            raise ValueError(f"need at least one host, got {hosts}")
        self.tag = f"fl{os.getpid()}{'abcdefghijklmnopqrstuvwxy'[next(_counter) % 25]}"
        self.workdir = workdir
        prefix = _subnet()
        self.prefix = prefix
        self.hosts = [Host(i, f"{self.tag}-{i}", f"{prefix}.{10 + i}") for i in range(hosts)]
        self.chain_host = Host(hosts, f"{self.tag}-chain", f"{prefix}.254")
        self.root_ip = f"{prefix}.1"
        self._taps = [f"{self.tag}t{i}" for i in range(hosts)] + [f"{self.tag}tc",
                                                                   f"{self.tag}tr"]  # fmt: skip
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._switch: subprocess.Popen[str] | None = None
        self._finalizer = weakref.finalize(self, _cleanup, self._procs, self._namespaces,
                                           [None])  # fmt: skip

    # -- life ------------------------------------------------------------------------------

    def start(self) -> Network:
        sweep_stale()
        self.workdir.mkdir(parents=True, exist_ok=True)
        switch_log = (self.workdir / "switch.log").open("ab")
        self._switch = subprocess.Popen(
            [sys.executable, str(SWITCH), *self._taps], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=switch_log, text=True,
        )  # fmt: skip
        switch_log.close()
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _cleanup, self._procs, self._namespaces,
                                           [self._switch])  # fmt: skip
        if self._read() != "ready":
            raise RuntimeError(f"the switch did not start: {self.workdir / 'switch.log'}")
        for host, tap in zip([*self.hosts, self.chain_host], self._taps, strict=False):
            _ip("netns", "add", host.namespace)
            self._namespaces.append(host.namespace)
            _ip("link", "set", tap, "netns", host.namespace)
            _ip("-n", host.namespace, "addr", "add", f"{host.ip}/24", "dev", tap)
            _ip("-n", host.namespace, "link", "set", tap, "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")
        _ip("addr", "add", f"{self.root_ip}/24", "dev", self._taps[-1])
        _ip("link", "set", self._taps[-1], "up")
        return self

    def close(self) -> None:
        """Kill the processes started here, stop the switch, delete the namespaces.
        Idempotent; also runs at garbage collection and interpreter exit."""
        self._finalizer()

    def __enter__(self) -> Network:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes -------------------------------------------------------------------------

    def exec(self, host: Host, argv: Sequence[str], *, cwd: Path | None = None,
             env: dict[str, str] | None = None, stdout: IO[Any] | int | None = None,
             stderr: IO[Any] | int | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
        """Run ``argv`` on ``host`` (``ip netns exec``, which execs it: the Popen's pid is
        the program's, for signals); killed on :meth:`close`."""
        proc = subprocess.Popen(["ip", "netns", "exec", host.namespace, *argv], cwd=cwd,
                                env=env if env is not None else child_env(),
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                start_new_session=True)  # fmt: skip
        self._procs.append(proc)
        return proc

    # -- the links -------------------------------------------------------------------------

    def _read(self) -> str:
        assert self._switch is not None
        assert self._switch.stdout is not None
        return self._switch.stdout.readline().strip()

    def _command(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self._switch is None or self._switch.stdin is None:
            raise RuntimeError("the network is not started")
        self._switch.stdin.write(json.dumps(doc) + "\n")
        self._switch.stdin.flush()
        answer: dict[str, Any] = json.loads(self._read() or '{"ok": false}')
        if not answer.get("ok"):
            raise RuntimeError(f"switch refused {doc}: {answer}")
        return answer

    def impair(self, host: Host, *, delay: float = 0.0, jitter: float = 0.0, loss: float = 0.0,
               duplicate: float = 0.0) -> None:  # fmt: skip
        """netem on ``host``'s link: delay and jitter in ms, loss and duplicate in [0, 1]."""
        self._command({"link": host.index, "delay": delay, "jitter": jitter, "loss": loss,
                       "duplicate": duplicate})  # fmt: skip

    def impair_all(self, **netem: float) -> None:
        """The same impairment on every link: the hosts' and the chain's."""
        for host in [*self.hosts, self.chain_host]:
            self.impair(host, **netem)

    def block(self, pairs: Iterable[tuple[Host, Host]]) -> None:
        """Drop every frame between each pair (replacing the blocks before)."""
        self._command({"block": [[a.index, b.index] for a, b in pairs]})

    def partition(self, *groups: Sequence[int], chain: bool = True) -> None:
        """Cut the hosts into ``groups`` (host indices): no frame between two groups. A host
        in no group keeps every link (a bridge between groups). ``chain``: every host still
        reaches the chain (False: the chain goes with the first group, and the others are
        cut from it too)."""
        pairs = []
        for g, h in itertools.combinations(range(len(groups)), 2):
            pairs += [(self.hosts[a], self.hosts[b]) for a in groups[g] for b in groups[h]]
        if not chain:
            for group in groups[1:]:
                pairs += [(self.hosts[a], self.chain_host) for a in group]
        self.block(pairs)

    def heal(self) -> None:
        self.block([])

    def stats(self) -> dict[str, int]:
        return {k: v for k, v in self._command({"stats": True}).items() if k != "ok"}


def _cleanup(procs: list[subprocess.Popen[Any]], namespaces: list[str],
             switch: list[subprocess.Popen[str] | None]) -> None:  # fmt: skip
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    for sw in switch:
        if sw is not None and sw.poll() is None:
            with contextlib.suppress(OSError):
                if sw.stdin is not None:
                    sw.stdin.close()
            try:
                sw.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sw.kill()
                sw.wait()
    for name in namespaces:
        _ip("netns", "del", name, check=False)
    namespaces.clear()


# -- a chain in its own namespace ----------------------------------------------------------


def rpc_call(url: str, method: str, params: Sequence[object] = (), timeout: float = 2.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(url, data=body.encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


class NamespacedAnvil:
    """anvil on the network's chain host, listening on its address (anvil's development
    accounts are public: only ever on this private subnet). ``state``: the file anvil loads
    on start and dumps every second and on SIGTERM, so that :meth:`restart` keeps the chain
    (the RPC endpoint goes away and comes back at the same URL)."""

    def __init__(self, net: Network, *, state: Path, anvil: Path | None = None) -> None:
        from fedledger.ledger.chain.anvil import find_anvil

        binary = anvil or find_anvil()
        if binary is None:
            raise RuntimeError("anvil not found: `npm ci` in the repository root")
        self.binary = binary
        self.net = net
        self.state = state
        self.url = f"http://{net.chain_host.ip}:{CHAIN_PORT}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 120.0) -> None:
        from fedledger.ledger.chain.anvil import ANVIL_MNEMONIC

        self.state.parent.mkdir(parents=True, exist_ok=True)
        log = (self.state.parent / "anvil.log").open("ab")
        self.proc = self.net.exec(self.net.chain_host, [
            str(self.binary), "--host", "0.0.0.0", "--port", str(CHAIN_PORT), "--accounts", "10",
            "--mnemonic", ANVIL_MNEMONIC, "--color", "never", "--state", str(self.state),
            "--state-interval", "1",
        ], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"anvil exited ({self.proc.returncode}): "
                                   f"{self.state.parent / 'anvil.log'}")  # fmt: skip
            try:
                rpc_call(self.url, "eth_chainId")
                return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"anvil did not answer at {self.url} in {timeout} s")
            time.sleep(0.1)

    def block_number(self) -> int:
        return int(rpc_call(self.url, "eth_blockNumber"), 16)

    def stop(self) -> None:
        """SIGTERM (anvil dumps its state on the way out), then wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def block_hash(self, number: int) -> str:
        block = rpc_call(self.url, "eth_getBlockByNumber", [hex(number), False])
        return str(block["hash"]) if block else ""

    def dumped(self) -> int | None:
        """The head block of the state file, if it holds that block whole (anvil rewrites the
        file in place every second: a half-written file is None)."""
        try:
            doc = json.loads(self.state.read_bytes())
            best = int(doc["best_block_number"])
            numbers = {_number(b["header"]["number"]) for b in doc["blocks"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return best if best in numbers else None

    def restart(self, timeout: float = 120.0) -> None:
        """Stop the RPC endpoint and start it again from its state, the chain unchanged.

        The caller first cuts every host from the chain host (no transaction in flight):
        anvil 1.7's state file is written while it mines, and a file written as a block was
        being mined can hold that block's storage changes without the block (its events).
        Restarted from such a file, the chain is in a state no real node reaches (here: the
        task's round 18 open on chain, its RoundStarted event in no block, every node waiting
        for it). So: wait until the file holds the quiet head, stop, start, and check that
        the head block is the same block (its hash) as before."""
        deadline = time.monotonic() + timeout
        head = self.block_number()
        while self.dumped() != head:
            if time.monotonic() > deadline:
                raise RuntimeError(f"anvil's state file did not reach block {head} in {timeout} s")
            time.sleep(0.2)
            head = self.block_number()
        before = self.block_hash(head)
        self.stop()
        self.start()
        if self.block_hash(head) != before:
            raise RuntimeError(f"anvil lost block {head} across its restart ({self.state})")


def _number(value: object) -> int:
    return value if isinstance(value, int) else int(str(value), 16)


def fedledger_node(net: Network, host: Host, node_dir: Path, *, serve: bool = False,
                   env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    """``fedledger node --config node.toml`` on ``host``, in ``node_dir``; its stdout (each
    round's line, then ``finished: ...``) and stderr (the one-line error of a failed run)
    appended to ``node_dir/stdout.log`` and ``node_dir/stderr.log``: files, never pipes that
    nobody reads."""
    out, err = (node_dir / "stdout.log").open("ab"), (node_dir / "stderr.log").open("ab")
    argv = [sys.executable, "-m", "fedledger", "node", "--config", "node.toml"]
    try:
        proc = net.exec(host, [*argv, *(["--serve"] if serve else [])], cwd=node_dir,
                        env=child_env(env), stdout=out, stderr=err)  # fmt: skip
    finally:
        out.close()
        err.close()
    return proc
