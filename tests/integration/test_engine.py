"""End to end through the embedded broker, a real Redis and ``streamer worker`` processes.

Producers here are librdkafka (confluent-kafka) and aiokafka; the worker is started by
its documented command with settings from the environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Producer

from streamer.embedded import free_port
from streamer.events import format_time
from streamer.inference.fraud_scorer import FraudScorer
from streamer.inference.next_item import NextItemRanker
from streamer.output.sink import ListSink, publish
from streamer.pipeline.fraud import FraudPipeline
from streamer.records import SCORE_TOLERANCE, SourceRecord
from streamer.settings import Settings
from streamer.state.memory import InMemoryStateStore
from streamer.state.store import delete_namespace
from streamer.worker.step_times import parse_reports
from streamer.worker.topics import ensure_topics
from tests.support import DATA, WorkerProcess, assigned_topics, load_jsonl, produce, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

#: Transactions sent one at a time after the sample, into an idle worker.
TRICKLE = 5

BAD = [
    (b"k1", b"this is not json"),
    (b"k2", b'{"transaction_id": "x1", "card_id": "c", "terminal_id": "t", "amount": "12.5", "timestamp": "2018-08-01T00:00:00Z"}'),
    (b"k3", b'{"transaction_id": "x2", "card_id": "c", "terminal_id": "t", "timestamp": "2018-08-01T00:00:00Z"}'),
    (None, b'{"transaction_id": "x3", "card_id": "c", "terminal_id": "t", "amount": 1, "timestamp": "yesterday"}'),
    (b"k5", b'{"transaction_id": "x4", "card_id": "c", "terminal_id": "t", "amount": 1, "timestamp": "2018-08-01T00:00:00Z", "pad": "' + b"x" * 70000 + b'"}'),
]


def scores_for(wanted: set[str]) -> Callable[[list], bool]:  # type: ignore[type-arg]
    """``read_topic``'s stop: every transaction in ``wanted`` has a score."""
    return lambda records: wanted <= {orjson.loads(r.value)["transaction_id"] for r in records}


def offline_scores(settings: Settings, values: list[bytes]) -> dict[str, float]:
    """The same events through the same pipeline, in memory, in one process."""
    pipeline = FraudPipeline(FraudScorer(settings.models.fraud), InMemoryStateStore(), settings)
    records = [SourceRecord("transactions", 0, i, None, v) for i, v in enumerate(values)]
    sink = ListSink()

    async def run() -> None:
        for start in range(0, len(records), 100):
            await publish(sink, await pipeline.process(records[start : start + 100]))

    asyncio.run(run())
    scored = [orjson.loads(r.value) for r in sink.records if r.topic == settings.topics.fraud_scores]
    return {s["transaction_id"]: s["score"] for s in scored}


