"""The sites' own model: any torch.nn.Module whose state-dict entries are float32 tensors.

Every site must build the same architecture: nodes exchange parameters in state-dict order.
"""

from __future__ import annotations

from torch import nn


def build() -> nn.Module:
    """A small MLP for the 30 Wisconsin breast-cancer features, 2 classes."""
    return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))
