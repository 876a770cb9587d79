"""The explorer's charts as hand-made SVG: no plotting library, no script, no network.

Each function returns one ``<svg>`` element as a string (every text escaped), sized by its
``viewBox`` so the page scales it. Colours come from one palette, in node order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from fedledger.explorer.views import AccuracyView, NetworkView, RewardsView

__all__ = ["PALETTE", "accuracy_chart", "network_graph", "rewards_chart", "stake_bar"]

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
"""Tableau's ten colours: node ``i`` is drawn in ``PALETTE[i % 10]``."""

_STATUS_COLOURS = {
    "active": "#2ca02c",
    "left": "#bcbd22",
    "withdrawn": "#7f7f7f",
    "slashed": "#d62728",
}


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _text(
    x: float, y: float, text: str, *, anchor: str = "middle", size: int = 11, cls: str = ""
) -> str:
    extra = f' class="{cls}"' if cls else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}"{extra}>'
        f"{escape(text)}</text>"
    )


def _polyline(
    points: Sequence[tuple[float, float] | None],
    stroke: str,
    width: float,
    title: str,
    dash: str = "",
) -> str:
    """Lines through the points, broken where a point is missing."""
    out = []
    run: list[tuple[float, float]] = []
    for p in [*points, None]:
        if p is not None:
            run.append(p)
            continue
        if len(run) == 1:
            x, y = run[0]
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{width + 1:.1f}" fill="{stroke}">'
                f"<title>{escape(title)}</title></circle>"
            )
        elif run:
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            dashing = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(
                f'<polyline points="{pts}" fill="none" stroke="{stroke}" '
                f'stroke-width="{width}"{dashing}><title>{escape(title)}</title>'
                "</polyline>"
            )
        run = []
    return "".join(out)


@dataclass(frozen=True)
class _RoundsFrame:
    """The frame of a chart of values per round in a ``width`` x ``height`` SVG: the plotting
    area (``w`` x ``h`` at ``left``, ``top``), the rounds along x, the legend on its right."""

    rounds: Sequence[int]
    width: int
    height: int
    left: int
    top: int = 14
    right: int = 120
    bottom: int = 36

    @property
    def w(self) -> int:
        return self.width - self.left - self.right

    @property
    def h(self) -> int:
        return self.height - self.top - self.bottom

    def x(self, r: int) -> float:
        lo, hi = self.rounds[0], self.rounds[-1]
        return self.left + (self.w * (r - lo) / (hi - lo) if hi > lo else self.w / 2)

    def grid_line(self, y: float, label: str) -> str:
        """A horizontal grid line at ``y``, labelled on the y axis."""
        return (
            f'<line x1="{self.left}" x2="{self.left + self.w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#ddd"/>' + _text(self.left - 6, y + 4, label, anchor="end")
        )

    def round_axis(self, label: str) -> str:
        """The x axis: at most about ten rounds marked, and ``label``."""
        step = max(1, math.ceil(len(self.rounds) / 10))
        marks = [_text(self.x(r), self.top + self.h + 16, str(r)) for r in self.rounds[::step]]
        return "".join(marks) + _text(self.left + self.w / 2, self.height - 4, label)

    def legend_y(self, i: int) -> int:
        """Where the legend's ``i``-th entry stands."""
        return self.top + 4 + 14 * i

    def legend(self, ly: float, stroke: str, label: str, *, width: int = 2) -> str:
        """A legend entry at height ``ly``: a short line in ``stroke`` and ``label``."""
        end = self.left + self.w
        return (
            f'<line x1="{end + 10}" x2="{end + 26}" y1="{ly:.1f}" y2="{ly:.1f}" '
            f'stroke="{stroke}" stroke-width="{width}"/>'
            + _text(end + 30, ly + 4, label, anchor="start")
        )


