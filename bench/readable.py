"""When output records became readable: the benchmarks' end of a latency and of a drain.

A record's own timestamp is the time its producer added it to a record batch (the
worker's sink stamps nothing, so aiokafka stamps it then): before the batch was sent,
written and acknowledged, when no consumer could read it yet. The embedded broker
keeps that timestamp (it ignores ``message.timestamp.type=LogAppendTime``), so the
benchmarks time an output by when the broker's answer to a fetch first showed it:
``ReadableTimes`` keeps a consumer fetching each partition of the output topic past its
end, which the embedded broker answers at once with no records and the partition's high
watermark (a Kafka broker answers ``OffsetOutOfRange``, and this refuses to start), and
notes when each watermark rose. An offset is taken as readable from the first answer
whose watermark lies beyond it: later than it was, never earlier. The embedded broker
answers with the watermark it had when the fetch came, after waiting
``fetch_max_wait_ms`` (5 ms) for data that never comes past the end, so the answer is up
to two waits late: ``python -m bench.readable`` sends single records, and in two runs
saw them 4.7-5.1 ms after their acknowledgement at the median and 8.6-10.5 ms at most
(20-ms waits: 11.5-13.5 and 23.2-24.5).
No record is parsed: the watch costs the broker an empty fetch every 5 ms, about 0.05 of
a core, and this process about as much.

The outputs are then read once the run is over (``read_outputs``), for where each went.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import random
import threading
import time
from typing import NamedTuple

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamer.embedded import EmbeddedBroker
from streamer.output.sink import send_batched
from streamer.worker.topics import assign_topic, delete_topics, ensure_topics

#: Where the watching consumer fetches from: past any partition's end.
PAST_THE_END = 1 << 62


class Output(NamedTuple):
    """Where an output record was written, and its own timestamp (epoch ms)."""

    partition: int
    offset: int
    timestamp_ms: int


class ReadableTimes:
    """A topic's partitions' high watermarks, and when each rise was first seen, while
    the block runs: ``at(partition, offset)`` is when that offset became readable
    (epoch seconds), or None if it did not while watched."""

    def __init__(self, bootstrap: str, topic: str, fetch_max_wait_ms: int = 5, start_timeout_s: float = 30.0) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.fetch_max_wait_ms, self.start_timeout_s = fetch_max_wait_ms, start_timeout_s
        self._times: dict[int, list[float]] = {}
        self._marks: dict[int, list[int]] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), name=f"readable-{topic}", daemon=True)

    def __enter__(self) -> ReadableTimes:
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s) or self._failed is not None:
            self._stop.set()
            raise RuntimeError(f"no high watermark of {self.topic} from a fetch past its end: the embedded broker "
                               "answers one, a Kafka broker does not") from self._failed
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, partition: int, offset: int) -> float | None:
        marks = self._marks.get(partition, [])
        index = bisect.bisect_right(marks, offset)  # the first watermark beyond the offset
        return self._times[partition][index] if index < len(marks) else None

    async def _watch(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=self.fetch_max_wait_ms, auto_offset_reset="none")
        try:
            await consumer.start()
            partitions = await assign_topic(consumer, self.topic)
            for tp in partitions:
                consumer.seek(tp, PAST_THE_END)
                self._times[tp.partition], self._marks[tp.partition] = [], []
            while not self._stop.is_set():
                self._note(consumer, partitions)
                if not self._ready.is_set() and all(consumer.highwater(tp) is not None for tp in partitions):
                    self._ready.set()
                await asyncio.sleep(self.fetch_max_wait_ms / 1000.0)  # they change at most once a fetch
            await self._answers_after_the_stop(consumer, partitions[0])
            self._note(consumer, partitions)
        except BaseException as error:  # reported by __enter__, or the run's lost outputs
            self._failed = error
            self._ready.set()
        finally:
            await consumer.stop()

    async def _answers_after_the_stop(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                                      timeout_s: float = 5.0) -> None:
        """Until two more fetch answers came: the consumer has one fetch in flight at a
        time, so the second was asked after the stop, and its watermarks cover whatever
        was written before it (what the run read before it ended the watch)."""
        deadline = time.monotonic() + timeout_s
        for _ in range(2):
            last = consumer.last_poll_timestamp(tp)
            while consumer.last_poll_timestamp(tp) == last and time.monotonic() < deadline:
                await asyncio.sleep(0.001)

    def _note(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            mark, marks = consumer.highwater(tp), self._marks[tp.partition]
            if mark is not None and mark > (marks[-1] if marks else 0):
                # the time of the last fetch answer, not of this look: the one that
                # carried the rise, or one a fetch later at most
                seen = consumer.last_poll_timestamp(tp)
                marks.append(mark)
                self._times[tp.partition].append(seen / 1000.0 if seen else time.time())


async def read_outputs(bootstrap: str, topic: str, expected: int, id_field: str, timeout_s: float) -> dict[str, Output]:
    """Each input's first output (by the ``id_field`` naming it), once ``expected`` ids
    arrived or ``timeout_s`` passed, read from the beginning of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
    await consumer.start()
    try:
        await consumer.seek_to_beginning(*await assign_topic(consumer, topic))
        outputs: dict[str, Output] = {}
        deadline = time.monotonic() + timeout_s
        while len(outputs) < expected and time.monotonic() < deadline:
            for tp, batch in (await consumer.getmany(timeout_ms=500, max_records=20000)).items():
                for r in batch:
                    outputs.setdefault(orjson.loads(r.value)[id_field], Output(tp.partition, r.offset, r.timestamp))
        return outputs
    finally:
        await consumer.stop()



async def _acknowledged_sends(bootstrap: str, topic: str, count: int) -> list[float]:
    """``count`` single records, 10-30 ms apart, each sent once the one before was
    acknowledged; returns when each was acknowledged (epoch seconds)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        acknowledged = []
        for i in range(count):
            await asyncio.sleep(random.uniform(0.01, 0.03))
            await send_batched(producer, [(topic, 0, None, b'{"id": "%d"}' % i, (), None)])
            acknowledged.append(time.time())
        return acknowledged
    finally:
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    """How late ``ReadableTimes`` sees records on the embedded broker: from each
    record's acknowledgement to when the watch took it as readable, per fetch wait."""
    parser = argparse.ArgumentParser(prog="python -m bench.readable", description=main.__doc__)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--waits-ms", type=int, nargs="+", default=[5, 20])
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap_servers
        for wait in args.waits_ms:
            topic = f"readable-lag-{wait}"
            asyncio.run(ensure_topics(bootstrap, [topic], 1))
            try:
                with ReadableTimes(bootstrap, topic, fetch_max_wait_ms=wait) as watched:
                    acknowledged = asyncio.run(_acknowledged_sends(bootstrap, topic, args.records))
                    outputs = asyncio.run(read_outputs(bootstrap, topic, args.records, "id", timeout_s=30))
            finally:
                asyncio.run(delete_topics(bootstrap, [topic]))
            late = np.array([1000 * ((watched.at(o.partition, o.offset) or np.nan) - acknowledged[int(name)])
                             for name, o in outputs.items()])
            print(f"fetch wait {wait} ms: seen readable {np.nanpercentile(late, 50):.1f} ms after the acknowledgement "
                  f"at the median, {np.nanmax(late):.1f} at most, {np.nanmin(late):.1f} at least "
                  f"({np.isnan(late).sum()} of {len(late)} never)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
