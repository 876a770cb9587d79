"""What each explorer page shows, computed from a :class:`~fedledger.explorer.data.Snapshot`.

Pure functions: no I/O, no web framework; the templates only lay these records out, and the
tests check them without a browser. Chain times are block timestamps; the pages show them
relative to round 1's start (``t``, seconds). Token amounts are exact (18 decimals).

Where a round's record comes from: the chain's events when the snapshot has them (a finished
embedded run, a JSON-RPC chain), else the nodes' own records (``rounds.jsonl``: an embedded
run in progress, or a run without a ledger).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from fedledger.cli.task import ether
from fedledger.commit import cid_from_digest
from fedledger.config import ACCESS_POLICIES, TaskConfig
from fedledger.explorer.data import Snapshot
from fedledger.ledger.governance import STATE_NAMES
from fedledger.ledger.messages import ZERO32
from fedledger.ledger.records import (
    Distributed,
    RoundEvents,
    Slashed,
    Submitted,
    events_by_round,
    round_inputs,
)
from fedledger.ledger.rules import quorum_stake

__all__ = [
    "AccuracyView",
    "Contribution",
    "Field",
    "MemberRow",
    "NetworkView",
    "RewardsView",
    "RoundRow",
    "RoundView",
    "TaskView",
    "accuracy_view",
    "network_view",
    "rewards_view",
    "round_view",
    "task_view",
    "timeline",
]


def _hex(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def short(address: str) -> str:
    """``0x1234…abcd``."""
    return f"{address[:6]}…{address[-4:]}" if len(address) > 12 else address


@dataclass(frozen=True, kw_only=True)
class Field:
    label: str
    value: str


@dataclass(frozen=True, kw_only=True)
class MemberRow:
    address: str
    index: int | None
    """The node's index in a run directory (None: unknown, from the chain alone)."""
    status: str
    stake: int
    """Wei."""
    endpoint: str
    first_round: int
    earned: int
    claimed: int
    tokens: int
    updates: int
    selections: int

    @property
    def label(self) -> str:
        return f"node {self.index}" if self.index is not None else short(self.address)


@dataclass(frozen=True, kw_only=True)
class ProposalRow:
    id: str
    proposer: str
    description: str
    state: str
    for_votes: str
    against_votes: str
    abstain_votes: str
    quorum: str


@dataclass(frozen=True, kw_only=True)
class GovernanceView:
    governor: str | None
    timelock: str
    changes: tuple[Field, ...]
    """Executed configuration changes: the first round, what changed."""
    invalid: tuple[Field, ...]
    proposals: tuple[ProposalRow, ...]


@dataclass(frozen=True, kw_only=True)
class TaskView:
    title: str
    source: str
    address: str | None
    chain_id: int | None
    current_round: int
    phase: str
    in_progress: bool
    rules: tuple[Field, ...]
    """The task's rules as the contract holds them, and the configuration's."""
    members: tuple[MemberRow, ...]
    governance: GovernanceView | None
    document: str
    """The configuration document (pretty JSON), '' if unknown."""
    audited: bool | None
    """The audit recorded at the end of the run (audit.json): passed, failed, or None."""
    notes: tuple[str, ...]


def _members(s: Snapshot) -> tuple[MemberRow, ...]:
    """Every member, in node order where the indices are known."""
    rows = _member_rows(s)
    return tuple(sorted(rows, key=lambda m: (m.index is None, m.index or 0)))


def _member_rows(s: Snapshot) -> tuple[MemberRow, ...]:
    index = s.address_index()
    if s.status is not None:
        return tuple(
            MemberRow(
                address=m.address,
                index=index.get(m.address.lower()),
                status=m.status,
                stake=m.stake,
                endpoint=m.endpoint,
                first_round=m.first_round,
                earned=m.earned,
                claimed=m.claimed,
                tokens=m.tokens,
                updates=m.updates,
                selections=m.selections,
            )
            for m in s.status.members
        )
    rows = []
    for n in s.nodes:
        updates = len({r.get("round") for r in n.records})
        rows.append(
            MemberRow(
                address=n.address,
                index=n.index,
                status="running" if s.in_progress else "done",
                stake=0,
                endpoint="",
                first_round=1,
                earned=0,
                claimed=0,
                tokens=0,
                updates=updates,
                selections=0,
            )
        )
    return tuple(rows)


