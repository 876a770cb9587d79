"""One node of a deployment, over gRPC (``fedledger node``): its key, its transport, its
ledger, then the node until the task's last round."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedledger.config.node import NodeConfig
from fedledger.errors import ConfigError, RunFailed
from fedledger.gossip.grpc_transport import GrpcTransport
from fedledger.gossip.identity import Identity
from fedledger.rundir import SUMMARY_FILE

if TYPE_CHECKING:
    from fedledger.api import DataSource, ModelFactory
    from fedledger.ledger.records import Ledger

log = logging.getLogger("fedledger.run")


def load_identity(path: Path, *, password_file: Path | None = None) -> Identity:
    """The node's key from ``path``: hex or an encrypted keystore, mode 0600 (fedledger.keys;
    the password from ``password_file`` or ``$FEDLEDGER_KEY_PASSWORD``). A missing file gets a
    new random key: a keystore when a password is set, hex (mode 0600) otherwise."""
    from fedledger.keys import key_password

    password = key_password(password_file)
    if path.exists():
        return Identity.load(path, password=password)
    identity = Identity.generate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {str(path.parent)!r}: {exc}", field="key_file") from exc
    if password is not None:
        identity.save_keystore(path, password)
    else:
        identity.save(path)
    return identity


def node_io(
    cfg: NodeConfig, *, password_file: Path | None = None
) -> tuple[Identity, GrpcTransport, Ledger | None]:
    """A deployed node's key, its gRPC transport (bound when the node starts) and, with
    ``chain`` and ``task_address`` in its configuration, its handle on the task."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    identity = load_identity(cfg.key_file, password_file=password_file)
    host, _, port = cfg.listen.rpartition(":")
    try:
        transport = GrpcTransport(host=host, port=int(port))
    except ValueError as exc:
        raise ConfigError(f"bad listen address {cfg.listen!r}", field="listen") from exc
    cfg.task.check_nodes()
    ledger: Ledger | None = None
    if cfg.chain is not None and cfg.task_address is not None:
        # Imported here: a node without a chain never loads web3 (docs/performance.md,
        # "Start-up").
        from eth_account import Account

        from fedledger.ledger.chain import RpcChain
        from fedledger.ledger.contract_ledger import ContractLedger
        from fedledger.ledger.status import check_task_code

        chain = RpcChain(cfg.chain, private_key=identity.private_key)
        # Before any stake goes to it: the address holds this version's Task contract, whose
        # rules (stake returned on leave, slashing only on evidence) the node can rely on.
        check_task_code(chain, cfg.task_address)
        ledger = ContractLedger(chain, cfg.task_address, Account.from_key(identity.private_key))
    return identity, transport, ledger


def run_node(
    cfg: NodeConfig,
    *,
    password_file: Path | None = None,
    model: ModelFactory | None = None,
    data: DataSource | None = None,
    label_column: str | None = None,
    on_start: Callable[[str], None] | None = None,
    on_round: Callable[[Mapping[str, Any]], None] | None = None,
    serve: bool = False,
    on_serving: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one node over gRPC until the task's last round (``fedledger node``); its summary
    is also written to ``state_dir/summary.json``. Raises :class:`RunFailed` when the node
    did not complete the task (refused, failed, stalled, or no round produced a model).
    ``on_start`` gets the node's address once its key is loaded, ``on_round`` each round's
    record (rounds.jsonl's). With ``serve``, a node whose task completed keeps serving its
    blobs (to members and auditors) until SIGINT or SIGTERM, its summary already written;
    ``on_serving`` gets its endpoint then."""
    from fedledger.api import make_node

    identity, transport, ledger = node_io(cfg, password_file=password_file)
    if on_start is not None:
        on_start(identity.address)
    node = make_node(cfg, identity=identity, transport=transport, ledger=ledger, model=model,
                     data=data, label_column=label_column)  # fmt: skip
    node.on_round = on_round
    node.serve_after = serve
    node.on_serving = on_serving

    def finished(summary: dict[str, Any]) -> None:
        (cfg.state_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))

    node.on_finished = finished
    summary = asyncio.run(node.run())
    finished(summary)
    check_summary(summary)
    return summary


def check_summary(summary: dict[str, Any]) -> None:
    """Raise :class:`RunFailed` unless the node completed its task."""
    if summary.get("refused"):
        raise RunFailed(f"the task refused this node: {summary['refused']}")
    if summary.get("expelled"):
        raise RunFailed(f"the task expelled this node: {summary['expelled']}")
    if summary.get("withdrew"):
        return  # it left the task as its data owner's consent policy says
    if summary.get("failure"):
        raise RunFailed(str(summary["failure"]))
    if not summary.get("final_model"):
        raise RunFailed("the node ended without a final model")
    if not summary.get("aggregated_rounds"):
        raise RunFailed("no round produced a model: every aggregation failed (see node.log)")
