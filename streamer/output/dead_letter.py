"""Dead letters: an input that cannot be used, kept with why and where it came from.

Follows the Kafka Connect convention: the dead-letter record carries the original key
and the original value bytes unchanged (so it can be re-published once fixed), and
the reason and source coordinates travel in headers:

``dlq.reason`` (short tag such as ``not_json``), ``dlq.detail``, ``dlq.topic``,
``dlq.partition``, ``dlq.offset``, ``dlq.timestamp`` (the source record's, ms) and, only
when the record had to be cut to fit the broker, ``dlq.truncated`` = the value's original
size and ``dlq.key_truncated`` = the key's.
"""

from __future__ import annotations

from streamer.errors import InvalidEvent
from streamer.records import OutputRecord, SourceRecord

#: A dead letter's key and value together are cut to this size (the broker's default
#: limit is ~1 MB, headers and framing included): the key to ``MAX_KEY_BYTES`` first.
#: A record the broker refuses as too large is never acknowledged, and would hold its
#: partition's commits back for good.
MAX_DEAD_LETTER_BYTES = 900_000
MAX_KEY_BYTES = 10_000
MAX_DETAIL_BYTES = 1000


def dead_letter(source: SourceRecord, error: InvalidEvent, topic: str) -> OutputRecord:
    key, value = source.key, source.value or b""
    headers: list[tuple[str, bytes]] = [
        ("dlq.reason", error.reason.encode()),
        ("dlq.detail", utf8_prefix(error.detail, MAX_DETAIL_BYTES)),
        ("dlq.topic", source.topic.encode()),
        ("dlq.partition", str(source.partition).encode()),
        ("dlq.offset", str(source.offset).encode()),
        ("dlq.timestamp", str(source.timestamp_ms if source.timestamp_ms is not None else "").encode()),
    ]
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers.append(("dlq.key_truncated", str(len(key)).encode()))
        key = key[:MAX_KEY_BYTES]
    room = MAX_DEAD_LETTER_BYTES - len(key or b"")
    if len(value) > room:
        headers.append(("dlq.truncated", str(len(value)).encode()))
        value = value[:room]
    return OutputRecord(topic=topic, key=key, value=value, headers=tuple(headers))


def utf8_prefix(text: str, max_bytes: int) -> bytes:
    """``text`` in UTF-8, cut to at most ``max_bytes`` between two characters."""
    return text.encode()[:max_bytes].decode(errors="ignore").encode()
