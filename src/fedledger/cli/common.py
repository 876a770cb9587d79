"""What the commands share: the stderr console, progress bars, checks of paths, URLs and
key-password options."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from fedledger.errors import ConfigError

console = Console(stderr=True)
"""Progress, notes and errors: stderr, so that stdout stays for results (``--json``)."""


class WaitingProgress(Progress):
    """A progress bar with a line below it: whom the nodes wait for (:attr:`waiting`, cut
    to the terminal's width; nothing when empty)."""

    waiting = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.waiting:
            yield Text(self.waiting, no_wrap=True, overflow="ellipsis")


def _columns() -> tuple[ProgressColumn, ...]:
    return (
        TextColumn("[bold]{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]:.3f}"),
        TimeElapsedColumn(),
    )


def progress_bar() -> Progress:
    """A progress bar showing each task's ``acc`` field."""
    return Progress(*_columns(), console=console, transient=False)


def waiting_progress_bar() -> WaitingProgress:
    """:func:`progress_bar` with the line of whom the nodes wait for below it."""
    return WaitingProgress(*_columns(), console=console, transient=False)


def out_dir(path: Path) -> Path:
    """``--out``: created if missing; a clear error if it cannot be a directory."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot use {str(path)!r} as the output directory: "
                          f"{exc.strerror or exc}", field="out") from exc  # fmt: skip
    return path


def rpc_url(url: str, *, field: str) -> str:
    """A JSON-RPC URL as the command line takes it: http(s), a host, a valid port."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parses the port: ValueError if out of range
    except ValueError as exc:
        raise ConfigError(f"not a JSON-RPC URL: {url!r} ({exc})", field=field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"not an http(s) JSON-RPC URL: {url!r}", field=field)
    return url


def password_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--password-file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"the password of {what}: the file's first line (mode 0600); default: "
        "$FEDLEDGER_KEY_PASSWORD. Never on the command line",
    )
