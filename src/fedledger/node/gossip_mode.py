"""Gossip mode: asynchronous decentralized averaging (D-PSGD / gossip learning), as a state machine.

Each node repeats, for ``iterations`` steps and with no global barrier:

1. train one local step (the task's local epochs) from its current model (:class:`Train`);
2. send the trained model to its neighbours (``model`` message with the iteration number);
3. wait for its *neighbours only*, and only until each has sent a model at least as recent as
   ``iteration - staleness`` (or the adaptive deadline passes);
4. mix: ``x_i <- W_ii x_i + sum_j W_ij x_j`` with the topology's mixing weights
   (Metropolis-Hastings or uniform; :mod:`fedledger.gossip.topology`), using each neighbour's
   most recent model; a neighbour with no model yet gives its weight back to the node itself
   (:class:`Mix`). With ``[gossip] rule = "clipped"`` in the task, the shell mixes with
   ClippedGossip instead, ``x_i <- x_i + sum_j W_ij clip(x_j - x_i, tau_i)``
   (:mod:`fedledger.aggregation.mixing`), which bounds what any one neighbour can do.

Models differ between nodes (they only converge towards each other), so gossip mode reports
accuracy over nodes rather than one digest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedledger.node.consensus import (
    Action,
    AdaptiveTimeout,
    Fetch,
    Finished,
    Publish,
    Timeouts,
    Train,
)
from fedledger.node.waiting import Waiting

KEEP_PUBLISHED = 2
"""This node's own announced models it keeps serving after it moved on."""


@dataclass(frozen=True)
class Mix:
    iteration: int
    inputs: tuple[tuple[str, float], ...]
    """(model CID, weight) pairs; weights sum to 1. The first is this node's own model."""


@dataclass(frozen=True)
class IterationDone:
    iteration: int
    fresh: int
    """Neighbours whose model of this iteration (or a later one) was mixed in."""
    stale: int
    """Neighbours mixed in with an older model."""
    missing: int
    """Neighbours with no model at all (their weight went back to this node)."""


GossipAction = Action | Mix | IterationDone


