"""Node configuration: one node.toml per participant.

::

    task = "digits.toml"            # the task configuration (paths relative to this file)
    index = 3                       # which of the task's data partitions this node holds
    key_file = "node.key"           # hex key or eth-account keystore, mode 0600 (created if
                                    #   missing; the password from FEDLEDGER_KEY_PASSWORD)
    listen = "127.0.0.1:0"          # bind address (one interface, never all by default);
                                    #   port 0: the OS picks, peers learn it (registry,
                                    #   rendezvous, or hello)
    advertise = "site-a.example.org:7001"  # optional: where other sites reach this node
                                    #   (when it listens on 0.0.0.0 or behind a forward)
    rendezvous = "../endpoints"     # nodes of one machine publish their endpoints here
    state_dir = "state"             # blobs, state.json (for restarts), rounds.jsonl, node.log
    mode = "consensus"              # consensus | gossip
    chain = "http://127.0.0.1:8545" # ledger mode: the chain's JSON-RPC URL ...
    task_address = "0x..."          #   ... and the Task contract; peers then come from its
                                    #   registry, and [[peers]] may be left out
    stake = 10000000000000000       # wei to stake when joining (default: the task's minimum)
    data = "site.csv"               # this site's own data, trained on whole (CSV or NPZ);
    label_column = "diagnosis"      #   without it the node takes partition ``index`` of the
                                    #   task's data set (a simulation); a "sites" task names
                                    #   the label column itself (leave it out here)
    model = "mymodel:build"         # optional: a function returning the site's own
                                    #   torch.nn.Module ("module:function", the module found
                                    #   beside this file); default: the task's [model]

    [topology]                      # who gossips with whom (built from the task seed)
    kind = "full"                   # full | ring | regular | erdos_renyi | small_world
                                    #   | two_cliques

    [gossip]                        # fanout, ttl, pull_interval, keep_rounds
    [timeouts]                      # initial, minimum, maximum, factor (seconds)

    [[peers]]                       # every other member: index, address, endpoint
    index = 0
    address = "0x..."
    endpoint = "127.0.0.1:50050"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedledger.config.consent import ConsentPolicy, parse_consent
from fedledger.config.task import (
    TaskConfig,
    check_choice,
    check_int,
    check_real,
    check_str,
    check_table,
    check_wei,
    load_config,
    read_toml,
    toml_value,
)
from fedledger.errors import ConfigError
from fedledger.gossip.protocol import GossipConfig
from fedledger.gossip.topology import TopologySpec
from fedledger.node.consensus import Timeouts

MODES = ("consensus", "gossip")
MIXINGS = ("metropolis_hastings", "uniform")
PROBES = ("backdoor",)
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def check_address(where: str, value: object) -> str:
    """An Ethereum address: ``0x`` and 40 hex digits."""
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ConfigError(f"must be an address (0x and 40 hex digits), got {value!r}",
                          field=where)  # fmt: skip
    return value


@dataclass(frozen=True, kw_only=True)
class Peer:
    index: int
    address: str
    endpoint: str


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    task: TaskConfig
    index: int
    key_file: Path
    state_dir: Path
    listen: str = "127.0.0.1:0"
    advertise: str | None = None
    """``host:port`` where the other sites reach this node, when it is not ``listen``
    (a node listening on ``0.0.0.0:7001`` behind a public name or a port forward); published
    in the task's registry and in hello messages."""
    mode: str = "consensus"
    peers: tuple[Peer, ...] = ()
    topology: TopologySpec = field(default_factory=TopologySpec)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    timeouts: Timeouts = field(default_factory=Timeouts)
    mixing: str = "metropolis_hastings"
    """Gossip mode's mixing weights: metropolis_hastings (doubly stochastic) or uniform."""
    staleness: int = 0
    """Gossip mode: how many iterations a neighbour's model may lag behind this node's and
    still count as fresh (0: wait for its current iteration, up to the adaptive deadline)."""
    max_blob_bytes: int = 1 << 30
    """The largest blob (a model or an update) the node accepts, in bytes (>= 1)."""
    ready_timeout: float = 120.0
    """Seconds to wait for every member to say hello (or, in a sites task, for every founder's
    feature statistics) before the first round."""
    start_timeout: float = 86400.0
    """Ledger mode: seconds a node that joined waits for the owner to start the task."""
    linger: float = 10.0
    """Seconds a finished node keeps serving slower peers, at most."""
    stall_timeout: float = 600.0
    """A node that makes no progress (no round or iteration completed) for this long stops and
    reports itself stalled, instead of waiting forever for peers that are gone."""
    task_path: Path | None = None
    chain: str | None = None
    """Ledger mode: the JSON-RPC URL of the chain the task's contract lives on."""
    task_address: str | None = None
    """Ledger mode: the Task contract's address."""
    stake: int | None = None
    """Ledger mode: wei to stake when joining (default: the task's minimum; never less, or the
    contract refuses the node)."""
    attack: str | None = None
    """For robustness experiments only: this node is Byzantine and mounts this attack
    (fedledger.attacks.behaviour.ATTACKS)."""
    attackers: int = 0
    """How many of the task's nodes attack (ALIE's z depends on it): in [0, nodes), and at
    least 1 with ``attack``."""
    probe: str | None = None
    """For robustness experiments only: ``"backdoor"`` makes the node record, each round, the
    backdoor success rate of its model (fedledger.attacks.data.backdoor_test)."""
    data: Path | None = None
    """A site's own data file (CSV with ``label_column``, or NPZ), trained on whole; None:
    partition ``index`` of the task's data set."""
    label_column: str | None = None
    rendezvous: Path | None = None
    """A folder shared by the task's nodes on one machine (or a shared file system): each
    node, once listening (on a port the OS picked, ``listen = "127.0.0.1:0"``), writes its
    endpoint there and reads its peers' (a peer's ``endpoint`` may then be left empty)."""
    config_dir: Path | None = None
    """The folder of the node.toml this was read from (where ``model``'s module is looked
    up first)."""
    model: str | None = None
    """``"module:function"``: the function returning the site's own ``torch.nn.Module``,
    the module imported from the node.toml's folder first; None: the task's ``[model]``."""
    consent: ConsentPolicy | None = None
    """Ledger mode: the data owner's consent policy (``[consent]``,
    :mod:`fedledger.config.consent`), registered on chain at join; None: no policy (the task
    and every valid governance change are accepted)."""

    def __post_init__(self) -> None:
        task: object = self.task
        if not isinstance(task, TaskConfig):
            raise ConfigError(f"must be a task configuration, got {task!r}", field="task")
        n = self.task.nodes
        if (self.chain is None) != (self.task_address is None):
            raise ConfigError("give both chain and task_address, or neither", field="chain")
        check_str("chain", self.chain, optional=True)
        if self.task_address is not None:
            check_address("task_address", self.task_address)
            if int(self.task_address, 16) == 0:
                raise ConfigError("is the zero address: set it to the address `fedledger task "
                                  "deploy` printed", field="task_address")  # fmt: skip
        check_choice("mode", self.mode, MODES, "mode")
        if not is_index(self.index, n):
            raise ConfigError(f"must be an integer in [0, {n}) for a task of {n} nodes, got "
                              f"{self.index!r}", field="index")  # fmt: skip
        check_str("listen", self.listen)
        if self.advertise is not None:
            from fedledger.gossip.endpoints import InvalidEndpoint, parse_endpoint

            try:
                parse_endpoint(self.advertise)
            except InvalidEndpoint as exc:
                raise ConfigError(f"must be host:port, got {self.advertise!r} ({exc})",
                                  field="advertise") from None  # fmt: skip
        for i, peer in enumerate(self.peers):
            if not is_index(peer.index, n):
                raise ConfigError(f"must be an integer in [0, {n}), got {peer.index!r}",
                                  field=f"peers[{i}].index")  # fmt: skip
            check_address(f"peers[{i}].address", peer.address)
            if peer.endpoint or self.rendezvous is None:
                check_str(f"peers[{i}].endpoint", peer.endpoint)
        indices = [p.index for p in self.peers] + [self.index]
        if len(set(indices)) != len(indices):
            raise ConfigError(
                "peer indices must be unique and differ from this node's", field="peers"
            )
        check_choice("mixing", self.mixing, MIXINGS, "mixing")
        check_int("staleness", self.staleness, low=0)
        check_int("max_blob_bytes", self.max_blob_bytes, low=1)
        check_real("ready_timeout", self.ready_timeout, low=0, low_open=True)
        check_real("start_timeout", self.start_timeout, low=0, low_open=True)
        check_real("linger", self.linger, low=0)
        check_real("stall_timeout", self.stall_timeout, low=0, low_open=True)
        if self.stake is not None:
            minimum = self.task.ledger.min_stake
            check_wei("stake", self.stake, low=minimum)
        check_int("attackers", self.attackers, low=0, high=max(0, n - 1))
        if self.attack is not None:
            from fedledger.attacks.behaviour import ATTACKS

            check_choice("attack", self.attack, ATTACKS, "attack")
            check_int("attackers", self.attackers, low=1)
        if self.probe is not None:
            check_choice("probe", self.probe, PROBES, "probe")
        if self.data is not None and not isinstance(self.data, Path):
            raise ConfigError(f"must be a path, got {self.data!r}", field="data")
        images = self.task.data.image_shape is not None
        if (
            self.data is not None
            and not images
            and self.data.suffix.lower() not in (".csv", ".npz")
        ):
            raise ConfigError(f"must be a .csv or .npz file, got {str(self.data)!r}",
                              field="data")  # fmt: skip
        spec = self.task.data
        if spec.is_sites:
            if self.label_column is not None and self.label_column != spec.label_column:
                raise ConfigError(f"the task says the labels are in {spec.label_column!r}: "
                                  "leave label_column out", field="label_column")  # fmt: skip
        elif (self.label_column is not None) != (self.data is not None and
                                                 self.data.suffix.lower() == ".csv"):  # fmt: skip
            raise ConfigError("a CSV data file needs label_column (and only a CSV takes one)",
                              field="label_column")  # fmt: skip
        check_str("label_column", self.label_column, optional=True)
        if self.model is not None and not _FACTORY.fullmatch(str(self.model)):
            raise ConfigError(f"must be 'module:function', got {self.model!r}", field="model")


