"""The state store in Redis: the implementation of ``StateStore`` a worker runs.

A pipeline reads the state of a whole micro-batch in one call and writes it back in
one call; the Redis store turns each call into one pipelined round trip
(``transaction=False``; on a Redis Cluster, two when a stream's progress goes with it)
of a few Lua script calls, each serving up to
``entities_per_call`` cards, terminals or users (``streamer.state.redis_protocol``: the
client's and the server's cost is per command, not per key). The scripts go as bare
``EVALSHA``s: redis-py's own script calls in a pipeline first ask ``SCRIPT EXISTS``, a
round trip of its own every time. Every write is idempotent, so replaying an event after
a crash changes nothing, and pruning follows event time: sorted sets are keyed by event id
with the event time as score, and a card's log (``streamer.state.card_log``), appended to,
is read back one record per transaction. TTLs only collect keys that went idle (wall-clock housekeeping); a
write refreshes those of the keys it has not refreshed within the last hour
(``streamer.state.expiry``).

The interface, the state records and the rules both stores keep (caps, prune grace) are
in ``streamer.state.interface``; ``streamer.state.memory.InMemoryStateStore`` is the
twin used by unit tests, the offline replay and training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterError, NoScriptError, RedisClusterUnreachableError, SlotNotCoveredError, TryAgainError,
)

from streamer.errors import ConfigurationError, DependencyError
from streamer.events import FraudLabel, Transaction
from streamer.features.fraud import (
    CARD_HORIZON, DAY, TERMINAL_HORIZON, WINDOWS_DAYS, TerminalCounts, TerminalHistory, window_starts,
)
from streamer.settings import RedisSettings
from streamer.state import card_log, keys, redis_protocol as protocol
from streamer.state.expiry import RecentRefreshes
from streamer.state.interface import (
    CARD_ROWS_CAP, PRUNE_GRACE, SEEN_CAP, SEQUENCE_CAP, CachedEmbedding, CardState, FeatureRows,
    FraudState, Progress, StreamProgress, TimeRange, UserState, UserUpdate, row_bytes,
)

log = logging.getLogger(__name__)

#: A card's prune mark lags its newest transaction by this much (``card_log``).
CARD_MARK_BEHIND = CARD_HORIZON + PRUNE_GRACE
#: Longest wait for a Redis reply (a batch's script calls take milliseconds).
SOCKET_TIMEOUT_S = 10.0
#: What a Redis (or one of its cluster's nodes) that cannot answer for now raises: the
#: batch fails and is retried with back-off (``DependencyError``).
UNREACHABLE = (aioredis.ConnectionError, aioredis.TimeoutError, ClusterError, RedisClusterUnreachableError,
               SlotNotCoveredError, TryAgainError)

Command = tuple[object, ...]
"""A Redis command and its arguments, as one round trip sends them (``RedisStateStore._execute``)."""


def decode_embedding(cached: Mapping[bytes, bytes]) -> CachedEmbedding | None:
    if not cached:
        return None
    return CachedEmbedding(
        vector=np.frombuffer(cached[b"vector"], dtype=np.float32),
        ts=float(cached[b"ts"]),
        event_id=cached[b"event_id"].decode(),
        model=cached[b"model"].decode(),
    )


class RedisStateStore:
    """State in Redis; each public call is one pipelined round trip of a few script calls.

    ``entities_per_call`` bounds how many cards, terminals or users one script call
    serves (0: the whole batch). Behind a Redis Cluster proxy use 1: each call then
    touches the keys of one entity, which share a hash slot.

    With ``cluster``, ``url`` names a node of a Redis Cluster: the client learns from it
    which node holds which slots and sends each command to the node holding its keys
    (redis-py's ``RedisCluster``). Every script call then serves one entity, and a call
    that stores or reads a stream's progress takes two round trips instead of one
    (``_in_order``): the nodes of one round trip run its commands side by side.

    With ``wait_replicas``, a write returns only once that many replicas of every primary
    it wrote to have it (``WAIT``, within ``wait_timeout_ms``; else ``DependencyError``)."""

    def __init__(self, url: str, namespace: str = "streamer", ttl_days: float = 45.0, entities_per_call: int = 256,
                 cluster: bool = False, wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        if entities_per_call < 0:
            raise ConfigurationError(f"entities_per_call must be 0 or more, not {entities_per_call}")
        if wait_replicas < 0 or wait_timeout_ms < 1:
            raise ConfigurationError(f"wait_replicas must be 0 or more ({wait_replicas}), wait_timeout_ms 1 or more "
                                     f"({wait_timeout_ms})")
        if ttl_days * DAY < 1:  # a TTL of 0 seconds is none: keys would be kept for good
            raise ConfigurationError(f"ttl_days must be a second or more, not {ttl_days:g} days")
        if ttl_days * DAY < TERMINAL_HORIZON:
            log.warning("STREAMER_REDIS_TTL_DAYS=%g is shorter than the %g days the fraud features look back: a "
                        "card or terminal idle that long loses history they would still count", ttl_days,
                        TERMINAL_HORIZON / DAY)
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        # A stalled Redis fails a batch after a while (retried with back-off) instead of hanging it.
        self.client: aioredis.Redis | aioredis.RedisCluster
        if cluster:
            self.client = aioredis.RedisCluster.from_url(url, decode_responses=False, socket_timeout=SOCKET_TIMEOUT_S,
                                                         socket_connect_timeout=SOCKET_TIMEOUT_S)
            protocol.pack_cluster_commands_with_hiredis(self.client)
            entities_per_call = 1  # a script's keys must share a slot
        else:
            self.client = aioredis.Redis.from_url(url, decode_responses=False, socket_timeout=SOCKET_TIMEOUT_S,
                                                  socket_connect_timeout=SOCKET_TIMEOUT_S)
            pool = self.client.connection_pool
            pool.connection_class = protocol.with_hiredis_packing(pool.connection_class)
        self.ns = namespace
        self.ttl = int(ttl_days * DAY)
        self.refreshes = RecentRefreshes(self.ttl)
        """The keys whose TTL a write need not refresh (``streamer.state.expiry``)."""
        self.entities_per_call = entities_per_call
        self._set_embeddings = self.client.register_script(protocol.SET_EMBEDDINGS_IF_NEWER)
        self._append_cards = self.client.register_script(card_log.APPEND_CARDS)
        self._read_terminals = self.client.register_script(protocol.READ_TERMINALS)
        self._count_terminals = self.client.register_script(protocol.COUNT_TERMINALS)
        self._read_users = self.client.register_script(protocol.READ_USERS)
        self._add_many = self.client.register_script(protocol.ADD_MANY)
        self._set_progress = self.client.register_script(protocol.SET_PROGRESS)
        self._scripts = [self._set_embeddings, self._append_cards, self._read_terminals, self._count_terminals,
                         self._read_users, self._add_many, self._set_progress]

    @property
    def cluster(self) -> bool:
        """Whether the store talks to a Redis Cluster (``cluster``)."""
        return isinstance(self.client, aioredis.RedisCluster)

    @classmethod
    def from_settings(cls, redis: RedisSettings) -> RedisStateStore:
        return cls(str(redis.url), redis.namespace, redis.ttl_days, redis.entities_per_call, redis.cluster,
                   redis.wait_replicas, redis.wait_timeout_ms)

    async def _execute(self, commands: Iterable[Command], replicated: bool = False) -> list[object]:
        """The replies to ``commands``, sent in one round trip. When Redis does not know a
        script (it restarted or failed over, or this is the first call), every script is
        loaded and the round trip made again. On one server no script ran then (they are
        loaded and lost together), and the stream progress is written by a script too,
        so nothing that round trip stored can claim state it did not store; in a cluster
        one node may have lost its scripts while the others ran theirs, and the progress
        waits for a round trip of its own (``_in_order``). Every write is idempotent.

        With ``replicated`` (writes) and ``wait_replicas``, the round trip ends with a
        ``WAIT`` on every primary it wrote to (``_primaries``)."""
        commands = list(commands)
        try:
            try:
                return await self._round_trip(commands, replicated)
            except NoScriptError:
                for script in self._scripts:
                    await self.client.script_load(script.script)  # on every primary of a cluster
                # A Redis that lost its scripts may have lost keys, which this round
                # trip's writes would make again without the TTLs they leave as they are.
                self.refreshes.forget()
                replies = await self._round_trip(commands + self._expiries(commands), replicated)
                return replies[: len(commands)]
        except BaseException as exc:
            self.refreshes.forget()  # the round trip's TTLs may not have been set
            if isinstance(exc, UNREACHABLE):
                raise DependencyError(f"redis: {exc}") from exc
            raise

    def _expiries(self, commands: list[Command]) -> list[Command]:
        """An ``EXPIRE`` for every key the write scripts among ``commands`` write."""
        writes = (self._add_many.sha, self._set_embeddings.sha, self._append_cards.sha)
        return [("EXPIRE", key, self.ttl) for command in commands if command[0] == "EVALSHA" and command[1] in writes
                for key in command[3 : 3 + int(command[2])]]  # type: ignore[call-overload]

    async def _in_order(self, first: list[Command], then: list[Command], replicated: bool = False) -> list[object]:
        """The replies to ``first`` and ``then``, every command of ``then`` run after every
        command of ``first``: one round trip on one server, which runs a connection's
        commands in order; two in a cluster, whose nodes run theirs side by side."""
        if not self.cluster or not first or not then:
            return await self._execute(first + then, replicated)
        return await self._execute(first, replicated) + await self._execute(then, replicated)

    async def _round_trip(self, commands: list[Command], replicated: bool = False) -> list[object]:
        waits = await self._primaries(commands) if replicated and self.wait_replicas and commands else {}
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)  # type: ignore[arg-type]  # packed by ``protocol``, which takes any of them
        for node in waits.values():  # after the writes, on the same connection: Redis counts the replicas that have them
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms,
                                 **({} if node is None else {"target_nodes": node}))
        replies = list(await pipe.execute())
        acknowledged = [int(reply) for reply in replies[len(commands):]]
        if any(count < self.wait_replicas for count in acknowledged):
            raise DependencyError(f"redis: {min(acknowledged)} of {self.wait_replicas} replicas acknowledged a write "
                                  f"within {self.wait_timeout_ms} ms")
        if waits and self.cluster and (await self._primaries(commands)).keys() != waits.keys():
            raise DependencyError("redis: slots moved during a write, which goes again to wait for the new owners' replicas")
        return replies[: len(commands)]

    async def _primaries(self, commands: list[Command]) -> dict[str, object]:
        """The primaries ``commands`` go to, by name (by their first key in a cluster;
        ``None`` for the one server otherwise)."""
        if not isinstance(self.client, aioredis.RedisCluster):
            return {"": None}
        await self.client.initialize()  # the slots' owners, when this is its first command
        nodes: dict[str, object] = {}
        for command in commands:
            key = command[3] if command[0] == "EVALSHA" else command[1]
            node = self.client.get_node_from_key(key)  # type: ignore[arg-type]
            if node is None:  # the slot's owner is gone: retry once the cluster has one
                raise DependencyError(f"redis: no node serves the slot of {key!r}")
            nodes[node.name] = node
        return nodes

    def _script_calls(self, script: AsyncScript, entities: Sequence[tuple[list[str], list[object]]],
                      head: Sequence[object] = ()) -> list[Command]:
        """``script`` over the entities' keys and arguments, ``entities_per_call`` at a
        time, each call's ARGV starting with ``head``: one ``EVALSHA`` per call."""
        calls = protocol.EntityCalls(self.entities_per_call)
        for entity_keys, entity_args in entities:
            calls.entity(entity_keys, entity_args)
        return calls.commands(script.sha, head)

    async def ping(self) -> bool:
        """Whether Redis answers: on a cluster, every primary."""
        try:
            if isinstance(self.client, aioredis.RedisCluster):
                return bool(await self.client.ping(target_nodes=aioredis.RedisCluster.PRIMARIES))
            return bool(await self.client.ping())
        except (*UNREACHABLE, OSError):
            return False

    async def read_fraud(
        self, cards: Mapping[str, TimeRange], terminals: Mapping[str, TimeRange], sequence_rows: int = 0,
        progress_of: Sequence[str] = (), terminal_ends: Mapping[str, Sequence[float]] | None = None,
    ) -> FraudState:
        """The terminals in ``terminal_ends`` are counted by Redis (``TerminalCounts``):
        three counts per transaction come back instead of the terminal's month of
        transactions, which at steady state were most of a batch's read."""
        ns = self.ns
        # first: what the state read next holds at least
        progress_reads: list[Command] = [("HGETALL", keys.stream_progress(ns, topic)) for topic in progress_of]
        card_logs = protocol.EntityCalls(self.entities_per_call)
        for card_id in cards:
            card_logs.entity([keys.card_log(ns, card_id)])
        card_calls: list[Command] = [("MGET", *call_keys) for call_keys, _ in card_logs.calls]
        ends = terminal_ends or {}
        listed = [terminal_id for terminal_id in terminals if terminal_id not in ends]
        counted = [terminal_id for terminal_id in terminals if terminal_id in ends]
        listed_calls = self._script_calls(self._read_terminals, [
            ([keys.terminal_transactions(ns, terminal_id), keys.terminal_frauds(ns, terminal_id)],
             [protocol.above(terminals[terminal_id][0]), terminals[terminal_id][1]])
            for terminal_id in listed
        ])
        counted_calls = self._script_calls(self._count_terminals, [
            ([keys.terminal_transactions(ns, terminal_id), keys.terminal_frauds(ns, terminal_id)],
             _count_arguments(terminals[terminal_id], ends[terminal_id]))
            for terminal_id in counted
        ], head=[len(WINDOWS_DAYS)])
        replies: list[list[Any]] = await self._in_order(progress_reads, [*card_calls, *listed_calls, *counted_calls])  # type: ignore[assignment]
        progress = {topic: _progress(raw) for topic, raw in zip(progress_of, replies)}  # type: ignore[arg-type]
        replies = replies[len(progress_of) :]
        card_replies = (card for call in replies[:len(card_calls)] for card in call)
        card_state = {card_id: CardState.of(*card_log.read(log, lo, hi, CARD_ROWS_CAP, sequence_rows,
                                                                 CARD_MARK_BEHIND))
                      for (card_id, (lo, hi)), log in zip(cards.items(), card_replies)}
        replies = replies[len(card_calls):]
        terminal_state: dict[str, TerminalHistory | TerminalCounts] = {}
        listed_replies = (terminal for call in replies[:len(listed_calls)] for terminal in call)
        for terminal_id, (tx_reply, fraud_reply) in zip(listed, listed_replies):
            terminal_state[terminal_id] = TerminalHistory.of(protocol.id_entries(tx_reply),
                                                             earliest_labels(protocol.numbered_entries(fraud_reply)))
        counted_replies = (terminal for call in replies[len(listed_calls):] for terminal in call)
        windows = len(WINDOWS_DAYS)
        for terminal_id, (fraud_reply, counts) in zip(counted, counted_replies):
            its_ends = ends[terminal_id]
            terminal_state[terminal_id] = TerminalCounts(
                {its_ends[0]: counts} if len(its_ends) == 1
                else {end: counts[windows * i : windows * (i + 1)] for i, end in enumerate(its_ends)},
                sorted(earliest_labels(protocol.numbered_entries(fraud_reply))) if fraud_reply else [])
        return FraudState(card_state, terminal_state, progress)

    async def write_fraud(
        self, transactions: Sequence[Transaction], rows: FeatureRows | None = None,
        progress: StreamProgress | None = None,
    ) -> None:
        if not transactions and progress is None:
            return
        # One pass: per card its newest event time and its records (``card_log``), per
        # terminal its newest event time and flat (score, member) pairs.
        cards: dict[str, _Entity] = {}
        terminals: dict[str, _Entity] = {}
        stored_rows = None if rows is None else row_bytes(rows, len(transactions))
        record = card_log.record
        for i, tx in enumerate(transactions):
            ts = tx.ts
            card = cards.get(tx.card_id)
            if card is None:
                card = cards[tx.card_id] = _Entity(ts, [])
            elif ts > card.newest:
                card.newest = ts
            card.members.append(record(tx, b"" if stored_rows is None else stored_rows[i]))
            terminal = terminals.get(tx.terminal_id)
            if terminal is None:
                terminal = terminals[tx.terminal_id] = _Entity(ts, [])
            elif ts > terminal.newest:
                terminal.newest = ts
            terminal.members += (ts, tx.transaction_id)
        self.refreshes.tick()
        ttl = self.refreshes.ttl
        rows_kept = 0 if rows is None else CARD_ROWS_CAP
        logs = []
        for card_id, card in cards.items():
            key = keys.card_log(self.ns, card_id)
            logs.append(([key], [b"".join(card.members), card.newest - CARD_MARK_BEHIND, rows_kept, ttl(key)]))
        additions = protocol.Additions(self.entities_per_call)
        for terminal_id, terminal in terminals.items():
            additions.entity()
            key = keys.terminal_transactions(self.ns, terminal_id)
            additions.key(key, protocol.below(terminal.newest - TERMINAL_HORIZON - PRUNE_GRACE), 0, "", ttl(key),
                          terminal.members)
        await self._write_additions(additions, progress,
                                    self._script_calls(self._append_cards, logs, head=[CARD_MARK_BEHIND]))

    def _embedding_entity(self, key: str, emb: CachedEmbedding) -> tuple[list[str], list[object]]:
        return [key], [np.asarray(emb.vector, dtype=np.float32).tobytes(), float(emb.ts), emb.event_id, emb.model,
                       self.refreshes.ttl(key)]

    async def write_labels(self, labels: Sequence[FraudLabel], progress: StreamProgress | None = None) -> None:
        frauds = [label for label in labels if label.is_fraud]
        if not frauds and progress is None:
            return
        by_terminal: dict[str, list[FraudLabel]] = {}
        for label in frauds:
            by_terminal.setdefault(label.terminal_id, []).append(label)
        self.refreshes.tick()
        additions = protocol.Additions(self.entities_per_call)
        for terminal_id, terminal_frauds in by_terminal.items():
            newest = max(label.ts for label in terminal_frauds)
            members: list[object] = [x for label in terminal_frauds
                                     for x in (label.ts, f"{label.transaction_id}|{label.labelled_ts!r}")]
            additions.entity()
            key = keys.terminal_frauds(self.ns, terminal_id)
            additions.key(key, protocol.below(newest - TERMINAL_HORIZON - PRUNE_GRACE), 0, "", self.refreshes.ttl(key),
                          members)
        await self._write_additions(additions, progress)

    async def _write_additions(self, additions: protocol.Additions, progress: StreamProgress | None,
                               writes: Sequence[Command] = ()) -> None:
        """One round trip: the sorted-set additions, the other ``writes`` (the card logs,
        the embeddings), then the consuming partitions' progress. Redis runs one
        connection's commands in order, so a reader that sees the progress (and reads
        the state after it, as ``read_fraud`` does) sees what it covers."""
        commands = additions.commands(self._add_many.sha)
        commands += writes
        progress_write: list[Command] = []
        if progress is not None and progress.partitions:
            progress_write = self._script_calls(self._set_progress, [(
                [keys.stream_progress(self.ns, progress.topic)],
                [x for p, (offset, ts) in progress.partitions.items() for x in (p, f"{offset}|{ts!r}")])])
        await self._in_order(commands, progress_write, replicated=True)

    async def read_progress(self, topic: str) -> Progress:
        try:
            raw = await self.client.hgetall(keys.stream_progress(self.ns, topic))
            return _progress(cast(Mapping[bytes, bytes], raw))  # the client does not decode replies
        except UNREACHABLE as exc:
            raise DependencyError(f"redis: {exc}") from exc

    async def read_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        ns = self.ns
        replies = (user for call in await self._execute(self._script_calls(self._read_users, [
            ([keys.user_sequence(ns, user_id), keys.user_seen(ns, user_id), keys.user_embedding(ns, user_id)], [])
            for user_id in user_ids
        ])) for user in call)  # type: ignore[attr-defined]
        states: dict[str, UserState] = {}
        for user_id, (sequence_reply, seen_reply, embedding_reply) in zip(user_ids, replies):
            sequence = sorted((ts, *protocol.split_member(member)) for member, ts in protocol.pairs(sequence_reply))
            seen = {member: ts for ts, member in protocol.id_entries(seen_reply)}
            embedding = decode_embedding(dict(zip(embedding_reply[::2], embedding_reply[1::2])))
            states[user_id] = UserState(sequence, seen, embedding)
        return states

    async def write_users(self, updates: Sequence[UserUpdate]) -> None:
        if not updates:
            return
        self.refreshes.tick()
        ttl = self.refreshes.ttl
        additions = protocol.Additions(self.entities_per_call)
        embeddings = []
        for update in updates:
            first_seen: dict[str, float] = {}
            for click in update.clicks:
                first_seen[click.item_id] = min(first_seen.get(click.item_id, click.ts), click.ts)
            if first_seen:  # an update may carry only the embedding
                additions.entity()
                key = keys.user_sequence(self.ns, update.user_id)
                additions.key(key, None, SEQUENCE_CAP, "", ttl(key),
                              [x for c in update.clicks for x in (c.ts, protocol.join_ids(c.event_id, c.item_id))])
                key = keys.user_seen(self.ns, update.user_id)
                additions.key(key, None, SEEN_CAP, "LT", ttl(key), [x for item, ts in first_seen.items() for x in (ts, item)])
            if update.embedding is not None:
                embeddings.append(self._embedding_entity(keys.user_embedding(self.ns, update.user_id), update.embedding))
        await self._write_additions(additions, None, self._script_calls(self._set_embeddings, embeddings))

    async def delete_namespace(self) -> int:
        """Deletes every key of this store's namespace (a replay's or a benchmark's
        scratch state); returns how many."""
        self.refreshes.forget()
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


@dataclass(slots=True)
class _Entity:
    """A card's or a terminal's part of a batch's write (``RedisStateStore.write_fraud``)."""

    newest: float
    members: list[Any]


def earliest_labels(frauds: Iterable[tuple[float, str, float]]) -> list[tuple[float, str, float]]:
    """A terminal's frauds ``(ts, id, labelled_ts)`` as read, one per transaction: the
    earliest labelled. A label sent again with another ``labelled_at`` (a re-export, a
    correction) is another member of the set, which the features would count twice."""
    earliest: dict[str, tuple[float, str, float]] = {}
    for fraud in frauds:
        held = earliest.get(fraud[1])
        if held is None or fraud[2] < held[2]:
            earliest[fraud[1]] = fraud
    return list(earliest.values())


def _count_arguments(frauds: TimeRange, ends: Sequence[float]) -> list[object]:
    """A terminal's ``COUNT_TERMINALS`` arguments: the range of its frauds to read, then
    each window end with the starts of its windows (inclusive bounds)."""
    above = protocol.above
    arguments: list[object] = [above(frauds[0]), frauds[1], len(ends)]
    for end in ends:
        arguments += [end, *map(above, window_starts(end))]
    return arguments


def _progress(raw: Mapping[bytes, bytes]) -> Progress:
    """A stream progress hash (partition -> ``offset|event time``) as read."""
    progress = {}
    for partition, value in raw.items():
        offset, ts = value.decode().split("|")
        progress[int(partition)] = (int(offset), float(ts))
    return progress


async def delete_namespace(redis: RedisSettings) -> int:
    """``RedisStateStore.delete_namespace`` for the store ``redis`` describes."""
    store = RedisStateStore.from_settings(redis)
    try:
        return await store.delete_namespace()
    finally:
        await store.close()
