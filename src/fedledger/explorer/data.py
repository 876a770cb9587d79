"""What the explorer reads: a run directory or a task on a JSON-RPC chain, as one
:class:`Snapshot`.

Everything is read through fedledger's own readers: the run directory's format
(:mod:`fedledger.rundir`: ``ledger.json``, ``chain.jsonl`` replayed by
:meth:`~fedledger.ledger.chain.EmbeddedChain.replay`, ``report.json``, ``audit.json``, the
nodes' ``node.toml`` and ``rounds.jsonl``), the Task contract's typed events and views
(:class:`~fedledger.ledger.contract_ledger.ContractLedger`,
:func:`~fedledger.ledger.status.task_status`), the governor's proposals and the model NFTs
(:mod:`fedledger.ledger.governance`). A source re-reads only when its :meth:`Source.version`
changed: the files' sizes and times for a run directory, the head block for a chain, so the
page can poll it cheaply while a run is in progress.

An embedded run writes its chain's journal when it ends: until then the snapshot holds the
nodes' round records only (and says so in its notes).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fedledger.audit import Auditor, run_auditor, task_auditor
from fedledger.config import TaskConfig, load_config
from fedledger.config.amendments import RulesInForce
from fedledger.config.node import NodeConfig, load_node_config
from fedledger.errors import ConfigError, FedledgerError
from fedledger.gossip.topology import Neighbours, TopologySpec, build_topology
from fedledger.ledger.chain import Chain, EmbeddedChain, RpcChain
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.governance import Governance, MintedModel, ModelNFT, Proposal
from fedledger.ledger.proposals import governor_of
from fedledger.ledger.records import Configured, LedgerEvent, TaskRules
from fedledger.ledger.status import TaskStatus, check_task_code, task_status
from fedledger.node.state import read_rounds as read_state_rounds
from fedledger.node.state import read_status
from fedledger.rundir import (
    AUDIT_FILE,
    JOURNAL_FILE,
    LEDGER_FILE,
    REPORT_FILE,
    TASK_FILE,
    LedgerDeployment,
    read_rounds,
)

__all__ = ["NodeInfo", "RpcSource", "RunSource", "Snapshot", "Source", "open_source"]


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    """One node of a run directory: its index, address and round records so far."""

    index: int
    address: str
    records: tuple[dict[str, Any], ...] = ()
    """``state/rounds.jsonl``: one record per round (docs/report.md), the last one wins."""


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Everything the pages show, read at one moment (see the module docstring)."""

    source: str
    """What was read: ``run DIR`` or ``task ADDRESS on URL``."""
    version: str
    read_at: float
    """Unix time of the reading."""
    in_progress: bool = False
    """A run directory without its report yet: the run is still going."""
    deployment: LedgerDeployment | None = None
    config: TaskConfig | None = None
    """The task's configuration (task.toml, else the one on chain)."""
    rules_in_force: RulesInForce | None = None
    """The configuration by round (governance changes: the ``Configured`` events)."""
    rules: TaskRules | None = None
    """The contract's rules now."""
    status: TaskStatus | None = None
    events: tuple[LedgerEvent, ...] = ()
    nodes: tuple[NodeInfo, ...] = ()
    topology: Neighbours | None = None
    """The nodes' gossip graph by index (run directories)."""
    topology_kind: str | None = None
    report: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None
    """``audit.json``: the audit run at the end of the run."""
    proposals: tuple[Proposal, ...] = ()
    governor: str | None = None
    models: tuple[MintedModel, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def on_chain(self) -> bool:
        return self.status is not None

    def address_index(self) -> dict[str, int]:
        """Node index by lower-case address (run directories)."""
        return {n.address.lower(): n.index for n in self.nodes}


class Source(Protocol):
    description: str

    def version(self) -> str: ...

    def snapshot(self) -> Snapshot: ...

    def auditor(self) -> Auditor: ...


def _json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, None if absent or not (yet) whole."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _stat(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "-"
    return f"{st.st_mtime_ns}:{st.st_size}"


@dataclass
class _ChainData:
    events: tuple[LedgerEvent, ...] = ()
    status: TaskStatus | None = None
    rules: TaskRules | None = None
    config: TaskConfig | None = None
    rules_in_force: RulesInForce | None = None
    proposals: tuple[Proposal, ...] = ()
    models: tuple[MintedModel, ...] = ()
    notes: list[str] = field(default_factory=list)


def _read_chain(
    chain: Chain,
    task: str,
    *,
    from_block: int,
    config: TaskConfig | None,
    governor: str | None,
    nft: str | None,
) -> _ChainData:
    """The task's events, status, rules, configuration by round, proposals and model NFTs."""
    ledger = ContractLedger(chain, task, None)
    out = _ChainData()
    out.events = tuple(ledger.events(from_block - 1 if from_block else -1))
    out.status = task_status(ledger, from_block=from_block)
    out.rules = ledger.rules()
    out.config = config if config is not None else ledger.task_config(from_block)
    history = RulesInForce(base=out.config)
    for e in out.events:
        if isinstance(e, Configured):
            history = history.with_change(e.from_round, e.document)
    out.rules_in_force = history
    if governor is not None:
        try:
            out.proposals = tuple(Governance(chain, governor, None).proposals(from_block))
        except FedledgerError as exc:
            out.notes.append(f"the governor's proposals cannot be read: {exc}")
    if nft is not None:
        try:
            out.models = tuple(ModelNFT(chain, nft, None).minted())
        except FedledgerError as exc:
            out.notes.append(f"the model NFTs cannot be read: {exc}")
    return out


class _Cached:
    """A snapshot re-read only when the version changed (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None

    def version(self) -> str:
        raise NotImplementedError

    def _read(self, version: str) -> Snapshot:
        raise NotImplementedError

    def snapshot(self) -> Snapshot:
        with self._lock:
            version = self.version()
            if self._snapshot is None or self._snapshot.version != version:
                self._snapshot = self._read(version)
            return self._snapshot


class RunSource(_Cached):
    """A ``fedledger run`` directory (finished or in progress)."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        if not run_dir.is_dir():
            raise ConfigError(f"no run directory at {str(run_dir)!r}", field="run")
        markers = [run_dir / n for n in (TASK_FILE, LEDGER_FILE, REPORT_FILE)]
        if not any(p.exists() for p in markers) and not any(run_dir.glob("node-*")):
            raise ConfigError(
                f"{str(run_dir)!r} is not a `fedledger run` directory (no "
                f"{TASK_FILE}, {LEDGER_FILE}, {REPORT_FILE} or node-N)",
                field="run",
            )
        self.run_dir = run_dir
        self.description = f"run {run_dir}"
        self._chain: Chain | None = None
        self._chain_key = ""
        self._chain_lock = threading.Lock()

    def _node_dirs(self) -> list[tuple[int, Path]]:
        found = []
        for d in self.run_dir.glob("node-*"):
            suffix = d.name.removeprefix("node-")
            if suffix.isdigit() and d.is_dir():
                found.append((int(suffix), d))
        return sorted(found)

    def _deployment(self) -> LedgerDeployment | None:
        if not (self.run_dir / LEDGER_FILE).exists():
            return None
        return LedgerDeployment.read(self.run_dir)

    def version(self) -> str:
        parts = [
            _stat(self.run_dir / n)
            for n in (LEDGER_FILE, JOURNAL_FILE, REPORT_FILE, AUDIT_FILE, TASK_FILE)
        ]
        parts += [_stat(d / "state" / "rounds.jsonl") for _, d in self._node_dirs()]
        deployment = self._deployment()
        if deployment is not None and deployment.backend != "embedded":
            try:
                chain = self.chain(deployment)
                parts.append(str(chain.block_number()) if chain is not None else "-")
            except FedledgerError:
                parts.append("unreachable")
        return "/".join(parts)

    def chain(self, deployment: LedgerDeployment) -> Chain | None:
        """The run's chain: the embedded one rebuilt from its journal (again when the journal
        changed; None before the run wrote it), or its JSON-RPC node."""
        with self._chain_lock:
            if deployment.backend != "embedded":
                if self._chain is None:
                    self._chain = RpcChain(deployment.backend)
                return self._chain
            journal = self.run_dir / JOURNAL_FILE
            key = _stat(journal)
            if key == "-":
                return None
            if self._chain is None or key != self._chain_key:
                self._chain = EmbeddedChain.replay(journal)  # checks every block hash
                self._chain_key = key
            return self._chain

    def _nodes(
        self, report: dict[str, Any] | None, config: TaskConfig | None
    ) -> tuple[tuple[NodeInfo, ...], Neighbours | None, str | None]:
        """The nodes (index, address, round records) and their gossip graph. A node's
        ``node.toml`` names its peers and the topology (runs of one process per node); a run
        in one process has only the nodes' state: their ``status.json`` names each address,
        and report.json the topology's kind."""
        configs: dict[int, NodeConfig] = {}
        states: dict[int, Path] = {}
        for index, d in self._node_dirs():
            states[index] = d / "state"
            if (d / "node.toml").exists():
                try:
                    configs[index] = load_node_config(d / "node.toml")
                except (FedledgerError, OSError):
                    continue  # being written
        addresses: dict[int, str] = {}
        for cfg in configs.values():
            for peer in cfg.peers:
                addresses.setdefault(peer.index, peer.address)
        listed = (report or {}).get("addresses")
        nodes = []
        for index, state in states.items():
            status = read_status(state) or {}
            address = addresses.get(index) or str(status.get("address") or "")
            if not address and isinstance(listed, list) and index < len(listed):
                address = str(listed[index])
            records = read_rounds(configs[index]) if index in configs else read_state_rounds(state)
            nodes.append(NodeInfo(index=index, address=address or "?", records=tuple(records)))
        graph = None
        kind = (report or {}).get("topology")
        spec = next(iter(configs.values())).topology if configs else None
        if spec is None and kind in ("full", "ring"):  # no parameter to know
            spec = TopologySpec(kind=str(kind))
        if spec is not None and config is not None and nodes:
            try:
                graph = build_topology(spec, len(nodes), seed=config.seed)
            except FedledgerError:
                graph = None
            kind = spec.kind
        return tuple(nodes), graph, str(kind) if kind is not None else None

    def _read(self, version: str) -> Snapshot:
        report = _json(self.run_dir / REPORT_FILE)
        notes: list[str] = []
        deployment = self._deployment()
        config = (
            load_config(self.run_dir / TASK_FILE) if (self.run_dir / TASK_FILE).exists() else None
        )
        nodes, graph, kind = self._nodes(report, config)
        chain_data = _ChainData(config=config)
        if deployment is None:
            notes.append(
                "no ledger: this run has no chain (consensus or gossip mode without "
                "--chain); the rounds come from the nodes' records"
            )
        else:
            chain = self.chain(deployment)
            if chain is None:
                notes.append(
                    "the run is in progress: the embedded chain's journal is written "
                    "when it ends; until then the rounds come from the nodes' "
                    "records"
                )
            else:
                chain_data = _read_chain(
                    chain,
                    deployment.task,
                    from_block=deployment.first_block,
                    config=config,
                    governor=deployment.governor,
                    nft=deployment.nft,
                )
                notes += chain_data.notes
        return Snapshot(
            source=self.description,
            version=version,
            read_at=time.time(),
            in_progress=report is None,
            deployment=deployment,
            config=chain_data.config,
            rules_in_force=chain_data.rules_in_force,
            rules=chain_data.rules,
            status=chain_data.status,
            events=chain_data.events,
            nodes=nodes,
            topology=graph,
            topology_kind=kind,
            report=report,
            audit=_json(self.run_dir / AUDIT_FILE),
            proposals=chain_data.proposals,
            governor=deployment.governor if deployment is not None else None,
            models=chain_data.models,
            notes=tuple(notes),
        )

    def auditor(self) -> Auditor:
        deployment = self._deployment()
        if deployment is None:
            raise ConfigError("this run has no ledger: nothing to audit", field="run")
        chain = self.chain(deployment)
        if chain is None:
            raise ConfigError(
                "the run is in progress: its chain's journal is written when it "
                "ends; audit it then",
                field="run",
            )
        return run_auditor(self.run_dir, chain=chain)


class RpcSource(_Cached):
    """A task on a JSON-RPC chain (``--rpc URL --task ADDRESS``): the chain alone; the audit
    fetches the blobs from the task's members. A governed task's governor is found on chain
    (the proposer of its timelock); its model NFT contract, when given, lists the minted
    models."""

    def __init__(
        self,
        url: str,
        task: str,
        *,
        from_block: int = 0,
        governor: str | None = None,
        nft: str | None = None,
    ) -> None:
        super().__init__()
        self.chain = RpcChain(url)
        check_task_code(self.chain, task)
        self.url = url
        self.task = task
        self.from_block = from_block
        self.governor = governor
        self.nft = nft
        self._ungoverned = False
        self.description = f"task {task} on {url}"

    def version(self) -> str:
        return str(self.chain.block_number())

    def _governor(self, notes: list[str]) -> str | None:
        """The given governor, or the one found on chain (None: no governance). The timelock
        is immutable: a task found ungoverned is not asked again."""
        if self.governor is None and not self._ungoverned:
            try:
                timelock = ContractLedger(self.chain, self.task, None).rules().governor
                if int(timelock, 16) == 0:
                    self._ungoverned = True
                else:
                    self.governor = governor_of(self.chain, self.task, from_block=self.from_block)
            except FedledgerError as exc:
                notes.append(f"the task's governor cannot be found: {exc}")
        return self.governor

    def _read(self, version: str) -> Snapshot:
        notes: list[str] = []
        governor = self._governor(notes)
        data = _read_chain(
            self.chain,
            self.task,
            from_block=self.from_block,
            config=None,
            governor=governor,
            nft=self.nft,
        )
        return Snapshot(
            source=self.description,
            version=version,
            read_at=time.time(),
            config=data.config,
            rules_in_force=data.rules_in_force,
            rules=data.rules,
            status=data.status,
            events=data.events,
            proposals=data.proposals,
            governor=governor,
            models=data.models,
            notes=(*notes, *data.notes),
        )

    def auditor(self) -> Auditor:
        return task_auditor(task_address=self.task, chain=self.chain, from_block=self.from_block)


def open_source(
    *,
    run: Path | None = None,
    rpc: str | None = None,
    task: str | None = None,
    from_block: int = 0,
    governor: str | None = None,
    nft: str | None = None,
) -> RunSource | RpcSource:
    """The source the command line names: ``run``, or ``rpc`` with ``task`` (and optionally
    the governor and the model NFT contract)."""
    if run is not None:
        if governor is not None or nft is not None:
            raise ConfigError("--governor and --nft go with --rpc; a run directory names its "
                              "own", field="run")  # fmt: skip
        return RunSource(run)
    if rpc is None or task is None:
        raise ConfigError("give --run DIR, or --rpc URL with --task ADDRESS", field="run")
    return RpcSource(rpc, task, from_block=from_block, governor=governor, nft=nft)
