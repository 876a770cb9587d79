"""``fedledger audit``: replay a task from its chain, fetch its blobs, recompute everything.

Anyone holding the chain (an RPC URL, or an embedded run's journal) can check that training
followed the task's rules. The task's configuration is on chain (the deployment's
``Configured`` event, checked against the contract's config digest); the initial model is
rebuilt from it (:func:`initial_model`); the blobs come from local stores, else from the
task's members over gRPC, else from an IPFS gateway (:mod:`fedledger.audit_sources`), each
checked against its CID. The audit trusts neither the nodes nor the RPC node:

Task-wide checks
    ``code``: the deployed runtime code is the Task artifact's; ``rules``: the contract's
    config digest, aggregation rule id and rule-parameter digest match the task configuration
    the audit was given.

Per round (each started round up to the task's last):
    ``signatures``
        every commit, reveal and attest transaction recovers to the member its event names;
    ``commitment``
        each reveal opens its member's commitment: keccak(digest, member, round, salt), with
        the salt read from the reveal's own calldata;
    ``blobs``
        each revealed update is found by its CID in the blob stores, its bytes hash to that
        CID, and the CID's digest is the revealed digest;
    ``quorum``
        the stake attesting the finalized pair reaches the quorum of the round's stake;
    ``aggregate``
        the included set and scores come from the ``distribute`` calldata (checked against the
        attested result digest), or, if nothing was distributed, are taken to be every
        revealed update; the task's rule is run on exactly those updates from the round's base
        (the previous finalized model): the model digest must be the finalized one;
    ``scores``
        the rule's score for each included update equals the attested one;
    ``rewards``
        each ``Rewarded`` amount is reward_per_round * score // total, and the distributed
        total their sum;
    ``skip``
        a skipped round was skipped only after its attest window closed.

A round whose every check passes is verified; the audit is ``ok`` only if every round (and
the task-wide checks) are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils.address import to_checksum_address

from fedledger.aggregation.round import aggregate_round
from fedledger.audit_sources import GatewayBlobs, MemberBlobs, RemoteBlobs
from fedledger.commit import cid_from_digest, digest_from_cid, encode
from fedledger.config import TaskConfig, load_config
from fedledger.errors import (
    BlobError,
    CodecError,
    ConfigError,
    FedledgerError,
    LedgerError,
)
from fedledger.gossip.blobs import BlobStore, FileBlobStore
from fedledger.gossip.identity import Identity
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import Chain, EmbeddedChain, RpcChain
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.records import (
    Attested,
    Committed,
    Distributed,
    Finalized,
    Joined,
    LedgerEvent,
    Revealed,
    Rewarded,
    RoundClock,
    RoundStarted,
    Skipped,
    Slashed,
)
from fedledger.ledger.reputation import round_reputation, uses_reputation
from fedledger.ledger.rules import (
    ACCESS_PUBLIC,
    RULE_IDS,
    commitment,
    quorum_stake,
    result_digest,
    rule_params_digest,
)
from fedledger.seeds import derive_seed
from fedledger.task import build_trainer, prepare_task

CHECKS = ("signatures", "commitment", "blobs", "quorum", "aggregate", "scores", "rewards", "skip")


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


@dataclass
class _Round:
    started: RoundStarted | None = None
    commits: dict[str, Committed] = field(default_factory=dict)
    reveals: dict[str, Revealed] = field(default_factory=dict)
    attests: dict[str, Attested] = field(default_factory=dict)
    finalized: Finalized | None = None
    skipped: Skipped | None = None
    rewarded: list[Rewarded] = field(default_factory=list)
    distributed: Distributed | None = None


def _group(events: Sequence[LedgerEvent]) -> dict[int, _Round]:
    rounds: dict[int, _Round] = {}
    for e in events:
        rnd = getattr(e, "round", None)
        if rnd is None:
            continue
        st = rounds.setdefault(rnd, _Round())
        if isinstance(e, RoundStarted):
            st.started = e
        elif isinstance(e, Committed):
            st.commits[e.member] = e
        elif isinstance(e, Revealed):
            st.reveals[e.member] = e
        elif isinstance(e, Attested):
            st.attests[e.member] = e
        elif isinstance(e, Finalized):
            st.finalized = e
        elif isinstance(e, Skipped):
            st.skipped = e
        elif isinstance(e, Rewarded):
            st.rewarded.append(e)
        elif isinstance(e, Distributed):
            st.distributed = e
    return rounds


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
    ) -> None:
        """``task``: the configuration to audit against (None: the one published on chain);
        ``initial``: the initial model blob (None: rebuilt from the configuration, else
        fetched by ``initial_cid`` if given); ``identity``: fetch the blobs no local store
        holds from the task's members, signing the requests with this key."""
        self.chain = chain
        self.ledger = ContractLedger(chain, task_address, None)
        self.from_block = from_block
        self.task = task if task is not None else self.ledger.task_config(from_block)
        self.blobs = blobs if blobs is not None else BlobSource([])
        self.identity = identity
        self.initial_cid = initial_cid
        self.initial = initial
        self._initial_why = ""
        self._slashed: dict[str, int] = {}
        self._events: list[LedgerEvent] = []
        self._notes: list[str] = []

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
            if isinstance(e, Joined):
                endpoints[e.member] = e.endpoint
        members = MemberBlobs(identity=self.identity,
                              task_id=self.ledger.rules().config_digest.hex(),
                              chain_id=self.chain.chain_id, contract=self.ledger.task_address,
                              members=endpoints)  # fmt: skip
        if self.initial is not None:
            members.max_bytes = len(self.initial)
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
        rules = self.ledger.rules()
        problems = []
        if rules.config_digest != self.task.digest():
            problems.append("config digest differs from the task configuration's")
        if rules.rule_id != RULE_IDS[self.task.aggregation.rule]:
            problems.append(f"rule id {rules.rule_id} is not {self.task.aggregation.rule}'s")
        if rules.rule_params_digest != rule_params_digest(self.task):
            problems.append("rule parameters digest differs")
        checks.append(Check(name="rules", ok=not problems, detail="; ".join(problems)))
        return checks

    def _history(self, rounds: dict[int, _Round]) -> Check:
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

    def _signatures(self, st: _Round) -> Check:
        bad = []
        named: list[tuple[str, str]] = [(e.tx, e.member) for e in st.commits.values()]
        named += [(e.tx, e.member) for e in st.reveals.values()]
        named += [(e.tx, e.member) for e in st.attests.values()]
        for tx, member in named:
            try:
                signer = Account.recover_transaction(self.chain.raw_transaction(tx))
            except (LedgerError, ValueError) as exc:
                bad.append(f"{tx}: cannot recover its signer ({exc})")
                continue
            if to_checksum_address(signer) != member:
                bad.append(f"{tx} was signed by {signer}, not {member}")
        return Check(name="signatures", ok=not bad, detail="; ".join(bad))

    def _commitments(self, rnd: int, st: _Round) -> Check:
        bad = []
        for member, r in sorted(st.reveals.items()):
            c = st.commits.get(member)
            if c is None:
                bad.append(f"{member} revealed without a commitment")
                continue
            name, args = self._decode(r.tx)
            salt = args.get("salt", b"")
            if name != "reveal" or commitment(r.update_digest, member, rnd, salt) != c.commitment:
                bad.append(f"{member}'s reveal does not open its commitment")
        return Check(name="commitment", ok=not bad, detail="; ".join(bad))

    def _fetch_updates(self, st: _Round) -> tuple[dict[str, bytes], Check]:
        found: dict[str, bytes] = {}
        bad = []
        for member, r in sorted(st.reveals.items()):
            data, why = self.blobs.fetch(r.cid)
            if data is None:
                bad.append(f"{member}'s update {r.cid} is {why}")
                continue
            if digest_from_cid(r.cid) != r.update_digest:
                bad.append(f"{member}'s CID {r.cid} does not carry the revealed digest")
                continue
            found[member] = data
        return found, Check(name="blobs", ok=not bad, detail="; ".join(bad))

    def _quorum(self, st: _Round) -> Check:
        f = st.finalized
        if f is None or st.started is None:
            return Check(name="quorum", ok=True, detail="not finalized")
        stake = sum(
            a.stake
            for a in st.attests.values()
            if (a.model_digest, a.result_digest) == (f.model_digest, f.result_digest)
        )
        need = quorum_stake(self.ledger.rules(), st.started.active_stake)
        ok = stake >= need
        return Check(name="quorum", ok=ok, detail=f"{stake} of {need} needed" if not ok else "")

    def _result(self, st: _Round) -> tuple[list[str], list[int] | None, Check | None]:
        """The included set and attested scores: from the distribute calldata if any."""
        f = st.finalized
        assert f is not None
        if st.distributed is None:
            return sorted(st.reveals, key=str.lower), None, None
        name, args = self._decode(st.distributed.tx)
        who: list[str] = [to_checksum_address(a) for a in args.get("contributors", [])]
        scores = [int(s) for s in args.get("scores", [])]
        if name != "distribute" or result_digest(who, scores) != f.result_digest:
            return (
                who,
                scores,
                Check(
                    name="rewards",
                    ok=False,
                    detail="the distribution does not match the attested result digest",
                ),
            )
        return who, scores, None

    def _aggregate(
        self, rnd: int, st: _Round, base: bytes | None, updates: dict[str, bytes]
    ) -> tuple[list[Check], bytes | None]:
        f = st.finalized
        assert f is not None
        checks: list[Check] = []
        who, claimed, problem = self._result(st)
        if problem is not None:
            checks.append(problem)
        if base is None:
            why = self._initial_why if rnd == 1 else "the previous model is unavailable"
            detail = f"cannot recompute: the base model is unknown: {why}"
            checks.append(Check(name="aggregate", ok=False, detail=detail))
            return checks, None
        missing = [w for w in who if w not in updates]
        if missing:
            checks.append(
                Check(
                    name="aggregate",
                    ok=False,
                    detail=f"cannot recompute: no verified blob for {missing}",
                )
            )
            return checks, None
        unknown = [w for w in who if w not in st.reveals]
        if unknown:
            checks.append(
                Check(
                    name="aggregate", ok=False, detail=f"included updates never revealed: {unknown}"
                )
            )
            return checks, None
        agg = self.task.aggregation
        reputation = (
            round_reputation(self._events, rnd, who) if uses_reputation(agg.params) else None
        )
        try:
            outcome = aggregate_round(
                agg,
                base=base,
                updates=[updates[w] for w in who],
                num_examples=[st.reveals[w].num_examples for w in who],
                reputation=reputation,
            )
        except CodecError as exc:
            checks.append(Check(name="aggregate", ok=False, detail=f"base model: {exc}"))
            return checks, None
        model, scores = outcome.model, list(outcome.scores)
        got = _sha(model)
        ok = got == f.model_digest
        checks.append(
            Check(
                name="aggregate",
                ok=ok,
                detail=""
                if ok
                else f"the rule gives model {got.hex()[:16]}, the quorum attested "
                f"{f.model_digest.hex()[:16]}",
            )
        )
        if claimed is not None:
            ok_scores = claimed == scores
            checks.append(
                Check(
                    name="scores",
                    ok=ok_scores,
                    detail=""
                    if ok_scores
                    else f"the rule scores {scores}, the quorum attested {claimed}",
                )
            )
            checks.append(self._rewards(st, who, claimed))
        elif result_digest(who, scores) != f.result_digest:
            checks.append(
                Check(
                    name="scores",
                    ok=False,
                    detail="the rule's scores do not hash to the attested result",
                )
            )
        return checks, model

    def _rewards(self, st: _Round, who: Sequence[str], scores: Sequence[int]) -> Check:
        rules = self.ledger.rules()
        total = sum(scores)
        expected = {
            w: rules.reward_per_round * s // total
            for w, s in zip(who, scores, strict=True)
            if total and rules.reward_per_round * s // total > 0
        }
        assert st.distributed is not None
        when = st.distributed.block
        slashed = {m for m, block in self._slashed.items() if block <= when}
        expected = {w: a for w, a in expected.items() if w not in slashed}
        paid = {e.contributor: e.amount for e in st.rewarded}
        bad = [
            f"{w}: paid {paid.get(w, 0)}, expected {amount}"
            for w, amount in expected.items()
            if paid.get(w, 0) != amount
        ]
        bad += [f"{w} was paid but contributed nothing" for w in paid if w not in expected]
        if st.distributed.total != sum(paid.values()):
            bad.append("the distributed total is not the sum of the rewards")
        return Check(name="rewards", ok=not bad, detail="; ".join(bad))

    def _skip(self, st: _Round) -> Check:
        assert st.skipped is not None
        assert st.started is not None
        clock = RoundClock.of(
            start=st.started.start,
            rules=self.ledger.rules(),
            reveal_at=_closing_time(st.commits.values(), st.started.members),
            attest_at=_closing_time(st.reveals.values(), len(st.commits)),
        )
        ok = st.skipped.time >= clock.attest_closes
        return Check(name="skip", ok=ok, detail="" if ok else "skipped before its window closed")

    def run(self) -> AuditReport:
        """Audit the task (see the module docstring); closes the remote blob sources."""
        try:
            return self._run()
        finally:
            self.blobs.close()

    def _prefetch(self, rounds: dict[int, _Round]) -> None:
        cids = []
        for rnd in sorted(r for r in rounds if 1 <= r <= self.task.rounds):
            st = rounds[rnd]
            cids += [r.cid for r in st.reveals.values()]
            if st.finalized is not None:
                cids.append(cid_from_digest(st.finalized.model_digest))
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

    def _run(self) -> AuditReport:
        events = self.ledger.events(self.from_block - 1 if self.from_block else -1)
        self._events = events
        rounds = _group(events)
        self._slashed = {e.member: e.block for e in events if isinstance(e, Slashed)}
        members = self._members()
        if members is not None:
            self.blobs.remotes.insert(0, members)
        base = self._initial_model()
        if members is not None and self.initial is not None:
            members.max_bytes = len(self.initial)
        self._prefetch(rounds)
        verdicts = []
        notes = self._notes
        for rnd in sorted(r for r in rounds if 1 <= r <= self.task.rounds):
            st = rounds[rnd]
            if st.started is None:
                continue
            checks = [self._signatures(st), self._commitments(rnd, st)]
            updates, blob_check = self._fetch_updates(st)
            checks.append(blob_check)
            if st.finalized is not None:
                checks.append(self._quorum(st))
                more, model = self._aggregate(rnd, st, base, updates)
                checks += more
                if st.distributed is None:
                    notes.append(f"round {rnd}: finalized, rewards not distributed")
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
                checks.append(self._skip(st))
                status = "skipped"
            else:
                status = "open"
            verdicts.append(RoundVerdict(round=rnd, status=status, checks=tuple(checks)))
        if any(not c.ok and c.name == "blobs" for v in verdicts for c in v.checks):
            self._access_note()
        if self.blobs.served:
            served = sorted(self.blobs.served.items())
            notes.append("blobs verified from: " + ", ".join(f"{n} {c}" for n, c in served))
        rules = self.ledger.rules()
        return AuditReport(
            task=self.ledger.task_address,
            chain_id=self.chain.chain_id,
            rule=rules.rule,
            task_checks=(*self._task_checks(), self._history(rounds)),
            rounds=tuple(verdicts),
            notes=tuple(notes),
        )


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _closing_time(events: Iterable[LedgerEvent], count: int) -> int | None:
    ordered = sorted(events, key=lambda e: (e.block, e.index))
    return ordered[count - 1].time if count and len(ordered) >= count else None


