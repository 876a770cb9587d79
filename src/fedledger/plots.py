"""``report.png``: a run's report.json as one figure (docs/report.md, "report.png").

A pure function of the report's dictionary: :func:`build_figure` makes the figure,
:func:`write_png` saves it. The panels are those the report has the figures for:

* **accuracy per round**: each node's test accuracy (attackers in red), their mean, and the
  reference when the report names one (``baseline``: the server-based FedAvg of the same
  task); for ``fedledger baseline``'s report, FedAvg per round and the central model;
* **bytes per round** (sent and received per node) and **gas per round** (per node, ledger);
* **rewards per member** (reward tokens credited, ledger);
* **under attack**: the honest nodes' mean accuracy against the clean reference;
* **loss per round** (the baseline's test and training loss).

Matplotlib draws headless (the Agg backend) and is imported only with this module, which
``fedledger run`` and ``fedledger baseline`` import when they write the figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a display

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PNG_FILE = "report.png"
PANEL_ACCURACY = "accuracy per round"
PANEL_BYTES = "bytes per round"
PANEL_GAS = "gas per round"
PANEL_REWARDS = "rewards per member"
PANEL_ATTACK = "under attack"
PANEL_LOSS = "loss per round"
ATTACKER = "tab:red"
REFERENCE = "tab:gray"

Draw = Callable[[Axes, Mapping[str, Any]], None]


def panels(report: Mapping[str, Any]) -> list[str]:
    """The titles of the panels ``report`` has figures for, in order."""
    rounds = report.get("rounds") or []
    out = [PANEL_ACCURACY]
    if any("bytes_per_node" in r for r in rounds):
        out.append(PANEL_BYTES)
    if any(r.get("gas_per_node") is not None for r in rounds):
        out.append(PANEL_GAS)
    if (report.get("final") or {}).get("rewards"):
        out.append(PANEL_REWARDS)
    if report.get("attack"):
        out.append(PANEL_ATTACK)
    if any("test_loss" in r for r in rounds):
        out.append(PANEL_LOSS)
    return out


def build_figure(report: Mapping[str, Any]) -> Figure:
    """The figure of ``report`` (a report.json's dictionary): one axes per panel, titled as
    :func:`panels` names them."""
    titles = panels(report)
    cols = 1 if len(titles) == 1 else 2
    rows = math.ceil(len(titles) / cols)
    fig = Figure(figsize=(6.0 * cols, 3.8 * rows), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False)
    cells = [ax for row in grid for ax in row]
    for title, ax in zip(titles, cells, strict=False):
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        DRAW[title](ax, report)
        if title != PANEL_REWARDS:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in cells[len(titles) :]:
        fig.delaxes(ax)
    fig.suptitle(_headline(report))
    return fig


def write_png(report: Mapping[str, Any], directory: str | Path) -> Path:
    """Draw ``report`` into ``directory/report.png`` (beside its report.json); the path."""
    path = Path(directory) / PNG_FILE
    fig = build_figure(report)
    fig.savefig(path, dpi=100)
    return path


# -- the panels ---------------------------------------------------------------------------------


def _headline(report: Mapping[str, Any]) -> str:
    name = report.get("task") or "task"
    parts = [f"{report.get('mode', '?')} mode", f"{report.get('nodes', '?')} nodes"]
    if report.get("rule"):
        parts.append(f"rule {report['rule']}")
    chain = report.get("chain")
    if chain and chain != "none":
        parts.append(f"chain {chain}")
    attack = report.get("attack")
    if attack:
        parts.append(f"attack {attack['name']} by {_nodes(attack.get('attackers', []))}")
    return f"{name}: " + ", ".join(parts)


def _nodes(indexes: Sequence[int]) -> str:
    return ("node " if len(indexes) == 1 else "nodes ") + ", ".join(str(i) for i in indexes)


def _attackers(report: Mapping[str, Any]) -> set[int]:
    return {int(i) for i in (report.get("attack") or {}).get("attackers", [])}


def _series(report: Mapping[str, Any], key: str) -> tuple[list[int], list[float]]:
    """Rounds and the value of ``key`` in each round that has it."""
    xs, ys = [], []
    for r in report.get("rounds") or []:
        value = r.get(key)
        if value is not None:
            xs.append(int(r["round"]))
            ys.append(float(value))
    return xs, ys


def _baseline(report: Mapping[str, Any]) -> tuple[list[int], list[float]] | None:
    """The clean reference's accuracy per round (``baseline``), if the report names one."""
    ref = report.get("baseline")
    if not ref or not ref.get("acc"):
        return None
    accs = [float(a) for a in ref["acc"]]
    return list(range(1, len(accs) + 1)), accs


def _accuracy(ax: Axes, report: Mapping[str, Any]) -> None:
    rounds = report.get("rounds") or []
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    if report.get("mode") == "fedavg":
        xs, ys = _series(report, "acc_mean")
        ax.plot(xs, ys, color="black", linewidth=2, label="FedAvg (server)")
        central = (report.get("central") or {}).get("acc")
        if central is not None:
            epochs = (report.get("central") or {}).get("epochs")
            label = f"central ({epochs} epochs)" if epochs else "central"
            ax.axhline(float(central), color=REFERENCE, linestyle="--", label=label)
        ax.legend(loc="lower right", fontsize="small")
        return
    bad = _attackers(report)
    nodes = sorted({int(k) for r in rounds for k in (r.get("acc_by_node") or {})})
    for i in nodes:
        points = [(int(r["round"]), float(r["acc_by_node"][str(i)])) for r in rounds
                  if str(i) in (r.get("acc_by_node") or {})]  # fmt: skip
        attacker = i in bad
        ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=0.8,
                alpha=0.8 if attacker else 0.45, color=ATTACKER if attacker else None,
                label=f"node {i}" + (" (attacker)" if attacker else ""))  # fmt: skip
    xs, ys = _series(report, "acc_mean")
    ax.plot(xs, ys, color="black", linewidth=2.2, label="mean")
    ref = _baseline(report)
    if ref is not None:
        ax.plot(*ref, color=REFERENCE, linestyle="--", linewidth=1.8,
                label="baseline (server FedAvg)")  # fmt: skip
    ax.legend(loc="lower right", fontsize="x-small", ncols=2 if len(nodes) > 6 else 1)


