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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import hiredis
import numpy as np
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.connection import HiredisRespSerializer

from streamer.errors import ConfigurationError, DependencyError
from streamer.events import Click, FraudLabel, Transaction
from streamer.features.fraud import CARD_HORIZON, DAY, TERMINAL_HORIZON, CardHistory, TerminalHistory
from streamer.settings import RedisSettings
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
#: Longest wait for a Redis reply (a batch's script calls take milliseconds).
SOCKET_TIMEOUT_S = 10.0
#: Floats in a stored feature row.
ROW_WIDTH = 16

TimeRange = tuple[float, float]
T = TypeVar("T")
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


# The scripts below each serve many entities in one call (the client's and the server's
# cost is per command, not per key): KEYS holds a fixed number of keys per entity, and
# ARGV their arguments in the same order. Keys of one entity share a hash tag, so a call
# for one entity stays within one Redis Cluster slot (``entities_per_call=1``).

# Per key: replace the cached embedding only by one of a later (ts, event_id); refresh
# the TTL. ARGV: ttl, then vector, ts, event_id, model per key.
_SET_EMBEDDINGS_IF_NEWER = """
for k = 1, #KEYS do
  local at = 4 * k - 2
  local new_ts = tonumber(ARGV[at + 1])
  local old = redis.call('HMGET', KEYS[k], 'ts', 'event_id')
  if old[1] == false or tonumber(old[1]) < new_ts or (tonumber(old[1]) == new_ts and old[2] <= ARGV[at + 2]) then
    redis.call('HSET', KEYS[k], 'vector', ARGV[at], 'ts', ARGV[at + 1], 'event_id', ARGV[at + 2], 'model', ARGV[at + 3])
  end
  redis.call('EXPIRE', KEYS[k], ARGV[1])
end
return #KEYS
"""

# Per card (KEYS: tx, rows, emb): transactions in (lo, hi]; with n > 0, also the latest
# n rows up to hi (newest first) and the cached embedding. ARGV: n, then lo, hi per card.
_READ_CARDS = """
local n = tonumber(ARGV[1])
local out = {}
for c = 1, #KEYS / 3 do
  local hi = ARGV[2 * c + 1]
  local card = {redis.call('ZRANGEBYSCORE', KEYS[3 * c - 2], ARGV[2 * c], hi, 'WITHSCORES')}
  if n > 0 then
    card[2] = redis.call('ZREVRANGEBYSCORE', KEYS[3 * c - 1], hi, '-inf', 'WITHSCORES', 'LIMIT', 0, n)
    card[3] = redis.call('HGETALL', KEYS[3 * c])
  end
  out[c] = card
end
return out
"""

# Per terminal (KEYS: tx, fraud): its transactions and frauds in (lo, hi]. ARGV: lo, hi
# per terminal.
_READ_TERMINALS = """
local out = {}
for t = 1, #KEYS / 2 do
  local lo, hi = ARGV[2 * t - 1], ARGV[2 * t]
  out[t] = {redis.call('ZRANGEBYSCORE', KEYS[2 * t - 1], lo, hi, 'WITHSCORES'),
            redis.call('ZRANGEBYSCORE', KEYS[2 * t], lo, hi, 'WITHSCORES')}
end
return out
"""

# Per user (KEYS: sequence, seen, emb): the whole sequence and seen set, with scores,
# and the cached embedding.
_READ_USERS = """
local out = {}
for u = 1, #KEYS / 3 do
  out[u] = {redis.call('ZRANGE', KEYS[3 * u - 2], 0, -1, 'WITHSCORES'),
            redis.call('ZRANGE', KEYS[3 * u - 1], 0, -1, 'WITHSCORES'),
            redis.call('HGETALL', KEYS[3 * u])}
end
return out
"""

# Per sorted set: add (score, member) pairs (ZADD's flag: '' or 'LT'), prune below a
# score (exclusive bound, or '' for none) and beyond the newest ``keep`` entries (0: no
# cap), refresh the TTL. ARGV: ttl, then per key: prune, keep, flag, n, n pairs.
_ADD_MANY = """
local at = 2
for k = 1, #KEYS do
  local key, prune, keep, flag, n = KEYS[k], ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2], tonumber(ARGV[at + 3])
  at = at + 4
  local last = at + 2 * n - 1
  for from = at, last, 4000 do
    local to = math.min(from + 3999, last)
    if flag == '' then
      redis.call('ZADD', key, unpack(ARGV, from, to))
    else
      redis.call('ZADD', key, flag, unpack(ARGV, from, to))
    end
  end
  at = last + 1
  if prune ~= '' then redis.call('ZREMRANGEBYSCORE', key, '-inf', prune) end
  if keep > 0 then redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1)) end
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
"""