def test_transactions_scores_alerts_and_dead_letters(settings: Settings, worker_log) -> None:  # type: ignore[no-untyped-def]
    sample = load_jsonl(DATA / "transactions_sample.jsonl")
    values = [orjson.dumps(tx) for tx in sample]
    settings = settings.replace(batch={"report_s": 1.0})
    worker = WorkerProcess(settings, worker_log).start()
    try:
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "acks": "all"})
        for tx, value in zip(sample, values):
            producer.produce(settings.topics.transactions, key=tx["card_id"].encode(), value=value)
        for key, value in BAD:
            producer.produce(settings.topics.transactions, key=key, value=value, headers=[("traceparent", key or b"")])
        assert producer.flush(30) == 0

        bootstrap = settings.kafka.bootstrap_servers
        scores = asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, len(sample), timeout_s=90))
        alerts = asyncio.run(read_topic(bootstrap, settings.topics.fraud_alerts, 1, timeout_s=10, settle_s=1))
        dead = asyncio.run(read_topic(bootstrap, settings.topics.dead_letter, len(BAD), timeout_s=30))
        sources = asyncio.run(read_topic(bootstrap, settings.topics.transactions, len(sample) + len(BAD), timeout_s=30))
        # then a trickle, one transaction at a time into an idle worker, as live traffic comes:
        # each is a batch of its own, and each batch checks the label topic's ends
        trickle = [{**tx, "transaction_id": f"trickle-{i}"} for i, tx in enumerate(sample[:TRICKLE])]
        for tx in trickle:
            producer.produce(settings.topics.transactions, key=tx["card_id"].encode(), value=orjson.dumps(tx))
            assert producer.flush(30) == 0
            time.sleep(0.3)
        trickled = {tx["transaction_id"] for tx in trickle}
        assert scores_for(trickled)(asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, len(sample) + TRICKLE,
                                                           timeout_s=30, done=scores_for(trickled))))
        assert worker.alive()
        reported = step_time_reports(worker_log, "score_transactions", wait_s=5)
        checks = high_watermark_reports(worker_log, wait_s=5, answered=1)
    finally:
        worker.stop()

    streamed = {orjson.loads(r.value)["transaction_id"]: orjson.loads(r.value) for r in scores}
    assert set(streamed) == {tx["transaction_id"] for tx in sample}
    for record in scores:
        assert record.key == orjson.loads(record.value)["card_id"].encode()
    expected = offline_scores(settings, values)
    for transaction_id, score in expected.items():
        assert streamed[transaction_id]["score"] == pytest.approx(score, abs=SCORE_TOLERANCE)
        assert 0.0 <= score <= 1.0

    alerted = {orjson.loads(r.value)["transaction_id"] for r in alerts}
    large = {tx["transaction_id"] for tx in sample if tx["amount"] > 220}
    assert len(large) >= 20 and large <= alerted
    one_alert = orjson.loads(alerts[0].value)
    assert one_alert["score"] >= settings.fraud.alert_threshold and one_alert["reasons"]

    assert sorted(r.value for r in dead) == sorted(v for _, v in BAD)
    # every batch of the run was timed, step by step, in the worker's log
    taken = parse_reports(reported, "score_transactions")
    assert taken is not None and taken["batches"] >= 1  # type: ignore[operator]
    assert all(parse_reports([line], "score_transactions") is not None for line in reported)  # each line a whole report
    # no labels came, so every batch checked the label topic's ends; while the worker, which
    # holds all of its partitions, was fetching at its idle pace (the trickle), it answered
    # them from its own fetches (a burst's checks may fetch: its fetches wait on its buffer)
    assert sum(answered for answered, _ in checks) >= 1
    reasons = {dict(r.headers)["dlq.reason"] for r in dead}
    assert reasons == {b"not_json", b"wrong_type", b"missing_field", b"invalid_timestamp", b"oversized"}
    by_position = {(r.partition, r.offset): r for r in sources}
    for record in dead:
        headers = dict(record.headers)
        assert headers["dlq.topic"] == settings.topics.transactions.encode()
        original = by_position[(int(headers["dlq.partition"]), int(headers["dlq.offset"]))]
        assert (original.key, original.value) == (record.key, record.value)
        assert record.headers[0] == ("traceparent", original.key or b"")  # the original's headers, carried


