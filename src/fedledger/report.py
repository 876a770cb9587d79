"""The run report (``report.json``): one schema for every mode; see docs/report.md."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Accuracy:
    """Test accuracy of the nodes' models: mean, min and max over nodes."""

    acc_mean: float
    acc_min: float
    acc_max: float

    @classmethod
    def over(cls, accuracies: Sequence[float]) -> Accuracy:
        if not accuracies:
            return cls(acc_mean=math.nan, acc_min=math.nan, acc_max=math.nan)
        lo, hi = min(accuracies), max(accuracies)
        # fsum is exact; the clamp keeps min <= mean <= max despite the final rounding.
        mean = min(max(math.fsum(accuracies) / len(accuracies), lo), hi)
        return cls(acc_mean=mean, acc_min=lo, acc_max=hi)


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    round: int
    acc_mean: float
    acc_min: float
    acc_max: float
    wall_s: float
    """Seconds since the run started, at the end of this round."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Mode-specific per-round fields, merged into the round's JSON object."""


@dataclass(frozen=True, kw_only=True)
class Report:
    mode: str
    nodes: int
    rounds: list[RoundRecord]
    final: dict[str, Any]
    """At least acc_mean, acc_min, acc_max, wall_s; modes add fields."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Mode-specific top-level fields."""

    def to_dict(self) -> dict[str, Any]:
        rounds = []
        for r in self.rounds:
            d = asdict(r)
            d.update(d.pop("extra"))
            rounds.append(d)
        out: dict[str, Any] = {"schema": SCHEMA_VERSION, "mode": self.mode, "nodes": self.nodes}
        out["rounds"] = rounds
        out["final"] = dict(self.final)
        out.update(self.extra)
        return out

    def write(self, directory: str | Path) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        out = path / "report.json"
        out.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return out