def _config_fields(cfg: TaskConfig) -> list[Field]:
    agg = cfg.aggregation
    params = ", ".join(f"{k}={v}" for k, v in sorted(agg.params.items()))
    out = [
        Field(label="task", value=f"{cfg.name}" + (f" ({cfg.purpose})" if cfg.purpose else "")),
        Field(label="rounds, nodes", value=f"{cfg.rounds} rounds, {cfg.nodes} nodes"),
        Field(label="data", value=f"{cfg.data.dataset}, partition {cfg.data.partition}"),
        Field(label="model", value=cfg.model.name),
        Field(
            label="aggregation", value=f"{agg.rule}, f={agg.f}" + (f", {params}" if params else "")
        ),
        Field(label="incentives", value=f"scores by {cfg.incentives.scores}"),
    ]
    plan = cfg.privacy_plan()
    if cfg.privacy is not None:
        privacy = f"clip {cfg.privacy.clip:g}"
        if plan is not None:
            privacy += f", noise multiplier {plan.noise_multiplier:.3g}, budget {plan.budget:g}"
        if cfg.privacy.secure_aggregation:
            privacy += ", secure aggregation"
        out.append(Field(label="privacy", value=privacy))
    return out


def task_view(s: Snapshot) -> TaskView:
    """The task: its rules, members, stake, quorum, access policy and governance."""
    rules: list[Field] = []
    cfg = s.config
    if s.rules is not None and s.status is not None:
        r = s.rules
        access = (
            ACCESS_POLICIES[r.access_policy]
            if 0 <= r.access_policy < len(ACCESS_POLICIES)
            else str(r.access_policy)
        )
        rules += [
            Field(label="aggregation rule", value=r.rule),
            Field(label="quorum", value=f"{r.quorum_bps / 100:g} % of the round's stake"),
            Field(label="minimum stake", value=f"{ether(r.min_stake)} ETH"),
            Field(label="message window", value=f"{r.window} s (grace {r.grace} s after a quorum)"),
            Field(label="reward per round", value=f"{ether(r.reward_per_round)} tokens"),
            Field(label="max rounds", value=str(r.max_rounds)),
            Field(label="max participants", value=str(r.max_participants)),
            Field(label="admission", value="allowlist" if r.allowlist_only else "open"),
            Field(label="access policy", value=access),
            Field(label="leave cooldown", value=f"{r.cooldown} s"),
            Field(label="owner", value=s.status.owner),
            Field(label="reward token", value=s.status.token),
            Field(label="treasury", value=r.treasury),
            Field(label="config digest", value=_hex(r.config_digest)),
            Field(label="total staked", value=f"{ether(s.status.total_staked)} ETH"),
            Field(label="total slashed", value=f"{ether(s.status.total_slashed)} ETH"),
            Field(label="rewards credited", value=f"{ether(s.status.total_earned)} tokens"),
        ]
    if cfg is not None:
        rules += _config_fields(cfg)
        if s.rules is None:
            rules += [
                Field(label="quorum", value=f"{cfg.ledger.quorum_bps / 100:g} % of stake"),
                Field(label="access policy", value=cfg.ledger.access),
            ]
    governance = None
    if s.rules is not None and s.rules.governed and s.rules_in_force is not None:
        history = s.rules_in_force
        changes = tuple(
            Field(
                label=f"from round {first}",
                value=f"rule {c.aggregation.rule}, "
                f"quorum {c.ledger.quorum:g}, reward {c.ledger.reward_per_round:g}, "
                f"access {c.ledger.access}",
            )
            for first, c in history.changes
        )
        invalid = tuple(
            Field(label=f"from round {first}", value=why) for first, why in history.invalid
        )
        proposals = tuple(
            ProposalRow(
                id=f"{p.id:x}"[:12],
                proposer=p.proposer,
                description=p.description,
                state=STATE_NAMES.get(p.state, str(p.state)),
                for_votes=ether(p.for_votes),
                against_votes=ether(p.against_votes),
                abstain_votes=ether(p.abstain_votes),
                quorum=ether(p.quorum),
            )
            for p in s.proposals
        )
        governance = GovernanceView(
            governor=s.governor,
            timelock=s.rules.governor,
            changes=changes,
            invalid=invalid,
            proposals=proposals,
        )
    document = ""
    if cfg is not None:
        document = json.dumps(json.loads(cfg.document()), indent=2, sort_keys=True)
    audited = None
    if s.audit is not None and isinstance(s.audit.get("ok"), bool):
        audited = bool(s.audit["ok"])
    status = s.status
    current = status.current_round if status is not None else _node_rounds_done(s)
    phase = status.phase if status is not None else ("running" if s.in_progress else "done")
    return TaskView(
        title=cfg.name if cfg is not None else "task",
        source=s.source,
        address=status.task if status is not None else None,
        chain_id=status.chain_id if status is not None else None,
        current_round=current,
        phase=phase,
        in_progress=s.in_progress,
        rules=tuple(rules),
        members=_members(s),
        governance=governance,
        document=document,
        audited=audited,
        notes=s.notes,
    )


