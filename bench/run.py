"""The benchmark suite: the engine side by side with the naive way and the raw ceilings.

``python -m bench.run [--quick]`` starts the embedded broker, uses the Redis at
``STREAMER_REDIS_URL`` (else an embedded Valkey) and ``streamer worker`` processes,
all on this machine, and measures in one run:

* drain throughput: a backlog of N transactions (N clicks) processed end to end, from
  when the workers, settled into their group and paused while the backlog was
  produced, resume, to the last output record being readable (``drain``;
  ``bench.readable``: the output topic's high watermarks watched from fetches past its
  end). The outputs themselves are read once the workers' group has committed the
  whole backlog, not while they run: a reader parsing every output along the way took
  a fifth of a core from the two it measures;
* the same for transactions at steady state (``STEADY_FROM``): the first days' drains
  find every terminal window empty, a deployment finds a month in each;
* the naive way: the same worker with micro-batches of one event (one Redis round
  trip, one model call on the agent's event loop and one acknowledged publish per
  event), drained and at fixed offered rates below and beyond what it drains;
* ceilings: the model alone in ONNX Runtime at the engine's batch size, a bare
  aiokafka consume → produce loop without a model, and the engine's own Faust app
  publishing each input unchanged (``bench.faust_loop``: the framework's ceiling);
* latency at fixed offered rates: input record timestamp → output record readable,
  p50 / p99 / max, at several rates up to saturation, with one worker, and with two
  (settled into their group first) from where one worker nears saturation up to the
  targets' rates and beyond; and
  where the machine's CPU went while each rate was offered (``bench.cpu``);
* the targets' rates (``SuitePlan.targets``: 15,000 transactions/s to two workers,
  8,000 clicks/s to one) offered again once per repeat, each time on fresh topics,
  workers and state: the median and spread of their p50 / p99 / max; the transactions'
  also from steady state (``STEADY_FROM``, the month before stored first), which costs a
  worker more per transaction than the first days' empty windows;
* where the engine's drains spent their time: the workers' step-time reports
  (``STREAMER_BATCH_REPORT_S``), each step's mean and longest time per batch.

Every worker runs the job of the events measured (``STREAMER_WORKER_JOBS``: ``fraud`` for
transactions, ``recommend`` for clicks), as the README deploys each job's workers: it then
fetches only that job's topics. Where as many workers run as the machine has cores, they
run their models on their event loops (``for_workers``: ``STREAMER_MODELS_THREAD`` and
``STREAMER_MODELS_PROCESS`` false, unless the environment sets them), as the README
advises for such a machine. Each drain is repeated (median and spread reported), and the share of the machine's CPU
time the hypervisor gave other guests over the run (steal) is recorded: these VMs are
noisy. Results go to
``bench/results/latest.json`` and, with ``--write-docs``, to ``docs/benchmarks.md`` and
``docs/latency.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bench.cpu import benchmark_parts, cpu_model, cpu_times, cpu_use, read_cpu, stolen_share
from bench.readable import ReadableTimes, read_outputs
from streamer.datasets import BEAUTY, FRAUD_CSV, label_for, read_fraud_csv, read_sequences
from streamer.embedded import EmbeddedBroker, start_missing_services
from streamer.events import Click, FraudLabel, Transaction, click_to_json, encode, format_time, transaction_to_json
from streamer.features.fraud import TERMINAL_HORIZON
from streamer.inference.fraud_scorer import FraudScorer
from streamer.inference.next_item import NextItemRanker
from streamer.output.sink import send_batched
from streamer.pipeline.fraud import TransactionFeatures
from streamer.replay.through_worker import running_worker
from streamer.settings import RedisSettings, Settings, TopicSettings
from streamer.state.memory import InMemoryStateStore
from streamer.state.store import RedisStateStore, delete_namespace
from streamer.worker.step_times import parse_reports
from streamer.worker.topics import assign_topic, delete_topics, ensure_topics

ROOT = Path(__file__).resolve().parent.parent
#: How often a drain's workers report their batches' step times (``STREAMER_BATCH_REPORT_S``).
STEP_REPORT_S = 1.0
#: The agent that takes each kind of input.
AGENTS = {"transactions": "score_transactions", "clicks": "recommend_next_items"}
Message = tuple[bytes, bytes]


def transactions(n: int) -> list[Message]:
    return [(tx.card_id.encode(), encode(transaction_to_json(tx))) for tx, _ in read_fraud_csv(FRAUD_CSV, n)]


def clicks(n: int) -> list[Message]:
    """``n`` clicks: each user's sequence of the Amazon Beauty data in turn, a second
    apart. Past the data's last sequence (about 198,500 clicks) the sequences come again
    as new users' (``<user>~2``, ``~3``, ...), their times going on, so a load run can
    offer 8,000 clicks/s for longer than 25 s."""
    out: list[Message] = []
    ts = 1533081600.0
    for round_ in itertools.count(1):
        before = len(out)
        for user, items in read_sequences(BEAUTY):
            user = user if round_ == 1 else f"{user}~{round_}"
            for position, item in enumerate(items):
                ts += 1.0
                click = Click(f"{user}-{position}", user, item, ts, format_time(ts), "click")
                out.append((user.encode(), encode(click_to_json(click))))
                if len(out) >= n:
                    return out
        if len(out) == before:  # no sequences at all
            return out
    return out


#: Where the steady-state drain starts in the benchmark data (day 40 or so). The other
#: drains start on its first day, when no terminal window holds anything yet (they open
#: 7 days back) and the card windows are filling: a long-running deployment reads and
#: counts a month of each terminal's and card's transactions.
STEADY_FROM = 380_000


def steady_transactions(n: int) -> tuple[list[Transaction], list[FraudLabel], list[Message]]:
    """For a drain at steady state: the transactions of the terminal windows' reach
    (37 days) before the drained ones, the fraud labels known when they start (7 days
    late), and the ``n`` drained transactions."""
    rows = list(read_fraud_csv(FRAUD_CSV, STEADY_FROM + n))
    start = rows[STEADY_FROM][0].ts
    history = [(tx, fraud) for tx, fraud in rows[:STEADY_FROM] if tx.ts > start - TERMINAL_HORIZON]
    labels = [label for label in (label_for(tx, fraud) for tx, fraud in history) if label.labelled_ts <= start]
    drained = [(tx.card_id.encode(), encode(transaction_to_json(tx))) for tx, _ in rows[STEADY_FROM:]]
    return [tx for tx, _ in history], labels, drained


async def store_history(redis: RedisSettings, transactions: list[Transaction], labels: list[FraudLabel],
                        chunk: int = 2048) -> None:
    """Transactions and labels stored as a worker stores them, without feature rows: the
    state a steady-state drain starts from (its cards' sequence rows start empty)."""
    store = RedisStateStore.from_settings(redis)
    try:
        for i in range(0, len(transactions), chunk):
            await store.write_fraud(transactions[i : i + chunk])
        for i in range(0, len(labels), chunk):
            await store.write_labels(labels[i : i + chunk])
    finally:
        await store.close()


def click_histories(n: int) -> list[list[str]]:
    """What the engine encodes for each of the first ``n`` benchmark clicks: the user's
    items up to and including the click."""
    out: list[list[str]] = []
    for _, items in read_sequences(BEAUTY):
        for position in range(len(items)):
            out.append(items[: position + 1])
            if len(out) >= n:
                return out
    return out


#: The job a worker runs for each kind of event (``STREAMER_WORKER_JOBS``).
JOB_OF = {"transactions": "fraud", "clicks": "recommend"}


def for_kind(settings: Settings, kind: str, jobs: str | None = None) -> Settings:
    """``settings`` with the workers running ``jobs``, by default the job of ``kind`` alone."""
    return settings.replace(worker={"jobs": jobs or JOB_OF[kind]})


#: The settings that place a worker's models beside its event loop: ``for_workers``.
BESIDE_THE_LOOP = {"thread": "STREAMER_MODELS_THREAD", "process": "STREAMER_MODELS_PROCESS"}


def for_workers(settings: Settings, workers: int, environ: Mapping[str, str] = os.environ,
                cores: int | None = None) -> Settings:
    """``settings`` for ``workers`` worker processes on this machine: as many as it has
    ``cores`` or more run their models on their event loops (``STREAMER_MODELS_THREAD``
    and ``STREAMER_MODELS_PROCESS`` false, as the README advises for such a machine),
    except where the environment sets either."""
    if workers < (cores or os.cpu_count() or 1):
        return settings
    return settings.replace(models=on_the_loop(environ))


def on_the_loop(environ: Mapping[str, str]) -> dict[str, bool]:
    """The model settings that put a worker's models on its event loop, but for those
    the environment sets."""
    return {field: False for field, name in BESIDE_THE_LOOP.items() if name not in environ}


def models_beside_the_loop(settings: Settings) -> dict[str, bool]:
    """Where ``settings`` place a worker's models: beside its event loop on a thread, in a
    process (the next-item models), or neither (on the loop)."""
    return {field: getattr(settings.models, field) for field in BESIDE_THE_LOOP}


def fresh_settings(base: Settings, batch: int, environ: Mapping[str, str] = os.environ) -> Settings:
    """Topics, group and Redis namespace of their own, and batches of ``batch``. A batch
    of one is the naive way, one event at a time, as one would write it: one lane, not
    one event per lane, no backlog batches, and the models run by the agent on its event
    loop (not handed to a thread or a child process, which would cost each event a
    hand-over; unless the environment sets where they run)."""
    tag = uuid.uuid4().hex[:8]
    topics = TopicSettings(**{f.name: f"bench-{getattr(TopicSettings(), f.name)}-{tag}" for f in dataclasses.fields(TopicSettings)})
    batching = {"max_size": batch, **({"lanes": 1, "backlog_size": 1} if batch == 1 else {})}
    models = on_the_loop(environ) if batch == 1 else {}
    return dataclasses.replace(base, topics=topics).replace(
        kafka={"group_id": f"bench-{tag}"}, redis={"namespace": f"bench-{tag}"}, batch=batching, models=models)


async def produce(bootstrap: str, topic: str, messages: list[Message], rate: float = 0.0,
                  chunk_s: float = 0.01, chunk_max: int = 2000) -> list[float]:
    """Send (paced at ``rate`` per second when > 0: what is due every ``chunk_s``) in
    record batches per partition, as the engine's sink does (``send_batched``), at most
    ``chunk_max`` records at a time; returns each message's send time, which is also its
    record timestamp. On this 2-core machine one ``send()`` per record cost the harness
    23 % of a core at 4,000 records/s (this way: 10 %), taken from the worker it measures.
    Record batches keep the producer's default limit (16 KiB, as most Kafka clients), so a
    backlog is laid out as it was with one ``send()`` per record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")  # record batches of at most 16 KiB
    await producer.start()
    sent: list[float] = []
    try:
        started = time.monotonic()
        while len(sent) < len(messages):
            due = len(messages) if rate <= 0 else int(rate * (time.monotonic() - started)) + 1
            chunk = messages[len(sent) : min(due, len(sent) + chunk_max)]
            if chunk:
                now = time.time()
                stamp = int(now * 1000)
                await send_batched(producer, [(topic, None, key, value, (), stamp) for key, value in chunk])
                sent += [now] * len(chunk)
            if rate > 0:
                await asyncio.sleep(chunk_s)
    finally:
        await producer.stop()
    return sent


async def wait_committed(bootstrap: str, group: str, topic: str, records: int, timeout_s: float,
                         poll_s: float = 0.1) -> int:
    """Wait until ``group`` has committed ``records`` records of a fresh ``topic`` (its
    offsets start at 0), or ``timeout_s`` passed; returns the records committed. The
    group's offsets are read by a consumer that is assigned the partitions, so the group
    is not joined; a worker commits an input only once its outputs are acknowledged."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await assign_topic(consumer, topic)
        deadline = time.monotonic() + timeout_s
        while True:
            committed = sum([await consumer.committed(tp) or 0 for tp in tps])
            if committed >= records or time.monotonic() >= deadline:
                return committed
            await asyncio.sleep(poll_s)
    finally:
        await consumer.stop()


#: How long workers that have just settled into their group get before a latency run
#: offers its rate: they seek to their partitions' committed offsets and start fetching.
SETTLE_S = 1.0


async def group_settled(bootstrap: str, group: str, members: int, timeout_s: float = 60.0, poll_s: float = 0.2) -> None:
    """Until the consumer group is ``Stable`` with ``members`` members (every one holding
    its assignment), then ``SETTLE_S``: a worker joining later would make the group
    rebalance, and the pause inside a latency run."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            groups = [g for response in await admin.describe_consumer_groups([group]) for g in response.groups]
            # (error_code, group_id, state, protocol_type, protocol, members)
            if any(g[2] == "Stable" and len(g[5]) == members for g in groups):
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(f"group {group} did not settle with {members} members in {timeout_s:g} s: {groups}")
            await asyncio.sleep(poll_s)
    finally:
        await admin.close()
    await asyncio.sleep(SETTLE_S)


def endpoints(topics: TopicSettings, kind: str) -> tuple[str, str, str]:
    """The input topic of ``kind`` ("transactions" or "clicks"), the topic its outputs go
    to, and the output field that names the input event."""
    if kind == "transactions":
        return topics.transactions, topics.fraud_scores, "transaction_id"
    return topics.clickstream, topics.recommendations, "event_id"


@dataclasses.dataclass(frozen=True)
class Drained:
    """A drain: ``events`` answered in ``seconds``, from when its workers, settled in
    their group and paused while the backlog was produced (``produced_s``), resumed, to
    the last output record being readable; its first output was readable
    ``first_output_s`` after they resumed. ``to_stamp_s``: to the last output's own
    timestamp instead, which the worker's producer set before sending it (how drains
    were timed before 2026-12-07 16:00 UTC: ``bench.readable``)."""

    events: int
    seconds: float
    produced_s: float
    first_output_s: float
    to_stamp_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / max(self.seconds, 1e-3)


#: How many times the one-worker drain's backlog the suite's long drain takes: a 20,000-click
#: drain took under 2 s, 0.2 s of it before the first output came, while 60,000 clicks
#: drained at 96 % of the models alone (docs/benchmarks.md, 2026-12-05 from 16:42 UTC).
LONG_DRAIN = 3

#: How ``drain`` times a drain (recorded with the results).
DRAIN_TIMING = ("from when the workers, settled in their group and paused while the backlog was produced, "
                "resume, to the last output record being readable")


def drain(base: Settings, kind: str, messages: list[Message], batch: int, log: Path, workers: int = 1,
          module: str = "streamer.cli worker", step_reports: list[str] | None = None,
          history: tuple[list[Transaction], list[FraudLabel]] | None = None) -> Drained:
    """A backlog answered by 1 or more workers (``streamer worker``, or the ``module``
    run instead, such as ``bench.faust_loop``) running the job of ``kind``
    (``for_kind``), their models placed for their number (``for_workers``).

    The workers start on empty topics and settle into their group (``group_settled``);
    they are then paused (``paused``) while the backlog is produced, and the drain is
    timed from their resuming to the last output (``drained``). A backlog produced before
    the workers started was taken at different times by each and answered in bursts:
    timed from the first output, two workers' clicks read half again what they drain
    timed this way, one worker's drains 15-30 % more (docs/benchmarks.md, session of
    2026-12-05 from 15:23 UTC). A backlog produced while they ran would have taken the
    producer's CPU from them.

    The workers report their batches' step times every ``STEP_REPORT_S`` and as they
    stop; those log lines are added to ``step_reports``. With ``history``, those
    transactions and labels are stored first (``store_history``)."""
    settings = for_workers(for_kind(fresh_settings(base, batch), kind), workers).replace(batch={"report_s": STEP_REPORT_S})
    if history is not None:
        asyncio.run(store_history(settings.redis, *history))
    log_start = log.stat().st_size if log.exists() else 0
    topics = settings.topics
    source, sink, id_field = endpoints(topics, kind)
    bootstrap = settings.kafka.bootstrap_servers
    group = settings.kafka.group_id
    asyncio.run(ensure_topics(bootstrap, topics.all(), settings.kafka.partitions))
    try:
        with contextlib.ExitStack() as running:
            pids = [running.enter_context(running_worker(settings, log, module)).pid for _ in range(workers)]
            asyncio.run(group_settled(bootstrap, group, workers))
            # a drain's end is its last output's: seen up to 25 ms late, at a quarter of the
            # watch's cost in the latency runs
            with ReadableTimes(bootstrap, sink, fetch_max_wait_ms=20) as watched:
                with paused(pids) as resumed:
                    sent = asyncio.run(produce(bootstrap, source, messages))
                asyncio.run(wait_committed(bootstrap, group, source, len(messages), timeout_s=900))
                outputs = asyncio.run(read_outputs(bootstrap, sink, len(messages), id_field, timeout_s=60))
        if step_reports is not None:
            with open(log, "rb") as worker_log:
                worker_log.seek(log_start)
                step_reports += worker_log.read().decode(errors="replace").splitlines()
        readable = [at for output in outputs.values() if (at := watched.at(output.partition, output.offset)) is not None]
        if len(readable) < len(messages):
            raise RuntimeError(f"{kind}: {len(outputs)} of {len(messages)} outputs, "
                               f"{len(outputs) - len(readable)} of them not seen readable; see {log}")
        return drained(resumed[0], readable, [output.timestamp_ms for output in outputs.values()],
                       produced_s=resumed[0] - sent[0])
    finally:
        asyncio.run(delete_topics(bootstrap, topics.all()))
        asyncio.run(delete_namespace(settings.redis))


@contextlib.contextmanager
def paused(pids: Sequence[int]) -> Iterator[list[float]]:
    """The processes ``pids`` stopped (SIGSTOP) inside the block and continued as it
    ends; yields a list that then holds the time (epoch seconds) just before they were
    continued. A stop of a second or so is well within a worker's session timeout (its
    heartbeats resume with it)."""
    resumed: list[float] = []
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield resumed
    finally:
        resumed.append(time.time())
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def drained(resumed: float, readable: Sequence[float], stamps: Sequence[int], produced_s: float) -> Drained:
    """The drain of a backlog whose workers resumed at ``resumed`` and whose outputs
    became readable at ``readable`` (epoch seconds, the clock of this machine) and were
    stamped ``stamps`` by the workers (epoch ms): every event's processing and delivery
    lies within that span, however its outputs were grouped into deliveries."""
    return Drained(len(readable), max(readable) - resumed, produced_s, min(readable) - resumed,
                   to_stamp_s=max(stamps) / 1000.0 - resumed)


def drain_rates(drains: list[Drained]) -> dict[str, float]:
    """The rates of repeated drains (``spread``), and the median of their first outputs'
    delays after the workers resumed (``first_output_s``): how soon a worker restarted on
    a backlog answers."""
    return {**spread([d.rate for d in drains]), "first_output_s": round(statistics.median(d.first_output_s for d in drains), 3),
            "median_to_stamps": round(statistics.median(d.events / max(d.to_stamp_s, 1e-3) for d in drains))}


def events_offered(rates: Sequence[float], seconds: float) -> int:
    """How many events ``latency`` takes at ``rates`` for ``seconds`` each: per rate, the
    first (which waits for the worker) and the rest offered at the rate."""
    return sum(1 + int(rate * seconds) for rate in rates)


def latency(base: Settings, kind: str, messages: list[Message], rates: Sequence[float], seconds: float, log: Path,
            workers: int = 1, broker_pid: int | None = None, batch: int | None = None, jobs: str | None = None,
            history: tuple[list[Transaction], list[FraudLabel]] | None = None) -> list[dict[str, Any]]:
    """p50 / p99 / max from input timestamp to the output being readable
    (``bench.readable``) at each offered rate,
    with ``workers`` worker processes in one consumer group running ``jobs`` (by default
    the job of ``kind``: ``for_kind``; their models placed for their number:
    ``for_workers``), and where the machine's CPU
    went while the rate was offered (``bench.cpu``; the broker's part when its
    ``broker_pid`` is given). Batches of ``batch`` (the configured size by default; 1:
    the naive way, ``fresh_settings``).

    Each rate runs on topics and workers of its own, on state kept from the rates
    before (one Redis namespace, the feed read on): the embedded broker's work per fetch
    grows with how many records a partition holds (docs/benchmarks.md), so on topics
    shared by every rate the later rates would pay for the earlier ones' records. With
    ``history``, those transactions and labels are stored first (``store_history``:
    the state at ``STEADY_FROM``, for a feed from there)."""
    batch = batch or base.batch.max_size
    state = fresh_settings(base, batch).redis
    results = []
    feed = iter(messages)
    try:
        if history is not None:
            asyncio.run(store_history(state, *history))
        for rate in rates:
            settings = for_workers(for_kind(fresh_settings(base, batch), kind, jobs), workers).replace(
                redis={"namespace": state.namespace})
            results.append(_latency_at(settings, kind, rate, list(itertools.islice(feed, events_offered([rate], seconds))), log,
                                       workers, broker_pid))
            print(f"  {kind} at {rate:,.0f}/s, {workers} worker(s), batches of {batch}: {results[-1]}", flush=True)
    finally:
        asyncio.run(delete_namespace(state))
    return results


def _latency_at(settings: Settings, kind: str, rate: float, messages: list[Message], log: Path,
                workers: int = 1, broker_pid: int | None = None) -> dict[str, Any]:
    """One rate on fresh topics: the first message waits for the workers to be up (for
    two or more, until their group has settled: ``group_settled``), the rest are
    offered at ``rate``, the machine's CPU read before and after."""
    topics = settings.topics
    source, sink, id_field = endpoints(topics, kind)
    bootstrap = settings.kafka.bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, topics.all(), settings.kafka.partitions))
    try:
        with contextlib.ExitStack() as running:
            pids = [running.enter_context(running_worker(settings, log)).pid for _ in range(workers)]
            first, chunk = messages[:1], messages[1:]
            asyncio.run(produce(bootstrap, source, first))
            asyncio.run(read_outputs(bootstrap, sink, 1, id_field, timeout_s=60))
            if workers > 1:
                asyncio.run(group_settled(bootstrap, settings.kafka.group_id, workers))
            parts = benchmark_parts(pids, broker_pid, str(settings.redis.url))
            with ReadableTimes(bootstrap, sink) as watched:
                before = read_cpu(parts)
                sent = asyncio.run(produce(bootstrap, source, chunk, rate))
                after = read_cpu(parts)
                outputs = asyncio.run(read_outputs(bootstrap, sink, len(messages), id_field, timeout_s=120))
    finally:
        asyncio.run(delete_topics(bootstrap, topics.all()))
    ids = [orjson.loads(v)[id_field] for _, v in chunk]
    readable = {name: watched.at(output.partition, output.offset) for name, output in outputs.items()}
    each = [None if (at := readable.get(i)) is None else 1000.0 * (at - s) for i, s in zip(ids, sent)]
    stamped = [outputs[i].timestamp_ms - 1000.0 * s for i, s in zip(ids, sent) if i in outputs]
    answered = [ms for ms in each if ms is not None]
    achieved = len(chunk) / max(sent[-1] - sent[0], 1e-3)
    return {"offered": rate, "achieved_send_rate": round(achieved), **percentiles(answered), "lost": len(chunk) - len(answered),
            "windows": latency_windows(sent, each),
            # the same to the outputs' own timestamps (as measured before 2026-12-07 16:00 UTC:
            # bench.readable), and how far the producer fell behind its schedule
            "to_output_stamps": percentiles(stamped), "behind_schedule_ms": behind_schedule(sent, rate),
            "cpu": cpu_use(before, after, answered_between(readable.values(), before.wall, after.wall))}


