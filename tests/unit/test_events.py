"""Decoding and validation of the event contracts."""

from __future__ import annotations

import orjson
import pytest

from streamer.errors import InvalidEvent
from streamer.events import decode_all, decode_click, decode_label, decode_transaction, format_time, parse_time
from streamer.records import SourceRecord

TX = {"transaction_id": "1", "card_id": "c1", "terminal_id": "t1", "amount": 12.5, "timestamp": "2018-08-01T00:00:31Z"}


def test_transaction_round_trip_and_extra_fields_ignored() -> None:
    tx = decode_transaction(orjson.dumps({**TX, "currency": "EUR"}))
    assert (tx.transaction_id, tx.card_id, tx.terminal_id, tx.amount) == ("1", "c1", "t1", 12.5)
    assert tx.ts == 1533081631.0
    assert format_time(tx.ts) == "2018-08-01T00:00:31Z"


def test_offsets_are_converted_to_utc() -> None:
    assert parse_time("2018-08-01T02:00:31+02:00") == parse_time("2018-08-01T00:00:31Z")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"nope", "not_json"),
        (b"[1]", "not_object"),
        (orjson.dumps({k: v for k, v in TX.items() if k != "card_id"}), "missing_field"),
        (orjson.dumps({**TX, "amount": "12"}), "wrong_type"),
        (orjson.dumps({**TX, "amount": True}), "wrong_type"),
        (orjson.dumps({**TX, "amount": -1}), "invalid_value"),
        (orjson.dumps({**TX, "amount": 1e39}), "invalid_value"),  # infinite as float32: a NaN score
        (orjson.dumps({**TX, "card_id": 7}), "wrong_type"),
        (orjson.dumps({**TX, "transaction_id": "12\n34"}), "invalid_value"),
        (orjson.dumps({**TX, "timestamp": "2018-08-01 00:00:31"}), "invalid_timestamp"),
        (orjson.dumps({**TX, "timestamp": "soon"}), "invalid_timestamp"),
        # ISO 8601 forms Python reads that RFC 3339 does not have
        (orjson.dumps({**TX, "timestamp": "20180801T000031Z"}), "invalid_timestamp"),
        (orjson.dumps({**TX, "timestamp": "2018-W31-3T00:00Z"}), "invalid_timestamp"),
        (orjson.dumps({**TX, "timestamp": "2018-08-01T00Z"}), "invalid_timestamp"),
        (orjson.dumps({**TX, "timestamp": "2018-08-01T00:00:31+00:00:30.5"}), "invalid_timestamp"),
        (orjson.dumps({**TX, "timestamp": "2018-06-31T00:00:00Z"}), "invalid_timestamp"),
        # times outside 1970-2200: one far ahead would have its card's history pruned
        (orjson.dumps({**TX, "timestamp": "9999-12-31T23:59:59-01:00"}), "invalid_timestamp"),
        (orjson.dumps({**TX, "timestamp": "2200-01-01T00:00:00Z"}), "invalid_timestamp"),
        (orjson.dumps({**TX, "timestamp": "1969-12-31T23:59:59Z"}), "invalid_timestamp"),
        (orjson.dumps({**TX, "pad": "x" * 70000}), "oversized"),
        (None, "empty"),
    ],
)
def test_bad_transactions_are_rejected_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_transaction(raw)
    assert caught.value.reason == reason


@pytest.mark.parametrize("card_id", ["Samsung\u00a0TV", "\U0001f468\u200d\U0001f469", "\ue000private", "caf\u00e9"])
def test_ids_may_hold_any_character_but_a_control_character(card_id: str) -> None:
    assert decode_transaction(orjson.dumps({**TX, "card_id": card_id})).card_id == card_id


@pytest.mark.parametrize("card_id", ["a\x1fb", "a\x7f", "a\x85b", "a\rb"])
def test_ids_with_control_characters_are_rejected(card_id: str) -> None:
    with pytest.raises(InvalidEvent, match="holds control characters"):
        decode_transaction(orjson.dumps({**TX, "card_id": card_id}))


def test_click_event_type_is_an_enum() -> None:
    click = {"event_id": "e", "user_id": "u", "item_id": "i", "timestamp": "2018-08-01T00:00:00Z"}
    assert decode_click(orjson.dumps(click)).event_type is None
    assert decode_click(orjson.dumps({**click, "event_type": "purchase"})).event_type == "purchase"
    with pytest.raises(InvalidEvent) as caught:
        decode_click(orjson.dumps({**click, "event_type": "hover"}))
    assert caught.value.reason == "unknown_enum"


def test_label_needs_a_boolean() -> None:
    label = {"transaction_id": "1", "card_id": "c", "terminal_id": "t", "timestamp": "2018-08-01T00:00:00Z",
             "is_fraud": True, "labelled_at": "2018-08-08T00:00:00Z"}
    assert decode_label(orjson.dumps(label)).labelled_ts - decode_label(orjson.dumps(label)).ts == 7 * 86400
    with pytest.raises(InvalidEvent):
        decode_label(orjson.dumps({**label, "is_fraud": 1}))


def test_decode_all_keeps_positions() -> None:
    raws = [orjson.dumps(TX), b"x", orjson.dumps(TX)]
    good, bad = decode_all([SourceRecord("t", 0, i, None, raw) for i, raw in enumerate(raws)], decode_transaction, 1000)
    assert [i for i, _ in good] == [0, 2]
    assert [(b.index, b.error.reason) for b in bad] == [(1, "not_json")]


def test_an_event_time_too_far_ahead_of_its_records_timestamp_is_rejected() -> None:
    """A transaction stamped 2081 by a broken clock, sent in 2018: its time would make
    every stored event of its card look decades old, and they would be pruned."""
    sent_ms = int(parse_time("2018-08-01T00:00:00Z") * 1000)
    label = orjson.dumps({"transaction_id": "1", "card_id": "c", "terminal_id": "t", "timestamp": "2018-08-01T00:00:00Z",
                          "is_fraud": True, "labelled_at": "2018-08-09T00:00:00Z"})
    records = [SourceRecord("t", 0, 0, None, orjson.dumps({**TX, "timestamp": "2081-08-01T12:00:00Z"}), sent_ms),
               SourceRecord("t", 0, 1, None, orjson.dumps({**TX, "timestamp": "2018-08-01T23:00:00Z"}), sent_ms),
               SourceRecord("t", 0, 2, None, orjson.dumps({**TX, "timestamp": "2018-08-02T01:00:00Z"}), sent_ms),
               SourceRecord("t", 0, 3, None, orjson.dumps({**TX, "timestamp": "2081-08-01T12:00:00Z"}), None)]
    good, bad = decode_all(records, decode_transaction, 1000, max_ahead_s=86400)
    assert [i for i, _ in good] == [1, 3]  # within a day ahead; no record timestamp: not checked
    assert [(b.index, b.error.reason) for b in bad] == [(0, "invalid_timestamp"), (2, "invalid_timestamp")]
    assert "later than its record's timestamp allows (2018-08-02T00:00:00Z)" in bad[0].error.detail
    assert [i for i, _ in decode_all(records, decode_transaction, 1000)[0]] == [0, 1, 2, 3]  # 0: not checked
    labelled_late = decode_all([SourceRecord("l", 0, 0, None, label, sent_ms)], decode_label, 1000, max_ahead_s=86400)
    assert [b.error.reason for b in labelled_late[1]] == ["invalid_timestamp"]  # labelled 8 days after it was sent
