"""Privacy accounting: the figures fedledger reports are dp-accounting's, and the plan of a
task's [privacy] table (calibrated noise, the budget's most releases) holds its promises."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from fedledger.config import PrivacyConfig, TaskConfig, parse_config
from fedledger.errors import ConfigError, PrivacyError
from fedledger.privacy import calibrate, epsilon, plan

DELTA = 1e-5


def _library_rdp(sigma: float, releases: int, delta: float) -> float:
    """The library's RDP accountant on the same mechanism built another way: one Gaussian
    release with sampling probability 1, composed ``releases`` times."""
    accountant = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(1.0, dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(event, releases)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(("sigma", "releases"), [(0.8, 1), (1.0, 10), (2.0, 30), (5.0, 100)])
def test_epsilon_is_the_library_rdp_figure(sigma: float, releases: int) -> None:
    ours = epsilon(sigma, releases, DELTA)
    assert ours == pytest.approx(_library_rdp(sigma, releases, DELTA), rel=0.01)
    # RDP is an upper bound: the PLD accountant's (tighter) figure is below it, not far.
    p = pld.PLDAccountant()
    p.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), releases))
    assert p.get_epsilon(DELTA) <= ours * 1.001 <= p.get_epsilon(DELTA) * 1.15
    # And below the classic conversion of the Gaussian's RDP, k a / (2 s^2) + log(1/d)/(a - 1),
    # at its best order: the library converts more tightly, never more loosely.
    classic = min(releases * a / (2 * sigma**2) + math.log(1 / DELTA) / (a - 1)
                  for a in [1 + x / 10 for x in range(1, 10_000)])  # fmt: skip
    assert ours <= classic * 1.0001


def test_epsilon_grows_with_releases_and_falls_with_noise() -> None:
    assert epsilon(1.0, 0, DELTA) == 0.0
    series = [epsilon(1.0, k, DELTA) for k in range(1, 20)]
    assert series == sorted(series)
    assert len(set(series)) == len(series)
    assert epsilon(2.0, 10, DELTA) < epsilon(1.0, 10, DELTA)
    assert epsilon(1.0, 10, 1e-3) < epsilon(1.0, 10, 1e-6)


def test_calibrated_noise_spends_the_target_and_no_less_noise_would() -> None:
    for target, rounds in ((1.0, 30), (3.0, 30), (8.0, 30), (8.0, 5)):
        sigma = calibrate(target, DELTA, rounds)
        assert epsilon(sigma, rounds, DELTA) <= target
        assert epsilon(sigma, rounds, DELTA) == pytest.approx(target, rel=1e-4)
        assert epsilon(sigma * 0.99, rounds, DELTA) > target


def test_bad_parameters_are_refused() -> None:
    for args in ((0.0, 1, DELTA), (math.inf, 1, DELTA), (1.0, -1, DELTA), (1.0, 1, 0.0),
                 (1.0, 1, 1.0)):  # fmt: skip
        with pytest.raises(PrivacyError):
            epsilon(*args)
    with pytest.raises(PrivacyError):
        calibrate(0.0, DELTA, 10)
    with pytest.raises(PrivacyError):
        calibrate(1.0, DELTA, 0)
    with pytest.raises(PrivacyError, match="above"):
        calibrate(1e-9, DELTA, 10)


def test_the_plan_of_a_budget_stops_before_it_would_be_exceeded() -> None:
    p = plan(PrivacyConfig(clip=0.5, noise_multiplier=1.0, budget=10.0), rounds=30)
    assert p.noise_multiplier == 1.0
    assert p.clip == 0.5
    assert p.budget == 10.0
    k = p.max_releases
    assert 1 <= k < 30
    assert p.epsilon_after(k) <= 10.0 < p.epsilon_after(k + 1)
    assert p.may_release(k - 1)
    assert not p.may_release(k)
    # Without a budget: whatever the task's rounds spend.
    free = plan(PrivacyConfig(noise_multiplier=1.0), rounds=30)
    assert free.max_releases == 30
    assert free.budget == epsilon(1.0, 30, DELTA)
    # A target epsilon: the noise is calibrated so the rounds spend it, and it is the budget.
    target = plan(PrivacyConfig(epsilon=3.0), rounds=30)
    assert target.max_releases == 30
    assert target.budget == 3.0
    assert target.epsilon_after(30) == pytest.approx(3.0, rel=1e-4)
    assert target.summary()["epsilon_planned"] == target.epsilon_after(30)


def test_the_privacy_table_is_checked_when_the_task_is_loaded() -> None:
    cfg = parse_config({"task": {"rounds": 10}, "privacy": {"clip": 0.1, "epsilon": 4}})
    assert cfg.privacy == PrivacyConfig(clip=0.1, epsilon=4.0)
    assert parse_config(_toml_doc(cfg)) == cfg
    assert "privacy" not in TaskConfig().to_dict()  # tasks without it: documents unchanged
    cases = [
        ({}, "privacy"),  # neither noise_multiplier nor epsilon
        ({"noise_multiplier": 1.0, "epsilon": 3.0}, "privacy"),  # both
        ({"epsilon": 3.0, "clip": 0}, "privacy.clip"),
        ({"noise_multiplier": -1.0}, "privacy.noise_multiplier"),
        ({"epsilon": 3.0, "delta": 0.5}, "privacy.delta"),
        ({"epsilon": 3.0, "budget": 0}, "privacy.budget"),
        ({"noise_multiplier": 0.1, "budget": 1.0}, "privacy"),  # one round spends more
        ({"epsilon": 3.0, "sigma": 1.0}, "privacy.sigma"),  # unknown key
    ]
    for table, field in cases:
        with pytest.raises(ConfigError) as info:
            parse_config({"task": {"rounds": 10}, "privacy": table})
        assert info.value.field == field, table


def _toml_doc(cfg: TaskConfig) -> dict[str, object]:
    import tomllib

    return tomllib.loads(cfg.to_toml())
