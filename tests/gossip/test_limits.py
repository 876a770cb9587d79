"""Bounded primitives: keyed token buckets and a TTL cache, both with a capped key table."""

from __future__ import annotations

import pytest

from fedledger.errors import ConfigError
from fedledger.gossip.limits import RateLimiter, TtlCache


def test_bucket_allows_the_burst_then_the_rate() -> None:
    limiter: RateLimiter[str] = RateLimiter(rate=2.0, burst=5.0)
    assert [limiter.allow("a", now=0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.refused == 2
    assert limiter.allow("b", now=0.0)  # keys are independent
    assert not limiter.allow("a", now=0.4)  # 0.8 tokens earned: not yet one
    assert limiter.allow("a", now=0.5)
    assert not limiter.allow("a", now=0.5)
    # The bucket never holds more than the burst, however long the key was idle.
    assert limiter.tokens("a", now=1000.0) == 5.0


def test_cost_and_clock_going_backwards() -> None:
    limiter: RateLimiter[str] = RateLimiter(rate=10.0, burst=100.0)
    assert limiter.allow("a", now=5.0, cost=60.0)
    assert not limiter.allow("a", now=5.0, cost=60.0)  # refused: spends nothing
    assert limiter.tokens("a", now=5.0) == 40.0
    assert not limiter.allow("a", now=1.0, cost=41.0)  # time going back earns nothing
    assert not limiter.allow("z", now=0.0, cost=101.0)  # over the burst: never


def test_key_table_is_bounded_least_recently_used_first() -> None:
    limiter: RateLimiter[int] = RateLimiter(rate=1.0, burst=1.0, max_keys=100)
    assert limiter.allow(0, now=0.0)
    for key in range(1, 10_000):
        limiter.allow(key, now=0.0)
        limiter.allow(0, now=0.0)  # key 0 stays recent (and stays empty)
    assert len(limiter) == 100
    assert 0 in limiter
    assert 9_999 in limiter
    assert 1 not in limiter
    assert not limiter.allow(0, now=0.0)


def test_ttl_cache_expires_and_is_bounded() -> None:
    cache: TtlCache[str, bool] = TtlCache(ttl=5.0, max_keys=3)
    cache.put("a", True, now=0.0)
    assert cache.get("a", now=4.9) is True
    assert cache.get("a", now=5.0) is None
    assert len(cache) == 0  # the expired entry was dropped
    cache.put("x", False, now=10.0)
    assert cache.get("x", now=11.0) is False
    assert cache.contains("x", now=11.0)
    for i in range(1000):
        cache.put(f"k{i}", True, now=10.0)
        assert len(cache) <= 3
    assert cache.get("k999", now=10.0) is True
    assert cache.get("x", now=10.0) is None  # evicted
    cache.put("short", True, now=20.0, ttl=0.5)
    assert len(cache) == 1  # putting at 20 purged the entries that expired at 15
    assert cache.get("short", now=20.6) is None
    cache.put("p", True, now=30.0)
    assert cache.pop("p") is True
    assert cache.pop("p") is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: RateLimiter(rate=0.0, burst=1.0),
        lambda: RateLimiter(rate=1.0, burst=float("inf")),
        lambda: RateLimiter(rate=1.0, burst=1.0, max_keys=0),
        lambda: TtlCache(ttl=-1.0),
        lambda: TtlCache(ttl=1.0, max_keys=True),
    ],
)
def test_bad_configuration(make: object) -> None:
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]
