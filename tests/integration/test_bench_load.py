"""``bench.load`` through the embedded broker, the real Redis and a ``streamer worker``:
latency at a stated rate, read back from the output topic."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.load import load_run, verdict
from bench.run import events_offered
from streamer.embedded import EmbeddedBroker
from streamer.settings import Settings
from tests.support import DATA, load_jsonl

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def test_a_load_run_reads_every_inputs_latency_from_the_output_topic(broker: EmbeddedBroker, redis_url: str,
                                                                      tmp_path: Path) -> None:
    base = Settings.from_env().replace(kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 4},
                                       redis={"url": redis_url})
    messages = [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in load_jsonl(DATA / "transactions_sample.jsonl")]

    (result,) = load_run(base, "transactions", messages, [200.0], 2.0, 100.0, tmp_path / "worker.log",
                         broker_pid=broker.pid)

    assert result["offered"] == 200.0 and result["lost"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    # each output became readable after the worker stamped it (before sending it), so
    # every percentile to readable is at least the same percentile to the stamps
    stamped = result["to_output_stamps"]
    assert all(stamped[key] <= result[key] for key in ("p50_ms", "p99_ms", "max_ms"))
    assert 0 <= result["behind_schedule_ms"]["p99_ms"] <= result["behind_schedule_ms"]["max_ms"]
    # a run of 2 s is one window, which holds every input and the whole run's percentiles
    (window,) = result["windows"]
    assert window["sent"] == events_offered([200.0], 2.0) - 1 and window["lost"] == 0  # the first went before the rate
    assert (window["p99_ms"], window["max_ms"]) == (result["p99_ms"], result["max_ms"])
    # where the CPU went while the rate was offered: every part read, each one busy
    cpu = result["cpu"]
    assert set(cpu["cores"]) == {"workers", "broker", "redis", "harness", "machine", "other"}
    assert all(cpu["cores"][part] > 0 for part in ("workers", "broker", "redis", "harness", "machine"))
    assert 100 <= cpu["answered_per_s"] <= 300 and cpu["us_per_event"]["workers"] > 0


def test_redis_counts_its_own_cpu_time(redis_url: str) -> None:
    import redis

    from bench.cpu import redis_cpu_s

    before = redis_cpu_s(redis_url)
    client = redis.Redis.from_url(redis_url)
    for _ in range(200):
        client.eval("local n = 0 for i = 1, 20000 do n = n + i end return n", 0)
    client.close()
    assert before is not None and redis_cpu_s(redis_url) > before
    assert redis_cpu_s("redis://127.0.0.1:1") is None  # nothing listens there


def test_a_redis_clusters_cpu_is_every_nodes(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    """The node the URL names counts only its own; the others' busy time would land in *other*."""
    import redis

    from bench.cpu import _cpu_s, redis_cpu_s

    busy = redis.Redis(port=redis_cluster.ports[2])  # not the node the URL names
    before, busy_before = redis_cpu_s(redis_cluster.url), _cpu_s(busy)
    for _ in range(200):
        busy.eval("local n = 0 for i = 1, 200000 do n = n + i end return n", 0)
    busy_took = _cpu_s(busy) - busy_before
    busy.close()
    after = redis_cpu_s(redis_cluster.url)
    assert before is not None and after is not None and busy_took > 0.05
    assert after - before >= busy_took


def test_a_rate_holds_only_below_the_limit_with_nothing_lost_at_the_rate_asked() -> None:
    held = {"offered": 1000.0, "achieved_send_rate": 990, "p50_ms": 10.0, "p99_ms": 60.0, "max_ms": 80.0, "lost": 0}
    assert verdict(held, 100.0)
    assert not verdict({**held, "p99_ms": 100.0}, 100.0)
    assert not verdict({**held, "lost": 1}, 100.0)
    assert not verdict({**held, "achieved_send_rate": 900}, 100.0)  # the producer fell short: not a measurement


def test_a_rate_whose_last_window_climbed_past_the_limit_did_not_hold() -> None:
    """The whole run's p99 passes while the last 10 s of it did not: a growing backlog."""
    steady = {"from_s": 0.0, "sent": 10000, "lost": 0, "p50_ms": 10.0, "p99_ms": 40.0, "max_ms": 50.0}
    climbed = {**steady, "from_s": 10.0, "p99_ms": 140.0, "max_ms": 160.0}
    run = {"offered": 1000.0, "achieved_send_rate": 1000, "p50_ms": 10.0, "p99_ms": 95.0, "max_ms": 160.0, "lost": 0}
    assert verdict({**run, "windows": [steady, steady]}, 100.0)
    assert not verdict({**run, "windows": [steady, climbed]}, 100.0)
    assert verdict({**run, "windows": [climbed, steady]}, 100.0)  # a slow start that recovered held
    assert verdict(run, 100.0)  # a result from before the windows: the whole run decides


def test_a_feed_too_short_for_the_rates_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="offer fewer seconds"):
        load_run(Settings(), "clicks", [(b"u", b"{}")] * 10, [100.0], 1.0, 100.0, tmp_path / "worker.log")


def test_two_workers_settle_into_their_group_before_the_rate_is_offered(broker: EmbeddedBroker, redis_url: str,
                                                                        tmp_path: Path) -> None:
    base = Settings.from_env().replace(kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 4},
                                       redis={"url": redis_url})
    messages = [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in load_jsonl(DATA / "transactions_sample.jsonl")]

    (result,) = load_run(base, "transactions", messages, [200.0], 2.0, 100.0, tmp_path / "worker.log", workers=2)

    # group_settled raised unless both joined; a rebalance inside the run would have
    # held the inputs for seconds (the group's rebalance timeout)
    assert result["lost"] == 0 and result["max_ms"] < 2000