def is_index(value: object, n: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n


def _table(doc: Mapping[str, Any], name: str, cls: type) -> Any:
    """One sub-table (``[topology]``, ``[gossip]``, ``[timeouts]``): known keys, each of its
    annotated type (finite numbers), then the class's own range checks."""
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError("must be a table", field=name)
    try:
        return cls(**check_table(name, table, cls))
    except TypeError as exc:
        raise ConfigError(str(exc), field=name) from exc


_TOP = {
    "task",
    "index",
    "key_file",
    "state_dir",
    "listen",
    "advertise",
    "mode",
    "peers",
    "topology",
    "gossip",
    "timeouts",
    "staleness",
    "max_blob_bytes",
    "ready_timeout",
    "start_timeout",
    "linger",
    "stall_timeout",
    "mixing",
    "chain",
    "task_address",
    "stake",
    "attack",
    "attackers",
    "probe",
    "data",
    "label_column",
    "model",
    "rendezvous",
    "consent",
}
_REQUIRED = ("task", "index", "key_file", "state_dir")
_STRUCTURED = {
    "task", "index", "key_file", "state_dir", "peers", "topology", "gossip", "timeouts", "data",
    "rendezvous", "consent",
}  # fmt: skip
_PEER_KEYS = ("index", "address", "endpoint")


def _peers(doc: Mapping[str, Any]) -> tuple[Peer, ...]:
    entries = doc.get("peers", [])
    if not isinstance(entries, list):
        raise ConfigError("must be an array of tables ([[peers]])", field="peers")
    peers = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != set(_PEER_KEYS):
            raise ConfigError("needs exactly index, address and endpoint", field=f"peers[{i}]")
        check_int(f"peers[{i}].index", entry["index"], low=0)
        check_address(f"peers[{i}].address", entry["address"])
        if not isinstance(entry["endpoint"], str):  # "" = found at the rendezvous
            raise ConfigError(f"must be a string, got {entry['endpoint']!r}",
                              field=f"peers[{i}].endpoint")  # fmt: skip
        peers.append(Peer(index=entry["index"], address=entry["address"],
                          endpoint=entry["endpoint"]))  # fmt: skip
    return tuple(peers)


def load_node_config(path: str | Path) -> NodeConfig:
    """Read and validate a node.toml: every mistake is a :class:`ConfigError` naming its key."""
    p = Path(path)
    doc = read_toml(p, what="node configuration")
    for key in doc:
        if key not in _TOP:
            raise ConfigError(f"unknown key; known: {', '.join(sorted(_TOP))}", field=key)
    for key in _REQUIRED:
        if key not in doc:
            raise ConfigError("missing", field=key)
    for key in ("task", "key_file", "state_dir"):
        check_str(key, doc[key])
    check_int("index", doc["index"], low=0)
    stake = doc.get("stake")
    if isinstance(stake, float):  # a TOML float is wei only when exact (1e16)
        stake = check_wei("stake", stake)
    simple = {k: doc[k] for k in _TOP - _STRUCTURED if k in doc} | (
        {"stake": stake} if "stake" in doc else {}
    )
    for key in ("chain", "task_address", "attack", "probe", "listen", "mode", "mixing",
                "label_column", "model", "advertise"):  # fmt: skip
        if key in simple:
            check_str(key, simple[key])
    for key in ("ready_timeout", "start_timeout", "linger", "stall_timeout"):
        if key in simple:
            simple[key] = check_real(key, simple[key])
    for key in ("data", "rendezvous"):
        if key in doc:
            check_str(key, doc[key])
    base = p.parent
    task_path = base / doc["task"]
    try:
        task = load_config(task_path)
    except ConfigError as exc:
        if exc.field is not None:  # a key of the task file: named as it is there
            raise
        raise ConfigError(str(exc), field="task") from exc  # the file itself
    return NodeConfig(
        task=task,
        task_path=task_path,
        index=doc["index"],
        key_file=base / doc["key_file"],
        state_dir=base / doc["state_dir"],
        data=base / doc["data"] if "data" in doc else None,
        rendezvous=base / doc["rendezvous"] if "rendezvous" in doc else None,
        config_dir=base,
        peers=_peers(doc),
        topology=_table(doc, "topology", TopologySpec),
        gossip=_table(doc, "gossip", GossipConfig),
        timeouts=_table(doc, "timeouts", Timeouts),
        consent=parse_consent(doc["consent"]) if "consent" in doc else None,
        **simple,
    )


def write_node_config(cfg: NodeConfig, path: Path) -> None:
    """Write a node.toml that :func:`load_node_config` reads back to ``cfg``."""
    if cfg.task_path is None:
        raise ConfigError("a node configuration written to disk needs its task's path")
    lines = [
        f"task = {toml_value(cfg.task_path.resolve())}",
        f"index = {cfg.index}",
        f"key_file = {toml_value(cfg.key_file.resolve())}",
        f"state_dir = {toml_value(cfg.state_dir.resolve())}",
        f"listen = {toml_value(cfg.listen)}",
        f"mode = {toml_value(cfg.mode)}",
        f"staleness = {cfg.staleness}",
        f"max_blob_bytes = {cfg.max_blob_bytes}",
        f"ready_timeout = {cfg.ready_timeout!r}",
        f"start_timeout = {cfg.start_timeout!r}",
        f"linger = {cfg.linger!r}",
        f"stall_timeout = {cfg.stall_timeout!r}",
        f"mixing = {toml_value(cfg.mixing)}",
        f"attackers = {cfg.attackers}",
    ]
    for key in ("chain", "task_address", "stake", "attack", "probe", "label_column", "model",
                "advertise"):  # fmt: skip
        if getattr(cfg, key) is not None:
            lines.append(f"{key} = {toml_value(getattr(cfg, key))}")
    for key in ("data", "rendezvous"):
        value = getattr(cfg, key)
        if value is not None:
            lines.append(f"{key} = {toml_value(value.resolve())}")
    for name in ("topology", "gossip", "timeouts"):
        obj = getattr(cfg, name)
        lines.append(f"\n[{name}]")
        lines += [
            f"{f.name} = {toml_value(getattr(obj, f.name))}"
            for f in fields(obj)
            if getattr(obj, f.name) is not None
        ]
    if cfg.consent is not None:
        lines.append("\n[consent]")
        lines += [f"{k} = {toml_value(v)}" for k, v in cfg.consent.to_dict().items()]
    for peer in cfg.peers:
        lines += [
            "\n[[peers]]",
            f"index = {peer.index}",
            f"address = {toml_value(peer.address)}",
            f"endpoint = {toml_value(peer.endpoint)}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
