"""Ledger mode (v2): rounds certified by batches of signed messages, as an I/O-free state
machine.

In round ``r`` each member signs ONE message, ``Round(r, update, examples, model, result)``
(:mod:`fedledger.ledger.messages`): its update for ``r`` and its attestation of round
``r - 1``'s outcome. One round ``r`` of one node:

1. **train** round ``r``'s update from the model it computed for ``r - 1`` (round 1: the
   initial model), once round ``r - 1``'s message phase closed (round 1: once it started)
   (:class:`~fedledger.node.consensus.Train`);
2. **sign** the message, after its content is on disk (:class:`Sign`: the shell persists,
   fsyncs, signs and gossips it to the members); a node never signs two different messages
   for one round, a restarted one resends the one it persisted;
3. **submit**: the round's designated submitter (the eligible members sorted by address,
   index ``r mod n``) sends every message it holds in one batch (:class:`Submit`) once every
   eligible member's is in, or ``collect`` seconds after those it holds reached a quorum of
   stake (``fallback`` after its own, short of a quorum); the batch carries its
   result for ``r - 1`` (contributors and scores) so the batch that finalizes ``r - 1`` pays
   it. A member whose message is still not on chain ``fallback`` seconds after signing, or
   once a batch without it brought the round to a quorum, submits it itself: no submitter
   can censor it;
4. when round ``r``'s phase closes on chain (every eligible member's message in, ``grace``
   after a quorum of stake's, or the window), **fetch** every update its ``Submitted``
   events name (the CID is derived from the signed digest), from its author first; an update
   is served only once its round closed, so nobody can copy it in time;
5. **aggregate** exactly those updates whose blobs arrived, once all did or ``patience``
   seconds after the close (:class:`~fedledger.node.consensus.Aggregate`), over the base
   that the chain fixed (the last model finalized before ``r``); its result is attested in
   the node's round ``r + 1`` message (after the last round, a message that attests only);
6. round ``r`` is done when ``Finalized(r)`` arrives (a node that computed something else
   adopts and fetches the finalized model), or when round ``r + 1`` closed without it (the
   round failed, the base stays). If a finalized round's rewards were not paid by a batch,
   the lowest-address member that attested the finalized pair sends :class:`Distribute`;
   after the last round, a failed round is recorded with :class:`Close`.

Two different messages signed by one member for one round, seen in gossip or on chain, are
evidence (:class:`Evidence`). Everything is level-triggered: events only add to what the node
knows, and :meth:`LedgerRoundNode.tick` decides from that and the chain's time. Nothing here
performs I/O or reads a clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fedledger.commit import cid_from_digest, digest_from_cid
from fedledger.ledger.masking import MaskingSets
from fedledger.ledger.messages import ZERO32, RoundMessage, SignedRound
from fedledger.ledger.records import (
    Closed,
    CommitteeSampled,
    Distributed,
    Finalized,
    Joined,
    LedgerEvent,
    Left,
    Quorate,
    RoundClock,
    RoundStarted,
    Skipped,
    Slashed,
    Submitted,
    TaskRules,
    round_inputs,
)
from fedledger.ledger.reputation import round_reputation
from fedledger.ledger.rules import BPS, result_digest, sort_result
from fedledger.node.consensus import Aggregate, Contribution, Fetch, Finished, Train
from fedledger.node.waiting import Waiting
from fedledger.privacy.secagg_keys import MIN_MEMBERS

RETRY_SECONDS = 1.0
"""How long a node waits before trying a failed transaction again."""
FETCH_RETRY_SECONDS = 0.25
"""How long before a failed fetch (every source refused, unreachable or too slow) is tried
again: meanwhile the members that fetched the blob can serve it too."""
GIVE_UP_AFTER = 2
"""Failed fetches of an update after which a round is aggregated without it (each asks its
author, then every member): a withholder costs a round two fetch attempts, not the grace."""
FALLBACK_SOURCES = 4
"""Members asked at once for an update its author did not deliver (hedged: a refusal or a
failure moves on to the next member at once)."""

# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sign:
    """Persist (fsync) ``message``, sign it and gossip it; report with :meth:`signed`."""

    round: int
    message: RoundMessage


@dataclass(frozen=True)
class Submit:
    round: int
    messages: tuple[SignedRound, ...]
    contributors: tuple[str, ...]
    scores: tuple[int, ...]
    transcript: bytes = ZERO32
    """Round ``round - 1``'s secure-aggregation transcript digest (zero: none)."""


@dataclass(frozen=True)
class Distribute:
    round: int
    contributors: tuple[str, ...]
    scores: tuple[int, ...]
    transcript: bytes = ZERO32


@dataclass(frozen=True)
class Reveal:
    """Secure aggregation: round ``round`` closed; disclose this node's shares of the
    ``survivors``' self seeds and of the ``dropouts``' mask keys (gossiped, signed)."""

    round: int
    survivors: tuple[str, ...]
    dropouts: tuple[str, ...]


@dataclass(frozen=True)
class Close:
    round: int


@dataclass(frozen=True)
class Evidence:
    round: int
    a: SignedRound
    b: SignedRound


