"""``streamer.state.expiry.RecentRefreshes``: which keys' TTLs a write refreshes (the Redis
store's integration tests check the TTLs Redis then holds)."""

from __future__ import annotations

import pytest

from streamer.state.expiry import RecentRefreshes

TTL = 45 * 86400


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(refreshes: RecentRefreshes, *keys: str) -> list[int]:
    """The TTLs one write sets, as the store asks for them."""
    refreshes.tick()
    return [refreshes.ttl(key) for key in keys]


def test_a_key_is_refreshed_on_its_first_write_then_not_again_within_the_period() -> None:
    clock = Clock()
    refreshes = RecentRefreshes(TTL, period_s=3600, clock=clock)
    assert write(refreshes, "a", "b") == [TTL, TTL]
    clock.now += 1000
    assert write(refreshes, "a", "b", "c") == [0, 0, TTL]
    assert write(refreshes, "c", "c") == [0, 0]


def test_a_key_is_refreshed_again_once_the_period_has_passed_since_its_refresh() -> None:
    clock = Clock()
    refreshes = RecentRefreshes(TTL, period_s=3600, clock=clock)
    write(refreshes, "a")
    for _ in range(5):  # written every 10 minutes: refreshed once an hour at most, and at least
        clock.now += 600
        write(refreshes, "a")
    clock.now += 600  # an hour after its refresh
    assert write(refreshes, "a") == [TTL]


def test_a_key_written_again_after_a_long_silence_is_refreshed() -> None:
    clock = Clock()
    refreshes = RecentRefreshes(TTL, period_s=3600, clock=clock)
    write(refreshes, "a", "b")
    clock.now += 2 * 3600  # no write in between: both generations are stale
    assert write(refreshes, "a", "b") == [TTL, TTL]


def test_no_key_goes_unrefreshed_for_a_period_whatever_the_write_times() -> None:
    clock = Clock()
    refreshes = RecentRefreshes(TTL, period_s=100, clock=clock)
    refreshed_at: dict[str, float] = {}
    for step in range(2000):
        clock.now += (step * 7919) % 13  # irregular gaps of 0 to 12 s
        key = f"k{step % 37}"
        if write(refreshes, key) == [TTL]:
            refreshed_at[key] = clock.now
        assert clock.now - refreshed_at[key] < 100


def test_the_memory_is_fixed_and_a_key_displaced_from_it_is_refreshed_again_never_skipped() -> None:
    """Each generation is a table of hashes: more keys than slots only cost refreshes."""
    clock = Clock()
    refreshes = RecentRefreshes(TTL, period_s=100, slots=8, clock=clock)
    refreshed_at: dict[str, float] = {}
    for step in range(3000):
        clock.now += (step * 7919) % 3  # gaps of 0 to 2 s
        key = f"k{(step * 31) % 50}"
        ttl, again = write(refreshes, key, key)
        assert again == 0  # just refreshed, and nothing took its slot since
        if ttl == TTL:
            refreshed_at[key] = clock.now
        else:  # skipped only when its TTL was set within the period
            assert clock.now - refreshed_at[key] < 100, key
    assert len(refreshes._newer) == len(refreshes._older) == 8


def test_keys_beyond_the_slots_still_skip_refreshes_where_they_do_not_collide() -> None:
    refreshes = RecentRefreshes(TTL, period_s=3600, clock=Clock())
    keys = [f"streamer:v1:card-log:{i}" for i in range(20_000)]
    assert write(refreshes, *keys) == [TTL] * len(keys)
    skipped = write(refreshes, *keys).count(0)
    assert skipped > 0.85 * len(keys)  # 20,000 keys in 262,144 slots: few collide


def test_the_slots_are_a_power_of_two() -> None:
    with pytest.raises(ValueError):
        RecentRefreshes(TTL, slots=1000)


def test_forget_makes_every_key_due() -> None:
    refreshes = RecentRefreshes(TTL, period_s=3600, clock=Clock())
    write(refreshes, "a", "b")
    refreshes.forget()
    assert write(refreshes, "a", "b") == [TTL, TTL]


def test_the_period_is_at_most_a_tenth_of_the_ttl() -> None:
    assert RecentRefreshes(600, period_s=3600).period_s == 60
    assert RecentRefreshes(TTL, period_s=3600).period_s == 3600
