"""What token holders may change in a running task, and the rules in force in each round.

A governance proposal carries a whole new configuration document; it is a valid amendment of
the configuration in force only if it differs in governable settings alone
(:data:`GOVERNABLE`): the aggregation rule and its parameters, the quorum, the reward per
round, admission (minimum stake, allowlist), the model access policy and the privacy budget.
Everything that defines the task itself (its data, model, training, rounds, nodes, windows,
privacy mechanism) stays. :func:`check_amendment` is the one check used by ``fedledger
propose``, ``fedledger proposals``, the nodes and the audit.

:class:`RulesInForce` is the history: the deployment's configuration from round 1, then each
executed change from its first round (the contract's ``Configured`` events). Nodes aggregate
round r with ``rules.at(r)``; so does the audit.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fedledger.config.task import TaskConfig, config_from_document
from fedledger.errors import ConfigError

__all__ = ["GOVERNABLE", "RulesInForce", "amendment_changes", "check_amendment"]

GOVERNABLE: Final = (
    "aggregation",
    "ledger.quorum",
    "ledger.reward_per_round",
    "ledger.min_stake",
    "ledger.allowlist",
    "ledger.access",
    "privacy.epsilon",
    "privacy.budget",
)
"""The settings a governance vote may change (a prefix covers everything below it)."""


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _governable(key: str) -> bool:
    return any(key == g or key.startswith(g + ".") for g in GOVERNABLE)


def amendment_changes(old: TaskConfig, new: TaskConfig) -> dict[str, tuple[Any, Any]]:
    """Every setting that differs: ``{"aggregation.rule": ("fedavg", "trimmed_mean")}``."""
    a, b = _flat(old.to_dict()), _flat(new.to_dict())
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def check_amendment(old: TaskConfig, new: TaskConfig) -> dict[str, tuple[Any, Any]]:
    """The changes ``new`` makes to ``old``; a :class:`ConfigError` naming the first setting
    a vote may not change, or if nothing changes."""
    changes = amendment_changes(old, new)
    if not changes:
        raise ConfigError("the proposed configuration changes nothing")
    for key in changes:
        if not _governable(key):
            raise ConfigError(f"a vote may change only {', '.join(GOVERNABLE)}; the proposal "
                              f"changes {key}", field=key)  # fmt: skip
    if (old.privacy is None) != (new.privacy is None):
        raise ConfigError("a vote may not add or remove differential privacy", field="privacy")
    return changes


@dataclass(frozen=True, kw_only=True)
class RulesInForce:
    """A task's configurations by first round: the deployment's (round 1), then each executed
    amendment (``Configured`` events, in order). Changes that are not valid amendments of the
    configuration before them are kept in :attr:`invalid` with the reason and not applied."""

    base: TaskConfig
    changes: tuple[tuple[int, TaskConfig], ...] = ()
    invalid: tuple[tuple[int, str], ...] = ()
    _starts: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(r for r, _ in self.changes))

    def at(self, rnd: int) -> TaskConfig:
        """The configuration in force in round ``rnd``."""
        i = bisect.bisect_right(self._starts, rnd)
        return self.base if i == 0 else self.changes[i - 1][1]

    def latest(self) -> TaskConfig:
        """The configuration of the last change (in force now or from the next round)."""
        return self.changes[-1][1] if self.changes else self.base

    def with_change(self, from_round: int, document: bytes) -> RulesInForce:
        """This history and one more ``Configured(from_round, document)``. A change that
        replaces a pending one for the same round replaces it."""
        kept = tuple(c for c in self.changes if c[0] < from_round)
        before = kept[-1][1] if kept else self.base
        if document == before.document():  # no change (the deployment's own event), or one
            return RulesInForce(base=self.base, changes=kept,  # cancelling a pending change
                                invalid=self.invalid)  # fmt: skip
        try:
            new = config_from_document(document)
            check_amendment(before, new)
        except ConfigError as exc:
            return RulesInForce(base=self.base, changes=kept,
                                invalid=(*self.invalid, (from_round, str(exc))))  # fmt: skip
        return RulesInForce(base=self.base, changes=(*kept, (from_round, new)),
                            invalid=self.invalid)  # fmt: skip
