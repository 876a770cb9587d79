"""Secure aggregation's shell in ledger mode: keys, masking, reveals and unmasking.

:class:`SecAggParty` does the I/O and the cryptography the round logic
(:class:`~fedledger.node.ledger_round.LedgerRoundNode`, ``secure=True``) asks for:

* before the start, it registers the node's channel key on chain, then, once the task's other
  members registered theirs, its key blob (:mod:`fedledger.privacy.secagg_keys`) covering every
  round, for all of them; :func:`keys_ready` tells a task's owner when to start;
* it fetches every member's registered key blob and checks it (a member whose blob is invalid
  is left out of every masking set: the same decision at every node, from the same bytes);
* after training, it masks the node's model (:func:`~fedledger.privacy.secagg_round.mask_update`)
  and gives the masked blob's CID to the logic as the round's update;
* once a round closed, it gossips the node's :class:`~fedledger.privacy.secagg_round.Reveal`,
  collects the others', rebuilds the transcript, unmasks the survivors' sum and hands the
  logic the model, the scores and the transcript's digest; with too few reveals within
  ``patience`` it abandons the round (nothing is revealed beyond the shares).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedledger.aggregation import SCORE_TOTAL
from fedledger.aggregation import fixedpoint as fx
from fedledger.aggregation.validation import spec_of
from fedledger.commit import cid_from_digest, digest_from_cid, encode
from fedledger.errors import BlobError, PrivacyError
from fedledger.ledger.messages import ZERO32
from fedledger.ledger.records import Joined, Keys, Ledger, LedgerEvent, Left, Slashed
from fedledger.node.consensus import Aggregate, Contribution
from fedledger.node.ledger_round import LedgerRoundNode
from fedledger.node.ledger_round import Reveal as RevealAction
from fedledger.node.services import Services
from fedledger.node.waiting import Waiting
from fedledger.privacy.secagg import SecAggAbort
from fedledger.privacy.secagg_keys import (
    MAX_KEY_BLOB_BYTES,
    MAX_ROUNDS_PER_BLOB,
    MIN_MEMBERS,
    KeyBlob,
    channel_private,
    make_key_blob,
    public_bytes,
)
from fedledger.privacy.secagg_round import (
    Reveal,
    check_transcript,
    decode_masked,
    encode_masked,
    input_weight,
    make_reveal,
    mask_update,
    rebuild,
    secagg_model,
    unmask_sum,
)

log = logging.getLogger("fedledger.node")

KEY_WAIT_SECONDS = 30.0
"""How long masking waits for a key blob of its masking set before the node only attests."""
REVEAL_ROUNDS = 3
"""Reveals are kept for rounds from the last done one to this many ahead (bounded memory)."""


def scope_of(chain_id: int, task_address: str) -> str:
    """What every secure-aggregation secret and context is bound to: the task's deployment."""
    return f"{chain_id}:{task_address.lower()}"


def keys_ready(events: Sequence[LedgerEvent], members: Sequence[str]) -> list[str]:
    """The members (of ``members``) whose latest key registration does not yet cover round 1
    for all the other members: empty once the task may start."""
    latest: dict[str, Keys] = {}
    for e in events:
        if isinstance(e, Keys):
            latest[e.member.lower()] = e
    missing = []
    for m in members:
        k = latest.get(m.lower())
        if k is None or k.keys_digest == ZERO32 or k.first_round != 1 \
                or k.recipients < len(members) - 1:  # fmt: skip
            missing.append(m)
    return missing


def check_key_blob(data: bytes, k: Keys, *, scope: str) -> KeyBlob:
    """The key blob registration ``k`` names, checked: canonical, for this task, and with the
    channel key, rounds and number of recipients the member registered (:class:`PrivacyError`
    otherwise: its member then masks with nobody for those rounds, at every node alike)."""
    blob = KeyBlob.from_bytes(data)
    mine = (blob.member.lower(), blob.scope, blob.channel_key, blob.first_round,
            blob.last_round, len(blob.recipients))  # fmt: skip
    registered = (k.member.lower(), scope, k.channel_key, k.first_round, k.last_round,
                  k.recipients)  # fmt: skip
    if mine != registered:
        raise PrivacyError("its fields are not its registration's")
    return blob