def _bytes(ax: Axes, report: Mapping[str, Any]) -> None:
    for key, label in (("sent", "sent"), ("recv", "received")):
        xs, ys = [], []
        for r in report.get("rounds") or []:
            per = r.get("bytes_per_node")
            if per is not None:
                xs.append(int(r["round"]))
                ys.append(float(per[key]) / 1024)
        ax.plot(xs, ys, marker=".", label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("KiB per node")
    ax.legend(fontsize="small")


def _gas(ax: Axes, report: Mapping[str, Any]) -> None:
    xs, ys = _series(report, "gas_per_node")
    ax.plot(xs, ys, marker=".", color="tab:purple", label="gas per node")
    ax.set_xlabel("round")
    ax.set_ylabel("gas")
    ax.legend(fontsize="small")


def _rewards(ax: Axes, report: Mapping[str, Any]) -> None:
    rewards: Mapping[str, float] = report["final"]["rewards"]
    addresses = list(report.get("addresses") or [])
    bad = _attackers(report)
    labels, values, colors = [], [], []
    for address, value in rewards.items():
        i = addresses.index(address) if address in addresses else None
        labels.append(f"node {i}" if i is not None else address[:6] + "…")
        values.append(float(value))
        colors.append(ATTACKER if i in bad else "tab:green")
    ax.bar(labels, values, color=colors)
    ax.set_ylabel("reward tokens")
    ax.tick_params(axis="x", labelrotation=45, labelsize="small")


def _attack(ax: Axes, report: Mapping[str, Any]) -> None:
    attack = report["attack"]
    xs, ys = _series(report, "honest_acc")
    ax.plot(xs, ys, color="tab:blue", linewidth=2, label="honest nodes")
    xs, ys = _series(report, "acc_mean")
    ax.plot(xs, ys, color="black", linewidth=1, alpha=0.6, label="all nodes")
    ref = _baseline(report)
    if ref is not None:
        ax.plot(*ref, color=REFERENCE, linestyle="--", linewidth=1.8,
                label="clean reference (baseline)")  # fmt: skip
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.legend(loc="lower right", fontsize="small",
              title=f"{attack['name']} by {_nodes(attack.get('attackers', []))}")  # fmt: skip


def _loss(ax: Axes, report: Mapping[str, Any]) -> None:
    for key, label in (("test_loss", "test loss"), ("train_loss_mean", "training loss")):
        xs, ys = _series(report, key)
        if xs:
            ax.plot(xs, ys, marker=".", label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")


DRAW: dict[str, Draw] = {
    PANEL_ACCURACY: _accuracy,
    PANEL_BYTES: _bytes,
    PANEL_GAS: _gas,
    PANEL_REWARDS: _rewards,
    PANEL_ATTACK: _attack,
    PANEL_LOSS: _loss,
}
