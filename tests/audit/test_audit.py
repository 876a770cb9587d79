"""The audit on scripted rounds (ledger v2): honest ones verify; each kind of tampering is
caught, named by round and check.

The rounds are played by hand on an embedded chain (real Task contract, real signed round
messages, real parameter blobs and the task's real aggregation rule), so that a test can make
a quorum collude, or damage a blob after the fact, exactly where it wants. In round ``r`` every
member signs ``Round(r, update, examples, model, result)``: its update and its attestation of
round ``r - 1``; one member submits the batch, with round ``r - 1``'s result (paid if the batch
finalizes it); round ``rounds + 1`` carries attestations only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from eth_account.signers.local import LocalAccount

from fedledger.aggregation import SCORE_TOTAL
from fedledger.aggregation.round import aggregate_round
from fedledger.audit import CHECKS, Auditor, AuditReport, BlobSource, format_report, initial_model
from fedledger.commit import decode, encode
from fedledger.config import AggregationConfig, DataConfig, LedgerConfig, TaskConfig
from fedledger.gossip.blobs import FileBlobStore
from fedledger.gossip.identity import Identity
from fedledger.learning.trainer import ModelSpec
from fedledger.ledger.artifacts import load_artifact
from fedledger.ledger.chain import EmbeddedChain
from fedledger.ledger.contract_ledger import _RULE_FIELDS, ContractLedger, deploy_task
from fedledger.ledger.messages import ZERO32, RoundMessage, SignedRound
from fedledger.ledger.records import (
    Distributed,
    Finalized,
    LedgerEvent,
    Skipped,
    Slashed,
    Submitted,
)
from fedledger.ledger.rules import result_digest, rules_for, sort_result

TASK = TaskConfig(
    name="audit",
    seed=5,
    rounds=3,
    nodes=4,
    data=DataConfig(dataset="digits", partition="iid"),
    model=ModelSpec(name="logreg"),
    aggregation=AggregationConfig(rule="fedavg"),
    ledger=LedgerConfig(quorum=0.67, min_stake=10**15, window=100, grace=10),
)  # fmt: skip
TASK5 = replace(TASK, nodes=5, ledger=replace(TASK.ledger, quorum=0.51))
"""Five members, three of which are a quorum: room for an honest member besides a victim."""
EXAMPLES = [50, 30, 20, 40, 25]
Pair = tuple[bytes, bytes]
Result = tuple[list[str], list[int]]


@pytest.fixture(scope="module")
def initial() -> bytes:
    return initial_model(TASK)


@dataclass
class World:
    chain: EmbeddedChain
    task: str
    members: list[ContractLedger]
    ids: list[Identity]
    store: FileBlobStore
    """Every blob, as its author (and the aggregating members) hold it."""
    peer: FileBlobStore
    """What another member fetched: every update but a withheld one."""
    base: bytes
    rng: np.random.Generator
    updates: dict[int, dict[str, str]] = field(default_factory=dict)
    attest: dict[str, Pair] = field(default_factory=dict)
    """Each member's attestation of the last round played (its next message carries it)."""
    paid: Result = field(default_factory=lambda: ([], []))
    """The result the next batch pays (the last round's, as the submitter computed it)."""
    active: list[int] = field(default_factory=list)

    def auditor(self, initial: bytes, task: TaskConfig = TASK) -> Auditor:
        return Auditor(chain=self.chain, task_address=self.task, task=task,
                       blobs=BlobSource([self.store, self.peer]), initial=initial)  # fmt: skip

    def sign(self, i: int, message: RoundMessage) -> SignedRound:
        return message.sign(self.ids[i], self.chain.chain_id, self.task)

    def message(self, i: int, rnd: int, blob: bytes | None) -> SignedRound:
        model, result = self.attest.get(self.members[i].account, (ZERO32, ZERO32))
        update = ZERO32 if blob is None else hashlib.sha256(blob).digest()
        examples = 0 if blob is None else EXAMPLES[i]
        return self.sign(i, RoundMessage(round=rnd, update=update, examples=examples,
                                         model=model, result=result))  # fmt: skip

    def submit(self, rnd: int, messages: Sequence[SignedRound]) -> None:
        who, scores = self.paid
        self.members[self.active[0]].submit(rnd, messages, who, scores)

    def play(
        self,
        rnd: int,
        *,
        collude: str | None = None,
        attesters: int = 3,
        finalized: bool = True,
    ) -> None:
        """One round: every active member trains (noise around the base), signs its update and
        its attestation of the previous round; the batch goes in (which closes the round, every
        member's message in). Then ``attesters`` of them attest this round's result (the quorum
        with 3 of 4), the others nothing. ``collude``: ``"model"`` (the quorum attests another
        model), ``"scores"`` (the right model, every reward to one member) or ``"exclude"``
        (the quorum aggregates without the last member's update); ``"replay"`` (the last
        member resends its previous update, which honest nodes leave out) or
        ``"replay_included"`` (and the quorum includes it); ``"withheld"`` (the last member
        serves its update to nobody, and the others leave it out). ``finalized``: whether the
        round will be (else the next round's base stays)."""
        base = decode(self.base)
        blobs: dict[int, bytes] = {}
        for i in self.active:
            params = [p + self.rng.normal(0, 0.05, p.shape).astype(p.dtype) for p in base]
            blobs[i] = encode(params)
        victim = self.active[-1]
        if collude in ("replay", "replay_included"):  # the victim resends its last update
            blobs[victim] = self.store.get(self.updates[rnd - 1][self.members[victim].account])
        self.updates[rnd] = {self.members[i].account: self.store.put(b) for i, b in blobs.items()}
        for i, b in blobs.items():  # the other members fetched it (unless it is withheld)
            if not (collude == "withheld" and i == victim):
                self.peer.put(b)
        self.submit(rnd, [self.message(i, rnd, blobs[i]) for i in self.active])
        included = sorted(self.active, key=lambda i: self.members[i].account.lower())
        if collude in ("exclude", "replay", "withheld"):
            included = [i for i in included if i != victim]
        result = aggregate_round(
            TASK.aggregation,
            base=self.base,
            updates=[blobs[i] for i in included],
            num_examples=[EXAMPLES[i] for i in included],
        )
        model = result.model
        who, scores = sort_result([self.members[i].account for i in included], list(result.scores))
        if collude == "model":
            model = blobs[self.active[0]]  # one member's update, passed off as the aggregate
        elif collude == "scores":
            scores = [SCORE_TOTAL] + [0] * (len(who) - 1)
        self.store.put(model)
        pair = (hashlib.sha256(model).digest(), result_digest(who, scores))
        self.attest = {}
        for i in self.active[:attesters]:
            self.attest[self.members[i].account] = pair
        if collude == "exclude":  # the others (the victim too) attest what they computed
            honest = aggregate_round(TASK.aggregation, base=self.base,
                                     updates=[blobs[i] for i in self.active],
                                     num_examples=[EXAMPLES[i] for i in self.active])  # fmt: skip
            h_who, h_scores = sort_result([self.members[i].account for i in self.active],
                                          list(honest.scores))  # fmt: skip
            h_pair = (hashlib.sha256(honest.model).digest(), result_digest(h_who, h_scores))
            for i in self.active[attesters:]:
                self.attest[self.members[i].account] = h_pair
        self.paid = (who, scores)
        if finalized:
            self.base = model

    def finish(self, rnd: int) -> None:
        """Round ``rounds + 1``: attestations only (they finalize the last round)."""
        self.submit(rnd, [self.message(i, rnd, None) for i in self.active])


