"""``fedledger audit``: replay a task from its chain, fetch its blobs, recompute everything.

Anyone holding the chain (an RPC URL, or an embedded run's journal) can check that training
followed the task's rules (ledger v2: rounds certified by batches of signed messages,
:mod:`fedledger.ledger.messages`). The task's configuration is on chain (the deployment's
``Configured`` event, checked against the contract's config digest); the initial model is
rebuilt from it (:func:`initial_model`); the blobs come from local stores, else from the
task's members over gRPC, else from an IPFS gateway (:mod:`fedledger.audit_sources`), each
checked against its CID. The audit trusts neither the nodes nor the RPC node: every message is
verified again from its signature, and time is only ever the blocks' timestamps (each event's
block).

Task-wide checks
    ``code``: the deployed runtime code is the Task artifact's; ``rules``: the contract's
    config digest, aggregation rule id and rule-parameter digest match the task configuration
    the audit was given; ``history``: every round the contract started is in the audited
    events; ``slashing``: every ``Slashed`` event's transaction is a ``slash`` call whose two
    messages differ, are for one round and both recover to the slashed member; ``privacy``
    (tasks with ``[privacy]``): no member sent updates in more rounds than the privacy budget
    allows, and each member's epsilon spent is reported (computed by dp-accounting from the
    on-chain configuration and the member's signed messages).

Per round ``r`` (each started round up to the task's last; round ``r``'s attestations are in
round ``r + 1``'s messages, and round ``rounds + 1`` carries attestations only):
    ``signatures``
        every ``Submitted`` message of round ``r`` (and, for the last round, of round
        ``rounds + 1``) recovers to the member its event names, in the task's EIP-712 domain
        (chain id, task address), and is for the event's round;
    ``phases``
        every such message was submitted before its round's message phase closed, as the
        events tell it (``RoundStarted``, ``Quorate``, ``Closed``, the rules' window and
        grace); the contract's ``max_rounds`` is the task's rounds, no update was submitted
        after it and no round after ``rounds + 1`` started;
    ``blobs``
        each submitted update is found by its CID (derived from the signed digest) and its
        bytes hash to it;
    ``committee``
        (a task with ``committee``) round ``r`` has a committee exactly when more members
        than that were active when it was drawn (as round ``r - 1`` started); its seed is
        keccak256(prevrandao, parent hash, task, round) of the block that drew it (read from
        the chain), its members are :func:`~fedledger.ledger.rules.sample_committee`'s over
        the member array of then (replayed from the events), its stake theirs, and every
        message of round ``r`` is one of theirs;
    ``quorum``
        the stake of the members eligible in ``r`` whose round ``r + 1`` messages attest the
        finalized pair reaches the quorum of round ``r``'s stake (if round ``r + 1`` has a
        committee: its members' attesting stake, of the committee's stake);
    ``aggregate``
        the included set is the ``Distributed`` event's contributors (whose digest with the
        scores must be the finalized result digest), or, if nothing was distributed, every
        submitted update whose blob is available; the task's rule is run on exactly those
        updates from the round's base (the last model finalized before ``r``): the model
        digest must be the finalized one;
    ``exclusion``
        no available, well-formed submitted update was left out of the included set (an
        update the rule itself rejects would score 0: leaving it out is noted, not failed);
    ``scores``
        the rule's score for each included update equals the distributed one (or, if
        nothing was distributed, the rule's result hashes to the finalized result digest);
    ``rewards``
        the distributed total is the sum of reward_per_round * score // sum(scores) over the
        contributors not slashed before the distribution, and all distributions together
        never exceed max_rounds * reward_per_round;
    ``failure``
        a round was skipped only once round ``r + 1``'s message phase closed, and a finalized
        round was not skipped.

Secure-aggregation tasks (``[privacy] secure_aggregation = true``): each update on chain names
a *masked* blob (the audit never sees an individual update). For each finalized round it takes
the round's masking set from the chain (:class:`~fedledger.ledger.masking.MaskingSets`), without
the members whose key blob (``Keys`` event) is invalid, as every node does; the survivors are
its members with an update in the round (``round_inputs``), the dropouts the rest. ``blobs``
then also covers the masking set's key blobs and the round's transcript (named by the
``Distributed`` event); ``aggregate`` checks the transcript (its scope, round, survivors with
their masked blobs' CIDs and weights, dropouts, and every seed and mask key against the key
blobs' commitments), unmasks the survivors' weighted sum from the masked blobs and gives the
model (FedAvg's division), whose digest must be the finalized one; ``exclusion``: every
survivor is a contributor; ``scores``: the contributors are the survivors and their scores
their weights apportioned (``result_digest(contributors, scores, transcript)`` must be the
finalized result digest). Updates outside the masking set are left out with a note. Rounds
that failed are not unmasked.

A round whose every check passes is verified; the audit is ``ok`` only if every round (and
the task-wide checks) are.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ParamSpec, cast

import numpy as np

from fedledger.aggregation import SCORE_TOTAL
from fedledger.aggregation import fixedpoint as fx
from fedledger.aggregation.round import aggregate_round
from fedledger.aggregation.validation import spec_of
from fedledger.audit_sources import GatewayBlobs, MemberBlobs, RemoteBlobs
from fedledger.commit import cid_from_digest, decode, digest_from_cid, encode, sha256
from fedledger.commit.compression import compressed_size, decode_update
from fedledger.config import TaskConfig, load_config
from fedledger.config.amendments import RulesInForce
from fedledger.config.consent import Consents
from fedledger.errors import (
    BlobError,
    CodecError,
    ConfigError,
    FedledgerError,
    LedgerError,
    MessageError,
    PrivacyError,
)
from fedledger.gossip.blobs import BlobStore, FileBlobStore
from fedledger.gossip.identity import Identity
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import Chain, EmbeddedChain, RpcChain
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.masking import MaskingSets
from fedledger.ledger.messages import ZERO32, RoundMessage, SignedRound
from fedledger.ledger.records import (
    Configured,
    Consent,
    Distributed,
    Finalized,
    Joined,
    Keys,
    LedgerEvent,
    Moved,
    RoundClock,
    RoundEvents,
    Slashed,
    Submitted,
    events_by_round,
    member_arrays_at_starts,
    round_inputs,
)
from fedledger.ledger.reputation import round_reputation, uses_reputation
from fedledger.ledger.rules import (
    ACCESS_PUBLIC,
    BPS,
    RULE_IDS,
    committee_seed,
    result_digest,
    rule_params_digest,
    sample_committee,
    sort_result,
)
from fedledger.privacy.secagg_keys import MAX_KEY_BLOB_BYTES, KeyBlob
from fedledger.privacy.secagg_round import (
    Transcript,
    check_transcript,
    decode_masked,
    input_weight,
    masked_size,
    secagg_model,
    unmask_sum,
)
from fedledger.seeds import derive_seed
from fedledger.task import build_trainer, prepare_task

_P = ParamSpec("_P")

CHECKS = ("signatures", "phases", "committee", "blobs", "quorum", "aggregate", "exclusion",
          "consent", "scores", "rewards", "failure")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class RoundVerdict:
    round: int
    status: str
    """finalized | skipped | open"""
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


@dataclass(frozen=True, kw_only=True)
class AuditReport:
    task: str
    chain_id: int
    rule: str
    task_checks: tuple[Check, ...]
    rounds: tuple[RoundVerdict, ...]
    notes: tuple[str, ...] = ()
    privacy: dict[str, Any] | None = None
    """With ``[privacy]``: the plan's figures and each member's epsilon spent, recomputed
    from the chain (the rounds its signed messages carried an update in)."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.task_checks) and all(r.ok for r in self.rounds)

    def failures(self) -> list[str]:
        """One line per failed check: ``round N: check: detail``."""
        out = [f"task: {c.name}: {c.detail}" for c in self.task_checks if not c.ok]
        for r in self.rounds:
            out += [f"round {r.round}: {c.name}: {c.detail}" for c in r.failures]
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        for verdict, rd in zip(self.rounds, d["rounds"], strict=True):
            rd["ok"] = verdict.ok
        d["failures"] = self.failures()
        return d


