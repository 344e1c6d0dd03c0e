"""Dead letters: an input that cannot be used, kept with why and where it came from.

Follows the Kafka Connect convention: the dead-letter record carries the original key
and the original value bytes unchanged (so it can be re-published once fixed), and
the reason and source coordinates travel in headers:

``dlq.reason`` (short tag such as ``not_json``), ``dlq.detail``, ``dlq.topic``,
``dlq.partition``, ``dlq.offset``, ``dlq.timestamp`` (the source record's, ms) and,
only when the value had to be cut to fit the broker, ``dlq.truncated`` = original size.
"""

from __future__ import annotations

from streamer.errors import InvalidEvent
from streamer.records import OutputRecord, SourceRecord

#: Larger original values are cut to this size (the broker's default limit is ~1 MB).
MAX_DEAD_LETTER_BYTES = 900_000


def dead_letter(source: SourceRecord, error: InvalidEvent, topic: str) -> OutputRecord:
    value = source.value or b""
    headers: list[tuple[str, bytes]] = [
        ("dlq.reason", error.reason.encode()),
        ("dlq.detail", error.detail.encode()[:1000]),
        ("dlq.topic", source.topic.encode()),
        ("dlq.partition", str(source.partition).encode()),
        ("dlq.offset", str(source.offset).encode()),
        ("dlq.timestamp", str(source.timestamp_ms if source.timestamp_ms is not None else "").encode()),
    ]
    if len(value) > MAX_DEAD_LETTER_BYTES:
        headers.append(("dlq.truncated", str(len(value)).encode()))
        value = value[:MAX_DEAD_LETTER_BYTES]
    return OutputRecord(topic=topic, key=source.key, value=value, headers=tuple(headers))