def make_world(
    initial: bytes, tmp_path: Path, *, max_rounds: int | None = None, config: TaskConfig = TASK
) -> World:
    n = config.nodes
    chain = EmbeddedChain(accounts=n + 1)
    accounts: list[LocalAccount] = chain.accounts()
    if max_rounds is None:
        task, _ = deploy_task(chain, config, owner=accounts[0])
    else:
        task = deploy_with_max_rounds(chain, accounts[0], max_rounds)
    members = [ContractLedger(chain, task, a) for a in accounts[1 : n + 1]]
    for m in members:
        m.join(f"127.0.0.1:{m.account[-4:]}", config.ledger.min_stake)
    ContractLedger(chain, task, accounts[0]).start()
    ids = [Identity.from_hex(a.key.hex()) for a in accounts[1 : n + 1]]
    return World(chain=chain, task=task, members=members, ids=ids,
                 store=FileBlobStore(tmp_path / "blobs"),
                 peer=FileBlobStore(tmp_path / "peer"), base=initial,
                 rng=np.random.default_rng(0), active=list(range(n)))  # fmt: skip


def deploy_with_max_rounds(chain: EmbeddedChain, owner: LocalAccount, max_rounds: int) -> str:
    """A Task with TASK's configuration document and digest, but another max_rounds."""
    token_art, task_art = load_artifact("RewardToken"), load_artifact("Task")
    token = chain.deploy(token_art["abi"], token_art["bytecode"], "fedledger reward", "FLR", 18,
                         "fedledger reward", "1", sender=owner)  # fmt: skip
    rules = replace(rules_for(TASK, token=token.address, treasury=owner.address),
                    max_rounds=max_rounds)  # fmt: skip
    args = [getattr(rules, name) for name in _RULE_FIELDS] + [TASK.document()]
    contract = chain.deploy(task_art["abi"], task_art["bytecode"], *args, sender=owner)
    chain.transact(token.functions.set_minter(contract.address, True), sender=owner)
    return str(contract.address)


