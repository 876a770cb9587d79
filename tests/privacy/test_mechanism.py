"""The DP mechanism's parts: the ChaCha20 Gaussian stream and clip-and-noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedledger.errors import PrivacyError
from fedledger.privacy import GaussianStream, clip_factor, noise_key, privatize

SECRET = bytes(range(32))


def test_the_noise_key_depends_on_every_input_and_the_stream_on_the_key() -> None:
    key = noise_key(SECRET, task="t", rnd=3, base="bafyA")
    assert len(key) == 32
    assert noise_key(SECRET, task="t", rnd=3, base="bafyA") == key  # a restart: the same noise
    others = {
        noise_key(bytes(32), task="t", rnd=3, base="bafyA"),
        noise_key(SECRET, task="u", rnd=3, base="bafyA"),
        noise_key(SECRET, task="t", rnd=4, base="bafyA"),
        noise_key(SECRET, task="t", rnd=3, base="bafyB"),
    }
    assert key not in others
    assert len(others) == 4
    a, b = GaussianStream(key).normal(1000), GaussianStream(key).normal(1000)
    assert np.array_equal(a, b)
    split = GaussianStream(key)
    assert np.array_equal(np.concatenate([split.normal(300), split.normal(700)]), a)
    assert not np.array_equal(GaussianStream(noise_key(SECRET, task="t", rnd=4,
                                                        base="bafyA")).normal(1000), a)  # fmt: skip


def test_the_stream_is_standard_normal() -> None:
    z = GaussianStream(noise_key(SECRET, task="t", rnd=1, base="b")).normal(200_000)
    assert z.dtype == np.float64
    assert np.all(np.isfinite(z))
    assert abs(z.mean()) < 0.01
    assert abs(z.std() - 1.0) < 0.01
    assert np.abs(z).max() < 8.3  # 53-bit uniforms: the inverse CDF's largest magnitude
    # Kolmogorov-Smirnov against N(0, 1): the key is fixed, so the outcome is too.
    assert stats.kstest(z, "norm").pvalue > 0.01
    # Neighbouring draws are independent.
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.01


def test_bad_keys_and_counts_are_refused() -> None:
    with pytest.raises(PrivacyError):
        noise_key(b"short", task="t", rnd=1, base="b")
    with pytest.raises(PrivacyError):
        noise_key(SECRET, task="t", rnd=-1, base="b")
    with pytest.raises(PrivacyError):
        GaussianStream(b"x" * 31)
    with pytest.raises(PrivacyError):
        GaussianStream(SECRET).normal(-1)


def test_clip_factor_bounds() -> None:
    assert clip_factor(0.0, 1.0) == 1.0
    assert clip_factor(1.0, 1.0) == 1.0
    assert clip_factor(4.0, 1.0) == 0.25
    for norm, clip in ((-1.0, 1.0), (math.nan, 1.0), (math.inf, 1.0), (1.0, 0.0), (1.0, -2.0)):
        with pytest.raises(PrivacyError):
            clip_factor(norm, clip)


def _model(rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    return [(scale * rng.standard_normal(s)).astype(np.float32) for s in ((64, 10), (10,))]


def test_privatize_without_noise_clips_the_change_to_the_bound() -> None:
    rng = np.random.default_rng(0)  # test data, not a secret
    base = _model(rng, 1.0)
    change = _model(rng, 0.5)
    local = [b + c for b, c in zip(base, change, strict=True)]
    norm = math.sqrt(sum(float(np.sum(c.astype(np.float64) ** 2)) for c in change))
    out = privatize(base, local, clip=1.0, noise_multiplier=0.0, noise=GaussianStream(SECRET))
    assert out.clipped
    assert out.norm == pytest.approx(norm, rel=1e-5)
    got = [o.astype(np.float64) - b for o, b in zip(out.params, base, strict=True)]
    assert math.sqrt(sum(float(np.sum(g**2)) for g in got)) == pytest.approx(1.0, rel=1e-5)
    for g, c in zip(got, change, strict=True):  # the direction is kept
        assert np.allclose(g, c * (1.0 / norm), atol=1e-6)
    assert [o.dtype for o in out.params] == [np.float32, np.float32]
    # Under the bound the update is released as it is.
    small = privatize(base, local, clip=norm * 2, noise_multiplier=0.0,
                      noise=GaussianStream(SECRET))  # fmt: skip
    assert not small.clipped
    assert all(np.array_equal(a, b) for a, b in zip(small.params, local, strict=True))


def test_privatize_adds_noise_of_std_sigma_times_clip() -> None:
    base = [np.zeros((300, 100), np.float32)]
    local = [np.full((300, 100), 0.001, np.float32)]  # norm 0.17: not clipped at 0.5
    out = privatize(base, local, clip=0.5, noise_multiplier=2.0, noise=GaussianStream(SECRET))
    residual = out.params[0].astype(np.float64) - 0.001
    assert residual.std() == pytest.approx(1.0, rel=0.01)  # sigma * C = 2.0 * 0.5
    assert abs(residual.mean()) < 0.01
    # The same key gives the same release (a retrained round), another key another one.
    again = privatize(base, local, clip=0.5, noise_multiplier=2.0, noise=GaussianStream(SECRET))
    assert np.array_equal(again.params[0], out.params[0])
    other = privatize(base, local, clip=0.5, noise_multiplier=2.0,
                      noise=GaussianStream(bytes(32)))  # fmt: skip
    assert not np.array_equal(other.params[0], out.params[0])


def test_privatize_checks_its_inputs_first() -> None:
    base = [np.zeros(3, np.float32)]
    noise = GaussianStream(SECRET)
    with pytest.raises(PrivacyError, match="shape"):
        privatize(base, [np.zeros(4, np.float32)], clip=1.0, noise_multiplier=1.0, noise=noise)
    with pytest.raises(PrivacyError, match="arrays"):
        privatize(base, [], clip=1.0, noise_multiplier=1.0, noise=noise)
    with pytest.raises(PrivacyError, match="finite"):
        privatize(base, [np.array([0, np.nan, 0], np.float32)], clip=1.0, noise_multiplier=1.0,
                  noise=noise)  # fmt: skip
    for sigma in (-1.0, math.nan, math.inf):
        with pytest.raises(PrivacyError, match="noise_multiplier"):
            privatize(base, base, clip=1.0, noise_multiplier=sigma, noise=noise)
    with pytest.raises(PrivacyError, match="clip"):
        privatize(base, base, clip=0.0, noise_multiplier=1.0, noise=noise)
