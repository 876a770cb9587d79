"""The node core: what every mode shares, around one mode driver.

The core owns the node's I/O: the transport (it is the transport's frame and fetch handler),
the blob store, the trainer, the gossip layer, the node's durable state and its round records.
A driver (:mod:`fedledger.node.drivers`) runs one mode's I/O-free state machine and reaches
the world only through the core's :class:`~fedledger.node.services.Services` methods.

Training, aggregation and evaluation run in a worker thread (torch and NumPy release the GIL,
so frames and blob transfers keep flowing). Every frame is parsed strictly; anything
malformed, badly signed, or from a stranger is rejected with a logged reason and never stops
the node. A background job that fails (training, aggregation, a transaction the driver did
not expect to fail) ends the node with that job and error as its ``failure``: a clear outcome
instead of a stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedledger.aggregation import spec_of
from fedledger.aggregation.mixing import mix as mix_models
from fedledger.aggregation.round import aggregate_round
from fedledger.attacks.adversary import Adversary
from fedledger.commit import decode, digest_from_cid, encode
from fedledger.commit.compression import compressed_size, encode_update
from fedledger.config.node import NodeConfig
from fedledger.config.task import TaskConfig
from fedledger.data import Dataset, NodeData
from fedledger.data.site import SiteStats, pool, site_stats, standardized
from fedledger.errors import (
    BlobError,
    CodecError,
    ConfigError,
    DataError,
    FedledgerError,
    FetchRefused,
    MessageError,
    TransportError,
)
from fedledger.export import ModelCard, write_card
from fedledger.gossip.blobs import BlobStore
from fedledger.gossip.fetching import FetchFailed, FetchPolicy, Source, fetch_blob
from fedledger.gossip.identity import Identity
from fedledger.gossip.limits import RateLimiter, TtlCache
from fedledger.gossip.messages import (
    HEADER_BYTES,
    Message,
    SignedMessage,
    check_fetch_request,
    decode_frame,
    encode_frame,
    make_fetch_request,
    make_message,
)
from fedledger.gossip.protocol import Gossip, Send, round_window
from fedledger.gossip.topology import build_topology
from fedledger.gossip.transport import Transport
from fedledger.incentives.scores import Scoring, scores_seed
from fedledger.learning import Params, Trainer
from fedledger.node.consensus import Contribution, Fetch, Finished, Publish, Train
from fedledger.node.residual import ErrorFeedback
from fedledger.node.services import Driver
from fedledger.node.state import NodeState, write_atomically, write_status
from fedledger.node.waiting import Waiting
from fedledger.privacy import GaussianStream, noise_key, privatize
from fedledger.privacy.secagg_round import masked_size, member_noise_multiplier
from fedledger.seeds import derive_seed

log = logging.getLogger("fedledger.node")

GOSSIP_TICK_SECONDS = 0.05
SEND_TIMEOUT = 5.0
FRAMES_PER_SECOND = 100.0
"""Each member's sustained frame budget (verified frames; bursts of ``FRAME_BURST``)."""
FRAME_BURST = 1000.0
FETCH_REPLAY_SECONDS = 120.0
"""How long a served fetch request's nonce is remembered (longer than any request lives)."""
FETCH_HEDGE = 0.5
"""Seconds a blob fetch waits on its first source before asking the next one too (hedged
requests: one request per blob in the honest case, where two at once doubled the signing and
serving work; a stalled source costs half a second)."""
MAX_FETCHES = 32
"""Blob fetches a node runs at once (the rest queue): with hundreds of members, a round's
updates are fetched a few dozen at a time, each request signed when its turn comes, instead
of a burst of hundreds whose requests expire in the queue."""
STATS_RESEND_SECONDS = 1.0
"""How often a node resends its feature statistics to the founders it has not heard from."""
PREPROCESSING_FILE = "preprocessing.json"
"""The pooled statistics once agreed, in the state directory: a restart reuses them."""


def fetch_policy(*, sharing: int = 1) -> FetchPolicy:
    """A node's blob-fetch bounds when ``sharing`` nodes run in one process (a simulation:
    they share its cores and one event loop). A node's turn comes ``sharing / cores`` times
    less often than on a machine of its own, so the time-based bounds (grace, stall, deadline,
    hedge) stretch by that much, up to 50x; the minimum rate stays what a peer must deliver.
    Otherwise a loaded loop makes honest peers look slow, their fetches fail, the failures
    bring more fetches, and rounds go on without updates that were there."""
    if isinstance(sharing, bool) or not isinstance(sharing, int) or sharing < 1:
        raise ValueError(f"sharing must be an int >= 1, got {sharing!r}")
    base = FetchPolicy(hedge=FETCH_HEDGE)
    load = min(max(1.0, sharing / (os.cpu_count() or 1)), 50.0)
    if load == 1.0:
        return base
    return dataclasses.replace(base, grace=base.grace * load, stall=base.stall * load,
                               deadline=base.deadline * load, hedge=base.hedge * load)  # fmt: skip


