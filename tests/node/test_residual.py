"""Error feedback's residual (``[compression]``) survives a restart: a node restarted
mid-round publishes the same bytes again, and one restarted between rounds continues from the
residual its last update left, exactly as if it had not stopped."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from fedledger.commit.compression import Scheme, decode_delta
from fedledger.node.residual import RESIDUAL_FILE, ErrorFeedback

SCHEME = Scheme(int8=True, topk=0.1)
TASK = "ab" * 32


def _base() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(16, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)]


def _trained(rnd: int, base: list[np.ndarray]) -> list[np.ndarray]:
    rng = np.random.default_rng(100 + rnd)
    return [(b + rng.normal(scale=0.1, size=b.shape)).astype(np.float32) for b in base]


def _round(fb: ErrorFeedback, rnd: int) -> bytes:
    base = _base()
    digest = hashlib.sha256(f"model {rnd - 1}".encode()).digest()
    return fb.encode(rnd, trained=_trained(rnd, base), base=base, base_digest=digest,
                     scheme=SCHEME)  # fmt: skip


def test_residuals_survive_a_restart_and_a_retrained_round_is_the_same_release(
    tmp_path: Path,
) -> None:
    steady = ErrorFeedback(tmp_path / "steady", task_id=TASK)
    expected = [_round(steady, r) for r in (1, 2, 3)]
    # The residual carries over: round 2 is not what it would be without round 1's leftovers.
    assert expected[1] != _round(ErrorFeedback(tmp_path / "fresh", task_id=TASK), 2)

    crashy = tmp_path / "crashy"
    first = ErrorFeedback(crashy, task_id=TASK)
    assert [_round(first, r) for r in (1, 2)] == expected[:2]
    # Restarted (a new object reading the file) in the middle of round 2: it trains round 2
    # again and publishes the very same bytes, then continues as if it never stopped.
    again = ErrorFeedback(crashy, task_id=TASK)
    assert _round(again, 2) == expected[1]
    assert _round(again, 3) == expected[2]
    # Restarted between rounds: round 3 from the residual round 2 left.
    other = tmp_path / "between"
    before = ErrorFeedback(other, task_id=TASK)
    _round(before, 1)
    _round(before, 2)
    assert _round(ErrorFeedback(other, task_id=TASK), 3) == expected[2]


def test_the_residual_is_what_was_not_sent(tmp_path: Path) -> None:
    fb = ErrorFeedback(tmp_path, task_id=TASK)
    base = _base()
    blob = _round(fb, 1)
    sent = decode_delta(blob, [(b.shape, b.dtype) for b in base], SCHEME,
                        base_digest=hashlib.sha256(b"model 0").digest())  # fmt: skip
    shapes = [b.shape for b in base]
    left = ErrorFeedback(tmp_path, task_id=TASK).residual_for(2, shapes)
    for t, b, s, r in zip(_trained(1, base), base, sent, left, strict=True):
        np.testing.assert_allclose(s + r, t.astype(np.float64) - b, atol=1e-6)
        assert np.count_nonzero(r) > 0


@pytest.mark.parametrize("damage", ["other task", "garbage", "other model"])
def test_an_unusable_residual_file_starts_from_zero(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    _round(ErrorFeedback(tmp_path, task_id=TASK), 1)
    shapes = [b.shape for b in _base()]
    task, wanted = TASK, shapes
    if damage == "other task":
        task = "cd" * 32
    elif damage == "garbage":
        (tmp_path / RESIDUAL_FILE).write_bytes(b"\x08" + b"\0" * 7 + b"not json")
    else:
        wanted = [(3,), (2,)]
    with caplog.at_level(logging.WARNING, logger="fedledger.node"):
        residual = ErrorFeedback(tmp_path, task_id=task).residual_for(2, wanted)
    assert all(not np.any(r) for r in residual)
    assert [r.shape for r in residual] == list(wanted)
    assert "the residual starts at zero" in caplog.text
