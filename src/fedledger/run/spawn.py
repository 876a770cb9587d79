"""Node processes forked from a fork server that imported torch and fedledger once.

Starting ``python -m fedledger node`` costs each node process 5-7 s of CPU before its first
round: importing torch, scikit-learn and fedledger (3-4 s), loading the data set (about 1 s)
and the first optimizer's import of ``torch._dynamo`` (1-2 s). Ten of them on two cores spend
half a minute of wall time on it. Here one fork server (:mod:`multiprocessing.forkserver`, a
fresh ``python`` that does nothing but fork) imports all of that once, single-threaded; each
node process is a fork of it. Every node stays its own OS process with its own key, data, state
directory, environment and working directory; it shares with its siblings, copy-on-write, only
the pages of the modules it did not touch (docs/performance.md, "Start-up").

:func:`fork_node` runs ``fedledger <argv>`` in a new child of the fork server and returns a
:class:`ForkedProcess`, a :class:`subprocess.Popen` whose ``poll``, ``wait``, ``send_signal``,
``terminate``, ``kill``, ``pid`` and ``returncode`` behave as for a process started by Popen
(the fork server reports its child's exit status, negative for a signal).

``FEDLEDGER_NODE_START=exec`` in the environment makes :func:`start_node` start each node as
its own ``python -m fedledger node`` again, as before (benchmarks.startup compares both).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing import forkserver
from pathlib import Path

START_ENV = "FEDLEDGER_NODE_START"
"""``exec``: each node process is a fresh interpreter (``python -m fedledger node``);
``fork`` (the default): forked from the fork server."""

NODE_PRELOAD: tuple[str, ...] = (
    "fedledger.run.spawn",
    "fedledger.cli",  # the command line a node process runs
    "fedledger.run.node",
    "fedledger.api",
    "fedledger.node.build",
    "fedledger.gossip.grpc_transport",
    "fedledger.task",
    "sklearn.datasets",  # the data sets shipped with scikit-learn (and scipy)
    "torch._dynamo",  # imported by the first torch.optim optimizer a node builds
)
"""Modules the fork server imports before its first fork: all that a node on the task's data
imports before its first round."""

LEDGER_PRELOAD: tuple[str, ...] = (
    "fedledger.ledger.chain",
    "fedledger.ledger.contract_ledger",
    "fedledger.ledger.status",
)
"""And for nodes on a JSON-RPC chain: web3 and the contract handles."""

_SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""The fork server's environment: its BLAS starts no thread pool, so it forks with one thread;
many nodes share the cores (torch runs single-threaded in them too: TorchTrainer)."""

_lock = threading.Lock()
_preload: tuple[str, ...] | None = None


def start_server(*, ledger: bool = False) -> None:
    """Start this process's fork server unless it runs (it imports :data:`NODE_PRELOAD`, and
    :data:`LEDGER_PRELOAD` if the first call asks for ``ledger``). It lives until this process
    exits; a fork server that died is started again."""
    global _preload
    if os.environ.get(START_ENV) == "exec":
        return  # no forks to come
    with _lock:
        if _preload is None:
            _preload = NODE_PRELOAD + (LEDGER_PRELOAD if ledger else ())
            forkserver.set_forkserver_preload(list(_preload))
        with _environment(_SINGLE_THREADED):
            forkserver.ensure_running()


