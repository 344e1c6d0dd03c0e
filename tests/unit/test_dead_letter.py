"""Dead letters keep the original bytes, why and where from, and always fit the broker."""

from __future__ import annotations

from streamer.errors import InvalidEvent
from streamer.output.dead_letter import MAX_DEAD_LETTER_BYTES, MAX_KEY_BYTES, dead_letter
from streamer.records import SourceRecord


def test_a_dead_letter_carries_the_original_key_value_reason_and_source() -> None:
    source = SourceRecord("transactions", 3, 41, b"card-7", b"not json", 1533081600000)
    letter = dead_letter(source, InvalidEvent("not_json", "unexpected character"), "dead-letter")
    assert (letter.topic, letter.key, letter.value) == ("dead-letter", b"card-7", b"not json")
    assert dict(letter.headers) == {"dlq.reason": b"not_json", "dlq.detail": b"unexpected character",
                                    "dlq.topic": b"transactions", "dlq.partition": b"3", "dlq.offset": b"41",
                                    "dlq.timestamp": b"1533081600000"}


def test_key_and_value_together_are_cut_to_fit_the_broker_and_say_how_large_they_were() -> None:
    key, value = b"k" * (MAX_KEY_BYTES + 5), b"v" * MAX_DEAD_LETTER_BYTES
    letter = dead_letter(SourceRecord("t", 0, 0, key, value), InvalidEvent("oversized", "too big"), "dlq")
    assert len(letter.key or b"") + len(letter.value) == MAX_DEAD_LETTER_BYTES
    assert letter.key == key[:MAX_KEY_BYTES] and value.startswith(letter.value)
    headers = dict(letter.headers)
    assert (headers["dlq.key_truncated"], headers["dlq.truncated"]) == (str(len(key)).encode(), str(len(value)).encode())
    small = dead_letter(SourceRecord("t", 0, 0, b"k", b"v"), InvalidEvent("not_json", "x"), "dlq")
    assert not {"dlq.key_truncated", "dlq.truncated"} & set(dict(small.headers))


def test_a_long_detail_is_cut_between_two_characters() -> None:
    letter = dead_letter(SourceRecord("t", 0, 0, None, b"x"), InvalidEvent("invalid_value", "a" + "é" * 800), "dlq")
    assert dict(letter.headers)["dlq.detail"].decode() == "a" + "é" * 499  # 999 bytes, not half an é


def test_the_original_headers_come_first_and_an_earlier_dead_letters_are_replaced() -> None:
    source = SourceRecord("t", 0, 5, b"k", b"x", None, (("traceparent", b"00-ab-01"), ("empty", None),
                                                        ("dlq.reason", b"not_json"), ("dlq.offset", b"1")))
    letter = dead_letter(source, InvalidEvent("missing_field", "amount"), "dlq")
    assert letter.headers[:2] == (("traceparent", b"00-ab-01"), ("empty", None))
    names = [name for name, _ in letter.headers]
    assert names.count("dlq.reason") == 1 and names.count("dlq.offset") == 1
    assert dict(letter.headers)["dlq.reason"] == b"missing_field" and dict(letter.headers)["dlq.offset"] == b"5"


def test_large_original_headers_count_against_the_size_and_very_large_ones_are_left_out() -> None:
    value = b"v" * MAX_DEAD_LETTER_BYTES
    kept = dead_letter(SourceRecord("t", 0, 0, b"k", value, None, (("h", b"x" * 50_000),)), InvalidEvent("oversized", "x"), "dlq")
    assert 1 + len(kept.value) + 1 + 50_000 == MAX_DEAD_LETTER_BYTES
    assert kept.headers[0] == ("h", b"x" * 50_000)
    many = tuple((f"h{i}", b"x" * 30_000) for i in range(4))  # over MAX_HEADER_BYTES together
    dropped = dead_letter(SourceRecord("t", 0, 0, b"k", b"v", None, many), InvalidEvent("not_json", "x"), "dlq")
    assert not [name for name, _ in dropped.headers if not name.startswith("dlq.")]
    assert dict(dropped.headers)["dlq.headers_dropped"] == b"4"
