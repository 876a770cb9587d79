"""The framework-agnostic local-training interface.

Nothing here imports torch: a model's parameters cross every module boundary as
:data:`Params`, a list of NumPy arrays (float32, C-contiguous, owned by the receiver), in the
model's fixed parameter order. Concrete trainers (see :mod:`fedledger.learning.torch_trainer`)
implement the :class:`Trainer` protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from fedledger.errors import ConfigError

if TYPE_CHECKING:
    from fedledger.data import Dataset

__all__ = [
    "MODELS",
    "OPTIMIZERS",
    "FitResult",
    "ModelSpec",
    "Params",
    "TrainConfig",
    "Trainer",
]

Params = list[np.ndarray]
"""A model's parameters: float32, C-contiguous arrays, one per state-dict entry, in order."""

MODELS: tuple[str, ...] = ("logreg", "mlp", "cnn")
"""The model architectures a :class:`ModelSpec` can name."""

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
"""The optimizers a :class:`TrainConfig` can name."""


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyper-parameters of one local training run (one ``fit`` call).

    ``momentum`` applies to SGD only; a non-zero momentum with ``optimizer="adam"`` is rejected
    rather than silently ignored. ``weight_decay`` is classic L2 regularisation for both. The
    optimizer state (momentum buffers, Adam moments) lives for one ``fit`` call only.
    """

    lr: float = 0.05
    batch_size: int = 32
    epochs: int = 1
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if not _is_real(self.lr) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"must be a finite number > 0, got {self.lr!r}", field="train.lr")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError(
                f"must be an integer >= 1, got {self.batch_size!r}", field="train.batch_size"
            )
        if not _is_int(self.epochs) or self.epochs < 1:
            raise ConfigError(f"must be an integer >= 1, got {self.epochs!r}", field="train.epochs")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
                field="train.optimizer",
            )
        if not _is_real(self.momentum) or not 0.0 <= self.momentum < 1.0:
            raise ConfigError(
                f"must be a number in [0, 1), got {self.momentum!r}", field="train.momentum"
            )
        if self.optimizer != "sgd" and self.momentum != 0.0:
            raise ConfigError(
                f"applies to the sgd optimizer only, got {self.momentum!r} with {self.optimizer!r}",
                field="train.momentum",
            )
        if (
            not _is_real(self.weight_decay)
            or not math.isfinite(self.weight_decay)
            or self.weight_decay < 0
        ):
            raise ConfigError(
                f"must be a finite number >= 0, got {self.weight_decay!r}",
                field="train.weight_decay",
            )


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Which architecture to train. ``hidden`` (layer widths) is used by ``"mlp"`` only.

    A list given for ``hidden`` (as read from TOML) is normalised to a tuple.
    """

    name: str = "mlp"
    hidden: tuple[int, ...] = (64, 64)

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ConfigError(
                f"must be one of {', '.join(MODELS)}, got {self.name!r}", field="model.name"
            )
        hidden: object = self.hidden
        if isinstance(hidden, list):
            hidden = tuple(hidden)
            object.__setattr__(self, "hidden", hidden)
        if not isinstance(hidden, tuple) or not all(_is_int(h) and h >= 1 for h in hidden):
            raise ConfigError(
                f"must be a sequence of integers >= 1, got {self.hidden!r}", field="model.hidden"
            )
        if self.name == "mlp" and not hidden:
            raise ConfigError(
                "an mlp needs at least one hidden layer (use model 'logreg' for none)",
                field="model.hidden",
            )


class FitResult(NamedTuple):
    """The outcome of one local training run."""

    params: Params
    """The trained parameters (fresh arrays)."""
    num_examples: int
    """How many training examples were used (the FedAvg weight)."""
    metrics: dict[str, float]
    """At least ``"loss"`` and ``"accuracy"``: mean training loss and training accuracy over the
    last epoch, measured on each mini-batch before its update step."""


class Trainer(Protocol):
    """Trains and evaluates one model architecture on :class:`~fedledger.data.Dataset` s."""

    def init_params(self, seed: int) -> Params:
        """Fresh initial parameters; the same seed always gives the same arrays."""
        ...

    def fit(
        self, params: Params, data: Dataset, config: TrainConfig, *, seed: int = 0
    ) -> FitResult:
        """Train from ``params`` (never mutated) on ``data``; deterministic for the seed."""
        ...

    def evaluate(self, params: Params, data: Dataset) -> dict[str, float]:
        """``{"accuracy", "loss", "num_examples"}`` of ``params`` on ``data`` (all floats).

        Empty data gives ``{"accuracy": 0.0, "loss": 0.0, "num_examples": 0.0}``.
        """
        ...