@pytest.fixture
def world(initial: bytes, tmp_path: Path) -> World:
    return make_world(initial, tmp_path)


def play_all(world: World, collude: Mapping[int, str] | None = None) -> None:
    """Rounds 1..3 (``collude``: round -> how its quorum colludes), then round 4's
    attestations."""
    for rnd in (1, 2, 3):
        world.play(rnd, collude=(collude or {}).get(rnd))
    world.finish(4)


def bad_checks(report: AuditReport, rnd: int) -> dict[str, str]:
    verdict = next(r for r in report.rounds if r.round == rnd)
    return {c.name: c.detail for c in verdict.failures}


def check(report: AuditReport, rnd: int, name: str) -> bool:
    verdict = next(r for r in report.rounds if r.round == rnd)
    return next(c for c in verdict.checks if c.name == name).ok


def forge(auditor: Auditor, edit: Callable[[list[LedgerEvent]], list[LedgerEvent]]) -> None:
    """An RPC node that lies about the task's events."""
    real = auditor.ledger.events

    def events(after: int, until: int | None = None) -> list[LedgerEvent]:
        return edit(list(real(after, until)))

    auditor.ledger.events = events  # type: ignore[method-assign]


# -- honest ---------------------------------------------------------------------------------------


def test_honest_rounds_verify(world: World, initial: bytes) -> None:
    play_all(world)
    report = world.auditor(initial).run()
    assert report.ok, report.failures()
    assert [r.round for r in report.rounds] == [1, 2, 3]
    assert all(r.status == "finalized" for r in report.rounds)
    for verdict in report.rounds:
        assert {c.name for c in verdict.checks} == set(CHECKS)
    assert {c.name for c in report.task_checks} == {"code", "rules", "history", "slashing"}
    assert report.to_dict()["ok"] is True
    assert format_report(report)[-1] == "audit: OK, every round verifies"


def test_the_last_round_is_open_until_round_rounds_plus_one_attests_it(
    world: World, initial: bytes
) -> None:
    for rnd in (1, 2, 3):
        world.play(rnd)
    report = world.auditor(initial).run()
    assert report.ok, report.failures()
    assert [r.status for r in report.rounds] == ["finalized", "finalized", "open"]


def test_an_audit_of_the_wrong_block_range_fails_instead_of_verifying_nothing(
    world: World, initial: bytes
) -> None:
    # With the events read from a block past the task's history, no round is seen: the
    # history check fails rather than the audit verifying nothing.
    for rnd in (1, 2, 3):
        world.play(rnd)
    auditor = world.auditor(initial)
    auditor.from_block = world.chain.block_number() + 1000
    report = auditor.run()
    assert not report.ok
    history = next(c for c in report.task_checks if c.name == "history")
    assert not history.ok
    assert "[1, 2, 3]" in history.detail
    assert world.auditor(initial).run().ok


# -- a colluding quorum ---------------------------------------------------------------------------