def target_latency(base: Settings, kind: str, messages: list[Message], rate: float, workers: int, runs: int,
                   seconds: float, log: Path, broker_pid: int | None = None,
                   history: tuple[list[Transaction], list[FraudLabel]] | None = None) -> dict[str, Any]:
    """``rate`` offered to ``workers`` ``runs`` times, each time on topics, workers and
    state of its own (``history`` stored first, if given) reading ``messages`` from the
    start (``latency``): each run, and the median and spread of their p50 / p99 / max.
    One offering of a rate is noisy on these machines; the target is read from the
    median."""
    points = [latency(base, kind, messages, [rate], seconds, log, workers=workers, broker_pid=broker_pid,
                      history=history)[0] for _ in range(runs)]
    # a run that lost every input has no latencies: it counts as the slowest
    return {"offered": rate, "workers": workers, "runs": points,
            **{key: spread([math.inf if point[key] is None else point[key] for point in points], digits=1)
               for key in ("p50_ms", "p99_ms", "max_ms")}}


#: The span of offering each of a latency run's ``latency_windows`` covers.
LATENCY_WINDOW_S = 10.0


def latency_windows(sent: Sequence[float], latency_ms: Sequence[float | None],
                    window_s: float = LATENCY_WINDOW_S) -> list[dict[str, Any]]:
    """p50 / p99 / max of the inputs sent in each ``window_s`` of the offering, from the
    first send on, and how many of them had no output (``latency_ms`` None): whether
    the latency held over the run or climbed as a backlog grew, which the whole run's
    p99 does not tell apart. A last window shorter than half of ``window_s`` joins the
    one before."""
    if not sent:
        return []
    start = sent[0]
    count = max(1, int((sent[-1] - start) / window_s + 0.5))
    groups: list[list[float | None]] = [[] for _ in range(count)]
    for at, ms in zip(sent, latency_ms):
        groups[min(int((at - start) / window_s), count - 1)].append(ms)
    windows = []
    for index, group in enumerate(groups):
        answered = [ms for ms in group if ms is not None]
        window: dict[str, Any] = {"from_s": index * window_s, "sent": len(group), "lost": len(group) - len(answered)}
        if answered:
            window.update(percentiles(answered))
        windows.append(window)
    return windows


