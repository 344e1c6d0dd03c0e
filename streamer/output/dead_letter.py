"""Dead letters: an input that cannot be used, kept with why and where it came from.

Follows the Kafka Connect convention: the dead-letter record carries the original key,
the original value bytes and the original headers unchanged (so it can be re-published
once fixed), and the reason and source coordinates travel in headers added after them:

``dlq.reason`` (short tag such as ``not_json``), ``dlq.detail``, ``dlq.topic``,
``dlq.partition``, ``dlq.offset``, ``dlq.timestamp`` (the source record's, ms) and, only
when the record had to be cut to fit the broker, ``dlq.truncated`` = the value's original
size, ``dlq.key_truncated`` = the key's and ``dlq.headers_dropped`` = how many original
headers were left out. A source record's own ``dlq.*`` headers (a dead letter published
again) are replaced by the new ones.
"""

from __future__ import annotations

from streamer.errors import InvalidEvent
from streamer.records import OutputRecord, SourceRecord

#: A dead letter's key, value and carried headers together are cut to this size (the
#: broker's default limit is ~1 MB, headers and framing included): the key to
#: ``MAX_KEY_BYTES`` first. A record the broker refuses as too large is never
#: acknowledged, and would hold its partition's commits back for good.
MAX_DEAD_LETTER_BYTES = 900_000
MAX_KEY_BYTES = 10_000
MAX_HEADER_BYTES = 100_000
"""The original headers are carried when their names and values together fit this."""
MAX_DETAIL_BYTES = 1000


def dead_letter(source: SourceRecord, error: InvalidEvent, topic: str) -> OutputRecord:
    key, value = source.key, source.value or b""
    carried = [(name, header) for name, header in source.headers if not name.startswith("dlq.")]
    carried_bytes = sum(len(name.encode()) + len(header or b"") for name, header in carried)
    headers: list[tuple[str, bytes | None]] = [
        ("dlq.reason", error.reason.encode()),
        ("dlq.detail", utf8_prefix(error.detail, MAX_DETAIL_BYTES)),
        ("dlq.topic", source.topic.encode()),
        ("dlq.partition", str(source.partition).encode()),
        ("dlq.offset", str(source.offset).encode()),
        ("dlq.timestamp", str(source.timestamp_ms if source.timestamp_ms is not None else "").encode()),
    ]
    if carried_bytes > MAX_HEADER_BYTES:
        headers.append(("dlq.headers_dropped", str(len(carried)).encode()))
        carried, carried_bytes = [], 0
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers.append(("dlq.key_truncated", str(len(key)).encode()))
        key = key[:MAX_KEY_BYTES]
    room = MAX_DEAD_LETTER_BYTES - len(key or b"") - carried_bytes
    if len(value) > room:
        headers.append(("dlq.truncated", str(len(value)).encode()))
        value = value[:room]
    return OutputRecord(topic=topic, key=key, value=value, headers=(*carried, *headers))


def utf8_prefix(text: str, max_bytes: int) -> bytes:
    """``text`` in UTF-8, cut to at most ``max_bytes`` between two characters."""
    return text.encode()[:max_bytes].decode(errors="ignore").encode()