def test_a_quorum_that_leaves_out_an_update_another_member_had_fails_exclusion(
    initial: bytes, tmp_path: Path
) -> None:
    """Three of five collude and leave the victim out; the fifth member, honest, had the
    victim's update and attested the result with it: the evidence the audit needs."""
    world = make_world(initial, tmp_path, config=TASK5)
    victim = world.members[world.active[-1]].account
    witness = world.members[world.active[-2]].account
    play_all(world, {2: "exclude"})

    report = world.auditor(initial, TASK5).run()

    assert not report.ok
    assert [r.ok for r in report.rounds] == [True, False, True]
    bad = bad_checks(report, 2)
    assert set(bad) == {"exclusion"}
    assert f"excluded {victim} ({witness} attested the result with it)" in bad["exclusion"]
    # The model is the rule's on the updates the quorum kept: only the exclusion is wrong.
    assert check(report, 2, "aggregate")
    assert check(report, 2, "quorum")
    assert any(line.startswith("round 2: exclusion:") for line in report.failures())


def test_an_update_only_its_author_vouches_for_is_no_evidence_of_exclusion(
    world: World, initial: bytes
) -> None:
    """Of four, the three others leave the victim out and only the victim attests the result
    with its update: as a withholder would (it has its own blob). The audit notes it."""
    victim = world.members[world.active[-1]].account
    play_all(world, {2: "exclude"})

    report = world.auditor(initial).run()

    assert report.ok, report.failures()
    assert any(victim in note and "no other member" in note for note in report.notes)


def test_a_withheld_update_left_out_verifies_with_a_note(world: World, initial: bytes) -> None:
    """Only its author holds the blob (the auditor's copy of the run comes from the author's
    own disk): leaving it out is what honest members do."""
    play_all(world, {2: "withheld"})

    report = world.auditor(initial).run()

    assert report.ok, report.failures()
    assert any("withheld" in note for note in report.notes)


def test_a_replayed_update_left_out_verifies_with_a_note(world: World, initial: bytes) -> None:
    """An update whose digest was submitted in an earlier round is no input (nodes and the
    audit apply round_inputs): leaving it out is right."""
    play_all(world, {2: "replay"})

    report = world.auditor(initial).run()

    assert report.ok, report.failures()
    assert any("submitted before" in note for note in report.notes)


def test_a_quorum_that_includes_a_replayed_update_fails(world: World, initial: bytes) -> None:
    play_all(world, {2: "replay_included"})

    report = world.auditor(initial).run()

    assert not report.ok
    assert "submitted before" in bad_checks(report, 2)["aggregate"]


def test_a_wrong_aggregate_attested_by_a_colluding_quorum_fails(
    world: World, initial: bytes
) -> None:
    play_all(world, {2: "model"})

    report = world.auditor(initial).run()

    assert not report.ok
    assert [r.ok for r in report.rounds] == [True, False, True]
    bad = bad_checks(report, 2)
    assert set(bad) == {"aggregate"}
    assert "the quorum attested" in bad["aggregate"]
    # The chain itself accepted it: the quorum is real, only the recomputation disagrees.
    assert check(report, 2, "quorum")


def test_rewards_that_do_not_match_the_scores_fail(world: World, initial: bytes) -> None:
    play_all(world, {1: "scores"})

    report = world.auditor(initial).run()

    assert not report.ok
    bad = bad_checks(report, 1)
    assert set(bad) == {"scores"}
    assert str(SCORE_TOTAL) in bad["scores"]
    # The model is right, and the distribution pays what its (wrong) scores say.
    assert check(report, 1, "aggregate")
    assert check(report, 1, "rewards")


# -- blobs ----------------------------------------------------------------------------------------


def test_an_altered_blob_fails_its_round(world: World, initial: bytes) -> None:
    play_all(world)
    victim = world.members[2].account
    for store in (world.store, world.peer):  # every copy
        path = store._path(world.updates[2][victim])
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # one flipped bit in the last parameter value
        path.write_bytes(bytes(data))

    report = world.auditor(initial).run()

    assert not report.ok
    assert report.rounds[0].ok  # round 1 is untouched
    bad = bad_checks(report, 2)
    assert "altered" in bad["blobs"]
    assert victim in bad["blobs"]
    assert "cannot recompute" in bad["aggregate"]
    assert any(line.startswith("round 2: blobs:") for line in report.failures())