@dataclass
class Counters:
    bytes_sent: int = 0
    bytes_recv: int = 0
    frames_rejected: int = 0
    frames_duplicate: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def task_id(node: NodeConfig) -> str:
    """What every message of the task names: the task configuration's digest."""
    return node.task.digest().hex()


class NodeCore:
    """One participant: its I/O, around the mode ``driver`` built by ``make_driver``.

    ``members`` are taken from ``config.peers`` (index, address, endpoint) plus this node;
    in ledger mode the driver replaces them with the task's registry.
    """

    def __init__(
        self,
        *,
        config: NodeConfig,
        identity: Identity,
        transport: Transport,
        store: BlobStore,
        trainer: Trainer,
        evaluator: Trainer | None = None,
        data: NodeData,
        test: Dataset,
        initial_params: Params,
        make_driver: Callable[[NodeCore], Driver],
        adversary: Adversary | None = None,
        probe: Dataset | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.identity = identity
        self.transport = transport
        self.store = store
        self.trainer = trainer
        # Evaluation runs while the next round trains: a trainer is not thread-safe.
        self.evaluator = evaluator if evaluator is not None else trainer
        self._adversary = adversary if adversary is not None else Adversary()
        self.data = self._adversary.data(data, test.num_classes)
        self.test = test
        self.probe = probe
        """Robustness experiments: the backdoor's test set, to record its success rate."""
        self._clock = clock
        self.wall = wall
        self.task = config.task
        self.privacy = config.task.privacy_plan()
        """The task's differential privacy (noise, budget), or None."""
        self.released: set[int] = set()
        """Rounds this process published a (privatized) update in."""
        self._stats: dict[str, SiteStats] = {}
        """Each founder's feature statistics (pooled standardization), first received kept."""
        self._own_stats: SiteStats | None = None
        self._stats_arrived = asyncio.Event()
        self.on_round: Callable[[Mapping[str, Any]], None] | None = None
        """Called with each round's record (what rounds.jsonl gets), e.g. to show progress."""
        self.on_finished: Callable[[dict[str, Any]], None] | None = None
        """Called with the summary once the task is over (before :attr:`serve_after`)."""
        self.serve_after = False
        """Once the task is over, keep serving blobs (for audits) until SIGINT/SIGTERM."""
        self.on_serving: Callable[[str], None] | None = None
        self.preprocessing: dict[str, Any] = {}
        """The task's preprocessing as this node applies it (features, classes, mean, std:
        the model card's fields), once known."""
        self.task_id = task_id(config)
        self.counters = Counters()
        self.spec = spec_of(initial_params)
        encoded = encode(initial_params)
        self.blob_bytes = min(len(encoded), config.max_blob_bytes)
        """Every valid update or model has exactly the initial model's encoded size."""
        self.fetch_bytes = self.blob_bytes
        """The largest blob fetched for a round: a model, or a masked update (secure
        aggregation: 7 bytes a coordinate)."""
        if config.task.secure_aggregation:
            coordinates = sum(int(np.prod(shape)) for shape, _ in self.spec)
            self.fetch_bytes = max(self.blob_bytes, masked_size(coordinates))
        self.compression = config.task.compression
        """``[compression]``: updates are compressed deltas from the round's base, or None."""
        if self.compression is not None:
            if config.mode == "gossip":
                raise ConfigError("gossip mode exchanges models, not updates: compression "
                                  "applies to consensus and ledger modes",
                                  field="compression")  # fmt: skip
            size = compressed_size(self.spec, self.compression.scheme)
            self.fetch_bytes = max(self.fetch_bytes, size)
        self.feedback = ErrorFeedback(config.state_dir, task_id=self.task_id)
        """The error-feedback residual (``[compression]`` with ``error_feedback``)."""
        self.initial_cid = store.put(encoded)
        members = {p.index: p.address for p in config.peers} | {config.index: identity.address}
        order = sorted(members)
        self.addresses = [members[i] for i in order]
        self.member_set: frozenset[str] = frozenset(self.addresses)
        self.endpoints: dict[str, str] = {p.address: p.endpoint for p in config.peers
                                          if p.endpoint}  # fmt: skip
        self.topology = build_topology(config.topology, len(order), seed=config.task.seed)
        self.position = order.index(config.index)
        self.neighbours = [self.addresses[j] for j in self.topology[self.position]]
        window = round_window(mode=config.mode, rounds=config.task.rounds,
                              keep_rounds=config.gossip.keep_rounds,
                              staleness=config.staleness)  # fmt: skip
        self.gossip = Gossip(
            me=identity.address,
            neighbours=self.neighbours,
            config=config.gossip,
            make=self._make,
            rng=random.Random(derive_seed(config.task.seed, "gossip", config.index)),
            complete=all(len(nb) == len(order) - 1 for nb in self.topology),
            window=window,
            local=config.mode == "gossip",  # a learner mixes its neighbours' models alone
        )
        # Bounded per-peer state: a member's frame budget, the fetch requests already served.
        self._quota: RateLimiter[str] = RateLimiter(rate=FRAMES_PER_SECOND, burst=FRAME_BURST,
                                  max_keys=4 * len(order) + 16)  # fmt: skip
        self._hello_round: dict[str, int] = {}
        """The round of each member's latest hello (members only: a bounded table)."""
        self._served: TtlCache[str, bool] = TtlCache(ttl=FETCH_REPLAY_SECONDS, max_keys=1 << 16)
        self.fetch_policy = fetch_policy()
        self.state = NodeState(config.state_dir, task_id=self.task_id)
        self.resume = self.state.load(store)
        self.finished = asyncio.Event()
        self.final_model: str | None = None
        self.failure: str | None = None
        self.refused: str | None = None
        self.expelled: str | None = None
        self.withdrew: str | None = None
        """Why this node left the task on its data owner's consent policy, if it did."""
        self.started_at = 0.0
        self.stalled = False
        self.aggregated_rounds = 0
        """Rounds in which this node's rule produced a model (not the base kept)."""
        self._last_progress = 0.0
        self._waiting: Waiting | None = None
        """What :attr:`config`'s ``state_dir/status.json`` says this node waits for."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._round_lock = asyncio.Lock()
        self._train_lock = asyncio.Lock()
        self._fetch_slots = asyncio.Semaphore(MAX_FETCHES)
        self.driver = make_driver(self)

    # -- Services ----------------------------------------------------------------------------

    @property
    def me(self) -> str:
        return self.identity.address

    @property
    def adversary(self) -> Adversary:
        return self._adversary

    @property
    def endpoint(self) -> str:
        return self.config.advertise or self.transport.endpoint

    @property
    def round_records(self) -> list[dict[str, Any]]:
        return self.state.records

    def clock(self) -> float:
        return self._clock()

    def publish(self, kind: str, rnd: int, body: Mapping[str, object]) -> None:
        signed = self._make(kind, rnd, dict(body))
        sends = self.gossip.publish(signed)  # kept: anti-entropy repairs a lost frame
        if kind == "hello" and sends:  # to every neighbour (fanout samples gossip only)
            sends = [Send(peer, sends[0].frame) for peer in self.neighbours]
        self._send_all(sends)

    def spawn(self, job: Coroutine[Any, Any, None], *, what: str) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._job_done(t, what))

    def binding_key(self) -> str:
        """``chain id:task address`` of the ledger this node runs on ("0:0x00..." without)."""
        chain_id, contract = self.driver.binding()
        return f"{chain_id}:{contract.lower()}"

    def persist_message(self, rnd: int, message: Mapping[str, Any]) -> None:
        from fedledger.commit import cid_from_digest
        from fedledger.node.state import save_message

        update = bytes.fromhex(str(message["update"]))
        if any(update):
            sync = getattr(self.store, "sync", None)
            if sync is not None:
                sync(cid_from_digest(update))
        save_message(self.config.state_dir, self.task_id, self.binding_key(), rnd, dict(message))

    def progressed(self) -> None:
        self._last_progress = self.clock()

    def round_finished(self, rnd: int, model: str, extra: Mapping[str, Any]) -> None:
        self.progressed()
        self.spawn(self.round_done(rnd, model, extra), what=f"round {rnd}: recording")

    def report_waiting(self, waiting: Waiting | None, now: float) -> None:
        if waiting == self._waiting:
            return
        self._waiting = waiting
        doc: dict[str, Any] | None = None
        if waiting is not None:
            deadline = waiting.deadline
            until = None
            if deadline is not None and math.isfinite(deadline):
                until = self.wall() + (deadline - now)
            doc = {"round": waiting.round, "what": waiting.what,
                   "members": list(waiting.members), "until": until}  # fmt: skip
        try:
            write_status(self.config.state_dir, {"node": self.config.index, "address": self.me,
                                                 "waiting": doc})  # fmt: skip
        except OSError as exc:  # it only describes the moment: never stop the node for it
            log.debug("cannot write the status file: %s", exc)

    def set_members(self, members: Collection[str], endpoints: Mapping[str, str]) -> None:
        self.member_set = frozenset(members) | {self.me}
        self.endpoints = {}
        for address, endpoint in endpoints.items():
            if address != self.me:
                self.learn_endpoint(address, endpoint)

    def learn_endpoint(self, address: str, endpoint: str, *, replace: bool = False) -> None:
        """Where member ``address`` listens, if ``endpoint`` is one the transport dials (a
        plain host:port for gRPC; never a ``unix:`` path or a URL). A known endpoint is
        replaced only with ``replace``: by the member's own signed ``hello`` (a restarted
        node listens on a new port), never by what another peer says."""
        if address == self.me or (address in self.endpoints and not replace):
            return
        try:
            self.endpoints[address] = self.transport.dialable(endpoint)
        except TransportError as exc:
            log.warning("ignoring the endpoint of %s: %s", address, exc)

    def common(self, action: object) -> bool:
        if isinstance(action, Train):
            self.spawn(self._train(action), what=f"round {action.round}: training")
        elif isinstance(action, Publish):
            self.publish(action.kind, action.round, action.body)
        elif isinstance(action, Fetch):
            self.spawn(self._fetch(action), what=f"fetching {action.cid}")
        elif isinstance(action, Finished):
            self.final_model = action.model
            self.finished.set()
        else:
            return False
        return True

    async def aggregate(
        self,
        rnd: int,
        base: str,
        inputs: Sequence[Contribution],
        reputation: Sequence[tuple[int, int]] | None,
        randomness: bytes = b"",
        task: TaskConfig | None = None,
    ) -> tuple[str, list[int]]:
        rules = self.task if task is None else task
        blobs: list[bytes | None] = []
        for c in inputs:
            try:
                blobs.append(self.store.get(c.cid))
            except BlobError as exc:
                log.warning("round %d: no blob %s from %s: %s", rnd, c.cid, c.sender, exc)
                blobs.append(None)
        base_blob = self.store.get(base)
        outcome = await asyncio.to_thread(
            aggregate_round,
            rules.aggregation,
            base=base_blob,
            updates=blobs,
            num_examples=[c.num_examples for c in inputs],
            reputation=reputation,
            max_bytes=self.blob_bytes,
            scoring=self._scoring(rnd, base, inputs, randomness, rules),
            compression=rules.compression,
        )
        self._adversary.saw(
            [b for b, c in zip(blobs, inputs, strict=True) if b is not None and c.sender != self.me]
        )
        for i, reason in outcome.rejected.items():
            log.warning("round %d: rejected update of %s: %s", rnd, inputs[i].sender, reason)
        if outcome.failure is not None:
            log.warning("round %d: cannot aggregate (%s); keeping the round's base model",
                        rnd, outcome.failure)  # fmt: skip
            return base, list(outcome.scores)
        self.aggregated_rounds += 1
        return self.store.put(outcome.model), list(outcome.scores)

    def _scoring(self, rnd: int, base: str, inputs: Sequence[Contribution],
                 randomness: bytes, task: TaskConfig) -> Scoring | None:  # fmt: skip
        """Contribution scores (``[incentives]``): the task's test split as validation set."""
        rules = task.incentives
        if rules.scores == "rule":
            return None
        seed = scores_seed(task=self.task.digest(), rnd=rnd, base=digest_from_cid(base),
                           inputs=[(c.sender, c.cid) for c in inputs],
                           randomness=randomness)  # fmt: skip
        return Scoring(method=rules.scores, x=self.test.x, y=self.test.y, seed=seed,
                       max_evaluations=rules.max_evaluations,
                       tolerance=rules.tolerance)  # fmt: skip

    async def mix(self, iteration: int, inputs: Sequence[tuple[str, float]]) -> str:
        own = self.params(inputs[0][0])
        neighbours: list[object] = []
        for cid, _ in inputs[1:]:
            try:
                neighbours.append(self.params(cid))
            except (CodecError, BlobError) as exc:
                log.warning("iteration %d: model %s is not a parameter blob: %s",
                            iteration, cid, exc)  # fmt: skip
                neighbours.append(None)  # rejected by the mixing rule, weight back to own
        weights = [w for _, w in inputs[1:]]
        rule = self.task.gossip
        delta = rule.delta if rule.rule != "mean" else None
        result = await asyncio.to_thread(
            mix_models, rule.rule, own, neighbours, weights,
            delta=delta, spec=self.spec,
        )  # fmt: skip
        for j, reason in result.rejected.items():
            log.warning("iteration %d: rejected model %s: %s", iteration, inputs[j + 1][0],
                        reason)  # fmt: skip
        self.aggregated_rounds += 1
        return self.store.put(encode(result.params))

    async def round_done(self, rnd: int, model: str, extra: Mapping[str, Any]) -> None:
        # One at a time, in order: a round reported again (a re-based or corrected node) must
        # leave its last report last, and the evaluator is not thread-safe.
        async with self._round_lock:
            self.state.save(rnd, model, self.binding_key())
            params = self.params(model)
            ev = self.evaluator
            test = await asyncio.to_thread(ev.evaluate, params, self.test)
            val = self.data.val
            local = await asyncio.to_thread(ev.evaluate, params, val) if len(val) else None
            probe = self.probe
            backdoor = await asyncio.to_thread(ev.evaluate, params, probe) if probe else None
            record = {
                "node": self.config.index, "round": rnd, "model": model, "t": self.wall(),
                "acc": test["accuracy"], "loss": test["loss"],
                "local_acc": None if local is None else local["accuracy"],
                "backdoor": None if backdoor is None else backdoor["accuracy"],
                "bytes_sent": self.counters.bytes_sent, "bytes_recv": self.counters.bytes_recv,
                "rejected": self.counters.frames_rejected, **extra,
            }  # fmt: skip
            if self.privacy is not None:
                releases = extra.get("releases")
                if releases is None:  # no ledger: the rounds this process trained in
                    releases = sum(1 for r in self.released if r <= rnd)
                record["releases"] = releases
                record["epsilon"] = self.privacy.epsilon_after(int(releases))
            self.state.record(record)
            log.info("round %d: accuracy %.4f (loss %.4f) with model %s", rnd,
                     test["accuracy"], test["loss"], model)  # fmt: skip
            if self.on_round is not None:
                self.on_round(record)

    # -- helpers -----------------------------------------------------------------------------

    def params(self, cid: str) -> Params:
        return decode(self.store.get(cid), max_bytes=self.blob_bytes)

    def expel(self, reason: str) -> None:
        """The task removed this node (it was slashed): it stops, holding no model."""
        if self.expelled is None:
            self.expelled = reason
            log.error("stopping: %s", reason)
        self.finished.set()

    def withdraw(self, reason: str) -> None:
        """This node's data owner no longer consents (``reason``): it left the task and
        stops; the rounds it contributed to stay in the record."""
        if self.withdrew is None:
            self.withdrew = reason
            log.warning("left the task: %s", reason)
        self.finished.set()

    def fail(self, reason: str) -> None:
        """End the node: ``reason`` is its failure."""
        if self.failure is None:
            self.failure = reason
            log.error("stopping: %s", reason)
        self.finished.set()

    def _job_done(self, task: asyncio.Task[None], what: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("%s failed", what, exc_info=exc)
        detail = str(exc) if isinstance(exc, FedledgerError) else f"{type(exc).__name__}: {exc}"
        self.fail(f"{what} failed: {detail}")

    def _make(self, kind: str, rnd: int, body: dict[str, object]) -> SignedMessage:
        return make_message(kind=kind, identity=self.identity, task=self.task_id, round=rnd,
                            body=body)  # fmt: skip

    def _send_all(self, sends: Sequence[Send]) -> None:
        for s in sends:
            endpoint = self.endpoints.get(s.peer)
            if endpoint is None:
                continue
            self.counters.bytes_sent += len(s.frame)
            self.spawn(self._send_one(endpoint, s.frame), what="sending")

    async def _send_one(self, endpoint: str, frame: bytes) -> None:
        try:
            await self.transport.send(endpoint, frame, timeout=SEND_TIMEOUT)
        except TransportError as exc:
            log.debug("send to %s failed: %s", endpoint, exc)

    def _reject(self, reason: str) -> None:
        self.counters.frames_rejected += 1
        key = reason.split(":")[0][:40]
        if key in self.counters.reasons or len(self.counters.reasons) < 64:
            self.counters.reasons[key] = self.counters.reasons.get(key, 0) + 1
        log.info("rejected frame: %s", reason)

    async def _train(self, a: Train) -> None:
        params = self.params(a.base)
        seed = derive_seed(self.task.seed, "fit", a.round, self.config.index)
        # One fit at a time: a trainer is not thread-safe, and a node that catches up starts
        # the next round's training while its superseded one may still run.
        async with self._train_lock:
            fit = await asyncio.to_thread(self.trainer.fit, params, self.data.train,
                                          self.task.train, seed=seed)  # fmt: skip
        if self.privacy is not None:
            fit = fit._replace(params=self._privatize(a, params, fit.params))
            self.released.add(a.round)
        self._adversary.observe(a.round, fit.params)
        published = await self._adversary.publish(a.round, params, fit.params)
        if self.compression is None:
            honest = self.store.put(encode(fit.params))
            cid = honest if published is fit.params else self.store.put(encode(published))
        else:
            honest, cid = await asyncio.to_thread(self._compress, a, params, fit.params,
                                                  published)  # fmt: skip
        self._adversary.published(cid)
        self.driver.trained(a.round, a.base, cid, fit.num_examples, honest)

    def _compress(self, a: Train, base: Params, trained: Params,
                  published: Params) -> tuple[str, str]:  # fmt: skip
        """``[compression]``: the CIDs of the honest and the published update, compressed
        deltas from the round's base; the honest one carries the error-feedback residual,
        which is durable (``residual.safetensors``) before the update is announced."""
        assert self.compression is not None
        scheme, digest = self.compression.scheme, digest_from_cid(a.base)
        if self.compression.error_feedback:
            blob = self.feedback.encode(a.round, trained=trained, base=base, base_digest=digest,
                                        scheme=scheme)  # fmt: skip
        else:
            blob, _ = encode_update(trained, base=base, base_digest=digest, scheme=scheme)
        honest = self.store.put(blob)
        if published is trained:
            return honest, honest
        poisoned, _ = encode_update(published, base=base, base_digest=digest, scheme=scheme)
        return honest, self.store.put(poisoned)

    def _privatize(self, a: Train, base: Params, trained: Params) -> Params:
        """The trained model as a DP release: its change clipped, Gaussian noise from this
        node's stream for the round (the same after a restart, so a retrained update is the
        same release)."""
        plan = self.privacy
        assert plan is not None
        key = noise_key(self.identity.private_key, task=self.task_id, rnd=a.round, base=a.base)
        sigma = plan.noise_multiplier
        if self.task.secure_aggregation:  # only the sum is seen: each adds a share of the noise
            sigma = member_noise_multiplier(sigma, self.task.nodes)
        out = privatize(base, trained, clip=plan.clip, noise_multiplier=sigma,
                        noise=GaussianStream(key))  # fmt: skip
        return out.params

    async def _fetch(self, a: Fetch) -> None:
        """Fetch ``a.cid`` from its sources in parallel, each asked with a request bound to
        it, within an overall deadline and a minimum rate."""
        async with self._fetch_slots:  # a round of hundreds of updates, a few at a time
            ok = await self.fetch_blob(a.cid, a.sources, parallel=a.parallel)
        self.driver.blob(a.cid, ok)

    def _fetch_request(self, cid: str, peer: str, chain_id: int, contract: str) -> bytes:
        return make_fetch_request(
            identity=self.identity, task=self.task_id, cid=cid, to=peer, now=self.wall(),
            chain_id=chain_id, contract=contract,
        )  # fmt: skip

    async def fetch_blob(self, cid: str, peers: Sequence[str], *, parallel: int = 0,
                         max_bytes: int | None = None) -> bool:  # fmt: skip
        """Fetch ``cid`` into the store from ``peers`` (members); whether it arrived."""
        a = Fetch(cid, tuple(peers), parallel=parallel)
        chain_id, contract = self.driver.binding()
        sources = []
        for peer in a.sources:
            if peer in self.endpoints:
                # Signed when the source is first asked, valid from then: a hedged fetch may
                # reach its tenth source long after it began.
                request = functools.partial(self._fetch_request, a.cid, peer, chain_id, contract)
                sources.append(Source(endpoint=self.endpoints[peer], request=request, name=peer))

        def received(n: int) -> None:
            self.counters.bytes_recv += n

        try:
            policy = self.fetch_policy
            if a.parallel:  # the driver's cap on sources asked at once (still hedged)
                policy = dataclasses.replace(policy, parallel=a.parallel)
            await fetch_blob(self.transport, self.store, cid=a.cid, sources=sources,
                             max_bytes=max_bytes or self.fetch_bytes, policy=policy,
                             on_chunk=received)  # fmt: skip
        except FetchFailed as exc:
            log.info("fetch %s failed: %s", a.cid, exc)
            return False
        return True

    # -- transport handler -------------------------------------------------------------------

    async def on_frame(self, frame: bytes) -> None:
        self.counters.bytes_recv += len(frame)
        # A message id is the hash of its payload: drop a duplicate before the (costlier)
        # signature check. Only verified messages are ever marked seen.
        if len(frame) > HEADER_BYTES and self.gossip.has(
            hashlib.sha256(memoryview(frame)[HEADER_BYTES:]).hexdigest()
        ):
            self.counters.frames_duplicate += 1
            return
        try:
            signed, ttl = decode_frame(frame, task=self.task_id, known=self.member_set)
        except MessageError as exc:
            self._reject(str(exc))
            return
        m = signed.message
        if not self._quota.allow(m.sender, now=self.clock()):
            self._reject(f"quota: {m.sender} sends more than {FRAMES_PER_SECOND:.0f} frames/s")
            return
        if m.kind == "hello":
            # Point to point, whatever its round: a node restarted from an old round must be
            # able to tell the others its new endpoint. Never stored or relayed by gossip, and
            # never older than the member's last (a replayed old hello cannot move it back).
            if m.round < self._hello_round.get(m.sender, 0):
                self._reject(f"hello: older than {m.sender}'s last")
                return
            first = m.sender not in self._hello_round
            self._hello_round[m.sender] = m.round
            self.driver.deliver(m)
            if first:  # it may have started after this node's hello: answer it once
                hello = self._make("hello", self.driver.current_round(),
                                   {"endpoint": self.endpoint})  # fmt: skip
                self._send_all([Send(m.sender, encode_frame(hello, ttl=0))])
            return
        if m.kind == "stats":  # point to point, before the first round
            self._on_stats(m)
            return
        if not self.gossip.in_window(m.round):
            self._reject(f"round: {m.round} is outside this node's window")
            return
        if m.kind == "ihave":
            self._send_all(self.gossip.on_ihave(m.sender, m.body["ids"]))
            return
        if m.kind == "want":
            self._send_all(self.gossip.on_want(m.sender, m.body["ids"]))
            return
        if m.kind == "fetch":
            self._reject("fetch: a blob request sent as a frame")
            return
        new, sends = self.gossip.receive(signed, ttl)
        self._send_all(sends)
        if new:
            self.driver.deliver(m)

    async def on_fetch(self, request: bytes) -> AsyncIterator[bytes]:
        chain_id, contract = self.driver.binding()
        try:
            sender, cid = check_fetch_request(request, task=self.task_id, me=self.me,
                                              now=self.wall(), chain_id=chain_id,
                                              contract=contract, seen=self._served)  # fmt: skip
        except MessageError as exc:
            raise FetchRefused(f"bad request: {exc}") from exc
        await self.driver.authorize(sender, cid)
        if not self._adversary.serves(cid):
            raise FetchRefused(f"{cid} is withheld")
        if not self.store.has(cid):
            raise FetchRefused(f"no blob {cid}")
        for chunk in self.store.read_chunks(cid):
            self.counters.bytes_sent += len(chunk)
            yield chunk

    # -- lifecycle ---------------------------------------------------------------------------

    def _warm_up(self) -> None:
        """One tiny fit and evaluation: torch initializes lazily, and that first-call cost
        belongs to start-up, not to round 1."""
        params = self.params(self.initial_cid)
        few = self.data.train.subset(np.arange(min(len(self.data.train), 8)))
        self.trainer.fit(params, few, self.task.train, seed=0)
        self.evaluator.evaluate(params, few)

    def model_card(self) -> ModelCard:
        """What ``fedledger model export`` needs to rebuild and feed this node's model."""
        trainer: Any = self.trainer
        names = getattr(trainer, "param_names", None)
        shapes = [np.shape(p) for p in self.params(self.initial_cid)]
        return ModelCard(
            param_names=tuple(names) if names else tuple(f"p{i:06d}" for i in range(len(shapes))),
            feature_shape=tuple(self.data.train.feature_shape),
            num_classes=self.data.train.num_classes,
            image_shape=self.data.train.image_shape,
            model=None if self.config.model else {
                "name": self.task.model.name, "hidden": list(self.task.model.hidden)},
            factory=self.config.model,
            **self.preprocessing,
        )  # fmt: skip

    async def _until_finished(self) -> bool:
        """Wait for the last round; False if no progress was made for ``stall_timeout``."""
        self._last_progress = self.clock()
        while not self.finished.is_set():
            if self.clock() - self._last_progress > self.config.stall_timeout:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # not wait_for: see the transports
                    await self.finished.wait()
        return True

    async def run(self) -> dict[str, Any]:
        """Serve, set up (join, meet the peers), run every round, linger, and return a
        summary."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._warm_up)
        write_card(self.config.state_dir, self.model_card())
        await self.transport.start(self)
        gossip = asyncio.get_running_loop().create_task(self._gossip_ticker())
        ticker: asyncio.Task[None] | None = None
        try:
            if self.config.rendezvous is not None:
                await self._rendezvous(self.config.rendezvous)
            self.refused = await self.driver.setup()
            if self.refused is not None:
                return self.summary()
            if not await self._preprocess():
                return self.summary()
            ticker = asyncio.get_running_loop().create_task(self.driver.ticker())
            ticker.add_done_callback(lambda t: self._job_done(t, "the round ticker"))
            self.started_at = self.wall()
            self.driver.start()
            if not await self._until_finished():
                self.stalled = True
                self.fail(f"no progress for {self.config.stall_timeout:.0f} s")
            if self.failure is None and self.expelled is None and self.withdrew is None:
                await self._linger()
                if self.on_finished is not None:
                    self.on_finished(self.summary())
                if self.serve_after:
                    await self._serve_until_stopped()
        finally:
            for t in (gossip, ticker):
                if t is not None:
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.transport.close()
            self.report_waiting(None, 0.0)
        return self.summary()

    async def _serve_until_stopped(self) -> None:
        """The task is over: keep serving this node's blobs (to members, and to the readers
        the task's owner granted: auditors) until SIGINT or SIGTERM."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            log.info("the task is over; serving blobs at %s until stopped", self.endpoint)
            if self.on_serving is not None:
                self.on_serving(self.endpoint)
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _rendezvous(self, folder: Path) -> None:
        """Publish this node's endpoint in ``folder`` and read every member's from there
        (waiting for them at most ``ready_timeout``)."""
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / f"{self.me}.endpoint", self.endpoint)
        others = [a for a in self.addresses if a != self.me]
        deadline = self.clock() + self.config.ready_timeout
        while True:
            missing = [a for a in others if not (folder / f"{a}.endpoint").exists()]
            if not missing or self.clock() > deadline:
                break
            await asyncio.sleep(0.05)
        if missing:
            log.warning("no endpoint at the rendezvous for %d member(s)", len(missing))
        for address in others:
            if address not in missing:
                text = (folder / f"{address}.endpoint").read_text(encoding="utf-8").strip()
                self.endpoints.pop(address, None)
                self.learn_endpoint(address, text)

    # -- the task's preprocessing ------------------------------------------------------------

    async def _preprocess(self) -> bool:
        """A ``sites`` task: agree on the pooled feature statistics with the founders (or
        reload them after a restart) and standardize this site's data with them. False if
        the node failed."""
        spec = self.task.data
        if not spec.is_sites:
            return True
        self.preprocessing = {"features": spec.features, "classes": spec.classes}
        if spec.should_standardize:
            # Computed even when reloading: a founder that restarted before it saved the
            # pooled statistics asks for this node's again.
            self._own_stats = site_stats(self.data.train)
            saved = self.config.state_dir / PREPROCESSING_FILE
            if saved.exists():
                doc = json.loads(saved.read_text(encoding="utf-8"))
                mean, std = tuple(doc["mean"]), tuple(doc["std"])
            else:
                agreed = await self._pooled_statistics()
                if agreed is None:
                    return False
                mean, std = agreed
                write_atomically(saved, json.dumps({"mean": mean, "std": std}))
            self.preprocessing |= {"mean": mean, "std": std}
            train, val = (standardized(d, mean, std) for d in (self.data.train, self.data.val))
            self.test = val if self.test is self.data.val else standardized(self.test, mean, std)
            self.data = NodeData(node=self.data.node, train=train, val=val)
        write_card(self.config.state_dir, self.model_card())
        return True

    async def _pooled_statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Send this site's statistics to every founder until each founder's have arrived
        (at most ``ready_timeout``), then pool them in address order."""
        assert self._own_stats is not None
        founders = sorted(self.driver.founders() | {self.me})
        if self.me in self.driver.founders() or not self.driver.founders():
            self._stats[self.me] = self._own_stats
        else:
            founders.remove(self.me)  # a late joiner pools the founders' statistics only
        deadline = self.clock() + self.config.ready_timeout
        while True:
            missing = [a for a in founders if a not in self._stats]
            if not missing:
                break
            if self.clock() > deadline:
                self.fail(f"no feature statistics from {len(missing)} member(s) "
                          f"({', '.join(missing[:3])}) within {self.config.ready_timeout:.0f} s: "
                          "is every site's node running?")  # fmt: skip
                return None
            self._send_stats(missing, reply=False)
            self._stats_arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STATS_RESEND_SECONDS):
                    await self._stats_arrived.wait()
        log.info("pooled the feature statistics of %d site(s)", len(founders))
        return pool([self._stats[a] for a in founders])

    def _send_stats(self, to: Sequence[str], *, reply: bool) -> None:
        own = self._own_stats
        if own is None:
            return
        body = {"count": own.count, "mean": [v.hex() for v in own.mean],
                "m2": [v.hex() for v in own.m2], "reply": reply}  # fmt: skip
        frame = encode_frame(self._make("stats", 0, body), ttl=0)
        self._send_all([Send(peer=a, frame=frame) for a in to if a != self.me])

    def _on_stats(self, m: Message) -> None:
        body = m.body
        try:
            stats = SiteStats(count=body["count"],
                              mean=tuple(float.fromhex(v) for v in body["mean"]),
                              m2=tuple(float.fromhex(v) for v in body["m2"]))  # fmt: skip
        except DataError as exc:
            self._reject(f"stats: {exc}")
            return
        if self.task.data.features is not None and len(stats.mean) != len(self.task.data.features):
            self._reject(f"stats: {len(stats.mean)} features, the task has "
                         f"{len(self.task.data.features)}")  # fmt: skip
            return
        if m.sender not in self._stats:  # the first kept: a member cannot change its own
            self._stats[m.sender] = stats
            self._stats_arrived.set()
        if not body["reply"]:
            self._send_stats([m.sender], reply=True)

    async def _gossip_ticker(self) -> None:
        while True:
            self.gossip.set_round(self.driver.current_round())
            self._send_all(self.gossip.tick(self.clock()))
            await asyncio.sleep(GOSSIP_TICK_SECONDS)

    async def _linger(self) -> None:
        """Keep serving until no laggard needs this node, or ``linger`` seconds."""
        deadline = self.clock() + self.config.linger
        while self.clock() < deadline and not self.driver.may_stop():
            await asyncio.sleep(0.05)
        await asyncio.sleep(min(0.5, self.config.linger))

    def _holds_model(self) -> bool:
        """Whether the node ended holding the task's model (it did not fail, was not
        expelled, did not leave)."""
        return self.failure is None and not self.expelled and not self.withdrew

    def summary(self) -> dict[str, Any]:
        return {
            "node": self.config.index,
            "address": self.identity.address,
            "final_model": self.final_model if self._holds_model() else None,
            "expelled": self.expelled,
            "withdrew": self.withdrew,
            "failure": self.failure,
            "stalled": self.stalled,
            "started_at": self.started_at,
            "aggregated_rounds": self.aggregated_rounds,
            "bytes_sent": self.counters.bytes_sent,
            "bytes_recv": self.counters.bytes_recv,
            "frames_rejected": self.counters.frames_rejected,
            "frames_duplicate": self.counters.frames_duplicate,
            "reject_reasons": self.counters.reasons,
            "refused": self.refused,
            **self.driver.summary(),
        }
