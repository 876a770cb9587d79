"""A round's contribution scores, as the round function computes them (``[incentives]``).

The aggregation rule decides the model; the scores decide the rewards. With ``scores =
"loo"`` or ``"shapley"``, the members whose updates the rule kept are valued by their effect on
the number of validation examples FedAvg models of their coalitions classify correctly
(:mod:`fedledger.incentives.utility`, exact integers), by leave-one-out or GTG-Shapley
(:mod:`fedledger.incentives.shapley`); an update the rule rejected scores 0. The permutations'
seed (:func:`scores_seed`) is a hash of what the round committed to (task, round, base model,
every input's author and CID) and, with a ledger, of the round's on-chain randomness (the hash
of the block that holds its last message, which no member chooses alone), so every node and
the audit derive the same one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedledger.aggregation import fixedpoint as fx
from fedledger.errors import AggregationError
from fedledger.incentives.shapley import leave_one_out, permutation_shapley, to_scores
from fedledger.incentives.utility import RoundUtility


@dataclass(frozen=True, kw_only=True)
class Scoring:
    """How a round's scores are computed: ``method`` (``loo`` or ``shapley``), the validation
    set (``x``, ``y``), the permutations' ``seed``, the evaluations allowed per member and the
    truncation ``tolerance`` (correct examples)."""

    method: str
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    seed: bytes
    max_evaluations: int = 30
    tolerance: int = 0


def scores_seed(*, task: bytes, rnd: int, base: bytes, inputs: Sequence[tuple[str, str]],
                randomness: bytes = b"") -> bytes:  # fmt: skip
    """The permutations' seed of round ``rnd``: SHA-256 of the task's configuration digest,
    the round, the base model's digest, the chain's ``randomness`` for the round (empty without
    a ledger) and each input's ``(author, CID)`` (sorted by author)."""
    h = hashlib.sha256(b"fedledger/scores/v2|" + task + rnd.to_bytes(8, "big") + base
                       + len(randomness).to_bytes(2, "big") + randomness)  # fmt: skip
    for author, cid in sorted(inputs, key=lambda p: p[0].lower()):
        h.update(f"|{author.lower()}:{cid}".encode())
    return h.digest()


def contribution_scores(
    scoring: Scoring,
    *,
    base: Sequence[np.ndarray],
    updates: Sequence[Sequence[np.ndarray] | None],
    weights: Sequence[int],
    kept: Sequence[int],
    total: int,
) -> list[int]:
    """Each update's score (input order; 0 unless in ``kept``), summing to ``total`` unless
    nobody helped."""
    if scoring.method not in ("loo", "shapley"):
        raise AggregationError(f"unknown score method {scoring.method!r}")
    chosen = sorted(kept)
    if any(updates[i] is None for i in chosen):
        raise AggregationError("a kept update is missing")
    out = [0] * len(updates)
    if not chosen:
        return out
    utility = RoundUtility(
        base=fx.quantize_params(base),
        models=[fx.quantize_params(updates[i]) for i in chosen],  # type: ignore[arg-type]
        weights=[weights[i] for i in chosen],
        shapes=[np.asarray(p).shape for p in base],
        x=scoring.x,
        y=scoring.y,
    )
    n = len(chosen)
    if scoring.method == "loo":
        values = leave_one_out(n, utility)
    else:
        values, _ = permutation_shapley(n, utility, seed=scoring.seed,
                                        max_evaluations=max(n + 1, scoring.max_evaluations * n),
                                        tolerance=scoring.tolerance)  # fmt: skip
    for i, score in zip(chosen, to_scores(values, total), strict=True):
        out[i] = score
    return out
