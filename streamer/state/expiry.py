"""Which keys' TTLs a write must refresh: those the store has not refreshed lately.

Every key the Redis store writes carries a TTL (``STREAMER_REDIS_TTL_DAYS``) so that
keys gone idle are collected. Refreshing it on every write cost an ``EXPIRE`` per key
per batch: over a quarter of Redis's calls for a transaction, while the TTL runs in
weeks. ``RecentRefreshes`` remembers the keys this store refreshed within the last
``period_s``, and a write refreshes only the others. A key then expires between
``ttl - period_s`` and ``ttl`` after its last write.

The memory is two generations of key hashes: a key is recent if it is in either.
The generations turn over every ``period_s / 2`` (so a key counts as recent for at most
``period_s`` after its refresh), or sooner when the newer one holds ``capacity`` keys,
which bounds the memory and only ever costs refreshes. A key that Redis loses before
its TTL runs out (a restart, a failover) would be written again without a TTL while it
counts as recent: the store forgets everything whenever a round trip fails or Redis has
lost its scripts (``forget``), and ``delete_namespace`` does too. A ``FLUSHDB`` that
leaves the scripts is not noticed: a key written again within the hour after it, and
never after, keeps no TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: The most a key may go without its TTL being refreshed while it is written.
REFRESH_PERIOD_S = 3600.0
#: Keys held in the newer generation before it turns over.
CAPACITY = 50_000


class RecentRefreshes:
    def __init__(self, ttl_s: int, period_s: float = REFRESH_PERIOD_S, capacity: int = CAPACITY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.period_s = min(period_s, ttl_s / 10)
        self.capacity = capacity
        self.clock = clock
        self._newer: set[int] = set()
        self._older: set[int] = set()
        self._turned = clock()

    def ttl(self, key: str) -> int:
        """The TTL a write of ``key`` sets: ``ttl_s`` if it is due (it then counts as
        refreshed), else 0 (leave it)."""
        marker = hash(key)
        if marker in self._newer or marker in self._older:
            return 0
        if len(self._newer) >= self.capacity:
            self._turn()
        self._newer.add(marker)
        return self.ttl_s

    def tick(self) -> None:
        """Turn the generations over as time has passed; once per write."""
        elapsed = self.clock() - self._turned
        if elapsed >= self.period_s:
            self.forget()
        elif elapsed >= self.period_s / 2:
            self._turn()

    def forget(self) -> None:
        """Every key is due again."""
        self._newer, self._older = set(), set()
        self._turned = self.clock()

    def _turn(self) -> None:
        self._older, self._newer = self._newer, set()
        self._turned = self.clock()
