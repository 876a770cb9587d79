"""``fedledger model``: what to do with a node's trained model (``export``: to plain PyTorch,
docs/export.md), and the task's model NFTs (``mint``, ``nfts``: docs/governance.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fedledger.cli.common import console

_EXPORT_DESCRIPTION = """\
Write a node's final model to DIR for plain PyTorch (no fedledger needed to use it):

  model.pt     torch.load(path, weights_only=True) -> {"state_dict": ..., "features",
               "classes", "mean", "std", ...}: load_state_dict into the same architecture
               (fine-tuning)
  model.pt2    torch.export program: raw features in (standardized inside when the task
               standardizes), logits out
  export.json  the same metadata, for any language

The model is the one in the node's state_dir/summary.json (or --cid); its blob, read from
state_dir/blobs, must hash to its CID. The node's state_dir/model.json says how to rebuild
and feed the model.
"""


def cmd_export(args: argparse.Namespace) -> int:
    from fedledger.export import checkpoint_snippet, export_model

    result = export_model(args.node, args.out, cid=args.cid)
    for warning in result.warnings:
        console.print(f"warning: {warning}", soft_wrap=True, highlight=False, markup=False)
    print(f"exported model {result.model_cid} of task {result.task!r} to {result.out}:")
    print(f"  {result.checkpoint}   state dict + preprocessing (torch.load)")
    if result.program is not None:
        print(f"  {result.program}  raw features in, logits out (torch.export.load)")
    print(f"  {result.info}")
    print("\nload it with plain PyTorch:\n")
    print(result.snippet)
    if result.program is not None:
        print("\nor, to fine-tune, the state dict:\n")
        print(checkpoint_snippet(result.checkpoint))
    return 0


def _nft_target(args: argparse.Namespace, key: bytes | None) -> tuple[Any, str, str, int]:
    """The chain, task, NFT contract and first block the options name."""
    from fedledger.cli.common import rpc_url
    from fedledger.cli.task import check_address
    from fedledger.errors import ConfigError
    from fedledger.ledger.chain import RpcChain

    if args.run is not None:
        from fedledger.ledger.chain.embedded import EmbeddedChain
        from fedledger.rundir import JOURNAL_FILE, LedgerDeployment

        if args.rpc is not None or args.task is not None or args.nft is not None:
            raise ConfigError("--run names the chain, task and NFT: without --rpc, --task or "
                              "--nft", field="run")  # fmt: skip
        d = LedgerDeployment.read(args.run)
        if d.nft is None:
            raise ConfigError(f"the run in {args.run} has no model NFT contract", field="run")
        if d.backend == "embedded":
            if key is not None:
                raise ConfigError("the run's embedded chain ended with the run: mint on a live "
                                  "chain (--rpc, --task, --nft)", field="run")  # fmt: skip
            return EmbeddedChain.replay(args.run / JOURNAL_FILE), d.task, d.nft, d.first_block
        return RpcChain(d.backend, private_key=key), d.task, d.nft, d.first_block
    if args.rpc is None or args.task is None or args.nft is None:
        raise ConfigError("give --rpc URL, --task ADDRESS and --nft ADDRESS (printed by `task "
                          "deploy`), or --run DIR", field="rpc")  # fmt: skip
    chain = RpcChain(rpc_url(args.rpc, field="rpc"), private_key=key)
    return (chain, check_address(args.task, field="task"), check_address(args.nft, field="nft"),
            0)  # fmt: skip


def cmd_mint(args: argparse.Namespace) -> int:
    from fedledger.config.task import config_from_document
    from fedledger.incentives.models import EPSILON_UNIT, models_to_mint
    from fedledger.keys import load_key
    from fedledger.ledger.contract_ledger import ContractLedger
    from fedledger.ledger.governance import ModelNFT

    identity = load_key(args.key, password_file=args.password_file)
    chain, task, nft_address, first = _nft_target(args, identity.private_key)
    ledger = ContractLedger(chain, task, None)
    config = config_from_document(ledger.config_document(first))
    nft = ModelNFT(chain, nft_address, chain.accounts()[0])
    last, _ = nft.last_minted()
    todo = models_to_mint(ledger.events(first - 1 if first else -1), config.privacy_plan(),
                          after=last, rounds=config.rounds)  # fmt: skip
    if not todo:
        print(f"nothing to mint: every finalized round up to {last} is minted")
        return 0
    nft.mint([t.round for t in todo], [t.model for t in todo], [t.epsilon for t in todo])
    for t in todo:
        eps = f", epsilon {t.epsilon / EPSILON_UNIT:g}" if t.epsilon else ""
        print(f"minted model #{t.round} ({t.model.hex()[:16]}{eps})")
    return 0


def cmd_nfts(args: argparse.Namespace) -> int:
    import json

    from fedledger.ledger.governance import ModelNFT

    chain, _, nft_address, _ = _nft_target(args, None)
    minted = ModelNFT(chain, nft_address, None).minted()
    rows = [{"round": m.round, "token_uri": m.token_uri, "parent": m.parent,
             "epsilon": m.epsilon / 1_000_000, "owner": m.owner} for m in minted]  # fmt: skip
    if args.json:
        print(json.dumps({"nft": nft_address, "models": rows}, indent=2))
        return 0
    print(f"model NFT {nft_address}: {len(rows)} minted (token id = round)")
    for r in rows:
        eps = f", epsilon {r['epsilon']:g}" if r["epsilon"] else ""
        print(f"  #{r['round']:<4} {r['token_uri']}  parent #{r['parent']}{eps}, owner "
              f"{r['owner']}")  # fmt: skip
    return 0


def _nft_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpc", default=None, metavar="URL", help="JSON-RPC URL of the chain")
    p.add_argument("--task", default=None, metavar="ADDRESS", help="the Task's address")
    p.add_argument("--nft", default=None, metavar="ADDRESS", help="its model NFT contract")
    p.add_argument("--run", type=Path, default=None, metavar="DIR",
                   help="instead: a `fedledger run` directory")  # fmt: skip


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``fedledger model`` and its actions."""
    group = sub.add_parser(
        "model",
        help="a node's trained model: export it to plain PyTorch; the task's model NFTs",
        description="What to do with a node's trained model.",
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser(
        "export",
        parents=[common],
        help="write a node's final model as model.pt and model.pt2 for plain PyTorch",
        description=_EXPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--node", required=True, type=Path, metavar="NODE_TOML",
                   help="the node's configuration (node.toml, or its folder)")  # fmt: skip
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="where to write the export (created)")  # fmt: skip
    p.add_argument("--cid", default=None,
                   help="export this model blob instead of the node's final model")  # fmt: skip
    p.set_defaults(func=cmd_export)

    p = actions.add_parser(
        "mint",
        parents=[common],
        help="mint the task's finalized models as NFTs (in order, up to the last)",
        description="Mint every finalized model not minted yet as a token of the task's model "
        "NFT (token id = round, owned by the task's governance), with the epsilon the "
        "accountant gives (the audit checks it). An active member, the task's owner or its "
        "governor may mint.",
    )
    _nft_options(p)
    p.add_argument("--key", required=True, type=Path, metavar="KEYFILE",
                   help="the minting account's key file; it pays the gas")  # fmt: skip
    from fedledger.cli.common import password_option

    password_option(p, "the --key keystore")
    p.set_defaults(func=cmd_mint)

    p = actions.add_parser("nfts", parents=[common], help="the task's minted model NFTs",
                           description="Every minted model NFT: its round, token URI (the "
                           "model's CID), parent and epsilon.")  # fmt: skip
    _nft_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_nfts)
