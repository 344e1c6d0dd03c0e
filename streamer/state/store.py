"""The state store interface, and its Redis implementation.

A pipeline reads the state of a whole micro-batch in one call and writes it back in
one call; the Redis store turns each call into one pipelined round trip
(``transaction=False``) with one command per card, terminal or user where it can (small
Lua scripts do a key's reads, or its add + prune + TTL, at once: the client's cost is
per command). Every write is idempotent and keyed by event id with the
event time as score, so replaying an event after a crash changes nothing, and pruning
follows event time. TTLs only collect keys that went idle (wall-clock housekeeping).

``streamer.state.memory.InMemoryStateStore`` is the twin used by unit tests, the
offline replay and training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import redis.asyncio as aioredis

from streamer.errors import DependencyError
from streamer.events import Click, FraudLabel, Transaction
from streamer.features.fraud import CARD_HORIZON, DAY, TERMINAL_HORIZON, CardHistory, TerminalHistory
from streamer.state import keys

#: Entries older than the feature horizon plus this grace are pruned, so that an event
#: re-processed after a crash (at most this much older than the newest) still sees them.
PRUNE_GRACE = 7 * DAY
#: Events kept per user sequence (the model reads the most recent ``max_len``).
SEQUENCE_CAP = 200
#: Items remembered as seen per user (never recommended again): the most recently first
#: touched ones. Bounds a user's state in Redis and the ranker's exclusion mask.
SEEN_CAP = 1000
#: Feature rows kept per card (the fraud sequence model reads the most recent 16).
CARD_ROWS_CAP = 64
#: Floats in a stored feature row.
ROW_WIDTH = 16

TimeRange = tuple[float, float]
"""``(lo, hi)``: entries with lo < event time <= hi."""


@dataclass(frozen=True)
class StreamProgress:
    """How far the label stream has been stored: per partition, the next offset and the
    latest ``labelled_at`` (event time) seen. Written in the same round trip as the labels."""

    topic: str
    partitions: dict[int, tuple[int, float]]


@dataclass(frozen=True)
class CachedEmbedding:
    vector: np.ndarray
    ts: float
    event_id: str
    model: str


@dataclass
class UserState:
    sequence: list[tuple[float, str, str]] = field(default_factory=list)
    """``(ts, event_id, item_id)``, sorted: the user's most recent events."""
    seen: dict[str, float] = field(default_factory=dict)
    """item id -> first time the user touched it."""
    embedding: CachedEmbedding | None = None


@dataclass
class CardState:
    """What a batch reads of a card: its transactions in the feature window and, for the
    sequence model, its latest feature rows and cached embedding."""

    history: CardHistory = field(default_factory=CardHistory)
    rows: list[tuple[float, str, np.ndarray]] = field(default_factory=list)
    """``(ts, transaction_id, row)``, sorted, one per transaction: the card's latest rows."""
    embedding: CachedEmbedding | None = None
    """The embedding of the rows up to and including ``(embedding.ts, embedding.event_id)``."""


def pack_row(transaction_id: str, row: Sequence[float]) -> bytes:
    return np.asarray(row, dtype=np.float32).tobytes() + transaction_id.encode()


def unpack_row(member: bytes) -> tuple[str, np.ndarray]:
    size = 4 * ROW_WIDTH
    return member[size:].decode(), np.frombuffer(member[:size], dtype=np.float32)


def decode_embedding(cached: Mapping[bytes, bytes]) -> CachedEmbedding | None:
    if not cached:
        return None
    return CachedEmbedding(
        vector=np.frombuffer(cached[b"vector"], dtype=np.float32),
        ts=float(cached[b"ts"]),
        event_id=cached[b"event_id"].decode(),
        model=cached[b"model"].decode(),
    )


@dataclass(frozen=True)
class UserUpdate:
    user_id: str
    clicks: Sequence[Click]
    embedding: CachedEmbedding | None


