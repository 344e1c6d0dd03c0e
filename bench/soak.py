"""Soak: the worker's memory over a long run at a steady rate, ``python -m bench.soak``.

One ``streamer worker`` process consumes transactions and clicks offered at ``--rate``
events per second (half each, real data, fresh timestamps) for ``--minutes``; its
resident memory with its child processes' (the next-item model process;
``/proc/PID/status`` VmRSS) is sampled every few seconds. Memory is flat when the last
fifth of the run is no higher than the second fifth by more than a small margin (the
first fifth is warm-up: models, connections, Faust's buffers) and the fitted slope over
the last four fifths is near zero.

The input is stationary: each feed plays its first ``--cycle`` events over and over,
every round with new cards, terminals and users (ids suffixed with the round), so every
round asks the worker for the same work on state of the same size. Played once through
instead (``--cycle 0``), the state read per event keeps growing for the whole run (30-day
card windows filling, users coming back with longer histories at each wrap-around), and
so does a worker's working set, leak or no leak.

Events are sent in chunks of ``--chunk-ms`` as whole record batches, so that the
embedded broker (whose fetches slow down with the number of record batches in a
partition) stays well below its limit over the run.

Whether the worker kept up is read from its consumer group, not from its outputs: once
the offering stops, the soak waits until the group has committed every input record
(the worker commits an offset only after that event's outputs are acknowledged). The
outputs of a long live run are many small record batches, which the embedded broker
fetches ever more slowly, so reading them all back measured the reader, not the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.run import ROOT, clicks, fresh_settings, local_services, transactions
from streamer.output.sink import send_batched
from streamer.replay.through_worker import running_worker
from streamer.settings import EVERY_JOB, Settings
from streamer.state.store import delete_namespace
from streamer.worker.highwater import FetchedHighWatermarks
from streamer.worker.topics import delete_topics, ensure_topics


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for {pid}")


def descendants(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The processes started by ``pid``, by theirs, and so on."""
    children: dict[int, list[int]] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_rss_mb(pid: int) -> float:
    """The resident memory of ``pid`` and its descendants."""
    total = rss_mb(pid)
    for child in descendants(pid):
        try:
            total += rss_mb(child)
        except (OSError, RuntimeError):  # it exited meanwhile
            pass
    return total


EVENT_IDS = ("transaction_id", "event_id")
ENTITY_IDS = ("card_id", "terminal_id", "user_id")


