"""``fedledger propose``, ``vote``, ``proposals`` and ``execute``: token holders govern a task.

A task deployed with ``[governance]`` has a Governor and a Timelock; its reward token's holders
vote with their balances at the block before each proposal (docs/governance.md). A proposal
changes the task's governable rules (:mod:`fedledger.config.amendments`): ``propose`` builds
the call from ``--set KEY=VALUE`` changes (or a whole new task file) applied to the rules in
force, checks it as the nodes will, and sends it; ``vote`` casts the key's votes;
``proposals`` lists every proposal with its state, its counts and what it changes;
``execute`` queues a passed proposal on the timelock, or runs a queued one whose delay is
over. The change takes effect from the round after the one in which it runs.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedledger.cli.common import password_option, rpc_url
from fedledger.cli.task import check_address, ether
from fedledger.errors import ConfigError, LedgerError

if TYPE_CHECKING:
    from fedledger.config.amendments import RulesInForce
    from fedledger.ledger.chain import Chain
    from fedledger.ledger.governance import Governance, Proposal
    from fedledger.ledger.proposals import ProposedChange

SUPPORT = {"against": 0, "for": 1, "abstain": 2}


@dataclass(frozen=True)
class _Target:
    chain: Chain
    task: str
    governor: str
    from_block: int
    live: bool


def _target(args: argparse.Namespace, *, key: bytes | None = None) -> _Target:
    """The chain, task and governor the options name (``--run DIR``, or ``--rpc`` and
    ``--task``; ``--governor`` overrides the one found on chain)."""
    from fedledger.ledger.chain import RpcChain
    from fedledger.ledger.proposals import governor_of
    from fedledger.ledger.status import check_task_code

    from_block = 0
    if args.run is not None:
        if args.rpc is not None or args.task is not None:
            raise ConfigError("--run reads a `fedledger run` directory's chain: without --rpc "
                              "or --task", field="run")  # fmt: skip
        from fedledger.ledger.chain.embedded import EmbeddedChain
        from fedledger.rundir import JOURNAL_FILE, LedgerDeployment

        deployment = LedgerDeployment.read(args.run)
        task, from_block = deployment.task, deployment.first_block
        if deployment.backend == "embedded":
            if key is not None:
                raise ConfigError("the run's embedded chain ended with the run: propose, vote "
                                  "and execute on a live chain (--rpc, --task)",
                                  field="run")  # fmt: skip
            chain: Any = EmbeddedChain.replay(args.run / JOURNAL_FILE)
        else:
            chain = RpcChain(deployment.backend, private_key=key)
    else:
        if args.rpc is None or args.task is None:
            raise ConfigError("give --rpc URL and --task ADDRESS, or --run DIR", field="rpc")
        url = rpc_url(args.rpc, field="rpc")
        task = check_address(args.task, field="task")
        chain = RpcChain(url, private_key=key)
    check_task_code(chain, task)
    governor = (check_address(args.governor, field="governor") if args.governor
                else governor_of(chain, task, from_block=from_block))  # fmt: skip
    return _Target(chain=chain, task=task, governor=governor, from_block=from_block,
                   live=key is not None)  # fmt: skip


def _key(args: argparse.Namespace) -> bytes:
    from fedledger.keys import load_key

    if args.key is None:
        raise ConfigError("this sends a transaction: give the account's --key", field="key")
    return load_key(args.key, password_file=args.password_file).private_key


def _handle(t: _Target) -> Governance:
    from fedledger.ledger.governance import Governance

    account = t.chain.accounts()[0] if t.live else None
    return Governance(t.chain, t.governor, account)


def _history(t: _Target, before: int | None = None) -> RulesInForce:
    """The task's rules (changes mined before block ``before`` only, if given)."""
    from fedledger.ledger.contract_ledger import ContractLedger
    from fedledger.ledger.proposals import rules_in_force

    ledger = ContractLedger(t.chain, t.task, None)
    return rules_in_force(ledger, ledger.task_config(t.from_block), before=before)


