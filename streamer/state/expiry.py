"""Which keys' TTLs a write must refresh: those the store has not refreshed lately.

Every key the Redis store writes carries a TTL (``STREAMER_REDIS_TTL_DAYS``) so that
keys gone idle are collected. Refreshing it on every write cost an ``EXPIRE`` per key
per batch: over a quarter of Redis's calls for a transaction, while the TTL runs in
weeks. ``RecentRefreshes`` remembers the keys this store refreshed within the last
``period_s``, and a write refreshes only the others. A key then expires between
``ttl - period_s`` and ``ttl`` after its last write.

The memory is two generations of key hashes, each a table of ``SLOTS`` hashes
indexed by the hash's low bits (a key is recent if either holds its hash where it
belongs): a key written lands in the newer one, over whatever key was there, which then
only costs that key a refresh at its next write. The generations turn over every
``period_s / 2``, so a key counts as recent for less than ``period_s`` after its refresh.
The tables take the same memory from the start, whatever the keys: two sets of up to
50,000 hashes took 9 MB and filled over a soak's first minutes as new keys came, the
larger part of the worker's growth there (docs/benchmarks.md, the session of 2026-12-06
from 16:52 UTC); these take 4 MB. A key that Redis loses before
its TTL runs out (a restart, a failover) would be written again without a TTL while it
counts as recent: the store forgets everything whenever a round trip fails or Redis has
lost its scripts (``forget``), and ``delete_namespace`` does too. A ``FLUSHDB`` that
leaves the scripts is not noticed: a key written again within the hour after it, and
never after, keeps no TTL.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable

#: The most a key may go without its TTL being refreshed while it is written.
REFRESH_PERIOD_S = 3600.0
#: Key hashes a generation holds (a power of two).
SLOTS = 1 << 18


def _empty(slots: int) -> array[int]:
    return array("q", bytes(8 * slots))


class RecentRefreshes:
    def __init__(self, ttl_s: int, period_s: float = REFRESH_PERIOD_S, slots: int = SLOTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if slots < 1 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two, not {slots}")
        self.ttl_s = ttl_s
        self.period_s = min(period_s, ttl_s / 10)
        self.clock = clock
        self._mask = slots - 1
        self._newer = _empty(slots)
        self._older = _empty(slots)
        self._turned = clock()

    def ttl(self, key: str) -> int:
        """The TTL a write of ``key`` sets: ``ttl_s`` if it is due (it then counts as
        refreshed), else 0 (leave it)."""
        marker = hash(key) or 1  # 0 marks an empty slot
        slot = marker & self._mask
        if self._newer[slot] == marker or self._older[slot] == marker:
            return 0
        self._newer[slot] = marker
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
        self._newer, self._older = _empty(len(self._newer)), _empty(len(self._newer))
        self._turned = self.clock()

    def _turn(self) -> None:
        """The generations turn at fixed times, every ``period_s / 2`` from the last
        ``forget``: a key refreshed in the newer one then leaves the older one before
        ``period_s`` has passed, however far apart the writes (turning at the first write
        due let a key refreshed as a generation began count as recent for a period and
        the gap between two writes)."""
        self._older, self._newer = self._newer, _empty(len(self._newer))
        self._turned += self.period_s / 2
