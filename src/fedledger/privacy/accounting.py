"""Privacy accounting with Google's dp-accounting (its RDP accountant), never by hand.

A node's releases are its published updates, one per round it contributes, each the Gaussian
mechanism with noise multiplier ``sigma`` (:mod:`fedledger.privacy.mechanism`). Every member
releases in every round it takes part in (fedledger samples no members), so ``k`` releases
are the Gaussian mechanism self-composed ``k`` times, sampling probability 1: the DpEvent
``SelfComposedDpEvent(GaussianDpEvent(sigma), k)``, under adding or removing the node's whole
data set (client level, which also covers each of its records).

:func:`plan` turns a task's ``[privacy]`` table and its rounds into the figures every node and
the audit use: the noise multiplier (given, or calibrated by the library so that the task's
rounds spend exactly the target epsilon), the epsilon after each number of releases, and the
most releases the budget allows. dp_accounting is imported when first needed (it takes a second
or two to import).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedledger.errors import ConfigError, PrivacyError

if TYPE_CHECKING:
    from fedledger.config.task import PrivacyConfig

SLACK = 1e-9
"""Relative slack when comparing an epsilon to a budget (the calibration's own rounding)."""
SIGMA_RANGE = (1e-3, 1e4)
"""Noise multipliers the calibration searches."""


def _event(noise_multiplier: float, releases: int) -> Any:
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(noise_multiplier), releases
    )


def _check(noise_multiplier: float, delta: float) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise PrivacyError(f"noise_multiplier must be finite and > 0, got {noise_multiplier}")
    if not 0 < delta < 1:
        raise PrivacyError(f"delta must be in (0, 1), got {delta}")


@functools.lru_cache(maxsize=4096)
def epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon at ``delta`` after ``releases`` Gaussian releases of noise multiplier
    ``noise_multiplier`` (dp-accounting's RDP accountant); 0 for no release."""
    _check(noise_multiplier, delta)
    if releases < 0:
        raise PrivacyError(f"releases must be >= 0, got {releases}")
    if releases == 0:
        return 0.0
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(_event(noise_multiplier, releases))
    return float(accountant.get_epsilon(delta))


def calibrate(target_epsilon: float, delta: float, releases: int) -> float:
    """The smallest noise multiplier whose ``releases`` releases spend at most
    ``target_epsilon`` at ``delta`` (dp-accounting's calibration, RDP accountant)."""
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise PrivacyError(f"epsilon must be finite and > 0, got {target_epsilon}")
    if not 0 < delta < 1:
        raise PrivacyError(f"delta must be in (0, 1), got {delta}")
    if releases < 1:
        raise PrivacyError(f"releases must be >= 1, got {releases}")
    from dp_accounting import mechanism_calibration, rdp

    low, high = SIGMA_RANGE
    if epsilon(high, releases, delta) > target_epsilon:
        raise PrivacyError(f"epsilon {target_epsilon} over {releases} rounds would need a "
                           f"noise multiplier above {high:g}")  # fmt: skip
    sigma = mechanism_calibration.calibrate_dp_mechanism(
        rdp.RdpAccountant,
        lambda s: _event(s, releases),
        target_epsilon,
        delta,
        mechanism_calibration.ExplicitBracketInterval(low, high),
        tol=1e-6,
    )
    return float(sigma)


@dataclass(frozen=True, kw_only=True)
class PrivacyPlan:
    """A task's privacy figures, the same on every node and in the audit."""

    clip: float
    noise_multiplier: float
    delta: float
    budget: float
    """The most epsilon a node may spend."""
    rounds: int
    max_releases: int
    """The most rounds a node may contribute to within the budget (at most ``rounds``)."""

    def epsilon_after(self, releases: int) -> float:
        """Epsilon a node has spent after ``releases`` contributions."""
        return epsilon(self.noise_multiplier, releases, self.delta)

    def may_release(self, done: int) -> bool:
        """Whether a node that contributed ``done`` times may contribute once more."""
        return done < self.max_releases

    def check_without_ledger(self) -> None:
        """Without a ledger a node cannot stop contributing (there is no attestation-only
        message): a :class:`ConfigError` if the budget allows fewer releases than rounds."""
        if self.max_releases < self.rounds:
            raise ConfigError(f"the privacy budget allows {self.max_releases} of {self.rounds} "
                              "rounds: a node that stops contributing needs the ledger (run "
                              "with a chain)", field="privacy.budget")  # fmt: skip

    def summary(self) -> dict[str, Any]:
        return {"clip": self.clip, "noise_multiplier": self.noise_multiplier,
                "delta": self.delta, "budget": self.budget, "max_releases": self.max_releases,
                "epsilon_planned": self.epsilon_after(self.max_releases)}  # fmt: skip


def plan(privacy: PrivacyConfig, rounds: int) -> PrivacyPlan:
    """The figures of a task's ``[privacy]`` table for ``rounds`` rounds. The budget defaults
    to what the task's rounds spend (the target epsilon, when one is given); a budget smaller
    than one release's epsilon is an error, since no node could ever contribute."""
    if privacy.noise_multiplier is not None:
        sigma = privacy.noise_multiplier
    else:
        assert privacy.epsilon is not None
        sigma = calibrate(privacy.epsilon, privacy.delta, rounds)
    budget = privacy.budget
    if budget is None:
        budget = (
            privacy.epsilon
            if privacy.epsilon is not None
            else epsilon(sigma, rounds, privacy.delta)
        )
    one = epsilon(sigma, 1, privacy.delta)
    if one > budget * (1 + SLACK):
        raise PrivacyError(f"one round spends epsilon {one:.4g}, more than the budget "
                           f"{budget:g}: raise the budget or the noise")  # fmt: skip
    # The largest k <= rounds with epsilon(k) <= budget (epsilon grows with k).
    lo, hi = 1, rounds
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if epsilon(sigma, mid, privacy.delta) <= budget * (1 + SLACK):
            lo = mid
        else:
            hi = mid - 1
    return PrivacyPlan(clip=privacy.clip, noise_multiplier=sigma, delta=privacy.delta,
                       budget=budget, rounds=rounds, max_releases=lo)  # fmt: skip