def _node_rounds_done(s: Snapshot) -> int:
    return max((int(r.get("round", 0)) for n in s.nodes for r in n.records), default=0)


# -- rounds ----------------------------------------------------------------------------------


def _start_time(rounds: dict[int, RoundEvents]) -> int | None:
    """When the first round started (chain time)."""
    starts = [st.started.start for st in rounds.values() if st.started is not None]
    return min(starts) if starts else None


def _first_messages(st: RoundEvents) -> dict[str, Submitted]:
    """Each member's first message of the round (the contract takes one per member)."""
    out: dict[str, Submitted] = {}
    for e in st.submitted:
        out.setdefault(e.member, e)
    return out


@dataclass(frozen=True, kw_only=True)
class RoundRow:
    """One round on the timeline."""

    round: int
    outcome: str
    """``finalized``, ``failed``, ``open``, ... (the chain's), or the nodes' view."""
    started: float | None
    """Seconds since round 1 started (chain time), or since the run's first record."""
    quorate: float | None
    closed: float | None
    attested: float | None
    """When the last attestation of the finalized pair landed (round r + 1's messages)."""
    finalized: float | None
    distributed: float | None
    messages: int
    updates: int
    attesters: int
    stake: int
    """Stake that attested the finalized pair (wei)."""
    quorum: int
    """Stake the quorum needed (wei)."""
    active_stake: int
    model_cid: str | None
    acc_mean: float | None
    reward: int | None
    source: str
    """``chain`` or ``nodes``."""
    auditable: bool = False
    """A round of the task on chain (not the attestations-only round after the last)."""


def _acc_by_round(s: Snapshot) -> dict[int, float]:
    if s.report is not None:
        out = {}
        for r in s.report.get("rounds", []):
            if isinstance(r, dict) and isinstance(r.get("acc_mean"), int | float):
                out[int(r["round"])] = float(r["acc_mean"])
        if out:
            return out
    per: dict[int, dict[int, float]] = {}
    for n in s.nodes:
        for rec in n.records:
            if isinstance(rec.get("acc"), int | float):
                per.setdefault(int(rec["round"]), {})[n.index] = float(rec["acc"])
    return {r: sum(v.values()) / len(v) for r, v in per.items()}


def _quorum_need(s: Snapshot, rnd: int, stake: int) -> int:
    if s.rules is None:
        return 0
    bps = (
        s.rules_in_force.at(rnd).ledger.quorum_bps
        if s.rules_in_force is not None
        else s.rules.quorum_bps
    )
    return quorum_stake(dataclasses.replace(s.rules, quorum_bps=bps), stake)


