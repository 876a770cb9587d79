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


def read_baseline(directory: str | Path) -> dict[str, Any]:
    """The reference a run is drawn against: ``fedledger baseline``'s report.json in
    ``directory``, as a run's report records it under ``baseline`` (docs/report.md).
    :class:`~fedledger.errors.ConfigError` if it is missing or not a baseline's report."""
    from fedledger.errors import ConfigError

    path = Path(directory) / "report.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no baseline report at {str(path)!r}: {exc}", field="baseline") from exc
    if not isinstance(doc, dict) or doc.get("mode") != "fedavg" or not doc.get("rounds"):
        raise ConfigError(f"{str(path)!r} is not a report of `fedledger baseline`",
                          field="baseline")  # fmt: skip
    return {
        "dir": str(directory),
        "task": doc.get("task"),
        "nodes": doc.get("nodes"),
        "config_digest": doc.get("config_digest"),
        "acc": [r["acc_mean"] for r in sorted(doc["rounds"], key=lambda r: r["round"])],
        "final_acc": doc["final"]["acc_mean"],
        "central_acc": (doc.get("central") or {}).get("acc"),
    }
