"""Deterministic seeds derived from a task seed and labels (round, node, purpose).

Every random choice in fedledger draws from a seed derived here, so one task seed reproduces a
whole run, and every node derives the same value without talking to the others.
"""

from __future__ import annotations

import hashlib


def derive_seed(base: int, *labels: object) -> int:
    """A 63-bit seed from ``base`` and labels, stable across runs, machines and versions."""
    text = "/".join([str(int(base)), *map(str, labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
