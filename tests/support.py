"""Waiting on real conditions in tests, never on the clock.

* :func:`wait_until` / :func:`wait_until_async`: poll a predicate over real state (a file, a
  counter, a reply) until it holds; a bounded deadline turns a hang into a failure that says
  what was awaited.
* :class:`ProcessOutput`: a child process's readiness read from its own output, line by line.
* :func:`outcome`: what an awaitable raised, failing if it hangs.
* :func:`refusing_port`: a loopback port where nothing listens and nothing else can bind.

Deadlines here only turn a hang into a failure: they are generous, and no test asserts on how
long anything took (benchmarks/ measures speed).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import IO

__all__ = ["ProcessOutput", "outcome", "refusing_port", "wait_until", "wait_until_async"]


def wait_until(
    predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll ``predicate()`` until it is truthy; AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], object | Awaitable[object]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.01,
) -> None:
    """:func:`wait_until` inside an event loop; ``predicate`` may be a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def outcome(awaitable: Awaitable[object], *, within: float, what: str) -> Exception | None:
    """The exception ``awaitable`` raised (None if it returned). AssertionError naming ``what``
    if it has not finished after ``within`` seconds: a hang guard, not a speed check."""
    try:
        await asyncio.wait_for(awaitable, within)
    except TimeoutError:
        raise AssertionError(f"{what} did not finish within {within} s") from None
    except Exception as exc:
        return exc
    return None


@contextlib.contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A TCP port on ``host`` bound by a socket that does not listen, held for the block:
    connections to it are refused, and no other process can bind it meanwhile (unlike a port
    found free and released, which anyone may take before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        yield int(s.getsockname()[1])


class ProcessOutput:
    """A child's text output (stdout, stderr merged into it or not), read line by line on a
    thread, so that a test can wait for a line with a deadline::

        proc = subprocess.Popen(cmd, stdout=PIPE, stderr=STDOUT, text=True)
        out = ProcessOutput(proc)
        match = out.wait_for(r"listening on (\\S+)", timeout=60, what="the URL")
        ...
        text = out.finish(timeout=30)   # after the process was told to stop
    """

    def __init__(self, proc: subprocess.Popen[str], stream: IO[str] | None = None) -> None:
        source = stream if stream is not None else proc.stdout
        if source is None:
            raise ValueError("the process's output is not a pipe")
        self.proc = proc
        self._lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(source,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._queue.put(line)
        finally:
            self._queue.put(None)

    @property
    def text(self) -> str:
        """Every line taken so far by :meth:`wait_for` or :meth:`finish`."""
        return "".join(self._lines)

    def wait_for(self, pattern: str, *, timeout: float, what: str) -> re.Match[str]:
        """The match of ``pattern`` in the first line that has it (``re.search``); the lines
        before it are kept in :attr:`text`. AssertionError, with the output so far, if the
        process closes its output first or ``timeout`` seconds pass."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{what}: not printed within {timeout} s; output so far:\n{self.text}"
                ) from None
            if line is None:
                self._queue.put(None)  # stays at the end for later calls
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)  # for its exit status in the message
                raise AssertionError(
                    f"{what}: the process ended its output (exit status {self.proc.poll()}) "
                    f"without printing it; output:\n{self.text}"
                )
            self._lines.append(line)
            found = regex.search(line)
            if found is not None:
                return found

    def finish(self, *, timeout: float) -> str:
        """Wait for the process to exit and its output to end; return the whole output.
        AssertionError if either takes more than ``timeout`` seconds."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the process did not exit within {timeout} s; output so far:\n{self.text}"
            ) from None
        self._reader.join(timeout)
        if self._reader.is_alive():
            raise AssertionError(f"the process's output did not end; so far:\n{self.text}")
        while (line := self._queue.get_nowait()) is not None:
            self._lines.append(line)
        self._queue.put(None)
        return self.text


def interruptible() -> None:
    """``preexec_fn`` for a child that a test stops with SIGINT: the signal's default action,
    as in a terminal's foreground. A test run started in the background (``cmd &`` in a
    script) inherits SIGINT ignored, and Python then keeps ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
