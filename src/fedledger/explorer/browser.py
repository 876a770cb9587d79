"""Debian's headless chromium (``/usr/bin/chromium``, requirements/apt.txt) driven by
playwright, never a downloaded browser: how the explorer's browser tests and
scripts/explorer_screenshots.py open its pages. Playwright is a development dependency, imported
only when a browser starts."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

__all__ = ["CHROMIUM", "FLAGS", "chromium"]

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Headless, and nothing that reaches beyond this machine (no sync, updates or QUIC)."""


@contextmanager
def chromium(*, width: int, height: int = 900) -> Iterator[BrowserContext]:
    """A browser context of :data:`CHROMIUM` with a fresh profile and a ``width`` x ``height``
    viewport, closed when the block ends."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=list(FLAGS),
            headless=True,
            viewport={"width": width, "height": height},
        )
        try:
            yield context
        finally:
            context.close()
