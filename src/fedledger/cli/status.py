"""``fedledger status``: a deployed task's members, rounds, rewards and slashes."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from fedledger.cli.common import rpc_url
from fedledger.cli.task import check_address, ether
from fedledger.errors import ConfigError

if TYPE_CHECKING:
    from fedledger.ledger.status import TaskStatus


def cmd_status(args: argparse.Namespace) -> int:
    from fedledger.ledger.chain import RpcChain
    from fedledger.ledger.contract_ledger import ContractLedger
    from fedledger.ledger.status import check_task_code, task_status

    url = rpc_url(args.rpc, field="rpc")
    task = check_address(args.task, field="task")
    if args.from_block < 0:
        raise ConfigError(f"must be >= 0, got {args.from_block}", field="from-block")
    chain = RpcChain(url)  # read-only: no key
    check_task_code(chain, task)
    status = task_status(ContractLedger(chain, task, None), from_block=args.from_block)
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        _print(status)
    return 0


def _print(s: TaskStatus) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False)
    if not out.is_terminal:  # a pipe or a file: never cut an address or a CID
        out = Console(highlight=False, width=max(out.width, 200))
    started = f"round {s.current_round}, {s.phase}" if s.started else "not started"
    out.print(f"[bold]task {s.task}[/bold] on chain {s.chain_id}: {started}")
    out.print(f"  owner {s.owner}, token {s.token}, rule {s.rule}, quorum "
              f"{s.quorum_bps / 100:g} % of stake, min stake {ether(s.min_stake)} ETH"
              f"{', allowlist' if s.allowlist else ''}")  # fmt: skip
    out.print(f"  config digest {s.config_digest}")
    if s.waiting is not None:  # the words of `fedledger run`'s progress line
        from fedledger.node.waiting import describe_waiting

        w = s.waiting
        out.print("  " + describe_waiting(w.round, w.what, w.members, w.until), soft_wrap=True)

    members = Table(title="members", box=box.SIMPLE, title_justify="left")
    for name in ("address", "status", "stake (ETH)", "endpoint", "first round", "earned",
                 "claimed", "updates", "selected"):  # fmt: skip
        numeric = name not in ("address", "status", "endpoint")
        members.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for m in s.members:
        members.add_row(m.address, m.status, ether(m.stake), m.endpoint, str(m.first_round),
                        ether(m.earned), ether(m.claimed), str(m.updates),
                        str(m.selections))  # fmt: skip
    if not s.members:
        out.print("no member joined yet")
    else:
        out.print(members)

    if s.rounds:
        rounds = Table(title="rounds", box=box.SIMPLE, title_justify="left")
        for name in ("round", "outcome", "model CID", "attesters", "messages", "updates",
                     "transactions", "rewarded"):  # fmt: skip
            rounds.add_column(name, justify="left" if name in ("outcome", "model CID")
                              else "right", no_wrap=True)  # fmt: skip
        for r in s.rounds:
            rounds.add_row(str(r.round), r.outcome, r.model_cid or "-",
                           str(r.attesters) if r.outcome == "finalized" else "-",
                           str(r.messages), str(r.updates), str(r.transactions),
                           ether(r.rewarded) if r.rewarded is not None else "-")  # fmt: skip
        out.print(rounds)

    if s.slashes:
        slashes = Table(title="slashes", box=box.SIMPLE, title_justify="left")
        for name in ("member", "amount (ETH)", "reason", "block"):
            slashes.add_column(name, no_wrap=True)
        for x in s.slashes:
            slashes.add_row(x.member, ether(x.amount), x.reason, str(x.block))
        out.print(slashes)
    else:
        out.print("no slashes")
    out.print(f"rewards: {ether(s.total_earned)} tokens earned (token supply "
              f"{ether(s.token_supply)}); staked {ether(s.total_staked)} ETH, slashed "
              f"{ether(s.total_slashed)} ETH")  # fmt: skip


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="a deployed task's members, rounds, rewards and slashes",
        description="Read a task from its chain: members (address, status, stake, endpoint), "
        "the current round and its phase, every round's outcome (finalized with the model's "
        "CID and its attesters, or failed), rewards and slashes. No key needed.",
    )
    p.add_argument("--rpc", required=True, metavar="URL", help="JSON-RPC URL of the chain")
    p.add_argument("--task", required=True, metavar="ADDRESS", help="the Task's address")
    p.add_argument("--from-block", type=int, default=0, metavar="N",
                   help="read the task's events from block N on (`task deploy` prints its "
                   "first block; default 0: the whole chain)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_status)
