"""What the benchmarks that draw a figure share: a matplotlib figure written to a PNG (the Agg
backend: files only, no display), and the results written to ``--out`` (the table printed,
NAME.json, results.md and NAME.png)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def figure(path: Path, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """``(fig, axes)`` of ``plt.subplots(**subplots)``; written to ``path`` (PNG, laid out
    tight) when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def write_results(
    out: Path, name: str, doc: Any, lines: list[str], plot: Callable[[Path], None]
) -> None:
    """Print the table ``lines``; write ``doc`` to NAME.json, the table to results.md and
    ``plot(path)``'s figure to NAME.png in ``out``."""
    print("\n".join(lines))
    (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(out / f"{name}.png")
    print(f"written: {out / f'{name}.json'}, results.md, {name}.png")