@dataclass(frozen=True)
class LedgerRoundDone:
    round: int
    model: str
    """The round's model: the finalized one, or the unchanged base for a failed round."""
    finalized: bool
    adopted: bool
    """True when this node did not compute the finalized model itself."""
    caught_up: bool
    """True when the node took no part in the round (it was down or late: no message of its
    own, no result) and only learned its outcome."""
    included: int
    """Updates in this node's result (0 when it computed none)."""
    attesters: int
    """Members whose messages attested the finalized pair."""
    attestations: int
    """Members whose messages attested anything for the round."""
    gas: int
    """Gas of this node's transactions that carried round ``round``'s messages (the last
    round: and its attestations')."""
    gas_by_kind: dict[str, int] = field(default_factory=dict)
    transactions: int = 0
    """Transactions of the round on chain, by anyone (batches and distributions)."""
    releases: int = 0
    """Rounds up to this one in which this node signed an update (its privacy releases)."""


LedgerAction = Train | Fetch | Aggregate | Sign | Submit | Distribute | Close | Evidence | Reveal
Action = LedgerAction | LedgerRoundDone | Finished

TX_KINDS = ("submit", "distribute", "close", "slash")


# -- what the node knows about each round -------------------------------------------------------


@dataclass
class _Chain:
    """One round as the chain's events told it."""

    started: RoundStarted | None = None
    submitted: dict[str, Submitted] = field(default_factory=dict)
    quorum_at: int | None = None
    closed_at: int | None = None
    finalized: Finalized | None = None
    skipped: bool = False
    distributed: bool = False
    txs: set[str] = field(default_factory=set)
    """Transactions that carried the round's messages, or paid it in a call of its own."""


@dataclass
class _Mine:
    """This node's own progress in one round."""

    base: str = ""
    """The model this node trained the round's update from."""
    training: bool = False
    trained: tuple[str, int] | None = None  # (cid, examples)
    message: SignedRound | None = None
    signing: bool = False
    signed_at: float = 0.0
    result: tuple[str, tuple[str, ...], tuple[int, ...]] | None = None  # (model, who, scores)
    transcript: bytes = ZERO32
    """The secure-aggregation transcript digest of :attr:`result` (zero: none)."""
    abandoned: bool = False
    """Secure aggregation could not unmask the round: this node attests nothing for it."""
    no_update: bool = False
    """Secure aggregation: this node could not mask an update for the round (it attests)."""
    revealed: bool = False
    aggregating: bool = False
    collecting_since: float | None = None
    """When this node first found the round closed and began fetching its updates."""
    in_flight: set[str] = field(default_factory=set)
    submitted_at: float | None = None
    quorum_seen: float | None = None
    """When the messages this node holds first reached a quorum of the round's stake."""
    sent: set[str] = field(default_factory=set)
    """Signers whose messages a batch of this node's carried (mined, or in flight)."""
    sending: set[str] = field(default_factory=set)
    gas: int = 0
    gas_by_kind: dict[str, int] = field(default_factory=dict)
    distribution_decided: bool = False
    close_sent: bool = False
    retry_at: float = 0.0


