"""The benchmark's settings: the naive agent really takes one event at a time."""

from __future__ import annotations

from bench.run import fresh_settings
from streamer.settings import Settings


def test_the_naive_agent_has_one_lane_and_the_engine_its_configured_lanes() -> None:
    base = Settings.from_env({"STREAMER_BATCH_LANES": "2"})
    naive, engine = fresh_settings(base, 1), fresh_settings(base, 512)
    assert (naive.batch.max_size, naive.batch.lanes) == (1, 1)
    assert (engine.batch.max_size, engine.batch.lanes) == (512, 2)
    assert naive.topics.transactions != engine.topics.transactions and naive.redis.namespace != engine.redis.namespace
