"""How far each partition of a topic has been stored, in event time: ``EventClock``.

Used twice by fraud scoring.

**Labels.**
A transaction at time t must see every fraud label with ``labelled_at`` <= t. Labels
and transactions come on different topics, consumed at their own pace (and possibly by
other workers), so before a batch up to time T is scored, ``EventClock.wait_until(T)``
waits until every partition of the label topic has either stored a label at or past T
(labels arrive in ``labelled_at`` order within a partition) or stored everything the
broker holds for it. The label stage records its progress in Redis in the same round
trip as the labels; the broker's high watermarks come from fetch responses.

The fraud pipeline reads the progress in the round trip that reads the batch's state,
while the high watermarks are fetched (``fetch_ahead``); only a batch whose labels lag
waits, then reads its state again. The wait is bounded (``STREAMER_FRAUD_LABEL_WAIT_MS``): a stalled label feed delays
scoring by at most that much, then scoring goes on with the labels it has.

**Transactions of other partitions.** Terminal features count other cards'
transactions at least 7 days old (``DELAY_DAYS``), and those come on other partitions
of the same topic, consumed by the same agent or by other workers. They are complete
for a batch up to T when every transactions partition has stored up to T - 7 days or
everything the broker holds: the clock with a 7-day ``slack``. Waiting for that inside
the agent could block on the very partitions it is to consume, so the fraud pipeline
only checks, and marks the scores of a batch it cannot vouch for (``partial_state``).
Live traffic never lags by days; a long backlog fetched unevenly can.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from streamer.records import SourceRecord
from streamer.state.interface import Progress, StateStore, StreamProgress

log = logging.getLogger(__name__)


class HighWatermarks(Protocol):
    async def highwaters(self, topic: str, since_ms: float | None = None) -> dict[int, int]:
        """From fetch requests sent after ``since_ms`` (wall clock, ms; None: from now on)."""
        ...


def progress_of(records: Sequence[SourceRecord], times: Sequence[tuple[int, float]], topic: str) -> StreamProgress:
    """Next offset and latest event time per partition, from one batch of a topic;
    ``times`` holds (record index, event time) of the records that decoded."""
    partitions: Progress = {}
    for record in records:
        offset, ts = partitions.get(record.partition, (0, float("-inf")))
        partitions[record.partition] = (max(offset, record.offset + 1), ts)
    for index, event_ts in times:
        partition = records[index].partition
        offset, ts = partitions[partition]
        partitions[partition] = (offset, max(ts, event_ts))
    return StreamProgress(topic, partitions)


def received_by(records: Sequence[SourceRecord]) -> float | None:
    """When every one of ``records`` had reached the worker (the latest ``received_ms``);
    None when one's is not known."""
    times = [record.received_ms for record in records]
    return None if None in times else max(times)  # type: ignore[type-var]


class EventClock:
    def __init__(self, store: StateStore, topic: str, brokers: HighWatermarks, max_wait_ms: int = 0, poll_ms: float = 5.0,
                 slack_s: float = 0.0) -> None:
        self.store = store
        self.topic = topic
        self.slack_s = slack_s
        self.partitions: list[int] = []  # the topic's partitions, as last seen
        self.brokers = brokers
        self.max_wait_s = max_wait_ms / 1000.0
        self.poll_s = poll_ms / 1000.0
        self.asked_broker = True
        """Whether the last check needed the broker's high watermarks."""

    def fetch_ahead(self, since_ms: float | None = None) -> asyncio.Future[dict[int, int]] | None:
        """The broker's high watermarks, from fetch requests sent after ``since_ms`` (when
        the caller's events reached the worker, ``SourceRecord.received_ms``; None: from
        now on), fetched while the caller reads the progress (``lagging``): when the last
        check needed them, the next one likely does too, and waiting for them after the
        read would add a broker round trip to the batch. None when the last check did
        without."""
        return asyncio.ensure_future(self.brokers.highwaters(self.topic, since_ms)) if self.asked_broker else None

    async def lagging(self, ts: float, progress: Progress | None = None,
                      highwaters: asyncio.Future[dict[int, int]] | None = None) -> list[int]:
        """Partitions that may still hold an event at or before ``ts`` minus the slack,
        not yet stored. ``progress``: the topic's stored progress as the caller read it
        (else read here); ``highwaters``: from ``fetch_ahead``, asked for what the broker
        held once the events to check were in hand (it may answer before or after the
        progress was read: either way, whatever the broker held then is stored when the
        progress reaches its high watermark); the caller cancels it when done."""
        if progress is None:
            progress = await self.store.read_progress(self.topic)
        limit = ts - self.slack_s
        if self.partitions and all(progress.get(p, (0, float("-inf")))[1] >= limit for p in self.partitions):
            self.asked_broker = False
            return []  # every partition has stored that far: no need to ask the broker
        self.asked_broker = True
        highs = await highwaters if highwaters is not None else await self.brokers.highwaters(self.topic)
        self.partitions = sorted(highs)
        behind = []
        for partition, high in highs.items():
            offset, latest = progress.get(partition, (0, float("-inf")))
            if latest < limit and offset < high:
                behind.append(partition)
        return behind

    async def wait_until(self, ts: float) -> bool:
        """True once the partitions are complete up to ``ts``; False when the wait ran out."""
        deadline = time.monotonic() + self.max_wait_s
        while True:
            behind = await self.lagging(ts)
            if not behind:
                return True
            if time.monotonic() >= deadline:
                log.warning("partitions %s of %s lag behind event time %s; going on without them",
                            behind, self.topic, ts)
                return False
            await asyncio.sleep(self.poll_s)
