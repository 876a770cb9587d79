"""A PyTorch (CPU) implementation of the :class:`~fedledger.learning.trainer.Trainer` protocol.

One :class:`TorchTrainer` owns one model instance, built once; each ``fit``/``evaluate`` call
loads the given parameters into it. The instance is therefore not safe to share between threads
running concurrently: give each node (or thread) its own trainer.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional

from fedledger.errors import ConfigError, TrainingError
from fedledger.learning.models import build_model
from fedledger.learning.trainer import FitResult, ModelSpec, Params, TrainConfig

if TYPE_CHECKING:
    from fedledger.data import Dataset

__all__ = ["TorchTrainer"]

_EVAL_BATCH = 4096
_CACHE_SIZE = 8


class TorchTrainer:
    """Cross-entropy training of a :func:`~fedledger.learning.models.build_model` model on CPU.

    ``threads`` (default 1) is passed to :func:`torch.set_num_threads` — a process-wide setting —
    unless it is ``None``. Small models run fastest single-threaded, and many nodes share a
    machine. Results are bit-reproducible for a given seed and thread count.
    """

    def __init__(
        self,
        *,
        model: ModelSpec,
        feature_shape: Sequence[int],
        num_classes: int,
        image_shape: Sequence[int] | None = None,
        threads: int | None = 1,
        module: Callable[[], torch.nn.Module] | None = None,
    ) -> None:
        """``module``: a factory of the user's own ``torch.nn.Module`` (called under a seeded
        RNG, so initial parameters are reproducible); it replaces the registry's ``model``,
        which then only names it. Every state-dict entry must be a float32 tensor (no
        integer buffers such as BatchNorm's ``num_batches_tracked``)."""
        self._module = module
        if threads is not None:
            if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
                raise ConfigError(
                    f"must be an integer >= 1 or None, got {threads!r}", field="threads"
                )
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        self.model_spec = model
        self.feature_shape = tuple(feature_shape)
        self.num_classes = num_classes
        self.image_shape = None if image_shape is None else tuple(image_shape)
        # Built under a fixed seed in a forked RNG scope, so constructing a trainer neither
        # depends on nor disturbs the caller's global torch RNG.
        self._model = self._build(seed=0)
        state = self._model.state_dict(keep_vars=True)
        self.param_names: tuple[str, ...] = tuple(state)
        """State-dict keys, in :data:`Params` order."""
        self._tensors: list[torch.Tensor] = [t.detach() for t in state.values()]
        for name, t in zip(self.param_names, self._tensors, strict=True):
            if t.dtype != torch.float32:  # a user's module may hold integer buffers
                raise ConfigError(f"parameter {name} is {t.dtype}, not float32", field="model")
        self.param_shapes: tuple[tuple[int, ...], ...] = tuple(
            tuple(t.shape) for t in self._tensors
        )
        """The shape of each parameter array, in :data:`Params` order."""
        self._cache: OrderedDict[int, tuple[Dataset, torch.Tensor, torch.Tensor]] = OrderedDict()

    @classmethod
    def for_dataset(
        cls, model: ModelSpec, data: Dataset, *, threads: int | None = 1
    ) -> TorchTrainer:
        """A trainer whose input shapes and class count are those of ``data``."""
        return cls(
            model=model,
            feature_shape=data.feature_shape,
            num_classes=data.num_classes,
            image_shape=data.image_shape,
            threads=threads,
        )

    @property
    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return sum(math.prod(s) for s in self.param_shapes)

    # -- parameters -----------------------------------------------------------------------------

    def _build(self, seed: int) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self._module is not None:
                try:
                    built = self._module()
                except Exception as exc:  # the user's code: any error is a bad model
                    raise ConfigError(f"the model factory failed: {exc}", field="model") from exc
                if not isinstance(built, torch.nn.Module):
                    raise ConfigError(
                        f"the model factory returned a {type(built).__name__}, not a "
                        "torch.nn.Module",
                        field="model",
                    )
                return built
            return build_model(
                self.model_spec,
                feature_shape=self.feature_shape,
                num_classes=self.num_classes,
                image_shape=self.image_shape,
            )

    def init_params(self, seed: int) -> Params:
        """Fresh initial parameters (torch's default initialisation), deterministic for ``seed``."""
        try:
            fresh = self._build(seed)
        except RuntimeError as exc:
            raise TrainingError(f"cannot initialise parameters with seed {seed!r}: {exc}") from exc
        return [_to_numpy(t) for t in fresh.state_dict().values()]

    def get_params(self) -> Params:
        """A copy of the parameters currently loaded in the model."""
        return [_to_numpy(t) for t in self._tensors]

    def set_params(self, params: Params) -> None:
        """Copy ``params`` into the model (the arrays are read, never kept nor mutated).

        Raises :class:`TrainingError` if the count or a shape does not match the model.
        """
        if len(params) != len(self._tensors):
            raise TrainingError(
                f"expected {len(self._tensors)} parameter arrays for model "
                f"{self.model_spec.name!r}, got {len(params)}"
            )
        for i, (p, t) in enumerate(zip(params, self._tensors, strict=True)):
            shape = tuple(np.shape(p))
            if shape != tuple(t.shape):
                raise TrainingError(
                    f"parameter {i} ({self.param_names[i]}) has shape {shape}, "
                    f"expected {tuple(t.shape)}"
                )
        with torch.no_grad():
            for i, (p, t) in enumerate(zip(params, self._tensors, strict=True)):
                try:
                    src = np.asarray(p, dtype=np.float32)
                    if not src.flags.writeable or not src.flags.c_contiguous:
                        src = np.array(src, dtype=np.float32, order="C")
                    t.copy_(torch.from_numpy(src))
                except (TypeError, ValueError, RuntimeError) as exc:
                    raise TrainingError(
                        f"parameter {i} ({self.param_names[i]}) cannot be loaded: {exc}"
                    ) from exc

    # -- data -----------------------------------------------------------------------------------

    def _tensors_of(self, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """The data set as (x float32, y int64) tensors, converted once and cached.

        The cache entry holds a reference to ``data``, so its ``id`` cannot be reused while
        cached; the cache is LRU-bounded to a few data sets.
        """
        key = id(data)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is data:
            self._cache.move_to_end(key)
            return hit[1], hit[2]
        if tuple(data.feature_shape) != self.feature_shape:
            raise TrainingError(
                f"data set {data.name!r} has feature shape {tuple(data.feature_shape)}, "
                f"the model expects {self.feature_shape}"
            )
        x_np = np.asarray(data.x)
        y_np = np.asarray(data.y)
        n = len(y_np)
        if x_np.shape != (n, *self.feature_shape):
            raise TrainingError(
                f"data set {data.name!r}: x has shape {x_np.shape}, expected "
                f"{(n, *self.feature_shape)}"
            )
        if n and (int(y_np.min()) < 0 or int(y_np.max()) >= self.num_classes):
            raise TrainingError(
                f"data set {data.name!r}: labels must lie in [0, {self.num_classes}), "
                f"got [{int(y_np.min())}, {int(y_np.max())}]"
            )
        # Copies: later in-place changes to the caller's arrays cannot leak into training.
        x = torch.tensor(np.ascontiguousarray(x_np, dtype=np.float32))
        y = torch.tensor(np.ascontiguousarray(y_np, dtype=np.int64))
        self._cache[key] = (data, x, y)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return x, y

    # -- training / evaluation ------------------------------------------------------------------

    def fit(
        self, params: Params, data: Dataset, config: TrainConfig, *, seed: int = 0
    ) -> FitResult:
        """Train ``config.epochs`` epochs of shuffled mini-batches from ``params`` on ``data``.

        Same inputs and seed give bit-identical parameters. Empty data returns a copy of
        ``params`` with ``num_examples=0`` and zero metrics. Raises :class:`TrainingError` if the
        loss diverges (non-finite) or torch rejects the computation.
        """
        self.set_params(params)
        x, y = self._tensors_of(data)
        n = int(y.shape[0])
        if n == 0:
            return FitResult(self.get_params(), 0, {"loss": 0.0, "accuracy": 0.0})
        model = self._model
        opt = _optimizer(model, config)
        gen = torch.Generator()
        try:
            gen.manual_seed(seed)
        except (RuntimeError, TypeError, ValueError, OverflowError) as exc:
            raise TrainingError(f"invalid shuffling seed {seed!r}: {exc}") from exc
        bs = config.batch_size
        loss_mean = acc = 0.0
        model.train()
        try:
            for epoch in range(config.epochs):
                perm = torch.randperm(n, generator=gen)
                xs, ys = x[perm], y[perm]
                loss_sum = torch.zeros((), dtype=torch.float64)
                correct = torch.zeros((), dtype=torch.int64)
                for start in range(0, n, bs):
                    xb, yb = xs[start : start + bs], ys[start : start + bs]
                    logits = model(xb)
                    loss = functional.cross_entropy(logits, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                    opt.step()
                    with torch.no_grad():
                        loss_sum += loss.detach().double() * yb.shape[0]
                        correct += (logits.argmax(dim=1) == yb).sum()
                loss_mean = float(loss_sum) / n
                acc = int(correct) / n
                if not math.isfinite(loss_mean):
                    raise TrainingError(
                        f"loss diverged (non-finite mean loss {loss_mean}) in epoch "
                        f"{epoch + 1}/{config.epochs} on {data.name!r} with lr={config.lr}"
                    )
        except TrainingError:
            raise
        except RuntimeError as exc:
            raise TrainingError(
                f"training model {self.model_spec.name!r} on {data.name!r} failed: {exc}"
            ) from exc
        if not all(bool(torch.isfinite(t).all()) for t in self._tensors):
            raise TrainingError(
                f"loss diverged: parameters became non-finite on {data.name!r} with lr={config.lr}"
            )
        return FitResult(self.get_params(), n, {"loss": loss_mean, "accuracy": acc})

    def evaluate(self, params: Params, data: Dataset) -> dict[str, float]:
        """Accuracy (in [0, 1]), mean cross-entropy loss and example count of ``params``."""
        self.set_params(params)
        x, y = self._tensors_of(data)
        n = int(y.shape[0])
        if n == 0:
            return {"accuracy": 0.0, "loss": 0.0, "num_examples": 0.0}
        model = self._model
        model.eval()
        loss_sum = 0.0
        correct = 0
        try:
            with torch.no_grad():
                for start in range(0, n, _EVAL_BATCH):
                    xb, yb = x[start : start + _EVAL_BATCH], y[start : start + _EVAL_BATCH]
                    logits = model(xb)
                    loss_sum += float(functional.cross_entropy(logits, yb, reduction="sum"))
                    correct += int((logits.argmax(dim=1) == yb).sum())
        except RuntimeError as exc:
            raise TrainingError(
                f"evaluating model {self.model_spec.name!r} on {data.name!r} failed: {exc}"
            ) from exc
        return {"accuracy": correct / n, "loss": loss_sum / n, "num_examples": float(n)}


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    raise ConfigError(f"unknown optimizer {config.optimizer!r}", field="train.optimizer")


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """A fresh float32, C-contiguous NumPy copy of a tensor."""
    return np.array(t.detach().cpu().numpy(), dtype=np.float32, order="C", copy=True)
