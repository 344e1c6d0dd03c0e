"""Importers: the benchmark data files as captures, ready for ``streamer replay``.

* ``import_fraud``: the handbook CSV → ``transactions`` (record time = transaction time)
  plus ``fraud-labels`` (record time = ``labelled_at`` = transaction time + delay, 7 days
  by default, the book's protocol), optionally only transactions within ``[start, end)``.
* ``import_sequences``: a ``user item item …`` file → ``clickstream``, one click per
  item in order, with synthetic increasing timestamps (``step_s`` apart, users one after
  another), optionally holding back each user's last ``hold_out`` items.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from streamer.datasets import label_for, read_fraud_csv, read_sequences
from streamer.events import Click, click_to_json, encode, format_time, label_to_json, transaction_to_json
from streamer.replay.capture_file import CapturedRecord, CaptureWriter
from streamer.settings import TopicSettings


def _fraud_records(
    csv: Path, topics: TopicSettings, delay_days: float, start_ts: float | None, end_ts: float | None, limit: int | None
) -> Iterator[CapturedRecord]:
    tx_offset = label_offset = 0
    labels: list[CapturedRecord] = []
    for tx, is_fraud in read_fraud_csv(csv):
        if start_ts is not None and tx.ts < start_ts:
            continue
        if (end_ts is not None and tx.ts >= end_ts) or (limit is not None and tx_offset >= limit):
            break
        key = tx.card_id.encode()
        yield CapturedRecord(topics.transactions, 0, tx_offset, int(tx.ts * 1000), key, encode(transaction_to_json(tx)))
        tx_offset += 1
        label = label_for(tx, is_fraud, delay_days)
        labels.append(CapturedRecord(
            topics.fraud_labels, 0, label_offset, int(label.labelled_ts * 1000), key, encode(label_to_json(label))))
        label_offset += 1
    yield from labels


def import_fraud(
    csv: Path, out: Path, *, topics: TopicSettings = TopicSettings(), delay_days: float = 7.0,
    start_ts: float | None = None, end_ts: float | None = None, limit: int | None = None,
) -> int:
    source = {"importer": "fraud", "file": csv.name, "label_delay_days": delay_days,
              "start": format_time(start_ts) if start_ts else None, "end": format_time(end_ts) if end_ts else None}
    with CaptureWriter(out, source, time.time()) as writer:
        writer.write_all(_fraud_records(csv, topics, delay_days, start_ts, end_ts, limit))
        return writer.count


def import_sequences(
    path: Path, out: Path, *, topics: TopicSettings = TopicSettings(), start_ts: float = 1533081600.0,
    step_s: float = 60.0, hold_out: int = 0, limit_users: int | None = None,
) -> int:
    source = {"importer": "sequences", "file": path.name, "start": format_time(start_ts), "step_s": step_s,
              "hold_out": hold_out}
    ts = start_ts
    with CaptureWriter(out, source, time.time()) as writer:
        for n, (user_id, items) in enumerate(read_sequences(path)):
            if limit_users is not None and n >= limit_users:
                break
            kept = items[: max(len(items) - hold_out, 0)]  # a user with no more than hold_out items: none
            for position, item_id in enumerate(kept):
                click = Click(f"{user_id}-{position}", user_id, item_id, ts, format_time(ts), "click")
                writer.write(CapturedRecord(
                    topics.clickstream, 0, writer.count, int(ts * 1000), user_id.encode(), encode(click_to_json(click))))
                ts += step_s
        return writer.count