@dataclass
class _Additions:
    """What one ``_ADD_MANY`` call adds, entity by entity (an entity's keys stay in one call)."""

    entities: list[tuple[list[str], list[object]]] = field(default_factory=list)

    def add(self, keys_and_args: list[tuple[str, str, int, str, list[object]]]) -> None:
        """One entity: per key, (key, prune bound or '', keep or 0, ZADD flag or '', flat pairs)."""
        entity_keys: list[str] = []
        entity_args: list[object] = []
        for key, prune, keep, flag, pairs in keys_and_args:
            entity_keys.append(key)
            entity_args += [prune, keep, flag, len(pairs) // 2, *pairs]
        self.entities.append((entity_keys, entity_args))


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in runs of ``size`` (all at once for 0)."""
    size = size or max(len(items), 1)
    return [items[i : i + size] for i in range(0, len(items), size)]


def _pairs(flat: Sequence[bytes]) -> list[tuple[bytes, float]]:
    """A Lua ``WITHSCORES`` reply (member, score, member, score, …) as pairs."""
    return [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]


def _rows(flat: Sequence[bytes]) -> list[tuple[float, str, np.ndarray]]:
    """A ``WITHSCORES`` reply of packed rows as ``(ts, transaction_id, row)``, sorted, one
    per transaction (a re-processed one may have been stored twice); the rows are views
    of one array, unpacked at once."""
    if not flat:
        return []
    size = 4 * ROW_WIDTH
    members = flat[::2]
    matrix = np.frombuffer(b"".join([m[:size] for m in members]), dtype=np.float32).reshape(-1, ROW_WIDTH)
    entries = sorted(zip(map(float, flat[1::2]), _strings([m[size:] for m in members]), matrix), key=_time_and_id)
    seen: set[str] = set()
    unique = []
    for entry in entries:
        if entry[1] not in seen:
            seen.add(entry[1])
            unique.append(entry)
    return unique


def _time_and_id(entry: tuple[float, str, np.ndarray]) -> tuple[float, str]:
    return entry[0], entry[1]


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


_PACKER = HiredisRespSerializer()  # hiredis is a dependency (redis[hiredis])


def _pack(*args: object) -> bytes:
    """One command in the Redis protocol, packed by hiredis (C)."""
    if isinstance(args[0], str) and " " in args[0]:  # "SCRIPT LOAD": two words on the wire
        args = (*args[0].split(), *args[1:])
    try:
        return hiredis.pack_command(args)
    except TypeError:  # memoryview or bytearray arguments: redis-py's packer converts them
        return _PACKER.pack(*args)[0]


def _with_hiredis_packing(connection_class: type) -> type:
    """``connection_class`` packing commands with hiredis, as redis-py's synchronous
    client does; its asyncio client packs argument by argument in Python."""

    class HiredisPacking(connection_class):  # type: ignore[misc, valid-type]
        def pack_command(self, *args: object) -> list[bytes]:
            return [_pack(*args)]

        def pack_commands(self, commands: Iterable[Iterable[object]]) -> list[bytes]:
            return [b"".join(_pack(*command) for command in commands)]

    HiredisPacking.__name__ = HiredisPacking.__qualname__ = f"Hiredis{connection_class.__name__}"
    return HiredisPacking


class RedisStateStore:
    """State in Redis; each public call is one pipelined round trip of a few script calls.

    ``entities_per_call`` bounds how many cards, terminals or users one script call
    serves (0: the whole batch). Behind a Redis Cluster proxy use 1: each call then
    touches the keys of one entity, which share a hash slot."""

    def __init__(self, url: str, namespace: str = "streamer", ttl_days: float = 45.0, entities_per_call: int = 256) -> None:
        if entities_per_call < 0:
            raise ConfigurationError(f"entities_per_call must be 0 or more, not {entities_per_call}")
        # A stalled Redis fails a batch after a while (retried with back-off) instead of hanging it.
        self.client = aioredis.Redis.from_url(url, decode_responses=False, socket_timeout=SOCKET_TIMEOUT_S,
                                              socket_connect_timeout=SOCKET_TIMEOUT_S)
        pool = self.client.connection_pool
        pool.connection_class = _with_hiredis_packing(pool.connection_class)
        self.ns = namespace
        self.ttl = int(ttl_days * DAY)
        self.entities_per_call = entities_per_call
        self._set_embeddings = self.client.register_script(_SET_EMBEDDINGS_IF_NEWER)
        self._read_cards = self.client.register_script(_READ_CARDS)
        self._read_terminals = self.client.register_script(_READ_TERMINALS)
        self._read_users = self.client.register_script(_READ_USERS)
        self._add_many = self.client.register_script(_ADD_MANY)

    @classmethod
    def from_settings(cls, redis: RedisSettings) -> RedisStateStore:
        return cls(str(redis.url), redis.namespace, redis.ttl_days, redis.entities_per_call)

    async def _execute(self, pipe: aioredis.client.Pipeline) -> list[object]:
        try:
            return list(await pipe.execute())
        except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
            raise DependencyError(f"redis: {exc}") from exc

    async def _call_per_entity(
        self, pipe: aioredis.client.Pipeline, script: AsyncScript, entities: Sequence[tuple[list[str], list[object]]],
        head: Sequence[object] = (),
    ) -> int:
        """Queue ``script`` over the entities' keys and arguments, ``entities_per_call`` at
        a time, each call's ARGV starting with ``head``; returns the number of calls."""
        calls = _chunks(entities, self.entities_per_call) if entities else []
        for chunk in calls:
            await script(keys=[k for entity_keys, _ in chunk for k in entity_keys],
                         args=[*head, *(a for _, entity_args in chunk for a in entity_args)], client=pipe)
        return len(calls)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            return False

    async def read_fraud(
        self, cards: Mapping[str, TimeRange], terminals: Mapping[str, TimeRange], sequence_rows: int = 0
    ) -> tuple[dict[str, CardState], dict[str, TerminalHistory]]:
        ns = self.ns
        pipe = self.client.pipeline(transaction=False)
        card_calls = await self._call_per_entity(pipe, self._read_cards, [
            ([keys.card_transactions(ns, card_id), keys.card_rows(ns, card_id), keys.card_embedding(ns, card_id)],
             [f"({lo!r}", repr(hi)])
            for card_id, (lo, hi) in cards.items()
        ], head=[sequence_rows])
        await self._call_per_entity(pipe, self._read_terminals, [
            ([keys.terminal_transactions(ns, terminal_id), keys.terminal_frauds(ns, terminal_id)], [f"({lo!r}", repr(hi)])
            for terminal_id, (lo, hi) in terminals.items()
        ])
        replies: list[list] = await self._execute(pipe)  # type: ignore[assignment]
        card_replies = (card for call in replies[:card_calls] for card in call)
        card_state: dict[str, CardState] = {}
        for card_id, reply in zip(cards, card_replies):
            state = card_state[card_id] = CardState()
            state.history = CardHistory.of(_numbered_entries(reply[0]))
            if len(reply) > 1:
                state.rows = _rows(reply[1])
                state.embedding = decode_embedding(dict(zip(reply[2][::2], reply[2][1::2])))
        terminal_replies = (terminal for call in replies[card_calls:] for terminal in call)
        terminal_state: dict[str, TerminalHistory] = {}
        for terminal_id, (tx_reply, fraud_reply) in zip(terminals, terminal_replies):
            terminal_state[terminal_id] = TerminalHistory.of(_id_entries(tx_reply), _numbered_entries(fraud_reply))
        return card_state, terminal_state

    async def write_fraud(
        self, transactions: Sequence[Transaction], rows: Sequence[Sequence[float]] | None = None,
        progress: StreamProgress | None = None,
    ) -> None:
        if not transactions and progress is None:
            return
        by_card: dict[str, list[int]] = {}
        by_terminal: dict[str, list[Transaction]] = {}
        for i, tx in enumerate(transactions):
            by_card.setdefault(tx.card_id, []).append(i)
            by_terminal.setdefault(tx.terminal_id, []).append(tx)
        matrix = None if rows is None else np.asarray(rows, dtype=np.float32).reshape(len(transactions), ROW_WIDTH)
        additions = _Additions()
        for card_id, indices in by_card.items():
            card_txs = [transactions[i] for i in indices]
            newest = max(tx.ts for tx in card_txs)
            members = [x for tx in card_txs for x in (repr(tx.ts), f"{tx.transaction_id}|{tx.amount!r}")]
            card = [(keys.card_transactions(self.ns, card_id), f"({newest - CARD_HORIZON - PRUNE_GRACE!r}", 0, "", members)]
            if matrix is not None:
                packed = [x for i in indices
                          for x in (repr(transactions[i].ts), matrix[i].tobytes() + transactions[i].transaction_id.encode())]
                card.append((keys.card_rows(self.ns, card_id), "", CARD_ROWS_CAP, "", packed))
            additions.add(card)
        for terminal_id, terminal_txs in by_terminal.items():
            newest = max(tx.ts for tx in terminal_txs)
            members = [x for tx in terminal_txs for x in (repr(tx.ts), tx.transaction_id)]
            additions.add([(keys.terminal_transactions(self.ns, terminal_id),
                            f"({newest - TERMINAL_HORIZON - PRUNE_GRACE!r}", 0, "", members)])
        await self._store(additions, progress)

    def _embedding_entity(self, key: str, emb: CachedEmbedding) -> tuple[list[str], list[object]]:
        return [key], [emb.vector.astype(np.float32).tobytes(), repr(emb.ts), emb.event_id, emb.model]

    async def write_card_embeddings(self, embeddings: Mapping[str, CachedEmbedding]) -> None:
        if not embeddings:
            return
        pipe = self.client.pipeline(transaction=False)
        await self._call_per_entity(pipe, self._set_embeddings, [
            self._embedding_entity(keys.card_embedding(self.ns, card_id), emb) for card_id, emb in embeddings.items()
        ], head=[self.ttl])
        await self._execute(pipe)

    async def write_labels(self, labels: Sequence[FraudLabel], progress: StreamProgress | None = None) -> None:
        frauds = [label for label in labels if label.is_fraud]
        if not frauds and progress is None:
            return
        by_terminal: dict[str, list[FraudLabel]] = {}
        for label in frauds:
            by_terminal.setdefault(label.terminal_id, []).append(label)
        additions = _Additions()
        for terminal_id, terminal_frauds in by_terminal.items():
            newest = max(label.ts for label in terminal_frauds)
            members = [x for label in terminal_frauds for x in (repr(label.ts), f"{label.transaction_id}|{label.labelled_ts!r}")]
            additions.add([(keys.terminal_frauds(self.ns, terminal_id),
                            f"({newest - TERMINAL_HORIZON - PRUNE_GRACE!r}", 0, "", members)])
        await self._store(additions, progress)

    async def _store(self, additions: _Additions, progress: StreamProgress | None) -> None:
        """One round trip: the sorted-set additions and the consuming partitions' progress."""
        pipe = self.client.pipeline(transaction=False)
        if progress is not None:
            self._write_progress(pipe, progress)
        await self._call_per_entity(pipe, self._add_many, additions.entities, head=[self.ttl])
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
        ns = self.ns
        pipe = self.client.pipeline(transaction=False)
        await self._call_per_entity(pipe, self._read_users, [
            ([keys.user_sequence(ns, user_id), keys.user_seen(ns, user_id), keys.user_embedding(ns, user_id)], [])
            for user_id in user_ids
        ])
        replies = (user for call in await self._execute(pipe) for user in call)  # type: ignore[attr-defined]
        states: dict[str, UserState] = {}
        for user_id, (sequence_reply, seen_reply, embedding_reply) in zip(user_ids, replies):
            sequence = sorted((ts, *_split(member)) for member, ts in _pairs(sequence_reply))
            seen = {member: ts for ts, member in _id_entries(seen_reply)}
            embedding = decode_embedding(dict(zip(embedding_reply[::2], embedding_reply[1::2])))
            states[user_id] = UserState(sequence, seen, embedding)
        return states

    async def write_users(self, updates: Sequence[UserUpdate]) -> None:
        if not updates:
            return
        additions = _Additions()
        embeddings = []
        for update in updates:
            first_seen: dict[str, float] = {}
            for click in update.clicks:
                first_seen[click.item_id] = min(first_seen.get(click.item_id, click.ts), click.ts)
            additions.add([
                (keys.user_sequence(self.ns, update.user_id), "", SEQUENCE_CAP, "",
                 [x for c in update.clicks for x in (repr(c.ts), f"{c.event_id}|{c.item_id}")]),
                (keys.user_seen(self.ns, update.user_id), "", SEEN_CAP, "LT",
                 [x for item, ts in first_seen.items() for x in (repr(ts), item)]),
            ])
            if update.embedding is not None:
                embeddings.append(self._embedding_entity(keys.user_embedding(self.ns, update.user_id), update.embedding))
        pipe = self.client.pipeline(transaction=False)
        await self._call_per_entity(pipe, self._add_many, additions.entities, head=[self.ttl])
        await self._call_per_entity(pipe, self._set_embeddings, embeddings, head=[self.ttl])
        await self._execute(pipe)

    async def delete_namespace(self) -> int:
        """Deletes every key of this store's namespace (a replay's or a benchmark's
        scratch state); returns how many."""
        deleted = 0
        doomed: list[bytes] = []
        async for key in self.client.scan_iter(match=f"{self.ns}:v*", count=5000):
            doomed.append(key)
            if len(doomed) >= 5000:
                deleted += await self.client.unlink(*doomed)
                doomed = []
        if doomed:
            deleted += await self.client.unlink(*doomed)
        return deleted

    async def close(self) -> None:
        await self.client.aclose()


async def delete_namespace(redis: RedisSettings) -> int:
    """``RedisStateStore.delete_namespace`` for the store ``redis`` describes."""
    store = RedisStateStore.from_settings(redis)
    try:
        return await store.delete_namespace()
    finally:
        await store.close()
