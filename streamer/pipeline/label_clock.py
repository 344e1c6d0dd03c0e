"""Event-time barrier between the label stream and transaction scoring.

A transaction at time t must see every fraud label with ``labelled_at`` <= t. Labels
and transactions come on different topics, consumed at their own pace (and possibly by
other workers), so before a batch up to time T is scored, ``LabelClock.wait_until(T)``
waits until every partition of the label topic has either stored a label at or past T
(labels arrive in ``labelled_at`` order within a partition) or stored everything the
broker holds for it. The label stage records its progress in Redis in the same round
trip as the labels; the broker's high watermarks come from fetch responses.

The wait is bounded (``STREAMER_FRAUD_LABEL_WAIT_MS``): a stalled label feed delays
scoring by at most that much, then scoring goes on with the labels it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from streamer.records import SourceRecord
from streamer.events import FraudLabel
from streamer.state.store import LabelProgress, StateStore

log = logging.getLogger(__name__)


class HighWatermarks(Protocol):
    async def highwaters(self, topic: str) -> dict[int, int]: ...


def progress_of(records: Sequence[SourceRecord], labels: Sequence[tuple[int, FraudLabel]], topic: str) -> LabelProgress:
    """Next offset and latest ``labelled_at`` per partition, from one batch of the label topic."""
    partitions: dict[int, tuple[int, float]] = {}
    for record in records:
        offset, ts = partitions.get(record.partition, (0, float("-inf")))
        partitions[record.partition] = (max(offset, record.offset + 1), ts)
    for index, label in labels:
        partition = records[index].partition
        offset, ts = partitions[partition]
        partitions[partition] = (offset, max(ts, label.labelled_ts))
    return LabelProgress(topic, partitions)


class LabelClock:
    def __init__(self, store: StateStore, topic: str, brokers: HighWatermarks, max_wait_ms: int, poll_ms: float = 5.0) -> None:
        self.store = store
        self.topic = topic
        self.brokers = brokers
        self.max_wait_s = max_wait_ms / 1000.0
        self.poll_s = poll_ms / 1000.0

    async def lagging(self, ts: float) -> list[int]:
        """Label partitions that may still hold a label released at or before ``ts``."""
        highwaters = await self.brokers.highwaters(self.topic)
        progress = await self.store.read_label_progress(self.topic)
        behind = []
        for partition, high in highwaters.items():
            offset, latest = progress.get(partition, (0, float("-inf")))
            if latest < ts and offset < high:
                behind.append(partition)
        return behind

    async def wait_until(self, ts: float) -> bool:
        """True once the labels are complete up to ``ts``; False when the wait ran out."""
        deadline = time.monotonic() + self.max_wait_s
        while True:
            behind = await self.lagging(ts)
            if not behind:
                return True
            if time.monotonic() >= deadline:
                log.warning("label partitions %s of %s lag behind event time %s; scoring without them",
                            behind, self.topic, ts)
                return False
            await asyncio.sleep(self.poll_s)