def test_a_missing_blob_fails_its_round(world: World, initial: bytes) -> None:
    play_all(world)
    victim = world.members[0].account
    for store in (world.store, world.peer):
        store._path(world.updates[1][victim]).unlink()

    report = world.auditor(initial).run()

    assert not report.ok
    bad = bad_checks(report, 1)
    assert "missing" in bad["blobs"]
    assert victim in bad["blobs"]


# -- failed rounds --------------------------------------------------------------------------------


def test_a_round_without_a_quorum_fails_and_verifies(world: World, initial: bytes) -> None:
    world.play(1)
    world.play(2, attesters=2, finalized=False)  # 2 of 4 stakes attest: below the quorum
    world.play(3)  # from round 1's model, the last finalized
    world.finish(4)  # round 4 opens: round 2 is skipped

    report = world.auditor(initial).run()

    assert report.ok, report.failures()
    assert [r.status for r in report.rounds] == ["finalized", "skipped", "finalized"]
    assert check(report, 2, "failure")
    assert any(isinstance(e, Skipped) and e.round == 2 for e in world.members[0].events(-1))


def test_a_skip_before_the_attestations_closed_fails(world: World, initial: bytes) -> None:
    world.play(1)
    world.play(2, attesters=2, finalized=False)
    world.play(3)
    world.finish(4)
    auditor = world.auditor(initial)

    def early(events: list[LedgerEvent]) -> list[LedgerEvent]:
        return [replace(e, time=e.time - 1000) if isinstance(e, Skipped) else e for e in events]

    forge(auditor, early)
    report = auditor.run()
    assert set(bad_checks(report, 2)) == {"failure"}


def test_a_finalized_round_that_is_also_skipped_fails(world: World, initial: bytes) -> None:
    play_all(world)
    auditor = world.auditor(initial)

    def skip_one(events: list[LedgerEvent]) -> list[LedgerEvent]:
        f = next(e for e in events if isinstance(e, Finalized) and e.round == 1)
        return [*events, Skipped(block=f.block, time=f.time, tx=f.tx, index=f.index + 100,
                                 round=1)]  # fmt: skip

    forge(auditor, skip_one)
    report = auditor.run()
    assert "finalized, and skipped too" in bad_checks(report, 1)["failure"]


# -- rules and phases -----------------------------------------------------------------------------


def test_a_contract_whose_max_rounds_is_not_the_tasks_fails(initial: bytes, tmp_path: Path) -> None:
    world = make_world(initial, tmp_path, max_rounds=TASK.rounds + 1)
    play_all(world)

    report = world.auditor(initial).run()

    assert not report.ok
    assert next(c for c in report.task_checks if c.name == "rules").ok  # same configuration
    for rnd in (1, 2, 3):
        assert "max_rounds is 4" in bad_checks(report, rnd)["phases"]


def test_an_audit_against_another_configuration_fails_the_rules_check(
    world: World, initial: bytes
) -> None:
    world.play(1)
    other = replace(TASK, seed=TASK.seed + 1)
    report = world.auditor(initial, task=other).run()
    assert not report.ok
    rules = next(c for c in report.task_checks if c.name == "rules")
    assert "config digest" in rules.detail


def test_a_message_after_its_round_closed_fails_phases(world: World, initial: bytes) -> None:
    play_all(world)
    auditor = world.auditor(initial)
    late = world.members[1].account

    def delay(events: list[LedgerEvent]) -> list[LedgerEvent]:
        return [replace(e, time=e.time + TASK.ledger.window)
                if isinstance(e, Submitted) and e.round == 2 and e.member == late else e
                for e in events]  # fmt: skip

    forge(auditor, delay)
    report = auditor.run()
    bad = bad_checks(report, 2)
    assert set(bad) == {"phases"}
    assert late in bad["phases"]
    assert "after the round closed" in bad["phases"]


# -- what the RPC node says -----------------------------------------------------------------------


