"""The soak's feed: a stationary input, every round with new entities."""

from __future__ import annotations

import os
import time

import orjson

from bench.soak import retimed_at

FEED = [
    (b"card-1", orjson.dumps({"transaction_id": "t1", "card_id": "card-1", "terminal_id": "term-9", "amount": 5.0,
                              "timestamp": "2018-04-01T00:00:00Z"})),
    (b"user-1", orjson.dumps({"event_id": "e1", "user_id": "user-1", "item_id": "i1", "timestamp": "2018-04-01T00:00:00Z"})),
]


def test_the_first_round_is_the_data_as_it_is_retimed_to_now() -> None:
    key, value = retimed_at(FEED, 0, 1_800_000_000.0, new_entities=True)
    event = orjson.loads(value)
    assert key == b"card-1"
    assert (event["transaction_id"], event["card_id"], event["terminal_id"]) == ("t1", "card-1", "term-9")
    assert event["timestamp"] == "2027-01-15T08:00:00Z"


def test_each_later_round_has_new_events_and_new_entities() -> None:
    key, value = retimed_at(FEED, 2 * len(FEED) + 1, 1_800_000_000.0, new_entities=True)
    event = orjson.loads(value)
    assert key == b"user-1~2"
    assert (event["event_id"], event["user_id"], event["item_id"]) == ("e1~2", "user-1~2", "i1")  # items stay the catalogue's


def test_played_once_through_entities_come_back() -> None:
    key, value = retimed_at(FEED, len(FEED), 1_800_000_000.0, new_entities=False)
    event = orjson.loads(value)
    assert key == b"card-1"
    assert (event["transaction_id"], event["card_id"]) == ("t1~1", "card-1")


def test_the_worker_is_measured_with_its_child_processes() -> None:
    """The next-item model process holds its own models: the soak counts its memory."""
    import subprocess
    import sys

    from bench.soak import descendants, rss_mb, tree_rss_mb

    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while len(found := descendants(os.getpid())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.pid in found and len(found) >= 2  # the child, and the child's child
        assert tree_rss_mb(os.getpid()) >= rss_mb(os.getpid()) + rss_mb(child.pid)
    finally:
        for pid in descendants(child.pid):
            os.kill(pid, 9)
        child.kill()
        child.wait()
