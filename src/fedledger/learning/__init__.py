"""Local training: the framework-agnostic :class:`Trainer` interface and its PyTorch backend.

Parameters cross every boundary as :data:`Params` (a list of float32 NumPy arrays, in the
model's state-dict order). Importing this package imports torch (for :class:`TorchTrainer`);
code that only needs the interface can import :mod:`fedledger.learning.trainer` directly.
"""

from fedledger.learning.models import build_model
from fedledger.learning.torch_trainer import TorchTrainer
from fedledger.learning.trainer import (
    MODELS,
    OPTIMIZERS,
    FitResult,
    ModelSpec,
    Params,
    TrainConfig,
    Trainer,
)

__all__ = [
    "MODELS",
    "OPTIMIZERS",
    "FitResult",
    "ModelSpec",
    "Params",
    "TorchTrainer",
    "TrainConfig",
    "Trainer",
    "build_model",
]
