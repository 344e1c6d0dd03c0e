"""The capture file format and the importers (no broker needed)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from streamer.errors import ConfigurationError
from streamer.replay.capture_file import CapturedRecord, CaptureWriter, merged, read_capture, read_header
from streamer.replay.importers import import_fraud, import_sequences

CSV = """TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO
0,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0
1,2018-04-01 00:02:10,4961,3412,281.51,130,0,1,1
2,2018-04-02 00:00:00,4961,3412,10.00,86400,1,0,0
"""


def test_records_round_trip_byte_for_byte(tmp_path: Path) -> None:
    records = [
        CapturedRecord("t", 0, 0, 1, b"k", b"\x00\xffvalue", (("h", b"\x01"), ("empty", b""), ("none", None))),
        CapturedRecord("t", 1, 5, 2, None, None, ()),
    ]
    path = tmp_path / "c.jsonl.gz"
    with CaptureWriter(path, {"why": "test"}, 0.0) as writer:
        writer.write_all(records)
    assert list(read_capture(path)) == records
    assert read_header(path)["source"] == {"why": "test"}
    with gzip.open(path, "rb") as handle:  # a person can read it with zcat | jq
        assert orjson.loads(handle.readlines()[1])["value"] == "AP92YWx1ZQ=="


def test_a_capture_that_fails_midway_never_takes_its_path(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    with pytest.raises(RuntimeError), CaptureWriter(path, {"why": "test"}, 0.0) as writer:
        writer.write(CapturedRecord("t", 0, 0, 1, b"k", b"v"))
        raise RuntimeError("the broker went away")
    assert not path.exists()
    assert [r.value for r in read_capture(tmp_path / "c.jsonl.gz.partial")] == [b"v"]  # kept to look at


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b'{"format": "other"}\n')
    with pytest.raises(ConfigurationError):
        read_header(path)


def test_fraud_import_releases_labels_after_the_delay(tmp_path: Path) -> None:
    csv = tmp_path / "tx.csv"
    csv.write_text(CSV)
    out = tmp_path / "fraud.jsonl.gz"
    assert import_fraud(csv, out, delay_days=7) == 6
    records = list(merged([out]))
    topics = [r.topic for r in records]
    assert topics == ["transactions"] * 3 + ["fraud-labels"] * 3  # labels come a week later
    label = orjson.loads(records[4].value)
    assert label["is_fraud"] is True and label["labelled_at"] == "2018-04-08T00:02:10Z"
    assert records[4].timestamp - records[1].timestamp == 7 * 86400 * 1000
    assert records[1].key == b"4961"


def test_sequence_import_holds_out_and_keeps_order(tmp_path: Path) -> None:
    data = tmp_path / "seq.txt"
    data.write_text("1 10 11 12\n2 20 21\n")
    out = tmp_path / "clicks.jsonl.gz"
    assert import_sequences(data, out, hold_out=1, step_s=5) == 3
    clicks = [orjson.loads(r.value) for r in read_capture(out)]
    assert [(c["user_id"], c["item_id"]) for c in clicks] == [("1", "10"), ("1", "11"), ("2", "20")]
    stamps = [r.timestamp for r in read_capture(out)]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    assert import_sequences(data, out, hold_out=3) == 0  # none is left of users this short


def test_an_offset_out_of_range_restarts_at_the_first_record_kept_or_ends_the_partition() -> None:
    from streamer.replay.capture import restart_at

    assert restart_at(5, first=100, follow=False) == "first"  # records from 5 on were deleted up to 100
    assert restart_at(5, first=100, follow=True) == "first"
    assert restart_at(500, first=100, follow=False) is None  # past the end: nothing to capture
    assert restart_at(500, first=100, follow=True) == "end"  # past the end: wait there for offset 500