def scrape(port: int, path: str, wait_s: float, done: Callable[[int, str], bool] = lambda status, _: status == 200,
           ) -> tuple[int, str]:
    """A worker's answer to ``GET path`` on its metrics port, asked again until ``done``
    says so or ``wait_s`` passed (until it listens, a connection is refused)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                status, body = answer.status, answer.read().decode()
        except urllib.error.HTTPError as refused:
            status, body = refused.code, refused.read().decode()
        except OSError:
            status, body = 0, ""
        if done(status, body) or time.monotonic() > deadline:
            return status, body
        time.sleep(0.2)


def test_a_worker_answers_its_probes_and_counts_what_it_answered(settings: Settings, worker_log) -> None:  # type: ignore[no-untyped-def]
    sample = load_jsonl(DATA / "transactions_sample.jsonl")
    port = free_port()
    settings = settings.replace(worker={"jobs": "fraud", "metrics_port": port, "metrics_host": "127.0.0.1"})
    bootstrap, topics = settings.kafka.bootstrap_servers, settings.topics
    scored = f'streamer_output_records_total{{agent="score_transactions",topic="{topics.fraud_scores}"}} {len(sample)}'
    worker = WorkerProcess(settings, worker_log).start()
    try:
        ready = scrape(port, "/ready", wait_s=60)
        asyncio.run(produce(bootstrap, topics.transactions,
                            [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in sample] + BAD))
        asyncio.run(read_topic(bootstrap, topics.fraud_scores, len(sample), timeout_s=90))
        alerts = asyncio.run(read_topic(bootstrap, topics.fraud_alerts, 1, timeout_s=10, settle_s=1))
        caught_up = {scored} | {f'streamer_partition_lag{{topic="{topics.transactions}",partition="{p}"}} 0'
                                for p in range(settings.kafka.partitions)}
        _, metrics = scrape(port, "/metrics", wait_s=10, done=lambda _, body: caught_up <= set(body.splitlines()))
        health = scrape(port, "/health", wait_s=5)
        assert worker.alive()
    finally:
        worker.stop()

    assert ready == (200, "ready\n") and health == (200, "ok\n")
    samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if not line.startswith("#"))
    agent = '{agent="score_transactions"}'
    assert int(samples[f"streamer_input_records_total{agent}"]) == len(sample) + len(BAD)
    assert int(samples[f"streamer_batches_total{agent}"]) >= 1
    outputs = {topic: int(samples.get(f'streamer_output_records_total{{agent="score_transactions",topic="{topic}"}}', 0))
               for topic in (topics.fraud_scores, topics.fraud_alerts, topics.dead_letter)}
    assert outputs == {topics.fraud_scores: len(sample), topics.fraud_alerts: len(alerts), topics.dead_letter: len(BAD)}
    assert float(samples['streamer_step_seconds_total{agent="score_transactions",step="models"}']) > 0
    assert int(samples["streamer_assigned_partitions"]) == 2 * settings.kafka.partitions  # transactions and labels
    assert caught_up <= set(metrics.splitlines())  # every transaction answered: no lag


def step_time_reports(log: Path, agent: str, wait_s: float) -> list[str]:
    """The agent's step-time lines in a worker's log (``STREAMER_BATCH_REPORT_S``),
    waiting up to ``wait_s`` for the first."""
    deadline = time.monotonic() + wait_s
    while True:
        lines = [line for line in log.read_text(errors="replace").splitlines() if f"{agent}: " in line and " ms: " in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def high_watermark_reports(log: Path, wait_s: float, answered: int = 0) -> list[tuple[int, int]]:
    """The worker's reports of its high-watermark checks: (answered from its own
    fetches, fetched) each, waiting up to ``wait_s`` for the first and for ``answered``
    checks answered from its fetches (reports come every ``STREAMER_BATCH_REPORT_S``)."""
    pattern = re.compile(r"high watermarks: (\d+) checks answered from the worker's own fetches, (\d+) fetched")
    deadline = time.monotonic() + wait_s
    while True:
        found = [(int(a), int(b)) for a, b in pattern.findall(log.read_text(errors="replace"))]
        if (found and sum(a for a, _ in found) >= answered) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def clicks_for(users: int) -> list[tuple[bytes, bytes]]:
    """The sample's first users, each click 60 s after the previous one."""
    lines = (DATA / "beauty_sample.txt").read_text().splitlines()[:users]
    messages = []
    serial = itertools.count()
    for line in lines:
        user, *items = line.split()
        for item in items:
            n = next(serial)
            value = {"event_id": f"e{n}", "user_id": user, "item_id": item,
                     "timestamp": format_time(1533081600 + 60 * n), "event_type": "click"}
            messages.append((user.encode(), orjson.dumps(value)))
    return messages


