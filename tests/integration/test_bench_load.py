"""``bench.load`` through the embedded broker, the real Redis and a ``streamer worker``:
latency at a stated rate, read back from the output topic."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.load import load_run, verdict
from streamer.embedded import EmbeddedBroker
from streamer.settings import Settings
from tests.support import DATA, load_jsonl

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


def test_a_load_run_reads_every_inputs_latency_from_the_output_topic(broker: EmbeddedBroker, redis_url: str,
                                                                      tmp_path: Path) -> None:
    base = Settings.from_env().replace(kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 4},
                                       redis={"url": redis_url})
    messages = [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in load_jsonl(DATA / "transactions_sample.jsonl")]

    (result,) = load_run(base, "transactions", messages, [200.0], 2.0, 100.0, tmp_path / "worker.log")

    assert result["offered"] == 200.0 and result["lost"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["held"] == verdict(result, 100.0)


def test_a_rate_holds_only_below_the_limit_with_nothing_lost_at_the_rate_asked() -> None:
    held = {"offered": 1000.0, "achieved_send_rate": 990, "p50_ms": 10.0, "p99_ms": 60.0, "max_ms": 80.0, "lost": 0}
    assert verdict(held, 100.0)
    assert not verdict({**held, "p99_ms": 100.0}, 100.0)
    assert not verdict({**held, "lost": 1}, 100.0)
    assert not verdict({**held, "achieved_send_rate": 900}, 100.0)  # the producer fell short: not a measurement


def test_a_feed_too_short_for_the_rates_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="offer fewer seconds"):
        load_run(Settings(), "clicks", [(b"u", b"{}")] * 10, [100.0], 1.0, 100.0, tmp_path / "worker.log")


def test_two_workers_settle_into_their_group_before_the_rate_is_offered(broker: EmbeddedBroker, redis_url: str,
                                                                        tmp_path: Path) -> None:
    base = Settings.from_env().replace(kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 4},
                                       redis={"url": redis_url})
    messages = [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in load_jsonl(DATA / "transactions_sample.jsonl")]

    (result,) = load_run(base, "transactions", messages, [200.0], 2.0, 100.0, tmp_path / "worker.log", workers=2)

    # group_settled raised unless both joined; a rebalance inside the run would have cost seconds
    assert result["lost"] == 0 and result["held"]
