"""``[ledger] committee``: checked at load; refused by nodes until they take part in
committee rounds (the contract draws and enforces them already)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedledger.config import TaskConfig
from fedledger.config.task import LedgerConfig, PrivacyConfig
from fedledger.errors import ConfigError
from fedledger.ledger.rules import sample_committee


@pytest.mark.parametrize("bad", [1, 2, -1, 256, 300, 2.5])
def test_a_committee_is_0_or_in_3_to_max_participants(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"ledger\.committee"):
        LedgerConfig(committee=bad, max_participants=256)  # type: ignore[arg-type]


def test_a_committee_must_be_below_max_participants() -> None:
    with pytest.raises(ConfigError, match=r"\[3, max_participants = 10\)"):
        LedgerConfig(committee=10, max_participants=10)
    assert LedgerConfig(committee=9, max_participants=10).committee == 9


def test_committees_do_not_go_with_secure_aggregation() -> None:
    base = TaskConfig()
    task = replace(base, ledger=replace(base.ledger, committee=5))
    task.check_nodes()  # committees alone: fine
    assert b"committee" in task.document()
    assert b"committee" not in base.document()  # a task without one keeps its digest
    private = replace(task, privacy=PrivacyConfig(secure_aggregation=True, clip=1.0))
    with pytest.raises(ConfigError, match="secure aggregation"):
        private.check_nodes()


def test_the_sampler_draws_distinct_members_and_needs_a_seed() -> None:
    members = [f"0x{i:040x}" for i in range(20)]
    drawn = sample_committee(b"\x01" * 32, members, 7)
    assert len(set(drawn)) == 7
    assert set(drawn) <= set(members)
    assert sample_committee(b"\x02" * 32, members, 7) != drawn
    assert sample_committee(b"\x01" * 32, members[:5], 7) == tuple(members[:5])  # no draw
    with pytest.raises(ValueError, match="32 bytes"):
        sample_committee(b"\x01" * 31, members, 7)