# -- entry points ---------------------------------------------------------------------------------


def run_blob_stores(run_dir: Path) -> list[BlobStore]:
    """The blob stores of every node of a ``fedledger run`` directory."""
    return [FileBlobStore(p, durable=False) for p in sorted(run_dir.glob("node-*/state/blobs"))]


def _stores(blob_dirs: Sequence[Path]) -> list[BlobStore]:
    stores: list[BlobStore] = []
    for d in blob_dirs:
        stores += run_blob_stores(d) or [FileBlobStore(d, durable=False)]
    return stores


def audit_run(
    run_dir: Path,
    *,
    chain: Chain | None = None,
    rpc: str | None = None,
    task_address: str | None = None,
    config: Path | None = None,
    blob_dirs: Sequence[Path] = (),
) -> AuditReport:
    """Audit a run directory (``ledger.json``, ``chain.jsonl`` for an embedded chain, the
    nodes' blobs; ``task.toml`` if present, else the configuration on chain), or a task on
    ``rpc`` at ``task_address`` with the blobs of ``blob_dirs`` (see :func:`audit_task` for
    an audit that fetches them from the members)."""
    from fedledger.rundir import JOURNAL_FILE, LedgerDeployment

    first = 0
    if rpc is None:
        deployment = LedgerDeployment.read(run_dir)
        task_address = task_address or deployment.task
        first = deployment.first_block
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
    ).run()


def audit_task(
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
) -> AuditReport:
    """An outsider's audit: the task at ``task_address`` on ``rpc`` (or ``chain``), with its
    configuration read from the chain (``config``, if given, must be the one on chain: the
    ``rules`` check), the initial model rebuilt from it, and the blobs from ``blob_dirs``,
    else the task's members (``members``; requests signed by ``identity``, a fresh random key
    by default: enough for a task whose access is public, else give a key the owner granted
    read access), else the IPFS ``gateway``."""
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
    ).run()


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
    "task_shapes",
]