class StateStore(Protocol):
    async def read_fraud(
        self, cards: Mapping[str, TimeRange], terminals: Mapping[str, TimeRange], sequence_rows: int = 0
    ) -> tuple[dict[str, CardState], dict[str, TerminalHistory]]:
        """Card transactions and terminal transactions and frauds in the given ranges; with
        ``sequence_rows``, also that many of each card's latest rows up to the range's
        end (a few more than the model reads, for the batch's own) and its embedding."""
        ...

    async def write_fraud(
        self, transactions: Sequence[Transaction], rows: Sequence[Sequence[float]] | None = None,
        progress: StreamProgress | None = None,
    ) -> None:
        """Store transactions (and their feature rows, for the sequence model) and the
        consuming partitions' progress."""
        ...

    async def write_card_embeddings(self, embeddings: Mapping[str, CachedEmbedding]) -> None: ...

    async def write_labels(self, labels: Sequence[FraudLabel], progress: StreamProgress | None = None) -> None: ...

    async def read_progress(self, topic: str) -> dict[int, tuple[int, float]]: ...

    async def read_users(self, user_ids: Sequence[str]) -> dict[str, UserState]: ...

    async def write_users(self, updates: Sequence[UserUpdate]) -> None: ...

    async def close(self) -> None: ...


# Only overwrite a cached embedding with one of a later (ts, event_id).
_SET_EMBEDDING_IF_NEWER = """
local ts = redis.call('HGET', KEYS[1], 'ts')
local eid = redis.call('HGET', KEYS[1], 'event_id')
local new_ts = tonumber(ARGV[2])
if ts == false or tonumber(ts) < new_ts or (tonumber(ts) == new_ts and eid <= ARGV[3]) then
  redis.call('HSET', KEYS[1], 'vector', ARGV[1], 'ts', ARGV[2], 'event_id', ARGV[3], 'model', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


# A card's reads in one call: transactions in (lo, hi]; with n > 0, also its latest n
# rows up to hi (newest first) and its cached embedding.
_READ_CARD = """
local out = {redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')}
local n = tonumber(ARGV[3])
if n > 0 then
  out[2] = redis.call('ZREVRANGEBYSCORE', KEYS[2], ARGV[2], '-inf', 'WITHSCORES', 'LIMIT', 0, n)
  out[3] = redis.call('HGETALL', KEYS[3])
end
return out
"""

# A terminal's transactions and frauds in (lo, hi].
_READ_TERMINAL = """
return {redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES'),
        redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], ARGV[2], 'WITHSCORES')}
"""

# Add (score, member) pairs to a sorted set, prune it below a score (exclusive bound, or
# '' for none) and beyond the newest keep entries (0: no cap), refresh its TTL.
_ADD = """
for i = 4, #ARGV, 2 do redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[1] ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
local keep = tonumber(ARGV[2])
if keep > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(keep + 1)) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def _pairs(flat: Sequence[bytes]) -> list[tuple[bytes, float]]:
    """A Lua ``WITHSCORES`` reply (member, score, member, score, …) as pairs."""
    return [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]


def _unique_rows(rows: list[tuple[float, str, np.ndarray]]) -> list[tuple[float, str, np.ndarray]]:
    """One row per transaction (a re-processed one may have been stored twice), sorted."""
    seen: set[str] = set()
    unique = []
    for entry in rows:
        if entry[1] not in seen:
            seen.add(entry[1])
            unique.append(entry)
    return unique


def _split(member: bytes) -> tuple[str, str]:
    head, _, tail = member.decode().rpartition("|")
    return head, tail


def _strings(flat: Sequence[bytes]) -> list[str]:
    """A reply's byte strings decoded at once (members and scores never hold a newline)."""
    return b"\n".join(flat).decode().split("\n") if flat else []


def _id_entries(flat: Sequence[bytes]) -> list[tuple[float, str]]:
    """A ``WITHSCORES`` reply of ``id`` members as ``(score, id)``."""
    strings = _strings(flat)
    return [(float(score), member) for member, score in zip(strings[::2], strings[1::2])]


def _numbered_entries(flat: Sequence[bytes]) -> list[tuple[float, str, float]]:
    """A ``WITHSCORES`` reply of ``id|number`` members (a card's amount, a fraud's
    ``labelled_at``) as ``(score, id, number)``."""
    strings = _strings(flat)
    out = []
    for member, score in zip(strings[::2], strings[1::2]):
        head, _, tail = member.rpartition("|")
        out.append((float(score), head, float(tail)))
    return out


