"""Data owners' consent: what a node's data may serve, checked before every round.

A node's policy is the ``[consent]`` table of its node.toml (or a file of its own)::

    [consent]
    tasks = ["0x5FbDB2315678afecb367f032d93F642f64180aa3"]   # these tasks only
    purposes = ["digit recognition"]     # the task's [task] purpose must be one of these
    rules = ["fedavg", "trimmed_mean"]   # aggregation rules the data may be combined with
    max_epsilon = 8.0                    # differential privacy required, epsilon at most this
    max_rounds = 50                      # no task of more rounds, no round beyond this
    model_access = ["members", "token_holders"]   # who may download the resulting models

Every key is optional: a key left out allows anything. The policy's canonical JSON
(:meth:`ConsentPolicy.document`) is registered on chain when the node joins (``join``'s
``consent``; the ``Consent`` event holds it and its sha256), and again when the owner changes
it (``set_consent``), taking effect at the next round. A node without a policy registers none
and accepts the task and every valid governance change.

:func:`violations` is the one check: a node refuses to join a task whose rules break its
policy, leaves a task when a governance change breaks it, the round function drops the update
of a member whose registered policy does not cover the round (:func:`uncovered`), and the audit
checks that no round used one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fedledger.aggregation.rules import RULES
from fedledger.config.task import ACCESS_POLICIES, TaskConfig, check_int, check_real
from fedledger.errors import ConfigError

__all__ = ["MAX_POLICY_BYTES", "ConsentPolicy", "Consents", "consent_from_document",
           "parse_consent", "uncovered", "violations"]  # fmt: skip

MAX_POLICY_BYTES: Final = 2048
"""The Task contract's bound on a registered policy document."""

_KEYS: Final = ("tasks", "purposes", "rules", "max_epsilon", "max_rounds", "model_access")


def _strings(where: str, value: object, *, choices: Iterable[str] | None = None,
             lower: bool = False) -> tuple[str, ...] | None:  # fmt: skip
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"must be a list of non-empty strings, got {value!r}", field=where)
    out = tuple(sorted({v.lower() if lower else v for v in value}))
    if choices is not None:
        allowed = tuple(choices)
        for v in out:
            if v not in allowed:
                raise ConfigError(f"unknown value {v!r}; known: {', '.join(allowed)}",
                                  field=where)  # fmt: skip
    return out


@dataclass(frozen=True, kw_only=True)
class ConsentPolicy:
    """One data owner's consent (see the module docstring); ``None``: anything allowed."""

    tasks: tuple[str, ...] | None = None
    """Task contract addresses (compared case-insensitively)."""
    purposes: tuple[str, ...] | None = None
    rules: tuple[str, ...] | None = None
    max_epsilon: float | None = None
    max_rounds: int | None = None
    model_access: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", _strings("consent.tasks", self.tasks, lower=True))
        for t in self.tasks or ():
            if len(t) != 42 or not t.startswith("0x"):
                raise ConfigError(f"must be task addresses (0x and 40 hex digits), got {t!r}",
                                  field="consent.tasks")  # fmt: skip
        object.__setattr__(self, "purposes", _strings("consent.purposes", self.purposes))
        object.__setattr__(self, "rules", _strings("consent.rules", self.rules, choices=RULES))
        object.__setattr__(
            self,
            "model_access",
            _strings("consent.model_access", self.model_access, choices=ACCESS_POLICIES),
        )
        if self.max_epsilon is not None:
            check_real("consent.max_epsilon", self.max_epsilon, low=0, high=1e6, low_open=True)
            object.__setattr__(self, "max_epsilon", float(self.max_epsilon))
        if self.max_rounds is not None:
            check_int("consent.max_rounds", self.max_rounds, low=1)
        if len(self.document()) > MAX_POLICY_BYTES:
            raise ConfigError(f"the policy's document is above {MAX_POLICY_BYTES} bytes",
                              field="consent")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The keys that are set (lists for tuples)."""
        out: dict[str, Any] = {}
        for key in _KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def document(self) -> bytes:
        """The canonical JSON registered on chain (sorted keys, no spaces)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()  # fmt: skip

    def digest(self) -> bytes:
        """sha256 of :meth:`document` (the ``Consent`` event's digest)."""
        return hashlib.sha256(self.document()).digest()


def parse_consent(table: Mapping[str, Any], *, where: str = "consent") -> ConsentPolicy:
    """A policy from a parsed ``[consent]`` table; a :class:`ConfigError` naming a bad key."""
    if not isinstance(table, Mapping):
        raise ConfigError("must be a table", field=where)
    for key in table:
        if key not in _KEYS:
            raise ConfigError(f"unknown key; known keys: {', '.join(_KEYS)}",
                              field=f"{where}.{key}")  # fmt: skip
    value = table.get("max_rounds")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"must be an integer, got {value!r}", field=f"{where}.max_rounds")
    return ConsentPolicy(**dict(table))


