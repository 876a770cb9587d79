"""node.toml: written by `fedledger run`, read by `fedledger node`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedledger.config import load_config
from fedledger.errors import ConfigError
from fedledger.gossip.protocol import GossipConfig
from fedledger.gossip.topology import TopologySpec
from fedledger.launcher import plan
from fedledger.node.config import load_node_config, write_node_config
from fedledger.node.consensus import Timeouts

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


def test_written_node_config_reads_back_equal(tmp_path: Path) -> None:
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
