"""``streamer demo``: everything on one machine, live on screen, until Ctrl-C.

Starts what is missing — the embedded broker when no Kafka answers at the configured
address, an embedded Valkey when no Redis answers — then the worker as its own
process (``streamer worker``, exactly as in production), plays traffic at ``--rate``
events per second and shows throughput, the latest alerts and recommendations. On
exit it stops everything it started, and only that.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer.datasets import SHARED_DATA
from streamer.demo.traffic import demo_traffic
from streamer.embedded import port_open, start_missing_services
from streamer.output.sink import send_batched
from streamer.replay.through_worker import running_worker
from streamer.settings import EVERY_JOB, Settings
from streamer.state.store import delete_namespace
from streamer.worker.topics import ensure_topics

#: Traffic goes out in chunks this far apart (what is due by then).
CHUNK_S = 0.2


class Screen:
    """What the demo shows: counters, rates and the latest outputs."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.alerts: deque[dict[str, Any]] = deque(maxlen=5)
        self.recommendations: deque[dict[str, Any]] = deque(maxlen=3)
        self.dead_letters: deque[str] = deque(maxlen=3)
        self.started = time.monotonic()
        self.last: tuple[float, Counter[str]] = (self.started, Counter())

    def render(self) -> str:
        now = time.monotonic()
        then, before = self.last
        rate = {k: (self.counts[k] - before[k]) / max(now - then, 1e-6) for k in self.counts}
        self.last = (now, Counter(self.counts))
        lines = [f"Streamer demo — {now - self.started:.0f} s — Ctrl-C to stop", ""]
        for name in ("sent", "fraud-scores", "fraud-alerts", "recommendations", "dead-letter"):
            lines.append(f"  {name:<16} {self.counts[name]:>9,}  {rate.get(name, 0.0):8.1f}/s")
        lines += ["", "Latest fraud alerts:"]
        for alert in self.alerts:
            reasons = "; ".join(r["text"] for r in alert.get("reasons", []))
            lines.append(f"  tx {alert['transaction_id']:>8} card {alert['card_id']:>5} score {alert['score']:.3f}  {reasons}")
        lines += ["", "Latest recommendations:"]
        for rec in self.recommendations:
            items = ", ".join(i["item_id"] for i in rec["items"][:10])
            lines.append(f"  user {rec['user_id']:>6} ({rec['source']}): {items}")
        lines += ["", "Latest dead letters:"]
        lines += [f"  {d}" for d in self.dead_letters]
        return "\n".join(lines)


async def _watch(settings: Settings, screen: Screen, stop: asyncio.Event) -> None:
    topics = settings.topics
    consumer = AIOKafkaConsumer(
        topics.fraud_scores, topics.fraud_alerts, topics.recommendations, topics.dead_letter,
        bootstrap_servers=settings.kafka.bootstrap_servers, auto_offset_reset="earliest",
        enable_auto_commit=False, fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                screen.counts[tp.topic] += len(records)
                last = records[-1]
                if tp.topic == topics.fraud_alerts:
                    screen.alerts.extend(orjson.loads(r.value) for r in records[-5:])
                elif tp.topic == topics.recommendations:
                    screen.recommendations.append(orjson.loads(last.value))
                elif tp.topic == topics.dead_letter:
                    headers = dict(last.headers)
                    screen.dead_letters.append(f"{headers.get('dlq.reason', b'').decode()}: {last.value[:40]!r}")
    finally:
        await consumer.stop()


async def _play(settings: Settings, data_dir: Path | None, rate: float, screen: Screen, stop: asyncio.Event) -> None:
    from streamer.inference.next_item import NextItemRanker

    catalogue = NextItemRanker(settings.models.recommend).items[1:]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", max_batch_size=1024 * 1024)
    await producer.start()
    traffic = demo_traffic(data_dir, catalogue, settings.topics)
    try:
        started = time.monotonic()
        while not stop.is_set():
            # what is due by now, as one chunk of record batches: few, full batches keep the
            # embedded broker's fetches fast over a long demo
            due = int(rate * (time.monotonic() - started)) - screen.counts["sent"]
            chunk = [(topic, None, key, value, (), None) for topic, key, value in itertools.islice(traffic, max(due, 0))]
            if due > 0 and not chunk:
                break
            if chunk:
                await send_batched(producer, chunk)
                screen.counts["sent"] += len(chunk)
            await asyncio.sleep(CHUNK_S)
    finally:
        await producer.stop()


async def _show(screen: Screen, stop: asyncio.Event, worker: subprocess.Popen[bytes], log: Path) -> None:
    tty = sys.stdout.isatty()
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if worker.poll() is not None:
            print(f"the worker exited with {worker.returncode}; see {log}", file=sys.stderr)
            stop.set()
            return
        text = screen.render()
        print(("\033[2J\033[H" + text) if tty else text + "\n", flush=True)


async def _demo(settings: Settings, duration_s: float | None, rate: float, data_dir: Path | None,
                worker: subprocess.Popen[bytes], log: Path) -> bool:
    """Plays until stopped (Ctrl-C, ``duration_s``); whether it went well: the worker
    still up, and neither the traffic nor the watcher failed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration_s:
        loop.call_later(duration_s, stop.set)
    screen = Screen()
    tasks = [
        asyncio.create_task(_watch(settings, screen, stop)),
        asyncio.create_task(_play(settings, data_dir, rate, screen, stop)),
        asyncio.create_task(_show(screen, stop, worker, log)),
    ]
    await stop.wait()
    for task in tasks:
        task.cancel()
    failures = [r for r in await asyncio.gather(*tasks, return_exceptions=True) if isinstance(r, Exception)]
    print(screen.render(), flush=True)
    for failure in failures:
        print(f"the demo failed: {type(failure).__name__}: {failure}", file=sys.stderr)
    return not failures and worker.poll() is None


def demo_settings(settings: Settings, namespace: str) -> Settings:
    """The demo worker's settings: state and consumer group of their own, and both jobs
    whatever ``STREAMER_WORKER_JOBS`` says (the demo plays transactions and clicks)."""
    return settings.replace(redis={"namespace": namespace}, kafka={"group_id": f"streamer-{namespace}"},
                            worker={"jobs": EVERY_JOB})


def run_demo(settings: Settings, *, duration_s: float | None = None, rate: float = 1000.0, data_dir: Path | None = None) -> int:
    data_dir = data_dir or (SHARED_DATA if SHARED_DATA.is_dir() else None)
    with contextlib.ExitStack() as started:
        settings = start_missing_services(
            settings, started, broker_port=None if port_open("127.0.0.1", 9092) else 9092, announce=print)
        settings = demo_settings(settings, f"demo-{int(time.time())}")  # fresh state and offsets for every demo
        kafka = settings.kafka
        asyncio.run(ensure_topics(kafka.bootstrap_servers, settings.topics.all(), kafka.partitions, kafka.replication_factor))
        log = Path("streamer-demo-worker.log").resolve()
        started.callback(lambda: asyncio.run(delete_namespace(settings.redis)))  # once the worker stopped
        worker = started.enter_context(running_worker(settings, log))
        print(f"started the worker (pid {worker.pid}, log {log}); playing {'real data from ' + str(data_dir) if data_dir else 'generated events'}")
        went_well = asyncio.run(_demo(settings, duration_s, rate, data_dir, worker, log))
    return 0 if went_well else 1
