"""The capture file format: gzip-compressed JSON Lines, versioned, readable with zcat and jq.

The first line is a header, every further line one Kafka record::

    {"format": "streamer-capture", "version": 1, "created": "2026-11-28T18:00:00Z",
     "source": {...free-form: bootstrap servers, bounds, importer...}}
    {"topic": "transactions", "partition": 0, "offset": 42, "timestamp": 1533081631000,
     "key": "NDk2MQ==", "value": "eyJ0cmFuc2FjdGlvbl9pZCI6...", "headers": [["trace", "YWJj"]]}

``key``, ``value`` and header values are base64 of the exact bytes (``null`` for a
missing key, value or header value), so a record round-trips byte for byte;
``timestamp`` is the record's Kafka timestamp in milliseconds. Records are stored in the
order they were read: offset order within each partition. A capture is written beside
its path (``<name>.partial``) and takes the path only once complete: a capture that
failed midway never reads as a whole one. ``merged`` reads several captures as one
stream in timestamp order, for a replay through a broker or without one.
"""

from __future__ import annotations

import base64
import gzip
import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from streamer.errors import ConfigurationError
from streamer.events import format_time

FORMAT = "streamer-capture"
VERSION = 1


@dataclass(frozen=True, slots=True)
class CapturedRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def record_to_json(record: CapturedRecord) -> dict[str, Any]:
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": _b64(record.key),
        "value": _b64(record.value),
        "headers": [[name, _b64(value)] for name, value in record.headers],
    }


def record_from_json(obj: dict[str, Any]) -> CapturedRecord:
    return CapturedRecord(
        topic=obj["topic"],
        partition=int(obj["partition"]),
        offset=int(obj["offset"]),
        timestamp=int(obj["timestamp"]),
        key=_unb64(obj["key"]),
        value=_unb64(obj["value"]),
        headers=tuple((name, _unb64(value)) for name, value in obj.get("headers", [])),
    )


class CaptureWriter:
    """Writes a capture; use as a context manager. The file takes ``path`` when the
    block ends without an error (``<name>.partial`` stays behind otherwise)."""

    def __init__(self, path: Path, source: dict[str, Any], created_ts: float) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.count = 0
        self._handle: IO[bytes] = gzip.open(self.partial, "wb", compresslevel=5)  # type: ignore[assignment]
        header = {"format": FORMAT, "version": VERSION, "created": format_time(created_ts), "source": source}
        self._handle.write(orjson.dumps(header) + b"\n")

    def write(self, record: CapturedRecord) -> None:
        self._handle.write(orjson.dumps(record_to_json(record)) + b"\n")
        self.count += 1

    def write_all(self, records: Iterable[CapturedRecord]) -> None:
        for record in records:
            self.write(record)

    def close(self) -> None:
        """The capture complete: it takes its path."""
        self._handle.close()
        self.partial.replace(self.path)

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self._handle.close()


def read_header(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rb") as handle:
        header: dict[str, Any] = orjson.loads(handle.readline())
    if header.get("format") != FORMAT:
        raise ConfigurationError(f"{path} is not a streamer capture")
    if header.get("version") != VERSION:
        raise ConfigurationError(f"{path}: capture version {header.get('version')} is not supported (want {VERSION})")
    return header


def read_capture(path: Path) -> Iterator[CapturedRecord]:
    read_header(path)
    with gzip.open(path, "rb") as handle:
        handle.readline()
        for line in handle:
            if line.strip():
                yield record_from_json(orjson.loads(line))


def merged(paths: Sequence[Path]) -> Iterator[CapturedRecord]:
    """All records of the captures in timestamp order, each source partition in its own order."""
    streams: dict[tuple[int, str, int], list[CapturedRecord]] = {}
    for n, path in enumerate(paths):
        for record in read_capture(path):
            streams.setdefault((n, record.topic, record.partition), []).append(record)
    return heapq.merge(*streams.values(), key=lambda r: r.timestamp)