def percentiles(latency_ms: Sequence[float]) -> dict[str, float | None]:
    """p50 / p99 / max of latencies (ms), to 0.1 ms; None where there are none (every
    input lost)."""
    if not len(latency_ms):
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    values = np.asarray(latency_ms, dtype=np.float64)
    return {"p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1), "max_ms": round(float(values.max()), 1)}


def behind_schedule(sent: Sequence[float], rate: float) -> dict[str, float]:
    """How far behind its schedule (``rate`` from the first send on) the producer sent
    (p99 and most, ms): the latency of an input counts from when it was sent, so inputs
    held back while the producer waited for its broker or a core would go uncounted."""
    if not sent or rate <= 0:
        return {"p99_ms": 0.0, "max_ms": 0.0}
    behind = np.maximum(np.asarray(sent) - (sent[0] + np.arange(len(sent)) / rate), 0.0) * 1000.0
    return {"p99_ms": round(float(np.percentile(behind, 99)), 1), "max_ms": round(float(behind.max()), 1)}


def answered_between(readable: Iterable[float | None], start: float, end: float) -> int:
    """How many outputs became readable between ``start`` and ``end`` (epoch seconds)."""
    return sum(1 for at in readable if at is not None and start <= at <= end)


def model_ceiling(settings: Settings, batch: int, n_clicks: int, seconds: float = 3.0) -> dict[str, float]:
    """The models alone at the engine's batch size: the fraud models on transactions with
    full card histories, the next-item encoder and ranker on the histories the drained
    clicks have (batches taken in turn)."""
    sample = [tx for tx, _ in read_fraud_csv(FRAUD_CSV, batch)]
    rows = np.asarray(asyncio.run(TransactionFeatures(InMemoryStateStore()).compute(sample)), dtype=np.float32)
    scorer = FraudScorer(settings.models.fraud, threads=settings.models.threads)
    ranker = NextItemRanker(settings.models.recommend, threads=settings.models.threads, int8=settings.models.int8)
    histories = [ranker.indices(items) for items in click_histories(n_clicks)]
    user_batches = itertools.cycle([histories[i : i + batch] for i in range(0, len(histories) - batch + 1, batch)])

    def rank_step() -> None:
        users = next(user_batches)
        ranker.rank(ranker.encode(users), users, 10)

    def rate(step) -> float:  # type: ignore[no-untyped-def]
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            step()
            calls += 1
        return calls * batch / (time.perf_counter() - started)

    if scorer.sequence_length:  # the card encoder over full histories, then the scorer
        history = np.repeat(rows[:, None, :], scorer.sequence_length, axis=1)
        valid = np.ones(history.shape[:2], dtype=np.float32)

        def fraud_step() -> None:
            scorer.score(rows, scorer.encode(history, valid))
    else:
        def fraud_step() -> None:
            scorer.score(rows)

    return {
        "fraud_model_per_s": round(rate(fraud_step)),
        "ranker_per_s": round(rate(rank_step)),
    }


async def bare_loop(bootstrap: str, messages: list[Message]) -> float:
    """A group-less aiokafka consume → produce loop, no model, no state: records per second."""
    tag = uuid.uuid4().hex[:8]
    source, sink = f"bench-bare-in-{tag}", f"bench-bare-out-{tag}"
    await ensure_topics(bootstrap, [source, sink], 4)
    try:
        await produce(bootstrap, source, messages)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=1024 * 1024)
        await consumer.start()
        await producer.start()
        try:
            await consumer.seek_to_beginning(*await assign_topic(consumer, source))
            seen, started = 0, time.perf_counter()
            while seen < len(messages):
                for batch in (await consumer.getmany(timeout_ms=200, max_records=2000)).values():
                    await send_batched(producer, [(sink, None, r.key, r.value, (), None) for r in batch])
                    seen += len(batch)
            return seen / (time.perf_counter() - started)
        finally:
            await consumer.stop()
            await producer.stop()
    finally:
        await delete_topics(bootstrap, [source, sink])