def test_a_forged_message_fails_signatures(world: World, initial: bytes) -> None:
    play_all(world)
    auditor = world.auditor(initial)
    victim = world.members[3].account

    def alter(events: list[LedgerEvent]) -> list[LedgerEvent]:
        return [replace(e, r=e.r ^ 1)
                if isinstance(e, Submitted) and e.round == 3 and e.member == victim else e
                for e in events]  # fmt: skip

    forge(auditor, alter)
    report = auditor.run()
    bad = bad_checks(report, 3)
    assert set(bad) == {"signatures"}
    assert victim in bad["signatures"]


def test_a_forged_attestation_of_the_last_round_fails_signatures(
    world: World, initial: bytes
) -> None:
    play_all(world)
    auditor = world.auditor(initial)

    def alter(events: list[LedgerEvent]) -> list[LedgerEvent]:
        return [replace(e, vs=e.vs ^ 1) if isinstance(e, Submitted) and e.round == 4 else e
                for e in events]  # fmt: skip

    forge(auditor, alter)
    report = auditor.run()
    assert "signatures" in bad_checks(report, 3)


def test_a_forged_distribution_fails_rewards_and_the_cap(world: World, initial: bytes) -> None:
    play_all(world)
    auditor = world.auditor(initial)
    cap = TASK.rounds * TASK.ledger.reward_wei

    def inflate(events: list[LedgerEvent]) -> list[LedgerEvent]:
        return [replace(e, total=cap + 1) if isinstance(e, Distributed) and e.round == 2 else e
                for e in events]  # fmt: skip

    forge(auditor, inflate)
    report = auditor.run()
    assert report.rounds[0].ok
    bad = bad_checks(report, 2)
    assert set(bad) == {"rewards"}
    assert "minted above the cap" in bad["rewards"]
    assert "minted above the cap" in bad_checks(report, 3)["rewards"]


def test_too_little_attesting_stake_fails_the_quorum(world: World, initial: bytes) -> None:
    play_all(world)
    auditor = world.auditor(initial)

    def drop(events: list[LedgerEvent]) -> list[LedgerEvent]:
        f = next(e for e in events if isinstance(e, Finalized) and e.round == 2)
        out, kept = [], 0
        for e in events:
            if isinstance(e, Submitted) and e.round == 3 and (e.model, e.result) == (
                f.model_digest, f.result_digest
            ):  # fmt: skip
                kept += 1
                if kept > 2:
                    continue
            out.append(e)
        return out

    forge(auditor, drop)
    report = auditor.run()
    assert "quorum" in bad_checks(report, 2)


# -- slashing -------------------------------------------------------------------------------------


def test_an_equivocation_slashed_with_evidence_verifies(world: World, initial: bytes) -> None:
    world.play(1)
    cheat = 3
    first = world.message(cheat, 1, None)
    second = world.sign(cheat, RoundMessage(round=1, update=b"\x01" * 32, examples=1))
    world.members[0].slash(1, first, second)
    world.active = [0, 1, 2]
    world.play(2)  # pays round 1: nothing to the slashed contributor
    world.play(3)
    world.finish(4)

    events = world.members[0].events(-1)
    assert any(isinstance(e, Slashed) for e in events)
    paid = next(e for e in events if isinstance(e, Distributed) and e.round == 1)
    assert world.members[cheat].account in paid.contributors
    report = world.auditor(initial).run()
    assert report.ok, report.failures()
    assert next(c for c in report.task_checks if c.name == "slashing").ok


def test_a_slash_without_evidence_fails(world: World, initial: bytes) -> None:
    play_all(world)
    auditor = world.auditor(initial)
    victim = world.members[2].account

    def slash(events: list[LedgerEvent]) -> list[LedgerEvent]:
        d = next(e for e in events if isinstance(e, Distributed))
        return [*events, Slashed(block=d.block, time=d.time, tx=d.tx, index=d.index + 100,
                                 member=victim, amount=TASK.ledger.min_stake,
                                 submitter=victim, share=0)]  # fmt: skip

    forge(auditor, slash)
    report = auditor.run()
    slashing = next(c for c in report.task_checks if c.name == "slashing")
    assert not slashing.ok
    assert f"{victim} slashed without evidence" in slashing.detail
