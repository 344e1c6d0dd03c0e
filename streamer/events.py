"""Event contracts: typed records for every topic, decoded and validated with orjson.

First step of the flow: raw Kafka bytes become a ``Transaction``, ``FraudLabel`` or
``Click``, or an ``InvalidEvent`` error that the caller turns into a dead letter.
Output records (scores, alerts, recommendations) are encoded here too, so the whole
wire format lives in one file. Events are immutable named tuples (``streamer.records``
says why not frozen dataclasses). Times are RFC 3339 strings on the wire and epoch
seconds (float, UTC) inside.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

import orjson

from streamer.errors import InvalidEvent
from streamer.records import SourceRecord

#: The largest amount taken, far above any card payment: the features go to the models
#: as float32, where an amount past 3.4e38 is infinite, its score NaN (published as null),
#: and its card's later scores too while its row is among the card's latest.
MAX_AMOUNT = 1e15

EVENT_TYPES = frozenset({"view", "click", "add_to_cart", "purchase"})

#: Control characters (Unicode's Cc: C0, DEL, C1), refused in ids: one of them separates
#: a user's members in Redis, and line breaks would forge log lines. Other characters
#: Python does not call printable (a no-break space, an emoji's zero-width joiner) are ids'.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

#: Event times are taken from 1970 to 2200: outside, a time is a typo or a broken clock.
#: State is pruned below each card's, terminal's and user's newest event, so one event
#: far ahead would make all of theirs look old enough to drop (``not_after`` bounds the
#: time by its record's timestamp too).
EARLIEST_TS = 0.0
LATEST_TS = datetime(2200, 1, 1, tzinfo=timezone.utc).timestamp()


class Transaction(NamedTuple):
    transaction_id: str
    card_id: str
    terminal_id: str
    amount: float
    ts: float
    timestamp: str


class FraudLabel(NamedTuple):
    transaction_id: str
    card_id: str
    terminal_id: str
    ts: float
    is_fraud: bool
    labelled_ts: float


class Click(NamedTuple):
    event_id: str
    user_id: str
    item_id: str
    ts: float
    timestamp: str
    event_type: str | None


class RankingRequest(NamedTuple):
    """A ranking asked for without a click (e.g. a page view): ranked from the user's
    cached embedding, no encoder call."""

    request_id: str
    user_id: str
    ts: float
    timestamp: str


def parse_time(text: str, not_after: float = LATEST_TS) -> float:
    """RFC 3339 (``2018-08-01T00:00:31Z``, offsets allowed) to epoch seconds, at least
    ``EARLIEST_TS`` and at most ``not_after``."""
    try:
        ts = datetime.fromisoformat(text).timestamp()
    except ValueError as exc:  # a month 13, a day 31 in June
        raise InvalidEvent("invalid_timestamp", f"{text!r} is not RFC 3339") from exc
    if not is_rfc_3339(text):
        raise InvalidEvent("invalid_timestamp", f"{text!r} is not RFC 3339 with a UTC offset")
    if not EARLIEST_TS <= ts < LATEST_TS:
        raise InvalidEvent("invalid_timestamp", f"{text!r} is not between 1970 and 2200")
    if ts > not_after:
        raise InvalidEvent("invalid_timestamp", f"{text!r} is later than its record's timestamp allows "
                                                f"({format_time(not_after)})")
    return ts


def is_rfc_3339(text: str) -> bool:
    """Whether a time ``datetime.fromisoformat`` read is RFC 3339's date-time: date,
    ``T`` (or a space), time to the second, ``Z`` or a ``±hh:mm`` offset. Python also
    reads ISO 8601's week and ordinal dates, its basic format, times without seconds and
    offsets with seconds; the characters checked here tell those apart (about a third of
    what a regular expression costs)."""
    return (len(text) >= 20 and text[4] == text[7] == "-" and text[10] in "T " and text[13] == text[16] == ":"
            and (text[-1] == "Z" or (text[-3] == ":" and text[-6] in "+-")) and "," not in text)


def format_time(ts: float) -> str:
    """Epoch seconds to RFC 3339 UTC, with milliseconds only when there are some."""
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    if moment.microsecond:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _load_object(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    if raw is None:
        raise InvalidEvent("empty", "message has no value")
    if len(raw) > max_bytes:
        raise InvalidEvent("oversized", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", str(exc)) from exc
    if not isinstance(value, dict):
        raise InvalidEvent("not_object", f"expected a JSON object, got {type(value).__name__}")
    return value


def _text(obj: dict[str, Any], name: str) -> str:
    if name not in obj or obj[name] is None:
        raise InvalidEvent("missing_field", name)
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidEvent("invalid_value", f"{name} is empty")
    if not value.isprintable() and CONTROL.search(value):  # ids go into Redis keys and members, and log lines
        raise InvalidEvent("invalid_value", f"{name} holds control characters")
    return value


def _amount(obj: dict[str, Any], name: str) -> float:
    if name not in obj or obj[name] is None:
        raise InvalidEvent("missing_field", name)
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent("wrong_type", f"{name} must be a number, got {type(value).__name__}")
    if not 0 <= value <= MAX_AMOUNT:  # also NaN
        raise InvalidEvent("invalid_value", f"{name}={value} must be between 0 and {MAX_AMOUNT:g}")
    return float(value)


def _flag(obj: dict[str, Any], name: str) -> bool:
    if name not in obj or obj[name] is None:
        raise InvalidEvent("missing_field", name)
    value = obj[name]
    if not isinstance(value, bool):
        raise InvalidEvent("wrong_type", f"{name} must be a boolean, got {type(value).__name__}")
    return value


def decode_transaction(raw: bytes | None, max_bytes: int = 65536, not_after: float = LATEST_TS) -> Transaction:
    obj = _load_object(raw, max_bytes)
    timestamp = _text(obj, "timestamp")
    return Transaction(
        transaction_id=_text(obj, "transaction_id"),
        card_id=_text(obj, "card_id"),
        terminal_id=_text(obj, "terminal_id"),
        amount=_amount(obj, "amount"),
        ts=parse_time(timestamp, not_after),
        timestamp=timestamp,
    )


def decode_label(raw: bytes | None, max_bytes: int = 65536, not_after: float = LATEST_TS) -> FraudLabel:
    obj = _load_object(raw, max_bytes)
    return FraudLabel(
        transaction_id=_text(obj, "transaction_id"),
        card_id=_text(obj, "card_id"),
        terminal_id=_text(obj, "terminal_id"),
        ts=parse_time(_text(obj, "timestamp"), not_after),
        is_fraud=_flag(obj, "is_fraud"),
        labelled_ts=parse_time(_text(obj, "labelled_at"), not_after),
    )


def decode_click(raw: bytes | None, max_bytes: int = 65536, not_after: float = LATEST_TS) -> Click:
    obj = _load_object(raw, max_bytes)
    timestamp = _text(obj, "timestamp")
    event_type = obj.get("event_type")
    if event_type is not None:
        if not isinstance(event_type, str):
            raise InvalidEvent("wrong_type", "event_type must be a string")
        if event_type not in EVENT_TYPES:
            raise InvalidEvent("unknown_enum", f"event_type={event_type!r}")
    return Click(
        event_id=_text(obj, "event_id"),
        user_id=_text(obj, "user_id"),
        item_id=_text(obj, "item_id"),
        ts=parse_time(timestamp, not_after),
        timestamp=timestamp,
        event_type=event_type,
    )


def decode_ranking_request(raw: bytes | None, max_bytes: int = 65536, not_after: float = LATEST_TS) -> RankingRequest:
    obj = _load_object(raw, max_bytes)
    timestamp = _text(obj, "timestamp")
    return RankingRequest(
        request_id=_text(obj, "request_id"), user_id=_text(obj, "user_id"), ts=parse_time(timestamp, not_after),
        timestamp=timestamp,
    )


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that failed decoding, with what the dead letter needs."""

    index: int
    error: InvalidEvent