def timeline(s: Snapshot) -> list[RoundRow]:
    """Every round so far, oldest first."""
    acc = _acc_by_round(s)
    if s.status is None:
        return _node_timeline(s, acc)
    rounds = events_by_round(s.events)
    t0 = _start_time(rounds)

    def rel(t: int | None) -> float | None:
        return None if t is None or t0 is None else float(t - t0)

    rows = []
    for rs in s.status.rounds:
        rnd = rs.round
        st = rounds.get(rnd, RoundEvents())
        nxt = rounds.get(rnd + 1, RoundEvents())
        attested = None
        stake = 0
        if st.finalized is not None:
            pair = (st.finalized.model_digest, st.finalized.result_digest)
            times = [e.time for e in nxt.submitted if (e.model, e.result) == pair]
            attested = max(times) if times else None
            stake = st.finalized.stake
        active = st.started.active_stake if st.started is not None else 0
        # The contract logs Quorate only when a quorum opens a grace period; a batch that brings
        # every message in closes the round and reaches the quorum at once.
        quorate = st.quorate or st.closed
        outcome = rs.outcome
        if s.config is not None and rnd > s.config.rounds:
            outcome = f"attestations of round {rnd - 1}"
        rows.append(
            RoundRow(
                round=rnd,
                outcome=outcome,
                started=rel(st.started.start if st.started else None),
                quorate=rel(quorate.time if quorate else None),
                closed=rel(st.closed.time if st.closed else None),
                attested=rel(attested),
                finalized=rel(st.finalized.time if st.finalized else None),
                distributed=rel(st.distributed.time if st.distributed else None),
                messages=rs.messages,
                updates=rs.updates,
                attesters=rs.attesters,
                stake=stake,
                quorum=_quorum_need(s, rnd, active),
                active_stake=active,
                model_cid=rs.model_cid,
                acc_mean=acc.get(rnd),
                reward=rs.rewarded,
                source="chain",
                auditable=s.config is None or rnd <= s.config.rounds,
            )
        )
    return rows


def _node_timeline(s: Snapshot, acc: dict[int, float]) -> list[RoundRow]:
    per: dict[int, list[dict[str, object]]] = {}
    for n in s.nodes:
        for rec in n.records:
            per.setdefault(int(rec.get("round", 0)), []).append(rec)
    times = [
        float(t)
        for recs in per.values()
        for rec in recs
        if isinstance(t := rec.get("t"), int | float)
    ]
    t0 = min(times) if times else None
    rows = []
    for rnd in sorted(per):
        recs = per[rnd]
        ends = [float(t) for rec in recs if isinstance(t := rec.get("t"), int | float)]
        models = Counter(str(rec["model"]) for rec in recs if rec.get("model"))
        finalized = any(rec.get("finalized") for rec in recs)
        outcome = "finalized" if finalized else ("done" if s.deployment is None else "open")
        attesters = max(
            (int(a) for rec in recs if isinstance(a := rec.get("attesters"), int)), default=0
        )
        included = max(
            (int(a) for rec in recs if isinstance(a := rec.get("included"), int)), default=0
        )
        end = max(ends) - t0 if ends and t0 is not None else None
        rows.append(
            RoundRow(
                round=rnd,
                outcome=outcome,
                started=None,
                quorate=None,
                closed=None,
                attested=None,
                finalized=end if finalized else None,
                distributed=None,
                messages=len(recs),
                updates=included,
                attesters=attesters,
                stake=0,
                quorum=0,
                active_stake=0,
                model_cid=models.most_common(1)[0][0] if models else None,
                acc_mean=acc.get(rnd),
                reward=None,
                source="nodes",
            )
        )
    return rows


@dataclass(frozen=True, kw_only=True)
class Contribution:
    author: str
    index: int | None
    digest: str
    cid: str
    examples: int
    included: bool | None
    """Aggregated into the round's model (None: unknown, the round was not paid)."""
    why: str
    """Why excluded, or a remark on an included one."""
    score: int | None
    share: float | None
    reward: int | None
    time: float | None


@dataclass(frozen=True, kw_only=True)
class Attestation:
    member: str
    index: int | None
    agrees: bool
    """It attested the finalized pair."""
    model: str
    time: float | None


@dataclass(frozen=True, kw_only=True)
class NodeRecord:
    index: int
    acc: float | None
    local_acc: float | None
    model: str
    included: int | None
    finalized: bool


