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
