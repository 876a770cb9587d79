"""``fedledger rewards``: what a task's members earned, claimed and may still claim; and a claim.

A task credits each finalized round's reward to its contributors (``earned``); nothing is
minted until someone calls ``claim`` for a member, which mints what it earned and has not
claimed yet. ``fedledger rewards`` reads it all (no key needed); ``--claim --key FILE`` sends
that one transaction for the key's own account.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedledger.cli.common import password_option, rpc_url
from fedledger.cli.task import check_address, ether
from fedledger.errors import ConfigError, LedgerError

if TYPE_CHECKING:
    from fedledger.ledger.contract_ledger import ContractLedger


@dataclass(frozen=True, kw_only=True)
class MemberRewards:
    """One account that joined the task: amounts in the reward token's smallest unit."""

    address: str
    status: str
    """``active``, ``left``, ``withdrawn`` or ``slashed`` (a slashed member's unclaimed reward
    is forfeit)."""
    earned: int
    """Credited by the task so far, claimed or not (``earned_of``)."""
    claimed: int
    """Minted to it: the sum of its ``Claimed`` events."""
    claimable: int
    """What a claim would mint now (0 once slashed)."""


@dataclass(frozen=True, kw_only=True)
class TaskRewards:
    task: str
    chain_id: int
    token: str
    reward_per_round: int
    max_rounds: int
    cap: int
    """The most the task can ever credit: max_rounds x reward_per_round."""
    members: tuple[MemberRewards, ...]
    """Every account that joined (from the events read), in the order of its first join."""
    total_earned: int
    total_claimed: int
    total_claimable: int
    forfeit: int
    """Earned by slashed members and never claimed: never minted."""
    token_supply: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["members"] = list(d["members"])
        return d


def task_rewards(ledger: ContractLedger, *, from_block: int = 0) -> TaskRewards:
    """The task's rewards: views give what each member earned and the totals, the ``Claimed``
    events since ``from_block`` what each claimed. Read from block 0 (the default), the events
    must add up to the contract's ``claimed_of``: an RPC node that drops or forges logs is
    caught here."""
    from eth_utils.address import to_checksum_address

    from fedledger.ledger.chain.base import map_chain_errors
    from fedledger.ledger.records import Claimed, Joined
    from fedledger.ledger.rules import STATUS_SLASHED
    from fedledger.ledger.status import MEMBER_STATUS

    rules = ledger.rules()
    events = ledger.events(from_block - 1, ledger.head())
    order: dict[str, None] = {}
    claimed: dict[str, int] = {}
    for e in events:
        if isinstance(e, Joined):
            order.setdefault(to_checksum_address(e.member), None)
        elif isinstance(e, Claimed):
            member = to_checksum_address(e.member)
            order.setdefault(member, None)
            claimed[member] = claimed.get(member, 0) + e.amount
    for m in ledger.members():  # active members that joined before the first block read
        order.setdefault(m.address, None)
    members = []
    claimable_total = forfeit = 0
    for address in order:
        status = ledger.status_of(address)
        earned = ledger.earned_of(address)
        on_chain = ledger.claimed_of(address)
        mine = claimed.get(address, 0)
        if from_block == 0 and mine != on_chain:
            raise LedgerError(f"the Claimed events of {address} add up to {mine}, the task's "
                              f"claimed_of to {on_chain}: the chain's logs are incomplete or "
                              "forged")  # fmt: skip
        unclaimed = earned - on_chain
        claimable = 0 if status == STATUS_SLASHED else unclaimed
        if status == STATUS_SLASHED:
            forfeit += unclaimed
        claimable_total += claimable
        members.append(MemberRewards(address=address,
                                     status=MEMBER_STATUS.get(status, str(status)),
                                     earned=earned, claimed=mine,
                                     claimable=claimable))  # fmt: skip
    with map_chain_errors(f"task at {ledger.task_address}"):
        functions = ledger.contract.functions
        total_earned = int(ledger.chain.call(functions.total_earned()))
        total_claimed = int(ledger.chain.call(functions.total_claimed()))
    return TaskRewards(
        task=ledger.task_address,
        chain_id=ledger.chain_id,
        token=to_checksum_address(rules.token),
        reward_per_round=rules.reward_per_round,
        max_rounds=rules.max_rounds,
        cap=rules.max_mint,
        members=tuple(members),
        total_earned=total_earned,
        total_claimed=total_claimed,
        total_claimable=claimable_total,
        forfeit=forfeit,
        token_supply=ledger.token_supply(),
    )


