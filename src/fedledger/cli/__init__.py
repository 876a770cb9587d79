"""The ``fedledger`` command line.

Whatever goes wrong, ``fedledger`` prints one line on stderr and exits non-zero: a
:class:`~fedledger.errors.FedledgerError` as ``error: <message>`` with status 2, anything else
as ``error: unexpected <Type>: <message>`` with status 1; Ctrl-C exits 130 quietly. The global
``--debug`` flag (or ``FEDLEDGER_DEBUG=1`` in the environment, which reaches the node processes
of ``fedledger run``) adds the traceback; a node also writes it to its node.log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from rich.text import Text

from fedledger import __version__
from fedledger.cli import (
    audit,
    chain,
    explorer,
    governance,
    keys,
    model,
    node,
    rewards,
    simulate,
    status,
    task,
)
from fedledger.cli.common import console
from fedledger.errors import FedledgerError

EXIT_ERROR = 2
"""A FedledgerError: bad input, a failed chain, ... (``error: <message>``)."""
EXIT_UNEXPECTED = 1
"""Any other exception: a bug or an untranslated third-party error."""
EXIT_INTERRUPTED = 130


_DEBUG_HELP = "on an error, print the traceback too"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedledger",
        description="Decentralized federated learning with a verifiable ledger.",
    )
    parser.add_argument("--version", action="version", version=f"fedledger {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    # --debug is global: accepted after the command too (without overriding one given before).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (simulate, node, keys, task, status, rewards, governance, model, audit, chain,
                  explorer):  # fmt: skip
        group.register(sub, common)
    return parser


def _one_line(text: str) -> str:
    """``text`` on one line: exception messages may span several (web3's, TOML's, ...)."""
    return " ".join(text.split())


def _print_error(message: str) -> None:
    # A Text, not markup: a message may hold brackets ("peers[0]", "[task]"); soft_wrap keeps
    # it on one line whatever the terminal's width.
    console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or bool(os.environ.get("FEDLEDGER_DEBUG"))
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except FedledgerError as exc:
        if debug:
            traceback.print_exc()
        _print_error(_one_line(str(exc)) or type(exc).__name__)
        return EXIT_ERROR
    except Exception as exc:  # the one place that turns anything into one line
        if debug:
            traceback.print_exc()
        elif logging.getLogger().hasHandlers():  # e.g. a node's node.log: keep the traceback
            logging.getLogger("fedledger.cli").error("unexpected error", exc_info=True)
        hint = "" if debug else " (run with --debug for the traceback)"
        _print_error(f"unexpected {type(exc).__name__}: {_one_line(str(exc))}{hint}")
        return EXIT_UNEXPECTED
    return code


if __name__ == "__main__":
    sys.exit(main())
