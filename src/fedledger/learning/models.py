"""The torch model registry: :func:`build_model` turns a :class:`ModelSpec` into a module.

Every model is a plain ``nn.Sequential`` without buffers (no BatchNorm), so each state-dict
entry is a float32 parameter and the state-dict order is the :data:`Params` order.
All models take a float32 batch of shape ``(n, *feature_shape)`` and return logits
``(n, num_classes)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from fedledger.errors import ConfigError
from fedledger.learning.trainer import ModelSpec

__all__ = ["build_model"]


def _check_shape(shape: Sequence[int], field: str) -> tuple[int, ...]:
    out = tuple(shape)
    if not out or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in out):
        raise ConfigError(f"must be a non-empty shape of integers >= 1, got {shape!r}", field=field)
    return out


def build_model(
    spec: ModelSpec,
    *,
    feature_shape: Sequence[int],
    num_classes: int,
    image_shape: Sequence[int] | None = None,
) -> nn.Module:
    """Build a freshly initialised model (from torch's global RNG) for the spec.

    - ``logreg``: ``Linear(prod(feature_shape), num_classes)``.
    - ``mlp``: ``Linear + ReLU`` per hidden width, then ``Linear`` to ``num_classes``.
    - ``cnn``: for small single-image inputs; needs ``image_shape = (c, h, w)`` (the features are
      reshaped to it): ``Conv(c,16,3)-ReLU-Conv(16,32,3)-ReLU-MaxPool(2)-Linear(.,64)-ReLU-
      Linear(64,num_classes)``.

    Raises :class:`ConfigError` for shapes that do not fit the spec.
    """
    features = _check_shape(feature_shape, "feature_shape")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ConfigError(f"must be an integer >= 2, got {num_classes!r}", field="num_classes")
    n_in = math.prod(features)

    if spec.name == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(n_in, num_classes))

    if spec.name == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        width = n_in
        for h in spec.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)

    if spec.name == "cnn":
        if image_shape is None:
            raise ConfigError(
                "model 'cnn' needs a data set with an image_shape (c, h, w)", field="model.name"
            )
        image = _check_shape(image_shape, field="image_shape")
        if len(image) != 3:
            raise ConfigError(
                f"must be (channels, height, width), got {image!r}", field="image_shape"
            )
        c, h, w = image
        if math.prod(image) != n_in:
            raise ConfigError(
                f"{image!r} does not hold {n_in} features (feature_shape {features!r})",
                field="image_shape",
            )
        if h < 2 or w < 2:
            raise ConfigError(f"height and width must be >= 2, got {image!r}", field="image_shape")
        return nn.Sequential(
            nn.Flatten(),
            nn.Unflatten(1, image),
            nn.Conv2d(c, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (h // 2) * (w // 2), 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    # ModelSpec validates the name; this guards a registry that grew without a builder.
    raise ConfigError(f"no builder for model {spec.name!r}", field="model.name")
