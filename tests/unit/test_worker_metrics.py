"""A worker's probes and counters over HTTP (``streamer.worker.metrics``)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from streamer.errors import ConfigurationError
from streamer.records import OutputRecord
from streamer.settings import Settings
from streamer.worker.metrics import PROMETHEUS_TEXT, WorkerMetrics, listening, serve
from streamer.worker.step_times import BatchTimes, timed
from tests.unit.test_step_times import Clock, steps_taking


def output(topic: str) -> OutputRecord:
    return OutputRecord(topic, b"k", b"{}")


def counted_metrics() -> WorkerMetrics:
    """Two batches of a transactions agent timed, and their outputs delivered."""
    clock, times = Clock(), BatchTimes("score_transactions")
    metrics = WorkerMetrics(agents=[times])

    async def run(batch: list[int], first: float) -> None:
        process, deliver = timed(*steps_taking(clock, first, 20, 10, 5, []), times, clock)
        infer = await process(batch)
        finish = await infer()
        await deliver(batch, await finish())

    asyncio.run(run([1, 2, 3], 30))
    asyncio.run(run([4], 50))
    times.report()  # a log report starts its own counts afresh, not the metrics'
    metrics.assigned(2)
    metrics.delivered("score_transactions", "transactions", {0: 2},
                      [output("fraud-scores")] * 4 + [output("fraud-alerts")])
    metrics.delivered("score_transactions", "transactions", {0: 3}, [output("dead-letter")])
    metrics.input_topics.append("transactions")
    metrics.high_watermarks = lambda topic: {0: 10, 1: 7} if topic == "transactions" else {}
    return metrics


def test_the_counters_since_the_start_in_prometheus_text_format() -> None:
    text = counted_metrics().render()
    samples = [line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")]
    steps = {name: float(value) for name, value in samples if name.startswith("streamer_step_seconds_total")}
    assert steps == pytest.approx({
        'streamer_step_seconds_total{agent="score_transactions",step="first_step"}': 0.08,
        'streamer_step_seconds_total{agent="score_transactions",step="models"}': 0.04,
        'streamer_step_seconds_total{agent="score_transactions",step="last_step"}': 0.02,
        'streamer_step_seconds_total{agent="score_transactions",step="delivery"}': 0.01,
    })
    assert [" ".join(sample) for sample in samples if sample[0] not in steps] == [
        'streamer_batches_total{agent="score_transactions"} 2',
        'streamer_input_records_total{agent="score_transactions"} 4',
        'streamer_output_records_total{agent="score_transactions",topic="dead-letter"} 1',
        'streamer_output_records_total{agent="score_transactions",topic="fraud-alerts"} 1',
        'streamer_output_records_total{agent="score_transactions",topic="fraud-scores"} 4',
        "streamer_assigned_partitions 2",
        "streamer_rebalances_total 1",
        'streamer_partition_lag{topic="transactions",partition="0"} 6',  # offsets 4 to 9; none of 1 answered yet
    ]
    assert "# TYPE streamer_batches_total counter" in text and "# TYPE streamer_assigned_partitions gauge" in text
    assert text.endswith("\n")


def test_lag_is_the_records_past_the_last_answered_and_starts_afresh_on_an_assignment() -> None:
    metrics = WorkerMetrics(input_topics=["transactions", "fraud-labels"])
    highs: dict[str, dict[int, int | None]] = {"transactions": {0: 100, 1: None}, "fraud-labels": {0: 5}}
    metrics.high_watermarks = lambda topic: highs[topic]
    metrics.assigned(3)
    assert metrics.lag() == []  # nothing answered yet
    metrics.delivered("score_transactions", "transactions", {0: 59, 1: 4}, [])
    assert metrics.lag() == [("transactions", 0, 40)]  # partition 1's high watermark not fetched yet
    highs["transactions"] = {0: 60, 1: 5}
    assert metrics.lag() == [("transactions", 0, 0), ("transactions", 1, 0)]
    metrics.assigned(3)  # partitions given back may have been answered further elsewhere meanwhile
    assert metrics.lag() == []


def test_a_label_value_is_escaped() -> None:
    metrics = WorkerMetrics()
    metrics.delivered('odd"name\\', "transactions", {}, [output('a"b\nc')])
    assert 'streamer_output_records_total{agent="odd\\"name\\\\",topic="a\\"b\\nc"} 1' in metrics.render()


def test_ready_only_once_the_worker_joined_its_group_even_with_no_partitions() -> None:
    metrics = WorkerMetrics()
    assert metrics.answer("GET", "/health")[0] == 200
    assert metrics.answer("GET", "/ready")[0] == 503
    metrics.assigned(0)  # more workers than partitions: in the group, with nothing to do
    assert metrics.answer("GET", "/ready")[0] == 200
    assert metrics.answer("GET", "/metrics?x=1")[:2] == (200, PROMETHEUS_TEXT)
    assert metrics.answer("GET", "/nothing")[0] == 404
    assert metrics.answer("POST", "/health")[0] == 405


async def _get(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


def test_the_routes_answer_over_http_and_a_bad_request_is_let_go() -> None:
    metrics = counted_metrics()
    listener = listening("127.0.0.1", 0)
    port = listener.getsockname()[1]

    async def run() -> tuple[bytes, bytes, bytes, bytes]:
        server = asyncio.create_task(serve(metrics, listener))
        try:
            garbage = await _get(port, b"nonsense\r\n\r\n")
            scraped = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: worker\r\nAccept: */*\r\n\r\n")
            health = await _get(port, b"GET /health HTTP/1.0\r\n\r\n")
            head = await _get(port, b"HEAD /ready HTTP/1.1\r\n\r\n")
            return garbage, scraped, health, head
        finally:
            server.cancel()

    garbage, scraped, health, head = asyncio.run(run())
    assert garbage == b""
    head_lines, body = scraped.split(b"\r\n\r\n", 1)
    assert head_lines.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Type: {PROMETHEUS_TEXT}".encode() in head_lines
    assert f"Content-Length: {len(body)}".encode() in head_lines
    assert body.decode() == metrics.render()
    assert health.startswith(b"HTTP/1.1 200 OK\r\n") and health.endswith(b"\r\n\r\nok\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")  # no body


def test_a_port_in_use_stops_the_worker_with_the_setting_named() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"STREAMER_WORKER_METRICS_PORT={port}"):
            listening("127.0.0.1", port)


def test_the_metrics_port_is_off_by_default_and_must_be_a_port() -> None:
    assert Settings.from_env({}).worker.metrics_port == 0
    assert Settings.from_env({"STREAMER_WORKER_METRICS_PORT": "9108"}).worker.metrics_port == 9108
    with pytest.raises(ConfigurationError, match="STREAMER_WORKER_METRICS_PORT"):
        Settings.from_env({"STREAMER_WORKER_METRICS_PORT": "70000"})
