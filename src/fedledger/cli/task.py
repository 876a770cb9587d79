"""``fedledger task``: deploy a task on a chain, allowlist its members, start its first round.

A real deployment spans machines: a coordinator deploys the task (``task deploy``), sends each
site task.toml, the RPC URL and the task's address; each site runs ``fedledger node``, which
joins with its stake; once enough sites joined the owner starts round 1 (``task start``). The
deployer's key never comes from the command line (:func:`fedledger.keys.deployer_identity`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedledger.cli.common import console, password_option, rpc_url
from fedledger.errors import ConfigError, LedgerError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from fedledger.ledger.chain import RpcChain
    from fedledger.ledger.contract_ledger import ContractLedger
    from fedledger.ledger.records import Member

TOKEN_DECIMALS = 18


def check_address(text: str, *, field: str) -> str:
    """An address as the command line takes it: ``0x`` and 40 hex digits (any case)."""
    from fedledger.rundir import is_hex_address

    if not is_hex_address(text):
        raise ConfigError(f"not an address (0x and 40 hex digits): {text!r}", field=field)
    from eth_utils.address import to_checksum_address

    return str(to_checksum_address(text))


def ether(wei: int) -> str:
    """Wei in ETH (or token units in whole tokens, 18 decimals), exactly, without trailing
    zeros: ``10**16`` is ``"0.01"``."""
    text = format(Decimal(wei).scaleb(-TOKEN_DECIMALS), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _read_chain(url: str) -> RpcChain:
    from fedledger.ledger.chain import RpcChain

    return RpcChain(url)  # ChainUnavailable (one line) if nothing answers


def _signer(args: argparse.Namespace, url: str, chain_id: int) -> bytes:
    """The deployer's (owner's) key: --deployer-keyfile or $FEDLEDGER_DEPLOYER_KEY; anvil's
    first development account on a local development chain only."""
    from fedledger import keys

    identity = keys.deployer_identity(keyfile=args.deployer_keyfile,
                                      password_file=args.password_file)  # fmt: skip
    if identity is not None:
        return identity.private_key
    if not keys.is_dev_chain(chain_id, url):
        raise ConfigError(f"the chain at {url} (chain id {chain_id}) is not a local development "
                          f"chain: give the deployer's key with {keys.DEPLOYER_KEY_ENV} or "
                          "--deployer-keyfile", field="deployer")  # fmt: skip
    return keys.dev_deployer_key()


def _check_key_options(args: argparse.Namespace) -> None:
    if args.password_file is not None and args.deployer_keyfile is None:
        raise ConfigError("--password-file unlocks the --deployer-keyfile keystore: give both",
                          field="password-file")  # fmt: skip


@dataclass(frozen=True)
class _Owner:
    chain: RpcChain
    account: LocalAccount
    ledger: ContractLedger


def _owner_handle(args: argparse.Namespace, url: str, task: str) -> _Owner:
    """The task at ``task`` signed by the deployer's key, after checking that the key is the
    task's owner."""
    from fedledger.ledger.chain import RpcChain
    from fedledger.ledger.contract_ledger import ContractLedger
    from fedledger.ledger.status import check_task_code, owner_of

    chain_id = _read_chain(url).chain_id
    chain = RpcChain(url, private_key=_signer(args, url, chain_id))
    check_task_code(chain, task)
    account = chain.accounts()[0]
    ledger = ContractLedger(chain, task, account)
    owner = owner_of(ledger)
    if owner != account.address:
        raise LedgerError(f"only the task's owner {owner} may do this; the deployer key given "
                          f"is {account.address}")  # fmt: skip
    return _Owner(chain=chain, account=account, ledger=ledger)


# ------------------------------------------------------------------------------------------
# deploy
# ------------------------------------------------------------------------------------------


def node_toml(*, url: str, task_address: str, nodes: int, label_column: str | None) -> str:
    """The node.toml each site writes (its own index, data and address filled in)."""
    label = f'"{label_column}"' if label_column else '"label"'
    lines = [
        (f'chain = "{url}"', "the chain's JSON-RPC URL, as this site reaches it"),
        (f'task_address = "{task_address}"', "the Task contract"),
        ('task = "task.toml"', "the task file, byte for byte as sent (check its sha256)"),
        ("index = 0", f"this site's number: 0 to {nodes - 1}, a different one per site"),
        ('key_file = "node.key"', "this site's key (hex or keystore, mode 0600): its address "
                                  "pays the stake and gas"),
        ('state_dir = "state"', "blobs, state, node.log"),
        ('data = "site.csv"', "this site's own data (CSV or NPZ), never sent anywhere"),
        (f"label_column = {label}", "CSV only: the column holding the labels"),
        ('listen = "HOST:50051"', "an address of this machine the other sites can reach "
                                  "(published on chain)"),
    ]  # fmt: skip
    width = max(len(code) for code, _ in lines) + 2
    return "\n".join(f"{code:<{width}}# {note}" for code, note in lines) + "\n"


