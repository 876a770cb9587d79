"""Consensus mode: synchronous rounds that end with byte-identical models, as a state machine.

One round ``r`` of one node, starting from the round's common model ``base``:

1. **train**: train from ``base`` and store the update as a blob (action :class:`Train`;
   the shell answers with :meth:`ConsensusNode.trained`);
2. **publish and collect**: announce the update (``update`` message: CID, example count,
   base), fetch the updates other members announce for round ``r`` on the same base
   (:class:`Fetch`), until every member believed alive has delivered, or the collect deadline
   passes;
3. **aggregate**: apply the task's deterministic rule to exactly the collected set
   (:class:`Aggregate`); every node that collected the same set computes the same bytes;
4. **agree**: announce the resulting model (``model`` message: CID and the included set) and
   gather the others' announcements until all alive members have announced or the agree
   deadline passes. The round's model is the CID announced by the most members (ties: the
   smallest CID). A node whose own result lost (it missed an update, say) fetches and adopts
   the winner, so honest nodes leave every round with the same model.

Liveness: a member that misses ``dead_after`` consecutive deadlines is no longer waited for,
until it is heard from again. Deadlines adapt: ``factor`` times a moving average of observed
phase durations, clamped to ``[minimum, maximum]``.

Catch-up: when a strict majority of members announce the same model for a round this node has
not finished, and this node is behind (still training, or that round is ahead of its own),
it adopts that model and joins the next round. A node restarted from disk catches up this way
from the announcements that anti-entropy gossip delivers.

Ending: a node that finishes the last round announces it (``done`` message: the final model's
CID), and re-announces it on :meth:`ConsensusNode.tick` with a doubling interval
(``DONE_FIRST_RETRY`` up to ``DONE_MAX_RETRY`` seconds), since frames get lost. It may stop
serving (:meth:`ConsensusNode.may_stop`) only once every member reported ``done`` with the model
it holds, and it announced its own ``done`` ``DONE_REPEATS`` times. Having *announced* a model
for the last round is not enough: a member whose model lost, or that still waits for
announcements, needs the others to serve the winner's blob and to replay what it missed.

A node that decided the last round on partial information (its agree deadline passed before
every announcement arrived) can end on another model than the rest; there is no next round to
re-base in. So a finished node adopts another final model (fetching it if needed), reports the
round again and announces ``done`` anew, when

- a strict majority of members reported ``done`` with that model, or
- every member reported ``done`` and that model is the one most members reported (ties: the
  smallest CID). This settles a split without a majority (3 against 3, say).

Every report a member ever made counts. Both rules pick the same model, *W*: the most reported
among the members' first reports. By induction every switch goes to *W*: a member that first
reported *W* only ever reports *W*, and no other model gains reports, so *W* stays the most
reported in any view that holds a report of every member, and only *W* can reach a majority.

Nothing here performs I/O or reads a clock: events carry ``now``, outputs are actions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fedledger.errors import ConfigError
from fedledger.node.waiting import Waiting

DONE_FIRST_RETRY = 0.5
"""Seconds from a node's first ``done`` announcement to its first re-announcement."""
DONE_MAX_RETRY = 8.0
"""The re-announcement interval doubles up to this many seconds."""
DONE_REPEATS = 3
"""``done`` announcements (the first included) a node makes before it may stop serving."""


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Adaptive deadline bounds, in seconds."""

    initial: float = 30.0
    """Used before any phase duration has been observed."""
    minimum: float = 1.0
    maximum: float = 120.0
    factor: float = 3.0

    def __post_init__(self) -> None:
        if not 0 < self.minimum <= self.maximum:
            raise ConfigError("need 0 < minimum <= maximum", field="timeouts")
        if not self.minimum <= self.initial <= self.maximum:
            raise ConfigError("need minimum <= initial <= maximum", field="timeouts.initial")
        if self.factor < 1:
            raise ConfigError(f"must be >= 1, got {self.factor}", field="timeouts.factor")


class AdaptiveTimeout:
    """``factor`` x an exponential moving average of observed durations, clamped."""

    def __init__(self, bounds: Timeouts, *, weight: float = 0.3) -> None:
        self.bounds = bounds
        self.weight = weight
        self.average: float | None = None

    def observe(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if self.average is None:
            self.average = seconds
        else:
            self.average = (1 - self.weight) * self.average + self.weight * seconds

    def current(self) -> float:
        b = self.bounds
        if self.average is None:
            return b.initial
        return min(max(b.factor * self.average, b.minimum), b.maximum)


@dataclass(frozen=True, order=True)
class Contribution:
    sender: str
    cid: str
    num_examples: int


# -- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Train:
    round: int
    base: str


@dataclass(frozen=True)
class Publish:
    kind: str
    round: int
    body: Mapping[str, object]


@dataclass(frozen=True)
class Fetch:
    cid: str
    sources: tuple[str, ...]
    """Members to try, in order."""
    parallel: int = 0
    """How many of them to ask at once (0: the node's fetch policy says)."""


@dataclass(frozen=True)
class Aggregate:
    round: int
    base: str
    inputs: tuple[Contribution, ...]


@dataclass(frozen=True)
class RoundDone:
    round: int
    model: str
    included: tuple[str, ...]
    """Senders whose updates the adopted model includes (as announced by its proposers)."""
    adopted: bool
    """True when this node adopted another result than the one it computed (or computed none)."""
    agreeing: int
    """Members that announced this model."""
    announced: int
    """Members that announced any model for the round."""


@dataclass(frozen=True)
class Finished:
    model: str
    round: int


Action = Train | Publish | Fetch | Aggregate | RoundDone | Finished


@dataclass
class _Round:
    updates: dict[str, Contribution] = field(default_factory=dict)
    bases: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    included: dict[str, tuple[str, ...]] = field(default_factory=dict)


class ConsensusNode:
    """The consensus-mode round logic of one node."""

    def __init__(
        self,
        *,
        me: str,
        members: Sequence[str],
        rounds: int,
        initial_model: str,
        timeouts: Timeouts | None = None,
        dead_after: int = 2,
        resume: tuple[int, str] | None = None,
    ) -> None:
        if me not in members:
            raise ConfigError("this node is not among the task's members", field="members")
        self.me = me
        self.members = tuple(sorted(set(members)))
        self.rounds = rounds
        self.dead_after = dead_after
        self.collect_timeout = AdaptiveTimeout(timeouts or Timeouts())
        self.agree_timeout = AdaptiveTimeout(timeouts or Timeouts())
        done, model = resume if resume is not None else (0, initial_model)
        self.round = done + 1
        self.base = model
        self.phase = "idle"
        self.finished = done >= rounds
        self.blobs: set[str] = {model}
        self._pending: set[str] = set()
        self._rounds: dict[int, _Round] = {}
        self._missed: dict[str, int] = dict.fromkeys(self.members, 0)
        self._phase_start = 0.0
        self._deadline = float("inf")
        self._my_update: str | None = None
        self._my_model: str | None = None
        self._winner: str | None = None
        self._fetch_retry_at: dict[str, float] = {}
        self._included: tuple[str, ...] = ()
        self._done: dict[str, set[str]] = {}
        """Members that reported finishing the last round, with the final models they reported."""
        self._correction: str | None = None
        """The majority's final model, which this finished node fetches to adopt."""
        self._done_sent = 0
        self._done_next = float("inf")
        self._done_interval = DONE_FIRST_RETRY

    # -- helpers ----------------------------------------------------------------------------

    def _r(self, rnd: int) -> _Round:
        return self._rounds.setdefault(rnd, _Round())

    def announcers(self, rnd: int) -> frozenset[str]:
        """Members (this node included) whose model announcement for ``rnd`` arrived."""
        st = self._rounds.get(rnd)
        return frozenset(st.models) if st is not None else frozenset()

    def done_by(self, model: str | None = None) -> frozenset[str]:
        """Members (this node included, once finished) that reported finishing the last round
        (with ``model``, when given)."""
        return frozenset(m for m, cids in self._done.items() if model is None or model in cids)

    def may_stop(self) -> bool:
        """Whether this node may stop serving: it finished, every member reported ``done`` with
        the model this node ended with, and it announced its own ``done`` ``DONE_REPEATS`` times
        (so a lost frame does not leave a member waiting for it).

        Until then a finished node keeps serving blobs and gossip: a member that announced a
        losing model for the last round still has to fetch the winner from someone, and one
        that ended on another model has to fetch the majority's.
        """
        return (
            self.finished
            and self._correction is None
            and self._done_sent >= DONE_REPEATS
            and self.done_by(self.base) >= frozenset(self.members)
        )

    def alive(self, member: str) -> bool:
        return member == self.me or self._missed.get(member, 0) < self.dead_after

    def expected(self) -> list[str]:
        return [m for m in self.members if self.alive(m)]

    def _heard(self, member: str) -> None:
        if member in self._missed:
            self._missed[member] = 0

    def _fetch(self, cid: str, sources: Sequence[str], now: float) -> list[Action]:
        if cid in self.blobs or cid in self._pending:
            return []
        self._pending.add(cid)
        self._fetch_retry_at[cid] = now + 1.0
        others = dict.fromkeys(s for s in sources if s != self.me)  # ordered, unique
        return [Fetch(cid, tuple(others))]

    def _collected(self) -> dict[str, Contribution]:
        st = self._r(self.round)
        return {
            s: c
            for s, c in st.updates.items()
            if c.cid in self.blobs and st.bases.get(s) == self.base
        }

    def waiting(self, now: float) -> Waiting | None:
        """Whom this node waits for now (None: nobody; it trains, aggregates or fetches):
        the updates of its collect phase, the models of its agree phase (each until the
        phase's deadline), or, finished, the members that have not reported ``done`` with
        its final model."""
        st = self._rounds.get(self.round)
        missing: list[str] = []
        what = ""
        if self.phase == "collect":
            collected = self._collected()
            missing = [m for m in self.expected() if m not in collected]
            what = "updates"
        elif self.phase == "agree":
            models = st.models if st is not None else {}
            missing = [m for m in self.expected() if m not in models]
            what = "models"
        elif self.finished and self._correction is None:
            done = self.done_by(self.base)
            missing = [m for m in self.members if m not in done]
            return Waiting(round=self.rounds, what="done reports", members=tuple(missing),
                           deadline=None) if missing else None  # fmt: skip
        if not missing or now > self._deadline:
            return None
        return Waiting(round=self.round, what=what, members=tuple(missing),
                       deadline=self._deadline)  # fmt: skip

    # -- events -------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        if self.finished:
            return [Finished(self.base, self.round - 1), *self._announce_done(now)]
        return self._begin_round(now)

    def _begin_round(self, now: float) -> list[Action]:
        self.phase = "train"
        self._phase_start = now
        self._deadline = float("inf")
        self._my_update = self._my_model = self._winner = None
        self._forget_old()
        return [Train(self.round, self.base)]

    def _forget_old(self) -> None:
        for rnd in [r for r in self._rounds if r < self.round - 1]:
            del self._rounds[rnd]

    def trained(self, rnd: int, base: str, cid: str, num_examples: int, now: float) -> list[Action]:
        """The shell trained round ``rnd`` from ``base`` and stored the update under ``cid``.

        A result for another round or base (the node re-based meanwhile) is discarded.
        """
        if rnd != self.round or base != self.base or self.phase != "train":
            return []
        self.blobs.add(cid)
        self._my_update = cid
        st = self._r(rnd)
        st.updates[self.me] = Contribution(self.me, cid, num_examples)
        st.bases[self.me] = self.base
        self.phase = "collect"
        self._phase_start = now
        self._deadline = now + self.collect_timeout.current()
        out: list[Action] = [
            Publish("update", rnd, {"cid": cid, "num_examples": num_examples, "base": self.base})
        ]
        for sender, c in sorted(st.updates.items()):
            if sender != self.me and st.bases.get(sender) == self.base:
                out += self._fetch(c.cid, [sender, *self.expected()], now)
        return out + self._check(now)

    def on_update(
        self, sender: str, rnd: int, cid: str, num_examples: int, base: str, now: float
    ) -> list[Action]:
        self._heard(sender)
        if rnd < self.round or sender not in self._missed:
            return []
        st = self._r(rnd)
        if sender in st.updates:
            return []  # first announcement wins; a second one is equivocation, ignored here
        st.updates[sender] = Contribution(sender, cid, num_examples)
        st.bases[sender] = base
        if rnd == self.round and self.phase in ("train", "collect") and base == self.base:
            # Fetch eagerly, even while this node still trains.
            return self._fetch(cid, [sender, *self.expected()], now) + self._check(now)
        return []

    def on_model(
        self, sender: str, rnd: int, cid: str, included: Sequence[str], now: float
    ) -> list[Action]:
        self._heard(sender)
        if sender not in self._missed:
            return []
        st = self._r(rnd)
        if sender in st.models:
            return []
        st.models[sender] = cid
        st.included[sender] = tuple(included)
        return self._catch_up(now) or self._check(now)

    def on_done(self, sender: str, rnd: int, cid: str, now: float) -> list[Action]:
        """``sender`` finished the last round with model ``cid`` (it holds that blob)."""
        self._heard(sender)
        if sender not in self._missed or sender == self.me or rnd != self.rounds:
            return []
        self._done.setdefault(sender, set()).add(cid)
        return self._correct(now)

    def _correct(self, now: float) -> list[Action]:
        """A finished node adopts the final model a strict majority reported, or, once every
        member reported, the most reported one (ties: the smallest CID), if not its own."""
        if not self.finished or self._correction is not None:
            return []
        majority = len(self.members) // 2 + 1
        counts = Counter(c for cids in self._done.values() for c in cids)
        ahead = sorted(c for c, n in counts.items() if n >= majority and c != self.base)
        if not ahead and self._done.keys() >= set(self.members):
            # every member reported: the most reported model, ties to the smallest CID
            best = max(counts.values())
            winner = min(c for c, n in counts.items() if n == best)
            ahead = [winner] if winner != self.base else []
        if not ahead:
            return []
        self._correction = ahead[0]
        if self._correction in self.blobs:
            return self._finish_correction(now)
        return self._fetch(self._correction, self._sources(self._correction), now)

    def _finish_correction(self, now: float) -> list[Action]:
        cid = self._correction
        assert cid is not None
        st = self._rounds.get(self.rounds, _Round())
        proposers = [s for s in sorted(st.models) if st.models[s] == cid]
        done = RoundDone(
            round=self.rounds,
            model=cid,
            included=st.included[proposers[0]] if proposers else (),
            adopted=True,
            agreeing=len(self.done_by(cid) | set(proposers)),
            announced=len(st.models),
        )
        self._correction = None
        self.base = cid
        self._done_sent, self._done_interval = 0, DONE_FIRST_RETRY
        return [done, Finished(cid, self.rounds), *self._announce_done(now)]

    def on_hello(self, sender: str) -> None:
        self._heard(sender)

    def blob_ready(self, cid: str, now: float) -> list[Action]:
        self._pending.discard(cid)
        self.blobs.add(cid)
        return self._check(now)

    def blob_failed(self, cid: str, now: float) -> list[Action]:
        """Every source failed; retried on a later tick while still needed."""
        self._pending.discard(cid)
        self._fetch_retry_at[cid] = now + 1.0
        return []

    def aggregated(self, rnd: int, cid: str, now: float) -> list[Action]:
        if rnd != self.round or self.phase != "aggregate":
            return []
        self.blobs.add(cid)
        self._my_model = cid
        st = self._r(rnd)
        included = tuple(sorted(self._included))
        st.models[self.me] = cid
        st.included[self.me] = included
        self.phase = "agree"
        self._phase_start = now
        self._deadline = now + self.agree_timeout.current()
        body = {"cid": cid, "included": [[s, st.updates[s].cid] for s in included]}
        return [Publish("model", rnd, body), *self._check(now)]

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self.finished and now >= self._done_next:
            out += self._announce_done(now)
        for cid in sorted(self._needed()):
            if cid not in self._pending and now >= self._fetch_retry_at.get(cid, 0.0):
                out += self._fetch(cid, self._sources(cid), now)
        if now >= self._deadline:
            out += self._on_deadline(now)
        return out

    # -- transitions ----------------------------------------------------------------------------

    def _needed(self) -> set[str]:
        if self.phase in ("train", "collect"):
            st = self._r(self.round)
            return {
                c.cid
                for s, c in st.updates.items()
                if st.bases.get(s) == self.base and c.cid not in self.blobs
            }
        if self.phase == "adopt" and self._winner is not None and self._winner not in self.blobs:
            return {self._winner}
        if self._correction is not None and self._correction not in self.blobs:
            return {self._correction}
        return set()

    def _sources(self, cid: str) -> list[str]:
        st = self._r(self.round)
        first = [s for s, c in st.updates.items() if c.cid == cid]
        first += [s for s, m in st.models.items() if m == cid]
        first += sorted(self.done_by(cid))  # they hold that final model
        first = list(dict.fromkeys(first))
        return first + [m for m in self.expected() if m not in first]

    def _on_deadline(self, now: float) -> list[Action]:
        if self.phase == "collect":
            collected = self._collected()
            for m in self.expected():
                if m not in collected:
                    self._missed[m] = self._missed.get(m, 0) + 1
            return self._aggregate(collected, now, timed_out=True)
        if self.phase == "agree":
            st = self._r(self.round)
            for m in self.expected():
                if m not in st.models:
                    self._missed[m] = self._missed.get(m, 0) + 1
            return self._decide(now, timed_out=True)
        return []

    def _check(self, now: float) -> list[Action]:
        if self.phase == "collect":
            collected = self._collected()
            if all(m in collected for m in self.expected()):
                return self._aggregate(collected, now, timed_out=False)
        elif self.phase == "agree":
            st = self._r(self.round)
            if all(m in st.models for m in self.expected()):
                return self._decide(now, timed_out=False)
        elif self.phase == "adopt" and self._winner in self.blobs:
            return self._finish_round(now)
        elif self._correction is not None and self._correction in self.blobs:
            return self._finish_correction(now)
        return []

    def _aggregate(
        self, collected: Mapping[str, Contribution], now: float, *, timed_out: bool
    ) -> list[Action]:
        if not timed_out:
            self.collect_timeout.observe(now - self._phase_start)
        self.phase = "aggregate"
        self._deadline = float("inf")
        self._included = tuple(sorted(collected))
        inputs = tuple(collected[s] for s in self._included)
        return [Aggregate(self.round, self.base, inputs)]

    def _decide(self, now: float, *, timed_out: bool) -> list[Action]:
        if not timed_out:
            self.agree_timeout.observe(now - self._phase_start)
        st = self._r(self.round)
        counts = Counter(st.models.values())
        best = max(counts.values())
        self._winner = min(c for c, n in counts.items() if n == best)
        self.phase = "adopt"
        self._deadline = float("inf")
        if self._winner in self.blobs:
            return self._finish_round(now)
        return self._fetch(self._winner, self._sources(self._winner), now)

    def _finish_round(self, now: float) -> list[Action]:
        assert self._winner is not None
        st = self._r(self.round)
        winner = self._winner
        proposer = next(s for s in sorted(st.models) if st.models[s] == winner)
        done = RoundDone(
            round=self.round,
            model=winner,
            included=st.included.get(proposer, ()),
            adopted=self._my_model != winner,
            agreeing=sum(1 for m in st.models.values() if m == winner),
            announced=len(st.models),
        )
        return [done, *self._advance(winner, now)]

    def _advance(self, model: str, now: float) -> list[Action]:
        self.base = model
        if self.round >= self.rounds:
            self.finished = True
            self.phase = "finished"
            return [Finished(model, self.round), *self._announce_done(now), *self._correct(now)]
        self.round += 1
        return self._begin_round(now)

    def _announce_done(self, now: float) -> list[Action]:
        """(Re-)announce that this node finished the last round; schedule the next time."""
        self._done.setdefault(self.me, set()).add(self.base)
        if self._done_sent:
            self._done_interval = min(2 * self._done_interval, DONE_MAX_RETRY)
        self._done_sent += 1
        self._done_next = now + self._done_interval
        return [Publish("done", self.rounds, {"cid": self.base})]

    def _catch_up(self, now: float) -> list[Action]:
        """Adopt a majority's model for a round this node is behind on, or got wrong.

        Behind: the round is ahead of this node's, or is its current round and it has not
        finished training. Wrong: the majority's model for the previous round is not the base
        this node trains from, and it has not aggregated yet; it re-bases and trains again.
        """
        if self.finished:
            return []
        majority = len(self.members) // 2 + 1
        for rnd in sorted(self._rounds, reverse=True):
            behind = rnd > self.round or (rnd == self.round and self.phase in ("train", "idle"))
            rebase = rnd == self.round - 1 and self.phase in ("train", "collect")
            if not (behind or rebase):
                continue
            counts = Counter(self._rounds[rnd].models.values())
            if not counts:
                continue
            cid, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            if n < majority or (rebase and not behind and cid == self.base):
                continue
            self.round = rnd
            self._my_model = self._my_model if rebase and not behind else None
            self._winner = cid
            self.phase = "adopt"
            self._deadline = float("inf")
            if cid in self.blobs:
                return self._finish_round(now)
            return self._fetch(cid, self._sources(cid), now)
        return []
