"""The state store interface, and its Redis implementation.

A pipeline reads the state of a whole micro-batch in one call and writes it back in
one call; the Redis store turns each call into one pipelined round trip
(``transaction=False``). Every write is idempotent and keyed by event id with the
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

TimeRange = tuple[float, float]
"""``(lo, hi)``: entries with lo < event time <= hi."""


@dataclass(frozen=True)
class LabelProgress:
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


@dataclass(frozen=True)
class UserUpdate:
    user_id: str
    clicks: Sequence[Click]
    embedding: CachedEmbedding | None


class StateStore(Protocol):
    async def read_fraud(
        self, cards: Mapping[str, TimeRange], terminals: Mapping[str, TimeRange]
    ) -> tuple[dict[str, CardHistory], dict[str, TerminalHistory]]: ...

    async def write_transactions(self, transactions: Sequence[Transaction]) -> None: ...

    async def write_labels(self, labels: Sequence[FraudLabel], progress: LabelProgress | None = None) -> None: ...

    async def read_label_progress(self, topic: str) -> dict[int, tuple[int, float]]: ...

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


def _split(member: bytes) -> tuple[str, str]:
    head, _, tail = member.decode().rpartition("|")
    return head, tail


class RedisStateStore:
    """State in Redis; each public call is one pipelined round trip."""

    def __init__(self, url: str, namespace: str = "streamer", ttl_days: float = 45.0) -> None:
        self.client = aioredis.Redis.from_url(url, decode_responses=False)
        self.ns = namespace
        self.ttl = int(ttl_days * DAY)
        self._set_embedding = self.client.register_script(_SET_EMBEDDING_IF_NEWER)

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
        self, cards: Mapping[str, TimeRange], terminals: Mapping[str, TimeRange]
    ) -> tuple[dict[str, CardHistory], dict[str, TerminalHistory]]:
        pipe = self.client.pipeline(transaction=False)
        for card_id, (lo, hi) in cards.items():
            pipe.zrangebyscore(keys.card_transactions(self.ns, card_id), f"({lo!r}", repr(hi), withscores=True)
        for terminal_id, (lo, hi) in terminals.items():
            pipe.zrangebyscore(keys.terminal_transactions(self.ns, terminal_id), f"({lo!r}", repr(hi), withscores=True)
            pipe.zrangebyscore(keys.terminal_frauds(self.ns, terminal_id), f"({lo!r}", repr(hi), withscores=True)
        replies = iter(await self._execute(pipe))
        card_state: dict[str, CardHistory] = {}
        for card_id in cards:
            history = card_state[card_id] = CardHistory()
            for member, ts in next(replies):  # type: ignore[attr-defined]
                transaction_id, amount = _split(member)
                history.add(ts, transaction_id, float(amount))
        terminal_state: dict[str, TerminalHistory] = {}
        for terminal_id in terminals:
            terminal = terminal_state[terminal_id] = TerminalHistory()
            for member, ts in next(replies):  # type: ignore[attr-defined]
                terminal.add_transaction(ts, member.decode())
            for member, ts in next(replies):  # type: ignore[attr-defined]
                transaction_id, labelled = _split(member)
                terminal.add_fraud(ts, transaction_id, float(labelled))
        return card_state, terminal_state

    async def write_transactions(self, transactions: Sequence[Transaction]) -> None:
        if not transactions:
            return
        newest: dict[tuple[str, float], float] = {}
        pipe = self.client.pipeline(transaction=False)
        for tx in transactions:
            card_key = keys.card_transactions(self.ns, tx.card_id)
            terminal_key = keys.terminal_transactions(self.ns, tx.terminal_id)
            pipe.zadd(card_key, {f"{tx.transaction_id}|{tx.amount!r}": tx.ts})
            pipe.zadd(terminal_key, {tx.transaction_id: tx.ts})
            for key_horizon in ((card_key, CARD_HORIZON), (terminal_key, TERMINAL_HORIZON)):
                newest[key_horizon] = max(newest.get(key_horizon, tx.ts), tx.ts)
        for (key, horizon), ts in newest.items():
            pipe.zremrangebyscore(key, "-inf", f"({ts - horizon - PRUNE_GRACE!r}")
            pipe.expire(key, self.ttl)
        await self._execute(pipe)

    async def write_labels(self, labels: Sequence[FraudLabel], progress: LabelProgress | None = None) -> None:
        frauds = [label for label in labels if label.is_fraud]
        if not frauds and progress is None:
            return
        pipe = self.client.pipeline(transaction=False)
        if progress is not None:
            mapping = {str(p): f"{offset}|{ts!r}" for p, (offset, ts) in progress.partitions.items()}
            pipe.hset(keys.label_progress(self.ns, progress.topic), mapping=mapping)  # type: ignore[arg-type]
        for label in frauds:
            key = keys.terminal_frauds(self.ns, label.terminal_id)
            pipe.zadd(key, {f"{label.transaction_id}|{label.labelled_ts!r}": label.ts})
            pipe.zremrangebyscore(key, "-inf", f"({label.ts - TERMINAL_HORIZON - PRUNE_GRACE!r}")
            pipe.expire(key, self.ttl)
        await self._execute(pipe)

    async def read_label_progress(self, topic: str) -> dict[int, tuple[int, float]]:
        try:
            raw = await self.client.hgetall(keys.label_progress(self.ns, topic))
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
            cached: dict[bytes, bytes] = next(replies)  # type: ignore[arg-type]
            embedding = None
            if cached:
                embedding = CachedEmbedding(
                    vector=np.frombuffer(cached[b"vector"], dtype=np.float32),
                    ts=float(cached[b"ts"]),
                    event_id=cached[b"event_id"].decode(),
                    model=cached[b"model"].decode(),
                )
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
