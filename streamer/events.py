"""Event contracts: typed records for every topic, decoded and validated with orjson.

First step of the flow: raw Kafka bytes become a ``Transaction``, ``FraudLabel`` or
``Click``, or an ``InvalidEvent`` error that the caller turns into a dead letter.
Output records (scores, alerts, recommendations) are encoded here too, so the whole
wire format lives in one file. Events are immutable named tuples (``streamer.records``
says why not frozen dataclasses). Times are RFC 3339 strings on the wire and epoch
seconds (float, UTC) inside.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple, TypeVar

import orjson

from streamer.errors import InvalidEvent

#: The largest amount taken, far above any card payment: the features go to the models
#: as float32, where an amount past 3.4e38 is infinite, its score NaN (published as null),
#: and its card's later scores too while its row is among the card's latest.
MAX_AMOUNT = 1e15

EVENT_TYPES = frozenset({"view", "click", "add_to_cart", "purchase"})


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


def parse_time(text: str) -> float:
    """RFC 3339 (``2018-08-01T00:00:31Z``, offsets allowed) to epoch seconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidEvent("invalid_timestamp", f"{text!r} is not RFC 3339") from exc
    if moment.tzinfo is None:
        raise InvalidEvent("invalid_timestamp", f"{text!r} has no UTC offset")
    return moment.timestamp()


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
    if not value.isprintable():  # ids go into Redis keys and members, and into log lines
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


def decode_transaction(raw: bytes | None, max_bytes: int = 65536) -> Transaction:
    obj = _load_object(raw, max_bytes)
    timestamp = _text(obj, "timestamp")
    return Transaction(
        transaction_id=_text(obj, "transaction_id"),
        card_id=_text(obj, "card_id"),
        terminal_id=_text(obj, "terminal_id"),
        amount=_amount(obj, "amount"),
        ts=parse_time(timestamp),
        timestamp=timestamp,
    )


def decode_label(raw: bytes | None, max_bytes: int = 65536) -> FraudLabel:
    obj = _load_object(raw, max_bytes)
    return FraudLabel(
        transaction_id=_text(obj, "transaction_id"),
        card_id=_text(obj, "card_id"),
        terminal_id=_text(obj, "terminal_id"),
        ts=parse_time(_text(obj, "timestamp")),
        is_fraud=_flag(obj, "is_fraud"),
        labelled_ts=parse_time(_text(obj, "labelled_at")),
    )


def decode_click(raw: bytes | None, max_bytes: int = 65536) -> Click:
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
        ts=parse_time(timestamp),
        timestamp=timestamp,
        event_type=event_type,
    )


def decode_ranking_request(raw: bytes | None, max_bytes: int = 65536) -> RankingRequest:
    obj = _load_object(raw, max_bytes)
    timestamp = _text(obj, "timestamp")
    return RankingRequest(
        request_id=_text(obj, "request_id"), user_id=_text(obj, "user_id"), ts=parse_time(timestamp), timestamp=timestamp,
    )


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that failed decoding, with what the dead letter needs."""

    index: int
    error: InvalidEvent


def decode_all(
    raws: Sequence[bytes | None], decode: Callable[[bytes | None, int], T], max_bytes: int
) -> tuple[list[tuple[int, T]], list[Rejected]]:
    """Decode a batch; good events keep their position so order is never lost."""
    good: list[tuple[int, T]] = []
    bad: list[Rejected] = []
    for index, raw in enumerate(raws):
        try:
            good.append((index, decode(raw, max_bytes)))
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