def consent_from_document(document: bytes) -> ConsentPolicy | None:
    """The policy a ``Consent`` event registered (None for an empty document: no policy);
    a :class:`ConfigError` if it is not a canonical policy document."""
    if not document:
        return None
    try:
        table = json.loads(document.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"not a consent policy document: {exc}") from None
    policy = parse_consent(table)
    if policy.document() != document:
        raise ConfigError("not a canonical consent policy document")
    return policy


def _epsilon(task: TaskConfig) -> float | None:
    """The task's privacy budget (epsilon), or None without differential privacy."""
    plan = task.privacy_plan()
    if plan is None:
        return None
    return float(plan.budget)


def violations(policy: ConsentPolicy | None, task: TaskConfig, *, task_address: str,
               rnd: int | None = None) -> list[str]:  # fmt: skip
    """Why ``task`` (the rules in force, in round ``rnd`` if given) is not covered by
    ``policy``; empty when it is (and always for ``None``: no policy)."""
    if policy is None:
        return []
    why: list[str] = []
    if policy.tasks is not None and task_address.lower() not in policy.tasks:
        why.append(f"task {task_address} is not one of the consented tasks")
    if policy.purposes is not None and task.purpose not in policy.purposes:
        why.append(f"the task's purpose {task.purpose!r} is not one of "
                   f"{', '.join(map(repr, policy.purposes))}")  # fmt: skip
    if policy.rules is not None and task.aggregation.rule not in policy.rules:
        why.append(f"aggregation rule {task.aggregation.rule!r} is not one of "
                   f"{', '.join(policy.rules)}")  # fmt: skip
    if policy.max_epsilon is not None:
        eps = _epsilon(task)
        if eps is None:
            why.append(f"the task has no differential privacy (epsilon <= "
                       f"{policy.max_epsilon:g} required)")  # fmt: skip
        elif eps > policy.max_epsilon:
            why.append(f"the task's privacy budget epsilon {eps:g} is above "
                       f"{policy.max_epsilon:g}")  # fmt: skip
    if policy.max_rounds is not None:
        if task.rounds > policy.max_rounds:
            why.append(f"the task has {task.rounds} rounds, more than {policy.max_rounds}")
        elif rnd is not None and rnd > policy.max_rounds:
            why.append(f"round {rnd} is beyond {policy.max_rounds}")
    if policy.model_access is not None and task.ledger.access not in policy.model_access:
        why.append(f"model access {task.ledger.access!r} is not one of "
                   f"{', '.join(policy.model_access)}")  # fmt: skip
    return why


Registered = ConsentPolicy | str | None
"""A registered policy, or why its document is not one (such a member consents to nothing:
its updates are left out), or None (no policy)."""


def _reasons(policy: Registered, task: TaskConfig, *, task_address: str,
             rnd: int | None) -> list[str]:  # fmt: skip
    if isinstance(policy, str):
        return [f"its registered consent is not a policy ({policy})"]
    return violations(policy, task, task_address=task_address, rnd=rnd)


@dataclass
class Consents:
    """Every member's registered policies by first round (the ``Consent`` events, in order):
    what nodes and the audit read to tell whose updates a round may use."""

    _by_member: dict[str, list[tuple[int, Registered]]] = field(default_factory=dict)

    def add(self, member: str, from_round: int, document: bytes) -> None:
        """One ``Consent`` event: ``member``'s policy from round ``from_round`` on (one for
        the same first round replaces it)."""
        policy: Registered
        try:
            policy = consent_from_document(document)
        except ConfigError as exc:
            policy = str(exc)
        history = self._by_member.setdefault(member.lower(), [])
        history[:] = [h for h in history if h[0] < from_round]
        history.append((from_round, policy))

    def at(self, member: str, rnd: int) -> Registered:
        """``member``'s policy in force in round ``rnd`` (None: none registered)."""
        policy: Registered = None
        for start, p in self._by_member.get(member.lower(), ()):
            if start <= rnd:
                policy = p
        return policy

    def uncovered(self, senders: Iterable[str], task: TaskConfig, *, task_address: str,
                  rnd: int) -> dict[str, str]:  # fmt: skip
        """The senders whose registered policy does not cover round ``rnd`` of ``task`` (the
        rules in force then), each with the first reason: the round function leaves their
        updates out, and the audit checks that no round used one."""
        out = {}
        for s in senders:
            why = _reasons(self.at(s, rnd), task, task_address=task_address, rnd=rnd)
            if why:
                out[s] = why[0]
        return out


def uncovered(consents: Consents, senders: Iterable[str], task: TaskConfig, *,
              task_address: str, rnd: int) -> dict[str, str]:  # fmt: skip
    """:meth:`Consents.uncovered`."""
    return consents.uncovered(senders, task, task_address=task_address, rnd=rnd)
