"""``fedledger model``: what to do with a node's trained model (``export``: to plain PyTorch,
docs/export.md)."""

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


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``fedledger model`` and its actions."""
    group = sub.add_parser(
        "model",
        help="a node's trained model: export it to plain PyTorch",
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
