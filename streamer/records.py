"""Kafka records as the pipelines see them: what came in, and what goes out.

Plain data, free of any Kafka client, so pipelines run the same from a Faust agent,
a capture file or a unit test. Immutable named tuples, like the events
(``streamer.events``): every input makes a record, an event and an output, and a frozen
dataclass took about 1 µs more to build (it sets its fields one by one).
"""

from __future__ import annotations

from typing import NamedTuple

Headers = tuple[tuple[str, bytes | None], ...]
"""A record's headers: name, value (Kafka allows a header without a value: None)."""

# Published scores carry this many decimals. A float32 result depends slightly on how
# the events were batched, so the same event scored in two differently composed batches
# may differ by one step in the last decimal: compare scores within SCORE_TOLERANCE.
SCORE_DECIMALS = 6
SCORE_TOLERANCE = 2 * 10.0**-SCORE_DECIMALS


def published_score(score: float) -> float:
    return round(score, SCORE_DECIMALS)


class SourceRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: Headers = ()
    received_ms: float | None = None
    """When this worker's consumer handed the record over (wall clock, ms since the
    epoch): it was on the broker by then. None where no live consumer read it (a capture
    file, a test)."""


class OutputRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = ()
