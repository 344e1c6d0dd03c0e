"""The Redis state store on a real Redis Cluster of three, reached without a proxy
(``STREAMER_REDIS_CLUSTER``). The store's contract on it is in ``test_state_store``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import redis

from streamer.embedded import EmbeddedRedisCluster
from streamer.errors import DependencyError
from streamer.events import FraudLabel, Transaction, format_time
from streamer.state import keys
from streamer.state.interface import StreamProgress
from streamer.state.store import Command, RedisStateStore

pytestmark = pytest.mark.redis
T0 = 1533081600.0
DAY = 86400.0


class RoundTrips(RedisStateStore):
    """The cluster store, recording the commands of each round trip it makes."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.trips: list[list[Command]] = []

    async def _round_trip(self, commands: list[Command], replicated: bool = False) -> list[object]:
        self.trips.append(commands)
        return await super()._round_trip(commands, replicated)


@pytest.fixture
async def store(redis_cluster_url: str, namespace: str) -> AsyncIterator[RoundTrips]:
    cluster_store = RoundTrips(redis_cluster_url, namespace, cluster=True)
    yield cluster_store
    await cluster_store.delete_namespace()
    await cluster_store.close()


def nodes(cluster: EmbeddedRedisCluster) -> list[redis.Redis]:
    """A client per node of the cluster."""
    return [redis.Redis(host="127.0.0.1", port=port) for port in cluster.ports]


def transactions(n: int) -> list[Transaction]:
    return [Transaction(f"t{i:04d}", f"c{i % 40}", f"term{i % 30}", 1.0 + i, T0 + i * 60.0, format_time(T0 + i * 60.0))
            for i in range(n)]


async def test_each_entity_stays_on_one_node_and_the_entities_spread_over_all(store: RoundTrips, redis_cluster: EmbeddedRedisCluster,
                                                                               namespace: str) -> None:
    await store.write_fraud(transactions(200), [[float(i)] * 16 for i in range(200)])
    per_node = [sorted(k.decode() for k in node.scan_iter(match=f"{namespace}:*")) for node in nodes(redis_cluster)]
    assert all(per_node), per_node  # every node holds some
    for card in range(40):  # a card's log on one node (a terminal's keys are tested alike below)
        holders = [i for i, held in enumerate(per_node) if any(f"{{c{card}}}" in key for key in held)]
        assert len(holders) == 1, (card, holders)
    assert store.entities_per_call == 1
    cards, _, _ = await store.read_fraud({"c3": (T0 - DAY, T0 + DAY)}, {}, sequence_rows=16)
    assert [entry[1] for entry in cards["c3"].history.entries] == [f"t{i:04d}" for i in range(3, 200, 40)]
    assert len(cards["c3"].rows) == 5


async def test_a_stream_progress_is_written_after_and_read_before_the_state_it_covers(store: RoundTrips) -> None:
    """The nodes of one round trip run their commands side by side, so the progress of a
    write goes in a round trip after its state's, and a read asks for it before the state."""
    progress = StreamProgress("transactions", {0: (3, T0 + 120.0)})
    await store.write_fraud(transactions(3), None, progress)
    await store.read_fraud({"c0": (T0 - DAY, T0 + DAY)}, {"term0": (T0 - DAY, T0 + DAY)}, 0, ["transactions"])
    progress_sha = store._set_progress.sha
    trips = [[command[1] if command[0] == "EVALSHA" else command[0] for command in trip] for trip in store.trips]
    write_state, write_progress, read_progress, read_state = trips
    assert progress_sha not in write_state and write_progress == [progress_sha]
    assert store._add_many.sha in write_state
    assert read_progress == ["HGETALL"] and "HGETALL" not in read_state and len(read_state) == 2  # a card, a terminal
    assert await store.read_progress("transactions") == {0: (3, T0 + 120.0)}


async def test_scripts_lost_by_every_node_or_by_one_are_loaded_again(store: RoundTrips, redis_cluster: EmbeddedRedisCluster,
                                                                      namespace: str) -> None:
    """A restarted cluster, or one primary that failed over, may not know the scripts: the
    round trip fails with NOSCRIPT, the scripts are loaded on every primary, and the round
    trip is made again (every write is idempotent)."""
    await store.write_fraud(transactions(10))
    holder = store.client.get_node_from_key(keys.card_log(namespace, "c20"))  # type: ignore[union-attr]
    one = [node for node in nodes(redis_cluster) if node.connection_pool.connection_kwargs["port"] == holder.port]
    for batch, lost_by in ((transactions(20)[10:], nodes(redis_cluster)), (transactions(30)[20:], one)):
        assert lost_by
        for node in lost_by:
            node.script_flush()
        trips = len(store.trips)
        await store.write_fraud(batch)
        assert len(store.trips) == trips + 2, store.trips[trips:]  # failed, then made again
    cards, _, _ = await store.read_fraud({f"c{i}": (T0 - DAY, T0 + DAY) for i in range(40)}, {})
    assert sorted(entry[1] for card in cards.values() for entry in card.history.entries) == [f"t{i:04d}" for i in range(30)]


