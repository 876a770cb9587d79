"""The ``privacy.secure_aggregation`` switch: what the configuration accepts and refuses, and
where a task that asks for it cannot run."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedledger.config import PrivacyConfig, TaskConfig, parse_config
from fedledger.errors import ConfigError
from fedledger.ledger.messages import ZERO32
from fedledger.ledger.records import Keys
from fedledger.node.drivers.secagg import keys_ready
from fedledger.privacy.secagg_round import member_noise_multiplier
from fedledger.run.task import run_task


def _task(privacy: dict[str, object], **extra: dict[str, object]) -> TaskConfig:
    doc: dict[str, object] = {"task": {"rounds": 5, "nodes": 4}, "privacy": privacy, **extra}
    return parse_config(doc)


def test_secure_aggregation_alone_or_with_noise() -> None:
    cfg = _task({"secure_aggregation": True})
    assert cfg.secure_aggregation
    assert cfg.privacy_plan() is None  # masked, not noised: no epsilon to account
    assert parse_config(tomllib.loads(cfg.to_toml())) == cfg
    noised = _task({"secure_aggregation": True, "noise_multiplier": 1.2})
    plan = noised.privacy_plan()
    assert plan is not None
    assert plan.noise_multiplier == 1.2
    # Each of the 4 members adds a share: any threshold's worth (2) carries the full noise.
    assert member_noise_multiplier(1.2, 4) == pytest.approx(1.2 / 2**0.5)
    # Tasks that do not ask for it keep their documents (and digests) unchanged.
    assert "secure_aggregation" not in _task({"epsilon": 3.0}).to_dict()["privacy"]
    assert not _task({"epsilon": 3.0}).secure_aggregation


@pytest.mark.parametrize(
    ("privacy", "extra", "field", "words"),
    [
        ({"secure_aggregation": False}, {}, "privacy", "secure_aggregation = true"),
        ({"secure_aggregation": "yes"}, {}, "privacy.secure_aggregation", "bool"),
        ({"secure_aggregation": True}, {"aggregation": {"rule": "median", "f": 1}},
         "privacy.secure_aggregation", "fedavg"),
        ({"secure_aggregation": True}, {"aggregation": {"rule": "fedavg",
                                                        "max_weight_fraction": 0.5}},
         "privacy.secure_aggregation", "max_weight_fraction"),
        ({"secure_aggregation": True}, {"task": {"nodes": 2, "rounds": 5}},
         "privacy.secure_aggregation", "3 to 256 nodes"),
        ({"secure_aggregation": True}, {"task": {"nodes": 4, "rounds": 101}},
         "privacy.secure_aggregation", "at most 100 rounds"),
    ],
)  # fmt: skip
def test_what_secure_aggregation_cannot_do_is_refused(
    privacy: dict[str, object], extra: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        _task(privacy, **extra)  # type: ignore[arg-type]
    assert info.value.field == field


def test_a_secure_task_needs_the_ledger(tmp_path: Path) -> None:
    task = TaskConfig(nodes=4, rounds=2, privacy=PrivacyConfig(secure_aggregation=True))
    with pytest.raises(ConfigError, match="--chain") as info:
        run_task(task, out=tmp_path, mode="consensus", chain="none", transport="memory")
    assert info.value.field == "privacy.secure_aggregation"
    assert not (tmp_path / "report.json").exists()


def _keys(member: str, *, digest: bytes, first: int, recipients: int, block: int) -> Keys:
    return Keys(block=block, time=block, tx="0x", index=0, member=member, channel_key=b"\1" * 32,
                keys_digest=digest, first_round=first, last_round=first + 4 if first else 0,
                recipients=recipients)  # fmt: skip


def test_the_owner_starts_a_secure_task_only_once_every_key_blob_covers_everyone() -> None:
    a, b, c = "0xA", "0xB", "0xC"
    events = [
        _keys(a, digest=ZERO32, first=0, recipients=0, block=1),  # channel keys only
        _keys(b, digest=ZERO32, first=0, recipients=0, block=2),
        _keys(c, digest=ZERO32, first=0, recipients=0, block=3),
    ]
    assert keys_ready(events, [a, b, c]) == [a, b, c]
    events += [_keys(a, digest=b"\2" * 32, first=1, recipients=2, block=4),
               _keys(b, digest=b"\3" * 32, first=1, recipients=1, block=5)]  # fmt: skip
    assert keys_ready(events, [a, b, c]) == [b, c]  # b shared with one member only
    events += [_keys(b, digest=b"\4" * 32, first=1, recipients=2, block=6),
               _keys(c, digest=b"\5" * 32, first=1, recipients=2, block=7)]  # fmt: skip
    assert keys_ready(events, [a, b, c]) == []
    assert keys_ready(events, [a, b, c, "0xD"]) == [a, b, c, "0xD"]  # a fourth joined: again