class BlobSource:
    """Blobs looked up by CID: in the local ``stores`` first, then in each of ``remotes`` in
    order (the members, a gateway: :mod:`fedledger.audit_sources`). Every blob is verified
    against its CID, whichever source it came from."""

    def __init__(self, stores: Iterable[BlobStore], remotes: Iterable[RemoteBlobs] = ()) -> None:
        self.stores = list(stores)
        self.remotes = list(remotes)
        self.served: dict[str, int] = {}
        """How many blobs each kind of source delivered (``"local"``, ``"members"``, ...)."""

    def _local(self, cid: str, digest: bytes) -> tuple[bytes | None, bool]:
        altered = False
        for store in self.stores:
            try:
                if not store.has(cid):
                    continue
                data = store.get(cid)
            except BlobError:
                continue
            if hashlib.sha256(data).digest() == digest:
                return data, False
            altered = True
        return None, altered

    def prefetch(self, cids: Sequence[str]) -> None:
        """Let the remote sources fetch every blob no local store holds, ahead of
        :meth:`fetch` (the members in parallel)."""
        if not self.remotes:
            return
        missing = []
        for cid in dict.fromkeys(cids):
            try:
                digest = digest_from_cid(cid)
            except CodecError:
                continue
            if self._local(cid, digest)[0] is None:
                missing.append(cid)
        for remote in self.remotes:
            if missing:
                remote.prefetch(missing)

    def fetch(self, cid: str) -> tuple[bytes | None, str]:
        """``(bytes, "")``, or ``(None, why)``: missing, or altered (no copy hashes to the
        CID), with what each remote source said."""
        try:
            digest = digest_from_cid(cid)
        except CodecError as exc:
            return None, f"not a valid CID ({exc})"
        data, altered = self._local(cid, digest)
        if data is not None:
            self.served["local"] = self.served.get("local", 0) + 1
            return data, ""
        whys = []
        for remote in self.remotes:
            data, why = remote.fetch(cid)
            if data is not None and hashlib.sha256(data).digest() == digest:
                self.served[remote.name] = self.served.get(remote.name, 0) + 1
                return data, ""
            if data is not None:
                why = "altered (its bytes do not hash to its CID)"
            altered = altered or why.startswith("altered")
            whys.append(f"{remote.name}: {why}")
        kind = "altered (its bytes do not hash to its CID)" if altered else "missing"
        return None, kind + (f" [{'; '.join(whys)}]" if whys else "")

    def close(self) -> None:
        for remote in self.remotes:
            remote.close()


def _key(e: LedgerEvent) -> tuple[int, int]:
    """An event's place in chain order."""
    return e.block, e.index


#: The shapes of the bundled data sets: (feature shape, classes, image shape).
BUNDLED_SHAPES: dict[str, tuple[tuple[int, ...], int, tuple[int, ...] | None]] = {
    "digits": ((64,), 10, (1, 8, 8)),
    "breast_cancer": ((30,), 2, None),
}


def task_shapes(
    cfg: TaskConfig,
) -> tuple[tuple[int, ...], int, tuple[int, ...] | None] | None:
    """``(feature_shape, num_classes, image_shape)`` of the task's model inputs, from its
    configuration alone: the bundled data sets' are known, a ``sites`` task names its features
    and classes. None when only the data can tell (csv and npz files)."""
    if cfg.data.dataset in BUNDLED_SHAPES:
        return BUNDLED_SHAPES[cfg.data.dataset]
    features = getattr(cfg.data, "features", None)
    classes = getattr(cfg.data, "classes", None)
    if features and classes:
        return (len(features),), len(classes), None
    return None


def initial_model(task: TaskConfig) -> bytes:
    """The task's initial model blob, as every node derives it from the seed: from the
    configuration alone when :func:`task_shapes` knows the shapes, else from the data set
    (which must then be at hand). Raises a :class:`~fedledger.errors.FedledgerError` when the
    model cannot be rebuilt."""
    shapes = task_shapes(task)
    if shapes is None:
        prepared = prepare_task(task)
        trainer = build_trainer(task, prepared.data)
    else:
        from fedledger.learning import TorchTrainer

        feature_shape, num_classes, image_shape = shapes
        trainer = TorchTrainer(model=task.model, feature_shape=feature_shape,
                               num_classes=num_classes, image_shape=image_shape,
                               threads=1)  # fmt: skip
    return encode(trainer.init_params(derive_seed(task.seed, "init")))


