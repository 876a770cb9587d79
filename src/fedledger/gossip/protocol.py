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

**Neighbourhood scope** (``local=True``, gossip mode): a node needs its neighbours' messages
only (gossip learning mixes with them alone), so nothing is relayed: a node sends its own
messages to its neighbours, keeps and delivers only its neighbours' (a frame signed by anyone
else is dropped without a state change), and a pull offers and asks for the two peers' own
messages. A round then costs O(nodes x degree) frames instead of every message reaching every
node (O(nodes^2)).

**Round window** (hostile peers): the rounds this node accepts follow *its own* round, never
the rounds other nodes claim. The node reports its round with :meth:`Gossip.set_round` (its
own publications advance it too); a message whose round lies outside
``[current - behind, min(current + ahead, last)]`` (:class:`RoundWindow`) is dropped without
changing any state, so one signed frame for round ``2**32 - 1`` neither moves the horizon nor
makes the node forget what it holds. Each sender (the signer, whoever relayed it) has at most
``max_per_sender`` messages held; beyond that its lowest-round message is evicted, so a member
flooding the window only crowds out its own messages. :func:`round_window` gives the window of
each node mode.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fedledger.gossip.messages import SignedMessage, encode_frame

MakeMessage = Callable[[str, int, dict[str, object]], SignedMessage]
"""``make(kind, round, body)``: sign a control message (ihave/want) as this node."""

MAX_IDS = 4096

DEFAULT_AHEAD = 1024
"""Rounds ahead of its own a node accepts when it was given no task length."""
DEFAULT_MAX_PER_SENDER = 64
"""Messages held per sender (an honest node has a few per round: update, model, done)."""


