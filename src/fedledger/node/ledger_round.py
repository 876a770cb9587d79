"""Ledger mode: rounds paced and finalized by the Task contract, as an I/O-free state machine.

One round ``r`` of one node, from the base model (the model finalized in the last finalized
round before ``r``, or the task's initial model):

1. **train** (commit window open, this node eligible in ``r``): train from the base and store
   the update (:class:`~fedledger.node.consensus.Train`);
2. **commit**: send ``commit(r, keccak(update digest, me, r, salt))`` (:class:`Commit`); the
   update is not served to anyone yet, so nobody can copy it;
3. **reveal** (reveal window open: every eligible member committed, or the commit window ran
   out): send ``reveal(r, digest, CID, examples, salt)`` (:class:`Reveal`); from now on the blob
   is served to members;
4. **fetch** every update the ``Revealed`` events announce, from its author first, then from
   the other members (blobs replicate as nodes fetch them);
5. **aggregate** (attest window open: every committer revealed, or the reveal window ran out)
   exactly the revealed updates whose blobs arrived, once all of them did or ``patience`` of the
   attest window has passed (:class:`~fedledger.node.consensus.Aggregate`); every node that
   obtained the same set computes the same bytes;
6. **attest** ``(model digest, result digest)`` where the result digest binds the included
   set and the rule's score for each (:class:`Attest`);
7. when the contract emits ``Finalized``, the finalized model is the next base: a node that
   attested something else (it missed a blob, say) fetches and adopts it. When the attest
   window runs out without a quorum, any node sends ``skip`` (:class:`Skip`) and the base stays.

After a round finalizes, the member with the lowest address among those that attested the
finalized result sends ``distribute`` with the contributors and scores (:class:`Distribute`).

Everything is level-triggered: events only add to what the node knows about the chain, and
:meth:`LedgerRoundNode.tick` decides what to do from that knowledge and the chain's time, so a
node restarted from scratch, given the chain's whole history, catches up by fetching the latest
finalized model and joins the next round it can. Nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fedledger.commit import cid_from_digest, digest_from_cid
from fedledger.ledger.records import (
    Attested,
    Committed,
    Finalized,
    Joined,
    LedgerEvent,
    Revealed,
    RoundClock,
    RoundStarted,
    Selected,
    Skipped,
    TaskRules,
)
from fedledger.ledger.reputation import round_reputation
from fedledger.ledger.rules import (
    PHASE_ATTEST,
    PHASE_COMMIT,
    PHASE_FAILED,
    PHASE_REVEAL,
    commitment,
    result_digest,
    sort_result,
)
from fedledger.node.consensus import Aggregate, Contribution, Fetch, Finished, Train

RETRY_SECONDS = 1.0
"""How long a node waits before trying a failed fetch, or a skip, again."""


# -- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    round: int
    commitment: bytes


@dataclass(frozen=True)
class Reveal:
    round: int
    update_digest: bytes
    cid: str
    num_examples: int
    salt: bytes


@dataclass(frozen=True)
class Attest:
    round: int
    model_digest: bytes
    result_digest: bytes


@dataclass(frozen=True)
class Skip:
    round: int


@dataclass(frozen=True)
class Distribute:
    round: int
    contributors: tuple[str, ...]
    scores: tuple[int, ...]


@dataclass(frozen=True)
class LedgerRoundDone:
    round: int
    model: str
    """The round's model: the finalized one, or the unchanged base for a skipped round."""
    finalized: bool
    adopted: bool
    """True when this node did not compute the finalized model itself."""
    caught_up: bool
    """True when the node jumped over rounds it missed (it was down or late)."""
    included: int
    """Updates in this node's result (0 when it computed none)."""
    attesters: int
    """Members that attested the finalized pair."""
    attestations: int
    """Members that attested anything in the round."""
    gas: int
    """Gas this node's transactions of the round used (commit, reveal, attest, skip)."""
    gas_by_kind: dict[str, int] = field(default_factory=dict)


LedgerAction = Train | Fetch | Aggregate | Commit | Reveal | Attest | Skip | Distribute
Action = LedgerAction | LedgerRoundDone | Finished

TX_KINDS = ("commit", "reveal", "attest", "skip", "distribute")


