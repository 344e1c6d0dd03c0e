"""``bench.pipeline_ab`` against the real Redis: both model sets see every event, and
the scratch namespaces are gone afterwards."""

from __future__ import annotations

import asyncio

import pytest
import redis

from bench.pipeline_ab import compare
from streamer.datasets import BEAUTY, FRAUD_CSV
from streamer.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.data,
              pytest.mark.skipif(not (FRAUD_CSV.is_file() and BEAUTY.is_file()), reason="needs ../shared/data")]


def test_both_model_sets_process_every_batch_and_leave_no_state(redis_url: str) -> None:
    settings = Settings.from_env().replace(redis={"url": redis_url})
    models = {"a": (settings.models.fraud, settings.models.recommend),
              "b": (settings.models.fraud, settings.models.recommend)}
    before = set(redis.Redis.from_url(redis_url).scan_iter("bench-ab-*"))
    result = asyncio.run(compare(settings, models, 1200))
    for kind in ("transactions", "clicks"):
        timings = result[kind]
        assert timings["a_cpu_us_per_event"] > 0 and timings["b_cpu_us_per_event"] > 0  # type: ignore[index]
        assert timings["a_answered"] == timings["b_answered"] == 1200  # type: ignore[index]
    assert set(redis.Redis.from_url(redis_url).scan_iter("bench-ab-*")) == before