class Auditor:
    """Audit one task (see the module docstring)."""

    def __init__(
        self,
        *,
        chain: Chain,
        task_address: str,
        task: TaskConfig | None = None,
        blobs: BlobSource | None = None,
        from_block: int = 0,
        initial: bytes | None = None,
        initial_cid: str | None = None,
        identity: Identity | None = None,
        nft: str | None = None,
    ) -> None:
        """``task``: the configuration to audit against (None: the one published on chain);
        ``initial``: the initial model blob (None: rebuilt from the configuration, else
        fetched by ``initial_cid`` if given); ``identity``: fetch the blobs no local store
        holds from the task's members, signing the requests with this key."""
        self.chain = chain
        self.nft = nft
        """The task's model NFT contract, if known: its tokens are checked too."""
        self.ledger = ContractLedger(chain, task_address, None)
        self.from_block = from_block
        self.task = task if task is not None else self.ledger.task_config(from_block)
        self.blobs = blobs if blobs is not None else BlobSource([])
        self.identity = identity
        self.initial_cid = initial_cid
        self.initial = initial
        self._initial_why = ""
        self._events: list[LedgerEvent] = []
        self._submitted: list[Submitted] = []
        self._joins: dict[str, list[Joined]] = {}
        self._slashes: list[Slashed] = []
        self._distributions: list[Distributed] = []
        self._notes: list[str] = []
        self._rounds_of: dict[int, RoundEvents] = {}
        self._arrays: dict[int, tuple[str, ...]] = {}
        self._problems: list[str] = []
        """What is wrong with the task's rounds as a whole (reported in every round)."""
        self._validation: tuple[Any, Any] | None = None
        """The task's test split (contribution scores' validation set), once needed."""
        self.secure = self.task.secure_aggregation
        """Whether the task's updates are masked (secure aggregation)."""
        self._masking = MaskingSets()
        self._key_blobs: dict[tuple[str, bytes], KeyBlob | str] = {}
        """Each fetched key blob by (member, digest): checked against its registration, or
        why it is invalid (``"invalid: ..."``) or unavailable."""
        self._transcripts: dict[bytes, tuple[bytes | None, str]] = {}
        self._outside: set[tuple[str, int]] = set()
        self._noised: bool | None = None
        self.rules = RulesInForce(base=self.task)
        """The configuration in force in each round (the ``Configured`` events)."""
        self.consents = Consents()
        """Every member's registered consent policy by round (the ``Consent`` events)."""

    def _blob_limit(self) -> int | None:
        """The largest blob the members are asked for, once the initial model is known: its
        size (every update and model has it), or, with secure aggregation, the largest of a
        model, a masked update and a key blob."""
        if self.initial is None:
            return None
        if self.task.compression is not None:  # a compressed update's size is fixed
            try:
                spec = spec_of(decode(self.initial))
                return max(len(self.initial),
                           compressed_size(spec, self.task.compression.scheme))  # fmt: skip
            except CodecError:
                return None
        if not self.secure:
            return len(self.initial)
        try:
            coordinates = sum(int(a.size) for a in decode(self.initial))
        except CodecError:
            return None
        return max(len(self.initial), masked_size(coordinates), MAX_KEY_BLOB_BYTES)

    def _initial_model(self) -> bytes | None:
        """The initial model: rebuilt from the configuration, else fetched by its CID."""
        if self.initial is not None:
            return self.initial
        try:
            self.initial = initial_model(self.task)
            return self.initial
        except (FedledgerError, OSError) as exc:
            why = f"it cannot be rebuilt from the configuration ({exc})"
        if self.initial_cid is not None:
            data, fetched = self.blobs.fetch(self.initial_cid)
            if data is not None:
                self.initial = data
                return data
            why += f", and its blob {self.initial_cid} is {fetched}"
        self._initial_why = why
        self._notes.append(f"the initial model is unknown: {why}; round 1 is not recomputed, "
                           "later rounds start from the attested models")  # fmt: skip
        return None

    def _members(self) -> MemberBlobs | None:
        """The members as a blob source: every address that joined, at its latest endpoint."""
        if self.identity is None:
            return None
        endpoints: dict[str, str] = {}
        for e in self._events:
            if isinstance(e, Joined | Moved):
                endpoints[e.member] = e.endpoint
        members = MemberBlobs(identity=self.identity,
                              task_id=self.ledger.rules().config_digest.hex(),
                              chain_id=self.chain.chain_id, contract=self.ledger.task_address,
                              members=endpoints)  # fmt: skip
        limit = self._blob_limit()
        if limit is not None:
            members.max_bytes = limit
        return members

    # -- task-wide --------------------------------------------------------------------------------

    def _task_checks(self) -> list[Check]:
        checks = []
        runtime = bytes.fromhex(load_artifact("Task")["bytecode_runtime"].removeprefix("0x"))
        deployed = self.chain.code(self.ledger.task_address)
        checks.append(
            Check(
                name="code",
                ok=deployed.startswith(runtime),
                detail=""
                if deployed.startswith(runtime)
                else "the deployed code is not the Task artifact's",
            )
        )
        problems = []
        current = max(self.ledger.current_round(), 1)
        for rnd in sorted({1, current}):  # the contract's rules against the documents'
            rules, task = self.ledger.rules_at(rnd), self.rules.at(rnd)
            where = f" (round {rnd})" if rnd > 1 else ""
            if rules.config_digest != task.digest():
                problems.append(f"config digest differs from the task configuration's{where}")
            if rules.rule_id != RULE_IDS[task.aggregation.rule]:
                problems.append(f"rule id {rules.rule_id} is not "
                                f"{task.aggregation.rule}'s{where}")  # fmt: skip
            if rules.rule_params_digest != rule_params_digest(task):
                problems.append(f"rule parameters digest differs{where}")
            if rules.quorum_bps != task.ledger.quorum_bps:
                problems.append(f"quorum {rules.quorum_bps} bps is not the document's "
                                f"{task.ledger.quorum_bps}{where}")  # fmt: skip
            if rules.reward_per_round != task.ledger.reward_wei:
                problems.append(f"reward per round differs from the document's{where}")
        checks.append(Check(name="rules", ok=not problems, detail="; ".join(problems)))
        return checks

    def _consent(self, rnd: int, who: Sequence[str]) -> Check:
        """No included update came from a member whose registered consent policy does not
        cover the round's rules."""
        bad = self.consents.uncovered(who, self.rules.at(rnd),
                                      task_address=self.ledger.task_address,
                                      rnd=rnd)  # fmt: skip
        detail = "; ".join(f"{m}'s update is included: {why}" for m, why in sorted(bad.items()))
        return Check(name="consent", ok=not bad, detail=detail)

    def _models(self) -> Check:
        """Every minted model NFT names a finalized round's model, its parent is the finalized
        round before, and its epsilon is the one the accountant gives."""
        from fedledger.incentives.models import model_epsilon
        from fedledger.ledger.governance import ModelNFT

        assert self.nft is not None
        finalized = sorted({(e.round, e.model_digest) for e in self._events
                            if isinstance(e, Finalized)})  # fmt: skip
        models = dict(finalized)
        previous = {r: (finalized[i - 1][0] if i else 0) for i, (r, _) in enumerate(finalized)}
        plan = self.task.privacy_plan()
        bad = []
        minted = ModelNFT(self.chain, self.nft, None).minted()
        for m in minted:
            if models.get(m.round) != m.model:
                bad.append(f"token {m.round} holds model {m.model.hex()[:16]}, not the round's "
                           "finalized one")  # fmt: skip
            elif m.parent != previous[m.round]:
                bad.append(f"token {m.round}'s parent is {m.parent}, not {previous[m.round]}")
            elif m.epsilon != (eps := model_epsilon(self._events, plan, m.round)):
                bad.append(f"token {m.round} states epsilon {m.epsilon / 1e6:g}, the accountant "
                           f"gives {eps / 1e6:g}")  # fmt: skip
        detail = "; ".join(bad) if bad else f"{len(minted)} minted"
        return Check(name="models", ok=not bad, detail=detail)

    def _history(self, rounds: dict[int, RoundEvents]) -> Check:
        """Every round the contract started (up to the task's last) is in the audited block
        range: an audit that read the wrong range would otherwise verify nothing and pass."""
        started = min(self.ledger.current_round(), self.task.rounds)
        missing = [r for r in range(1, started + 1) if r not in rounds or not rounds[r].started]
        detail = ""
        if missing:
            detail = (
                f"the contract started round(s) {missing[:5]}{'...' if len(missing) > 5 else ''}"
                f" but the events from block {self.from_block} on hold no such round"
            )
        return Check(name="history", ok=not missing, detail=detail)

    # -- per round --------------------------------------------------------------------------------

    def _decode(self, tx: str) -> tuple[str, dict[str, Any]]:
        return self.ledger.decode_input(tx)

    def _releases(self) -> dict[str, int]:
        """Each member's privacy releases: the rounds its messages on chain carry an update
        in (replays and copies too: the member published them)."""
        rounds: dict[str, set[int]] = {}
        for e in self._submitted:
            if e.update != ZERO32:
                rounds.setdefault(e.member, set()).add(e.round)
        return {m: len(r) for m, r in sorted(rounds.items())}

    def _privacy(self) -> tuple[Check, dict[str, Any] | None]:
        """No member sent updates in more rounds than the task's privacy budget allows."""
        plan = self.task.privacy_plan()
        if plan is None:
            return Check(name="privacy", ok=True, detail="no [privacy] in the task"), None
        releases = self._releases()
        over = [f"{m} sent updates in {k} rounds, the budget allows {plan.max_releases} "
                f"(epsilon {plan.epsilon_after(k):.3g} > {plan.budget:g})"
                for m, k in releases.items() if k > plan.max_releases]  # fmt: skip
        figures = {**plan.summary(), "releases": releases,
                   "epsilon": {m: plan.epsilon_after(k) for m, k in releases.items()}}  # fmt: skip
        return Check(name="privacy", ok=not over, detail="; ".join(over)), figures

    def _slashing(self) -> Check:
        """Every slash was backed by evidence: two different messages signed by the slashed
        member for one round, in the ``slash`` call's own calldata."""
        bad = []
        chain_id, task = self.chain.chain_id, self.ledger.task_address
        for e in self._slashes:
            why = ""
            try:
                name, args = self._decode(e.tx)
                if name != "slash":
                    why = f"its transaction calls {name}, not slash"
                else:
                    rnd = int(args["round"])
                    a, b = (_message(rnd, args[k]) for k in ("a", "b"))
                    if a.message == b.message:
                        why = "the two messages are the same"
                    elif a.recover(chain_id, task) != e.member:
                        why = "the first message is not the member's"
                    elif b.recover(chain_id, task) != e.member:
                        why = "the second message is not the member's"
            except (FedledgerError, KeyError, TypeError, ValueError) as exc:
                why = f"its transaction holds no evidence ({exc})"
            if why:
                bad.append(f"{e.member} slashed without evidence in {e.tx}: {why}")
        return Check(name="slashing", ok=not bad, detail="; ".join(bad))

    # -- per round --------------------------------------------------------------------------------

    def _signatures(self, rnd: int, messages: Sequence[Submitted]) -> Check:
        bad = []
        chain_id, task = self.chain.chain_id, self.ledger.task_address
        for e in messages:
            try:
                signed = e.signed()
                if signed.message.round != e.round:
                    bad.append(f"{e.member}'s message is for round {signed.message.round}")
                    continue
                signer = signed.recover(chain_id, task)
            except MessageError as exc:
                bad.append(f"{e.member}'s message in {e.tx} does not verify ({exc})")
                continue
            if signer != e.member:
                bad.append(f"{e.member}'s message in {e.tx} was signed by {signer}")
        return Check(name="signatures", ok=not bad, detail="; ".join(bad))

    def _clock(self, st: RoundEvents, before: LedgerEvent | None = None) -> RoundClock | None:
        """The round's clock from its events (those before ``before`` in chain order, if
        given: what the contract knew when it took that event's transaction)."""
        if st.started is None:
            return None

        def seen(e: LedgerEvent | None) -> int | None:
            if e is None or (before is not None and _key(e) >= _key(before)):
                return None
            return e.time

        return RoundClock.of(start=st.started.start, rules=self.ledger.rules(),
                             quorum_at=seen(st.quorate), closed_at=seen(st.closed))  # fmt: skip

    def _global_phases(self, rounds: dict[int, RoundEvents]) -> list[str]:
        """What is wrong with the task's rounds as a whole (reported in every round)."""
        rules = self.ledger.rules()
        bad = []
        if rules.max_rounds != self.task.rounds:
            bad.append(f"the contract's max_rounds is {rules.max_rounds}, the task has "
                       f"{self.task.rounds} rounds")  # fmt: skip
        beyond = sorted(r for r, st in rounds.items()
                        if r > self.task.rounds + 1 and st.started is not None)  # fmt: skip
        if beyond:
            bad.append(f"round(s) {beyond[:5]} started after round {self.task.rounds + 1}")
        late = sorted({e.round for st in rounds.values() for e in st.submitted
                       if e.update != ZERO32 and e.round > rules.max_rounds})  # fmt: skip
        if late:
            bad.append(f"updates submitted in round(s) {late[:5]}, after max_rounds "
                       f"{rules.max_rounds}")  # fmt: skip
        return bad

    def _phases(self, rnd: int, rounds: dict[int, RoundEvents], problems: Sequence[str]) -> Check:
        bad = list(problems)
        last = rnd + 1 if rnd == self.task.rounds else rnd
        for r in range(rnd, last + 1):
            st = rounds.get(r)
            if st is None:
                continue
            for e in st.submitted:
                clock = self._clock(st, before=e)
                if clock is None or st.started is None or _key(e) < _key(st.started):
                    bad.append(f"{e.member}'s message for round {r} before the round started")
                elif e.time >= clock.closes_at:
                    bad.append(f"{e.member}'s message for round {r} submitted at {e.time}, "
                               f"after the round closed at {clock.closes_at}")  # fmt: skip
        return Check(name="phases", ok=not bad, detail="; ".join(bad))

    def _fetch_updates(self, st: RoundEvents) -> tuple[dict[str, bytes], Check]:
        found: dict[str, bytes] = {}
        bad = []
        for member, e in sorted(st.updates().items()):
            cid = cid_from_digest(e.update)
            data, why = self.blobs.fetch(cid)
            if data is None:
                bad.append(f"{member}'s update {cid} is {why}")
                continue
            found[member] = data
        return found, Check(name="blobs", ok=not bad, detail="; ".join(bad))

    def _stake_of(self, member: str, at: LedgerEvent) -> tuple[int, int] | None:
        """``(stake, first_round)`` of ``member``'s membership at event ``at`` (its latest
        ``Joined`` before it)."""
        joined = None
        for e in self._joins.get(member, ()):
            if _key(e) >= _key(at):
                break
            joined = e
        return None if joined is None else (joined.stake, joined.first_round)

    def _committee(self, rnd: int, st: RoundEvents) -> Check:
        """Round ``rnd``'s committee: drawn exactly when due, from the block's randomness,
        over the member array of then; only its members signed the round."""
        k = self.ledger.rules().committee
        draw = st.committee
        array = self._arrays.get(max(rnd - 1, 1))
        if draw is None:
            due = k and array is not None and len(array) > k and rnd <= self.task.rounds + 1
            detail = f"no committee drawn among {len(array or ())} members" if due else ""
            return Check(name="committee", ok=not due, detail=detail or "none")
        bad = []
        if not k:
            bad.append("a committee drawn for a task without committees")
        randao, parent = self.chain.block_randomness(draw.block)
        seed = committee_seed(prevrandao=randao, parent_hash=parent,
                              task=self.ledger.task_address, round=rnd)  # fmt: skip
        if draw.seed != seed:
            bad.append(f"seed {draw.seed.hex()[:16]} is not block {draw.block}'s "
                       f"{seed.hex()[:16]}")  # fmt: skip
        elif k and (array is None or tuple(draw.members) != sample_committee(seed, array, k)):
            bad.append("its members are not the draw's over the member array of then")
        stake = 0
        for member in draw.members:
            joined = self._stake_of(member, draw)
            stake += joined[0] if joined else 0
        if stake != draw.stake:
            bad.append(f"stake {draw.stake} is not its members' {stake}")
        outsiders = sorted({e.member for e in st.submitted} - set(draw.members))
        if outsiders:
            bad.append(f"messages from members not drawn: {', '.join(outsiders[:3])}")
        return Check(name="committee", ok=not bad, detail="; ".join(bad))

    def _quorum(self, rnd: int, st: RoundEvents, nxt: RoundEvents | None) -> Check:
        f = st.finalized
        if f is None or st.started is None:
            return Check(name="quorum", ok=True, detail="not finalized")
        stake = 0
        counted: set[str] = set()
        # Round rnd + 1's committee, if any, attests rnd against its own stake.
        committee = nxt.committee if nxt is not None else None
        for e in nxt.submitted if nxt is not None else ():
            if (e.model, e.result) != (f.model_digest, f.result_digest) or e.member in counted:
                continue
            joined = self._stake_of(e.member, e)
            if joined is None:
                continue
            if committee is None and joined[1] > rnd:
                continue
            if committee is not None and e.member not in committee.members:
                continue
            counted.add(e.member)
            stake += joined[0]
        base = st.started.active_stake
        if committee is not None and nxt is not None and nxt.started is not None:
            base = nxt.started.active_stake  # the committee's stake (RoundStarted's)
        need = -(-self.rules.at(rnd).ledger.quorum_bps * base // BPS)
        ok = stake >= need
        detail = "" if ok else f"{stake} of {need} needed attest the finalized pair"
        return Check(name="quorum", ok=ok, detail=detail)

    def _included(
        self, st: RoundEvents, available: dict[str, bytes]
    ) -> tuple[list[str], list[int] | None, str]:
        """The included set and the distributed scores (None if nothing was distributed),
        and what is wrong with the distribution ("" if nothing)."""
        f = st.finalized
        assert f is not None
        d = st.distributed
        if d is None:
            inputs = round_inputs(self._submitted, st.started.round if st.started else 0)
            return sorted((m for m in available if m in inputs), key=str.lower), None, ""
        who, scores = list(d.contributors), list(d.scores)
        try:
            ok = result_digest(who, scores) == f.result_digest
        except ValueError:
            ok = False
        why = "" if ok else "the distribution does not match the finalized result digest"
        return who, scores, why

    def _recompute(
        self, rnd: int, st: RoundEvents, base: bytes, who: Sequence[str], blobs: dict[str, bytes]
    ) -> Any:
        agg = self.rules.at(rnd).aggregation
        updates = st.updates()
        reputation = (
            round_reputation(self._events, rnd, who) if uses_reputation(agg.params) else None
        )
        return aggregate_round(agg, base=base, updates=[blobs[w] for w in who],
                               num_examples=[updates[w].examples for w in who],
                               reputation=reputation,
                               scoring=self._scoring(rnd, base, who, st),
                               compression=self.rules.at(rnd).compression)  # fmt: skip

    def _scoring(self, rnd: int, base: bytes, who: Sequence[str], st: RoundEvents) -> Any:
        """The round's contribution scoring (``[incentives]``), as the nodes set it up: the
        task's test split as validation set, the seed from what the round committed to."""
        rules = self.rules.at(rnd).incentives
        if rules.scores == "rule":
            return None
        from fedledger.incentives.scores import Scoring, scores_seed

        if self._validation is None:
            from fedledger.task import prepare_task

            test = prepare_task(self.task).data.test
            self._validation = (test.x, test.y)
        updates = st.updates()
        inputs = [(w, cid_from_digest(updates[w].update)) for w in who]
        blocks = [e.block for e in self._submitted if e.round == rnd]
        randomness = self.ledger.block_hash(max(blocks)) if blocks else b""
        seed = scores_seed(task=self.task.digest(), rnd=rnd, base=_sha(base), inputs=inputs,
                           randomness=randomness)  # fmt: skip
        x, y = self._validation
        return Scoring(
            method=rules.scores,
            x=x,
            y=y,
            seed=seed,
            max_evaluations=rules.max_evaluations,
            tolerance=rules.tolerance,
        )

    def _slashed_by(self, rnd: int) -> set[str]:
        """Members slashed before round ``rnd``'s outcome (its ``Finalized`` event, or ever if
        it has none)."""
        end = next((e for e in self._events if isinstance(e, Finalized) and e.round == rnd),
                   None)  # fmt: skip
        return {e.member for e in self._slashes if end is None or _key(e) < _key(end)}

    def _exclusion(
        self,
        rnd: int,
        st: RoundEvents,
        base: bytes | None,
        who: Sequence[str],
        blobs: dict[str, bytes],
    ) -> Check:
        """No update the members had was left out of the included set.

        What the members had cannot be read from the chain, nor from what the auditor can
        download now (a withholder may serve the auditor only). The evidence is an
        attestation: a member other than the update's author attested, in its round r + 1
        message, the result that the rule gives over the included set with that update added
        (or with every left-out update added). An honest member that had the blob aggregates
        it, so a quorum that finalized a result without it left out an update the members had.
        """
        included = set(who)
        inputs = round_inputs(self._submitted, rnd)
        for m in sorted(blobs, key=str.lower):
            if m not in included and m not in inputs:
                self._notes.append(f"round {rnd}: {m}'s update is left out; its digest was "
                                   "submitted before (a replay or a copy)")  # fmt: skip
        valid = []
        compression = self.rules.at(rnd).compression
        scheme = None if compression is None else compression.scheme
        base_params = None
        if base is not None and scheme is not None:
            with contextlib.suppress(CodecError):  # then the round cannot be recomputed
                base_params = decode(base)
        for m in sorted(blobs, key=str.lower):
            if m in included or m not in inputs:
                continue
            if m in self._slashed_by(rnd):
                self._notes.append(f"round {rnd}: {m}'s update is left out; its author was "
                                   "slashed before the round was finalized")  # fmt: skip
                continue
            try:
                if scheme is None:
                    decode(blobs[m], max_bytes=len(base)) if base is not None else decode(blobs[m])
                elif base is not None and base_params is not None:  # the one decoding path
                    decode_update(blobs[m], base=base_params, base_digest=sha256(base),
                                  scheme=scheme)  # fmt: skip
            except CodecError as exc:
                what = "parameter blob" if scheme is None else "compressed update"
                self._notes.append(f"round {rnd}: {m}'s update is left out; it is not a "
                                   f"{what} ({exc})")  # fmt: skip
                continue
            valid.append(m)
        if not valid:
            return Check(name="exclusion", ok=True)
        if base is None or not all(w in blobs and w in st.updates() for w in who):
            self._notes.append(f"round {rnd}: cannot tell whether the members had the "
                               f"left-out updates of {valid} (the included set cannot be "
                               "recomputed)")  # fmt: skip
            return Check(name="exclusion", ok=True)
        attested: dict[tuple[bytes, bytes], set[str]] = {}
        for e in self._rounds_of.get(rnd + 1, RoundEvents()).submitted:
            if e.model != ZERO32:
                attested.setdefault((e.model, e.result), set()).add(e.member)
        sets = [[m] for m in valid] + ([valid] if len(valid) > 1 else [])
        bad: list[str] = []
        witnessed: set[str] = set()
        for extra in sets:
            full = sorted({*who, *extra}, key=str.lower)
            try:
                outcome = self._recompute(rnd, st, base, full, blobs)
            except (CodecError, FedledgerError):
                continue
            pair = (_sha(outcome.model), result_digest(full, list(outcome.scores)))
            witnesses = sorted(attested.get(pair, set()) - set(extra), key=str.lower)
            if witnesses and not set(extra) <= witnessed:
                witnessed |= set(extra)
                bad.append(f"excluded {', '.join(extra)} ({witnesses[0]} attested the result "
                           "with it)")  # fmt: skip
        for m in valid:
            if m not in witnessed:
                self._notes.append(f"round {rnd}: {m}'s update is left out; no other member "
                                   "attested a result with it (withheld, or late)")  # fmt: skip
        return Check(name="exclusion", ok=not bad, detail="; ".join(bad))

    def _aggregate(
        self, rnd: int, st: RoundEvents, base: bytes | None, blobs: dict[str, bytes]
    ) -> tuple[list[Check], bytes | None]:
        f = st.finalized
        assert f is not None
        who, claimed, problem = self._included(st, blobs)
        checks = [self._exclusion(rnd, st, base, who, blobs), self._consent(rnd, who)]

        def fail(detail: str) -> tuple[list[Check], bytes | None]:
            return [Check(name="aggregate", ok=False, detail=detail), *checks], None

        if problem:
            return fail(problem)
        if base is None:
            why = self._initial_why if rnd == 1 else "the previous model is unavailable"
            return fail(f"cannot recompute: the base model is unknown: {why}")
        updates = st.updates()
        unknown = [w for w in who if w not in updates]
        if unknown:
            return fail(f"included updates never submitted in round {rnd}: {unknown}")
        inputs = round_inputs(self._submitted, rnd)
        replays = [w for w in who if w not in inputs]
        if replays:
            return fail(f"included updates whose digests were submitted before (replays or "
                        f"copies): {replays}")  # fmt: skip
        missing = [w for w in who if w not in blobs]
        if missing:
            return fail(f"cannot recompute: no verified blob for {missing}")
        try:
            outcome = self._recompute(rnd, st, base, who, blobs)
        except CodecError as exc:
            return fail(f"base model: {exc}")
        model, scores = outcome.model, list(outcome.scores)
        got = _sha(model)
        ok = got == f.model_digest
        detail = "" if ok else (f"the rule gives model {got.hex()[:16]}, the quorum attested "
                                f"{f.model_digest.hex()[:16]}")  # fmt: skip
        checks.insert(0, Check(name="aggregate", ok=ok, detail=detail))
        if claimed is not None:
            ok = claimed == scores
            detail = "" if ok else f"the rule scores {scores}, the quorum attested {claimed}"
        else:
            ok = result_digest(who, scores) == f.result_digest
            detail = "" if ok else "the rule's scores do not hash to the attested result"
        checks.append(Check(name="scores", ok=ok, detail=detail))
        return checks, model

    # -- secure aggregation -----------------------------------------------------------------------

    def _scope(self) -> str:
        from fedledger.node.drivers.secagg import scope_of

        return scope_of(self.chain.chain_id, self.ledger.task_address)

    def _weight(self, examples: int) -> int:
        """A survivor's weight in the masked sum, as the nodes give it (1 each when the task
        adds differential-privacy noise)."""
        if self._noised is None:
            self._noised = self.task.privacy_plan() is not None
        return input_weight(examples, noised=self._noised)

    def _key_blob(self, member: str, k: Keys) -> tuple[KeyBlob | None, str, str]:
        """``(blob, "", "")`` for ``member``'s key blob of registration ``k`` when it is valid
        (what the nodes accept: :func:`~fedledger.node.drivers.secagg.check_key_blob`),
        ``(None, why invalid, "")``, or ``(None, "", why unavailable)``."""
        from fedledger.node.drivers.secagg import check_key_blob

        key = (member, k.keys_digest)
        if key not in self._key_blobs:
            cid = cid_from_digest(k.keys_digest)
            data, why = self.blobs.fetch(cid)
            if data is None:
                self._key_blobs[key] = f"{member}'s key blob {cid} is {why}"
            else:
                try:
                    self._key_blobs[key] = check_key_blob(data, k, scope=self._scope())
                except PrivacyError as exc:
                    self._key_blobs[key] = f"invalid: {exc}"
                    self._notes.append(f"{member}'s key blob {cid} is invalid ({exc}): it masks "
                                       "with nobody")  # fmt: skip
        got = self._key_blobs[key]
        if isinstance(got, KeyBlob):
            return got, "", ""
        if got.startswith("invalid: "):
            return None, got.removeprefix("invalid: "), ""
        return None, "", got

    def _masking_of(self, rnd: int) -> tuple[list[str], dict[str, KeyBlob], list[str]]:
        """Round ``rnd``'s masking set as the nodes use it: the chain's
        (:class:`~fedledger.ledger.masking.MaskingSets`) without the members whose key blob is
        invalid, with their key blobs; and why a key blob of the chain's set is unavailable
        (then the set cannot be told)."""
        members: list[str] = []
        blobs: dict[str, KeyBlob] = {}
        missing: list[str] = []
        for a in self._masking.of(rnd) or ():
            k = self._masking.registration(a, rnd)
            if k is None:
                continue
            blob, _, why = self._key_blob(a, k)
            if blob is not None:
                members.append(a)
                blobs[a] = blob
            elif why:
                missing.append(why)
        return members, blobs, missing

    def _paid(self, rnd: int, st: RoundEvents) -> tuple[list[str], list[int], bytes] | str:
        """Round ``rnd``'s result ``(contributors, scores, transcript digest)`` as paid: its
        ``Distributed`` event, or else a ``submit`` call of round ``rnd + 1`` whose result
        hashes to the finalized one; or what is wrong."""
        f = st.finalized
        assert f is not None
        d = st.distributed
        if d is not None:
            try:
                ok = result_digest(d.contributors, d.scores, d.transcript) == f.result_digest
            except ValueError:
                ok = False
            if not ok:
                return "the distribution does not match the finalized result digest"
            return list(d.contributors), list(d.scores), d.transcript
        nxt = self._rounds_of.get(rnd + 1, RoundEvents())
        for tx in dict.fromkeys(e.tx for e in nxt.submitted):
            try:
                name, args = self._decode(tx)
                if name != "submit" or int(args["round"]) != rnd + 1:
                    continue
                who = [str(a) for a in args["contributors"]]
                scores = [int(x) for x in args["scores"]]
                transcript = bytes(args["transcript"])
                if result_digest(who, scores, transcript) == f.result_digest:
                    return who, scores, transcript
            except (FedledgerError, KeyError, TypeError, ValueError):
                continue
        return ("nothing was distributed, and no submit call of the next round carries the "
                "finalized result (its transcript digest is unknown)")  # fmt: skip

    def _transcript_blob(self, digest: bytes) -> tuple[bytes | None, str]:
        if digest not in self._transcripts:
            self._transcripts[digest] = self.blobs.fetch(cid_from_digest(digest))
        return self._transcripts[digest]

    def _secure_blobs(self, rnd: int, st: RoundEvents, check: Check) -> Check:
        """The ``blobs`` check of a finalized secure round: the masked updates (``check``),
        and the masking set's key blobs and the round's transcript."""
        bad = [check.detail] if not check.ok else []
        bad += self._masking_of(rnd)[2]
        paid = self._paid(rnd, st)
        if not isinstance(paid, str) and paid[2] != ZERO32:
            data, why = self._transcript_blob(paid[2])
            if data is None:
                bad.append(f"the round's transcript {cid_from_digest(paid[2])} is {why}")
        return Check(name="blobs", ok=not bad, detail="; ".join(bad))

    def _secure_aggregate(
        self, rnd: int, st: RoundEvents, base: bytes | None, blobs: dict[str, bytes]
    ) -> tuple[list[Check], bytes | None]:
        """``aggregate``, ``exclusion`` and ``scores`` of a finalized secure round: recompute
        what :meth:`SecAggParty._unmask <fedledger.node.drivers.secagg.SecAggParty._unmask>`
        computes, from the chain, the masked blobs, the key blobs and the transcript."""
        f = st.finalized
        assert f is not None
        checks: list[Check] = []

        def fail(detail: str) -> tuple[list[Check], bytes | None]:
            failed = Check(name="aggregate", ok=False, detail=f"secure aggregation: {detail}")
            return [failed, *checks], None

        members, keys, missing = self._masking_of(rnd)
        inputs = round_inputs(self._submitted, rnd)
        in_set = {a.lower() for a in members}
        for a in sorted(inputs, key=str.lower):
            if a.lower() not in in_set and (a, rnd) not in self._outside:
                self._outside.add((a, rnd))
                self._notes.append(f"round {rnd}: {a}'s update is left out; it is not in the "
                                   "round's masking set (no valid key blob covers it)")  # fmt: skip
        survivors = [a for a in members if a in inputs]
        dropouts = [a for a in members if a not in inputs]
        paid = self._paid(rnd, st)
        if isinstance(paid, str):
            return fail(paid)
        who, claimed, digest = paid
        if missing:
            return fail(f"cannot recompute: the masking set is unknown: {'; '.join(missing)}")
        contributors = {w.lower() for w in who}
        left_out = [s for s in survivors if s.lower() not in contributors]
        detail = "" if not left_out else (f"survivors of round {rnd}'s masking set left out of "
                                          f"the contributors: {left_out}")  # fmt: skip
        checks.append(Check(name="exclusion", ok=not left_out, detail=detail))
        expected_who, expected = sort_result(
            survivors, fx.apportion([self._weight(inputs[s].examples) for s in survivors],
                                    SCORE_TOTAL))  # fmt: skip
        ok = [w.lower() for w in who] == [w.lower() for w in expected_who] and claimed == expected
        detail = "" if ok else (f"the survivors' weights give {expected} to {expected_who}, "
                                f"the quorum attested {claimed} to {who}")  # fmt: skip
        checks.append(Check(name="scores", ok=ok, detail=detail))
        extra = [w for w in who if w.lower() not in {s.lower() for s in survivors}]
        if extra:
            return fail(f"contributors that are not survivors of round {rnd}'s masking set: "
                        f"{extra}")  # fmt: skip
        if digest == ZERO32:
            return fail("the round's result names no transcript")
        if base is None:
            why = self._initial_why if rnd == 1 else "the previous model is unavailable"
            return fail(f"cannot recompute: the base model is unknown: {why}")
        try:
            spec = spec_of(decode(base))
        except CodecError as exc:
            return fail(f"base model: {exc}")
        size = sum(int(np.prod(shape)) for shape, _ in spec)
        cid = cid_from_digest(digest)
        data, why = self._transcript_blob(digest)
        if data is None:
            return fail(f"cannot recompute: the transcript {cid} is {why}")
        try:
            transcript = Transcript.from_bytes(data)
        except PrivacyError as exc:
            return fail(f"round {rnd}'s transcript {cid} is not valid: {exc}")
        scope = self._scope()
        if (transcript.scope, transcript.round) != (scope, rnd):
            return fail(f"round {rnd}'s transcript is for {transcript.scope} round "
                        f"{transcript.round}, not {scope} round {rnd}")  # fmt: skip
        named = sorted(s.member for s in transcript.survivors)
        if named != sorted(s.lower() for s in survivors):
            return fail(f"round {rnd}'s transcript names survivors {named}, the chain's are "
                        f"{sorted(s.lower() for s in survivors)}")  # fmt: skip
        named = sorted(d.member for d in transcript.dropouts)
        if named != sorted(d.lower() for d in dropouts):
            return fail(f"round {rnd}'s transcript names dropouts {named}, the chain's are "
                        f"{sorted(d.lower() for d in dropouts)}")  # fmt: skip
        by = {s.lower(): inputs[s] for s in survivors}
        for entry in transcript.survivors:
            e = by[entry.member]
            submitted = cid_from_digest(e.update)
            if entry.update != submitted:
                return fail(f"round {rnd}'s transcript names masked update {entry.update} for "
                            f"{entry.member}, which submitted {submitted}")  # fmt: skip
            if entry.weight != self._weight(e.examples):
                return fail(f"round {rnd}'s transcript weight of {entry.member} is "
                            f"{entry.weight}, its {e.examples} examples give "
                            f"{self._weight(e.examples)}")  # fmt: skip
        try:
            check_transcript(transcript, blobs=keys, masking_set=members)
        except PrivacyError as exc:
            return fail(f"round {rnd}'s transcript does not verify: {exc}")
        unavailable = [s for s in survivors if s not in blobs]
        if unavailable:
            return fail(f"cannot recompute: no verified masked blob for {unavailable}")
        masked = {}
        for s in survivors:
            try:
                _, masked[s] = decode_masked(blobs[s], rnd=rnd, member=s, size=size)
            except PrivacyError as exc:
                return fail(f"{s}'s masked update is not valid: {exc}")
        try:
            total, weight = unmask_sum(transcript, masked=masked, blobs=keys)
            model = encode(secagg_model(total, weight, spec))
        except (PrivacyError, CodecError) as exc:
            return fail(f"round {rnd} cannot be unmasked: {exc}")
        got = _sha(model)
        ok = got == f.model_digest
        detail = "" if ok else (f"secure aggregation: the unmasked sum gives model "
                                f"{got.hex()[:16]}, the quorum attested "
                                f"{f.model_digest.hex()[:16]}")  # fmt: skip
        return [Check(name="aggregate", ok=ok, detail=detail), *checks], model

    def _rewards(self, d: Distributed) -> Check:
        rules = self.ledger.rules()
        reward = self.rules.at(d.round).ledger.reward_wei
        changed = [t.ledger.reward_wei for _, t in self.rules.changes]
        rewards = [self.rules.base.ledger.reward_wei, *changed]
        cap = rules.max_rounds * max(rewards)
        bad = []
        total = sum(d.scores)
        slashed = {e.member for e in self._slashes if _key(e) < _key(d)}
        expected = 0
        if total:
            for who, score in zip(d.contributors, d.scores, strict=False):
                if who not in slashed:
                    expected += reward * score // total
        if len(d.contributors) != len(d.scores):
            bad.append("contributors and scores differ in length")
        if d.total != expected:
            bad.append(f"distributed {d.total}, the scores give {expected}")
        minted = sum(e.total for e in self._distributions if _key(e) <= _key(d))
        if minted > cap:
            bad.append(f"minted above the cap: {minted} in all by round {d.round}, at most "
                       f"{cap}")  # fmt: skip
        return Check(name="rewards", ok=not bad, detail="; ".join(bad))

    def _failure(self, st: RoundEvents, nxt: RoundEvents | None) -> Check:
        if st.skipped is None:
            return Check(name="failure", ok=True)
        if st.finalized is not None:
            return Check(name="failure", ok=False, detail="finalized, and skipped too")
        clock = self._clock(nxt) if nxt is not None else None
        if clock is None:
            detail = "skipped before the next round (its attestations) started"
            return Check(name="failure", ok=False, detail=detail)
        ok = st.skipped.time >= clock.closes_at
        detail = "" if ok else (f"skipped at {st.skipped.time}, before the next round's "
                                f"attestations closed at {clock.closes_at}")  # fmt: skip
        return Check(name="failure", ok=ok, detail=detail)

    def run(self) -> AuditReport:
        """Audit the task (see the module docstring); closes the remote blob sources."""
        try:
            return self._run()
        finally:
            self.blobs.close()

    def _prefetch(self, rounds: dict[int, RoundEvents]) -> None:
        cids = []
        for rnd in sorted(r for r in rounds if 1 <= r <= self.task.rounds):
            st = rounds[rnd]
            cids += [cid_from_digest(e.update) for e in st.updates().values()]
            if st.finalized is not None:
                cids.append(cid_from_digest(st.finalized.model_digest))
            if self.secure and st.distributed is not None and st.distributed.transcript != ZERO32:
                cids.append(cid_from_digest(st.distributed.transcript))
        if self.secure:
            cids += [cid_from_digest(e.keys_digest) for e in self._events
                     if isinstance(e, Keys) and e.keys_digest != ZERO32]  # fmt: skip
        self.blobs.prefetch(cids)

    def _access_note(self) -> None:
        """Why the members may have refused the auditor's requests."""
        if self.identity is None or not self.blobs.remotes:
            return
        who = self.identity.address
        try:
            allowed = self.ledger.can_download(who)
        except LedgerError:
            return
        if not allowed:
            policy = (
                "public" if self.ledger.rules().access_policy == ACCESS_PUBLIC else "not public"
            )
            self._notes.append(f"the auditor's key {who} may not download the task's blobs "
                               f"(access {policy}): ask the owner to grant it read access "
                               "(grant_reader)")  # fmt: skip

    def audit_round(self, rnd: int) -> RoundVerdict:
        """Audit round ``rnd`` alone: its checks as :meth:`run` gives them (the task-wide
        checks left out). Its base is the model finalized last before it, read from the blob
        sources and checked against its CID; where none is available, the rounds before are
        recomputed from the nearest one that is (or from the initial model). A
        :class:`~fedledger.errors.ConfigError` for a round the task never started. Closes the
        remote blob sources; one call per auditor."""
        try:
            rounds = self._load()
            st = rounds.get(rnd)
            if not 1 <= rnd <= self.task.rounds or st is None or st.started is None:
                raise ConfigError(f"round {rnd} was not started (the task has "
                                  f"{self.task.rounds} rounds)", field="round")  # fmt: skip
            start, base = 1, self.initial
            for earlier in range(rnd - 1, 0, -1):
                f = rounds[earlier].finalized if earlier in rounds else None
                if f is None:
                    continue
                stored, _ = self.blobs.fetch(cid_from_digest(f.model_digest))
                if stored is not None:
                    start, base = earlier + 1, stored
                    break
            self._prefetch({r: st for r, st in rounds.items() if start <= r <= rnd})
            verdict = None
            for r in range(start, rnd + 1):
                if r in rounds and rounds[r].started is not None:
                    verdict, base = self._round(r, base)
            assert verdict is not None
            return verdict
        finally:
            self.blobs.close()

    def _run(self) -> AuditReport:
        rounds = self._load()
        base = self.initial
        self._prefetch(rounds)
        verdicts = []
        for rnd in sorted(r for r in rounds if 1 <= r <= self.task.rounds):
            if rounds[rnd].started is None:
                continue
            verdict, base = self._round(rnd, base)
            verdicts.append(verdict)
        notes = self._notes
        if any(not c.ok and c.name == "blobs" for v in verdicts for c in v.checks):
            self._access_note()
        if self.blobs.served:
            served = sorted(self.blobs.served.items())
            notes.append("blobs verified from: " + ", ".join(f"{n} {c}" for n, c in served))
        rules = self.ledger.rules()
        privacy, figures = self._privacy()
        return AuditReport(
            task=self.ledger.task_address,
            chain_id=self.chain.chain_id,
            rule=rules.rule,
            task_checks=(
                *self._task_checks(),
                self._history(rounds),
                self._slashing(),
                *([privacy] if figures is not None else []),
                *([self._models()] if self.nft is not None else []),
            ),
            rounds=tuple(verdicts),
            notes=tuple(notes),
            privacy=figures,
        )

    def _load(self) -> dict[int, RoundEvents]:
        """Read the task's events and set up what every round's checks need: the rules in
        force, the consents, the members as a blob source, the initial model
        (``self.initial``), the masking sets, the task-wide phase problems. The rounds'
        events by round."""
        events = self.ledger.events(self.from_block - 1 if self.from_block else -1)
        self._events = events
        self._submitted = [e for e in events if isinstance(e, Submitted)]
        self._joins = {}
        for e in events:
            if isinstance(e, Joined):
                self._joins.setdefault(e.member, []).append(e)
        self._slashes = [e for e in events if isinstance(e, Slashed)]
        self._distributions = [e for e in events if isinstance(e, Distributed)]
        for e in events:
            if isinstance(e, Configured):
                self.rules = self.rules.with_change(e.from_round, e.document)
            elif isinstance(e, Consent):
                self.consents.add(e.member, e.from_round, e.policy)
        for first, why in self.rules.invalid:
            self._notes.append(f"the configuration change from round {first} is not one a vote "
                               f"may make ({why}): later rounds are checked against the "
                               "rules before it")  # fmt: skip
        for first, changed in self.rules.changes:
            self._notes.append(f"governance changed the rules from round {first} (rule "
                               f"{changed.aggregation.rule})")  # fmt: skip
        rounds = events_by_round(events)
        self._rounds_of = rounds
        self._arrays = member_arrays_at_starts(events)
        members = self._members()
        if members is not None:
            self.blobs.remotes.insert(0, members)
        self._initial_model()
        limit = self._blob_limit()
        if members is not None and limit is not None:
            members.max_bytes = limit
        if self.secure:
            self._masking.add(events)
        self._problems = self._global_phases(rounds)
        return rounds

    def _round(self, rnd: int, base: bytes | None) -> tuple[RoundVerdict, bytes | None]:
        """Round ``rnd``'s verdict (a started round, after :meth:`_load`) from ``base`` (the
        last model finalized before it), and the base of the next round."""
        rounds = self._rounds_of
        notes = self._notes
        st = rounds[rnd]
        nxt = rounds.get(rnd + 1)
        messages = list(st.submitted)
        if rnd == self.task.rounds and nxt is not None:
            messages += nxt.submitted  # round rounds + 1: attestations only
        checks = [self._signatures(rnd, messages), self._phases(rnd, rounds, self._problems)]
        checks.append(self._committee(rnd, st))
        updates, blob_check = self._fetch_updates(st)
        if self.secure and st.finalized is not None:
            blob_check = self._secure_blobs(rnd, st, blob_check)
        checks.append(blob_check)
        if st.finalized is not None:
            checks.append(self._quorum(rnd, st, nxt))
            if self.secure:
                more, model = self._secure_aggregate(rnd, st, base, updates)
            else:
                more, model = self._aggregate(rnd, st, base, updates)
            checks += more
            if st.distributed is None:
                notes.append(f"round {rnd}: finalized, rewards not distributed")
            else:
                checks.append(self._rewards(st.distributed))
            stored, _ = self.blobs.fetch(cid_from_digest(st.finalized.model_digest))
            if model is not None and _sha(model) == st.finalized.model_digest:
                base = model
            elif stored is not None:
                base = stored  # go on from the attested model, to check later rounds
            else:
                notes.append(
                    f"round {rnd}: the finalized model is unavailable; later "
                    "rounds are checked from the recomputed one"
                )
                base = model if model is not None else base
            status = "finalized"
        elif st.skipped is not None:
            status = "skipped"
        else:
            status = "open"
        checks.append(self._failure(st, nxt))
        return RoundVerdict(round=rnd, status=status, checks=tuple(checks)), base


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _message(rnd: int, arg: Any) -> SignedRound:
    """A ``slash`` argument (a ``Message`` struct: a tuple or a mapping) as a signed message of
    round ``rnd`` (its signer is recovered, not claimed)."""
    if isinstance(arg, dict):
        arg = tuple(arg[k] for k in ("update", "examples", "model", "result", "r", "vs"))
    update, examples, model, result, r, vs = arg
    message = RoundMessage(round=rnd, update=bytes(update), examples=int(examples),
                           model=bytes(model), result=bytes(result))  # fmt: skip
    return SignedRound(message=message, signer="0x" + "00" * 20, r=int(r), vs=int(vs))


# -- entry points ---------------------------------------------------------------------------------


def run_blob_stores(run_dir: Path) -> list[BlobStore]:
    """The blob stores of every node of a ``fedledger run`` directory."""
    return [FileBlobStore(p, durable=False) for p in sorted(run_dir.glob("node-*/state/blobs"))]


def _stores(blob_dirs: Sequence[Path]) -> list[BlobStore]:
    stores: list[BlobStore] = []
    for d in blob_dirs:
        stores += run_blob_stores(d) or [FileBlobStore(d, durable=False)]
    return stores


def run_auditor(
    run_dir: Path,
    *,
    chain: Chain | None = None,
    rpc: str | None = None,
    task_address: str | None = None,
    config: Path | None = None,
    blob_dirs: Sequence[Path] = (),
) -> Auditor:
    """The :class:`Auditor` :func:`audit_run` runs (``.run()``: the whole task;
    ``.audit_round(r)``: one round)."""
    from fedledger.rundir import JOURNAL_FILE, LedgerDeployment

    first = 0
    nft = None
    if rpc is None:
        deployment = LedgerDeployment.read(run_dir)
        task_address = task_address or deployment.task
        first = deployment.first_block
        nft = deployment.nft if task_address == deployment.task else None
        if chain is None:
            if deployment.backend == "embedded":
                chain = EmbeddedChain.replay(run_dir / JOURNAL_FILE)  # checks every block hash
            else:
                chain = RpcChain(deployment.backend)
    elif chain is None:
        chain = RpcChain(rpc)
    if task_address is None:
        raise ConfigError("which task? give --task ADDRESS", field="task")
    cfg_path = config or run_dir / "task.toml"
    task = load_config(cfg_path) if config is not None or cfg_path.exists() else None
    stores: list[BlobStore] = run_blob_stores(run_dir) if run_dir.exists() else []
    stores += _stores(blob_dirs)
    return Auditor(
        chain=chain,
        task_address=task_address,
        task=task,
        blobs=BlobSource(stores),
        from_block=first,
        nft=nft,
    )


def task_auditor(
    *,
    task_address: str,
    rpc: str | None = None,
    chain: Chain | None = None,
    identity: Identity | None = None,
    config: Path | TaskConfig | None = None,
    blob_dirs: Sequence[Path] = (),
    gateway: str | None = None,
    members: bool = True,
    from_block: int = 0,
    initial_cid: str | None = None,
) -> Auditor:
    """The :class:`Auditor` :func:`audit_task` runs (``.run()``: the whole task;
    ``.audit_round(r)``: one round)."""
    if chain is None:
        if rpc is None:
            raise ConfigError("which chain? give --rpc URL", field="rpc")
        chain = RpcChain(rpc)
    task = load_config(config) if isinstance(config, Path) else config
    remotes: list[RemoteBlobs] = [GatewayBlobs(gateway)] if gateway is not None else []
    if members and identity is None:
        identity = Identity.generate()
    return Auditor(
        chain=chain,
        task_address=task_address,
        task=task,
        blobs=BlobSource(_stores(blob_dirs), remotes),
        from_block=from_block,
        identity=identity if members else None,
        initial_cid=initial_cid,
    )


def _whole(auditor: Callable[_P, Auditor], name: str, doc: str) -> Callable[_P, AuditReport]:
    """The function ``name`` that takes ``auditor``'s arguments and runs the whole audit
    (``auditor(...).run()``): one parameter list for both."""

    def audit(*args: _P.args, **kwargs: _P.kwargs) -> AuditReport:
        return auditor(*args, **kwargs).run()

    audit.__name__ = audit.__qualname__ = name
    audit.__doc__ = doc
    signature = inspect.signature(auditor).replace(return_annotation="AuditReport")
    cast(Any, audit).__signature__ = signature  # help() and inspect show the parameters
    return audit


audit_run = _whole(
    run_auditor,
    "audit_run",
    """Audit a run directory (``ledger.json``, ``chain.jsonl`` for an embedded chain, the
    nodes' blobs; ``task.toml`` if present, else the configuration on chain), or a task on
    ``rpc`` at ``task_address`` with the blobs of ``blob_dirs`` (see :func:`audit_task` for
    an audit that fetches them from the members).""",
)

audit_task = _whole(
    task_auditor,
    "audit_task",
    """An outsider's audit: the task at ``task_address`` on ``rpc`` (or ``chain``), with its
    configuration read from the chain (``config``, if given, must be the one on chain: the
    ``rules`` check), the initial model rebuilt from it, and the blobs from ``blob_dirs``,
    else the task's members (``members``; requests signed by ``identity``, a fresh random key
    by default: enough for a task whose access is public, else give a key the owner granted
    read access), else the IPFS ``gateway``.""",
)


def format_report(report: AuditReport) -> list[str]:
    """Lines of the per-round verdict table, for a terminal."""
    lines = [f"task {report.task} (chain {report.chain_id}), rule {report.rule}"]
    for c in report.task_checks:
        lines.append(f"  {c.name:<10} {'ok' if c.ok else 'FAILED: ' + c.detail}")
    lines.append(f"{'round':>5}  {'status':<9}  " + "  ".join(f"{n:<10}" for n in CHECKS))
    for r in report.rounds:
        marks = {c.name: ("ok" if c.ok else "FAIL") for c in r.checks}
        lines.append(
            f"{r.round:>5}  {r.status:<9}  " + "  ".join(f"{marks.get(n, '-'):<10}" for n in CHECKS)
        )
    lines += report.failures()
    lines += list(report.notes)
    lines.append("audit: " + ("OK, every round verifies" if report.ok else "FAILED"))
    return lines


def report_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2, default=lambda b: "0x" + b.hex())


__all__ = [
    "AuditReport",
    "Auditor",
    "BlobSource",
    "Check",
    "RoundVerdict",
    "audit_run",
    "audit_task",
    "format_report",
    "initial_model",
    "report_json",
    "run_auditor",
    "task_auditor",
    "task_shapes",
]
