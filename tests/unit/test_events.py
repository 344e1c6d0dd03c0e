"""Decoding and validation of the event contracts."""

from __future__ import annotations

import orjson
import pytest

from streamer.errors import InvalidEvent
from streamer.events import decode_all, decode_click, decode_label, decode_transaction, format_time, parse_time

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
        (orjson.dumps({**TX, "pad": "x" * 70000}), "oversized"),
        (None, "empty"),
    ],
)
def test_bad_transactions_are_rejected_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_transaction(raw)
    assert caught.value.reason == reason


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
    good, bad = decode_all([orjson.dumps(TX), b"x", orjson.dumps(TX)], decode_transaction, 1000)
    assert [i for i, _ in good] == [0, 2]
    assert [(b.index, b.error.reason) for b in bad] == [(1, "not_json")]