# -- what the node knows about each round -------------------------------------------------------


@dataclass
class _Chain:
    """One round as the chain's events told it."""

    started: RoundStarted | None = None
    commits: set[str] = field(default_factory=set)
    """Members that committed (a set: an event delivered twice counts once)."""
    reveal_at: int | None = None
    reveals: dict[str, Revealed] = field(default_factory=dict)
    attest_at: int | None = None
    attests: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    finalized: Finalized | None = None
    skipped: bool = False


@dataclass
class _Mine:
    """This node's own progress in one round."""

    base: str = ""
    trained: tuple[str, int] | None = None  # (cid, examples)
    salt: bytes = b""
    result: tuple[str, tuple[str, ...], tuple[int, ...]] | None = None  # (model, who, scores)
    sent: set[str] = field(default_factory=set)
    """Transactions sent (or in flight), by kind."""
    done: set[str] = field(default_factory=set)
    """Transactions mined successfully, by kind."""
    in_flight: set[str] = field(default_factory=set)
    gas: int = 0
    gas_by_kind: dict[str, int] = field(default_factory=dict)
    training: bool = False
    distribution_decided: bool = False
    aggregating: bool = False
    skip_at: float = 0.0


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
        patience: float = 0.5,
        resume: tuple[int, str] | None = None,
    ) -> None:
        self.me = me
        self.rules = rules
        self.rounds = rounds
        self.rng = rng or random.Random()
        self.patience = patience
        self.members: list[str] = sorted(set(members) | {me}, key=str.lower)
        done, model = resume if resume is not None else (0, initial_model)
        self.done = done
        self.base = model
        self.blobs: set[str] = {model, initial_model}
        self.finished = done >= rounds
        self.first_round: int | None = None
        self._chain: dict[int, _Chain] = {}
        self._mine: dict[int, _Mine] = {}
        self._pending: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._finished_sent = False
        self.finalized_models: set[str] = set()
        """CIDs of every finalized model seen (served to non-members the policy allows)."""
        self._history: list[LedgerEvent] = []
        """The events reputation is computed from (rounds started, reveals, selections)."""

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
        return RoundClock.of(start=c.started.start, rules=self.rules, reveal_at=c.reveal_at,
                             attest_at=c.attest_at)  # fmt: skip

    def closed(self, rnd: int) -> bool:
        """Whether the chain finalized or skipped ``rnd`` (as far as this node has heard)."""
        c = self._chain.get(rnd)
        return c is not None and (c.finalized is not None or c.skipped)

    def servable(self, cid: str) -> bool:
        """False for this node's update of a round until it sends the reveal: nobody may copy
        it before it is committed and opened. (Peers learn the CID only from the mined
        ``Revealed`` event, so serving from the moment the reveal is sent leaks nothing and
        spares them a refused first fetch.)"""
        for m in self._mine.values():
            if m.trained is not None and m.trained[0] == cid and "reveal" not in m.sent:
                return False
        return True

    def reputation(self, rnd: int, members: Sequence[str]) -> list[tuple[int, int]]:
        """Each member's ``(selections, reveals)`` as of the block that started ``rnd``: the
        same on every node and in the audit (:mod:`fedledger.ledger.reputation`)."""
        return round_reputation(self._history, rnd, members)

    def on_events(self, events: Iterable[LedgerEvent], now: float) -> list[Action]:
        for e in events:
            if isinstance(e, RoundStarted | Revealed | Selected):
                self._history.append(e)
            if isinstance(e, Joined):
                if e.member not in self.members:
                    self.members = sorted({*self.members, e.member}, key=str.lower)
                if e.member == self.me:
                    self.first_round = e.first_round
            elif isinstance(e, RoundStarted):
                self._c(e.round).started = e
            elif isinstance(e, Committed):
                c = self._c(e.round)
                c.commits.add(e.member)
                if c.started is not None and len(c.commits) == c.started.members:
                    c.reveal_at = e.time
            elif isinstance(e, Revealed):
                c = self._c(e.round)
                c.reveals[e.member] = e
                if len(c.reveals) == len(c.commits):
                    c.attest_at = e.time
            elif isinstance(e, Attested):
                self._c(e.round).attests[e.member] = (e.model_digest, e.result_digest)
            elif isinstance(e, Finalized):
                self._c(e.round).finalized = e
                self.finalized_models.add(cid_from_digest(e.model_digest))
            elif isinstance(e, Skipped):
                self._c(e.round).skipped = True
        return self.tick(now)

    # -- results from the shell -----------------------------------------------------------------

    def trained(self, rnd: int, base: str, cid: str, num_examples: int, now: float) -> list[Action]:
        m = self._m(rnd)
        m.training = False
        if base != m.base:
            return self.tick(now)
        self.blobs.add(cid)
        m.trained = (cid, num_examples)
        m.salt = self.rng.getrandbits(256).to_bytes(32, "big")
        return self.tick(now)

    def aggregated(
        self, rnd: int, model: str, contributors: Sequence[str], scores: Sequence[int], now: float
    ) -> list[Action]:
        """The shell aggregated round ``rnd``: ``model`` (a CID), and the rule's score for each
        included contributor (0 for a rejected one)."""
        m = self._m(rnd)
        m.aggregating = False
        self.blobs.add(model)
        who, points = sort_result(list(contributors), list(scores))
        m.result = (model, tuple(who), tuple(points))
        return self.tick(now)

    def tx_done(
        self, kind: str, rnd: int, *, ok: bool, gas: int, reason: str | None, now: float
    ) -> list[Action]:
        m = self._m(rnd)
        m.in_flight.discard(kind)
        m.gas_by_kind[kind] = m.gas_by_kind.get(kind, 0) + gas
        if kind != "distribute":
            m.gas += gas
        if ok:
            m.done.add(kind)
        elif kind == "skip":
            m.sent.discard("skip")  # someone else skipped, or too early: look again later
            m.skip_at = now + RETRY_SECONDS
        elif kind == "distribute" and reason not in ("already distributed",):
            m.sent.discard("distribute")
            m.distribution_decided = False  # try again on a later tick
        return self.tick(now)

    def blob_ready(self, cid: str, now: float) -> list[Action]:
        self._pending.discard(cid)
        self.blobs.add(cid)
        return self.tick(now)

    def blob_failed(self, cid: str, now: float) -> list[Action]:
        self._pending.discard(cid)
        self._retry_at[cid] = now + RETRY_SECONDS
        return []

    # -- decisions --------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        return self.tick(now)

    def _fetch(self, cid: str, first: Sequence[str], now: float) -> list[Action]:
        if cid in self.blobs or cid in self._pending or now < self._retry_at.get(cid, 0.0):
            return []
        self._pending.add(cid)
        sources = dict.fromkeys(s for s in [*first, *self.members] if s != self.me)
        return [Fetch(cid, tuple(sources))]

    def _send(self, m: _Mine, kind: str) -> None:
        m.sent.add(kind)
        m.in_flight.add(kind)

    def tick(self, now: float) -> list[Action]:
        if self._finished_sent:
            return []
        out: list[Action] = []
        out += self._close_rounds(now)
        out += self._distributions()
        if self.finished:
            # Finish once this node's rewards are distributed (its last receipts are in).
            if not any("distribute" in m.in_flight for m in self._mine.values()):
                self._finished_sent = True
                out.append(Finished(self.base, self.done))
            return out
        rnd = self.current()
        if rnd == self.done + 1 and rnd <= self.rounds:
            out += self._work(rnd, now)
        return out

    def _close_rounds(self, now: float) -> list[Action]:
        """Move past every round the chain closed (finalized or skipped), in order."""
        last = self.done
        while True:
            c = self._chain.get(last + 1)
            if c is None or not (c.finalized or c.skipped):
                break
            last += 1
        if last == self.done:
            return []
        target = min(last, self.rounds)
        # The model after `target`: that of the last finalized round up to it.
        model, final_round = self.base, 0
        for rnd in range(self.done + 1, target + 1):
            f = self._chain[rnd].finalized
            if f is not None:
                model, final_round = cid_from_digest(f.model_digest), rnd
        m = self._m(target)
        if m.in_flight:
            return []  # wait for this round's receipts, so its gas is counted
        if model not in self.blobs:
            first = [a for a, pair in self._chain[final_round].attests.items()
                     if pair[0] == digest_from_cid(model)] if final_round else []  # fmt: skip
            return self._fetch(model, sorted(first, key=str.lower), now)
        c = self._chain[target]
        caught_up = target > self.done + 1
        pair = (c.finalized.model_digest, c.finalized.result_digest) if c.finalized else None
        done = LedgerRoundDone(
            round=target,
            model=model,
            finalized=c.finalized is not None,
            adopted=c.finalized is not None and (m.result is None or m.result[0] != model),
            caught_up=caught_up,
            included=len(m.result[1]) if m.result else 0,
            attesters=sum(1 for p in c.attests.values() if p == pair),
            attestations=len(c.attests),
            gas=m.gas,
            gas_by_kind=dict(m.gas_by_kind),
        )
        self.done, self.base = target, model
        if self.done >= self.rounds:
            self.finished = True
        return [done]

    def _distributions(self) -> list[Action]:
        """Distribute the rounds this node is designated for: it attested the finalized
        result, and has the lowest address among those that did."""
        out: list[Action] = []
        for rnd, m in self._mine.items():
            c = self._chain.get(rnd)
            if m.distribution_decided or c is None or c.finalized is None or m.result is None:
                continue
            if "attest" in m.in_flight:
                continue  # wait for the receipt: it decides whether this node attested
            m.distribution_decided = True  # the attestations are all in (later ones revert)
            if "attest" not in m.done:
                continue
            model, who, scores = m.result
            final = (c.finalized.model_digest, c.finalized.result_digest)
            if final != (digest_from_cid(model), result_digest(list(who), list(scores))):
                continue
            agreeing = sorted((a for a, p in c.attests.items() if p == final), key=str.lower)
            if agreeing and agreeing[0] == self.me:
                self._send(m, "distribute")
                out.append(Distribute(rnd, who, scores))
        return out

    def _work(self, rnd: int, now: float) -> list[Action]:
        clock = self.clock(rnd)
        if clock is None:
            return []
        c, m = self._chain[rnd], self._m(rnd)
        m.base = m.base or self.base
        phase = clock.phase(int(now))
        eligible = self.first_round is not None and self.first_round <= rnd
        out: list[Action] = []
        if self.base not in self.blobs:
            return self._fetch(self.base, [], now)
        if phase == PHASE_COMMIT and eligible:
            if m.trained is None and not m.training:
                m.training = True
                out.append(Train(rnd, m.base))
            elif m.trained is not None and "commit" not in m.sent:
                self._send(m, "commit")
                digest = digest_from_cid(m.trained[0])
                out.append(Commit(rnd, commitment(digest, self.me, rnd, m.salt)))
        if phase == PHASE_REVEAL and "commit" in m.done and "reveal" not in m.sent:
            assert m.trained is not None
            self._send(m, "reveal")
            cid, examples = m.trained
            out.append(Reveal(rnd, digest_from_cid(cid), cid, examples, m.salt))
        if phase in (PHASE_REVEAL, PHASE_ATTEST):
            for member, r in sorted(c.reveals.items()):
                if member != self.me:
                    out += self._fetch(r.cid, [member], now)
        if phase == PHASE_ATTEST and eligible:
            if m.result is None and not m.aggregating:
                have = [r for r in c.reveals.values() if r.cid in self.blobs]
                patience_over = now >= clock.attest_opens + self.patience * self.rules.attest_window
                if have and (len(have) == len(c.reveals) or patience_over):
                    m.aggregating = True
                    ordered = sorted(have, key=lambda r: r.member.lower())
                    inputs = tuple(Contribution(r.member, r.cid, r.num_examples) for r in ordered)
                    out.append(Aggregate(rnd, m.base, inputs))
            elif m.result is not None and "attest" not in m.sent:
                self._send(m, "attest")
                model, who, scores = m.result
                out.append(
                    Attest(rnd, digest_from_cid(model), result_digest(list(who), list(scores)))
                )
        if phase == PHASE_FAILED and "skip" not in m.sent and now >= m.skip_at:
            self._send(m, "skip")
            out.append(Skip(rnd))
        return out