def cmd_deploy(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from fedledger.config import load_config
    from fedledger.ledger.chain import RpcChain
    from fedledger.ledger.contract_ledger import deploy_task_contracts

    url = rpc_url(args.rpc, field="rpc")
    _check_key_options(args)
    cfg = load_config(args.config)  # every mistake in the file fails before the chain is asked
    try:
        raw = args.config.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {str(args.config)!r}: {exc.strerror or exc}",
                          field="config") from exc  # fmt: skip
    file_sha256 = hashlib.sha256(raw).hexdigest()
    chain_id = _read_chain(url).chain_id
    chain = RpcChain(url, private_key=_signer(args, url, chain_id))
    owner = chain.accounts()[0]
    if chain.balance(owner.address) == 0:
        raise LedgerError(f"the deployer {owner.address} has no ETH on chain {chain_id} to pay "
                          "for the deployment")  # fmt: skip
    first_block = chain.block_number()
    console.print(f"deploying [bold]{escape(cfg.name)}[/bold] on chain {chain_id} as "
                  f"{owner.address}...", highlight=False, soft_wrap=True)  # fmt: skip
    contracts = deploy_task_contracts(chain, cfg, owner=owner)
    task_address, token = contracts.task, contracts.token
    snippet = node_toml(url=url, task_address=task_address, nodes=cfg.nodes,
                        label_column=cfg.data.label_column)  # fmt: skip
    result = {
        "task": task_address,
        "token": token,
        "owner": owner.address,
        "chain_id": chain_id,
        "rpc": url,
        "first_block": first_block + 1,
        "nft": contracts.nft,
        "governor": contracts.governor,
        "timelock": contracts.timelock,
        "config_digest": "0x" + cfg.digest().hex(),
        "task_toml": {"path": str(args.config), "sha256": file_sha256},
        "nodes": cfg.nodes,
        "min_stake": cfg.ledger.min_stake,
        "allowlist": cfg.ledger.allowlist,
        "node_toml": snippet,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    start = f"fedledger task start --rpc {url} --task {task_address} --config {args.config}"
    governance = []
    if contracts.governor is not None:
        governance = [
            f"  governor        {contracts.governor}  (token holders vote: fedledger propose)",
            f"  timelock        {contracts.timelock}  (the task's governor: runs passed votes)",
        ]
    out = [
        f"Task '{cfg.name}' deployed on chain {chain_id} ({url})",
        f"  task address    {task_address}",
        f"  token address   {token}",
        f"  model NFT       {contracts.nft}  (each finalized model a token: model mint)",
        *governance,
        f"  owner           {owner.address}",
        f"  chain id        {chain_id}",
        f"  config digest   0x{cfg.digest().hex()}  (sha256 of the canonical JSON: the task's "
        "identity on chain)",
        f"  first block     {first_block + 1}  (fedledger status --from-block)",
        "",
        f"Send each of the {cfg.nodes} sites:",
        f"  task file       {args.config}",
        f"                  sha256 {file_sha256}  (sha256sum task.toml must print this)",
        f"  RPC URL         {url}",
        f"  task address    {task_address}",
        "",
        "Each site's node.toml:",
        "",
        *("  " + line for line in snippet.splitlines()),
        "",
        f"Each site's key must hold at least {ether(cfg.ledger.min_stake)} ETH (the stake) "
        "plus gas; then it runs: fedledger node --config node.toml",
    ]
    if cfg.ledger.allowlist:
        out.append(f"The task has an allowlist: allow each site's address first: fedledger task "
                   f"allow --rpc {url} --task {task_address} ADDRESS...")  # fmt: skip
    out.append(f"Once {cfg.nodes} sites joined, start round 1: {start}")
    out.append(f"Follow it in a browser: fedledger explorer --rpc {url} --task {task_address} "
               f"--nft {contracts.nft}")  # fmt: skip
    print("\n".join(out))
    return 0


# ------------------------------------------------------------------------------------------
# start
# ------------------------------------------------------------------------------------------


def _joined(members: list[Member]) -> str:
    return ", ".join(m.address for m in members) if members else "none"


def cmd_start(args: argparse.Namespace) -> int:
    from fedledger.config import load_config

    url = rpc_url(args.rpc, field="rpc")
    task = check_address(args.task, field="task")
    _check_key_options(args)
    if args.min_members is not None and args.min_members < 1:
        raise ConfigError(f"must be at least 1, got {args.min_members}", field="min-members")
    cfg = load_config(args.config)
    handle = _owner_handle(args, url, task)
    ledger = handle.ledger
    on_chain = ledger.rules().config_digest
    if bytes(on_chain) != cfg.digest():
        raise ConfigError(f"{args.config} is not the task deployed at {task}: its config digest "
                          f"is 0x{cfg.digest().hex()}, the contract's 0x{bytes(on_chain).hex()}",
                          field="config")  # fmt: skip
    current = ledger.current_round()
    if current > 0:
        raise LedgerError(f"the task at {task} is already started (round {current})")
    need = args.min_members if args.min_members is not None else cfg.nodes
    members = ledger.members()
    if len(members) < need:
        missing = need - len(members)
        raise LedgerError(f"{len(members)} of {need} members joined ({_joined(members)}): "
                          f"{missing} missing; not started")  # fmt: skip
    if cfg.secure_aggregation:
        from fedledger.node.drivers.secagg import keys_ready

        waiting = keys_ready(ledger.events(-1, ledger.head()), [m.address for m in members])
        if waiting:
            raise LedgerError(f"secure aggregation: {', '.join(waiting)} registered no key "
                              f"blob for all members yet (their nodes do it once task.nodes = "
                              f"{cfg.nodes} members joined); not started")  # fmt: skip
    ledger.start()
    print(f"{len(members)} members joined:")
    for m in members:
        print(f"  {m.address}  stake {ether(m.stake)} ETH  {m.endpoint}")
    print("round 1 started")
    return 0


# ------------------------------------------------------------------------------------------
# allow
# ------------------------------------------------------------------------------------------


def _owner_and_accounts(args: argparse.Namespace) -> tuple[_Owner, str, list[str]]:
    """The owner's handle on ``--task``, the task address and the ADDRESS arguments, each
    checked."""
    url = rpc_url(args.rpc, field="rpc")
    task = check_address(args.task, field="task")
    accounts = [check_address(a, field="address") for a in args.addresses]
    _check_key_options(args)
    return _owner_handle(args, url, task), task, accounts


def cmd_allow(args: argparse.Namespace) -> int:
    handle, task, accounts = _owner_and_accounts(args)
    if not handle.ledger.rules().allowlist_only:
        raise ConfigError(f"the task at {task} has no allowlist (ledger.allowlist = false): "
                          "anyone with the minimum stake may join", field="task")  # fmt: skip
    for account in accounts:
        handle.ledger.allow(account)
        print(f"allowed {account}")
    return 0


def cmd_grant_reader(args: argparse.Namespace) -> int:
    handle, _, accounts = _owner_and_accounts(args)
    for account in accounts:
        if args.revoke:
            handle.ledger.revoke_reader(account)
            print(f"revoked read access of {account}")
        else:
            handle.ledger.grant_reader(account)
            print(f"granted read access to {account}")
    return 0


# ------------------------------------------------------------------------------------------
# the parsers
# ------------------------------------------------------------------------------------------


def _chain_options(p: argparse.ArgumentParser, *, task: bool) -> None:
    p.add_argument("--rpc", required=True, metavar="URL", help="JSON-RPC URL of the chain")
    if task:
        p.add_argument("--task", required=True, metavar="ADDRESS", help="the Task's address")
    p.add_argument(
        "--deployer-keyfile",
        type=Path,
        default=None,
        metavar="FILE",
        help="the task owner's key: a hex key file or an encrypted keystore (mode 0600; or the "
        "hex key in $FEDLEDGER_DEPLOYER_KEY). Default on a local development chain only: "
        "anvil's first development account",
    )
    password_option(p, "the --deployer-keyfile keystore")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    task = sub.add_parser("task", parents=[common], help="deploy and start a task on a chain")
    task_sub = task.add_subparsers(dest="task_command", required=True, metavar="ACTION")

    p = task_sub.add_parser(
        "deploy",
        parents=[common],
        help="deploy a task's contracts and print what each site needs",
        description="Validate the task configuration, deploy its RewardToken and Task "
        "contracts, and print the task's address, the token's, the chain id, the config digest "
        "and what each site needs: task.toml (with its sha256), the RPC URL, the task address "
        "and a node.toml.",
    )
    p.add_argument("--config", required=True, type=Path, help="task configuration (TOML)")
    _chain_options(p, task=False)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_deploy)

    p = task_sub.add_parser(
        "start",
        parents=[common],
        help="the owner starts round 1, once enough members joined",
        description="Start round 1 of a deployed task: refused while fewer members joined than "
        "the task's nodes (or --min-members), when task.toml is not the deployed task's, or if "
        "already started.",
    )
    _chain_options(p, task=True)
    p.add_argument("--config", required=True, type=Path, help="the task's task.toml")
    p.add_argument("--min-members", type=int, default=None, metavar="N",
                   help="start with at least N members (default: the task's nodes)")  # fmt: skip
    p.set_defaults(func=cmd_start)

    p = task_sub.add_parser(
        "allow",
        parents=[common],
        help="the owner allowlists accounts (tasks with ledger.allowlist = true)",
    )
    _chain_options(p, task=True)
    p.add_argument("addresses", nargs="+", metavar="ADDRESS", help="accounts that may join")
    p.set_defaults(func=cmd_allow)

    p = task_sub.add_parser(
        "grant-reader",
        parents=[common],
        help="the owner lets accounts (auditors) download the task's blobs",
        description="Grant read access to the task's blobs (every update and model) to "
        "accounts that are not members, whatever the access policy: an auditor's key. "
        "Grants no membership and no stake.",
    )
    _chain_options(p, task=True)
    p.add_argument("addresses", nargs="+", metavar="ADDRESS", help="the auditors' addresses")
    p.add_argument("--revoke", action="store_true", help="take the read access back")
    p.set_defaults(func=cmd_grant_reader)