def retimed(key: bytes, value: bytes, event_time: float, cycle: int, new_entities: bool) -> tuple[bytes, bytes]:
    """The event with its timestamp set to now (windows and TTLs then behave as live), its
    id made unique again when the data is played a further time round, and with
    ``new_entities`` its card, terminal and user (and so its key) new in each round."""
    event = orjson.loads(value)
    event["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(event_time)) + "Z"
    if cycle:
        for field in EVENT_IDS + (ENTITY_IDS if new_entities else ()):
            if field in event:
                event[field] = f"{event[field]}~{cycle}"
        if new_entities:
            key = key + f"~{cycle}".encode()
    return key, orjson.dumps(event)


async def offer(settings: Settings, rate: float, seconds: float, chunk_s: float, pid: int,
                every_s: float, cycle: int) -> tuple[list[tuple[float, float]], dict[str, int]]:
    """Offer the events; returns the memory samples and how many of each kind were sent."""
    topics = settings.topics
    per_kind = cycle or int(rate * seconds / 2) + 1
    feeds = [(topics.transactions, transactions(per_kind)), (topics.clickstream, clicks(per_kind))]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", max_batch_size=1024 * 1024)
    await producer.start()
    samples: list[tuple[float, float]] = []
    sent = 0
    try:
        started = time.monotonic()
        next_sample = started
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(rate * elapsed)
            now = time.time()
            chunk = [(topic, None, *retimed_at(messages, n, now, new_entities=cycle > 0), (), None)
                     for topic, messages in feeds for n in range(sent // 2, due // 2)]
            if chunk:
                await send_batched(producer, chunk)
            sent = due - due % 2
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - started, tree_rss_mb(pid)))
                next_sample += every_s
            await asyncio.sleep(max(0.0, chunk_s - (time.monotonic() - started - elapsed)))
    finally:
        await producer.stop()
    return samples, {"transactions": sent // 2, "clicks": sent // 2}


def retimed_at(messages: list[tuple[bytes, bytes]], n: int, now: float, new_entities: bool) -> tuple[bytes, bytes]:
    """The n-th event of a feed played round and round."""
    key, value = messages[n % len(messages)]
    return retimed(key, value, now, n // len(messages), new_entities)


def verdict(samples: list[tuple[float, float]]) -> dict[str, float | bool]:
    times = np.array([t for t, _ in samples])
    rss = np.array([m for _, m in samples])
    fifth = len(samples) // 5
    second, last = rss[fifth : 2 * fifth], rss[-fifth:]
    slope = float(np.polyfit(times[fifth:] / 60.0, rss[fifth:], 1)[0])
    growth = float(np.median(last) - np.median(second))
    return {"rss_start_mb": round(float(rss[0]), 1), "rss_second_fifth_median_mb": round(float(np.median(second)), 1),
            "rss_last_fifth_median_mb": round(float(np.median(last)), 1), "rss_max_mb": round(float(rss.max()), 1),
            "growth_mb": round(growth, 1), "slope_mb_per_min": round(slope, 2),
            "flat": bool(growth <= max(5.0, 0.03 * float(np.median(second))) and slope < 1.0)}


async def backlog(bootstrap: str, group: str, topics: Sequence[str]) -> dict[str, int]:
    """Records of each topic not yet committed by ``group``: high watermarks (from fetch
    responses) minus the group's committed offsets (read by a consumer that is assigned
    the partitions, so the group is not joined and the worker not rebalanced)."""
    highwaters = FetchedHighWatermarks(bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        left = {}
        for topic in topics:
            highs = await highwaters.highwaters(topic)
            consumer.assign([TopicPartition(topic, p) for p in highs])
            committed = {p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in highs}
            left[topic] = sum(max(high - committed[p], 0) for p, high in highs.items())
        return left
    finally:
        await consumer.stop()
        await highwaters.close()


async def wait_caught_up(bootstrap: str, group: str, topics: Sequence[str], timeout_s: float) -> tuple[dict[str, int], float]:
    """The backlog once it is empty or ``timeout_s`` passed, and the seconds waited."""
    started = time.monotonic()
    while True:
        left = await backlog(bootstrap, group, topics)
        waited = time.monotonic() - started
        if not any(left.values()) or waited >= timeout_s:
            return left, round(waited, 1)
        await asyncio.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second, half transactions, half clicks")
    parser.add_argument("--cycle", type=int, default=30000,
                        help="events per feed before it plays again with new entities (0: the data once through)")
    parser.add_argument("--chunk-ms", type=float, default=200.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        broker, base = local_services(stack)
        settings = fresh_settings(base, base.batch.max_size).replace(worker={"jobs": EVERY_JOB})  # it offers both kinds
        asyncio.run(ensure_topics(broker.bootstrap_servers, settings.topics.all(), settings.kafka.partitions))
        log = args.out.parent / "soak-worker.log"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with running_worker(settings, log) as worker:
                time.sleep(8)  # join the group before the clock starts
                samples, offered = asyncio.run(
                    offer(settings, args.rate, args.minutes * 60, args.chunk_ms / 1000, worker.pid, args.sample_s, args.cycle))
                left, waited = asyncio.run(wait_caught_up(
                    broker.bootstrap_servers, settings.kafka.group_id,
                    [settings.topics.transactions, settings.topics.clickstream], timeout_s=300))
                alive = worker.poll() is None
        finally:
            asyncio.run(delete_topics(broker.bootstrap_servers, settings.topics.all()))
            asyncio.run(delete_namespace(settings.redis))
    result = {"command": f"python -m bench.soak --minutes {args.minutes:g} --rate {args.rate:g} --cycle {args.cycle}",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "worker_alive": alive,
              "offered": offered,
              "not_committed_at_end": {"transactions": left[settings.topics.transactions],
                                       "clicks": left[settings.topics.clickstream]},
              "caught_up_after_s": waited,
              "samples": [[round(t, 1), round(m, 1)] for t, m in samples], **verdict(samples),
              "settings": {"batch": dataclasses.asdict(settings.batch)}}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    return 0 if alive and not any(left.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