class LedgerRoundNode:
    """The ledger-mode round logic of one node (see the module docstring)."""

    def __init__(
        self,
        *,
        me: str,
        rules: TaskRules,
        rounds: int,
        initial_model: str,
        members: Sequence[str] = (),
        rng: random.Random | None = None,
        collect: float = 2.0,
        fallback: float = 10.0,
        patience: float | None = None,
        resume: tuple[int, str] | None = None,
        signed: Mapping[int, SignedRound] | None = None,
        max_releases: int | None = None,
        secure: bool = False,
    ) -> None:
        self.me = me
        self.secure = secure
        """Secure aggregation: updates are masked, and only their sum is unmasked."""
        self.masking = MaskingSets()
        self.excluded: set[bytes] = set()
        self.max_releases = max_releases
        """The most rounds this node may send an update in (its privacy budget), or None."""
        self.budget_spent_at: int | None = None
        """The first round this node sent no update because its budget was spent."""
        self.rules = rules
        self.rounds = rounds
        self.rng = rng or random.Random()
        self.collect = collect
        self.fallback = max(fallback, collect)
        self.patience = float(max(rules.grace, 1)) if patience is None else patience
        self.initial_model = initial_model
        self.active: set[str] = set(members) | {me}
        self.first_rounds: dict[str, int] = {}
        self.committees: dict[int, frozenset[str]] = {}
        """Each committee round's drawn members (``CommitteeSampled``): only they sign it, and
        they attest the round before it."""
        self.stakes: dict[str, int] = {}
        """Each member's stake, from its Joined event (equal weights until known)."""
        done, model = resume if resume is not None else (0, initial_model)
        self.done = done
        self.base = model
        self.blobs: set[str] = {model, initial_model}
        self.finished = done >= rounds
        self.first_round: int | None = None
        self._chain: dict[int, _Chain] = {}
        self._mine: dict[int, _Mine] = {}
        self._pool: dict[int, dict[str, SignedRound]] = {}
        self._evidence_sent: set[tuple[int, str]] = set()
        self._evidence: dict[tuple[int, str], tuple[SignedRound, SignedRound, float]] = {}
        """Conflicts seen, to submit at the due time unless someone slashed the signer first:
        members wait their rank x ``collect`` seconds, so one transaction usually does it."""
        self.slashed: set[str] = set()
        self._pending: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._finished_sent = False
        self._now = 0.0
        self.finalized_models: set[str] = set()
        """CIDs of every finalized model seen (served to non-members the policy allows)."""
        self._history: list[LedgerEvent] = []
        self._submitted: list[Submitted] = []
        for rnd, message in (signed or {}).items():
            m = self._m(rnd)
            m.message = message
            self._pool.setdefault(rnd, {})[me] = message
            if message.message.update != ZERO32:
                m.trained = (cid_from_digest(message.message.update), message.message.examples)
                self.blobs.add(m.trained[0])

    # -- knowledge ------------------------------------------------------------------------------

    def _c(self, rnd: int) -> _Chain:
        return self._chain.setdefault(rnd, _Chain())

    def _m(self, rnd: int) -> _Mine:
        return self._mine.setdefault(rnd, _Mine())

    def current(self) -> int:
        """The latest round the chain started (0 before the task starts)."""
        return max((r for r, c in self._chain.items() if c.started is not None), default=0)

    def clock(self, rnd: int) -> RoundClock | None:
        c = self._chain.get(rnd)
        if c is None or c.started is None:
            return None
        return RoundClock.of(start=c.started.start, rules=self.rules, quorum_at=c.quorum_at,
                             closed_at=c.closed_at)  # fmt: skip

    def is_closed(self, rnd: int, now: float) -> bool:
        """Whether round ``rnd``'s message phase is over (it started and its clock ran out)."""
        clock = self.clock(rnd)
        return clock is not None and not clock.open(int(now))

    def closed(self, rnd: int) -> bool:
        """Whether round ``rnd`` has an outcome (finalized or failed) as far as known."""
        c = self._chain.get(rnd)
        return c is not None and (c.finalized is not None or c.skipped)

    def servable(self, cid: str, now: float) -> bool:
        """False for this node's update of a round until that round's message phase closed:
        nobody can copy it into a message of the same round."""
        for rnd, m in self._mine.items():
            if m.trained is not None and m.trained[0] == cid and not self.is_closed(rnd, now):
                return False
        return True

    def reputation(self, rnd: int, members: Sequence[str]) -> list[tuple[int, int]]:
        """Each member's ``(selections, updates)`` as of the block that started ``rnd``."""
        return round_reputation(self._history, rnd, members)

    def eligible(self, rnd: int) -> list[str]:
        """The active members that may send a message for ``rnd``, sorted by address: its
        committee's, if one was drawn for it."""
        committee = self.committees.get(rnd)
        return sorted((a for a in self.active if self.first_rounds.get(a, 1) <= rnd
                       and (committee is None or a in committee)), key=str.lower)  # fmt: skip

    def seated(self, rnd: int) -> bool:
        """Whether this node may sign round ``rnd``'s message: no committee was drawn for it
        (every member signs), or this node was drawn. Round ``rnd``'s committee is drawn when
        round ``rnd - 1`` opens (rounds 1 and 2: at the start), so this is known by then."""
        committee = self.committees.get(rnd)
        return committee is None or self.me in committee

    def submitter(self, rnd: int) -> str | None:
        eligible = self.eligible(rnd)
        return eligible[rnd % len(eligible)] if eligible else None

    def on_events(self, events: Iterable[LedgerEvent], now: float) -> list[Action]:
        self._now = now
        out: list[Action] = []
        events = list(events)
        self.masking.add(events)
        for e in events:
            if isinstance(e, RoundStarted | Submitted | Distributed):
                self._history.append(e)
            if isinstance(e, Submitted):
                self._submitted.append(e)
            if isinstance(e, Joined):
                self.active.add(e.member)
                self.first_rounds[e.member] = e.first_round
                self.stakes[e.member] = e.stake
                if e.member == self.me:
                    self.first_round = e.first_round
            elif isinstance(e, Left | Slashed):
                self.active.discard(e.member)
                if isinstance(e, Slashed):
                    self.slashed.add(e.member)
            elif isinstance(e, RoundStarted):
                self._c(e.round).started = e
            elif isinstance(e, CommitteeSampled):
                self.committees[e.round] = frozenset(e.members)
            elif isinstance(e, Submitted):
                c = self._c(e.round)
                c.submitted.setdefault(e.member, e)
                c.txs.add(e.tx)
                out += self._check_conflict(e.signed())
            elif isinstance(e, Quorate):
                self._c(e.round).quorum_at = e.time
            elif isinstance(e, Closed):
                self._c(e.round).closed_at = e.time
            elif isinstance(e, Finalized):
                self._c(e.round).finalized = e
                self.finalized_models.add(cid_from_digest(e.model_digest))
            elif isinstance(e, Skipped):
                self._c(e.round).skipped = True
            elif isinstance(e, Distributed):
                self._c(e.round).distributed = True
                nxt = self._chain.get(e.round + 1)
                if nxt is None or all(s.tx != e.tx for s in nxt.submitted.values()):
                    self._c(e.round).txs.add(e.tx)  # a distribute call of its own
        return out + self.tick(now)

    # -- gossip ---------------------------------------------------------------------------------

    def on_message(self, s: SignedRound, now: float) -> list[Action]:
        """A member's signed message (already verified against its signer by the shell)."""
        self._now = now
        pool = self._pool.setdefault(s.message.round, {})
        if s.signer not in pool:
            pool[s.signer] = s
            return self._check_conflict(s) + self.tick(now)
        return self._check_conflict(s)

    def _check_conflict(self, s: SignedRound) -> list[Action]:
        rnd, who = s.message.round, s.signer
        key = (rnd, who)
        if key in self._evidence_sent:
            return []
        known: list[SignedRound] = []
        if who in self._pool.get(rnd, {}):
            known.append(self._pool[rnd][who])
        sub = self._chain.get(rnd)
        if sub is not None and who in sub.submitted:
            known.append(sub.submitted[who].signed())
        for k in known:
            if k.message != s.message:
                self._evidence_sent.add(key)
                honest = sorted(self.active - {who}, key=str.lower)
                rank = honest.index(self.me) if self.me in honest else len(honest)
                self._evidence[key] = (k, s, self._now + rank * self.collect)
                return []
        return []

    def _evidences(self, now: float) -> list[Action]:
        out: list[Action] = []
        for key, (a, b, due) in list(self._evidence.items()):
            if key[1] in self.slashed:
                del self._evidence[key]
            elif now >= due:
                del self._evidence[key]
                out.append(Evidence(key[0], a, b))
        return out

    # -- results from the shell -----------------------------------------------------------------

    def trained(self, rnd: int, base: str, cid: str, num_examples: int, now: float) -> list[Action]:
        m = self._m(rnd)
        m.training = False
        if base != m.base or m.message is not None:
            return self.tick(now)
        self.blobs.add(cid)
        m.trained = (cid, num_examples)
        return self.tick(now)

    def signed(self, s: SignedRound, now: float) -> list[Action]:
        m = self._m(s.message.round)
        m.signing = False
        m.message = s
        m.signed_at = now
        self._pool.setdefault(s.message.round, {}).setdefault(self.me, s)
        return self.tick(now)

    def aggregated(
        self,
        rnd: int,
        model: str,
        contributors: Sequence[str],
        scores: Sequence[int],
        now: float,
        transcript: bytes = ZERO32,
    ) -> list[Action]:
        """The shell aggregated round ``rnd``: ``model`` (a CID), and the rule's score for each
        included contributor (0 for a rejected one); ``transcript``: the digest of the secure-
        aggregation transcript it was unmasked with (zero: none)."""
        m = self._m(rnd)
        m.aggregating = False
        self.blobs.add(model)
        who, points = sort_result(list(contributors), list(scores))
        m.result = (model, tuple(who), tuple(points))
        m.transcript = transcript
        return self.tick(now)

    def abandon(self, rnd: int, now: float) -> list[Action]:
        """Secure aggregation could not unmask round ``rnd`` (too few reveals, a masked update
        missing): this node attests nothing for it, and it fails unless others finalize it."""
        m = self._m(rnd)
        m.aggregating = False
        m.abandoned = True
        return self.tick(now)

    def no_update(self, rnd: int, now: float) -> list[Action]:
        """The shell has no update of ``rnd`` to send (secure aggregation could not mask it: a
        key blob of its masking set is missing; or the node drops out): its message only
        attests."""
        m = self._m(rnd)
        m.training = False
        m.no_update = True
        return self.tick(now)

    def exclude(self, keys_digest: bytes) -> None:
        """Secure aggregation: the key blob of this digest is invalid; its member masks with
        nobody in the rounds it registered it for (every node decides the same from the same
        bytes)."""
        self.excluded.add(keys_digest)

    def masking_set(self, rnd: int) -> tuple[str, ...] | None:
        """Round ``rnd``'s masking set as the chain fixed it, without the members whose key
        blob for it is invalid (None: not fixed yet)."""
        members = self.masking.of(rnd)
        if members is None:
            return None
        return tuple(a for a in members if self.masking.digest(a, rnd) not in self.excluded)

    def secure_sets(self, rnd: int) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """``(survivors, dropouts)`` of a closed secure round: the members of its masking set
        whose message carries an update on chain, and the rest (None: not closed yet)."""
        if not self.is_closed(rnd, self._now):
            return None
        members = self.masking_set(rnd) or ()
        sent = set(round_inputs(self._submitted, rnd))
        survivors = tuple(a for a in members if a in sent)
        return survivors, tuple(a for a in members if a not in sent)

    def tx_done(
        self, kind: str, rnd: int, *, ok: bool, gas: int, reason: str | None, now: float
    ) -> list[Action]:
        m = self._m(rnd)
        m.in_flight.discard(kind)
        m.gas_by_kind[kind] = m.gas_by_kind.get(kind, 0) + gas
        m.gas += gas
        if kind == "submit":
            if ok:  # its events may come a poll later: do not send them again meanwhile
                m.sent |= m.sending
            m.sending = set()
        if not ok:
            m.retry_at = now + RETRY_SECONDS
            if kind == "distribute":
                m.distribution_decided = False
            elif kind == "close":
                m.close_sent = False
        return self.tick(now)

    def blob_ready(self, cid: str, now: float) -> list[Action]:
        self._pending.discard(cid)
        self.blobs.add(cid)
        return self.tick(now)

    def blob_failed(self, cid: str, now: float) -> list[Action]:
        self._pending.discard(cid)
        failures = self._failures.get(cid, 0) + 1
        self._failures[cid] = failures
        # The first failure (its author alone) is followed at once by the others.
        self._retry_at[cid] = now + (0.0 if failures == 1 else FETCH_RETRY_SECONDS)
        return self.tick(now)

    # -- decisions --------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        return self.tick(now)

    def _fetch(self, cid: str, first: Sequence[str], now: float) -> list[Action]:
        if cid in self.blobs or cid in self._pending or now < self._retry_at.get(cid, 0.0):
            return []
        self._pending.add(cid)
        members = sorted(self.active, key=str.lower)
        sources = dict.fromkeys(s for s in [*first, *members] if s != self.me)
        return [Fetch(cid, tuple(sources))]

    def _fetch_update(self, cid: str, author: str, now: float) -> list[Action]:
        """A round's update: from its author alone first (it has it, and serves it once the
        round closed: one request in the honest case); if that fails, from the other members
        right away, up to FALLBACK_SOURCES at a time with hedging (one of them may have got it,
        if the author served some and not others; a refusal moves on to the next at once, and
        a hundred members do not each get a hundred requests). After GIVE_UP_AFTER failures
        the round goes on without it."""
        if cid in self.blobs or cid in self._pending or now < self._retry_at.get(cid, 0.0):
            return []
        self._pending.add(cid)
        if self._failures.get(cid, 0) == 0 and author != self.me:
            return [Fetch(cid, (author,), parallel=1)]
        others = tuple(sorted((a for a in self.active if a not in (self.me, author)),
                              key=str.lower))  # fmt: skip
        width = max(1, min(FALLBACK_SOURCES, len(others)))
        return [Fetch(cid, others or (author,), parallel=width)]

    def tick(self, now: float) -> list[Action]:
        if self._finished_sent:
            return []
        self._now = now
        out: list[Action] = []
        out += self._evidences(now)
        out += self._close_rounds(now)
        out += self._distributions(now)
        if self.finished:
            out += self._close_last(self.rounds + 1, now)
            if self._unrecorded_failure(now):
                return out  # the chain has not recorded the last round's failure yet
            if not any(m.in_flight for m in self._mine.values()):
                self._finished_sent = True
                out.append(Finished(self.base, self.done))
            return out
        first = self.done + 1
        for rnd in (first, first + 1):
            if rnd <= self.rounds + 1:
                out += self._work(rnd, now)
        return out

    # -- outcomes ---------------------------------------------------------------------------------

    def _outcome(self, rnd: int, now: float) -> str | None:
        """ "finalized", "failed" or None (not known yet)."""
        c = self._chain.get(rnd)
        if c is None:
            return None
        if c.finalized is not None:
            return "finalized"
        if c.skipped:
            return "failed"
        # Round rnd's attestations travel in round rnd + 1's messages: once that round
        # closed without a quorum, rnd failed (the contract records it when rnd + 2 opens).
        if self.is_closed(rnd + 1, now):
            return "failed"
        return None

    def base_for(self, rnd: int) -> str:
        """The model round ``rnd`` aggregates over: the last one finalized before it."""
        model = self.initial_model
        for r in range(1, rnd):
            f = self._chain.get(r)
            if f is not None and f.finalized is not None:
                model = cid_from_digest(f.finalized.model_digest)
        return model

    def _close_rounds(self, now: float) -> list[Action]:
        out: list[Action] = []
        while not self.finished:
            rnd = self.done + 1
            outcome = self._outcome(rnd, now)
            if outcome is None:
                break
            c = self._chain[rnd]
            m = self._m(rnd)
            last = self._mine.get(rnd + 1) if rnd == self.rounds else None
            if m.in_flight or (last is not None and last.in_flight):
                break  # wait for the receipts: their gas is the round's
            model = cid_from_digest(c.finalized.model_digest) if c.finalized else self.base
            if model not in self.blobs:
                nxt = self._chain.get(rnd + 1)
                pair = (c.finalized.model_digest, c.finalized.result_digest) if c.finalized \
                    else None  # fmt: skip
                first = sorted((a for a, s in (nxt.submitted.items() if nxt else ())
                                if (s.model, s.result) == pair), key=str.lower)  # fmt: skip
                return out + self._fetch(model, first, now)
            nxt = self._chain.get(rnd + 1)
            votes = [(s.model, s.result) for s in (nxt.submitted.values() if nxt else ())
                     if s.model != ZERO32]  # fmt: skip
            pair = (c.finalized.model_digest, c.finalized.result_digest) if c.finalized else None
            gas_kinds = dict(m.gas_by_kind)
            if last is not None:  # the last round's attestations' batch is its cost too
                for kind, gas in last.gas_by_kind.items():
                    gas_kinds[kind] = gas_kinds.get(kind, 0) + gas
            out.append(LedgerRoundDone(
                round=rnd,
                model=model,
                finalized=c.finalized is not None,
                adopted=c.finalized is not None and (m.result is None or m.result[0] != model),
                caught_up=m.message is None and m.result is None,
                included=len(m.result[1]) if m.result else 0,
                attesters=sum(1 for v in votes if v == pair),
                attestations=len(votes),
                gas=m.gas + (last.gas if last is not None else 0),
                gas_by_kind=gas_kinds,
                transactions=len(c.txs),
                releases=self.releases_through(rnd),
            ))  # fmt: skip
            self.done, self.base = rnd, model
            if self.done >= self.rounds:
                self.finished = True
        return out

    def _distributions(self, now: float) -> list[Action]:
        """Pay a finalized round that no batch paid: its round + 1 closed, and this node
        attested the finalized pair with the lowest address among those that did."""
        out: list[Action] = []
        for rnd, m in self._mine.items():
            c = self._chain.get(rnd)
            if m.distribution_decided or c is None or c.finalized is None or m.result is None:
                continue
            if c.distributed or now < m.retry_at:
                m.distribution_decided = c.distributed
                continue
            if not self.is_closed(rnd + 1, now) or any(x.in_flight for x in self._mine.values()):
                continue
            model, who, scores = m.result
            final = (c.finalized.model_digest, c.finalized.result_digest)
            mine = (digest_from_cid(model), result_digest(list(who), list(scores), m.transcript))
            if final != mine:
                m.distribution_decided = True
                continue
            nxt = self._chain.get(rnd + 1)
            agreeing = sorted((a for a, s in (nxt.submitted.items() if nxt else ())
                               if (s.model, s.result) == final), key=str.lower)  # fmt: skip
            m.distribution_decided = True
            if agreeing and agreeing[0] == self.me:
                m.in_flight.add("distribute")
                out.append(Distribute(rnd, who, scores, m.transcript))
        return out

    # -- one round's work -------------------------------------------------------------------------

    def _work(self, rnd: int, now: float) -> list[Action]:
        out: list[Action] = []
        out += self._commit(rnd, now)
        out += self._submit(rnd, now)
        out += self._reveal(rnd, now)
        out += self._aggregate(rnd, now)
        out += self._close_last(rnd, now)
        return out

    def _ready_to_sign(self, rnd: int, now: float) -> bool:
        """Round ``rnd - 1`` closed (round 1: started) and ``rnd`` still takes messages."""
        if rnd == 1:
            if self.clock(1) is None:
                return False
        elif not self.is_closed(rnd - 1, now):
            return False
        clock = self.clock(rnd)
        return clock is None or clock.open(int(now))

    def last_block(self, rnd: int) -> int | None:
        """The block that holds round ``rnd``'s last message on chain (None: no message)."""
        c = self._chain.get(rnd)
        return max((s.block for s in c.submitted.values()), default=None) if c else None

    def held(self, rnd: int) -> frozenset[str]:
        """The members whose round ``rnd`` messages this node holds (gossiped or its own)."""
        return frozenset(self._pool.get(rnd, {}))

    def waiting(self, now: float) -> Waiting | None:
        """Whom this node waits for now (None: nobody in particular; it trains, aggregates,
        or the round has not started): the update blobs of the round it aggregates that have
        not arrived (until its patience runs out), else, once it signed its own message of
        the open round, the eligible members whose messages it neither holds nor sees on
        chain (until the phase closes)."""
        if self.finished:
            return None
        rnd = self.done + 1
        m = self._mine.get(rnd)
        if m is not None and m.collecting_since is not None and m.result is None \
                and not (m.aggregating or m.abandoned):  # fmt: skip
            updates = round_inputs(self._submitted, rnd)
            if self.secure:
                members = set(self.masking_set(rnd) or ())
                updates = {a: s for a, s in updates.items() if a in members}
            missing = sorted((a for a, s in updates.items()
                              if a != self.me and cid_from_digest(s.update) not in self.blobs),
                             key=str.lower)  # fmt: skip
            if missing:
                return Waiting(round=rnd, what="update blobs", members=tuple(missing),
                               deadline=m.collecting_since + self.patience)  # fmt: skip
        current = self.current()
        clock = self.clock(current)
        mine = self._mine.get(current)
        if clock is None or not clock.open(int(now)) or mine is None or mine.message is None:
            return None
        chain = self._chain.get(current)
        on_chain = set(chain.submitted) if chain is not None else set()
        pool = self._pool.get(current, {})
        missing = [a for a in self.eligible(current) if a not in pool and a not in on_chain]
        if not missing:
            return None
        return Waiting(round=current, what="messages", members=tuple(missing),
                       deadline=float(clock.closes_at))  # fmt: skip

    def releases_through(self, rnd: int) -> int:
        """Rounds up to ``rnd`` in which this node signed an update: its own messages (those
        restored from disk included) and the chain's record of them."""
        rounds = {
            r
            for r, m in self._mine.items()
            if r <= rnd and m.message is not None and m.message.message.update != ZERO32
        }
        rounds |= {
            e.round
            for e in self._submitted
            if e.member == self.me and e.round <= rnd and e.update != ZERO32
        }
        return len(rounds)

    def _budget_spent(self, rnd: int) -> bool:
        """Whether an update in round ``rnd`` would exceed this node's privacy budget."""
        return self.max_releases is not None and \
            self.releases_through(rnd - 1) >= self.max_releases  # fmt: skip

    def _commit(self, rnd: int, now: float) -> list[Action]:
        m = self._m(rnd)
        if m.message is not None or m.signing or not self._ready_to_sign(rnd, now):
            return []
        eligible = self.first_round is not None and self.first_round <= rnd
        if not eligible or not self.seated(rnd):
            return []  # (not drawn: the committee's finalized model is fetched when done)
        prev = self._mine.get(rnd - 1)
        waiting = prev is None or (prev.result is None and not prev.abandoned)
        if rnd > 1 and waiting and rnd - 1 > self.done:
            return []  # aggregate round rnd - 1 first (its result is attested, and trained on)
        # (A round done without this node's result, after a restart: train on the base and
        # attest nothing.)
        model, result = ZERO32, ZERO32
        train_base = self.initial_model if rnd == 1 else self.base
        if prev is not None and prev.result is not None:
            p_model, who, scores = prev.result
            model = digest_from_cid(p_model)
            result = result_digest(list(who), list(scores), prev.transcript)
            train_base = p_model
        if train_base not in self.blobs:
            return self._fetch(train_base, [], now)
        spent = rnd <= self.rounds and m.trained is None and self._budget_spent(rnd)
        unmasked = m.no_update and m.trained is None  # no update this round: attest only
        if self.secure and rnd <= self.rounds and m.trained is None:
            members = self.masking_set(rnd)
            if members is None:
                return []  # the chain has not fixed the round's masking set yet
            # (Secure aggregation: a node outside the set has nobody to mask with.)
            unmasked = unmasked or self.me not in members or len(members) < MIN_MEMBERS
        if rnd > self.rounds or spent or unmasked:
            m.signing = True  # attestation only: after the last round, or budget spent
            if spent and (self.budget_spent_at is None or rnd < self.budget_spent_at):
                self.budget_spent_at = rnd
            return [Sign(rnd, RoundMessage(round=rnd, model=model, result=result))]
        if m.trained is None:
            if not m.training:
                m.training, m.base = True, train_base
                return [Train(rnd, train_base)]
            return []
        cid, examples = m.trained
        m.signing = True
        return [Sign(rnd, RoundMessage(round=rnd, update=digest_from_cid(cid),
                                       examples=max(1, examples), model=model,
                                       result=result))]  # fmt: skip

    def _submit(self, rnd: int, now: float) -> list[Action]:
        m = self._m(rnd)
        if "submit" in m.in_flight or now < m.retry_at:
            return []
        current = self.current()
        if current == rnd:
            if not self.clock(rnd) or not self.clock(rnd).open(int(now)):  # type: ignore[union-attr]
                return []
        elif not (current == rnd - 1 and (rnd == 1 or self.is_closed(rnd - 1, now))):
            return []
        chain = self._chain.get(rnd)
        on_chain = (set(chain.submitted) if chain else set()) | m.sent
        pool = self._pool.get(rnd, {})
        if not pool:
            return []
        # Only messages the contract takes: a signer that left, was slashed or joined during the
        # round would revert the whole batch.
        eligible = self.eligible(rnd)
        takes = set(eligible)  # (not in the round's committee: the batch would revert too)
        waiting = [s for a, s in sorted(pool.items()) if a not in on_chain and a in takes]
        if not waiting:
            return []
        designated = self.submitter(rnd) == self.me
        everyone = all(a in pool or a in on_chain for a in eligible)
        since = m.signed_at if m.message is not None else None
        if designated:
            if not everyone and self._designated_waits(rnd, m, eligible, pool, on_chain, now):
                return []
        else:
            mine = m.message
            if mine is None or self.me in on_chain or since is None:
                return []
            # Its own message, alone: at once when a batch brought the round to a quorum without
            # it (it came late, or the submitter left it out; the phase now closes ``grace``
            # later), else ``fallback`` after signing (no batch: the submitter is down).
            left_out = chain is not None and chain.quorum_at is not None
            if not left_out and now < since + self.fallback:
                return []
            waiting = [mine]
        prev = self._mine.get(rnd - 1)
        who: tuple[str, ...] = ()
        scores: tuple[int, ...] = ()
        transcript = ZERO32
        if prev is not None and prev.result is not None:
            _, who, scores = prev.result
            transcript = prev.transcript
        m.in_flight.add("submit")
        m.submitted_at = now
        m.sending = {s.signer for s in waiting}
        return [Submit(rnd, tuple(waiting), who, scores, transcript)]

    def _designated_waits(self, rnd: int, m: _Mine, eligible: Sequence[str],
                          pool: Mapping[str, SignedRound], on_chain: set[str],
                          now: float) -> bool:  # fmt: skip
        """Whether the round's designated submitter, missing some members' messages, waits.
        At most two batches: the first once a quorum of the round's stake has signed (and
        ``collect`` more seconds passed, for the rest), the second with the late ones in the
        last second before the phase closes (``grace`` after the quorum)."""
        held = [a for a in eligible if a in pool or a in on_chain]
        stake = sum(self.stakes.get(a, 1) for a in held)
        total = sum(self.stakes.get(a, 1) for a in eligible)
        if m.quorum_seen is None and total and stake * BPS >= self.rules.quorum_bps * total:
            m.quorum_seen = now
        if m.submitted_at is None:
            ready = m.quorum_seen is not None and now >= m.quorum_seen + self.collect
            mine_long_ago = m.signed_at if m.message is not None else None
            return not ready and (mine_long_ago is None or now < mine_long_ago + self.fallback)
        clock = self.clock(rnd)
        return clock is None or now < clock.closes_at - 1

    def _reveal(self, rnd: int, now: float) -> list[Action]:
        """Secure aggregation: once round ``rnd`` closed, disclose this node's shares (once)."""
        if not self.secure or rnd > self.rounds or self.me not in self.active:
            return []
        m = self._m(rnd)
        if m.revealed or not self.is_closed(rnd, now):
            return []
        sets = self.secure_sets(rnd)
        if sets is None or not sets[0]:
            return []
        m.revealed = True
        return [Reveal(rnd, *sets)]

    def _aggregate(self, rnd: int, now: float) -> list[Action]:
        if rnd > self.rounds or not self.is_closed(rnd, now):
            return []
        if not self.seated(rnd + 1):
            return []  # round rnd + 1's committee attests it: fetch the model it finalizes
        m = self._m(rnd)
        if m.result is not None or m.aggregating or m.abandoned:
            return []
        updates = round_inputs(self._submitted, rnd)
        if self.secure:  # only the masking set's updates are masked with each other
            members = set(self.masking_set(rnd) or ())
            updates = {a: s for a, s in updates.items() if a in members}
        out: list[Action] = []
        # The authors first; a blob its author did not serve is asked of the other members
        # once those first fetches are over (they would slow the others down, for nothing in
        # the honest case).
        cids = {m: cid_from_digest(s.update) for m, s in updates.items() if m != self.me}
        firsts = [c for c in cids.values() if c not in self.blobs and not self._failures.get(c)]
        busy = any(c in self._pending for c in firsts)
        for member, cid in sorted(cids.items()):
            if self._failures.get(cid) and busy:
                continue
            out += self._fetch_update(cid, member, now)
        have = {a: s for a, s in updates.items() if cid_from_digest(s.update) in self.blobs}
        if m.collecting_since is None:
            m.collecting_since = now
        # A missing update is given up once its fetch failed GIVE_UP_AFTER times, or, whatever
        # happens, ``patience`` after this node's first look (a node restarted or late still
        # tries every blob), once every missing blob was tried at least once.
        missing = [cid_from_digest(s.update) for a, s in updates.items() if a not in have]
        tried = all(cid not in self._pending for cid in missing)
        given_up = all(self._failures.get(cid, 0) >= GIVE_UP_AFTER for cid in missing)
        patience_over = tried and (given_up or now >= m.collecting_since + self.patience)
        base = self.base_for(rnd)
        if base not in self.blobs:
            return out + self._fetch(base, [], now)
        if len(have) == len(updates) or patience_over:
            m.aggregating = True
            ordered = sorted(have.values(), key=lambda s: s.member.lower())
            inputs = tuple(Contribution(s.member, cid_from_digest(s.update), s.examples)
                           for s in ordered)  # fmt: skip
            out.append(Aggregate(rnd, base, inputs))
        return out

    def _unrecorded_failure(self, now: float) -> bool:
        """The last round failed, the chain has no Skipped for it yet, and a member (this
        one, or another after ``fallback``) may still send ``close``."""
        c = self._chain.get(self.rounds)
        clock = self.clock(self.rounds + 1)
        if c is None or c.finalized is not None or c.skipped or clock is None:
            return False
        return now < clock.closes_at + 2 * self.fallback

    def _close_last(self, rnd: int, now: float) -> list[Action]:
        """After the last round: record it failed if its attestations ran out (``close``)."""
        if rnd != self.rounds + 1 or not self.is_closed(rnd, now):
            return []
        c = self._chain.get(self.rounds)
        m = self._m(rnd)
        if c is None or c.finalized is not None or c.skipped or m.close_sent:
            return []
        clock = self.clock(rnd)
        assert clock is not None
        # The designated submitter at once, anyone else `fallback` seconds later.
        if self.submitter(rnd) != self.me and now < clock.closes_at + self.fallback:
            return []
        if now < m.retry_at:
            return []
        m.close_sent = True
        m.in_flight.add("close")
        return [Close(rnd)]