def _check_options(args: argparse.Namespace) -> tuple[str, str]:
    if args.run is not None:
        if args.rpc is not None or args.task is not None or args.claim:
            raise ConfigError("--run reads a `fedledger run` directory's own chain: without "
                              "--rpc, --task or --claim", field="run")  # fmt: skip
        return "", ""
    if args.rpc is None or args.task is None:
        raise ConfigError("give --rpc URL and --task ADDRESS, or --run DIR", field="rpc")
    url = rpc_url(args.rpc, field="rpc")
    task = check_address(args.task, field="task")
    if args.from_block < 0:
        raise ConfigError(f"must be >= 0, got {args.from_block}", field="from-block")
    if args.claim and args.key is None:
        raise ConfigError("--claim sends a transaction: give the claiming account's --key",
                          field="key")  # fmt: skip
    if args.key is not None and not args.claim:
        raise ConfigError("--key is for --claim (reading the rewards needs no key)",
                          field="key")  # fmt: skip
    if args.password_file is not None and args.key is None:
        raise ConfigError("--password-file unlocks the --key keystore: give both",
                          field="password-file")  # fmt: skip
    if args.claim and args.from_block != 0:
        raise ConfigError("--from-block is for reading the rewards, not --claim",
                          field="from-block")  # fmt: skip
    return url, task


def cmd_rewards(args: argparse.Namespace) -> int:
    url, task = _check_options(args)
    if args.claim:
        return _claim(args, url, task)
    from fedledger.ledger.chain import RpcChain
    from fedledger.ledger.contract_ledger import ContractLedger
    from fedledger.ledger.status import check_task_code

    from_block = args.from_block
    if args.run is not None:  # the run's own chain: its journal replayed, or its RPC node
        from fedledger.ledger.chain.embedded import EmbeddedChain
        from fedledger.rundir import JOURNAL_FILE, LedgerDeployment

        deployment = LedgerDeployment.read(args.run)
        task = deployment.task
        from_block = max(from_block, deployment.first_block)
        embedded = deployment.backend == "embedded"
        chain: Any = (EmbeddedChain.replay(args.run / JOURNAL_FILE) if embedded
                      else RpcChain(deployment.backend))  # fmt: skip
    else:
        chain = RpcChain(url)  # read-only: no key
    check_task_code(chain, task)
    rewards = task_rewards(ContractLedger(chain, task, None), from_block=from_block)
    if args.json:
        print(json.dumps(rewards.to_dict(), indent=2))
    else:
        _print(rewards)
    return 0