@dataclass(frozen=True, kw_only=True)
class RoundWindow:
    """Rounds a node accepts messages for, relative to its own round ``current``.

    Accepted: ``current - behind <= round <= min(current + ahead, last)``.
    """

    behind: int = 2
    """Rounds behind the node's own that still count (late messages, re-announcements)."""
    ahead: int = DEFAULT_AHEAD
    """Rounds ahead of the node's own that count (peers further on: catch-up needs them)."""
    last: int | None = None
    """The highest round of the task (no message is ever valid past it); None: no bound."""
    max_per_sender: int = DEFAULT_MAX_PER_SENDER
    """Messages held per sender; beyond it the sender's lowest-round message is evicted."""

    def __post_init__(self) -> None:
        from fedledger.errors import ConfigError

        for name in ("behind", "ahead"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ConfigError(f"must be an int >= 0, got {value!r}", field=f"window.{name}")
        if self.last is not None and (type(self.last) is not int or self.last < 0):
            raise ConfigError(f"must be an int >= 0, got {self.last!r}", field="window.last")
        if type(self.max_per_sender) is not int or self.max_per_sender < 1:
            raise ConfigError(
                f"must be an int >= 1, got {self.max_per_sender!r}", field="window.max_per_sender"
            )

    def bounds(self, current: int) -> tuple[int, int]:
        """``(lowest, highest)`` accepted round, inclusive, for a node at round ``current``."""
        high = current + self.ahead
        if self.last is not None:
            high = min(high, self.last)
        return max(current - self.behind, 0), high

    def contains(self, current: int, round: int) -> bool:
        lo, hi = self.bounds(current)
        return lo <= round <= hi


def round_window(
    *, mode: str, rounds: int, keep_rounds: int = 2, staleness: int = 0
) -> RoundWindow:
    """The window for a node of ``mode`` (``"consensus"``, ``"gossip"`` or ``"ledger"``).

    ``rounds`` is the task's length: rounds are numbered ``1..rounds`` (``done`` is sent for
    round ``rounds``; hello and fetch requests for 0), so no honest message is past it. The
    node reports ``ConsensusNode.round`` / ``GossipLearner.iteration`` / the ledger round with
    :meth:`Gossip.set_round`, and signs its ``hello`` with that round. Ahead, the whole
    rest of the task is accepted, since a node restarted from disk (consensus, ledger) or a
    slow learner (gossip) catches up from the others' later announcements. Behind:
    ``keep_rounds`` (late updates and re-announced models of the previous rounds), and in
    gossip mode at least ``staleness`` iterations, the age of a model a learner still mixes.
    """
    from fedledger.errors import ConfigError

    if mode not in ("consensus", "gossip", "ledger"):
        raise ConfigError(f"unknown mode {mode!r}", field="mode")
    if type(rounds) is not int or rounds < 0:
        raise ConfigError(f"must be an int >= 0, got {rounds!r}", field="task.rounds")
    behind = max(keep_rounds, staleness) if mode == "gossip" else keep_rounds
    # A ledger node (consensus mode on a chain) signs a message for round rounds + 1: the
    # attestation of the last round.
    last = rounds if mode == "gossip" else rounds + 1
    return RoundWindow(behind=behind, ahead=rounds + 1, last=last)


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
        window: RoundWindow | None = None,
        local: bool = False,
    ) -> None:
        """``complete``: the topology links every pair of members. ``window``: the rounds
        accepted around this node's own (default: ``RoundWindow(behind=config.keep_rounds)``,
        i.e. up to :data:`DEFAULT_AHEAD` rounds ahead, no task bound; pass
        :func:`round_window`). ``local``: neighbourhood scope (module docstring)."""
        self.me = me
        self.local = local
        self.neighbours = tuple(n for n in neighbours if n != me)
        self.config = config
        self.window = window if window is not None else RoundWindow(behind=config.keep_rounds)
        self._make = make
        self._rng = rng
        self._store: dict[str, SignedMessage] = {}
        self._by_sender: dict[str, set[str]] = {}
        self._seen: set[str] = set()
        self._current = 0
        self._next_pull = 0.0
        self._ttl = config.ttl if config.ttl is not None else (0 if complete else 8)
        if local:
            self._ttl = 0
        self._neighbour_set = frozenset(self.neighbours)

    # -- bookkeeping ----------------------------------------------------------------------

    @property
    def current_round(self) -> int:
        """This node's round, as last reported (:meth:`set_round`, or its own publications)."""
        return self._current

    def set_round(self, current: int) -> None:
        """The node is now at round ``current``: move the window and forget what fell behind
        ``current - keep_rounds``. Rounds only move forward (a lower value is ignored)."""
        if current > self._current:
            self._current = current
            self._forget()

    def in_window(self, round: int) -> bool:
        """Whether a message for ``round`` is accepted now (see :class:`RoundWindow`)."""
        return self.window.contains(self._current, round)

    def has(self, message_id: str) -> bool:
        return message_id in self._seen

    def held(self) -> list[SignedMessage]:
        """Messages currently kept, oldest round first (then by id)."""
        return sorted(self._store.values(), key=lambda m: (m.message.round, m.id))

    def _offered(self) -> list[SignedMessage]:
        """What a pull pushes: every message held, or in neighbourhood scope this node's own
        (the only ones a neighbour needs from it)."""
        held = self.held()
        return [m for m in held if m.message.sender == self.me] if self.local else held

    def held_from(self, sender: str) -> int:
        """How many messages signed by ``sender`` are kept."""
        return len(self._by_sender.get(sender, ()))

    def _keep(self, signed: SignedMessage) -> None:
        self._seen.add(signed.id)
        sender = signed.message.sender
        ids = self._by_sender.setdefault(sender, set())
        if len(ids) >= self.window.max_per_sender:
            evict = min(ids, key=lambda i: (self._store[i].message.round, i))
            ids.discard(evict)
            del self._store[evict]
        self._store[signed.id] = signed
        ids.add(signed.id)

    def _drop(self, message_id: str) -> None:
        signed = self._store.pop(message_id)
        ids = self._by_sender.get(signed.message.sender)
        if ids is not None:
            ids.discard(message_id)
            if not ids:
                del self._by_sender[signed.message.sender]

    def _forget(self) -> None:
        oldest = self._current - self.config.keep_rounds
        stale = [i for i, m in self._store.items() if m.message.round < oldest]
        for i in stale:
            self._drop(i)
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
        """Send a message of this node's own; its round moves this node's round forward
        (as :meth:`set_round`) when it is ahead."""
        self.set_round(signed.message.round)
        self._keep(signed)
        frame = encode_frame(signed, ttl=self._ttl)
        if self.local:  # every neighbour needs it; nobody relays it
            return [Send(peer, frame) for peer in self.neighbours]
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
        if not self.in_window(signed.message.round):
            return False, []  # outside the window: no state changes (not even _seen)
        if self.local and signed.message.sender not in self._neighbour_set:
            return False, []  # not a neighbour's: never needed here, never kept
        self._keep(signed)
        if self.local:
            return True, []
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
        # Neighbourhood scope: its own messages and those of the peer it holds (so the peer
        # pushes back only what is missing here).
        held = self.held()
        listed = [m for m in held if m.message.sender in (self.me, peer)] if self.local else held
        ids = [m.id for m in listed][-MAX_IDS:]
        ihave = self._make("ihave", self._current, {"ids": ids})
        return [Send(peer, encode_frame(ihave, ttl=0))]

    def on_ihave(self, peer: str, ids: Iterable[str]) -> list[Send]:
        """A neighbour listed what it holds: push what it lacks, ask for what we lack."""
        theirs = set(ids)
        out = [Send(peer, encode_frame(m, ttl=0)) for m in self._offered() if m.id not in theirs]
        missing = sorted(i for i in theirs if i not in self._seen)[:MAX_IDS]
        if missing:
            want = self._make("want", self._current, {"ids": missing})
            out.append(Send(peer, encode_frame(want, ttl=0)))
        return out

    def on_want(self, peer: str, ids: Iterable[str]) -> list[Send]:
        """A neighbour asked for messages by id: send those still held."""
        return [Send(peer, encode_frame(self._store[i], ttl=0)) for i in ids if i in self._store]