def _parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (``0.8``, ``true``, ``"x"``), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def proposed_config(current: Any, sets: list[str], config: Path | None) -> Any:
    """The configuration a proposal asks for: ``config`` (a task file) or ``current`` with
    every ``SECTION.KEY=VALUE`` of ``sets`` applied (``aggregation.beta=0.3``)."""
    from fedledger.config.task import load_config, parse_config

    if config is not None:
        if sets:
            raise ConfigError("give --config or --set, not both", field="set")
        return load_config(config)
    if not sets:
        raise ConfigError("give the changes: --set SECTION.KEY=VALUE (repeatable) or --config "
                          "FILE", field="set")  # fmt: skip
    doc = tomllib.loads(current.to_toml())
    for item in sets:
        name, eq, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not eq or not dot or not key:
            raise ConfigError(f"not SECTION.KEY=VALUE: {item!r}", field="set")
        doc.setdefault(section, {})[key] = _parse_value(value.strip())
    return parse_config(doc)


def cmd_propose(args: argparse.Namespace) -> int:
    from fedledger.config.amendments import check_amendment
    from fedledger.ledger.proposals import reconfigure_call

    t = _target(args, key=_key(args))
    history = _history(t)
    current = history.latest()
    new = proposed_config(current, args.set or [], args.config)
    changes = check_amendment(current, new)
    data = reconfigure_call(t.chain, t.task, new)
    description = args.description or "; ".join(f"{k}: {a!r} -> {b!r}"
                                                for k, (a, b) in changes.items())  # fmt: skip
    result = _handle(t).propose(t.task, data, description[:1024])
    if args.json:
        print(json.dumps({"id": hex(result.id), "tx": result.tx, "block": result.block,
                          "changes": {k: list(v) for k, v in changes.items()}}))  # fmt: skip
    else:
        print(f"proposal {hex(result.id)} (tx {result.tx}, block {result.block}):")
        for k, (a, b) in changes.items():
            print(f"  {k}: {a!r} -> {b!r}")
    return 0