def test_every_click_gets_unseen_recommendations_and_requests_use_the_cache(settings: Settings, worker_log) -> None:  # type: ignore[no-untyped-def]
    messages = clicks_for(60)
    worker = WorkerProcess(settings, worker_log).start()
    try:
        asyncio.run(produce(settings.kafka.bootstrap_servers, settings.topics.clickstream, messages))
        recs = asyncio.run(read_topic(settings.kafka.bootstrap_servers, settings.topics.recommendations, len(messages), timeout_s=90))
        # then, for each user, a ranking asked for without a click: answered from the cached embedding
        users = sorted({orjson.loads(v)["user_id"] for _, v in messages})
        after_every_click = format_time(1.6e9)  # and not ahead of the records' timestamps
        asks = [(u.encode(), orjson.dumps({"request_id": f"r-{u}", "user_id": u, "timestamp": after_every_click}))
                for u in users]
        asyncio.run(produce(settings.kafka.bootstrap_servers, settings.topics.recommend_requests, asks))
        everything = asyncio.run(read_topic(settings.kafka.bootstrap_servers, settings.topics.recommendations,
                                            len(messages) + len(asks), timeout_s=90))
        assert worker.alive()
    finally:
        worker.stop()
    clicks = [orjson.loads(v) for _, v in messages]
    by_event = {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in recs}
    answers = {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in everything}
    last_click = {c["user_id"]: c["event_id"] for c in clicks}
    for user in users:
        assert answers[f"r-{user}"]["source"] == "cached"
        cached, clicked = answers[f"r-{user}"]["items"], by_event[last_click[user]]["items"]
        assert [i["item_id"] for i in cached] == [i["item_id"] for i in clicked]
        assert [i["score"] for i in cached] == pytest.approx([i["score"] for i in clicked], abs=SCORE_TOLERANCE)
    assert set(by_event) == {c["event_id"] for c in clicks}
    catalogue = set(NextItemRanker(settings.models.recommend).items[1:])
    seen: dict[str, set[str]] = {}
    for click in clicks:
        seen.setdefault(click["user_id"], set()).add(click["item_id"])
        rec = by_event[click["event_id"]]
        items = [i["item_id"] for i in rec["items"]]
        assert len(items) == settings.recommend.top_k
        assert not set(items) & seen[click["user_id"]], f"seen item recommended to {click['user_id']}"
        assert set(items) <= catalogue
        scores = [i["score"] for i in rec["items"]]
        assert scores == sorted(scores, reverse=True)


def test_a_backlog_goes_in_backlog_batches_with_the_scores_of_small_ones(settings: Settings, worker_log) -> None:  # type: ignore[no-untyped-def]
    """Transactions waiting before the worker starts (a restart, a backfill) are taken
    ``backlog_size`` at a time, not ``max_size``; the scores are those of small batches."""
    sample = load_jsonl(DATA / "transactions_sample.jsonl")
    values = [orjson.dumps(tx) for tx in sample]
    settings = settings.replace(batch={"max_size": 20, "backlog_size": 200, "report_s": 0.5})
    bootstrap = settings.kafka.bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, settings.topics.all(), settings.kafka.partitions))
    asyncio.run(produce(bootstrap, settings.topics.transactions,
                        [(tx["card_id"].encode(), value) for tx, value in zip(sample, values)]))
    worker = WorkerProcess(settings, worker_log).start()
    try:
        scores = asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, len(sample), timeout_s=90))
        time.sleep(1.0)  # the last report
        reported = step_time_reports(worker_log, "score_transactions", wait_s=5)
    finally:
        worker.stop()
    sizes = [parse_reports([line], "score_transactions")["mean_size"] for line in reported]  # type: ignore[index]
    assert max(sizes) > 20, sizes  # batches larger than max_size were taken
    streamed = {orjson.loads(r.value)["transaction_id"]: orjson.loads(r.value)["score"] for r in scores}
    expected = offline_scores(settings, values)  # batches of 100
    assert set(streamed) == set(expected)
    for transaction_id, score in expected.items():
        assert streamed[transaction_id] == pytest.approx(score, abs=SCORE_TOLERANCE)


