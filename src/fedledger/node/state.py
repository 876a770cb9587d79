"""A node's durable round progress: ``state.json`` (the last round done and its model) and
``rounds.jsonl`` (one record per round done, what report.json is merged from); and
``status.json``, whom it waits for now (:mod:`fedledger.node.waiting`).

``state.json`` is written atomically and durably: to a temporary file, fsynced, renamed over
the old one, and the directory fsynced, so a crash at any point leaves either the old or the
new progress, never a torn file. A restarted node resumes from it only if it names this task
and a model blob that is still in the store and verifies.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from fedledger.errors import BlobError, CodecError, ConfigError
from fedledger.gossip.blobs import BlobStore

log = logging.getLogger("fedledger.node")

STATE_FILE = "state.json"
ROUNDS_FILE = "rounds.jsonl"
MESSAGES_FILE = "messages.json"
"""Ledger mode: the content of every round message this node signed, written durably before
it signs (a restarted node signs the same bytes again, never a conflicting message)."""


STATUS_FILE = "status.json"
"""What the node waits for now (:func:`write_status`): read by ``fedledger run``'s progress
line, rewritten whenever it changes, never fsynced (it only describes the moment)."""


def write_atomically(path: Path, text: str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``text``: whole or not at all, and on disk when this returns
    (unless not ``durable``: then a crash may leave the old text, never a torn one)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if not durable:
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NodeState:
    """Round progress of one node in ``directory`` for task ``task_id``."""

    def __init__(self, directory: Path, *, task_id: str) -> None:
        self.directory = directory
        self.task_id = task_id
        self.records: list[dict[str, Any]] = []
        self.binding = ""
        """The deployment the loaded progress belongs to (``chain id:task address``; empty
        without a ledger)."""

    def load(self, store: BlobStore) -> tuple[int, str] | None:
        """The ``(round, model)`` to resume from, or None to start afresh (with the reason
        logged when a file was there but unusable)."""
        path = self.directory / STATE_FILE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
            if state.get("task") != self.task_id or not store.has(str(state["model"])):
                log.warning("ignoring state.json of another task or with a missing model")
                return None
            verify = getattr(store, "verify", None)
            if verify is not None:
                verify(state["model"])  # BlobMismatch (and deleted) if a crash truncated it
            rnd = state["round"]
            if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
                raise ValueError(f"bad round {rnd!r}")
            self.binding = str(state.get("binding", ""))
            log.info("resuming after round %d", rnd)
            return rnd, str(state["model"])
        except (OSError, ValueError, KeyError, CodecError, BlobError) as exc:
            log.warning("ignoring unusable state.json: %s", exc)
            return None

    def save(self, rnd: int, model: str, binding: str = "") -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        doc = {"task": self.task_id, "round": rnd, "model": model, "binding": binding}
        write_atomically(self.directory / STATE_FILE, json.dumps(doc))

    def record(self, record: dict[str, Any]) -> None:
        """Append one round's record (kept in memory too, for in-process runs)."""
        self.records.append(record)
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / ROUNDS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def write_status(directory: Path, status: dict[str, Any]) -> None:
    """Replace the node's :data:`STATUS_FILE` with ``status`` (``node``, ``address`` and
    ``waiting``: ``round``, ``what``, ``members``, ``until`` as a Unix time, or None)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / STATUS_FILE, json.dumps(status), durable=False)


def read_status(directory: Path) -> dict[str, Any] | None:
    """The node's :data:`STATUS_FILE` (None: none yet, or unreadable)."""
    try:
        doc = json.loads((directory / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_rounds(directory: Path) -> list[dict[str, Any]]:
    """The records a node's ``rounds.jsonl`` holds (a line being written is skipped)."""
    path = directory / ROUNDS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def load_messages(directory: Path, task_id: str, binding: str) -> dict[int, dict[str, Any]]:
    """The round messages this node signed for task ``task_id`` deployed at ``binding`` (chain
    id:task address; JSON, by round). A file of another task or deployment is ignored; an
    unreadable one is an error (signing anew could equivocate)."""
    path = directory / MESSAGES_FILE
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); move it away only if this node never "
                         "signed for this task") from None  # fmt: skip
    if not isinstance(doc, dict) or doc.get("task") != task_id or doc.get("binding") != binding:
        return {}
    messages = doc.get("messages", {})
    if not isinstance(messages, dict):
        raise ConfigError(f"{path}: messages is not an object")
    return {int(k): v for k, v in messages.items()}


def save_message(
    directory: Path, task_id: str, binding: str, rnd: int, message: dict[str, Any]
) -> None:
    """Add round ``rnd``'s message content to :data:`MESSAGES_FILE`, durably (fsync)."""
    directory.mkdir(parents=True, exist_ok=True)
    messages = {str(k): v for k, v in load_messages(directory, task_id, binding).items()}
    messages[str(rnd)] = message
    doc = {"task": task_id, "binding": binding, "messages": messages}
    write_atomically(directory / MESSAGES_FILE, json.dumps(doc, sort_keys=True))
