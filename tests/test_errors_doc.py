"""docs/errors.md and the errors module's docstring draw the same tree as the classes."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from fedledger import errors

ROOT = Path(__file__).resolve().parents[1]
NODE = re.compile(r"^(?P<indent>[│ ]*)[├└]── (?P<name>\w+)", re.M)


def tree(text: str) -> dict[str, int]:
    """Each class drawn, and its depth (1: a child of FedledgerError)."""
    found = [(len(m["indent"]), m["name"]) for m in NODE.finditer(text)]
    base = min(indent for indent, _ in found)
    return {name: (indent - base) // 4 + 1 for indent, name in found}


def test_drawn_trees_match_the_classes() -> None:
    classes = {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.FedledgerError) and cls is not errors.FedledgerError
    }
    depth = {
        name: sum(1 for base in cls.__mro__ if issubclass(base, errors.FedledgerError)) - 1
        for name, cls in classes.items()
    }
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert tree(doc) == depth
    assert tree(errors.__doc__ or "") == depth
