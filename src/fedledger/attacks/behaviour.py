"""Byzantine behaviour in a node: which attack it mounts, and how colluding attackers share.

A node built with an :class:`Attack` trains as usual (on flipped labels for ``label_flip``),
then publishes :meth:`Attack.poison` of its update instead of the update itself. The
omniscient attacks (ALIE, IPM, min-max) need the benign updates the attackers know: colluding
attackers in one process share theirs through a :class:`Collusion` board (each posts its
benign update and waits for the others'), so they attack with the "partial knowledge" of
their own benign updates -- all they can know on a ledger, where an honest update is served
only once its round closed (every message in).

ALIE and IPM are *adaptive* when the attacker knows the task's aggregation rule (it is public:
on chain, or in the task file): the attackers simulate the round with the updates they know
and pick the factor that moves the rule's output furthest from the honest mean
(:func:`fedledger.attacks.model.adaptive`). Against plain FedAvg that factor is as large as
input validation lets through, and FedAvg fails; against a robust rule it is the largest the
rule still keeps. Without the rule, ALIE uses the paper's fixed z and IPM a fixed epsilon.
Min-max likewise picks, of its three perturbations (std, unit, sign), the one that moves the
task's rule furthest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fedledger.aggregation.rules import RULES, aggregate
from fedledger.attacks.data import backdoor_train, flip_labels
from fedledger.attacks.model import (
    adaptive,
    alie,
    flatten,
    gaussian_noise,
    ipm,
    min_max,
    scaled,
    sign_flip,
)
from fedledger.config import AggregationConfig
from fedledger.data import Dataset, NodeData
from fedledger.errors import ConfigError, FedledgerError

Params = list[np.ndarray]

MODEL_ATTACKS = ("sign_flip", "scaled", "gaussian", "alie", "ipm", "min_max", "free_ride")
DATA_ATTACKS = ("label_flip", "backdoor")
PROTOCOL_ATTACKS = ("copy", "withhold", "equivocate", "sybil", "dropout")
"""Attacks on the ledger protocol (they need ``--chain``):

* ``copy``: publish a copy of another node's update instead of training -- on a ledger only an
  earlier round's can be known in time (updates are served once their round closed);
* ``withhold``: commit and reveal an honest update, but serve its blob to nobody;
* ``equivocate``: attest a second, different result after the first;
* ``sybil``: join with less than the task's minimum stake;
* ``dropout``: from round 2 on, send no update (its messages only attest), like a member that
  drops out of each round after the others masked with it (secure aggregation)."""
ATTACKS = DATA_ATTACKS + MODEL_ATTACKS + PROTOCOL_ATTACKS
OMNISCIENT = ("alie", "ipm", "min_max")

BACKDOOR_TARGET = 0
"""The class a backdoor's trigger maps to."""
SIGN_FLIP_SCALE = 4.0
SCALE_FACTOR = -10.0
GAUSSIAN_SIGMA = 1.0
IPM_EPSILON = 4.0
COLLUSION_TIMEOUT = 30.0


class Collusion:
    """Where the attackers of one process share what they know, round by round.

    With ``omniscient`` the attackers also see every honest node's update of the round before
    publishing their own (honest nodes :meth:`observe` theirs): possible without a ledger,
    where updates are announced before anyone aggregates and an attacker can simply wait.
    On a ledger (updates served once their round closed) they know only their own benign
    updates."""

    def __init__(self, attackers: int, *, nodes: int = 0, omniscient: bool = False) -> None:
        self.attackers = attackers
        self.omniscient = omniscient
        self.expected = max(nodes, attackers) if omniscient else attackers
        self._posted: dict[int, list[Params]] = {}
        self._full: dict[int, asyncio.Event] = {}
        self.crafted: dict[tuple[int, str], Params] = {}
        """What the first attacker crafted in a round from the shared knowledge; the others
        publish the same (the attack sends ``f`` identical updates)."""

    def observe(self, rnd: int, update: Params) -> None:
        """An honest node's update of round ``rnd``, seen by omniscient attackers."""
        if self.omniscient:
            self._post(rnd, update)

    def _post(self, rnd: int, update: Params) -> tuple[list[Params], asyncio.Event]:
        posted = self._posted.setdefault(rnd, [])
        full = self._full.setdefault(rnd, asyncio.Event())
        posted.append(update)
        if len(posted) >= self.expected:
            full.set()
        return posted, full

    async def share(
        self, rnd: int, benign: Params, *, timeout: float = COLLUSION_TIMEOUT
    ) -> list[Params]:
        """Post this attacker's benign update of round ``rnd``; return every update known
        (the attackers', and the honest ones if omniscient) once all arrived, or what arrived
        within ``timeout``."""
        posted, full = self._post(rnd, benign)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await full.wait()
        for old in [r for r in self._posted if r < rnd - 1]:
            self._posted.pop(old, None)
            self._full.pop(old, None)
        for key in [k for k in self.crafted if k[0] < rnd - 1]:
            del self.crafted[key]
        return list(posted)