async def test_every_node_is_talked_to_with_commands_packed_by_hiredis(store: RoundTrips) -> None:
    await store.write_fraud(transactions(50))
    assert await store.ping()
    cluster_nodes = store.client.get_nodes()  # type: ignore[union-attr]
    assert len(cluster_nodes) == 3
    assert all(node.connection_class.__name__ == "HiredisConnection" for node in cluster_nodes)


async def test_deleting_a_namespace_deletes_it_on_every_node(store: RoundTrips, redis_cluster: EmbeddedRedisCluster,
                                                              namespace: str) -> None:
    other = RedisStateStore(redis_cluster.url, namespace + "-other", cluster=True)
    try:
        await store.write_fraud(transactions(60), [[0.0] * 16] * 60)
        await other.write_fraud(transactions(5))
        assert await store.delete_namespace() == 40 + 30  # the cards' logs, the terminals
        assert not [k for node in nodes(redis_cluster) for k in node.scan_iter(match=f"{namespace}:*")]
        cards, _, _ = await other.read_fraud({"c1": (T0 - DAY, T0 + DAY)}, {})
        assert [entry[1] for entry in cards["c1"].history.entries] == ["t0001"]
    finally:
        await other.delete_namespace()
        await other.close()


def rows(first: int, last: int) -> list[list[float]]:
    return [[float(i)] * 16 for i in range(first, last)]


@asynccontextmanager
async def cluster_of_its_own(namespace: str, replicas: int = 0,
                             wait_replicas: int = 0) -> AsyncIterator[tuple[EmbeddedRedisCluster, RedisStateStore]]:
    """A cluster of three for a test that stops, moves or fails over its nodes, and a store
    on it that has written ``transactions(80)`` with their rows."""
    with EmbeddedRedisCluster(nodes=3, replicas=replicas) as cluster:
        cluster_store = RedisStateStore(cluster.url, namespace, cluster=True, wait_replicas=wait_replicas)
        try:
            await cluster_store.write_fraud(transactions(80), rows(0, 80))
            yield cluster, cluster_store
        finally:
            await cluster_store.close()  # the cluster goes with its keys


async def test_a_cluster_that_lost_a_node_fails_the_batch_for_a_retry_and_is_not_healthy(namespace: str) -> None:
    """A node down (its slots uncovered) is ``DependencyError``, which the worker retries
    with back-off; ``ping`` asks every primary."""
    async with cluster_of_its_own(namespace) as (cluster, cluster_store):
        assert await cluster_store.ping()
        cluster.servers[2].stop()  # type: ignore[attr-defined]
        with pytest.raises(DependencyError):
            await cluster_store.write_fraud(transactions(50))
        assert not await cluster_store.ping()


def begin_moving(cluster: EmbeddedRedisCluster, slot: int, to: int) -> Callable[[list[bytes]], None]:
    """Start resharding ``slot`` to node ``to``, as ``redis-cli --cluster reshard`` does;
    returns what moves some of its keys (all of those left: none given, and the slot is
    then given to ``to``)."""
    clients = nodes(cluster)[: cluster.nodes]  # the primaries
    ids = [client.execute_command("CLUSTER MYID").decode() for client in clients]
    owner = next(i for i, client in enumerate(clients) if client.execute_command("CLUSTER COUNTKEYSINSLOT", slot) > 0)
    source, target = clients[owner], clients[to]
    target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[owner])
    source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[to])

    def move(some: list[bytes]) -> None:
        moving = some or source.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000)
        if moving:
            source.execute_command("MIGRATE", "127.0.0.1", cluster.ports[to], "", 0, 5000, "KEYS", *moving)
        if not some:
            for client in clients:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[to])

    return move


def other_node(cluster: EmbeddedRedisCluster, port: int) -> int:
    return next(i for i, other in enumerate(cluster.ports) if other != port)


