"""Deterministic aggregation rules over lists of parameter lists.

See :mod:`fedledger.aggregation.rules` for the rules and :mod:`fedledger.aggregation.fixedpoint`
for the exact integer representation that makes them byte-identical under permutation.
"""

from fedledger.aggregation.rules import (
    RULES,
    SCORE_TOTAL,
    AggregationResult,
    RuleInfo,
    aggregate,
    centered_clipping,
    fedavg,
    geometric_median,
    krum,
    median,
    multi_krum,
    trimmed_mean,
)
from fedledger.aggregation.validation import ParamSpec, check_update, spec_of

__all__ = [
    "RULES",
    "SCORE_TOTAL",
    "AggregationResult",
    "ParamSpec",
    "RuleInfo",
    "aggregate",
    "centered_clipping",
    "check_update",
    "fedavg",
    "geometric_median",
    "krum",
    "median",
    "multi_krum",
    "spec_of",
    "trimmed_mean",
]
