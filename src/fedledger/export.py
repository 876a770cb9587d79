"""Taking a trained model out of fedledger: what a node records about its model (the model
card, ``state_dir/model.json``), and the export to plain PyTorch.

The node writes its card when it starts and again once the task's preprocessing is known
(feature statistics computed with the other sites): the module's real parameter names in the
order blobs carry them, the input and output shapes, the architecture (the task's ``[model]``
or the site's own ``module:function``), and the preprocessing every site applies (feature
order, per-feature mean and standard deviation, class names).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedledger.errors import ConfigError

CARD_FILE = "model.json"
CARD_FORMAT = "fedledger-model-card/1"


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What it takes to rebuild a node's model and feed it (see the module docstring)."""

    param_names: tuple[str, ...]
    """The module's ``state_dict`` keys, in the order of a blob's arrays."""
    feature_shape: tuple[int, ...]
    num_classes: int
    image_shape: tuple[int, ...] | None = None
    model: dict[str, Any] | None = None
    """The task's registry model (``ModelSpec`` as a dict) when no factory is used."""
    factory: str | None = None
    """``"module:function"``: the site's own model factory (node.toml's ``model``)."""
    features: tuple[str, ...] | None = None
    """The input columns, in order (a CSV task); None: unnamed."""
    classes: tuple[str, ...] | None = None
    """Class ``i``'s name; None: the classes are the integers 0..num_classes-1."""
    mean: tuple[float, ...] | None = None
    """Per-feature mean subtracted before the model (None: no standardization)."""
    std: tuple[float, ...] | None = None
    """Per-feature standard deviation divided by after the mean."""

    def to_json(self) -> str:
        body = {"format": CARD_FORMAT, **asdict(self)}
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not a model card: {exc}") from exc
        if not isinstance(doc, dict) or doc.pop("format", None) != CARD_FORMAT:
            raise ConfigError(f"not a model card ({CARD_FORMAT})")

        def tup(key: str) -> tuple[Any, ...] | None:
            value = doc.get(key)
            return None if value is None else tuple(value)

        try:
            return cls(
                param_names=tuple(doc["param_names"]),
                feature_shape=tuple(doc["feature_shape"]),
                num_classes=int(doc["num_classes"]),
                image_shape=tup("image_shape"),
                model=doc.get("model"),
                factory=doc.get("factory"),
                features=tup("features"),
                classes=tup("classes"),
                mean=tup("mean"),
                std=tup("std"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a model card: {exc}") from exc


def write_card(state_dir: Path, card: ModelCard) -> Path:
    """Write ``card`` to ``state_dir/model.json`` atomically."""
    path = state_dir / CARD_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(card.to_json(), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_card(state_dir: Path) -> ModelCard:
    path = state_dir / CARD_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no model card at {path}: has this node run?") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return ModelCard.from_json(text)


def floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)
