"""Data-poisoning attacks and the choice of attackers.

* label flipping: every label ``y`` of a Byzantine node's training data becomes
  ``num_classes - 1 - y`` (the standard permutation in ByzFL and the literature);
* backdoor trigger: a fixed pattern (a bright square in a corner of each image, or a set of
  feature values for tabular data) stamped on training examples relabelled to a target class;
  the backdoor success rate is the fraction of triggered test examples (of other classes) the
  model classifies as the target.
"""

from __future__ import annotations

import numpy as np

from fedledger.errors import ConfigError
from fedledger.seeds import derive_seed


def choose_attackers(n: int, fraction: float, seed: int) -> tuple[int, ...]:
    """Which of ``n`` nodes misbehave: ``round(fraction * n)`` of them, drawn from the seed
    (the same run, the same attackers)."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"must be in [0, 1), got {fraction}", field="attackers")
    count = round(fraction * n)
    rng = np.random.default_rng(derive_seed(seed, "attackers"))
    return tuple(sorted(int(i) for i in rng.choice(n, size=count, replace=False)))


def flip_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """``num_classes - 1 - y``: every label moved to another class (for 2 or more classes)."""
    if num_classes < 2:
        raise ConfigError(f"need at least 2 classes, got {num_classes}", field="num_classes")
    labels = np.asarray(y)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError("labels out of range", field="y")
    return (num_classes - 1 - labels).astype(labels.dtype)


def apply_trigger(
    x: np.ndarray, *, image_shape: tuple[int, int] | None, value: float, size: int = 2
) -> np.ndarray:
    """Stamp the trigger: for images (rows of ``h * w`` pixels) a ``size`` x ``size`` square
    of ``value`` in the bottom-right corner; for tabular rows, the last ``size`` features set to
    ``value``. Returns a copy."""
    out = np.array(x, copy=True)
    if out.ndim != 2:
        raise ConfigError(f"expected a 2-d array of examples, got shape {out.shape}", field="x")
    if image_shape is None:
        out[:, -size:] = value
        return out
    h, w = image_shape
    if h * w != out.shape[1] or not 0 < size <= min(h, w):
        raise ConfigError("the trigger does not fit the images", field="image_shape")
    images = out.reshape(len(out), h, w)
    images[:, h - size :, w - size :] = value
    return images.reshape(len(out), h * w)