@dataclass(frozen=True, kw_only=True)
class Attack:
    """One attacker's behaviour: ``name`` (see :data:`ATTACKS`), the number of nodes ``n`` and
    of attackers ``f`` (ALIE's z depends on them), a seed for its randomness, and the task's
    aggregation ``rule`` if the attacker adapts to it (ALIE, IPM)."""

    name: str
    n: int
    f: int
    seed: int = 0
    rule: AggregationConfig | None = None
    collusion: Collusion | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ConfigError(f"unknown attack {self.name!r}; known: {', '.join(ATTACKS)}",
                              field="attack")  # fmt: skip
        if not 0 < self.f < self.n:
            raise ConfigError(f"need 0 < attackers < nodes, got {self.f} of {self.n}",
                              field="attackers")  # fmt: skip

    @property
    def poisons_model(self) -> bool:
        return self.name in MODEL_ATTACKS or self.name in ("copy", "backdoor")

    @property
    def withholds(self) -> bool:
        """Whether the node refuses to serve its own updates."""
        return self.name == "withhold"

    def drops_out(self, rnd: int) -> bool:
        """Whether the node sends no update in round ``rnd``."""
        return self.name == "dropout" and rnd >= 2

    @property
    def equivocates(self) -> bool:
        """Whether the node attests a second, different result."""
        return self.name == "equivocate"

    def stake(self, min_stake: int) -> int:
        """What the node stakes to join: a Sybil stakes half the minimum."""
        return min_stake // 2 if self.name == "sybil" else min_stake

    def poison_data(self, data: NodeData, num_classes: int) -> NodeData:
        """The attacker's training data: labels flipped for ``label_flip``; for ``backdoor``, a
        triggered copy of every example, labelled :data:`BACKDOOR_TARGET`."""
        if self.name == "label_flip":
            train = replace(data.train, y=flip_labels(data.train.y, num_classes))
        elif self.name == "backdoor":
            train = backdoor_train(data.train, target=BACKDOOR_TARGET,
                                   value=trigger_value(data.train))  # fmt: skip
        else:
            return data
        return replace(data, train=train)

    async def poison(
        self, rnd: int, base: Sequence[np.ndarray], own: Params, *, seen: Sequence[Params] = ()
    ) -> Params:
        """What the attacker publishes in round ``rnd`` instead of its benign update ``own``;
        ``seen``: the other nodes' updates it last obtained (a copier replays one of them, or
        the base model when it has none yet)."""
        rng = np.random.default_rng([self.seed, rnd])
        if self.name == "copy":
            source = seen[0] if seen else base
            return [np.array(p, copy=True) for p in source]
        if self.name == "sign_flip":
            return sign_flip(base, own, scale=SIGN_FLIP_SCALE)
        if self.name == "scaled":
            return scaled(base, own, factor=SCALE_FACTOR)
        if self.name == "backdoor":  # model replacement: the f attackers' boosts add up to n
            return scaled(base, own, factor=self.n / self.f)
        if self.name == "gaussian":
            return gaussian_noise(base, sigma=GAUSSIAN_SIGMA, rng=rng)
        if self.name == "free_ride":
            return [np.array(p, copy=True) for p in base]
        benign = [own]
        if self.collusion is not None:
            benign = await self.collusion.share(rnd, own)
            crafted = self.collusion.crafted.get((rnd, self.name))
            if crafted is None:
                crafted = self.collusion.crafted[rnd, self.name] = self.craft(base, benign)
            return [np.array(p, copy=True) for p in crafted]
        return self.craft(base, benign)

    def craft(self, base: Sequence[np.ndarray], benign: Sequence[Params]) -> Params:
        """The omniscient attacks' update from the ``benign`` updates the attackers know."""
        if self.name in ("alie", "ipm") and self.rule is not None:
            return adaptive(base, benign, kind=self.name, damage=self.damage(base, benign))
        if self.name == "alie":
            return alie(base, benign, n=self.n, f=self.f)
        if self.name == "ipm":
            return ipm(base, benign, epsilon=IPM_EPSILON)
        if self.rule is not None:  # the perturbation that hurts the task's rule most
            damage = self.damage(base, benign)
            options = [min_max(base, benign, perturbation=p) for p in ("std", "unit", "sign")]
            return max(options, key=damage)
        return min_max(base, benign)

    def damage(
        self, base: Sequence[np.ndarray], benign: Sequence[Params]
    ) -> Callable[[Params], float]:
        """The attackers' estimate of what a malicious update does to the round: the distance
        between the task's aggregate of ``n - f`` honest updates (the known benign ones, cycled)
        plus ``f`` copies of it, and the honest mean."""
        rule = self.rule
        assert rule is not None
        honest = [list(benign[i % len(benign)]) for i in range(self.n - self.f)]
        target = np.mean([flatten(u) for u in honest], axis=0)
        weights = [1] * self.n if RULES[rule.rule].uses_weights else None

        def damage(bad: Params) -> float:
            try:
                out = aggregate(rule.rule, [*honest, *([bad] * self.f)], weights, f=rule.f,
                                params=rule.params, center=base)  # fmt: skip
            except FedledgerError:
                return 0.0
            return float(np.linalg.norm(flatten(out.params) - target))

        return damage


def trigger_value(data: Dataset) -> float:
    """The backdoor trigger's pixel (or feature) value: the data set's largest value, so the
    pattern stands out (16 for scikit-learn's digits)."""
    return float(np.max(data.x)) if len(data) else 1.0