def test_a_worker_on_a_redis_cluster_scores_as_with_one_redis(settings: Settings, worker_log, redis_cluster) -> None:  # type: ignore[no-untyped-def]
    """``STREAMER_REDIS_CLUSTER``: the worker keeps its state on a Redis Cluster of three,
    spread over every node, and scores the sample as the same events are scored in memory."""
    sample = load_jsonl(DATA / "transactions_sample.jsonl")
    values = [orjson.dumps(tx) for tx in sample]
    settings = settings.replace(redis={"url": redis_cluster.url, "cluster": True})
    bootstrap = settings.kafka.bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, settings.topics.all(), settings.kafka.partitions))
    worker = WorkerProcess(settings, worker_log).start()
    try:
        asyncio.run(produce(bootstrap, settings.topics.transactions,
                            [(tx["card_id"].encode(), value) for tx, value in zip(sample, values)]))
        scores = asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, len(sample), timeout_s=90))
        held = [sum(1 for _ in redis.Redis(port=port).scan_iter(match=f"{settings.redis.namespace}:*"))
                for port in redis_cluster.ports]
    finally:
        worker.stop()
        asyncio.run(delete_namespace(settings.redis))
    assert all(held), held
    streamed = {orjson.loads(r.value)["transaction_id"]: orjson.loads(r.value)["score"] for r in scores}
    expected = offline_scores(settings, values)
    assert set(streamed) == set(expected)
    for transaction_id, score in expected.items():
        assert streamed[transaction_id] == pytest.approx(score, abs=SCORE_TOLERANCE)


def test_worker_killed_midstream_loses_nothing(settings: Settings, worker_log) -> None:  # type: ignore[no-untyped-def]
    sample = load_jsonl(DATA / "transactions_sample.jsonl")
    settings = settings.replace(batch={"max_size": 50, "backlog_size": 50, "max_wait_ms": 20})
    worker = WorkerProcess(settings, worker_log).start()
    bootstrap = settings.kafka.bootstrap_servers
    messages = [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in sample]
    try:
        asyncio.run(produce(bootstrap, settings.topics.transactions, messages[:700]))
        partial = asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 100, timeout_s=60))
        assert partial, "the worker produced nothing before the kill"
        worker.kill()
        asyncio.run(produce(bootstrap, settings.topics.transactions, messages[700:]))
        time.sleep(1)
        worker = dataclasses.replace(worker, process=None).start()
        wanted = {tx["transaction_id"] for tx in sample}

        scores = asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 0, timeout_s=120, done=scores_for(wanted)))
        assert worker.alive()
    finally:
        worker.stop()
    ids = [orjson.loads(r.value)["transaction_id"] for r in scores]
    assert set(ids) == wanted
    # Duplicates after the kill are allowed (at-least-once) and must carry equal scores
    # (up to the rounding of differently composed batches).
    by_id: dict[str, set[float]] = {}
    for r in scores:
        value = orjson.loads(r.value)
        by_id.setdefault(value["transaction_id"], set()).add(value["score"])
    assert all(max(s) - min(s) <= SCORE_TOLERANCE for s in by_id.values())