@dataclass(frozen=True, kw_only=True)
class RoundView:
    round: int
    outcome: str
    phases: tuple[Field, ...]
    """Started, quorum reached, closed, attested, finalized, paid: with their times."""
    stake: int
    quorum: int
    active_stake: int
    contributions: tuple[Contribution, ...]
    attestations: tuple[Attestation, ...]
    model_digest: str | None
    model_cid: str | None
    result_digest: str | None
    parent: str
    """The round's base: ``round N (CID)`` or ``the initial model``."""
    parent_round: int | None
    token: str | None
    """The model NFT of the round, if minted."""
    reward: int | None
    nodes: tuple[NodeRecord, ...]
    recorded_audit: tuple[tuple[str, bool, str], ...]
    """The round's checks as audit.json recorded them at the end of the run."""
    notes: tuple[str, ...]
    previous: int | None
    next: int | None
    auditable: bool = False


def round_view(s: Snapshot, rnd: int) -> RoundView | None:
    """Round ``rnd``, None if it has not started."""
    rows = {r.round: r for r in timeline(s)}
    row = rows.get(rnd)
    if row is None:
        return None
    index = s.address_index()
    rounds = events_by_round(s.events)
    st = rounds.get(rnd, RoundEvents())
    nxt = rounds.get(rnd + 1, RoundEvents())
    t0 = _start_time(rounds)

    def rel(t: int) -> float | None:
        return None if t0 is None else float(t - t0)

    phases = [
        Field(label=name, value=f"t = {t:g} s")
        for name, t in (
            ("started", row.started),
            ("quorum of stake's messages", row.quorate),
            ("message phase closed", row.closed),
            ("attested (round r + 1's messages)", row.attested),
            ("finalized", row.finalized),
            ("rewards distributed", row.distributed),
        )
        if t is not None
    ]
    if st.skipped is not None:
        phases.append(Field(label="failed (no quorum)", value=f"t = {rel(st.skipped.time)} s"))
    contributions = _contributions(s, rnd, st, index, rel)
    attestations = []
    pair = (st.finalized.model_digest, st.finalized.result_digest) if st.finalized else None
    for member, e in sorted(
        _first_messages(nxt).items(),
        key=lambda kv: (index.get(kv[0].lower(), len(index)), kv[0].lower()),
    ):
        if e.model == ZERO32:
            continue
        attestations.append(
            Attestation(
                member=member,
                index=index.get(member.lower()),
                agrees=(e.model, e.result) == pair,
                model=cid_from_digest(e.model),
                time=rel(e.time),
            )
        )
    parent_round = None
    for earlier in range(rnd - 1, 0, -1):
        if earlier in rounds and rounds[earlier].finalized is not None:
            parent_round = earlier
            break
    if parent_round is not None:
        base = rounds[parent_round].finalized
        assert base is not None
        parent = f"round {parent_round}'s model {cid_from_digest(base.model_digest)}"
    elif s.status is not None:
        parent = "the initial model (rebuilt from the task's seed)"
    else:
        parent = "the previous round's model"
    token = None
    for m in s.models:
        if m.round == rnd:
            token = f"#{m.round} {m.token_uri} (parent #{m.parent}, epsilon {m.epsilon / 1e6:g})"
    f = st.finalized
    nodes = []
    for n in s.nodes:
        for rec in n.records:
            if rec.get("round") == rnd:
                acc, local = rec.get("acc"), rec.get("local_acc")
                included = rec.get("included")
                nodes.append(
                    NodeRecord(
                        index=n.index,
                        acc=float(acc) if isinstance(acc, int | float) else None,
                        local_acc=float(local) if isinstance(local, int | float) else None,
                        model=str(rec.get("model", "")),
                        included=included if isinstance(included, int) else None,
                        finalized=bool(rec.get("finalized")),
                    )
                )
    recorded: list[tuple[str, bool, str]] = []
    notes = []
    if s.audit is not None:
        for v in s.audit.get("rounds", []):
            if isinstance(v, dict) and v.get("round") == rnd:
                recorded = [
                    (str(c["name"]), bool(c["ok"]), str(c.get("detail", "")))
                    for c in v.get("checks", [])
                    if isinstance(c, dict)
                ]
        notes = [
            str(n)
            for n in s.audit.get("notes", [])
            if isinstance(n, str) and n.startswith(f"round {rnd}:")
        ]
    for label, drawn in (("its committee", st.committee), ("attested by", nxt.committee)):
        if drawn is not None:
            who = ", ".join(
                f"node {index[a.lower()]}" if a.lower() in index else a[:10] for a in drawn.members
            )
            notes.append(f"{label} (drawn for round {drawn.round}, seed "
                         f"{_hex(drawn.seed)[:18]}…): {who}")  # fmt: skip
    model_cid = cid_from_digest(f.model_digest) if f is not None else row.model_cid
    return RoundView(
        round=rnd,
        outcome=row.outcome,
        phases=tuple(phases),
        stake=row.stake,
        quorum=row.quorum,
        active_stake=row.active_stake,
        contributions=contributions,
        attestations=tuple(attestations),
        model_digest=_hex(f.model_digest) if f is not None else None,
        model_cid=model_cid,
        result_digest=_hex(f.result_digest) if f is not None else None,
        parent=parent,
        parent_round=parent_round,
        token=token,
        reward=row.reward,
        nodes=tuple(nodes),
        recorded_audit=tuple(recorded),
        notes=tuple(notes),
        previous=rnd - 1 if rnd - 1 in rows else None,
        next=rnd + 1 if rnd + 1 in rows else None,
        auditable=row.auditable,
    )