async def test_a_card_whose_slot_moved_to_another_node_is_read_and_written_there(namespace: str) -> None:
    """Resharding moves a slot's keys to another node while the worker's client still maps
    the slot to the old one: its commands are redirected (MOVED) and the client learns
    the new map."""
    async with cluster_of_its_own(namespace) as (cluster, cluster_store):
        key = keys.card_log(namespace, "c7")
        before = cluster_store.client.get_node_from_key(key).port  # type: ignore[union-attr]
        begin_moving(cluster, cluster_store.client.keyslot(key), to=other_node(cluster, before))([])  # type: ignore[union-attr]
        await cluster_store.write_fraud(transactions(120)[80:], rows(80, 120))
        cards, _, _ = await cluster_store.read_fraud({"c7": (T0 - DAY, T0 + DAY)}, {}, sequence_rows=16)
        assert cluster_store.client.get_node_from_key(key).port != before  # type: ignore[union-attr]
    assert [entry[1] for entry in cards["c7"].history.entries] == [f"t{i:04d}" for i in range(7, 120, 40)]
    assert len(cards["c7"].rows) == 3


async def test_a_terminal_split_by_a_slot_being_moved_fails_the_batch_until_the_move_is_done(namespace: str) -> None:
    """While resharding has moved one of a terminal's keys and not the other, a script over
    both cannot run anywhere: the batch fails with ``DependencyError`` (the worker retries
    it with back-off), and once the slot has moved the same read answers."""
    async with cluster_of_its_own(namespace) as (cluster, cluster_store):
        await cluster_store.write_fraud(transactions(120)[80:], rows(80, 120))
        await cluster_store.write_labels([FraudLabel("t0097", "c17", "term7", T0 + 97 * 60.0, True, T0 + 97 * 60.0)])
        key = keys.terminal_transactions(namespace, "term7")
        before = cluster_store.client.get_node_from_key(key).port  # type: ignore[union-attr]
        move = begin_moving(cluster, cluster_store.client.keyslot(key), to=other_node(cluster, before))  # type: ignore[union-attr]
        move([key.encode()])  # the terminal's transactions, not its frauds
        window = {"term7": (T0 - DAY, T0 + DAY)}
        with pytest.raises(DependencyError):
            await cluster_store.read_fraud({}, window)
        move([])
        _, terminals, _ = await cluster_store.read_fraud({}, window)
    assert [entry[1] for entry in terminals["term7"].transactions] == [f"t{i:04d}" for i in range(7, 120, 30)]
    assert [entry[1] for entry in terminals["term7"].frauds] == ["t0097"]  # type: ignore[union-attr]


async def test_a_primary_that_fails_over_to_its_replica_keeps_the_state_and_takes_the_next_write(namespace: str) -> None:
    """A primary stops; its replica takes over its slots (``cluster-node-timeout`` 2 s);
    the next write lands there, retried by the client or, past its retries, by the
    worker's back-off (``DependencyError``), and nothing written before is lost: the first
    write waited for the replicas (``wait_replicas``)."""
    async with cluster_of_its_own(namespace, replicas=1, wait_replicas=1) as (cluster, cluster_store):
        cluster_store.wait_replicas = 0  # the replica that takes over has none of its own
        cluster.servers[1].stop()  # type: ignore[attr-defined]
        for _ in range(60):
            try:
                await cluster_store.write_fraud(transactions(120)[80:], rows(80, 120))
                break
            except DependencyError:
                await asyncio.sleep(0.5)
        else:
            pytest.fail("no write landed within 30 s of the failover")
        cards, _, _ = await cluster_store.read_fraud({f"c{i}": (T0 - DAY, T0 + DAY) for i in range(40)}, {},
                                                     sequence_rows=16)
        assert await cluster_store.ping()
    assert sorted(entry[1] for card in cards.values() for entry in card.history.entries) == [f"t{i:04d}" for i in range(120)]
    assert all(len(card.rows) == 3 for card in cards.values())


async def test_a_write_waiting_for_replicas_goes_again_when_its_slots_moved_meanwhile(namespace: str) -> None:
    """The client sends a write to the node its map names and is redirected to the slot's
    new owner; the ``WAIT`` went to the old owner, so the batch fails for a retry, which
    waits on the new one."""
    async with cluster_of_its_own(namespace, replicas=1, wait_replicas=1) as (cluster, cluster_store):
        key = keys.card_log(namespace, "c7")
        before = cluster_store.client.get_node_from_key(key).port  # type: ignore[union-attr]
        begin_moving(cluster, cluster_store.client.keyslot(key), to=other_node(cluster, before))([])  # type: ignore[union-attr]
        with pytest.raises(DependencyError, match="slots moved"):
            await cluster_store.write_fraud([transactions(8)[7]])  # card c7's
        await cluster_store.write_fraud([transactions(8)[7]])
        assert cluster_store.client.get_node_from_key(key).port != before  # type: ignore[union-attr]