def local_services(stack: contextlib.ExitStack) -> tuple[EmbeddedBroker, Settings]:
    """An embedded broker, and the Redis at ``STREAMER_REDIS_URL`` or an embedded Valkey;
    settings pointing at both, with topics of 4 partitions."""
    broker = stack.enter_context(EmbeddedBroker())
    base = Settings.from_env().replace(kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": 4})
    return broker, start_missing_services(base, stack)


def spread(values: list[float], digits: int | None = None) -> dict[str, float]:
    """The median, least and most of repeated measurements, rounded to ``digits`` (whole
    numbers by default), and how many there were."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "runs": len(values)}


@dataclasses.dataclass(frozen=True)
class SuitePlan:
    """How many events each measurement takes, and the rates the latency runs offer."""

    events: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"transactions": 30000, "clicks": 20000})
    """Each kind's drain backlog for one worker (``LONG_DRAIN`` times as many for the longer one)."""
    naive_events: int = 3000
    rates: Sequence[float] = (500, 1000, 2000, 3000, 4000, 8000)
    """One worker's offered rates, up to saturation."""
    two_worker_rates: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=lambda: {
        # from where one worker nears saturation up to the targets' rates (15,000
        # transactions/s and 8,000 clicks/s with p99 under 100 ms) and beyond
        "transactions": (4000, 8000, 12000, 15000), "clicks": (4000, 8000, 10000)})
    naive_rates: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=lambda: {
        # below the naive agent's drain rate (about 300 events/s) and beyond it
        "transactions": (25, 50, 100), "clicks": (100, 200, 400)})
    seconds: float = 8.0
    """How long each rate is offered."""
    targets: Mapping[str, tuple[float, int]] = dataclasses.field(default_factory=lambda: {
        "transactions": (15000, 2), "clicks": (8000, 1)})
    """Each kind's target rate and the workers it is offered to, offered again once per
    repeat (``target_latency``): the rate the issue asks to hold with p99 under 100 ms."""

    @classmethod
    def quick(cls) -> SuitePlan:
        """``--quick``: a smoke run of the suite."""
        return cls(events={"transactions": 5000, "clicks": 5000}, naive_events=1000, rates=(500, 2000),
                   two_worker_rates={"transactions": (2000,), "clicks": (2000,)},
                   naive_rates={"transactions": (50,), "clicks": (100,)}, seconds=4.0,
                   targets={"transactions": (2000, 2), "clicks": (2000, 1)})

    def feed(self, kind: str) -> int:
        """How many events of ``kind`` the suite reads: the longer drain's backlog, or the
        drain's and then the latency runs' feed (each series of rates, and each offering of
        the target's rate, reads it from the start)."""
        n = self.events[kind]
        series = (self.rates, self.two_worker_rates[kind], self.naive_rates[kind], self.targets[kind][:1])
        return max(LONG_DRAIN * n, n + max(events_offered(rates, self.seconds) for rates in series))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller backlogs, one repeat, fewer rates")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md and docs/latency.png")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    plan = SuitePlan.quick() if args.quick else SuitePlan()
    n_tx, n_clicks, n_naive = plan.events["transactions"], plan.events["clicks"], plan.naive_events
    rates, two_worker_rates, naive_rates, seconds = plan.rates, plan.two_worker_rates, plan.naive_rates, plan.seconds
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "worker.log"

    started_cpu = cpu_times()
    with contextlib.ExitStack() as stack:
        broker, base = local_services(stack)
        tx_messages, click_messages = transactions(plan.feed("transactions")), clicks(plan.feed("clicks"))
        batch = base.batch.max_size
        backlog = base.batch.largest
        results: dict[str, object] = {
            "machine": ", ".join(part for part in (f"{platform.node()} {platform.machine()}", cpu_model(),
                                                   f"{os.cpu_count()} cores") if part),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python -m bench.run", *(sys.argv[1:] if argv is None else argv)]),
            "batch_size": batch,
            "backlog_batch_size": backlog,
            "model_batch_size": backlog,  # a drain's batches are backlog batches: the models alone run at that size
            "drains_timed": DRAIN_TIMING,
            "worker_jobs": JOB_OF,  # each kind's workers run its job alone (for_kind)
            # where the workers ran their models, by how many ran at once
            "models_beside_the_loop": {str(n): models_beside_the_loop(for_workers(base, n)) for n in (1, 2)},
            "naive_models_beside_the_loop": models_beside_the_loop(fresh_settings(base, 1)),
        }
        print("ceilings ...", flush=True)
        results["model_alone"] = model_ceiling(base, backlog, n_clicks)
        results["bare_loop_per_s"] = spread([asyncio.run(bare_loop(broker.bootstrap_servers, tx_messages[:n_tx])) for _ in range(repeats)])
        results["faust_loop_per_s"] = drain_rates([drain(base, "transactions", tx_messages[:n_tx], batch, log,
                                                         module="bench.faust_loop") for _ in range(repeats)])
        print(f"  {results['model_alone']}, bare loop {results['bare_loop_per_s']}, Faust loop {results['faust_loop_per_s']}", flush=True)
        for kind, messages, n in (("transactions", tx_messages, n_tx), ("clicks", click_messages, n_clicks)):
            print(f"drain {kind} ...", flush=True)
            reports: list[str] = []
            results[f"{kind}_drain_per_s"] = drain_rates([drain(base, kind, messages[:n], batch, log, step_reports=reports)
                                                          for _ in range(repeats)])
            results[f"{kind}_drain_steps"] = parse_reports(reports, AGENTS[kind])
            results[f"{kind}_naive_per_s"] = drain_rates([drain(base, kind, messages[:n_naive], 1, log) for _ in range(repeats)])
            # a backlog of a few seconds' work: its rate is the steady one, less the pipeline's fill
            results[f"{kind}_long_drain_events"] = LONG_DRAIN * n
            results[f"{kind}_long_drain_per_s"] = drain_rates([drain(base, kind, messages[: LONG_DRAIN * n], batch, log)
                                                               for _ in range(repeats)])
            print(f"  engine {results[f'{kind}_drain_per_s']}, naive {results[f'{kind}_naive_per_s']}, "
                  f"long {results[f'{kind}_long_drain_per_s']}", flush=True)
            reports = []
            # as many events per worker as one worker drained
            results[f"{kind}_drain_two_workers_events"] = 2 * n
            results[f"{kind}_drain_two_workers_per_s"] = drain_rates([drain(base, kind, messages[: 2 * n], batch, log, workers=2,
                                                                            step_reports=reports) for _ in range(repeats)])
            results[f"{kind}_drain_two_workers_steps"] = parse_reports(reports, AGENTS[kind])
            print(f"  two workers {results[f'{kind}_drain_two_workers_per_s']}", flush=True)
            if kind == "transactions":
                print("drain transactions at steady state ...", flush=True)
                history, labels, drained = steady_transactions(n)
                reports = []
                results["transactions_steady_drain_per_s"] = drain_rates([
                    drain(base, kind, drained, batch, log, step_reports=reports, history=(history, labels))
                    for _ in range(repeats)])
                results["transactions_steady_drain_steps"] = parse_reports(reports, AGENTS[kind])
                print(f"  at steady state {results['transactions_steady_drain_per_s']}", flush=True)
            results[f"{kind}_latency"] = latency(base, kind, messages[n:], rates, seconds, log, broker_pid=broker.pid)
            # the same feed again, on fresh topics and state
            results[f"{kind}_latency_two_workers"] = latency(base, kind, messages[n:], two_worker_rates[kind], seconds, log,
                                                             workers=2, broker_pid=broker.pid)
            results[f"{kind}_naive_latency"] = latency(base, kind, messages[n:], naive_rates[kind], seconds, log,
                                                       broker_pid=broker.pid, batch=1)
            target_rate, target_workers = plan.targets[kind]
            results[f"{kind}_target_latency"] = target_latency(base, kind, messages[n:], target_rate, target_workers,
                                                               repeats, seconds, log, broker_pid=broker.pid)
            if kind == "transactions":
                # the same from day 40, on a month of state: what a deployment that has run
                # for a month reads and counts per transaction (the steady-state drain's)
                print("the target's rate at steady state ...", flush=True)
                history, labels, steady = steady_transactions(events_offered([target_rate], seconds))
                results["transactions_target_latency_steady"] = target_latency(
                    base, kind, steady, target_rate, target_workers, repeats, seconds, log, broker_pid=broker.pid,
                    history=(history, labels))
    results["cpu_stolen_share"] = stolen_share(started_cpu, cpu_times())
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if args.write_docs:
        from bench.report import write_docs

        write_docs(results, ROOT / "docs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