class SecAggParty:
    def __init__(self, services: Services, logic: LedgerRoundNode, *, ledger: Ledger,
                 chain_id: int, rounds: int, nodes: int, patience: float, noised: bool,
                 act: Callable[[Sequence[Any]], None],
                 now: Callable[[], float]) -> None:  # fmt: skip
        self.services = services
        self._act = act
        self._now = now
        self.logic = logic
        self.ledger = ledger
        self.rounds = min(rounds, MAX_ROUNDS_PER_BLOB)
        self.nodes = nodes
        self.patience = patience
        self.noised = noised
        """Differential privacy too: every member's weight is 1 (:func:`input_weight`)."""
        self.scope = scope_of(chain_id, ledger.task_address)
        self.node_key = services.identity.private_key
        self.channel_key = public_bytes(channel_private(self.node_key, self.scope))
        self.registered: dict[str, Keys] = {}
        """Each member's latest key registration, from the chain."""
        self.active: set[str] = set()
        self.key_blobs: dict[bytes, KeyBlob] = {}
        """Checked key blobs by digest (every registration a masking set used, or the latest)."""
        self.invalid: set[bytes] = set()
        """Digests of registered key blobs that are invalid."""
        self._fetching: set[bytes] = set()
        self._needed: set[bytes] = set()
        """Digests a masking set uses (fetched even once superseded)."""
        self.reveals: dict[int, dict[str, Reveal]] = {}
        self.changed = asyncio.Event()
        """Set whenever a key blob or a reveal arrives (waiters clear it)."""
        self.my_blob: KeyBlob | None = None
        self.unmasked = 0
        """Rounds this node unmasked."""
        self.abandoned: list[int] = []
        self.dropouts: dict[int, int] = {}
        """Dropouts of each round this node unmasked."""
        self._awaiting: tuple[int, tuple[str, ...], float] | None = None
        """The round whose reveals this node waits for, its masking set, and until when
        (the node's clock)."""

    # -- the chain -----------------------------------------------------------------------------

    def on_events(self, events: Sequence[LedgerEvent]) -> None:
        """Registrations and membership: fetch each member's latest key blob."""
        for e in events:
            if isinstance(e, Keys):
                self.registered[e.member] = e
            elif isinstance(e, Joined):
                self.active.add(e.member)
            elif isinstance(e, Left | Slashed):
                self.active.discard(e.member)
        for k in self.registered.values():
            self._want(k)

    def _want(self, k: Keys) -> None:
        """Fetch the key blob ``k`` registers, unless held, known invalid or under way."""
        d = k.keys_digest
        if d != ZERO32 and d not in self.key_blobs and d not in self.invalid \
                and d not in self._fetching:  # fmt: skip
            self._fetching.add(d)
            self.services.spawn(self._fetch_keys(k), what=f"key blob of {k.member}")

    async def _fetch_keys(self, k: Keys) -> None:
        cid = cid_from_digest(k.keys_digest)
        member = k.member
        store = self.services.store
        try:
            for attempt in range(1_000_000):
                superseded = self.registered.get(member) != k
                if superseded and k.keys_digest not in self._needed:
                    return  # a newer registration replaced it, and no masking set uses it
                if store.has(cid) or await self.services.fetch_blob(
                    cid,
                    [member, *sorted(self.active - {member, self.services.me})],
                    max_bytes=MAX_KEY_BLOB_BYTES,
                ):
                    self._accept(k, store.get(cid))
                    return
                await asyncio.sleep(min(0.25 * (attempt + 1), 5.0))
        finally:
            self._fetching.discard(k.keys_digest)

    def _accept(self, k: Keys, data: bytes) -> None:
        try:
            blob = check_key_blob(data, k, scope=self.scope)
        except PrivacyError as exc:
            log.warning("the key blob of %s is invalid, it masks with nobody: %s", k.member, exc)
            self.invalid.add(k.keys_digest)
            self.logic.exclude(k.keys_digest)
        else:
            self.key_blobs[k.keys_digest] = blob
        self.changed.set()

    # -- set-up: keys before the start -----------------------------------------------------------

    async def prepare(self, events: Sequence[LedgerEvent]) -> None:
        """Before the start (called while the node waits for it): register the channel key,
        then a key blob for every member with a channel key once ``nodes - 1`` others have
        one (again if more join before the start)."""
        me = self.services.me
        latest: dict[str, Keys] = {}
        active: set[str] = set()
        for e in events:
            if isinstance(e, Keys):
                latest[e.member] = e
            elif isinstance(e, Joined):
                active.add(e.member)
            elif isinstance(e, Left | Slashed):
                active.discard(e.member)
        mine = latest.get(me)
        ledger = self.ledger
        if mine is None or mine.channel_key != self.channel_key:
            await asyncio.to_thread(ledger.set_keys, self.channel_key, ZERO32, 0, 0, 0)
            log.info("registered the secure-aggregation channel key")
            return
        others = {a: k.channel_key for a, k in latest.items() if a in active and a != me}
        if len(others) + 1 < max(self.nodes, MIN_MEMBERS):
            return
        registered = mine.keys_digest != ZERO32 and mine.first_round == 1 \
            and mine.recipients == len(others)  # fmt: skip
        if registered and (self.my_blob is None or set(self.my_blob.recipients) == set(others)):
            return
        blob = await asyncio.to_thread(
            make_key_blob, self.node_key, scope=self.scope, member=me, first_round=1,
            last_round=self.rounds, recipients=others,
        )  # fmt: skip
        cid = self.services.store.put(blob.to_bytes())
        self.my_blob = blob
        self.key_blobs[digest_from_cid(cid)] = blob
        await asyncio.to_thread(ledger.set_keys, self.channel_key, digest_from_cid(cid), 1,
                                self.rounds, len(others))  # fmt: skip
        log.info("registered a key blob for rounds 1-%d shared with %d members", self.rounds,
                 len(others))  # fmt: skip

    def summary(self) -> dict[str, Any]:
        return {"unmasked_rounds": self.unmasked, "abandoned_rounds": list(self.abandoned),
                "dropouts": {str(r): n for r, n in sorted(self.dropouts.items())},
                "invalid_key_blobs": sorted(cid_from_digest(d) for d in self.invalid)}  # fmt: skip

    # -- masking --------------------------------------------------------------------------------

    async def _blobs_for(self, members: Sequence[str], rnd: int, *,
                         mine: bool) -> dict[str, KeyBlob] | None:  # fmt: skip
        """The key blobs ``members`` (this node too if ``mine``) mask with in round ``rnd``
        (their registrations in the round's masking set), waiting up to KEY_WAIT_SECONDS for
        them; None if some did not come."""
        me = self.services.me
        masking = self.logic.masking
        wanted = {a: masking.registration(a, rnd) for a in members if mine or a != me}
        clock = self.services.clock
        deadline = clock() + KEY_WAIT_SECONDS
        while True:
            found: dict[str, KeyBlob] = {}
            for a, k in wanted.items():
                if k is None:
                    return None
                blob = self.key_blobs.get(k.keys_digest)
                if blob is None:
                    self._needed.add(k.keys_digest)
                    self._want(k)
                else:
                    found[a] = blob
            if len(found) == len(wanted):
                return found
            remaining = deadline - clock()
            if remaining <= 0:
                return None
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await self.changed.wait()

    def members_of(self, rnd: int) -> tuple[str, ...]:
        return self.logic.masking_set(rnd) or ()

    async def mask(self, rnd: int, cid: str, num_examples: int) -> str | None:
        """The masked blob of this node's model ``cid`` for round ``rnd`` (its CID), or None
        when it cannot be masked (a key blob missing, a value out of range)."""
        me = self.services.me
        members = self.members_of(rnd)
        if me not in members:
            return None
        blobs = await self._blobs_for(members, rnd, mine=False)
        if blobs is None:
            log.warning("round %d: a key blob of its masking set is missing: attesting only", rnd)
            return None
        peers = {a: b.keys_of(rnd).mask_key for a, b in blobs.items() if a != me}
        params = self.services.params(cid)
        weight = input_weight(num_examples, noised=self.noised)
        try:
            masked = await asyncio.to_thread(
                mask_update, self.node_key, scope=self.scope, rnd=rnd, me=me, params=params,
                weight=weight, peers=peers,
            )  # fmt: skip
        except PrivacyError as exc:
            log.warning("round %d: cannot mask the update: %s", rnd, exc)
            return None
        return self.services.store.put(encode_masked(rnd=rnd, member=me, weight=weight,
                                                     masked=masked))  # fmt: skip

    # -- reveals ----------------------------------------------------------------------------------

    async def reveal(self, a: RevealAction) -> None:
        me = self.services.me
        members = [*a.survivors, *a.dropouts]
        blobs = await self._blobs_for(members, a.round, mine=False) or {}
        reveal = await asyncio.to_thread(
            make_reveal, self.node_key, scope=self.scope, rnd=a.round, me=me,
            survivors=a.survivors, dropouts=a.dropouts, blobs=blobs,
        )  # fmt: skip
        self._keep(reveal)
        self.services.publish("reveal", a.round, reveal.to_body())

    def deliver(self, sender: str, rnd: int, body: Mapping[str, object]) -> None:
        """A member's gossiped reveal (its signature already checked by the core)."""
        if sender not in self.active:
            return
        try:
            reveal = Reveal.from_body(body, member=sender, rnd=rnd)
        except PrivacyError as exc:
            log.info("dropping a reveal from %s: %s", sender, exc)
            return
        self._keep(reveal)

    def waiting(self, now: float) -> Waiting | None:
        """The members of a round's masking set whose reveals this node still waits for to
        unmask it (``now``: the driver's time, which the deadline is given in)."""
        if self._awaiting is None:
            return None
        rnd, members, deadline = self._awaiting
        got = self.reveals.get(rnd, {})
        missing = tuple(m for m in members if m not in got and m != self.services.me)
        if not missing:
            return None
        # Whole seconds: the status file is rewritten only when what it says changes.
        until = float(round(now + deadline - self.services.clock()))
        return Waiting(round=rnd, what="reveals", members=missing, deadline=until)

    def _keep(self, reveal: Reveal) -> None:
        done = self.logic.done
        if not done <= reveal.round <= done + REVEAL_ROUNDS:
            return
        self.reveals.setdefault(reveal.round, {}).setdefault(reveal.member, reveal)
        for r in [r for r in self.reveals if r < done]:
            del self.reveals[r]
        self.changed.set()

    # -- unmasking --------------------------------------------------------------------------------

    async def aggregate(self, a: Aggregate) -> None:
        """Unmask round ``a.round``'s sum and report it to the logic (or abandon the round)."""
        logic, rnd = self.logic, a.round
        sets = logic.secure_sets(rnd)
        survivors, dropouts = sets if sets is not None else ((), ())
        inputs = {c.sender: c for c in a.inputs}
        if not survivors or set(inputs) != set(survivors):
            log.warning("round %d: masked updates of %s unavailable: the round cannot be "
                        "unmasked", rnd, ", ".join(s for s in survivors if s not in inputs)
                        or "everyone")  # fmt: skip
            self.abandoned.append(rnd)
            self._act(logic.abandon(rnd, self._now()))
            return
        try:
            outcome = await self._unmask(rnd, a.base, survivors, dropouts, inputs)
        except (PrivacyError, BlobError) as exc:
            log.warning("round %d: secure aggregation aborted: %s", rnd, exc)
            self.abandoned.append(rnd)
            self._act(logic.abandon(rnd, self._now()))
            return
        model, scores, transcript = outcome
        self._act(logic.aggregated(rnd, model, list(survivors), scores, self._now(),
                                   transcript=transcript))  # fmt: skip

    async def _unmask(self, rnd: int, base: str, survivors: Sequence[str],
                      dropouts: Sequence[str], inputs: Mapping[str, Contribution]
                      ) -> tuple[str, list[int], bytes]:  # fmt: skip
        store = self.services.store
        spec = spec_of(self.services.params(base))
        size = sum(int(np.prod(shape)) for shape, _ in spec)
        masked = {}
        weights: dict[str, tuple[str, int]] = {}
        for s in survivors:
            c = inputs[s]
            _, masked[s] = decode_masked(store.get(c.cid), rnd=rnd, member=s, size=size)
            weights[s] = (c.cid, input_weight(c.num_examples, noised=self.noised))
        members = self.members_of(rnd)
        blobs = await self._blobs_for(members, rnd, mine=True)
        if blobs is None:
            raise SecAggAbort("key blobs of the masking set are missing")
        clock = self.services.clock
        deadline = clock() + self.patience
        try:
            while True:
                self.changed.clear()
                reveals = list(self.reveals.get(rnd, {}).values())
                try:
                    transcript = await asyncio.to_thread(
                        rebuild, scope=self.scope, rnd=rnd, survivors=weights,
                        dropouts=dropouts, blobs=blobs, reveals=reveals,
                    )  # fmt: skip
                    break
                except SecAggAbort:
                    remaining = deadline - clock()
                    if remaining <= 0:
                        raise
                    self._awaiting = (rnd, tuple(members), deadline)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(remaining, 1.0)):
                            await self.changed.wait()
        finally:
            self._awaiting = None
        check_transcript(transcript, blobs=blobs, masking_set=members)
        total, weight = await asyncio.to_thread(unmask_sum, transcript, masked=masked,
                                                blobs=blobs)  # fmt: skip
        params = secagg_model(total, weight, spec)
        model = store.put(encode(params))
        tcid = store.put(transcript.to_bytes())
        scores = fx.apportion([weights[s][1] for s in survivors], SCORE_TOTAL)
        log.info("round %d: unmasked the sum of %d masked updates (%d dropped out)", rnd,
                 len(survivors), len(dropouts))  # fmt: skip
        self.unmasked += 1
        self.dropouts[rnd] = len(dropouts)
        return model, scores, digest_from_cid(tcid)
