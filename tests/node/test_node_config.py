"""node.toml: written by `fedledger run`, read by `fedledger node`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedledger.config import load_config, toml_value
from fedledger.config.node import load_node_config, write_node_config
from fedledger.errors import ConfigError
from fedledger.gossip.protocol import GossipConfig
from fedledger.gossip.topology import TopologySpec
from fedledger.node.consensus import Timeouts

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


def test_written_node_config_reads_back_equal(tmp_path: Path) -> None:
    from fedledger.run.plan import plan

    task = replace(load_config(DIGITS), nodes=4)
    task_path = tmp_path / "task.toml"
    task_path.write_text(task.to_toml())  # as run_task does: the effective task, on disk
    (cfg,) = plan(task, task_path=task_path, out=tmp_path, mode="gossip",
                  topology=TopologySpec(kind="regular", degree=3), transport="memory",
                  timeouts=Timeouts(initial=5.0, minimum=0.5, maximum=30.0))[1:2]  # fmt: skip
    cfg = replace(cfg, gossip=GossipConfig(fanout=2, ttl=4), staleness=1, stall_timeout=99.0,
                  mixing="uniform")  # fmt: skip
    path = tmp_path / "node.toml"
    write_node_config(cfg, path)
    back = load_node_config(path)
    assert back.task.digest() == cfg.task.digest()
    for name in (
        "index",
        "listen",
        "mode",
        "peers",
        "topology",
        "gossip",
        "timeouts",
        "staleness",
        "stall_timeout",
        "mixing",
        "linger",
        "ready_timeout",
        "start_timeout",
        "advertise",
        "max_blob_bytes",
    ):
        assert getattr(back, name) == getattr(cfg, name), name
    assert back.key_file == cfg.key_file.resolve()
    assert back.state_dir == cfg.state_dir.resolve()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('index = 0\nkey_file = "k"\nstate_dir = "s"\n', "task"),
        ('task = "T"\nindex = 12\nkey_file = "k"\nstate_dir = "s"\n', "index"),
        ('task = "T"\nindex = 0\nkey_file = "k"\nstate_dir = "s"\nmode = "sync"\n', "mode"),
        ('task = "T"\nindex = 0\nkey_file = "k"\nstate_dir = "s"\nmixing = "max"\n', "mixing"),
        ('task = "T"\nindex = 0\nkey_file = "k"\nstate_dir = "s"\nport = 5\n', "port"),
        ('task = "T"\nindex = 0\nkey_file = "k"\nstate_dir = "s"\n[topology]\nkind = "star"\n',
         "topology.kind"),
        ('task = "T"\nindex = 0\nkey_file = "k"\nstate_dir = "s"\n[[peers]]\nindex = 1\n',
         "peers[0]"),
        ('task = "T"\nindex = 0\nkey_file = "k"\nstate_dir = "s"\n[timeouts]\nminimum = 5.0\n'
         "maximum = 1.0\n", "timeouts"),
    ],
)  # fmt: skip
def test_bad_node_configs_name_the_key(tmp_path: Path, text: str, field: str) -> None:
    (tmp_path / "T").write_text(DIGITS.read_text())
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert (info.value.field or "").startswith(field), (info.value.field, str(info.value))


HEAD = 'task = "T"\nindex = 0\nkey_file = "k"\nstate_dir = "s"\n'
PEER = '\n[[peers]]\nindex = 1\naddress = "0x' + "ab" * 20 + '"\nendpoint = "127.0.0.1:5"\n'


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        # wrong type
        ('task = "T"\nindex = "abc"\nkey_file = "k"\nstate_dir = "s"\n', "index", "integer"),
        ('task = "T"\nindex = true\nkey_file = "k"\nstate_dir = "s"\n', "index", "integer"),
        ('task = "T"\nindex = 1.0\nkey_file = "k"\nstate_dir = "s"\n', "index", "integer"),
        ('task = 3\nindex = 0\nkey_file = "k"\nstate_dir = "s"\n', "task", "string"),
        ('task = "T"\nindex = 0\nkey_file = ["k"]\nstate_dir = "s"\n', "key_file", "string"),
        (HEAD + "listen = 50053\n", "listen", "string"),
        (HEAD + 'staleness = "1"\n', "staleness", "integer"),
        (HEAD + "max_blob_bytes = 1e9\n", "max_blob_bytes", "integer"),
        (HEAD + 'linger = "10"\n', "linger", "number"),
        (HEAD + "[gossip]\nfanout = 1.5\n", "gossip.fanout", "expected int"),
        (HEAD + '[topology]\nkind = "ring"\np = "0.3"\n', "topology.p", "expected float"),
        (HEAD + "peers = 3\n", "peers", "array of tables"),
        (HEAD + '\n[[peers]]\nindex = "1"\naddress = "0x' + "ab" * 20
         + '"\nendpoint = "e"\n', "peers[0].index", "integer"),
        # out of range
        (HEAD + "max_blob_bytes = -1\n", "max_blob_bytes", ">= 1"),
        (HEAD + "max_blob_bytes = 0\n", "max_blob_bytes", ">= 1"),
        (HEAD + "stake = -5\n", "stake", ">= 10000000000000000"),
        (HEAD + "stake = 1000\n", "stake", ">= 10000000000000000"),
        (HEAD + "staleness = -1\n", "staleness", ">= 0"),
        (HEAD + "ready_timeout = 0\n", "ready_timeout", "> 0"),
        (HEAD + "linger = -1.0\n", "linger", ">= 0"),
        (HEAD + "attackers = 10\n", "attackers", "<= 9"),
        (HEAD + 'attack = "sign_flip"\n', "attackers", ">= 1"),
        ('task = "T"\nindex = -1\nkey_file = "k"\nstate_dir = "s"\n', "index", ">= 0"),
        (HEAD + PEER.replace("index = 1", "index = 10"), "peers[0].index", "[0, 10)"),
        (HEAD + PEER.replace("index = 1", "index = 0"), "peers", "unique"),
        (HEAD + "[gossip]\nttl = 256\n", "gossip.ttl", "[0, 255]"),
        # not finite, or not exact wei
        (HEAD + "stall_timeout = inf\n", "stall_timeout", "finite"),
        (HEAD + "ready_timeout = nan\n", "ready_timeout", "finite"),
        (HEAD + "start_timeout = -1\n", "start_timeout", "> 0"),
        (HEAD + 'advertise = "unix:/tmp/x"\n', "advertise", "host:port"),
        (HEAD + "[timeouts]\nfactor = nan\n", "timeouts.factor", "finite"),
        (HEAD + "[gossip]\npull_interval = inf\n", "gossip.pull_interval", "finite"),
        (HEAD + "stake = 1e80\n", "stake", "exact integer"),
        (HEAD + "stake = 2.5e16\nchain = \"http://x\"\ntask_address = \"0x" + "cd" * 20 + '"\n',
         "", ""),
        # unknown or malformed values
        (HEAD + 'attack = "dos"\nattackers = 1\n', "attack", "unknown attack"),
        (HEAD + 'probe = "spy"\n', "probe", "unknown probe"),
        (HEAD + 'chain = "http://x"\ntask_address = "0x12"\n', "task_address", "40 hex"),
        (HEAD + PEER.replace("0x" + "ab" * 20, "alice"), "peers[0].address", "40 hex"),
        (HEAD + "[timeouts]\nminimum = 1.0\nslack = 2\n", "timeouts.slack", "unknown key"),
        # missing
        ('task = "T"\nindex = 0\nstate_dir = "s"\n', "key_file", "missing"),
        ('task = "T"\nkey_file = "k"\nstate_dir = "s"\n', "index", "missing"),
    ],
)  # fmt: skip
def test_each_mistake_in_a_node_toml_is_a_config_error(
    tmp_path: Path, text: str, field: str, words: str
) -> None:
    (tmp_path / "T").write_text(DIGITS.read_text())
    path = tmp_path / "node.toml"
    path.write_text(text)
    if not field:  # the valid one: an exact float of wei loads as the integer
        cfg = load_node_config(path)
        assert cfg.stake == 25 * 10**15
        assert isinstance(cfg.stake, int)
        return
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert info.value.field == field, str(info.value)
    assert words in str(info.value)


node_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 3, 9, 10, -1, 10**16, 2**62]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e16, 1e80, 0.5, 2.5e16]),
    st.text(max_size=6),
    st.sampled_from(["gossip", "uniform", "sign_flip", "backdoor", "0x" + "ab" * 20, "T"]),
    st.lists(st.integers(-2, 12), max_size=2),
)
NODE_KEYS = ["task", "index", "key_file", "state_dir", "listen", "mode", "staleness",
             "max_blob_bytes", "ready_timeout", "start_timeout", "linger", "stall_timeout",
             "advertise", "mixing", "chain",
             "task_address", "stake", "attack", "attackers", "probe", "peers", "topology",
             "gossip", "timeouts", "other"]  # fmt: skip


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.dictionaries(st.sampled_from(NODE_KEYS), node_values, max_size=4))
def test_load_node_config_raises_only_config_errors(
    tmp_path: Path, changes: dict[str, object]
) -> None:
    (tmp_path / "T").write_text(DIGITS.read_text())
    doc: dict[str, object] = {"task": "T", "index": 0, "key_file": "k", "state_dir": "s"}
    doc.update(changes)
    path = tmp_path / "node.toml"
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in doc.items()))
    try:
        cfg = load_node_config(path)
    except ConfigError as exc:
        named = exc.field is not None
        assert named, str(exc)  # noqa: PT017 -- a property: either outcome is checked
        return
    assert 0 <= cfg.index < cfg.task.nodes
    assert cfg.max_blob_bytes >= 1
    assert cfg.stake is None or cfg.stake >= cfg.task.ledger.min_stake
