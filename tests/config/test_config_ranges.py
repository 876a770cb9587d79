"""Every key of every section of a task file is typed and range-checked when the file loads.

Each case is one class of mistake in one section -- wrong type, out of range, not finite,
unknown key, missing required key -- written as TOML text and read by :func:`load_config`, the
way a user's file is: the result is a ConfigError naming the key, never a traceback, and never a
configuration that loads and fails later (an infinite reward that overflows at deployment, a
min_stake above uint256, a rule parameter that breaks every round).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from fedledger.cli import main
from fedledger.config import LedgerConfig, TaskConfig, load_config, toml_value
from fedledger.config.task import UINT256_MAX
from fedledger.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DIGITS = (ROOT / "examples" / "digits.toml").read_text(encoding="utf-8")


def _with(tmp_path: Path, section: str, lines: str) -> Path:
    """The reference task with ``lines`` (TOML text, so that inf, nan and 1e80 are what tomllib
    gives) in ``[section]``, replacing the keys they set."""
    doc = tomllib.loads(DIGITS)
    new = tomllib.loads(lines)
    doc.setdefault(section, {})
    out = []
    for name, table in doc.items():
        out.append(f"[{name}]")
        out += [
            f"{k} = {toml_value(v)}" for k, v in table.items() if name != section or k not in new
        ]
        if name == section:
            out.append(lines)
    path = tmp_path / "task.toml"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


CASES = [
    # [task]
    ("task", 'rounds = "3"', "task.rounds", "expected int"),
    ("task", "rounds = 1.5", "task.rounds", "expected int"),
    ("task", "seed = -1", "task.seed", ">= 0"),
    ("task", "nodes = 0", "task.nodes", ">= 1"),
    ('task', 'name = ""', "task.name", "non-empty"),
    ("task", "workers = 3", "task.workers", "unknown key"),
    # [data]
    ("data", "alpha = inf", "data.alpha", "finite"),
    ("data", "alpha = nan", "data.alpha", "finite"),
    ("data", "alpha = -1.0", "data.alpha", "> 0"),
    ("data", 'classes_per_node = 2.0', "data.classes_per_node", "expected int"),
    ("data", "classes_per_node = 0", "data.classes_per_node", ">= 1"),
    ("data", "val_fraction = 0.85", "data.val_fraction", "must be < 1"),
    ("data", "standardize = 1", "data.standardize", "expected bool"),
    ("data", 'path = "x.csv"', "data.path", "takes no path"),
    ("data", 'label_column = "y"', "data.label_column", "csv or sites data set only"),
    ("data", "shuffle = true", "data.shuffle", "unknown key"),
    # [model]
    ("model", "hidden = [0]", "model.hidden", "integers >= 1"),
    ("model", "hidden = [true]", "model.hidden", "expected"),
    ("model", "hidden = 64", "model.hidden", "expected"),
    ("model", "depth = 2", "model.depth", "unknown key"),
    # [train]
    ("train", "lr = inf", "train.lr", "finite"),
    ("train", "lr = nan", "train.lr", "finite"),
    ("train", "epochs = 0", "train.epochs", ">= 1"),
    ("train", "epochs = true", "train.epochs", "expected int"),
    ("train", "momentum = 1.0", "train.momentum", "[0, 1)"),
    ("train", "weight_decay = -0.1", "train.weight_decay", ">= 0"),
    # [aggregation]
    ("aggregation", 'max_weight_fraction = "x"', "aggregation.max_weight_fraction", "number"),
    ("aggregation", "max_weight_fraction = 0", "aggregation.max_weight_fraction", "(0, 1]"),
    ("aggregation", "max_weight_fraction = 1.5", "aggregation.max_weight_fraction", "(0, 1]"),
    ("aggregation", "max_weight_fraction = nan", "aggregation.max_weight_fraction", "finite"),
    ("aggregation", "norm_bound = inf", "aggregation.norm_bound", "finite"),
    ("aggregation", "norm_bound = 0", "aggregation.norm_bound", "> 0"),
    ("aggregation", "min_reputation = 1.5", "aggregation.min_reputation", "[0, 1]"),
    ("aggregation", "min_reputation = 0.5\nreputation_after = 0",
     "aggregation.reputation_after", ">= 1"),
    ("aggregation", "reputation_after = 2", "aggregation.reputation_after",
     "applies with min_reputation"),
    ("aggregation", "reputation_rewards = 1", "aggregation.reputation_rewards", "true or false"),
    ("aggregation", "nnm = true", "aggregation.nnm", "cannot be used with fedavg"),
    ("aggregation", "tau = 1.0", "aggregation.tau", "fedavg has no parameter"),
    ("aggregation", "f = 1.0", "aggregation.f", "expected int"),
    ("aggregation", "f = true", "aggregation.f", "expected int"),
    # [ledger]
    ("ledger", "reward_per_round = inf", "ledger.reward_per_round", "finite"),
    ("ledger", "reward_per_round = nan", "ledger.reward_per_round", "finite"),
    ("ledger", "reward_per_round = -1.0", "ledger.reward_per_round", ">= 0"),
    ("ledger", "reward_per_round = 1e60", "ledger.reward_per_round", "more than uint256 wei"),
    ("ledger", "min_stake = 1e80", "ledger.min_stake", "exact integer"),
    ("ledger", "min_stake = 1.5", "ledger.min_stake", "exact integer"),
    ("ledger", "min_stake = 0", "ledger.min_stake", ">= 1"),
    ("ledger", "min_stake = -5", "ledger.min_stake", ">= 1"),
    ("ledger", 'min_stake = "1e16"', "ledger.min_stake", "expected int"),
    ("ledger", "quorum = 0.5", "ledger.quorum", "(0.5, 1]"),
    ("ledger", "quorum = nan", "ledger.quorum", "finite"),
    ("ledger", "min_stake = 79228162514264337593543950336", "ledger.min_stake",
     "below 2**96"),
    ("ledger", "window = 0", "ledger.window", ">= 1"),
    ("ledger", "window = 300.0", "ledger.window", "expected int"),
    ("ledger", "window = 604801", "ledger.window", "<= 604800"),
    ("ledger", "window = true", "ledger.window", "expected int"),
    ("ledger", "grace = -1", "ledger.grace", ">= 0"),
    ("ledger", "grace = 5.0", "ledger.grace", "expected int"),
    ("ledger", "window = 60\ngrace = 61", "ledger.grace", "<= 60"),
    ("ledger", "grace = 301", "ledger.grace", "<= 300"),
    ("ledger", "cooldown = -1", "ledger.cooldown", ">= 1"),
    ("ledger", "cooldown = 0", "ledger.cooldown", ">= 1"),
    ("ledger", "cooldown = 31536001", "ledger.cooldown", "<= 31536000"),
    ("ledger", "commit_window = 60", "ledger.commit_window", "ledger v2"),
    ("ledger", "reveal_window = 60", "ledger.reveal_window", "ledger v2"),
    ("ledger", "attest_window = 60", "ledger.attest_window", "ledger v2"),
    ("ledger", "allowlist = 0", "ledger.allowlist", "expected bool"),
    ("ledger", 'access = "everyone"', "ledger.access", "unknown policy"),
    ("ledger", "max_participants = 257", "ledger.max_participants", "<= 256"),
    ("ledger", "gas = 1", "ledger.gas", "unknown key"),
    # [gossip]
    ("gossip", 'rule = "clipped"\ndelta = inf', "gossip.delta", "finite"),
    ("gossip", 'rule = "clipped"\ndelta = 1', "gossip.delta", "(0, 1)"),
    ("gossip", 'rule = "clipped"\ndelta = "0.3"', "gossip.delta", "expected float"),
    ("gossip", 'rule = "clipped"', "gossip.delta", "needs delta"),
    ("gossip", "fanout = 3", "gossip.fanout", "unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("section", "lines", "field", "words"), CASES)
def test_a_bad_value_is_a_config_error_naming_its_key(
    tmp_path: Path, section: str, lines: str, field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_with(tmp_path, section, lines))
    assert info.value.field == field, str(info.value)
    assert words in str(info.value)


def test_more_nodes_than_a_ledger_takes_load_and_are_refused_on_a_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task of 1,000 nodes runs without a ledger (gossip mode); on a ledger the contract
    takes at most 256 members, and the deployment or the ledger run says so at once."""
    from fedledger.ledger.rules import rules_for

    cfg = load_config(_with(tmp_path, "task", "nodes = 300"))
    assert cfg.nodes == 300
    with pytest.raises(ConfigError) as info:
        cfg.check_ledger()
    assert info.value.field == "ledger.max_participants"
    assert ">= task.nodes (300)" in str(info.value)
    with pytest.raises(ConfigError, match="max_participants"):
        rules_for(cfg, token="0x" + "11" * 20, treasury="0x" + "22" * 20)
    path = _with(tmp_path, "task", "nodes = 300")
    status = main(["run", "--config", str(path), "--out", str(tmp_path / "run"),
                   "--chain", "embedded", "--transport", "memory"])  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "ledger.max_participants" in err[0]
    assert not (tmp_path / "run" / "node-0").exists()


