"""``fedledger task``: (being written)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the command's parser (none yet)."""