def _proposal_id(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ConfigError(f"not a proposal id: {text!r}", field="proposal") from None
    if not 0 <= value < 2**256:
        raise ConfigError(f"not a proposal id: {text!r}", field="proposal")
    return value


def cmd_vote(args: argparse.Namespace) -> int:
    t = _target(args, key=_key(args))
    gov = _handle(t)
    proposal = _proposal_id(args.proposal)
    result = gov.vote(proposal, SUPPORT[args.support])
    votes = [v for v in gov.votes_of(proposal, result.block) if v.tx == result.tx]
    weight = votes[0].weight if votes else 0
    if args.json:
        print(json.dumps({"proposal": hex(proposal), "support": args.support,
                          "weight": weight, "tx": result.tx}))  # fmt: skip
    else:
        print(f"voted {args.support} on {hex(proposal)} with {ether(weight)} tokens "
              f"(tx {result.tx})")  # fmt: skip
    return 0


def _find(gov: Governance, t: _Target, proposal: int) -> Proposal:
    for p in gov.proposals(t.from_block):
        if p.id == proposal:
            return p
    raise LedgerError(f"no proposal {hex(proposal)} on the governor {t.governor}")


def cmd_execute(args: argparse.Namespace) -> int:
    from fedledger.ledger.governance import STATE_QUEUED, STATE_SUCCEEDED

    t = _target(args, key=_key(args))
    gov = _handle(t)
    p = _find(gov, t, _proposal_id(args.proposal))
    if p.state == STATE_SUCCEEDED:
        result = gov.queue(p.target, p.data, p.description)
        what = f"queued: it may run from time {t.chain.now() + gov.timelock_delay()} on"
    elif p.state == STATE_QUEUED:
        now = t.chain.now()
        if p.eta > now:  # before sending a transaction that would revert
            raise LedgerError(f"proposal {hex(p.id)} is queued: the timelock runs it from chain "
                              f"time {p.eta} on, {p.eta - now} s from now")  # fmt: skip
        result = gov.execute(p.target, p.data, p.description)
        what = "executed"
    else:
        raise LedgerError(f"proposal {hex(p.id)} is {p.state_name}: only a succeeded proposal "
                          "is queued, and a queued one executed")  # fmt: skip
    print(f"proposal {hex(p.id)} {what} (tx {result.tx}, block {result.block})")
    return 0


def _describe(t: _Target, p: Proposal) -> ProposedChange:
    """What ``p`` changes in the rules in force when it was proposed."""
    from fedledger.ledger.proposals import decode_proposal

    before = _history(t, before=p.block).latest()
    return decode_proposal(t.chain, t.task, p.target, p.data, before)


def cmd_proposals(args: argparse.Namespace) -> int:
    t = _target(args)
    gov = _handle(t)
    history = _history(t)
    rows: list[dict[str, Any]] = []
    for p in gov.proposals(t.from_block):
        change = _describe(t, p)
        rows.append({
            "id": hex(p.id), "state": p.state_name, "proposer": p.proposer,
            "for": p.for_votes, "against": p.against_votes, "abstain": p.abstain_votes,
            "quorum": p.quorum, "snapshot": p.snapshot, "deadline": p.deadline,
            "description": p.description,
            "changes": {k: list(v) for k, v in change.changes.items()},
            "valid": change.valid, "problem": change.problem,
        })  # fmt: skip
    applied = [{"from_round": r, "rule": c.aggregation.rule} for r, c in history.changes]
    if args.json:
        print(json.dumps({"task": t.task, "governor": t.governor, "proposals": rows,
                          "changes": applied}, indent=2))  # fmt: skip
        return 0
    print(f"task {t.task}: governor {t.governor}, {len(rows)} proposal(s)")
    for r in rows:
        print(f"  {r['id'][:18]}…  {r['state']:<9} for {ether(r['for'])}, against "
              f"{ether(r['against'])}, abstain {ether(r['abstain'])} (quorum "
              f"{ether(r['quorum'])})")  # fmt: skip
        for k, (a, b) in r["changes"].items():
            print(f"      {k}: {a!r} -> {b!r}")
        if r["problem"]:
            print(f"      nodes will not follow it: {r['problem']}")
    for c in applied:
        print(f"  in force from round {c['from_round']}: rule {c['rule']}")
    return 0


def _common(p: argparse.ArgumentParser, *, key: bool) -> None:
    p.add_argument("--rpc", default=None, metavar="URL", help="JSON-RPC URL of the chain")
    p.add_argument("--task", default=None, metavar="ADDRESS", help="the Task's address")
    p.add_argument("--run", type=Path, default=None, metavar="DIR",
                   help="instead of --rpc and --task: a `fedledger run` directory")  # fmt: skip
    p.add_argument("--governor", default=None, metavar="ADDRESS",
                   help="the Governor (default: found from the task's timelock)")  # fmt: skip
    if key:
        p.add_argument("--key", type=Path, default=None, metavar="KEYFILE",
                       help="the voting account's key file (hex or keystore, mode 0600); it "
                       "pays the gas")  # fmt: skip
        password_option(p, "the --key keystore")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "propose",
        parents=[common],
        help="propose a change of a governed task's rules",
        description="Propose a change of a task's governable rules (aggregation rule and "
        "parameters, quorum, reward per round, minimum stake, allowlist, model access, privacy "
        "budget), checked as the nodes will check it.",
    )
    _common(p, key=True)
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="one change to the rules in force (repeatable), e.g. "
                   "aggregation.rule=trimmed_mean")  # fmt: skip
    p.add_argument("--config", type=Path, default=None, metavar="TASK_TOML",
                   help="instead of --set: the whole proposed task file")  # fmt: skip
    p.add_argument("--description", default=None, help="what and why (default: the changes)")
    p.set_defaults(func=cmd_propose)

    p = sub.add_parser("vote", parents=[common], help="vote on a proposal with your tokens",
                       description="Cast the key's votes (its reward-token balance at the "
                       "block before the proposal) on a proposal.")  # fmt: skip
    _common(p, key=True)
    p.add_argument("--proposal", required=True, metavar="ID", help="the proposal's id (hex)")
    p.add_argument("--support", required=True, choices=sorted(SUPPORT))
    p.set_defaults(func=cmd_vote)

    p = sub.add_parser("execute", parents=[common],
                       help="queue a passed proposal, or run a queued one",
                       description="Queue a succeeded proposal on the timelock, or execute a "
                       "queued one whose delay is over; the change takes effect from the next "
                       "round.")  # fmt: skip
    _common(p, key=True)
    p.add_argument("--proposal", required=True, metavar="ID", help="the proposal's id (hex)")
    p.set_defaults(func=cmd_execute)

    p = sub.add_parser("proposals", parents=[common],
                       help="a governed task's proposals and rule changes",
                       description="Every proposal on a task's governor: state, votes, quorum "
                       "and what it changes; and the rule changes in force.")  # fmt: skip
    _common(p, key=False)
    p.set_defaults(func=cmd_proposals)
