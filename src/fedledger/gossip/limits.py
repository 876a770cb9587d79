"""Bounded bookkeeping for hostile input: keyed token buckets and a TTL cache, both capped.

Everything a peer can make a node remember must be bounded, including the table of
per-peer limits itself, or the limiter becomes the leak. Both classes here are pure (no I/O,
no clock of their own: every call takes ``now``, in seconds, from any monotonic source) and
keep at most ``max_keys`` entries, evicting the least recently used one.

* :class:`RateLimiter`: one token bucket per key (a remote address, a signed sender); a key
  may spend ``burst`` tokens at once and earns ``rate`` tokens per second. Used by
  :class:`fedledger.gossip.grpc_transport.GrpcTransport` per remote address, and by the node
  per signed sender::

      quota = RateLimiter(rate=50.0, burst=200.0, max_keys=4096)
      if not quota.allow(sender, now=clock()):
          reject("over quota")

  An evicted key comes back with a full bucket: ``max_keys`` must exceed the number of
  legitimate keys (members), so that only hostile keys crowd each other out.
* :class:`TtlCache`: a mapping whose entries expire ``ttl`` seconds after they are stored
  (the node's ``can_download`` answers, seen fetch-request ids)::

      cache = TtlCache[str, bool](ttl=5.0, max_keys=4096)
      allowed = cache.get(requester, now=clock())
      if allowed is None:
          allowed = ledger.can_download(requester)
          cache.put(requester, allowed, now=clock())
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from fedledger.errors import ConfigError

__all__ = ["RateLimiter", "TtlCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"must be a number > 0, got {value!r}", field=name)
    if value != value or value == float("inf"):
        raise ConfigError(f"must be finite, got {value!r}", field=name)
    return float(value)


def _max_keys(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be an int >= 1, got {value!r}", field="max_keys")
    return value


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter(Generic[K]):
    """Token buckets per key, at most ``max_keys`` of them (least recently used evicted).

    ``rate``: tokens earned per second; ``burst``: bucket capacity (and a new key's tokens).
    """

    def __init__(self, *, rate: float, burst: float, max_keys: int = 4096) -> None:
        self.rate = _positive(rate, "rate")
        self.burst = _positive(burst, "burst")
        self.max_keys = _max_keys(max_keys)
        self._buckets: OrderedDict[K, _Bucket] = OrderedDict()
        self.refused = 0
        """How many calls :meth:`allow` refused (diagnostics)."""

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def allow(self, key: K, *, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``key``'s bucket if it holds them; whether it did.

        A refused call spends nothing. ``now`` going backwards earns nothing (never negative).
        A ``cost`` above ``burst`` is never allowed.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=self.burst, stamp=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            if now > bucket.stamp:
                bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
                bucket.stamp = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        self.refused += 1
        return False

    def tokens(self, key: K, *, now: float) -> float:
        """Tokens ``key`` could spend at ``now`` (``burst`` for an unknown key); no change."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.burst
        return min(self.burst, bucket.tokens + max(now - bucket.stamp, 0.0) * self.rate)


@dataclass
class _Entry(Generic[V]):
    value: V
    expires: float


class TtlCache(Generic[K, V]):
    """A mapping whose entries live ``ttl`` seconds; at most ``max_keys`` (LRU evicted)."""

    def __init__(self, *, ttl: float, max_keys: int = 4096) -> None:
        self.ttl = _positive(ttl, "ttl")
        self.max_keys = _max_keys(max_keys)
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()

    def __len__(self) -> int:
        """Entries stored, expired ones not yet purged included."""
        return len(self._entries)

    def get(self, key: K, *, now: float) -> V | None:
        """The live value under ``key``, or None (absent or expired; an expired one is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.value

    def contains(self, key: K, *, now: float) -> bool:
        return self.get(key, now=now) is not None

    def put(self, key: K, value: V, *, now: float, ttl: float | None = None) -> None:
        """Store ``value`` until ``now + ttl`` (default :attr:`ttl`), evicting as needed:
        expired entries first (oldest first, a bounded number per call), then the least
        recently used."""
        life = self.ttl if ttl is None else _positive(ttl, "ttl")
        self._entries[key] = _Entry(value, now + life)
        self._entries.move_to_end(key)
        self._purge(now, budget=4)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry.value

    def _purge(self, now: float, *, budget: int) -> None:
        # Amortised: drop a few expired entries from the LRU end on each put.
        for _ in range(budget):
            if not self._entries:
                return
            key, entry = next(iter(self._entries.items()))
            if now < entry.expires:
                return
            del self._entries[key]