def _contributions(
    s: Snapshot,
    rnd: int,
    st: RoundEvents,
    index: dict[str, int],
    rel: Callable[[int], float | None],
) -> tuple[Contribution, ...]:
    submitted = [e for e in s.events if isinstance(e, Submitted)]
    inputs = round_inputs(submitted, rnd)
    d = st.distributed
    scores: dict[str, int] = {}
    if d is not None:
        scores = {w.lower(): sc for w, sc in zip(d.contributors, d.scores, strict=False)}
    total = sum(scores.values())
    slashed = {
        e.member.lower()
        for e in s.events
        if isinstance(e, Slashed) and d is not None and (e.block, e.index) < (d.block, d.index)
    }
    reward_wei = 0
    if s.rules_in_force is not None:
        reward_wei = s.rules_in_force.at(rnd).ledger.reward_wei
    out = []

    def order(kv: tuple[str, Submitted]) -> tuple[int, str]:
        return index.get(kv[0].lower(), len(index)), kv[0].lower()

    for member, e in sorted(_first_messages(st).items(), key=order):
        if e.update == ZERO32:
            continue
        score = scores.get(member.lower()) if d is not None else None
        included: bool | None
        why = ""
        if member not in inputs:
            included, why = (
                False,
                (
                    "a replay or a copy: the digest was submitted in an earlier "
                    "round, or by a lower address in this one"
                ),
            )
        elif d is not None:
            included = member.lower() in scores
            if not included:
                why = (
                    "not aggregated: the quorum's result leaves it out (withheld or late; "
                    "the audit's exclusion check tells whether a member had it)"
                )
            elif score == 0:
                why = "aggregated, and rejected by the rule (score 0)"
        elif st.finalized is not None:
            included, why = None, "the round was not paid: its included set is not on chain"
        elif st.skipped is not None:
            included, why = False, "the round failed: no model"
        else:
            included, why = None, "the round is not finalized yet"
        reward = None
        share = None
        if score is not None and total:
            share = score / total
            reward = 0 if member.lower() in slashed else reward_wei * score // total
        out.append(
            Contribution(
                author=member,
                index=index.get(member.lower()),
                digest=_hex(e.update),
                cid=cid_from_digest(e.update),
                examples=e.examples,
                included=included,
                why=why,
                score=score,
                share=share,
                reward=reward,
                time=rel(e.time),
            )
        )
    return tuple(out)


# -- accuracy ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AccuracyView:
    rounds: tuple[int, ...]
    mean: tuple[float | None, ...]
    """The mean test accuracy over nodes, per round."""
    nodes: tuple[tuple[int, tuple[float | None, ...]], ...]
    """Each node's test accuracy per round (None: no record)."""
    local: tuple[tuple[int, tuple[float | None, ...]], ...]
    """Each node's accuracy on its own validation split, per round."""
    central: float | None
    """The report's centrally trained reference, if any."""