@contextlib.contextmanager
def _environment(defaults: Mapping[str, str]) -> Iterator[None]:
    """``defaults`` set in this process's environment (where unset) while the block runs."""
    added = [k for k in defaults if k not in os.environ]
    for k in added:
        os.environ[k] = defaults[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def fork_node(
    argv: Sequence[str], *, stderr: Path, env: Mapping[str, str] | None = None, ledger: bool = False
) -> ForkedProcess:
    """Run ``fedledger <argv>`` in a new child of the fork server: its stdout to /dev/null, its
    stderr appended to ``stderr``, in this process's working directory, with ``env`` (default:
    this process's environment) as its environment."""
    start_server(ledger=ledger)
    job = _NodeMain(argv=tuple(argv), env=dict(os.environ if env is None else env))
    prepared = io.BytesIO()
    pickle.dump({"dir": os.getcwd()}, prepared)  # multiprocessing.spawn.prepare's: chdir
    pickle.dump(job, prepared)
    with open(os.devnull, "wb") as out, stderr.open("ab") as err:
        status, data = forkserver.connect_to_new_process([out.fileno(), err.fileno()])
    try:
        with open(data, "wb", closefd=True) as pipe:
            pipe.write(prepared.getbuffer())
        pid = int(forkserver.read_signed(status))
    except BaseException:
        os.close(status)
        raise
    return ForkedProcess(["fedledger", *argv], pid=pid, status=status)


class ForkedProcess(subprocess.Popen[bytes]):
    """A child of the fork server, with the interface of :class:`subprocess.Popen` (no pipes:
    ``stdin``, ``stdout`` and ``stderr`` are None). Its exit status comes from the fork
    server, which reaps it: ``returncode`` is its exit code, or minus the signal that ended it;
    255 if the fork server itself died first."""

    def __init__(self, args: list[str], *, pid: int, status: int) -> None:
        # Popen.__init__ would start a process: this one exists already.
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        self._child_created = False  # Popen.__del__: nothing of Popen's own to clean up
        self._status: int | None = status

    def _reap(self, timeout: float | None) -> bool:
        """Read the exit status if it came within ``timeout`` seconds (None: wait for it)."""
        if self._status is None:
            return True
        ready, _, _ = select.select([self._status], [], [], timeout)
        if not ready:
            return False
        try:
            self.returncode = int(forkserver.read_signed(self._status))
        except (OSError, EOFError):
            self.returncode = 255
        os.close(self._status)
        self._status = None
        return True

    def poll(self) -> int | None:
        self._reap(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._reap(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is not None:
            return  # its pid may be another process's by now
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __del__(self) -> None:
        status = getattr(self, "_status", None)
        if status is not None:
            self._status = None
            with contextlib.suppress(OSError):
                os.close(status)


@dataclass(frozen=True, kw_only=True)
class _NodeMain:
    """What a child of the fork server runs: ``fedledger <argv>``, as a fresh process would."""

    argv: tuple[str, ...]
    env: dict[str, str]

    def _bootstrap(self, parent_sentinel: int) -> int:
        """Called in the child by :mod:`multiprocessing.spawn` (in the place of a Process's);
        returns the exit code."""
        os.close(parent_sentinel)
        fds = forkserver.get_inherited_fds() or []
        for target, fd in zip((1, 2), fds, strict=True):  # stdout, stderr
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(self.env)
        sys.argv = ["fedledger", *self.argv]
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(line_buffering=True, write_through=True)
        _reseed()
        # What the fork server imported stays shared: the collector never visits (so never
        # writes to) the objects that exist at the fork.
        gc.freeze()
        code = 1
        try:
            from fedledger.cli import main

            code = main(list(self.argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
        finally:
            atexit._run_exitfuncs()  # what an interpreter's exit runs (logging's flush)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
        return code


def _reseed() -> None:
    """Fresh global RNG states, as in a fresh interpreter (the fork copied the server's; the
    ``random`` module reseeds itself at a fork)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()


def start_node(argv: Sequence[str], *, stderr: Path, ledger: bool) -> subprocess.Popen[bytes]:
    """``fedledger <argv>`` as a node process, forked (:func:`fork_node`) or, with
    ``FEDLEDGER_NODE_START=exec``, a fresh ``python -m fedledger``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    how = os.environ.get(START_ENV, "fork")
    if how == "exec":
        with stderr.open("ab") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "fedledger", *argv],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
    if how != "fork":
        from fedledger.errors import ConfigError

        raise ConfigError(f"{START_ENV} must be fork or exec, got {how!r}", field=START_ENV)
    return fork_node(argv, stderr=stderr, env=env, ledger=ledger)
