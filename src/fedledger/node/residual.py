"""A node's error-feedback residual with ``[compression]``: durable across restarts.

Round ``r``'s compressed update carries ``trained - base + residual``
(:func:`fedledger.commit.compression.encode_update`); what it does not send becomes the
residual of the next round. ``state_dir/residual.safetensors`` keeps the round, the residual
that went into its update (``before``) and the one left (``after``), as a canonical tensor
blob (``__metadata__`` format ``fedledger.residual.v1``, the round and the task; the
``before`` arrays then the ``after`` arrays, float32), written like ``state.json``
(:mod:`fedledger.node.state`): to a temporary file, fsynced, renamed over the old one, the
directory fsynced, before the update is announced. So a node restarted mid-round that trains
round ``r`` again adds the same ``before`` and publishes the same bytes (its seeded training
gives the same model), and a node restarted after round ``r`` continues from ``after``. A file
of another task or model, or an unreadable one, is ignored with a warning (the residual starts
at zero: the node loses what it had not sent, nothing else).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedledger.commit.codec import decode_tensors, encode_tensors
from fedledger.commit.compression import Scheme, encode_update

log = logging.getLogger("fedledger.node")

RESIDUAL_FILE = "residual.safetensors"
RESIDUAL_FORMAT = "fedledger.residual.v1"

Shapes = Sequence[tuple[int, ...]]
Saved = tuple[int, list[np.ndarray], list[np.ndarray]]


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ErrorFeedback:
    """The residual of the node whose state directory is ``directory``, for task ``task_id``."""

    def __init__(self, directory: Path, *, task_id: str) -> None:
        self.directory = directory
        self.task_id = task_id
        self._saved: Saved | None = None
        self._loaded = False

    @property
    def path(self) -> Path:
        return self.directory / RESIDUAL_FILE

    def load(self, shapes: Shapes) -> Saved | None:
        """``(round, before, after)`` from the file, or None (no file, or an unusable one)."""
        if self._loaded:
            return self._saved
        self._loaded = True
        if not self.path.exists():
            return None
        try:
            meta, arrays = decode_tensors(self.path.read_bytes(), format=RESIDUAL_FORMAT)
            rnd = int(meta["round"])
            if meta.get("task") != self.task_id:
                raise ValueError("it is another task's")
            if [a.shape for a in arrays] != [*shapes, *shapes] or rnd < 0:
                raise ValueError("it is another model's")
            if any(a.dtype != np.float32 or not np.all(np.isfinite(a)) for a in arrays):
                raise ValueError("its values are not finite float32")
        except (OSError, ValueError, KeyError) as exc:  # CodecError is a ValueError
            log.warning("ignoring %s (%s): the residual starts at zero", self.path, exc)
            return None
        n = len(shapes)
        self._saved = (rnd, arrays[:n], arrays[n:])
        return self._saved

    def residual_for(self, rnd: int, shapes: Shapes) -> list[np.ndarray]:
        """The residual round ``rnd``'s update adds: the one its earlier attempt added if the
        file is round ``rnd``'s, else the one left by the last round (zeros before any)."""
        saved = self.load(shapes)
        if saved is None:
            return [np.zeros(s, dtype=np.float32) for s in shapes]
        done, before, after = saved
        return before if rnd == done else after

    def save(self, rnd: int, before: Sequence[np.ndarray], after: Sequence[np.ndarray]) -> None:
        """Round ``rnd``'s residuals, durably."""
        self.directory.mkdir(parents=True, exist_ok=True)
        arrays = [np.asarray(a, dtype=np.float32) for a in (*before, *after)]
        meta = {"format": RESIDUAL_FORMAT, "round": str(rnd), "task": self.task_id}
        _write_durably(self.path, encode_tensors(arrays, metadata=meta))
        n = len(before)
        self._saved, self._loaded = (rnd, arrays[:n], arrays[n:]), True

    def encode(
        self,
        rnd: int,
        *,
        trained: Sequence[np.ndarray],
        base: Sequence[np.ndarray],
        base_digest: bytes,
        scheme: Scheme,
    ) -> bytes:
        """Round ``rnd``'s compressed update blob, its residual added; the new residual is on
        disk when this returns."""
        shapes = [tuple(int(s) for s in b.shape) for b in base]
        before = self.residual_for(rnd, shapes)
        blob, after = encode_update(trained, base=base, base_digest=base_digest, scheme=scheme,
                                    residual=before)  # fmt: skip
        self.save(rnd, before, after)
        return blob