class GossipLearner:
    """The gossip-mode logic of one node."""

    def __init__(
        self,
        *,
        me: str,
        weights: Mapping[str, float],
        iterations: int,
        initial_model: str,
        staleness: int = 0,
        timeouts: Timeouts | None = None,
        resume: tuple[int, str] | None = None,
    ) -> None:
        self.me = me
        self.weights = dict(weights)
        self.neighbours = tuple(sorted(n for n in weights if n != me))
        self.iterations = iterations
        self.staleness = staleness
        self.timeout = AdaptiveTimeout(timeouts or Timeouts())
        done, model = resume if resume is not None else (0, initial_model)
        self.iteration = done + 1
        self.model = model
        self.finished = done >= iterations
        self.phase = "idle"
        self.blobs: set[str] = {model}
        self._latest: dict[str, tuple[int, str]] = {}
        self._pending: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._trained: str | None = None
        self._published: list[str] = []
        """This node's last announced models, newest last (neighbours may still fetch them)."""
        self._phase_start = 0.0
        self._deadline = float("inf")

    def start(self, now: float) -> list[GossipAction]:
        if self.finished:
            return [Finished(self.model, self.iteration - 1)]
        return self._begin(now)

    def _begin(self, now: float) -> list[GossipAction]:
        self.phase = "train"
        self._trained = None
        self._deadline = float("inf")
        return [Train(self.iteration, self.model)]

    def trained(
        self, it: int, cid: str, num_examples: int, now: float, *, published: str | None = None
    ) -> list[GossipAction]:
        """Local training of iteration ``it`` produced ``cid``. ``published`` (robustness
        experiments): what a Byzantine node announces instead, while it keeps mixing its own
        honest model -- otherwise its poison would feed back into its own training and make it
        diverge, and it would stop attacking."""
        if it != self.iteration or self.phase != "train":
            return []
        self.blobs.add(cid)
        self._trained = cid
        self.phase = "wait"
        self._phase_start = now
        self._deadline = now + self.timeout.current()
        shown = published if published is not None else cid
        self.blobs.add(shown)
        self._published = [*self._published[-(KEEP_PUBLISHED - 1) :], shown]
        return [Publish("model", it, {"cid": shown, "included": []}), *self._check(now)]

    def on_model(self, sender: str, it: int, cid: str, now: float) -> list[GossipAction]:
        if sender not in self.weights or sender == self.me:
            return []
        known = self._latest.get(sender)
        if known is not None and known[0] >= it:
            return []
        self._latest[sender] = (it, cid)
        out: list[GossipAction] = []
        if cid not in self.blobs and cid not in self._pending:
            self._pending.add(cid)
            self._retry_at[cid] = now + 1.0
            out.append(Fetch(cid, (sender,)))
        return out + self._check(now)

    def blob_ready(self, cid: str, now: float) -> list[GossipAction]:
        self._pending.discard(cid)
        self.blobs.add(cid)
        return self._check(now)

    def blob_failed(self, cid: str, now: float) -> list[GossipAction]:
        self._pending.discard(cid)
        self._retry_at[cid] = now + 1.0
        return []

    def tick(self, now: float) -> list[GossipAction]:
        out: list[GossipAction] = []
        for sender, (_, cid) in sorted(self._latest.items()):
            if (
                cid not in self.blobs
                and cid not in self._pending
                and now >= self._retry_at.get(cid, 0)
            ):
                self._pending.add(cid)
                self._retry_at[cid] = now + 1.0
                out.append(Fetch(cid, (sender,)))
        if self.phase == "wait" and now >= self._deadline:
            out += self._mix(now, timed_out=True)
        return out

    def waiting(self, now: float) -> Waiting | None:
        """The neighbours whose model of this iteration (or a recent enough one) this node
        still waits for, until the adaptive deadline (None: it trains or mixes)."""
        if self.phase != "wait" or now > self._deadline:
            return None
        floor = self.iteration - self.staleness
        missing = []
        for n in self.neighbours:
            usable = self._usable(n)
            if usable is None or usable[0] < floor:
                missing.append(n)
        if not missing:
            return None
        return Waiting(round=self.iteration, what="models", members=tuple(missing),
                       deadline=self._deadline)  # fmt: skip

    def _usable(self, sender: str) -> tuple[int, str] | None:
        latest = self._latest.get(sender)
        if latest is None or latest[1] not in self.blobs:
            return None
        return latest

    def _check(self, now: float) -> list[GossipAction]:
        if self.phase != "wait":
            return []
        floor = self.iteration - self.staleness
        for n in self.neighbours:
            usable = self._usable(n)
            if usable is None or usable[0] < floor:
                return []
        return self._mix(now, timed_out=False)

    def _mix(self, now: float, *, timed_out: bool) -> list[GossipAction]:
        assert self._trained is not None
        if not timed_out:
            self.timeout.observe(now - self._phase_start)
        own = self.weights.get(self.me, 0.0)
        inputs: list[tuple[str, float]] = []
        fresh = stale = missing = 0
        for n in self.neighbours:
            usable = self._usable(n)
            if usable is None:
                own += self.weights[n]
                missing += 1
                continue
            inputs.append((usable[1], self.weights[n]))
            if usable[0] >= self.iteration:
                fresh += 1
            else:
                stale += 1
        self.phase = "mix"
        self._deadline = float("inf")
        mix = Mix(self.iteration, ((self._trained, own), *inputs))
        return [mix, IterationDone(self.iteration, fresh, stale, missing)]

    def release(self) -> list[str]:
        """The blobs this node no longer needs, forgotten here for the shell to delete: all
        but its current model, the one it is mixing, its last ``KEEP_PUBLISHED`` announced
        models (a slow neighbour may still fetch them) and each neighbour's latest model (or
        its fetch in flight). A node's store stays bounded by its degree, not the rounds."""
        keep = {self.model, *self._published, *self._pending}
        keep.update(cid for _, cid in self._latest.values())
        if self._trained is not None:
            keep.add(self._trained)
        gone = sorted(self.blobs - keep)
        self.blobs.difference_update(gone)
        return gone

    def mixed(self, it: int, cid: str, now: float) -> list[GossipAction]:
        """The shell computed the mixed model of iteration ``it`` and stored it under ``cid``."""
        if it != self.iteration or self.phase != "mix":
            return []
        self.blobs.add(cid)
        self.model = cid
        if self.iteration >= self.iterations:
            self.finished = True
            self.phase = "finished"
            return [Finished(cid, self.iteration)]
        self.iteration += 1
        return self._begin(now)
