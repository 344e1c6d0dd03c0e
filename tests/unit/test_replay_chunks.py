"""How a replay cuts the merged records into chunks: pure logic, no broker."""

from __future__ import annotations

from streamer.replay.capture_file import CapturedRecord
from streamer.replay.replay import chunks, lead_first


def record(topic: str, ts_ms: int, offset: int = 0) -> CapturedRecord:
    return CapturedRecord(topic, 0, offset, ts_ms, b"k", b"v")


def test_fast_chunks_are_cut_by_count_and_all_due_at_once() -> None:
    records = [record("transactions", i, i) for i in range(12)]
    cut = list(chunks(records, speed=0.0, chunk_records=5, pace_step_s=0.1))
    assert [len(c) for _, c in cut] == [5, 5, 2]
    assert {due for due, _ in cut} == {0.0}
    assert [r.offset for _, c in cut for r in c] == list(range(12))


def test_fast_chunks_cover_at_most_the_given_span_of_event_time() -> None:
    # a replay paced on the worker's progress needs chunks of bounded event time, however few records
    records = [record("transactions", ms, i) for i, ms in enumerate((0, 500, 1000, 1001, 2500, 2600))]
    cut = list(chunks(records, speed=0.0, chunk_records=100, pace_step_s=0.1, span=("transactions", 1.0)))
    assert [[r.timestamp for r in c] for _, c in cut] == [[0, 500, 1000], [1001], [2500, 2600]]
    # other topics are not cut by time: a chunk spans from its first transaction
    mixed = [record("clickstream", 0), record("clickstream", 5000), record("transactions", 6000),
             record("transactions", 6900), record("clickstream", 9000), record("transactions", 9500)]
    cut = list(chunks(mixed, speed=0.0, chunk_records=100, pace_step_s=0.1, span=("transactions", 1.0)))
    assert [[r.timestamp for r in c] for _, c in cut] == [[0, 5000, 6000, 6900, 9000], [9500]]


def test_paced_chunks_hold_the_records_due_within_one_step() -> None:
    # speed 10: record time advances 10 s per second; 0.1 s steps hold 1 s of record time
    records = [record("transactions", ms) for ms in (0, 400, 999, 1000, 1500, 5000)]
    cut = list(chunks(records, speed=10.0, chunk_records=100, pace_step_s=0.1))
    assert [[r.timestamp for r in c] for _, c in cut] == [[0, 400, 999], [1000, 1500], [5000]]
    assert [round(due, 3) for due, _ in cut] == [0.0, 0.1, 0.5]


def test_the_lead_topic_is_written_first_within_a_chunk_and_order_is_kept() -> None:
    chunk = [record("transactions", 1, 0), record("fraud-labels", 2, 0), record("transactions", 3, 1),
             record("fraud-labels", 4, 1)]
    first, rest = lead_first(chunk, {"fraud-labels"})
    assert [(r.topic, r.offset) for r in first] == [("fraud-labels", 0), ("fraud-labels", 1)]
    assert [(r.topic, r.offset) for r in rest] == [("transactions", 0), ("transactions", 1)]
    assert lead_first(chunk[:1], {"fraud-labels"}) == [chunk[:1]]
