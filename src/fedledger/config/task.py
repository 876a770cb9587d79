"""Task configuration: one TOML file describes a federated learning task.

::

    [task]
    name = "digits"
    seed = 0
    rounds = 30
    nodes = 10

    [data]
    dataset = "digits"          # digits | breast_cancer | csv | npz
    partition = "dirichlet"     # iid | dirichlet | shards | quantity
    alpha = 0.5

    [model]
    name = "mlp"
    hidden = [64, 64]

    [train]
    lr = 0.05
    batch_size = 32
    epochs = 1

    [aggregation]
    rule = "fedavg"             # see fedledger.aggregation.RULES
    f = 0                       # Byzantine inputs the rule must tolerate
    # any other key is a parameter of the rule, e.g. beta = 0.2 for trimmed_mean

    [gossip]                    # gossip mode (--mode gossip) only: how a node mixes in its
    rule = "mean"               #   neighbours' models: mean | clipped (ClippedGossip,
    # delta = 0.3               #   fedledger.aggregation.mixing); clipped needs delta, the
                                #   share of a node's neighbour weight that may be Byzantine

    [ledger]                    # the Task contract's rules (used with --chain)
    quorum = 0.67               # fraction of stake whose attestations finalize a round
    min_stake = 1e16            # wei
    window = 300                # seconds: the longest a round takes members' messages; it
    grace = 5                   #   closes once all are in, or grace s after a quorum's are
    reward_per_round = 1000.0   # reward tokens (18 decimals) earned per finalized round
    access = "members"          # who may download finalized models: members | token_holders
                                #   | public
    allowlist = false           # true: only addresses the task owner allows may join
    cooldown = 60               # seconds between leave() + window and withdraw(): the time
                                #   left to bring evidence against a member
    collect = 2.0               # nodes' timing (not on chain): the submitter's wait for late
    fallback = 10.0             #   messages; a member no batch carried sends its own after

    [privacy]                   # optional: client-level differential privacy
    clip = 1.0                  # L2 bound of a node's update (its change to the model)
    epsilon = 8.0               # target epsilon after the task's rounds (the noise is
                                #   calibrated), or noise_multiplier = 1.1 (sigma)
    delta = 1e-5
    budget = 8.0                # most epsilon a node spends (default: the rounds' spend)

    [compression]               # optional: members publish their compressed delta from the
    quantize = "int8"           #   round's base (fedledger.commit.compression): "int8" or
    topk = 0.05                 #   "none"; topk: the fraction of each array's entries sent
    error_feedback = true       #   (largest first); what is not sent is added next round

Every value is checked when the file is loaded -- its type, its range, that it is finite --
and every mistake is a :class:`~fedledger.errors.ConfigError` naming the offending key
(``aggregation.f: ...``). Unknown keys are errors too, since a typo would otherwise be ignored.
The aggregation rules' parameters are described in :mod:`fedledger.aggregation.params`. Wei
amounts are exact integers within uint256 (a float such as ``1e16`` only when it is exact).
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedledger.aggregation.mixing import MIXING_RULES
from fedledger.aggregation.params import check_rule_for_nodes, check_rule_params
from fedledger.aggregation.rules import RULES
from fedledger.commit.compression import Scheme
from fedledger.errors import ConfigError, PrivacyError
from fedledger.learning.trainer import ModelSpec, TrainConfig

if TYPE_CHECKING:
    from fedledger.privacy.accounting import PrivacyPlan

DATASETS = ("digits", "breast_cancer", "csv", "npz", "sites")
MAX_FEATURES = 4096
"""The most named features (columns) a ``sites`` task may have."""
PARTITIONS = ("iid", "dirichlet", "shards", "quantity")

UINT256_MAX = 2**256 - 1
"""The largest wei amount the contracts can hold."""
MAX_SECONDS = 2**32 - 1
"""The longest duration in seconds a setting may give (about 136 years)."""
MAX_WINDOW = 7 * 86400
"""The longest round window the Task contract accepts."""
MAX_COOLDOWN = 365 * 86400
"""The longest cooldown (the Task contract's bound)."""
MAX_STAKE = 2**96 - 1
"""A member's stake shares a storage word with its earnings: at most 2**96 - 1 wei."""
MAX_MINT = 2**88 - 1
"""The most reward wei a task can credit over all its rounds (rounds x reward per round)."""
MAX_ROUNDS = 1_000_000
"""The most rounds a task can have (the Task contract's bound)."""
_GONE_KEYS = {"commit_window", "reveal_window", "attest_window"}
"""Ledger v1's keys: a configuration that still has them gets a pointer to v2's."""
MAX_SEED = 2**63 - 1


# -- value checks shared by the task and node configurations ------------------------------------


def is_int(value: object) -> bool:
    """An integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(where: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an integer in ``[low, high]``, or a :class:`ConfigError` naming ``where``."""
    if not is_int(value):
        raise ConfigError(f"must be an integer, got {value!r}", field=where)
    assert isinstance(value, int)
    if low is not None and value < low:
        raise ConfigError(f"must be >= {low}, got {value}", field=where)
    if high is not None and value > high:
        raise ConfigError(f"must be <= {high}, got {value}", field=where)
    return value


def check_real(
    where: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite number (int or float, not bool) in the range, or a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number, got {value!r}", field=where)
    if not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value!r}", field=where)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        if low is not None and high is not None:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            span = f"in {left}{low:g}, {high:g}{right}"
        elif low is not None:
            span = f"{'>' if low_open else '>='} {low:g}"
        else:
            span = f"{'<' if high_open else '<='} {high:g}"
        raise ConfigError(f"must be {span}, got {value!r}", field=where)
    return float(value)


def check_wei(where: str, value: object, *, low: int = 0) -> int:
    """A wei amount: an exact integer in ``[low, 2**256 - 1]``.

    A TOML float is accepted only when it is an integer that its shortest decimal form
    names exactly (``1e16``); ``1e80`` is not (the float is 10**80 plus about 1.6e63), so wei
    must then be written as an integer.
    """
    if isinstance(value, float) and not isinstance(value, bool):
        exact = math.isfinite(value) and value.is_integer()
        if not exact or Decimal(repr(value)) != Decimal(int(value)):
            raise ConfigError(f"must be an exact integer number of wei, got the float {value!r};"
                              " write it as an integer", field=where)  # fmt: skip
        value = int(value)
    return check_int(where, value, low=low, high=UINT256_MAX)


def check_choice(where: str, value: object, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; known: {', '.join(choices)}", field=where)
    return value


def check_str(where: str, value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"must be a non-empty string, got {value!r}", field=where)
    return value


def check_bool(where: str, value: object, *, optional: bool = False) -> bool | None:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {value!r}", field=where)
    return value


# -- sections -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    dataset: str = "digits"
    path: str | None = None
    """csv and npz only: the file (relative to the working directory)."""
    label_column: str | None = None
    """csv only: the column that holds the labels."""
    partition: str = "dirichlet"
    alpha: float = 0.5
    classes_per_node: int = 2
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    standardize: bool | None = None
    """None: on for breast_cancer/csv/npz/sites, off for digits and image sites (already in
    [0, 1]). In a
    ``sites`` task the statistics are the pooled ones of every site, computed together
    before the first round (:mod:`fedledger.data.site`)."""
    features: tuple[str, ...] | None = None
    """``sites`` only: the input columns, in the order the model takes them (a site's CSV
    must have each; an NPZ site's ``x`` has this many columns)."""
    classes: tuple[str, ...] | None = None
    """``sites`` only: the label values as the sites' files write them; class ``i`` is
    ``classes[i]`` (an NPZ site's ``y`` holds the indices; an image folder's subfolders are
    named by them)."""
    image_shape: tuple[int, ...] | None = None
    """``sites`` only, instead of ``features``: each site's data is a folder of images, one
    subfolder per class, every image ``(channels, height, width)`` (1 channel: grayscale,
    3: RGB), pixels scaled to [0, 1]."""

    def __post_init__(self) -> None:
        check_choice("data.dataset", self.dataset, DATASETS, "data set")
        check_str("data.path", self.path, optional=True)
        check_str("data.label_column", self.label_column, optional=True)
        if self.dataset == "sites":
            self._check_sites()
        elif self.features is not None or self.classes is not None or self.image_shape:
            key = ("features" if self.features is not None else
                   "classes" if self.classes is not None else "image_shape")  # fmt: skip
            raise ConfigError("applies to a sites data set only (each node brings its own "
                              "file)", field=f"data.{key}")  # fmt: skip
        if self.dataset in ("csv", "npz") and not self.path:
            raise ConfigError(f"a {self.dataset} data set needs a path", field="data.path")
        if self.dataset == "sites" and self.path is not None:
            raise ConfigError("a sites task has no shared file: each node.toml names its own "
                              "(data = ...)", field="data.path")  # fmt: skip
        if self.dataset not in ("csv", "npz", "sites") and self.path is not None:
            raise ConfigError(f"the {self.dataset} data set is built in and takes no path",
                              field="data.path")  # fmt: skip
        if self.dataset == "csv" and not self.label_column:
            raise ConfigError("a csv data set needs the label column", field="data.label_column")
        if self.dataset not in ("csv", "sites") and self.label_column is not None:
            raise ConfigError("applies to a csv or sites data set only",
                              field="data.label_column")  # fmt: skip
        check_choice("data.partition", self.partition, PARTITIONS, "partition")
        check_real("data.alpha", self.alpha, low=0, low_open=True)
        check_int("data.classes_per_node", self.classes_per_node, low=1)
        for name in ("test_fraction", "val_fraction"):
            check_real(f"data.{name}", getattr(self, name), low=0, high=1, low_open=True,
                       high_open=True)  # fmt: skip
        if self.test_fraction + self.val_fraction >= 1:
            raise ConfigError(f"test_fraction + val_fraction must be < 1 (some data must be left "
                              f"to train on), got {self.test_fraction} + {self.val_fraction}",
                              field="data.val_fraction")  # fmt: skip
        check_bool("data.standardize", self.standardize, optional=True)

    def _check_sites(self) -> None:
        shape: object = self.image_shape
        if shape is not None:
            if isinstance(shape, list):
                shape = tuple(shape)
                object.__setattr__(self, "image_shape", shape)
            if not (isinstance(shape, tuple) and len(shape) == 3 and shape[0] in (1, 3)
                    and all(is_int(v) and 1 <= v <= 4096 for v in shape)):  # fmt: skip
                raise ConfigError(f"must be [channels (1 or 3), height, width], got {shape!r}",
                                  field="data.image_shape")  # fmt: skip
            if self.features is not None:
                raise ConfigError("an image task has pixels, not named features: give "
                                  "image_shape or features, not both",
                                  field="data.features")  # fmt: skip
            if self.standardize and math.prod(shape) > MAX_FEATURES:
                raise ConfigError(f"pooled standardization takes at most {MAX_FEATURES} pixel "
                                  f"values per image, {shape} has {math.prod(shape)}",
                                  field="data.standardize")  # fmt: skip
        for key, most in (("features", MAX_FEATURES), ("classes", 1 << 16)):
            if key == "features" and self.image_shape is not None:
                continue
            names: object = getattr(self, key)
            if isinstance(names, list):
                names = tuple(names)
                object.__setattr__(self, key, names)
            if names is None:
                raise ConfigError(f"a sites task names its {key} (a list of strings), e.g. "
                                  + ('features = ["age", "bmi"]' if key == "features"
                                     else 'classes = ["benign", "malignant"]'),
                                  field=f"data.{key}")  # fmt: skip
            if (
                not isinstance(names, tuple)
                or not names
                or not all(isinstance(n, str) and n for n in names)
            ):
                raise ConfigError(f"must be a non-empty list of non-empty strings, got "
                                  f"{names!r}", field=f"data.{key}")  # fmt: skip
            if len(names) > most:
                raise ConfigError(f"at most {most} entries, got {len(names)}",
                                  field=f"data.{key}")  # fmt: skip
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(f"listed more than once: {', '.join(twice)}",
                                  field=f"data.{key}")  # fmt: skip
        if self.label_column is not None and self.features and self.label_column in self.features:
            raise ConfigError(f"{self.label_column!r} is also a feature",
                              field="data.label_column")  # fmt: skip

    @property
    def is_sites(self) -> bool:
        """Each node brings its own data (a real deployment), nothing is shared."""
        return self.dataset == "sites"

    @property
    def should_standardize(self) -> bool:
        if self.standardize is not None:
            return self.standardize
        return self.dataset != "digits" and self.image_shape is None


@dataclass(frozen=True, kw_only=True)
class AggregationConfig:
    """The ``[aggregation]`` table: ``rule``, ``f`` and the rule's parameters, each checked
    against :mod:`fedledger.aggregation.params` (type, range, which rules take it)."""

    rule: str = "fedavg"
    f: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("aggregation.rule", self.rule, tuple(RULES), "aggregation rule")
        check_int("aggregation.f", self.f, low=0)
        if self.rule == "fedavg" and self.f:
            raise ConfigError(
                "fedavg tolerates no Byzantine nodes: use f = 0 or a robust rule",
                field="aggregation.f",
            )
        params: object = self.params
        if not isinstance(params, Mapping):
            raise ConfigError(f"must be a table, got {params!r}", field="aggregation")
        check_rule_params(self.rule, self.params)


@dataclass(frozen=True, kw_only=True)
class MixingConfig:
    """Gossip mode's neighbour-mixing rule (the ``[gossip]`` table of a task).

    ``rule``: ``mean`` (plain gossip averaging, the default) or ``clipped`` (ClippedGossip:
    each neighbour's difference from the node's own model is clipped to an adaptive radius;
    :mod:`fedledger.aggregation.mixing`). ``delta`` (``clipped`` only, required): the share of a
    node's neighbour weight that may be Byzantine; the radius is chosen so that the neighbours
    it clips carry at most that share.
    """

    rule: str = "mean"
    delta: float | None = None

    def __post_init__(self) -> None:
        check_choice("gossip.rule", self.rule, tuple(MIXING_RULES), "mixing rule")
        if self.rule == "mean":
            if self.delta is not None:
                raise ConfigError("delta is a parameter of clipped mixing; mean takes none",
                                  field="gossip.delta")  # fmt: skip
            return
        delta = self.delta
        if delta is None:
            raise ConfigError("clipped mixing needs delta, e.g. delta = 0.3",
                              field="gossip.delta")  # fmt: skip
        check_real("gossip.delta", delta, low=0, high=1, low_open=True, high_open=True)


@dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
    """Client-level differential privacy (the ``[privacy]`` table; docs/privacy.md).

    Every node clips the change its training made to L2 norm ``clip`` and adds Gaussian noise
    of std ``sigma * clip``; ``sigma`` is ``noise_multiplier``, or is calibrated by
    dp-accounting so that the task's rounds spend exactly ``epsilon`` at ``delta`` (give one of
    the two). ``budget``: the most epsilon a node may spend (default: what the task's rounds
    spend); a node stops contributing before a round would exceed it. The table is part of
    the task's configuration, whose digest the task contract holds.
    """

    clip: float = 1.0
    noise_multiplier: float | None = None
    epsilon: float | None = None
    delta: float = 1e-5
    budget: float | None = None
    secure_aggregation: bool = False
    """Members publish masked updates; everyone unmasks only their sum (ledger mode, FedAvg;
    docs/privacy.md). Differential privacy is then optional: without ``noise_multiplier`` or
    ``epsilon``, updates are masked but not noised."""

    @property
    def differential(self) -> bool:
        """Whether the table asks for differential privacy (noise and a budget)."""
        return self.noise_multiplier is not None or self.epsilon is not None

    def __post_init__(self) -> None:
        check_real("privacy.clip", self.clip, low=0, high=1e6, low_open=True)
        if not isinstance(self.secure_aggregation, bool):
            raise ConfigError("must be true or false", field="privacy.secure_aggregation")
        both = self.noise_multiplier is not None and self.epsilon is not None
        if both or not (self.differential or self.secure_aggregation):
            raise ConfigError("give noise_multiplier or a target epsilon (one of the two)"
                              + ("" if both else ", or secure_aggregation = true"),
                              field="privacy")  # fmt: skip
        if self.noise_multiplier is not None:
            check_real("privacy.noise_multiplier", self.noise_multiplier, low=0, high=1e4,
                       low_open=True)  # fmt: skip
        if self.epsilon is not None:
            check_real("privacy.epsilon", self.epsilon, low=0, high=1e4, low_open=True)
        check_real("privacy.delta", self.delta, low=0, high=0.1, low_open=True)
        if self.budget is not None:
            check_real("privacy.budget", self.budget, low=0, high=1e6, low_open=True)


QUANTIZERS = ("none", "int8")


@dataclass(frozen=True, kw_only=True)
class CompressionConfig:
    """Compressed updates (the ``[compression]`` table; docs/protocol.md, "Compressed updates").

    Members publish the delta from the round's base model instead of the model, compressed:
    ``quantize = "int8"`` (a symmetric scale per array, round half to even) and/or ``topk``
    (the fraction of each array's entries kept, largest magnitudes first, in (0, 1)).
    ``error_feedback``: a member adds what it did not send to its next round's delta (the
    residual, kept durably in its state directory). The table is in the task's configuration
    document, so on chain; a task without it publishes plain parameter blobs.
    """

    quantize: str = "none"
    topk: float | None = None
    error_feedback: bool = True

    def __post_init__(self) -> None:
        check_choice("compression.quantize", self.quantize, QUANTIZERS, "quantizer")
        if self.topk is not None:
            check_real("compression.topk", self.topk, low=0, high=1, low_open=True,
                       high_open=True)  # fmt: skip
        check_bool("compression.error_feedback", self.error_feedback)
        if self.quantize == "none" and self.topk is None:
            raise ConfigError('compresses nothing: give quantize = "int8", topk, or both',
                              field="compression")  # fmt: skip

    @property
    def scheme(self) -> Scheme:
        """The blob format's scheme (:mod:`fedledger.commit.compression`)."""
        return Scheme(int8=self.quantize == "int8", topk=self.topk)


def scheme_of(compression: CompressionConfig | None) -> Scheme | None:
    """The compression scheme of a task's updates, or None for plain parameter blobs."""
    return None if compression is None else compression.scheme


SCORE_METHODS = ("rule", "loo", "shapley")


@dataclass(frozen=True, kw_only=True)
class IncentivesConfig:
    """What rewards follow (the ``[incentives]`` table; docs/incentives.md).

    ``scores``: ``rule`` (the aggregation rule's weights, the default), ``loo`` (leave-one-out)
    or ``shapley`` (GTG-Shapley): each kept update's contribution to the number of validation
    examples the round's model classifies correctly, computed exactly by every node and the
    audit. ``max_evaluations``: the most coalitions evaluated per member and round (Shapley);
    ``tolerance``: correct examples within which a permutation is truncated.
    """

    scores: str = "rule"
    max_evaluations: int = 30
    tolerance: int = 0

    def __post_init__(self) -> None:
        check_choice("incentives.scores", self.scores, SCORE_METHODS, "score method")
        check_int("incentives.max_evaluations", self.max_evaluations, low=2, high=10_000)
        check_int("incentives.tolerance", self.tolerance, low=0, high=1 << 30)


ACCESS_POLICIES = ("members", "token_holders", "public")

MAX_GOVERNANCE_SECONDS = 30 * 86400


@dataclass(frozen=True, kw_only=True)
class GovernanceConfig:
    """Token holders govern the task (the ``[governance]`` table; docs/governance.md).

    With it the task is deployed with a Governor and a Timelock: the reward token's holders
    propose and vote on the governable rules (:mod:`fedledger.config.amendments`).
    ``voting_period``: seconds a proposal takes votes; ``quorum``: the share of the token supply
    at the proposal's snapshot that must vote for or abstain; ``timelock``: seconds between a
    passed proposal's queueing and its execution; ``threshold``: the votes (whole tokens) an
    account needs to propose.
    """

    voting_period: int = 60
    quorum: float = 0.5
    timelock: int = 10
    threshold: float = 0.0

    def __post_init__(self) -> None:
        check_int("governance.voting_period", self.voting_period, low=1,
                  high=MAX_GOVERNANCE_SECONDS)  # fmt: skip
        check_real("governance.quorum", self.quorum, low=0, high=1, low_open=True)
        check_int("governance.timelock", self.timelock, low=0, high=MAX_GOVERNANCE_SECONDS)
        check_real("governance.threshold", self.threshold, low=0, high=1e30)

    @property
    def quorum_bps(self) -> int:
        """The quorum in basis points, rounded up (1 to 10000)."""
        return max(1, min(10_000, math.ceil(round(self.quorum * 10_000, 6))))

    @property
    def threshold_wei(self) -> int:
        """The proposal threshold in the token's smallest unit (18 decimals)."""
        return round(self.threshold * 10**18)


@dataclass(frozen=True, kw_only=True)
class LedgerConfig:
    """The rules a task's contract is deployed with (see docs/contracts.md).

    Wei amounts are exact integers: ``min_stake`` below 2**96 (a member's stake shares a storage
    word with its earnings); ``window`` is whole seconds up to 7 days, ``grace`` at most the
    window, the cooldown 1 s to 365 days (the contract's bounds); ``reward_per_round`` is in
    whole tokens (18 decimals) and all rounds' rewards together must stay below 2**88 wei
    (checked by :class:`TaskConfig`, which knows the rounds). ``collect`` and ``fallback`` are
    the nodes' timing, not deployed: 0 < collect <= fallback <= 7 days.
    """

    quorum: float = 0.67
    min_stake: int = 10**16
    window: int = 300
    grace: int = 5
    reward_per_round: float = 1000.0
    access: str = "members"
    allowlist: bool = False
    cooldown: int = 60
    max_participants: int = 256
    committee: int = 0
    """Above this many active members, each round's messages come from a committee of this
    many members sampled from the chain's randomness (docs/committees.md); 0: every member,
    every round. 0, or at least 3 and below ``max_participants``."""
    collect: float = 2.0
    """Off chain (the nodes' timing, not the contract's): seconds a round's designated
    submitter waits for the missing members' messages once those it holds reach a quorum of
    stake, before it sends its batch."""
    fallback: float = 10.0
    """Off chain: seconds after signing after which a member whose message no batch carried
    submits it itself (at least ``collect``)."""

    def __post_init__(self) -> None:
        check_real("ledger.quorum", self.quorum, low=0.5, high=1, low_open=True)
        check_wei("ledger.min_stake", self.min_stake, low=1)
        stake: object = self.min_stake
        if isinstance(stake, float):  # an exact integral float (1e16): store the integer
            object.__setattr__(self, "min_stake", int(stake))
        if self.min_stake > MAX_STAKE:
            raise ConfigError("must be below 2**96 wei", field="ledger.min_stake")
        check_int("ledger.window", self.window, low=1, high=MAX_WINDOW)
        check_int("ledger.grace", self.grace, low=0, high=self.window)
        check_real("ledger.reward_per_round", self.reward_per_round, low=0)
        if self.reward_per_round > UINT256_MAX / 10**18 or self.reward_wei > UINT256_MAX:
            raise ConfigError(f"{self.reward_per_round!r} tokens is more than uint256 wei",
                              field="ledger.reward_per_round")  # fmt: skip
        check_choice("ledger.access", self.access, ACCESS_POLICIES, "policy")
        check_bool("ledger.allowlist", self.allowlist)
        check_int("ledger.cooldown", self.cooldown, low=1, high=MAX_COOLDOWN)
        check_int("ledger.max_participants", self.max_participants, low=1, high=256)
        check_int("ledger.committee", self.committee, low=0, high=255)
        if self.committee != 0 and not 3 <= self.committee < self.max_participants:
            raise ConfigError(f"must be 0 (no committee) or in [3, max_participants = "
                              f"{self.max_participants}), got {self.committee}",
                              field="ledger.committee")  # fmt: skip
        check_real("ledger.collect", self.collect, low=0, high=MAX_WINDOW, low_open=True)
        check_real("ledger.fallback", self.fallback, low=self.collect, high=MAX_WINDOW)

    @property
    def quorum_bps(self) -> int:
        """The quorum in basis points, rounded up (the contract needs more than 5000)."""
        return max(5001, min(10_000, math.ceil(round(self.quorum * 10_000, 6))))

    @property
    def reward_wei(self) -> int:
        """Reward per round in the token's smallest unit (18 decimals)."""
        return round(self.reward_per_round * 10**18)


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    name: str = "task"
    purpose: str = ""
    """What the data serves (``[task] purpose``): data owners' consent policies may name the
    purposes they allow (docs/incentives.md, "Consent"). Empty: none stated."""
    seed: int = 0
    rounds: int = 30
    nodes: int = 10
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    gossip: MixingConfig = field(default_factory=MixingConfig)
    privacy: PrivacyConfig | None = None
    """Differential privacy (``[privacy]``), or None: updates are published as trained."""
    incentives: IncentivesConfig = field(default_factory=IncentivesConfig)
    governance: GovernanceConfig | None = None
    """Token-holder governance (``[governance]``), or None: the rules never change."""
    compression: CompressionConfig | None = None
    """Compressed updates (``[compression]``), or None: members publish their models."""

    def __post_init__(self) -> None:
        check_str("task.name", self.name)
        if not isinstance(self.purpose, str) or len(self.purpose) > 200:
            raise ConfigError(f"must be a string of at most 200 characters, got "
                              f"{self.purpose!r}", field="task.purpose")  # fmt: skip
        check_int("task.seed", self.seed, low=0, high=MAX_SEED)
        check_int("task.rounds", self.rounds, low=1)
        check_int("task.nodes", self.nodes, low=1)
        for name, cls in (("data", DataConfig), ("model", ModelSpec), ("train", TrainConfig),
                          ("aggregation", AggregationConfig), ("ledger", LedgerConfig),
                          ("gossip", MixingConfig)):  # fmt: skip
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"must be a {cls.__name__}", field=name)
        if self.privacy is not None and not isinstance(self.privacy, PrivacyConfig):
            raise ConfigError("must be a PrivacyConfig", field="privacy")
        agg = self.aggregation
        info = RULES[agg.rule]
        if info.min_inputs(agg.f) > self.nodes:
            raise ConfigError(
                f"f={agg.f} is too large for {self.nodes} nodes: {agg.rule} needs {info.bound}",
                field="aggregation.f",
            )
        check_rule_for_nodes(agg.rule, agg.params, nodes=self.nodes, f=agg.f)
        if self.ledger.reward_wei * self.rounds > MAX_MINT:
            raise ConfigError(f"{self.rounds} rounds of {self.ledger.reward_per_round!r} tokens "
                              "would credit 2**88 wei or more (the contract's cap)",
                              field="ledger.reward_per_round")  # fmt: skip
        if self.rounds > MAX_ROUNDS:
            raise ConfigError(f"at most {MAX_ROUNDS} rounds (the contract's cap)",
                              field="task.rounds")  # fmt: skip
        if self.privacy is not None:
            self.privacy_plan()  # a budget no round fits in, a target out of reach
        if self.secure_aggregation:
            self._check_secure_aggregation()
        if not isinstance(self.incentives, IncentivesConfig):
            raise ConfigError("must be an IncentivesConfig", field="incentives")
        if self.governance is not None and not isinstance(self.governance, GovernanceConfig):
            raise ConfigError("must be a GovernanceConfig", field="governance")
        if self.incentives.scores != "rule":
            self._check_scores()
        if self.compression is not None:
            if not isinstance(self.compression, CompressionConfig):
                raise ConfigError("must be a CompressionConfig", field="compression")
            if self.secure_aggregation:
                raise ConfigError("masked updates cannot be compressed: not with "
                                  "privacy.secure_aggregation", field="compression")  # fmt: skip

    def _check_scores(self) -> None:
        """Contribution scores need every kept model and a shared validation set, evaluated
        exactly: a bundled or file data set split by the seed, a dense model, no masking."""
        field = "incentives.scores"
        if self.secure_aggregation:
            raise ConfigError("needs each member's model: not with privacy.secure_aggregation "
                              "(only the sum is unmasked)", field=field)  # fmt: skip
        if self.model.name not in ("logreg", "mlp"):
            raise ConfigError(f"has an exact evaluator for logreg and mlp models only, not "
                              f"{self.model.name!r}", field=field)  # fmt: skip
        if self.data.is_sites:
            raise ConfigError("needs a shared validation set: a sites task has none yet (the "
                              "task's test split of a shared data set is used)",
                              field=field)  # fmt: skip

    @property
    def secure_aggregation(self) -> bool:
        """Whether the members mask their updates (``privacy.secure_aggregation``)."""
        return self.privacy is not None and self.privacy.secure_aggregation

    def _check_secure_aggregation(self) -> None:
        """Refuse what secure aggregation cannot do: it reveals only a sum, so the rule must be
        plain FedAvg (no robust rule, screen, cap or reputation needs individual updates)."""
        from fedledger.privacy.secagg import MAX_MEMBERS
        from fedledger.privacy.secagg_keys import MAX_ROUNDS_PER_BLOB, MIN_MEMBERS

        field = "privacy.secure_aggregation"
        agg = self.aggregation
        if agg.rule != "fedavg":
            raise ConfigError(f"works with aggregation.rule = \"fedavg\" only, not {agg.rule!r}: "
                              "robust rules need individual updates, which it hides",
                              field=field)  # fmt: skip
        if agg.params:
            raise ConfigError(f"works with plain fedavg only: remove aggregation "
                              f"{', '.join(sorted(agg.params))} (it needs individual updates "
                              "or every weight in advance)", field=field)  # fmt: skip
        if not MIN_MEMBERS <= self.nodes <= MAX_MEMBERS:
            raise ConfigError(f"needs {MIN_MEMBERS} to {MAX_MEMBERS} nodes, got {self.nodes}",
                              field=field)  # fmt: skip
        if self.rounds > MAX_ROUNDS_PER_BLOB:
            raise ConfigError(f"supports at most {MAX_ROUNDS_PER_BLOB} rounds for now (one "
                              f"key blob a member), got {self.rounds}", field=field)  # fmt: skip

    def privacy_plan(self) -> PrivacyPlan | None:
        """The differential-privacy figures of this task (noise multiplier, budget, the most
        rounds a node may contribute to), or None without noise."""
        if self.privacy is None or not self.privacy.differential:
            return None
        from fedledger.privacy.accounting import plan

        try:
            return plan(self.privacy, self.rounds)
        except PrivacyError as exc:
            raise ConfigError(str(exc), field="privacy") from None

    def to_dict(self) -> dict[str, Any]:
        """A plain dictionary of every setting (with defaults filled in)."""
        d = asdict(self)
        d["aggregation"]["params"] = dict(self.aggregation.params)
        if d["privacy"] is None:  # the documents (and digests) of tasks without it unchanged
            del d["privacy"]
        elif not d["privacy"]["secure_aggregation"]:
            del d["privacy"]["secure_aggregation"]
        if self.incentives == IncentivesConfig():  # documents without it unchanged
            del d["incentives"]
        if d["governance"] is None:
            del d["governance"]
        if d["compression"] is None:  # documents (and digests) without it unchanged
            del d["compression"]
        if d["ledger"]["committee"] == 0:  # likewise: a task without committees
            del d["ledger"]["committee"]
        if not d["purpose"]:
            del d["purpose"]
        return d

    def to_toml(self) -> str:
        """The configuration as a TOML document that :func:`parse_config` reads back equal."""
        d = self.to_dict()
        agg = d.pop("aggregation")
        agg.update(agg.pop("params"))
        sections = {"task": {k: d.pop(k) for k in _HEAD if k in d}}
        sections.update(d)
        sections["aggregation"] = agg
        lines: list[str] = []
        for name, table in sections.items():
            lines.append(f"[{name}]")
            for key, value in table.items():
                if value is not None:
                    lines.append(f"{key} = {toml_value(value)}")
            lines.append("")
        return "\n".join(lines)

    def document(self) -> bytes:
        """The canonical JSON of the whole configuration (UTF-8): what :meth:`digest` hashes,
        published on chain when the task is deployed and read back by
        :func:`config_from_document`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()  # fmt: skip

    def check_ledger(self) -> None:
        """What a task on a ledger needs beyond a valid configuration: its contract takes at
        most ``ledger.max_participants`` (up to 256) members. Checked where a ledger is used
        (a deployment, a ledger run); a run without one may have any number of nodes."""
        if self.ledger.max_participants < self.nodes:
            raise ConfigError(f"must be >= task.nodes ({self.nodes}) for a task on a ledger "
                              "(at most 256; without a ledger, --chain none)",
                              field="ledger.max_participants")  # fmt: skip
        self.check_nodes()

    def check_nodes(self) -> None:
        """What nodes can run: committees (``ledger.committee``) without secure aggregation
        (its masking sets are the round's members, not a committee drawn a round ahead)."""
        if self.ledger.committee != 0 and self.secure_aggregation:
            raise ConfigError("committees and secure aggregation do not go together yet: "
                              "use 0 or turn secure_aggregation off",
                              field="ledger.committee")  # fmt: skip

    def digest(self) -> bytes:
        """sha256 of :meth:`document`: the task's identity on chain (its CID's digest)."""
        return hashlib.sha256(self.document()).digest()


def config_differences(mine: TaskConfig, theirs: TaskConfig, *, most: int = 3) -> list[str]:
    """The settings in which two configurations differ, as ``"train.lr: 0.05 here, 0.1 in
    the task"`` (at most ``most``, then how many more)."""

    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, Mapping):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(mine.to_dict()), flat(theirs.to_dict())
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    lines = [f"{k.replace('aggregation.params.', 'aggregation.')}: {a.get(k)!r} here, "
             f"{b.get(k)!r} in the task" for k in keys[:most]]  # fmt: skip
    if len(keys) > most:
        lines.append(f"and {len(keys) - most} more")
    return lines


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


def config_from_document(document: bytes) -> TaskConfig:
    """The configuration whose canonical JSON is ``document`` (as :meth:`TaskConfig.document`
    writes it); a :class:`ConfigError` if it is not one, or not in canonical form."""
    try:
        doc = json.loads(document.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"not a task configuration document: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError("not a task configuration document: not a JSON object")
    doc = _without_none(doc)
    head = {k: doc.pop(k) for k in _HEAD if k in doc}
    agg = doc.get("aggregation")
    if isinstance(agg, dict) and isinstance(agg.get("params"), dict):
        params = agg.pop("params")
        doc["aggregation"] = {**agg, **params}
    try:
        cfg = parse_config({"task": head, **doc})
    except TypeError as exc:
        raise ConfigError(f"not a task configuration document: {exc}") from None
    if cfg.document() != document:
        raise ConfigError("not a canonical task configuration document (it does not hash to "
                          "its own digest)")  # fmt: skip
    return cfg


def toml_value(value: Any) -> str:
    """A Python value as a TOML literal (strings, numbers, booleans, lists of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    # A JSON string is a TOML basic string once non-BMP characters stay literal (JSON would
    # write surrogate pairs, which TOML refuses) and DEL is escaped (JSON leaves it raw).
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def check_table(
    section: str, table: Mapping[str, Any], cls: type, extra_ok: bool = False
) -> dict[str, Any]:
    """Check keys and value types of one TOML table against a dataclass."""
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            if extra_ok:
                continue
            if section == "ledger" and key in _GONE_KEYS:
                raise ConfigError("ledger v2 has one round `window` and a `grace` instead of "
                                  "commit, reveal and attest windows (docs/contracts.md)",
                                  field=f"{section}.{key}")  # fmt: skip
            raise ConfigError(
                f"unknown key; known keys: {', '.join(sorted(known))}", field=f"{section}.{key}"
            )
        out[key] = _check_type(f"{section}.{key}", value, str(known[key].type))
    return out


def _check_type(where: str, value: Any, annotation: str) -> Any:
    """``value`` if it has the type ``annotation`` names (an int for a float is converted,
    a list of ints for a tuple of them); NaN and infinities are never a valid float."""
    expects = annotation.replace(" ", "")
    optional = "None" in expects
    base = expects.split("|")[0]
    if value is None and optional:
        return None
    ok: bool
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ConfigError(f"must be a finite number, got {value!r}", field=where)
        value = float(value) if ok else value
    elif base == "str":
        ok = isinstance(value, str)
    elif base.startswith("tuple[str"):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    elif base.startswith("tuple[int"):
        ok = isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        value = tuple(value) if ok else value
    else:
        ok = True
    if not ok:
        raise ConfigError(
            f"expected {annotation}, got {type(value).__name__} {value!r}", field=where
        )
    return value


_SECTIONS = ("task", "data", "model", "train", "aggregation", "ledger", "gossip", "privacy",
             "incentives", "governance", "compression")  # fmt: skip
_HEAD = ("name", "purpose", "seed", "rounds", "nodes")


def parse_config(doc: Mapping[str, Any]) -> TaskConfig:
    """Build and validate a TaskConfig from a parsed TOML document.

    Every key is known, of its type and in its range, or this raises :class:`ConfigError`
    naming it (``aggregation.beta``); nothing else escapes, whatever the values."""
    if not isinstance(doc, Mapping):
        raise ConfigError(f"must be a TOML document (a table), got {type(doc).__name__}")
    for section, table in doc.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown section; known: {', '.join(_SECTIONS)}", field=section)
        if not isinstance(table, dict):
            raise ConfigError("must be a table", field=section)
    task = check_table("task", doc.get("task", {}), TaskConfig)
    for nested in _SECTIONS[1:]:
        if nested in task:
            raise ConfigError(f"unknown key; use the [{nested}] section", field=f"task.{nested}")
    data = DataConfig(**check_table("data", doc.get("data", {}), DataConfig))
    model = ModelSpec(**check_table("model", doc.get("model", {}), ModelSpec))
    train = TrainConfig(**check_table("train", doc.get("train", {}), TrainConfig))
    agg_table = dict(doc.get("aggregation", {}))
    rule = agg_table.pop("rule", "fedavg")
    f = agg_table.pop("f", 0)
    _check_type("aggregation.rule", rule, "str")
    _check_type("aggregation.f", f, "int")
    aggregation = AggregationConfig(rule=rule, f=f, params=agg_table)
    ledger_table = dict(doc.get("ledger", {}))
    if isinstance(ledger_table.get("min_stake"), float):  # 1e16 is a TOML float
        ledger_table["min_stake"] = check_wei("ledger.min_stake", ledger_table["min_stake"])
    ledger = LedgerConfig(**check_table("ledger", ledger_table, LedgerConfig))
    gossip = MixingConfig(**check_table("gossip", doc.get("gossip", {}), MixingConfig))
    privacy = None
    if "privacy" in doc:
        privacy = PrivacyConfig(**check_table("privacy", doc["privacy"], PrivacyConfig))
    incentives = IncentivesConfig(**check_table("incentives", doc.get("incentives", {}),
                                                IncentivesConfig))  # fmt: skip
    governance = None
    if "governance" in doc:
        governance = GovernanceConfig(**check_table("governance", doc["governance"],
                                                    GovernanceConfig))  # fmt: skip
    compression = None
    if "compression" in doc:
        compression = CompressionConfig(**check_table("compression", doc["compression"],
                                                      CompressionConfig))  # fmt: skip
    return TaskConfig(**task, data=data, model=model, train=train, aggregation=aggregation,
                      ledger=ledger, gossip=gossip, privacy=privacy, incentives=incentives,
                      governance=governance, compression=compression)  # fmt: skip


def read_toml(path: str | Path, *, what: str = "configuration file") -> dict[str, Any]:
    """Parse a TOML file; every failure is a ConfigError naming the file."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} not found: {p}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {p}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from exc


def load_config(path: str | Path) -> TaskConfig:
    """Read and validate a task configuration file: every mistake is a :class:`ConfigError`."""
    doc = read_toml(path)
    try:
        return parse_config(doc)
    except TypeError as exc:  # a dataclass rejected an argument
        raise ConfigError(str(exc)) from exc