def _claim(args: argparse.Namespace, url: str, task: str) -> int:
    from fedledger.keys import load_key
    from fedledger.ledger.chain import RpcChain
    from fedledger.ledger.contract_ledger import ContractLedger
    from fedledger.ledger.records import Claimed
    from fedledger.ledger.rules import STATUS_SLASHED
    from fedledger.ledger.status import check_task_code

    identity = load_key(args.key, password_file=args.password_file)  # before asking the chain
    chain = RpcChain(url, private_key=identity.private_key)
    check_task_code(chain, task)
    account = chain.accounts()[0]
    ledger = ContractLedger(chain, task, account)
    address = str(account.address)
    earned, claimed = ledger.earned_of(address), ledger.claimed_of(address)
    if ledger.status_of(address) == STATUS_SLASHED:
        raise LedgerError(f"{address} was slashed in the task at {task}: its unclaimed reward "
                          f"({ether(earned - claimed)} tokens) is forfeit")  # fmt: skip
    if earned == claimed:
        raise LedgerError(f"nothing to claim for {address}: it earned {ether(earned)} tokens "
                          f"in the task at {task}, all claimed")  # fmt: skip
    if chain.balance(address) == 0:
        raise LedgerError(f"{address} has no ETH on chain {chain.chain_id} to pay for the "
                          "claim's gas")  # fmt: skip
    result = ledger.claim(address)
    amounts = [e.amount for e in ledger.events(result.block - 1, result.block)
               if isinstance(e, Claimed) and e.tx == result.tx]  # fmt: skip
    if len(amounts) != 1:
        raise LedgerError(f"the claim {result.tx} was mined without its Claimed event")
    amount = amounts[0]
    balance = ledger.token_balance(address)
    if args.json:
        print(json.dumps({"task": task, "account": address, "amount": amount,
                          "balance": balance, "tx": result.tx, "block": result.block},
                         indent=2))  # fmt: skip
    else:
        print(f"claimed {ether(amount)} tokens for {address} (tx {result.tx}, block "
              f"{result.block}); its balance is {ether(balance)} tokens")  # fmt: skip
    return 0


def _print(r: TaskRewards) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False)
    if not out.is_terminal:  # a pipe or a file: never cut an address
        out = Console(highlight=False, width=max(out.width, 200))
    out.print(f"[bold]task {r.task}[/bold] on chain {r.chain_id}: {ether(r.reward_per_round)} "
              f"tokens a round, at most {ether(r.cap)} tokens over {r.max_rounds} rounds "
              f"(token {r.token})")  # fmt: skip
    if not r.members:
        out.print("no member joined yet")
    else:
        table = Table(title="rewards (tokens)", box=box.SIMPLE, title_justify="left")
        for name in ("address", "status", "earned", "claimed", "claimable"):
            table.add_column(name, justify="left" if name in ("address", "status") else "right",
                             no_wrap=True)  # fmt: skip
        for m in r.members:
            table.add_row(m.address, m.status, ether(m.earned), ether(m.claimed),
                          ether(m.claimable))  # fmt: skip
        out.print(table)
    forfeit = f", {ether(r.forfeit)} forfeit (slashed)" if r.forfeit else ""
    out.print(f"total: {ether(r.total_earned)} earned of the cap {ether(r.cap)} "
              f"({r.max_rounds} x {ether(r.reward_per_round)}), {ether(r.total_claimed)} "
              f"claimed, {ether(r.total_claimable)} claimable{forfeit}; token supply "
              f"{ether(r.token_supply)}")  # fmt: skip


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rewards",
        parents=[common],
        help="what a task's members earned, claimed and may claim; --claim mints yours",
        description="Read a task's rewards from its chain: per member, the reward credited "
        "by the task (earned), minted to it (claimed) and still claimable, with the totals and "
        "the task's cap (max rounds x reward per round); no key needed. With --claim and "
        "--key, claim the key's account's reward (one transaction, paid by that account) and "
        "print the amount minted.",
    )
    p.add_argument("--rpc", default=None, metavar="URL", help="JSON-RPC URL of the chain")
    p.add_argument("--task", default=None, metavar="ADDRESS", help="the Task's address")
    p.add_argument("--run", type=Path, default=None, metavar="DIR",
                   help="instead of --rpc and --task: a `fedledger run` directory (its "
                   "embedded chain's journal, or its chain)")  # fmt: skip
    p.add_argument("--claim", action="store_true",
                   help="claim the --key account's earned reward")  # fmt: skip
    p.add_argument("--key", type=Path, default=None, metavar="KEYFILE",
                   help="with --claim: the claiming account's key file (hex or keystore, "
                   "mode 0600); it pays the gas")  # fmt: skip
    password_option(p, "the --key keystore")
    p.add_argument("--from-block", type=int, default=0, metavar="N",
                   help="read the Claimed events from block N on (default 0: the whole chain, "
                   "checked against the contract)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_rewards)