def _chart(width: int, height: int, label: str, cls: str = "chart") -> str:
    """An ``<svg>`` element's opening tag."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'class="{cls}" role="img" aria-label="{label}">'
    )


def accuracy_chart(
    view: AccuracyView, *, local: bool = False, width: int = 760, height: int = 320
) -> str:
    """Test accuracy per round: one thin line per node, the mean thick and black (``local``:
    each node's model on its own validation split instead, without a mean)."""
    rounds = view.rounds
    parts = [_chart(width, height, "accuracy per round")]
    if not rounds:
        parts.append(_text(width / 2, height / 2, "no round recorded yet"))
        return "".join(parts) + "</svg>"
    f = _RoundsFrame(rounds=rounds, width=width, height=height, left=48)
    top, h, x = f.top, f.h, f.x
    lo, hi = rounds[0], rounds[-1]

    def y(v: float) -> float:
        return top + h * (1 - max(0.0, min(1.0, v)))

    for k in range(6):  # grid and y axis
        v = k / 5
        parts.append(f.grid_line(y(v), f"{v:.1f}"))
    parts.append(f.round_axis("round"))
    parts.append(f'<line x1="{f.left}" x2="{f.left}" y1="{top}" y2="{top + h}" stroke="#888"/>')
    series = view.local if local else view.nodes
    for i, (node, values) in enumerate(series):
        pts = [(x(r), y(v)) if v is not None else None for r, v in zip(rounds, values, strict=True)]
        parts.append(_polyline(pts, colour(node), 1.2, f"node {node}"))
        ly = f.legend_y(i)
        if ly < top + h:
            parts.append(f.legend(ly, colour(node), f"node {node}"))
    if not local:
        pts = [
            (x(r), y(v)) if v is not None else None for r, v in zip(rounds, view.mean, strict=True)
        ]
        parts.append(_polyline(pts, "#000", 2.6, "mean over nodes"))
        ly = f.legend_y(len(series))
        parts.append(f.legend(ly, "#000", "mean", width=3))
        if view.central is not None:
            parts.append(
                _polyline(
                    [(x(lo), y(view.central)), (x(hi), y(view.central))],
                    "#555",
                    1,
                    "central training",
                    dash="5 4",
                )
            )
            parts.append(_text(f.left + f.w + 30, ly + 18, "central", anchor="start"))
    return "".join(parts) + "</svg>"


def stake_bar(stake: int, quorum: int, active: int, *, width: int = 160, height: int = 14) -> str:
    """The stake that attested a round against its round's stake, the quorum marked."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="stakebar">'
    ]
    if active <= 0:
        return "".join(parts) + "</svg>"
    fill = "#2ca02c" if stake >= quorum else "#d62728"
    sw = width * min(stake, active) / active
    qx = width * min(quorum, active) / active
    pct = 100 * stake / active
    parts.append(f'<rect x="0" y="2" width="{width}" height="{height - 4}" fill="#eee"/>')
    parts.append(
        f'<rect x="0" y="2" width="{sw:.1f}" height="{height - 4}" fill="{fill}">'
        f"<title>{pct:.0f} % of the round's stake attested; the quorum needs "
        f"{100 * quorum / active:.0f} %</title></rect>"
    )
    parts.append(
        f'<line x1="{qx:.1f}" x2="{qx:.1f}" y1="0" y2="{height}" stroke="#000" stroke-width="2"/>'
    )
    return "".join(parts) + "</svg>"


def rewards_chart(view: RewardsView, *, width: int = 760, height: int = 320) -> str:
    """Each member's cumulative reward over the paid rounds (whole tokens)."""
    parts = [_chart(width, height, "cumulative rewards")]
    if not view.rounds:
        parts.append(_text(width / 2, height / 2, "no round paid yet"))
        return "".join(parts) + "</svg>"
    cumulative = []
    for row in view.rows:
        total, acc = 0, []
        for v in row.per_round:
            total += v
            acc.append(total / 1e18)
        cumulative.append(acc)
    top_value = max((c[-1] for c in cumulative if c), default=0.0) or 1.0
    rounds = view.rounds
    f = _RoundsFrame(rounds=rounds, width=width, height=height, left=64)
    top, h, x = f.top, f.h, f.x

    def y(v: float) -> float:
        return top + h * (1 - v / top_value)

    for k in range(5):
        tick = top_value * k / 4
        parts.append(f.grid_line(y(tick), f"{tick:,.0f}"))
    parts.append(f.round_axis("round (paid)"))
    for i, (row, values) in enumerate(zip(view.rows, cumulative, strict=True)):
        c = colour(row.member.index if row.member.index is not None else i)
        pts: list[tuple[float, float] | None] = [
            (x(r), y(v)) for r, v in zip(rounds, values, strict=True)
        ]
        parts.append(_polyline(pts, c, 1.6, row.member.label))
        ly = f.legend_y(i)
        if ly < top + h:
            parts.append(f.legend(ly, c, row.member.label))
    return "".join(parts) + "</svg>"


def network_graph(view: NetworkView, *, size: int = 520) -> str:
    """The members on a circle, sized by stake and coloured by status, with their gossip links;
    the Task contract in the middle, a dashed line to each member registered with it."""
    cx = cy = size / 2
    radius = size / 2 - 70
    parts = [_chart(size, size, "network graph", cls="chart network")]
    n = len(view.members)
    if n == 0:
        parts.append(_text(cx, cy, "no member yet"))
        return "".join(parts) + "</svg>"
    pos = []
    for i in range(n):
        a = 2 * math.pi * i / n - math.pi / 2
        pos.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    if view.contract is not None:
        for px, py in pos:
            parts.append(
                f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{px:.1f}" y2="{py:.1f}" '
                'stroke="#bbb" stroke-dasharray="3 4"/>'
            )
    for i, j in view.edges:
        (x1, y1), (x2, y2) = pos[i], pos[j]
        parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            'stroke="#6a8caf" stroke-width="1.2" class="edge"/>'
        )
    if view.contract is not None:
        parts.append(
            f'<rect x="{cx - 46:.1f}" y="{cy - 16:.1f}" width="92" height="32" rx="6" '
            f'fill="#333"><title>Task contract {escape(view.contract)}</title>'
            "</rect>"
        )
        parts.append(
            f'<text x="{cx:.1f}" y="{cy + 4:.1f}" text-anchor="middle" '
            'font-size="11" fill="#fff">Task contract</text>'
        )
    stakes = [m.stake for m in view.members]
    biggest = max(stakes) or 1
    for (px, py), m in zip(pos, view.members, strict=True):
        r = 10 + 8 * math.sqrt(m.stake / biggest) if biggest else 12
        fill = _STATUS_COLOURS.get(m.status, "#1f77b4")
        title = f"{m.address} ({m.status}; stake {m.stake / 1e18:g} ETH; {m.endpoint or '-'})"
        parts.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{r:.1f}" fill="{fill}" '
            f'stroke="#222" class="member"><title>{escape(title)}</title>'
            "</circle>"
        )
        dy = -r - 6 if py < cy else r + 14
        parts.append(_text(px, py + dy, m.label, size=12))
    return "".join(parts) + "</svg>"