def decode_all(
    records: Sequence[SourceRecord], decode: Callable[[bytes | None, int, float], T], max_bytes: int,
    max_ahead_s: float = 0.0,
) -> tuple[list[tuple[int, T]], list[Rejected]]:
    """Decode a batch; good events keep their position so order is never lost. With
    ``max_ahead_s`` above 0, an event whose times pass its record's timestamp by more
    is rejected (a record without a timestamp is not checked)."""
    good: list[tuple[int, T]] = []
    bad: list[Rejected] = []
    for index, record in enumerate(records):
        stamp = record.timestamp_ms
        not_after = stamp / 1000.0 + max_ahead_s if stamp is not None and max_ahead_s > 0 else LATEST_TS
        try:
            good.append((index, decode(record.value, max_bytes, not_after)))
        except InvalidEvent as error:
            bad.append(Rejected(index, error))
    return good, bad


def encode(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def transaction_to_json(tx: Transaction) -> dict[str, Any]:
    return {
        "transaction_id": tx.transaction_id,
        "card_id": tx.card_id,
        "terminal_id": tx.terminal_id,
        "amount": tx.amount,
        "timestamp": tx.timestamp,
    }


def label_to_json(label: FraudLabel) -> dict[str, Any]:
    return {
        "transaction_id": label.transaction_id,
        "card_id": label.card_id,
        "terminal_id": label.terminal_id,
        "timestamp": format_time(label.ts),
        "is_fraud": label.is_fraud,
        "labelled_at": format_time(label.labelled_ts),
    }


def click_to_json(click: Click) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event_id": click.event_id,
        "user_id": click.user_id,
        "item_id": click.item_id,
        "timestamp": click.timestamp,
    }
    if click.event_type is not None:
        out["event_type"] = click.event_type
    return out