def accuracy_view(s: Snapshot) -> AccuracyView:
    """Accuracy per round and per node: the nodes' records (the chain holds none)."""
    acc = _acc_by_round(s)
    rounds = sorted(set(acc) | {int(r["round"]) for n in s.nodes for r in n.records})
    nodes = []
    local = []
    for n in s.nodes:
        by = {int(r["round"]): r for r in n.records}

        def val(rec: dict[str, object] | None, key: str) -> float | None:
            v = rec.get(key) if rec is not None else None
            return float(v) if isinstance(v, int | float) else None

        nodes.append((n.index, tuple(val(by.get(r), "acc") for r in rounds)))
        local.append((n.index, tuple(val(by.get(r), "local_acc") for r in rounds)))
    central = None
    if s.report is not None and isinstance(s.report.get("central"), dict):
        c = s.report["central"].get("acc")
        central = float(c) if isinstance(c, int | float) else None
    return AccuracyView(
        rounds=tuple(rounds),
        mean=tuple(acc.get(r) for r in rounds),
        nodes=tuple(nodes),
        local=tuple(local),
        central=central,
    )


# -- rewards -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RewardRow:
    member: MemberRow
    per_round: tuple[int, ...]
    """Reward credited in each round of :attr:`RewardsView.rounds` (smallest unit)."""
    score_share: float
    """Its contribution in rounds' worth: its share of each paid round's scores, summed."""


@dataclass(frozen=True, kw_only=True)
class RewardsView:
    rounds: tuple[int, ...]
    rows: tuple[RewardRow, ...]
    total_earned: int
    token_supply: int
    total_staked: int
    total_slashed: int
    slashes: tuple[Field, ...]


def rewards_view(s: Snapshot) -> RewardsView:
    """Rewards and stake per member, and the rewards of each paid round."""
    members = _members(s)
    paid = sorted((e for e in s.events if isinstance(e, Distributed)), key=lambda e: e.round)
    rounds = tuple(e.round for e in paid)
    rows = []
    for m in members:
        per = []
        share = 0.0
        for d in paid:
            total = sum(d.scores)
            score = next(
                (
                    sc
                    for w, sc in zip(d.contributors, d.scores, strict=False)
                    if w.lower() == m.address.lower()
                ),
                0,
            )
            slashed = any(
                isinstance(e, Slashed)
                and e.member.lower() == m.address.lower()
                and (e.block, e.index) < (d.block, d.index)
                for e in s.events
            )
            reward_wei = (
                s.rules_in_force.at(d.round).ledger.reward_wei
                if s.rules_in_force is not None
                else 0
            )
            per.append(0 if not total or slashed else reward_wei * score // total)
            share += score / total if total else 0.0
        rows.append(RewardRow(member=m, per_round=tuple(per), score_share=share))
    st = s.status
    slashes = tuple(
        Field(label=x.member, value=f"{ether(x.amount)} ETH: {x.reason}")
        for x in (st.slashes if st is not None else ())
    )
    return RewardsView(
        rounds=rounds,
        rows=tuple(rows),
        total_earned=st.total_earned if st is not None else 0,
        token_supply=st.token_supply if st is not None else 0,
        total_staked=st.total_staked if st is not None else 0,
        total_slashed=st.total_slashed if st is not None else 0,
        slashes=slashes,
    )


# -- network -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NetworkView:
    members: tuple[MemberRow, ...]
    edges: tuple[tuple[int, int], ...]
    """Gossip links between :attr:`members` (positions in that tuple)."""
    topology: str
    contract: str | None
    """The Task contract every member talks to, if on a chain."""


def network_view(s: Snapshot) -> NetworkView:
    """The members and the topology: the nodes' gossip graph (run directories) and the chain
    every member registered with."""
    members = _members(s)
    edges: list[tuple[int, int]] = []
    topology = s.topology_kind or "unknown (the chain holds the members, not their links)"
    if s.topology is not None:
        position = {m.index: i for i, m in enumerate(members) if m.index is not None}
        for i, neighbours in enumerate(s.topology):
            for j in neighbours:
                if i < j and i in position and j in position:
                    edges.append((position[i], position[j]))
    address = s.status.task if s.status is not None else None
    return NetworkView(members=members, edges=tuple(edges), topology=topology, contract=address)
