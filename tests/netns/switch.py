"""A userspace Ethernet switch with netem's impairments, for tests/netns/harness.py.

    python tests/netns/switch.py TAP [TAP ...]

creates one TAP device per name (in the caller's network namespace; the harness then moves each
into its host's namespace), prints ``ready``, and forwards frames between them like a learning
bridge. Each port (a host's link) has netem's parameters: ``delay`` and ``jitter`` (ms, jitter
uniform in [-jitter, +jitter], so frames reorder as under netem), ``loss`` and ``duplicate``
(probabilities); a frame from port a to port b goes through both links (as through netem on
both ends of a veth pair). A set of blocked port pairs is a partition: frames between them are
dropped. Commands arrive on stdin, one JSON object a line, each answered with one JSON line:

    {"link": 3, "delay": 20, "jitter": 5, "loss": 0.01, "duplicate": 0}
    {"block": [[0, 1], [0, 2]]}         (replaces the blocked pairs; [] heals)
    {"stats": true}                     (frames forwarded, dropped by loss, by partitions)

Why a userspace switch, not veth pairs on a kernel bridge with ``tc netem``: the kernels this
runs on need not have ``sch_netem`` nor tc's classifiers (the CI's micro-VM kernel refuses
``tc qdisc add ... netem`` and every ``tc filter``), and there may be no nftables or iptables
to cut chosen pairs apart; the switch impairs real Ethernet frames the same way on any kernel
with TUN/TAP, under the nodes' real IP and TCP stacks, and cuts any pair of hosts apart.
It exits, and the TAP devices vanish with it, when
stdin closes (its harness ended, however it ended).
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import json
import os
import random
import struct
import sys
import threading
import time
from dataclasses import dataclass

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
BROADCAST_BIT = 0x01


@dataclass
class Link:
    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


class Switch:
    def __init__(self, fds: list[int], seed: int) -> None:
        self.fds = fds
        self.links = [Link() for _ in fds]
        self.blocked: set[tuple[int, int]] = set()
        self.macs: dict[bytes, int] = {}
        self.rng = random.Random(seed)
        self.queue: list[tuple[float, int, int, bytes]] = []
        self.seq = 0
        self.cond = threading.Condition()
        self.stats = {"forwarded": 0, "lost": 0, "partitioned": 0, "duplicated": 0}

    def read(self, port: int) -> None:
        fd = self.fds[port]
        while True:
            try:
                frame = os.read(fd, 65536)
            except OSError:
                return
            if len(frame) < 14:
                continue
            dst, src = frame[0:6], frame[6:12]
            with self.cond:
                self.macs[src] = port
                target = None if dst[0] & BROADCAST_BIT else self.macs.get(dst)
                targets = [target] if target is not None else range(len(self.fds))
                now = time.monotonic()
                for t in targets:
                    if t != port:
                        self._send(now, port, t, frame)
                self.cond.notify()

    def _send(self, now: float, a: int, b: int, frame: bytes) -> None:
        if (a, b) in self.blocked:
            self.stats["partitioned"] += 1
            return
        la, lb = self.links[a], self.links[b]
        rng = self.rng
        if rng.random() < la.loss or rng.random() < lb.loss:
            self.stats["lost"] += 1
            return
        copies = 1 + (rng.random() < la.duplicate) + (rng.random() < lb.duplicate)
        self.stats["duplicated"] += copies - 1
        for _ in range(copies):
            ms = la.delay + lb.delay
            ms += rng.uniform(-la.jitter, la.jitter) + rng.uniform(-lb.jitter, lb.jitter)
            self.seq += 1
            heapq.heappush(self.queue, (now + max(ms, 0.0) / 1000, self.seq, b, frame))

    def deliver(self) -> None:
        while True:
            with self.cond:
                while not self.queue or self.queue[0][0] > time.monotonic():
                    wait = self.queue[0][0] - time.monotonic() if self.queue else None
                    self.cond.wait(wait)
                _, _, port, frame = heapq.heappop(self.queue)
                self.stats["forwarded"] += 1
            with contextlib.suppress(OSError):  # the host's link is down or gone: lost
                os.write(self.fds[port], frame)

    def command(self, doc: dict[str, object]) -> dict[str, object]:
        with self.cond:
            if "link" in doc:
                port = int(str(doc["link"]))
                keys = ("delay", "jitter", "loss", "duplicate")
                self.links[port] = Link(**{k: float(str(doc.get(k, 0))) for k in keys})
            elif "block" in doc:
                pairs = doc["block"]
                assert isinstance(pairs, list)
                self.blocked = {(int(a), int(b)) for a, b in pairs}
                self.blocked |= {(b, a) for a, b in self.blocked}
            elif "stats" in doc:
                return {"ok": True, **self.stats}
            else:
                return {"ok": False, "error": f"unknown command {doc!r}"}
        return {"ok": True}


def main(argv: list[str]) -> int:
    fds = [open_tap(name) for name in argv]
    switch = Switch(fds, seed=int(os.environ.get("FEDLEDGER_SWITCH_SEED", "0")))
    for port in range(len(fds)):
        threading.Thread(target=switch.read, args=(port,), daemon=True).start()
    threading.Thread(target=switch.deliver, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = switch.command(json.loads(line))
        except (ValueError, TypeError, KeyError, AssertionError) as exc:
            answer = {"ok": False, "error": str(exc)}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
