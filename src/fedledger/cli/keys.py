"""``fedledger keys``: key files for real deployments, and ETH to fund them.

``new``, ``import`` and ``address`` print the key's address alone on stdout (one line, for
scripts: ``ADDR=$(fedledger keys new --out node.json)``); notes and next steps go to stderr.
Secrets never come from the command line: a keystore's password from ``--password-file``
(first line, mode 0600) or ``$FEDLEDGER_KEY_PASSWORD``, an imported key from ``--hex-file``
(mode 0600) or ``$FEDLEDGER_IMPORT_KEY``. The logic is in :mod:`fedledger.keys`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.markup import escape

from fedledger.cli.common import console, password_option, rpc_url
from fedledger.errors import ConfigError


def _next_steps(address: str) -> None:
    console.print(
        f"next: fund {address} with the task's minimum stake plus gas (a node pays for its "
        "transactions), e.g. on a local development chain\n"
        f"  fedledger keys fund {address} --rpc http://127.0.0.1:8545 --eth 1\n"
        "and on a real network from a funded wallet (or `fedledger keys fund` with "
        "--from-keyfile); then set key_file in node.toml to this file",
        highlight=False,
        soft_wrap=True,
    )


def cmd_keys_new(args: argparse.Namespace) -> int:
    from fedledger import keys

    if args.plain and args.password_file is not None:
        raise ConfigError("--plain writes an unencrypted hex key: no --password-file",
                          field="plain")  # fmt: skip
    password = None if args.plain else keys.key_password(args.password_file)
    if args.plain and args.light_kdf:
        raise ConfigError("--light-kdf is for keystores, not --plain hex", field="light-kdf")
    identity = keys.new_key_file(
        args.out, password=password, plain=args.plain, light_kdf=args.light_kdf
    )
    print(identity.address, flush=True)
    kind = (
        "unencrypted hex key (for local development chains only)"
        if args.plain
        else "encrypted keystore"
    )
    console.print(f"wrote {escape(os.fspath(args.out))}: {kind}, mode 0600", highlight=False,
                  soft_wrap=True)  # fmt: skip
    _next_steps(identity.address)
    return 0


def cmd_keys_import(args: argparse.Namespace) -> int:
    from fedledger import keys

    identity = keys.import_key_file(
        args.out,
        password=keys.key_password(args.password_file),
        hex_file=args.hex_file,
        light_kdf=args.light_kdf,
    )
    print(identity.address, flush=True)
    console.print(f"wrote {escape(os.fspath(args.out))}: encrypted keystore, mode 0600",
                  highlight=False, soft_wrap=True)  # fmt: skip
    return 0


def cmd_keys_address(args: argparse.Namespace) -> int:
    from fedledger import keys

    url = rpc_url(args.rpc, field="rpc") if args.rpc is not None else None
    identity = keys.load_key(args.file, password_file=args.password_file)
    print(identity.address, flush=True)
    if url is not None:
        print(f"{keys.format_eth(keys.balance(url, identity.address))} ETH", flush=True)
    return 0


def cmd_keys_fund(args: argparse.Namespace) -> int:
    from fedledger import keys

    url = rpc_url(args.rpc, field="rpc")
    wei = keys.parse_eth(args.eth)
    targets = keys.parse_addresses(args.addresses)  # all checked before the chain is asked
    sender = keys.funding_identity(url, keyfile=args.from_keyfile,
                                   password_file=args.password_file)  # fmt: skip
    shown: list[keys.Transfer] = []

    def show(transfer: keys.Transfer) -> None:
        if not shown:
            console.print(f"funding from {sender.address} on {escape(url)}", highlight=False,
                          soft_wrap=True)  # fmt: skip
        shown.append(transfer)
        print(f"{transfer.to} {keys.format_eth(transfer.wei)} ETH tx {transfer.tx_hash} "
              f"block {transfer.block}", flush=True)  # fmt: skip

    keys.fund(url, targets, wei, sender=sender, on_transfer=show)
    return 0


def _light_kdf_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--light-kdf",
        action="store_true",
        help="a cheaper key derivation (scrypt n = 2^12, 4 MiB, like geth's --lightkdf) for "
        "small machines: a weak password is then easier to guess",
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser(
        "keys",
        parents=[common],
        help="key files for real deployments, and ETH to fund them",
        description="Create, import and inspect node key files (encrypted keystores), and "
        "fund their addresses. Secrets never come from the command line (docs/keys.md).",
    )
    keys_sub = group.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    p = keys_sub.add_parser(
        "new",
        parents=[common],
        help="a fresh random key, saved as an encrypted keystore; prints its address",
        description="Write a fresh random key to --out (mode 0600, never over an existing "
        "file): an encrypted keystore (Ethereum's keystore v3), or with --plain hex. Prints "
        "the address on stdout, what to do next on stderr.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the key file")
    password_option(p, "the new keystore")
    p.add_argument(
        "--plain",
        action="store_true",
        help="unencrypted hex instead of a keystore: for local development chains only",
    )
    _light_kdf_option(p)
    p.set_defaults(func=cmd_keys_new)

    p = keys_sub.add_parser(
        "import",
        parents=[common],
        help="save an existing hex key as an encrypted keystore; prints its address",
        description="Read a hex key from --hex-file (mode 0600) or $FEDLEDGER_IMPORT_KEY "
        "(never from the command line) and save it to --out as an encrypted keystore (mode "
        "0600, never over an existing file). Prints the address on stdout.",
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the keystore")
    p.add_argument(
        "--hex-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="the key in hex (mode 0600); default: $FEDLEDGER_IMPORT_KEY",
    )
    password_option(p, "the keystore")
    _light_kdf_option(p)
    p.set_defaults(func=cmd_keys_import)

    p = keys_sub.add_parser(
        "address",
        parents=[common],
        help="print a key file's address (and with --rpc its balance)",
        description="Print the address of a key file (hex or keystore; a keystore is "
        "decrypted, which checks its password) on stdout; with --rpc URL a second line, the "
        "balance on that chain: '<amount> ETH'.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the key file")
    password_option(p, "the keystore")
    p.add_argument("--rpc", default=None, metavar="URL", help="also print the balance there")
    p.set_defaults(func=cmd_keys_address)

    p = keys_sub.add_parser(
        "fund",
        parents=[common],
        help="send ETH from the deployer's key to addresses",
        description="Send --eth ETH to each ADDRESS from the deployer's key (--from-keyfile "
        "or $FEDLEDGER_DEPLOYER_KEY; by default anvil's first account, on a local development "
        "chain only). Prints one line per transfer: '<address> <amount> ETH tx <hash> block "
        "<n>'.",
    )
    p.add_argument("addresses", nargs="+", metavar="ADDRESS", help="the addresses to fund")
    p.add_argument("--rpc", required=True, metavar="URL", help="the chain's JSON-RPC URL")
    p.add_argument("--eth", required=True, metavar="AMOUNT", help="ETH to each address")
    p.add_argument(
        "--from-keyfile",
        type=Path,
        default=None,
        metavar="FILE",
        help="the funding key (hex or keystore); default: $FEDLEDGER_DEPLOYER_KEY, else "
        "anvil's first account on a local development chain",
    )
    password_option(p, "the --from-keyfile keystore")
    p.set_defaults(func=cmd_keys_fund)