def test_the_reproduced_load_time_failures(tmp_path: Path) -> None:
    """The values that used to load and then fail (or end in a traceback at deployment)."""
    for section, line, field in [
        ("aggregation", 'max_weight_fraction = "x"', "aggregation.max_weight_fraction"),
        ("ledger", "reward_per_round = inf", "ledger.reward_per_round"),
        ("ledger", "min_stake = 1e80", "ledger.min_stake"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config(_with(tmp_path, section, line))
        assert info.value.field == field


def test_wei_and_tokens_that_are_exact_load(tmp_path: Path) -> None:
    cfg = load_config(_with(tmp_path, "ledger", "min_stake = 1e16\nreward_per_round = 2.5"))
    assert cfg.ledger.min_stake == 10**16
    assert isinstance(cfg.ledger.min_stake, int)
    assert cfg.ledger.reward_wei == 25 * 10**17
    big = load_config(_with(tmp_path, "ledger", f"min_stake = {2**63 - 1}"))
    assert big.ledger.min_stake == 2**63 - 1


def test_a_stake_shares_a_word_with_the_earnings_so_it_stays_below_2_96() -> None:
    assert LedgerConfig(min_stake=2**96 - 1).min_stake == 2**96 - 1
    for stake in (2**96, UINT256_MAX):
        with pytest.raises(ConfigError, match="below 2\\*\\*96") as info:
            LedgerConfig(min_stake=stake)
        assert info.value.field == "ledger.min_stake"
    with pytest.raises(ConfigError, match="must be <= ") as info:
        LedgerConfig(min_stake=UINT256_MAX + 1)
    assert info.value.field == "ledger.min_stake"


def test_window_grace_and_cooldown_ranges() -> None:
    assert LedgerConfig(window=1, grace=0, cooldown=1).grace == 0
    week, year = 7 * 86400, 365 * 86400
    edge = LedgerConfig(window=week, grace=week, cooldown=year)
    assert (edge.window, edge.grace, edge.cooldown) == (week, week, year)
    refused: list[tuple[dict[str, Any], str]] = [
        ({"window": 0}, "ledger.window"),
        ({"window": week + 1}, "ledger.window"),
        ({"window": 60, "grace": 61}, "ledger.grace"),  # grace above the window
        ({"grace": -1}, "ledger.grace"),
        ({"cooldown": 0}, "ledger.cooldown"),  # the contract needs at least 1 s
        ({"cooldown": year + 1}, "ledger.cooldown"),
    ]
    for kwargs, field in refused:
        with pytest.raises(ConfigError) as info:
            LedgerConfig(**kwargs)
        assert info.value.field == field, kwargs


def test_collect_and_fallback_are_positive_and_ordered() -> None:
    week = 7 * 86400
    edge = LedgerConfig(collect=0.5, fallback=0.5)
    assert (edge.collect, edge.fallback) == (0.5, 0.5)
    assert LedgerConfig(collect=week, fallback=week).fallback == week
    refused: list[tuple[dict[str, Any], str]] = [
        ({"collect": 0}, "ledger.collect"),
        ({"collect": week + 1, "fallback": week + 1}, "ledger.collect"),
        ({"collect": 5, "fallback": 4}, "ledger.fallback"),  # a member before its submitter
        ({"fallback": week + 1}, "ledger.fallback"),
        ({"fallback": "10"}, "ledger.fallback"),
    ]
    for kwargs, field in refused:
        with pytest.raises(ConfigError) as info:
            LedgerConfig(**kwargs)
        assert info.value.field == field, kwargs


def test_the_rewards_of_every_round_stay_below_2_88() -> None:
    """rounds x reward_per_round (in wei) is what the task can ever credit: a member's earnings
    share a storage word with its stake, so the contract refuses 2**88 wei or more."""
    ledger = LedgerConfig(reward_per_round=1e8)  # 10**26 wei a round; 2**88 is about 3.09e26
    assert TaskConfig(rounds=3, ledger=ledger).ledger.reward_wei * 3 < 2**88
    with pytest.raises(ConfigError) as info:
        TaskConfig(rounds=4, ledger=ledger)
    assert info.value.field == "ledger.reward_per_round"
    assert "2**88" in str(info.value)
    huge = LedgerConfig(reward_per_round=1e58)  # fits uint256, not even one round's cap
    with pytest.raises(ConfigError) as info:
        TaskConfig(rounds=1, ledger=huge)
    assert info.value.field == "ledger.reward_per_round"
    TaskConfig(rounds=1, ledger=LedgerConfig(reward_per_round=0.0))  # no reward at all is fine


def test_v1_windows_are_refused_with_one_line_naming_window_and_grace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _with(tmp_path, "ledger", "commit_window = 60\nreveal_window = 60")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert info.value.field in ("ledger.commit_window", "ledger.reveal_window")
    assert "\n" not in message
    assert "ledger v2" in message
    assert "`window`" in message
    assert "`grace`" in message
    # The command line: one line on stderr, no traceback (the file fails before any chain
    # is asked, so nothing needs to listen at the URL).
    capsys.readouterr()
    code = main(["task", "deploy", "--config", str(path), "--rpc", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ledger.commit_window: ledger v2")
    assert "window" in lines[0]
    assert "grace" in lines[0]


def test_built_in_dataclasses_check_types_too() -> None:
    """Configurations built in Python (as the launcher and tests do) get the same checks."""
    with pytest.raises(ConfigError) as info:
        TaskConfig(rounds="3")  # type: ignore[arg-type]
    assert info.value.field == "task.rounds"
    with pytest.raises(ConfigError) as info:
        LedgerConfig(window=True)
    assert info.value.field == "ledger.window"
    with pytest.raises(ConfigError) as info:
        LedgerConfig(grace=2.5)  # type: ignore[arg-type]
    assert info.value.field == "ledger.grace"
