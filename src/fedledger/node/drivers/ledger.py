"""Ledger mode's shell: join the task, then drive :class:`LedgerRoundNode` with the chain's
events and time, send its transactions, and serve blobs as the task's access policy says.

Peers come only from the task's on-chain registry (``Joined`` events; a member that left or
was slashed is dropped), never from what a peer says about itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from fedledger.attacks.adversary import Adversary
from fedledger.config.amendments import RulesInForce
from fedledger.config.consent import ConsentPolicy, Consents, violations
from fedledger.config.task import TaskConfig
from fedledger.errors import (
    ChainUnavailable,
    FedledgerError,
    FetchRefused,
    LedgerError,
    MessageError,
    TransactionReverted,
)
from fedledger.gossip.messages import Message
from fedledger.ledger.messages import ZERO32, SignedRound
from fedledger.ledger.records import (
    Configured,
    Consent,
    Joined,
    Ledger,
    LedgerEvent,
    Left,
    Moved,
    Slashed,
    TxResult,
)
from fedledger.ledger.reputation import uses_reputation
from fedledger.ledger.rules import STATUS_ACTIVE, STATUS_NONE
from fedledger.node.consensus import Aggregate
from fedledger.node.drivers.secagg import SecAggParty
from fedledger.node.ledger_round import (
    Close,
    Distribute,
    Evidence,
    LedgerRoundDone,
    LedgerRoundNode,
    Reveal,
    Sign,
    Submit,
)
from fedledger.node.services import Services

log = logging.getLogger("fedledger.node")

POLL_SECONDS = 0.05
ACCESS_CACHE_SECONDS = 5.0
ACCESS_CACHE_SIZE = 1024
"""Outsiders whose download permission is remembered (least recently asked dropped first)."""
EARLY_MESSAGES = 256
"""Round messages kept from signers not (yet) known as members."""


class LedgerDriver:
    def __init__(self, services: Services, logic: LedgerRoundNode, *, ledger: Ledger,
                 stake: int | None, start_timeout: float, task: TaskConfig,
                 consent: ConsentPolicy | None = None) -> None:  # fmt: skip
        self.services = services
        self.task = task
        self.consent = consent
        """This node's data owner's consent policy (None: none)."""
        self.rules = RulesInForce(base=task)
        """The task's configuration in force in each round (governance changes included)."""
        self.consents = Consents()
        """Every member's registered consent policy, by round."""
        self._leaving = False
        self._governance_read = (-1, -1)
        """The last event read for configuration changes and consent policies."""
        self.logic = logic
        self.ledger = ledger
        self.stake = stake
        self.start_timeout = start_timeout
        self.adversary: Adversary = services.adversary
        self.chain_now = 0.0
        self._second = -1.0
        self._second_at = 0.0
        self.chain_id = ledger.chain_id
        self.gas_distribute = 0
        self.active: dict[str, str] = {}
        """The task's active members and their endpoints, from the registry's events."""
        self.first_round: dict[str, int] = {}
        """Each member's first round (its latest join's)."""
        self._access: OrderedDict[str, tuple[float, bool, bool]] = OrderedDict()
        self.signed_messages: dict[int, SignedRound] = {}
        self._early: OrderedDict[bytes, SignedRound] = OrderedDict()
        """Verified round messages of signers this node does not know as members yet (its
        chain poll may lag the gossip): given to the logic once their Joined arrives. Bounded
        (EARLY_MESSAGES, oldest dropped): anyone can make keys."""
        self._cursor = -1
        self._polling = asyncio.Lock()
        self._in_process = hasattr(getattr(ledger, "chain", None), "block_event")
        """An embedded chain: reads are in-process and cheap."""
        self.secagg: SecAggParty | None = None
        """Secure aggregation's keys, masking and unmasking (``privacy.secure_aggregation``)."""
        if task.secure_aggregation:
            self.secagg = SecAggParty(services, logic, ledger=ledger, chain_id=self.chain_id,
                                      rounds=task.rounds, nodes=task.nodes,
                                      patience=max(logic.patience, 5.0),
                                      noised=task.privacy_plan() is not None, act=self.act,
                                      now=self.now)  # fmt: skip

    def now(self) -> float:
        """The chain's time (whole seconds, as blocks see it), with the seconds elapsed on this
        node's clock since that value was read as its fraction: phases still compare whole
        chain seconds, while the logic's own timers (fetch retries, the submitter's wait) run
        at sub-second resolution."""
        return self._smooth(self.chain_now)

    def _smooth(self, chain_now: float) -> float:
        second = float(int(chain_now))
        local = self.services.clock()
        if second != self._second:
            self._second, self._second_at = second, local
        return second + min(max(local - self._second_at, 0.0), 0.999)

    def current_round(self) -> int:
        return self.logic.current()

    def binding(self) -> tuple[int, str]:
        return self.chain_id, self.ledger.task_address

    # -- set-up ------------------------------------------------------------------------------

    async def setup(self) -> str | None:
        """Join the task (unless already a member) and wait for round 1."""
        ledger = self.ledger
        me = self.services.me
        mismatch = await self._config_mismatch()
        if mismatch is not None:
            log.error("%s", mismatch)
            return mismatch
        status = await asyncio.to_thread(ledger.status_of, me)
        head = await asyncio.to_thread(ledger.head)
        past = await asyncio.to_thread(ledger.events, -1, head)
        self._read_governance(past)
        if status == STATUS_NONE:
            refusal = self._consent_refusal()
            if refusal is not None:
                log.error("%s", refusal)
                return refusal
            rules = await asyncio.to_thread(ledger.rules)
            stake = self.stake if self.stake is not None else rules.min_stake
            stake = self.adversary.stake(stake)
            consent = self.consent.document() if self.consent is not None else b""
            try:
                await asyncio.to_thread(ledger.join, self.services.endpoint, stake, consent)
            except TransactionReverted as exc:  # e.g. a stake below the minimum
                log.error("the task refused %s: %s", me, exc.reason)
                return exc.reason
            log.info("joined task %s with stake %d", ledger.task_address, stake)
        elif status != STATUS_ACTIVE:
            raise LedgerError(f"{me} cannot take part: its membership status is {status}")
        else:
            refusal = self._consent_refusal()
            if refusal is not None:  # restarted with a policy the task no longer meets
                await self._leave(refusal)
                return refusal
            await self._publish_endpoint(past)
            await self._publish_consent(past)
        deadline = self.services.clock() + self.start_timeout
        history: list[LedgerEvent] = []
        seen = -1
        while await self._started_round(deadline) == 0:
            if self.secagg is not None:  # register keys while waiting for the start
                head = await asyncio.to_thread(ledger.head)
                if head > seen:  # only the new events: the wait may last a day
                    history += await asyncio.to_thread(ledger.events, seen, head)
                    seen = head
                try:
                    await self.secagg.prepare(history)
                except TransactionReverted as exc:
                    log.warning("cannot register secure-aggregation keys: %s", exc.reason)
            await asyncio.sleep(0.2)
        # Members and their endpoints come from the registry's Joined events (the poller's
        # first read covers the whole history again), not from one view call per member.
        head = await asyncio.to_thread(ledger.head)
        self.update_registry(await asyncio.to_thread(ledger.events, -1, head))
        self.chain_now = float(await asyncio.to_thread(ledger.now))
        # Where this node listens now: the registry has the endpoint it joined with, and a
        # node restarted on another port must tell the members (its own signed hello, with
        # the chain's round, so that it is never older than one it sent before).
        rnd = await asyncio.to_thread(ledger.current_round)
        self.services.publish("hello", rnd, {"endpoint": self.services.endpoint})
        return None

    async def _started_round(self, deadline: float) -> int:
        """The chain's round while waiting for the task's start (which may take a day): a
        chain out of reach for a while (its RPC endpoint restarting, a network partition) is
        waited out, not fatal, until ``start_timeout``."""
        while True:
            try:
                rnd = int(await asyncio.to_thread(self.ledger.current_round))
            except ChainUnavailable as exc:
                log.warning("cannot read the chain while waiting for the task's start: %s", exc)
                rnd = 0
                if self.services.clock() <= deadline:
                    await asyncio.sleep(1.0)
                    continue
            if rnd == 0 and self.services.clock() > deadline:
                raise LedgerError(f"the task did not start within {self.start_timeout:g} s "
                                  "(start_timeout)")  # fmt: skip
            return rnd

    def _read_governance(self, events: Sequence[LedgerEvent]) -> None:
        """The configuration changes and consent policies in ``events`` (each once: the first
        poll reads the whole history again)."""
        for e in events:
            if (e.block, e.index) <= self._governance_read:
                continue
            self._governance_read = (e.block, e.index)
            if isinstance(e, Configured):
                self.rules = self.rules.with_change(e.from_round, e.document)
            elif isinstance(e, Consent):
                self.consents.add(e.member, e.from_round, e.policy)

    def _consent_refusal(self) -> str | None:
        """Why this node's consent policy does not cover the task's latest rules, if not."""
        if self.rules.invalid:
            first, invalid = self.rules.invalid[-1]
            return (f"the task's governance changed its rules from round {first} in a way a "
                    f"vote may not: {invalid}")  # fmt: skip
        why = violations(self.consent, self.rules.latest(),
                         task_address=self.ledger.task_address)  # fmt: skip
        if why:
            return f"this node's consent policy does not cover the task: {why[0]}"
        return None

    async def _publish_consent(self, events: Sequence[LedgerEvent]) -> None:
        """A member restarted with another consent policy registers it (``set_consent``):
        it is in force from the next round."""
        registered = b""
        for e in events:
            if isinstance(e, Consent) and e.member == self.services.me:
                registered = e.policy
        mine = self.consent.document() if self.consent is not None else b""
        if registered == mine:
            return
        try:
            await asyncio.to_thread(self.ledger.set_consent, mine)
            log.info("registered the new consent policy (%d bytes)", len(mine))
        except TransactionReverted as exc:
            log.warning("cannot register the new consent policy: %s", exc.reason)

    async def _leave(self, reason: str) -> None:
        """Leave the task (its data owner's consent policy no longer covers it) and stop."""
        if self._leaving:
            return
        self._leaving = True
        try:
            await asyncio.to_thread(self.ledger.leave)
        except TransactionReverted as exc:
            log.warning("cannot leave the task: %s", exc.reason)
        self.services.withdraw(reason)

    async def _publish_endpoint(self, events: Sequence[LedgerEvent]) -> None:
        """A member restarted on another endpoint says so on chain (``move``): peers, and
        members restarted later, read endpoints from the registry (``events``: the task's
        history)."""
        ledger, me, here = self.ledger, self.services.me, self.services.endpoint
        registered = None
        for e in events:
            if isinstance(e, Joined | Moved) and e.member == me:
                registered = e.endpoint
        if registered == here:
            return
        try:
            await asyncio.to_thread(ledger.move, here)
            log.info("published the new endpoint %s (was %s)", here, registered)
        except TransactionReverted as exc:
            log.warning("cannot publish the new endpoint %s: %s", here, exc.reason)

    async def _config_mismatch(self) -> str | None:
        """Why this node's task configuration is not the task's on chain, if it is not."""
        from fedledger.config.task import config_differences

        # The deployment's configuration (round 1's, unless governance changed it before the
        # start: then the deployment's document, below, still matches).
        rules = await asyncio.to_thread(self.ledger.rules_at, 1)
        mine = self.task.digest()
        if rules.config_digest == mine:
            return None
        what = f"this node's task.toml (digest {mine.hex()[:12]}) is not the task's on chain " \
               f"(digest {rules.config_digest.hex()[:12]})"  # fmt: skip
        reader = getattr(self.ledger, "task_config", None)
        if reader is not None:
            try:
                theirs = await asyncio.to_thread(reader)
            except FedledgerError as exc:
                log.warning("cannot read the task's configuration from the chain: %s", exc)
            else:
                if theirs.digest() == mine:
                    return None
                return f"{what}: " + "; ".join(config_differences(self.task, theirs))
        return what

    def start(self) -> None:
        self.resend_signed()
        self.act(self.logic.start(self.now()))

    def founders(self) -> frozenset[str]:
        return frozenset(a for a in self.active if self.first_round.get(a, 0) <= 1)

    # -- the chain ---------------------------------------------------------------------------

    async def poll(self) -> None:
        """Read the chain's time and new events once, and give them to the logic."""
        ledger = self.ledger
        async with self._polling:
            if self._in_process:  # microseconds, from the shared feed: no thread hop
                now, head = float(ledger.now()), ledger.head()
                cursor = self._cursor
                events = ledger.events(cursor, head) if head > cursor else []
            else:
                # The time first: every transaction mined before it is in the events read
                # after it, so a round seen closed has all of its messages in view.
                now = float(await asyncio.to_thread(ledger.now))
                head = await asyncio.to_thread(ledger.head)
                cursor = self._cursor
                events = (await asyncio.to_thread(ledger.events, cursor, head)
                          if head > cursor else [])  # fmt: skip
            self._cursor = max(cursor, head)
            self.on_chain(events, now)

    async def ticker(self) -> None:
        """Feed new chain events and the chain's time to the logic."""
        # An in-process chain wakes the node when a block is mined; else poll.
        watch = getattr(getattr(self.ledger, "chain", None), "block_event", None)
        mined: asyncio.Event | None = watch() if watch is not None else None
        while True:
            try:
                await self.poll()
            except LedgerError as exc:
                log.warning("cannot read the chain: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self.report_waiting()
            if mined is None:
                await asyncio.sleep(POLL_SECONDS)
                continue
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow the ticker's own
            # cancellation when the block arrives at the same moment (the node never stops).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_SECONDS):
                    await mined.wait()
            mined.clear()

    def report_waiting(self) -> None:
        """Whom this node waits for (secure aggregation's reveals first, else the round
        logic's), to the node's status file."""
        now = self.now()
        waiting = self.secagg.waiting(now) if self.secagg is not None else None
        self.services.report_waiting(waiting or self.logic.waiting(now), now)

    def on_chain(self, events: Sequence[LedgerEvent], now: float) -> None:
        """New chain events: the registry's changes, then the round logic."""
        self.chain_now = now
        self.update_registry(events)
        if any(isinstance(e, Configured | Consent) for e in events):
            changes = len(self.rules.changes) + len(self.rules.invalid)
            self._read_governance(events)
            if len(self.rules.changes) + len(self.rules.invalid) != changes:
                self._rules_changed()
        if self.secagg is not None:
            self.secagg.on_events(events)
        self.act(self.logic.on_events(events, self.now()))
        if self._early:
            ready = [k for k, s in self._early.items() if s.signer in self.active]
            for key in ready:
                self.act(self.logic.on_message(self._early.pop(key), self.now()))

    def _rules_changed(self) -> None:
        """Governance changed the task's rules: leave if this node's consent no longer covers
        them; else follow them (the privacy budget at once, the rule from its round on)."""
        refusal = self._consent_refusal()
        if refusal is not None:
            if not self._leaving:
                log.warning("%s: leaving the task", refusal)
                self.services.spawn(self._leave(refusal), what="leaving the task")
            return
        latest = self.rules.latest()
        first = self.rules.changes[-1][0] if self.rules.changes else 1
        log.info("the task's rules change from round %d (rule %s)", first,
                 latest.aggregation.rule)  # fmt: skip
        plan = latest.privacy_plan()
        if plan is not None and self.logic.max_releases is not None:
            self.logic.max_releases = plan.max_releases

    def update_registry(self, events: Sequence[LedgerEvent]) -> None:
        """Who the active members are, and where: joins, departures and slashings."""
        changed = False
        for e in events:
            if isinstance(e, Joined):
                self.active[e.member] = e.endpoint
                self.first_round[e.member] = e.first_round
                changed = True
            elif isinstance(e, Moved) and e.member in self.active:
                self.active[e.member] = e.endpoint
                changed = True
            elif isinstance(e, Left | Slashed):
                changed = self.active.pop(e.member, None) is not None or changed
                if e.member == self.services.me and isinstance(e, Slashed):
                    self.services.expel(f"slashed by the task in block {e.block}: its stake "
                                        f"({e.amount} wei) was taken")  # fmt: skip
        if changed:
            self.services.set_members(self.active, self.active)

    # -- messages and blobs ------------------------------------------------------------------

    def deliver(self, m: Message) -> None:
        """A member's signed round message (``signed``): checked against its signer, who must
        be an active member, then given to the logic; a member's ``hello``: where it listens
        now (restarted on another port). Other kinds carry nothing the logic needs."""
        if m.kind == "hello":
            if m.sender in self.active:
                self.services.learn_endpoint(m.sender, str(m.body["endpoint"]), replace=True)
            return
        if m.kind == "reveal":
            if self.secagg is not None:
                self.secagg.deliver(m.sender, m.round, m.body)
            return
        if m.kind != "signed":
            return
        try:
            s = SignedRound.from_bytes(bytes.fromhex(str(m.body["message"])))
            if s.recover(self.chain_id, self.ledger.task_address) != s.signer:
                raise MessageError("signature does not match its signer")
        except (MessageError, ValueError) as exc:
            log.info("dropping a round message from %s: %s", m.sender, exc)
            return
        if s.signer not in self.active:  # not a member yet, as far as this node has read
            self._early[s.to_bytes()] = s
            while len(self._early) > EARLY_MESSAGES:
                self._early.popitem(last=False)
            return
        self.act(self.logic.on_message(s, self.now()))

    def trained(self, rnd: int, base: str, cid: str, num_examples: int, honest: str) -> None:
        if self.adversary.drops_out(rnd):
            log.warning("round %d: dropping out (no update)", rnd)
            self.act(self.logic.no_update(rnd, self.now()))
            return
        if self.secagg is not None:
            self.services.spawn(self._mask(rnd, base, cid, num_examples),
                                what=f"round {rnd}: masking")  # fmt: skip
            return
        self.act(self.logic.trained(rnd, base, cid, num_examples, self.now()))

    async def _mask(self, rnd: int, base: str, cid: str, num_examples: int) -> None:
        """Secure aggregation: the round's update is the masked model."""
        assert self.secagg is not None
        masked = await self.secagg.mask(rnd, cid, num_examples)
        if masked is not None:
            self.adversary.published(masked)
        if masked is None:
            self.act(self.logic.no_update(rnd, self.now()))
        else:
            self.act(self.logic.trained(rnd, base, masked, num_examples, self.now()))

    def blob(self, cid: str, ok: bool) -> None:
        now = self.now()
        self.act(self.logic.blob_ready(cid, now) if ok else self.logic.blob_failed(cid, now))

    async def authorize(self, requester: str, cid: str) -> None:
        """Active members get every blob but an update whose round still takes messages;
        readers the owner granted (auditors) the same; others only finalized models, and only
        if the task's access policy lets them (read from the chain, remembered for a few
        seconds in a bounded cache)."""
        if requester in self.active:
            await self._check_servable(cid)
            return
        reader, allowed = await self._access_of(requester)
        if reader:
            await self._check_servable(cid)
            return
        if cid not in self.logic.finalized_models:
            raise FetchRefused(f"{cid} is not a finalized model, and {requester} neither a "
                               "member nor a reader")  # fmt: skip
        if not allowed:
            raise FetchRefused(f"the task's access policy does not let {requester} download")

    async def _check_servable(self, cid: str) -> None:
        """Refuse this node's update while its round takes messages. A member asking has
        seen the round closed, maybe before this node polled: look at the chain again first
        (else its retry would cost the round a fetch delay)."""
        if self.logic.servable(cid, self.now()):
            return
        with contextlib.suppress(LedgerError):
            await self.poll()
        if not self.logic.servable(cid, self.now()):
            raise FetchRefused(f"{cid}: its round still takes messages")

    async def _access_of(self, requester: str) -> tuple[bool, bool]:
        """``(is a reader, may download models)``, from the chain, cached a few seconds."""
        now = self.services.clock()
        cached = self._access.get(requester)
        if cached is None or now - cached[0] > ACCESS_CACHE_SECONDS:

            def read() -> tuple[bool, bool]:
                reader = self.ledger.is_reader(requester)
                return reader, reader or self.ledger.can_download(requester)

            try:
                reader, allowed = await asyncio.to_thread(read)
            except LedgerError as exc:
                raise FetchRefused(f"cannot read the access policy: {exc}") from exc
            cached = (now, reader, allowed)
            self._access[requester] = cached
            while len(self._access) > ACCESS_CACHE_SIZE:
                self._access.popitem(last=False)
        self._access.move_to_end(requester)
        return cached[1], cached[2]

    def may_stop(self) -> bool:
        return False

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"gas_distribute": self.gas_distribute,
                               "privacy_budget_spent_at": self.logic.budget_spent_at}  # fmt: skip
        if self.secagg is not None:  # its rounds are unmasked, not aggregated by the core
            out["aggregated_rounds"] = self.secagg.unmasked
            out["secure_aggregation"] = self.secagg.summary()
        return out

    # -- actions -----------------------------------------------------------------------------

    def act(self, actions: Sequence[Any]) -> None:
        for a in actions:
            if self.services.common(a):
                continue
            if isinstance(a, Sign):
                if a.round == self.logic.budget_spent_at and a.message.update == ZERO32:
                    log.warning("round %d: privacy budget spent (%d rounds contributed): "
                                "attesting only, no more updates", a.round,
                                self.logic.releases_through(a.round))  # fmt: skip
                self.services.spawn(self._sign(a), what=f"round {a.round}: signing")
            elif isinstance(a, Submit | Distribute | Close | Evidence):
                self.services.spawn(self._transact(a), what=f"round {a.round}: transaction")
            elif isinstance(a, Aggregate):
                if self.secagg is not None:
                    self.services.spawn(self.secagg.aggregate(a),
                                        what=f"round {a.round}: secure aggregation")  # fmt: skip
                else:
                    self.services.spawn(self._aggregate(a), what=f"round {a.round}: aggregation")
            elif isinstance(a, Reveal):
                assert self.secagg is not None
                self.services.spawn(self.secagg.reveal(a), what=f"round {a.round}: reveal")
            elif isinstance(a, LedgerRoundDone):
                log.info("round %d %s: model %s (%d attested it, gas %d, %d transactions)%s",
                         a.round, "finalized" if a.finalized else "failed", a.model,
                         a.attesters, a.gas, a.transactions,
                         ", adopted" if a.adopted else "")  # fmt: skip
                self.services.round_finished(a.round, a.model, {
                    "finalized": a.finalized, "adopted": a.adopted, "caught_up": a.caught_up,
                    "included": a.included, "attesters": a.attesters,
                    "attestations": a.attestations, "gas": a.gas, "gas_by_kind": a.gas_by_kind,
                    "transactions": a.transactions, "releases": a.releases,
                })  # fmt: skip

    def resend_signed(self) -> None:
        """Gossip again every message this node signed that the chain does not hold yet (after
        a restart)."""
        for s in self.signed_messages.values():
            self.services.publish("signed", s.message.round, {"message": s.to_bytes().hex()})

    async def _sign(self, a: Sign) -> None:
        """Persist the message's content (fsync) and the update blob it names, then sign and
        gossip it: a crash at any point leaves either nothing signed or the same content,
        which signs to the same bytes again (RFC 6979)."""
        message = a.message
        persist = self.services.persist_message
        await asyncio.to_thread(persist, a.round, message.to_json())
        s = message.sign(self.services.identity, self.chain_id, self.ledger.task_address)
        self.signed_messages[a.round] = s
        self.services.publish("signed", a.round, {"message": s.to_bytes().hex()})
        self.act(self.logic.signed(s, self.now()))
        for extra in self.adversary.extra_messages(message):
            other = extra.sign(self.services.identity, self.chain_id, self.ledger.task_address)
            self.services.publish("signed", a.round, {"message": other.to_bytes().hex()})
            log.warning("round %d: signed a second, different message", a.round)

    async def _aggregate(self, a: Aggregate) -> None:
        rules = self.rules.at(a.round)
        # Updates whose authors' registered consent does not cover the round are left out.
        dropped = self.consents.uncovered([c.sender for c in a.inputs], rules,
                                          task_address=self.ledger.task_address,
                                          rnd=a.round)  # fmt: skip
        for sender, why in dropped.items():
            log.warning("round %d: leaving out %s's update: %s", a.round, sender, why)
        inputs = [c for c in a.inputs if c.sender not in dropped]
        senders = [c.sender for c in inputs]
        reputation = (self.logic.reputation(a.round, senders)
                      if uses_reputation(rules.aggregation.params) else None)  # fmt: skip
        randomness = b""
        if rules.incentives.scores != "rule":  # the hash of the round's last message's block
            block = self.logic.last_block(a.round)
            if block is not None:
                randomness = await asyncio.to_thread(self.ledger.block_hash, block)
        cid, scores = await self.services.aggregate(a.round, a.base, inputs, reputation,
                                                    randomness, rules)  # fmt: skip
        self.act(self.logic.aggregated(a.round, cid, senders, scores, self.now()))

    async def _transact(self, a: Submit | Distribute | Close | Evidence) -> None:
        ledger, logic = self.ledger, self.logic
        kind = {Submit: "submit", Distribute: "distribute", Close: "close",
                Evidence: "slash"}[type(a)]  # fmt: skip
        result: TxResult | None = None
        reason: str | None = None
        gas = 0
        try:
            if isinstance(a, Submit):
                result = await asyncio.to_thread(ledger.submit, a.round, list(a.messages),
                                                 list(a.contributors), list(a.scores),
                                                 a.transcript)  # fmt: skip
            elif isinstance(a, Distribute):
                result = await asyncio.to_thread(ledger.distribute, a.round,
                                                 list(a.contributors), list(a.scores),
                                                 a.transcript)  # fmt: skip
            elif isinstance(a, Close):
                result = await asyncio.to_thread(ledger.close)
            else:
                result = await asyncio.to_thread(ledger.slash, a.round, a.a, a.b)
                log.warning("round %d: slashed %s with evidence", a.round, a.a.signer)
            gas = result.gas_used
        except TransactionReverted as exc:
            reason = exc.reason
            gas = int(getattr(exc.receipt, "gas_used", 0) or 0)
            log.info("round %d: %s reverted: %s", a.round, kind, exc.reason)
        except LedgerError as exc:
            reason = str(exc)
            log.warning("round %d: %s failed: %s", a.round, kind, exc)
        if kind == "distribute":
            self.gas_distribute += gas
        self.act(logic.tx_done(kind, a.round, ok=result is not None, gas=gas, reason=reason,
                               now=self.now()))  # fmt: skip
