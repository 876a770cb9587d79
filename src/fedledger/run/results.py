"""The run's report: every node's round log merged, the ledger's figures, the attack."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fedledger.commit import digest_from_cid
from fedledger.config.node import NodeConfig
from fedledger.errors import RunFailed
from fedledger.gossip.topology import TopologySpec
from fedledger.ledger.records import Distributed, Finalized, Ledger, Slashed
from fedledger.report import Accuracy, Report, RoundRecord
from fedledger.rundir import LedgerDeployment, read_rounds

log = logging.getLogger("fedledger.run")


def ledger_final(
    ledger: Ledger, deployment: LedgerDeployment, addresses: Sequence[str], rounds: int
) -> dict[str, Any]:
    """The report's ledger figures: rounds finalized and each node's reward (credited by the
    task; tokens are minted when a member claims them)."""
    events = ledger.events(deployment.first_block)
    finalized = sorted({e.round for e in events if isinstance(e, Finalized) and e.round <= rounds})
    scores = dict.fromkeys(addresses, 0.0)
    for e in events:  # each paid round's scores as shares of the round: rounds' worth
        total = sum(e.scores) if isinstance(e, Distributed) else 0
        if isinstance(e, Distributed) and total:
            for who, score in zip(e.contributors, e.scores, strict=True):
                scores[who] = scores.get(who, 0.0) + score / total
    return {
        "rounds_finalized": len(finalized),
        "scores": scores,
        "slashed": sorted({e.member for e in events if isinstance(e, Slashed)}),
        "rewards": {a: ledger.earned_of(a) / 10**18 for a in addresses},
        "token_supply": ledger.token_supply() / 10**18,
        "task_address": deployment.task,
    }


def merge_report(
    configs: Sequence[NodeConfig],
    summaries: Sequence[dict[str, Any]],
    *,
    mode: str,
    transport: str,
    topology: TopologySpec,
    chain: str = "none",
    ledger: dict[str, Any] | None = None,
) -> Report:
    """One report from every node's rounds.jsonl (the last record per node and round wins)."""
    task = configs[0].task
    per_node: list[dict[int, dict[str, Any]]] = []
    for cfg in configs:
        latest: dict[int, dict[str, Any]] = {}
        for rec in read_rounds(cfg):
            latest[rec["round"]] = rec
        per_node.append(latest)
    starts = [s["started_at"] for s in summaries if s.get("started_at")]
    t0 = min(starts) if starts else 0.0
    records: list[RoundRecord] = []
    prev_sent = [0] * len(configs)
    prev_recv = [0] * len(configs)
    for rnd in range(1, task.rounds + 1):
        recs = [(i, node[rnd]) for i, node in enumerate(per_node) if rnd in node]
        if not recs:
            continue
        acc = Accuracy.over([r["acc"] for _, r in recs])
        honest = [r["acc"] for i, r in recs if configs[i].attack is None]
        backdoor = [r["backdoor"] for i, r in recs
                    if configs[i].attack is None and r.get("backdoor") is not None]  # fmt: skip
        sent = [r["bytes_sent"] - prev_sent[i] for i, r in recs]
        recv = [r["bytes_recv"] - prev_recv[i] for i, r in recs]
        for i, r in recs:
            prev_sent[i], prev_recv[i] = r["bytes_sent"], r["bytes_recv"]
        locals_ = [r["local_acc"] for _, r in recs if r.get("local_acc") is not None]
        local = Accuracy.over(locals_)
        extra = {
            "nodes_reporting": len(recs),
            "bytes_per_node": {"sent": sum(sent) / len(sent), "recv": sum(recv) / len(recv)},
            "model_digests_agree": len({r["model"] for _, r in recs}) == 1,
            "acc_by_node": {str(configs[i].index): r["acc"] for i, r in recs},
            "local_acc_mean": local.acc_mean,
            "local_acc_min": local.acc_min,
            "local_acc_max": local.acc_max,
        }
        if any(c.attack is not None for c in configs):  # even when no attacker got this far
            extra["honest_acc"] = sum(honest) / len(honest) if honest else None
        if backdoor:
            extra["honest_backdoor"] = sum(backdoor) / len(backdoor)
        if mode == "consensus":
            extra["adopted"] = sum(1 for _, r in recs if r.get("adopted"))
        gases = [r["gas"] for _, r in recs if "gas" in r]
        if gases:
            extra["gas_per_node"] = sum(gases) / len(gases)
            kinds = sorted({k for _, r in recs for k in r.get("gas_by_kind", {})} - {"distribute"})
            extra["gas_per_node_by_kind"] = {
                k: sum(r.get("gas_by_kind", {}).get(k, 0) for _, r in recs) / len(recs)
                for k in kinds
            }
            extra["finalized"] = any(r.get("finalized") for _, r in recs)
            extra["transactions"] = max(int(r.get("transactions", 0)) for _, r in recs)
        if task.privacy_plan() is not None:  # each node's epsilon spent so far, by node index
            extra["epsilon"] = {str(configs[i].index): r.get("epsilon") for i, r in recs}
        records.append(RoundRecord(
            round=rnd, acc_mean=acc.acc_mean, acc_min=acc.acc_min, acc_max=acc.acc_max,
            wall_s=max(r["t"] for _, r in recs) - t0, extra=extra,
        ))  # fmt: skip
    # Nodes the task refused to register (a stake below the minimum), and members it expelled
    # (slashed), hold no model.
    # Members that left on their consent policy stopped early.
    finals = [s.get("final_model") for s in summaries if s.get("refused") is None
              and s.get("expelled") is None and s.get("withdrew") is None]  # fmt: skip
    last = records[-1] if records else None
    final: dict[str, Any] = {
        "acc_mean": last.acc_mean if last else None,
        "acc_min": last.acc_min if last else None,
        "acc_max": last.acc_max if last else None,
        "wall_s": last.wall_s if last else None,
        "wall_s_per_round": (last.wall_s / task.rounds) if last else None,
        "rounds_completed": last.round if last else 0,
        "model_digests_agree": None not in finals and len(set(finals)) == 1,
        "refused": {s["address"]: s["refused"] for s in summaries if s.get("refused")},
        "expelled": {s["address"]: s["expelled"] for s in summaries if s.get("expelled")},
        "withdrew": {s["address"]: s["withdrew"] for s in summaries if s.get("withdrew")},
        "bytes_per_node_per_round": {
            "sent": sum(r.extra["bytes_per_node"]["sent"] for r in records) / max(len(records), 1),
            "recv": sum(r.extra["bytes_per_node"]["recv"] for r in records) / max(len(records), 1),
        },
        "frames_rejected": sum(s.get("frames_rejected", 0) for s in summaries),
    }
    if final["model_digests_agree"]:
        final["model_cid"] = finals[0]
        final["model_digest"] = digest_from_cid(str(finals[0])).hex()
    gas_rounds = [r.extra["gas_per_node"] for r in records if "gas_per_node" in r.extra]
    if gas_rounds:
        final["gas_per_node_per_round"] = sum(gas_rounds) / len(gas_rounds)
    txs = [r.extra["transactions"] for r in records if "transactions" in r.extra]
    if txs:
        final["transactions_per_round"] = sum(txs) / len(txs)
    if ledger is not None:
        final.update(ledger)
    if task.secure_aggregation:
        secure = [s.get("secure_aggregation") or {} for s in summaries]
        dropouts: dict[str, int] = {}
        for s in secure:
            for rnd, n in (s.get("dropouts") or {}).items():
                dropouts[rnd] = max(dropouts.get(rnd, 0), int(n))
        final["secure_aggregation"] = {
            "unmasked_rounds": max((int(s.get("unmasked_rounds", 0)) for s in secure), default=0),
            "abandoned_rounds": sorted({int(r) for s in secure
                                        for r in s.get("abandoned_rounds") or ()}),
            "dropouts": dict(sorted(dropouts.items(), key=lambda kv: int(kv[0]))),
        }  # fmt: skip
    plan = task.privacy_plan()
    if plan is not None:
        spent: dict[str, float | None] = {}
        for cfg, node in zip(configs, per_node, strict=True):
            last_rec = node[max(node)] if node else {}
            spent[str(cfg.index)] = last_rec.get("epsilon")
        budget_stops = {str(s.get("node")): s["privacy_budget_spent_at"] for s in summaries
                        if s.get("privacy_budget_spent_at") is not None}  # fmt: skip
        final["privacy"] = {**plan.summary(), "epsilon": spent, "budget_spent_at": budget_stops}
    extra_top = {
        "task": task.name,
        "config_digest": task.digest().hex(),
        "rule": task.aggregation.rule,
        "transport": transport,
        "chain": chain,
        "topology": topology.kind,
        "addresses": [s.get("address") for s in summaries],
    }
    return Report(mode=mode, nodes=len(configs), rounds=records, final=final, extra=extra_top)


def add_attack(report: Report, *, attack: str, attackers: Sequence[int]) -> None:
    """The attack in the report, and the honest nodes' final accuracy."""
    report.extra["attack"] = {"name": attack, "attackers": list(attackers)}
    last = report.rounds[-1] if report.rounds else None
    honest = last.extra.get("honest_acc") if last is not None else None
    if honest is not None:
        report.final["honest_acc_mean"] = honest
    backdoor = last.extra.get("honest_backdoor") if last is not None else None
    if backdoor is not None:
        report.final["backdoor_success"] = backdoor


def check_run(summaries: Sequence[dict[str, Any]]) -> None:
    """Raise :class:`RunFailed` when the run trained nothing: no node's rule produced a
    model in any round (every aggregation failed, or every node failed)."""
    if not summaries:
        raise RunFailed("the run had no nodes")
    if not any(s.get("aggregated_rounds") for s in summaries):
        failures = sorted({str(s["failure"]) for s in summaries if s.get("failure")})
        why = f": {failures[0]}" if failures else " (every aggregation failed; see node.log)"
        raise RunFailed(f"no round produced a model{why}")
