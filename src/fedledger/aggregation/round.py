"""The round function: one consensus round's aggregation, from blobs to the new model's blob.

Nodes (consensus and ledger mode), the audit, the baseline and the benchmarks all call
:func:`aggregate_round`, so the model a node attests and the model the audit recomputes come
out of the same code, byte for byte:

1. **decode** the round's base model and every update from canonical blobs (an update that is
   no parameter blob, or is missing, enters the rule as ``None`` and is rejected with a
   reason, as any malformed update is); with ``[compression]`` an update is a compressed
   delta from the base, decoded to ``base + delta`` exactly
   (:func:`fedledger.commit.compression.decode_update`, the audit's path too);
2. **weight** each update by its example count (at least 1);
3. **screen and aggregate** with the task's rule (:func:`fedledger.aggregation.aggregate`:
   reputation, free-riding and norm-bound screens, nearest-neighbour mixing, the rule);
4. **score**: the rule's integer score per update, for rewards.

If the rule cannot produce a model (too few valid updates for its Byzantine bound, say), the
round keeps its base model and every update scores 0: every honest node reaches that same
outcome, so the round still agrees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedledger.aggregation.rules import aggregate
from fedledger.aggregation.validation import spec_of
from fedledger.commit import decode, encode, sha256
from fedledger.commit.compression import decode_update
from fedledger.errors import AggregationError, CodecError

if TYPE_CHECKING:  # fedledger.config validates rule parameters with this package
    from fedledger.config import AggregationConfig, CompressionConfig
    from fedledger.incentives.scores import Scoring

Blob = bytes | bytearray | memoryview


@dataclass(frozen=True, kw_only=True)
class RoundResult:
    """What a round produced: the model's canonical blob and each update's score."""

    model: bytes
    """The new model's canonical blob (the base model's when the rule failed)."""
    params: list[np.ndarray] = field(repr=False)
    scores: tuple[int, ...]
    """Per update, in input order: the rule's score (0 for a rejected one)."""
    rejected: Mapping[int, str]
    """Per rejected update (input index): why."""
    failure: str | None = None
    """Why the rule produced no model (then ``model`` is the base), else None."""


def aggregate_round(
    rule: AggregationConfig,
    *,
    base: Blob,
    updates: Sequence[Blob | None],
    num_examples: Sequence[int],
    reputation: Sequence[tuple[int, int]] | None = None,
    max_bytes: int | None = None,
    scoring: Scoring | None = None,
    compression: CompressionConfig | None = None,
) -> RoundResult:
    """Aggregate one round: ``updates`` (blobs, ``None`` for one that could not be obtained)
    with their authors' ``num_examples``, from the round's ``base`` model blob.

    ``reputation``: each update's author's ``(selections, reveals)`` when the rule uses it.
    ``max_bytes``: the largest blob accepted (default: the base model's size, since every
    valid update has the base model's shapes and so exactly its encoded size).
    ``scoring``: contribution scores (``[incentives]``) replace the rule's scores of the kept
    updates (:func:`fedledger.incentives.scores.contribution_scores`).
    ``compression``: the task's ``[compression]``; its updates are compressed deltas from
    ``base`` (a plain parameter blob is then rejected, and a delta without it).

    Raises :class:`CodecError` only for a base that is not a parameter blob (the caller's own
    model: not an input's fault); everything wrong with an update is a rejection.
    """
    if len(num_examples) != len(updates):
        raise AggregationError(f"{len(updates)} updates but {len(num_examples)} example counts")
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in num_examples):
        raise AggregationError("example counts must be non-negative integers")
    limit = len(base) if max_bytes is None else max_bytes
    base_params = decode(base, max_bytes=max(limit, len(base)))
    decoded: list[Any] = []  # None: rejected by the rule's validation, with a reason
    reasons: dict[int, str] = {}
    scheme = None if compression is None else compression.scheme
    base_digest = sha256(base)
    what = "a parameter blob" if scheme is None else f"a {scheme.name} compressed update"
    for i, blob in enumerate(updates):
        if blob is None:
            decoded.append(None)
            reasons[i] = "blob unavailable"
            continue
        try:
            decoded.append(decode_update(blob, base=base_params, base_digest=base_digest,
                                         scheme=scheme, max_bytes=limit))  # fmt: skip
        except CodecError as exc:
            decoded.append(None)
            reasons[i] = f"not {what}: {exc}"
    weights = [max(k, 1) for k in num_examples]
    try:
        result = aggregate(
            rule.rule,
            decoded,
            weights,
            f=rule.f,
            params=rule.params,
            spec=spec_of(base_params),
            center=base_params,
            reputation=reputation,
        )
    except AggregationError as exc:
        return RoundResult(
            model=bytes(base),
            params=base_params,
            scores=(0,) * len(updates),
            rejected=reasons,
            failure=str(exc),
        )
    rejected = {**result.rejected, **reasons}
    scores = tuple(result.scores)
    if scoring is not None:
        from fedledger.aggregation.rules import SCORE_TOTAL
        from fedledger.incentives.scores import contribution_scores

        scores = tuple(contribution_scores(scoring, base=base_params, updates=decoded,
                                           weights=weights, kept=result.kept,
                                           total=SCORE_TOTAL))  # fmt: skip
    return RoundResult(
        model=encode(result.params),
        params=result.params,
        scores=scores,
        rejected=rejected,
    )