def test_a_worker_whose_agent_dies_stops_and_the_next_one_answers_every_event(settings: Settings, worker_log) -> None:  # type: ignore[no-untyped-def]
    """An agent that dies (its sink raised an error no retry handles: a bug) takes its
    worker down. Restarted within the worker, it would acknowledge later records of its
    partitions while those the dead one held never are, and Faust commits past such a
    gap; a worker that exits leaves the offsets it committed, from which the next one
    answers every event."""
    sample = load_jsonl(DATA / "transactions_sample.jsonl")[:300]
    settings = settings.replace(batch={"max_size": 50, "backlog_size": 50, "max_wait_ms": 20},
                                kafka={"commit_interval_s": 0.5})
    bootstrap = settings.kafka.bootstrap_servers
    broken = WorkerProcess(settings, worker_log, command=("-m", "tests.worker_with_a_bug")).start()
    try:
        asyncio.run(produce(bootstrap, settings.topics.transactions,
                            [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in sample]))
        assert broken.process is not None
        assert broken.process.wait(60) != 0
    finally:
        broken.stop()
    worker = WorkerProcess(settings, worker_log).start()
    wanted = {tx["transaction_id"] for tx in sample}
    try:
        scores = asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 0, timeout_s=90, done=scores_for(wanted)))
    finally:
        worker.stop()
    assert {orjson.loads(r.value)["transaction_id"] for r in scores} == wanted


def test_events_taken_while_a_batch_is_stuck_are_not_committed_before_they_are_answered(
    settings: Settings, worker_log, redis_url: str,  # type: ignore[no-untyped-def]
) -> None:
    """The next batch gathers while one is in flight; a worker killed then must not have
    committed the gathered events (Redis paused holds the batch in flight for seconds,
    several commit intervals)."""
    import redis

    sample = load_jsonl(DATA / "transactions_sample.jsonl")[:400]
    settings = settings.replace(batch={"max_size": 50, "backlog_size": 50}, kafka={"commit_interval_s": 0.5})
    worker = WorkerProcess(settings, worker_log).start()
    bootstrap = settings.kafka.bootstrap_servers
    messages = [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in sample]
    admin = redis.Redis.from_url(redis_url)
    try:
        asyncio.run(produce(bootstrap, settings.topics.transactions, messages[:100]))
        assert asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 100, timeout_s=60))
        paused_until = time.monotonic() + 5.0
        admin.execute_command("CLIENT", "PAUSE", 5000, "ALL")  # no UNPAUSE: it would wait too
        asyncio.run(produce(bootstrap, settings.topics.transactions, messages[100:]))
        time.sleep(3)  # the worker takes what it can while its batch waits on Redis
        worker.kill()
        time.sleep(max(0.0, paused_until - time.monotonic()) + 0.5)
        worker = dataclasses.replace(worker, process=None).start()
        wanted = {tx["transaction_id"] for tx in sample}

        scores = asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 0, timeout_s=90, done=scores_for(wanted)))
    finally:
        worker.stop()
    assert {orjson.loads(r.value)["transaction_id"] for r in scores} == wanted


def test_workers_joining_and_leaving_midstream_answer_every_event(settings: Settings, worker_log) -> None:  # type: ignore[no-untyped-def]
    """Two rebalances while a backlog is delivered: a second worker joins, then the first
    stops. Deliveries cut short by a rebalance are fetched again; every event is answered."""
    sample = load_jsonl(DATA / "transactions_sample.jsonl")
    settings = settings.replace(batch={"max_size": 2, "backlog_size": 2},  # slow: rebalances find work in flight
                                kafka={"partitions": 4})
    bootstrap = settings.kafka.bootstrap_servers
    messages = [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in sample]
    first = WorkerProcess(settings, worker_log).start()
    second = WorkerProcess(settings, worker_log)
    try:
        asyncio.run(produce(bootstrap, settings.topics.transactions, messages[:1000]))
        assert asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 50, timeout_s=60))
        second.start()
        asyncio.run(produce(bootstrap, settings.topics.transactions, messages[1000:1300]))
        assert len(asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 1100, timeout_s=90))) >= 1100
        first.stop()
        asyncio.run(produce(bootstrap, settings.topics.transactions, messages[1300:]))
        wanted = {tx["transaction_id"] for tx in sample}

        scores = asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 0, timeout_s=120, done=scores_for(wanted)))
        assert second.alive()
    finally:
        first.stop()
        second.stop()
    assert {orjson.loads(r.value)["transaction_id"] for r in scores} == wanted


