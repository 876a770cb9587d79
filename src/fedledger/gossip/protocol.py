"""Push-pull gossip, as an I/O-free state machine.

The protocol decides *what to send to whom*; a thin async shell (``fedledger.node.runner``)
does the sending. Every input is a method call, every output a list of :class:`Send` actions, and
the only sources of nondeterminism (time and randomness) are passed in, so tests replay exactly.

* **push**: a new message (one this node has not seen, by content digest) is delivered to the
  node and forwarded to ``fanout`` neighbours sampled at random (all of them when ``fanout`` is
  0), with its TTL decremented; a message whose TTL reaches 0 is delivered but not forwarded;
* **pull**: every ``pull_interval`` seconds the node sends one random neighbour an ``ihave``
  listing the ids of the messages it holds for the current rounds; the neighbour pushes back
  what the list lacks and asks (``want``) for what it lacks itself. Pull repairs what pushes
  lost to drops, crashes and partitions.

Messages are kept for a window of rounds (``keep_rounds``) and forgotten afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fedledger.gossip.messages import SignedMessage, encode_frame

MakeMessage = Callable[[str, int, dict[str, object]], SignedMessage]
"""``make(kind, round, body)``: sign a control message (ihave/want) as this node."""

MAX_IDS = 4096


@dataclass(frozen=True, kw_only=True)
class GossipConfig:
    fanout: int = 0
    """Neighbours each new message is forwarded to; 0 means all neighbours (flooding)."""
    ttl: int | None = None
    """Hops a message may travel; None: 0 on a full topology (the origin reaches everyone,
    pulls repair losses), else 8."""
    pull_interval: float = 0.5
    """Seconds between anti-entropy exchanges with a random neighbour."""
    keep_rounds: int = 2
    """Rounds of messages kept (and offered in pulls) behind the newest round seen."""

    def __post_init__(self) -> None:
        from fedledger.errors import ConfigError

        if self.fanout < 0:
            raise ConfigError(f"must be >= 0, got {self.fanout}", field="gossip.fanout")
        if self.ttl is not None and not 0 <= self.ttl <= 255:
            raise ConfigError(f"must be in [0, 255], got {self.ttl}", field="gossip.ttl")
        if not self.pull_interval > 0:
            raise ConfigError(
                f"must be > 0, got {self.pull_interval}", field="gossip.pull_interval"
            )
        if self.keep_rounds < 0:
            raise ConfigError(f"must be >= 0, got {self.keep_rounds}", field="gossip.keep_rounds")


@dataclass(frozen=True)
class Send:
    """Send ``frame`` to the neighbour ``peer`` (an address)."""

    peer: str
    frame: bytes


CONTROL_KINDS = ("ihave", "want")


class Gossip:
    """Dissemination state of one node."""

    def __init__(
        self,
        *,
        me: str,
        neighbours: Sequence[str],
        config: GossipConfig,
        make: MakeMessage,
        rng: random.Random,
        complete: bool = False,
    ) -> None:
        """``complete``: the topology links every pair of members."""
        self.me = me
        self.neighbours = tuple(n for n in neighbours if n != me)
        self.config = config
        self._make = make
        self._rng = rng
        self._store: dict[str, SignedMessage] = {}
        self._seen: set[str] = set()
        self._newest_round = 0
        self._next_pull = 0.0
        self._ttl = config.ttl if config.ttl is not None else (0 if complete else 8)

    # -- bookkeeping ----------------------------------------------------------------------

    def has(self, message_id: str) -> bool:
        return message_id in self._seen

    def held(self) -> list[SignedMessage]:
        """Messages currently kept, oldest round first (then by id)."""
        return sorted(self._store.values(), key=lambda m: (m.message.round, m.id))

    def _keep(self, signed: SignedMessage) -> None:
        self._seen.add(signed.id)
        self._store[signed.id] = signed
        if signed.message.round > self._newest_round:
            self._newest_round = signed.message.round
            self._forget()

    def _forget(self) -> None:
        oldest = self._newest_round - self.config.keep_rounds
        stale = [i for i, m in self._store.items() if m.message.round < oldest]
        for i in stale:
            del self._store[i]
        # Ids of forgotten messages stay in _seen so they are not accepted again; _seen is
        # trimmed to the ids still stored once it grows large.
        if len(self._seen) > 8 * max(len(self._store), 1024):
            self._seen = set(self._store)

    def _targets(self, exclude: str | None) -> list[str]:
        candidates = [n for n in self.neighbours if n != exclude]
        k = self.config.fanout
        if k == 0 or k >= len(candidates):
            return candidates
        return self._rng.sample(candidates, k)

    # -- push -----------------------------------------------------------------------------

    def publish(self, signed: SignedMessage) -> list[Send]:
        """Send a message of this node's own."""
        self._keep(signed)
        frame = encode_frame(signed, ttl=self._ttl)
        return [Send(peer, frame) for peer in self._targets(None)]

    def receive(
        self, signed: SignedMessage, ttl: int, *, relay: str | None = None
    ) -> tuple[bool, list[Send]]:
        """A verified message arrived (from ``relay``, when known).

        Returns whether it is new (deliver it to the node) and what to forward. Control
        messages (ihave, want) are answered by :meth:`on_ihave` / :meth:`on_want`, not here.
        """
        if signed.id in self._seen:
            return False, []
        if signed.message.round < self._newest_round - self.config.keep_rounds:
            self._seen.add(signed.id)
            return False, []
        self._keep(signed)
        if ttl <= 0:
            return True, []
        frame = encode_frame(signed, ttl=ttl - 1)
        exclude = relay if relay is not None else signed.message.sender
        return True, [Send(peer, frame) for peer in self._targets(exclude)]

    # -- pull -----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Send]:
        """Start an anti-entropy exchange when the pull interval has elapsed."""
        if now < self._next_pull or not self.neighbours:
            return []
        self._next_pull = now + self.config.pull_interval
        peer = self._rng.choice(self.neighbours)
        ids = [m.id for m in self.held()][-MAX_IDS:]
        ihave = self._make("ihave", self._newest_round, {"ids": ids})
        return [Send(peer, encode_frame(ihave, ttl=0))]

    def on_ihave(self, peer: str, ids: Iterable[str]) -> list[Send]:
        """A neighbour listed what it holds: push what it lacks, ask for what we lack."""
        theirs = set(ids)
        out = [Send(peer, encode_frame(m, ttl=0)) for m in self.held() if m.id not in theirs]
        missing = sorted(i for i in theirs if i not in self._seen)[:MAX_IDS]
        if missing:
            want = self._make("want", self._newest_round, {"ids": missing})
            out.append(Send(peer, encode_frame(want, ttl=0)))
        return out

    def on_want(self, peer: str, ids: Iterable[str]) -> list[Send]:
        """A neighbour asked for messages by id: send those still held."""
        return [Send(peer, encode_frame(self._store[i], ttl=0)) for i in ids if i in self._store]