class RedisStateStore:
    """State in Redis; each public call is one pipelined round trip."""

    def __init__(self, url: str, namespace: str = "streamer", ttl_days: float = 45.0) -> None:
        self.client = aioredis.Redis.from_url(url, decode_responses=False)
        self.ns = namespace
        self.ttl = int(ttl_days * DAY)
        self._set_embedding = self.client.register_script(_SET_EMBEDDING_IF_NEWER)
        self._read_card = self.client.register_script(_READ_CARD)
        self._read_terminal = self.client.register_script(_READ_TERMINAL)
        self._add = self.client.register_script(_ADD)

    async def _execute(self, pipe: aioredis.client.Pipeline) -> list[object]:
        try:
            return list(await pipe.execute())
        except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
            raise DependencyError(f"redis: {exc}") from exc

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            return False

    async def read_fraud(
        self, cards: Mapping[str, TimeRange], terminals: Mapping[str, TimeRange], sequence_rows: int = 0
    ) -> tuple[dict[str, CardState], dict[str, TerminalHistory]]:
        pipe = self.client.pipeline(transaction=False)
        for card_id, (lo, hi) in cards.items():
            await self._read_card(
                keys=[keys.card_transactions(self.ns, card_id), keys.card_rows(self.ns, card_id),
                      keys.card_embedding(self.ns, card_id)],
                args=[f"({lo!r}", repr(hi), sequence_rows], client=pipe,
            )
        for terminal_id, (lo, hi) in terminals.items():
            await self._read_terminal(
                keys=[keys.terminal_transactions(self.ns, terminal_id), keys.terminal_frauds(self.ns, terminal_id)],
                args=[f"({lo!r}", repr(hi)], client=pipe,
            )
        replies = iter(await self._execute(pipe))
        card_state: dict[str, CardState] = {}
        for card_id in cards:
            reply: list = next(replies)  # type: ignore[assignment]
            state = card_state[card_id] = CardState()
            state.history = CardHistory.of(_numbered_entries(reply[0]))
            if len(reply) > 1:
                state.rows = _unique_rows(sorted(((ts, *unpack_row(m)) for m, ts in _pairs(reply[1])), key=lambda e: (e[0], e[1])))
                embedding = dict(zip(reply[2][::2], reply[2][1::2]))
                state.embedding = decode_embedding(embedding)
        terminal_state: dict[str, TerminalHistory] = {}
        for terminal_id in terminals:
            tx_reply, fraud_reply = next(replies)  # type: ignore[misc]
            terminal_state[terminal_id] = TerminalHistory.of(_id_entries(tx_reply), _numbered_entries(fraud_reply))
        return card_state, terminal_state

    async def write_fraud(
        self, transactions: Sequence[Transaction], rows: Sequence[Sequence[float]] | None = None,
        progress: StreamProgress | None = None,
    ) -> None:
        if not transactions and progress is None:
            return
        by_card: dict[str, list[tuple[Transaction, Sequence[float] | None]]] = {}
        by_terminal: dict[str, list[Transaction]] = {}
        for i, tx in enumerate(transactions):
            by_card.setdefault(tx.card_id, []).append((tx, rows[i] if rows is not None else None))
            by_terminal.setdefault(tx.terminal_id, []).append(tx)
        pipe = self.client.pipeline(transaction=False)
        if progress is not None:
            self._write_progress(pipe, progress)
        for card_id, entries in by_card.items():
            newest = max(tx.ts for tx, _ in entries)
            members = [x for tx, _ in entries for x in (repr(tx.ts), f"{tx.transaction_id}|{tx.amount!r}")]
            await self._add(keys=[keys.card_transactions(self.ns, card_id)],
                            args=[f"({newest - CARD_HORIZON - PRUNE_GRACE!r}", 0, self.ttl, *members], client=pipe)
            if rows is not None:
                packed = [x for tx, row in entries for x in (repr(tx.ts), pack_row(tx.transaction_id, row))]  # type: ignore[arg-type]
                await self._add(keys=[keys.card_rows(self.ns, card_id)], args=["", CARD_ROWS_CAP, self.ttl, *packed], client=pipe)
        for terminal_id, terminal_txs in by_terminal.items():
            newest = max(tx.ts for tx in terminal_txs)
            members = [x for tx in terminal_txs for x in (repr(tx.ts), tx.transaction_id)]
            await self._add(keys=[keys.terminal_transactions(self.ns, terminal_id)],
                            args=[f"({newest - TERMINAL_HORIZON - PRUNE_GRACE!r}", 0, self.ttl, *members], client=pipe)
        await self._execute(pipe)

    async def write_card_embeddings(self, embeddings: Mapping[str, CachedEmbedding]) -> None:
        if not embeddings:
            return
        pipe = self.client.pipeline(transaction=False)
        for card_id, emb in embeddings.items():
            await self._set_embedding(
                keys=[keys.card_embedding(self.ns, card_id)],
                args=[emb.vector.astype(np.float32).tobytes(), repr(emb.ts), emb.event_id, emb.model, self.ttl],
                client=pipe,
            )
        await self._execute(pipe)

    async def write_labels(self, labels: Sequence[FraudLabel], progress: StreamProgress | None = None) -> None:
        frauds = [label for label in labels if label.is_fraud]
        if not frauds and progress is None:
            return
        pipe = self.client.pipeline(transaction=False)
        if progress is not None:
            self._write_progress(pipe, progress)
        by_terminal: dict[str, list[FraudLabel]] = {}
        for label in frauds:
            by_terminal.setdefault(label.terminal_id, []).append(label)
        for terminal_id, terminal_frauds in by_terminal.items():
            newest = max(label.ts for label in terminal_frauds)
            members = [x for label in terminal_frauds for x in (repr(label.ts), f"{label.transaction_id}|{label.labelled_ts!r}")]
            await self._add(keys=[keys.terminal_frauds(self.ns, terminal_id)],
                            args=[f"({newest - TERMINAL_HORIZON - PRUNE_GRACE!r}", 0, self.ttl, *members], client=pipe)
        await self._execute(pipe)

    def _write_progress(self, pipe: aioredis.client.Pipeline, progress: StreamProgress) -> None:
        mapping = {str(p): f"{offset}|{ts!r}" for p, (offset, ts) in progress.partitions.items()}
        pipe.hset(keys.stream_progress(self.ns, progress.topic), mapping=mapping)  # type: ignore[arg-type]

    async def read_progress(self, topic: str) -> dict[int, tuple[int, float]]:
        try:
            raw = await self.client.hgetall(keys.stream_progress(self.ns, topic))
        except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
            raise DependencyError(f"redis: {exc}") from exc
        progress = {}
        for partition, value in raw.items():
            offset, ts = (value.decode() if isinstance(value, bytes) else value).split("|")
            progress[int(partition)] = (int(offset), float(ts))
        return progress

    async def read_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        pipe = self.client.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.zrange(keys.user_sequence(self.ns, user_id), 0, -1, withscores=True)
            pipe.zrange(keys.user_seen(self.ns, user_id), 0, -1, withscores=True)
            pipe.hgetall(keys.user_embedding(self.ns, user_id))
        replies = iter(await self._execute(pipe))
        states: dict[str, UserState] = {}
        for user_id in user_ids:
            sequence = sorted((ts, *_split(member)) for member, ts in next(replies))  # type: ignore[attr-defined]
            seen = {member.decode(): ts for member, ts in next(replies)}  # type: ignore[attr-defined]
            embedding = decode_embedding(next(replies))  # type: ignore[arg-type]
            states[user_id] = UserState(sequence, seen, embedding)
        return states

    async def write_users(self, updates: Sequence[UserUpdate]) -> None:
        if not updates:
            return
        pipe = self.client.pipeline(transaction=False)
        for update in updates:
            seq_key = keys.user_sequence(self.ns, update.user_id)
            seen_key = keys.user_seen(self.ns, update.user_id)
            pipe.zadd(seq_key, {f"{c.event_id}|{c.item_id}": c.ts for c in update.clicks})
            pipe.zremrangebyrank(seq_key, 0, -(SEQUENCE_CAP + 1))
            first_seen: dict[str, float] = {}
            for click in update.clicks:
                first_seen[click.item_id] = min(first_seen.get(click.item_id, click.ts), click.ts)
            pipe.zadd(seen_key, first_seen, lt=True)
            pipe.zremrangebyrank(seen_key, 0, -(SEEN_CAP + 1))
            pipe.expire(seq_key, self.ttl)
            pipe.expire(seen_key, self.ttl)
            if update.embedding is not None:
                emb = update.embedding
                await self._set_embedding(
                    keys=[keys.user_embedding(self.ns, update.user_id)],
                    args=[emb.vector.astype(np.float32).tobytes(), repr(emb.ts), emb.event_id, emb.model, self.ttl],
                    client=pipe,
                )
        await self._execute(pipe)

    async def close(self) -> None:
        await self.client.aclose()