def test_a_worker_given_partitions_back_reads_their_cards_again(settings: Settings, worker_log,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:
    """What a worker keeps of its cards must not outlive a rebalance: the first worker
    hands partitions to a second, which scores more of those cards, then takes them back
    when the second stops. Every score is the offline one (20 cards: each card is in
    every phase)."""
    sample = [{**tx, "card_id": f"card{int(tx['card_id']) % 20}"} for tx in load_jsonl(DATA / "transactions_sample.jsonl")]
    values = [orjson.dumps(tx) for tx in sample]
    messages = [(tx["card_id"].encode(), value) for tx, value in zip(sample, values)]
    bootstrap = settings.kafka.bootstrap_servers
    second_log = tmp_path / "second-worker.log"
    first = WorkerProcess(settings, worker_log).start()
    second = WorkerProcess(settings, second_log)
    try:
        asyncio.run(produce(bootstrap, settings.topics.transactions, messages[:500]))
        assert len(asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 500, timeout_s=60))) >= 500
        second.start()
        deadline = time.monotonic() + 60
        while settings.topics.transactions not in (assigned_topics(second_log) if second_log.exists() else set()):
            assert time.monotonic() < deadline, "the second worker was given no partition of the transactions"
            time.sleep(0.5)
        asyncio.run(produce(bootstrap, settings.topics.transactions, messages[500:1000]))
        assert len(asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 1000, timeout_s=60))) >= 1000
        second.stop()
        asyncio.run(produce(bootstrap, settings.topics.transactions, messages[1000:]))
        wanted = {tx["transaction_id"] for tx in sample}
        scores = asyncio.run(read_topic(bootstrap, settings.topics.fraud_scores, 0, timeout_s=120, done=scores_for(wanted)))
        assert first.alive()
    finally:
        first.stop()
        second.stop()
    assert {orjson.loads(r.value)["transaction_id"] for r in scores} == wanted
    expected = offline_scores(settings, values)
    for record in scores:
        value = orjson.loads(record.value)
        assert value["score"] == pytest.approx(expected[value["transaction_id"]], abs=SCORE_TOLERANCE), value



def test_a_worker_per_job_in_one_group_each_takes_only_its_topics(settings: Settings, tmp_path: Path) -> None:
    """``STREAMER_WORKER_JOBS``: a fraud worker and a recommendation worker in one consumer
    group. Faust's assignor gives each the partitions of its own job's topics only, and
    every transaction and click is answered."""
    topics, bootstrap = settings.topics, settings.kafka.bootstrap_servers
    transactions = [(tx["card_id"].encode(), orjson.dumps(tx)) for tx in load_jsonl(DATA / "transactions_sample.jsonl")[:300]]
    clicks = clicks_for(20)
    logs = {job: tmp_path / f"{job}-worker.log" for job in ("fraud", "recommend")}
    workers = {job: WorkerProcess(settings.replace(worker={"jobs": job}), log).start() for job, log in logs.items()}
    try:
        asyncio.run(produce(bootstrap, topics.transactions, transactions))
        asyncio.run(produce(bootstrap, topics.clickstream, clicks))
        scores = asyncio.run(read_topic(bootstrap, topics.fraud_scores, len(transactions), timeout_s=90))
        recommendations = asyncio.run(read_topic(bootstrap, topics.recommendations, len(clicks), timeout_s=90))
        assert all(worker.alive() for worker in workers.values())
    finally:
        for worker in workers.values():
            worker.stop()
    assert assigned_topics(logs["fraud"]) == {topics.transactions, topics.fraud_labels}
    assert assigned_topics(logs["recommend"]) == {topics.clickstream, topics.recommend_requests}
    assert {orjson.loads(r.value)["transaction_id"] for r in scores} == {orjson.loads(v)["transaction_id"] for _, v in transactions}
    assert {orjson.loads(r.value)["event_id"] for r in recommendations} == {orjson.loads(v)["event_id"] for _, v in clicks}
