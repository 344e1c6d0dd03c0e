"""The Redis state store and its in-memory twin keep the same contract (real Redis)."""

from __future__ import annotations

import numpy as np
import pytest
import redis.asyncio as aioredis

from streamer.errors import DependencyError
from streamer.events import Click, FraudLabel, Transaction, format_time
from streamer.features.fraud import DELAY_DAYS, TerminalCounts, TerminalHistory, window_starts
from streamer.pipeline.fraud import TransactionFeatures
from streamer.state.expiry import RecentRefreshes
from streamer.state.memory import InMemoryStateStore
from streamer.state.interface import (
    CARD_ROWS_CAP, SEEN_CAP, SEQUENCE_CAP, CachedEmbedding, StateStore, StreamProgress, UserUpdate,
)
from streamer.state.store import RedisStateStore

pytestmark = pytest.mark.redis
T0 = 1533081600.0
DAY = 86400.0


# Redis with every entity of a call in one script call, with two per call, and with
# one per call (as behind a Redis Cluster proxy); a Redis Cluster of three reached
# without a proxy; and the in-memory twin.
@pytest.fixture(params=["redis", "redis-2-per-call", "redis-1-per-call", "redis-cluster", "memory"])
async def store(request: pytest.FixtureRequest, redis_url: str, namespace: str):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        yield InMemoryStateStore()
        return
    if request.param == "redis-cluster":
        redis_store = RedisStateStore(request.getfixturevalue("redis_cluster_url"), namespace, cluster=True)
    else:
        per_call = {"redis": 0, "redis-2-per-call": 2, "redis-1-per-call": 1}[request.param]
        redis_store = RedisStateStore(redis_url, namespace, entities_per_call=per_call)
    yield redis_store
    if redis_store.cluster:
        await redis_store.delete_namespace()
    await redis_store.close()


def tx(i: int, ts: float, card: str = "c", terminal: str = "t") -> Transaction:
    return Transaction(f"t{i:03d}", card, terminal, 10.0 + i, ts, format_time(ts))


def row(value: float) -> list[float]:
    return [float(value)] * 16


async def test_transactions_and_frauds_are_read_back_by_event_time_window(store: StateStore) -> None:
    events = [tx(i, T0 + i * DAY, terminal=f"t{i % 2}") for i in range(10)]
    await store.write_fraud(events[5:], None, StreamProgress("transactions", {0: (10, T0 + 9 * DAY)}))
    await store.write_fraud(events[:5])
    await store.write_fraud(events[:2])  # re-processed: nothing doubles
    await store.write_labels([FraudLabel("t002", "c", "t0", T0 + 2 * DAY, True, T0 + 9 * DAY)])
    cards, terminals, _ = await store.read_fraud({"c": (T0 + 1.5 * DAY, T0 + 6 * DAY)}, {"t0": (T0, T0 + 8 * DAY)})
    assert [entry[1] for entry in cards["c"].history.entries] == ["t002", "t003", "t004", "t005", "t006"]
    assert cards["c"].history.entries[0][2] == 12.0
    assert [t[1] for t in terminals["t0"].transactions] == ["t002", "t004", "t006", "t008"]
    assert terminals["t0"].frauds == [(T0 + 2 * DAY, "t002", T0 + 9 * DAY)]
    assert cards["c"].rows == []  # no sequence asked for
    assert await store.read_progress("transactions") == {0: (10, T0 + 9 * DAY)}
    _, _, progress = await store.read_fraud({"c": (T0, T0 + DAY)}, {}, progress_of=["transactions", "fraud-labels"])
    assert progress == {"transactions": {0: (10, T0 + 9 * DAY)}, "fraud-labels": {}}


async def _sent(store: RedisStateStore, *calls) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    """The commands the client sent while ``calls`` ran (MONITOR; each as ``NAME`` or
    ``EVALSHA sha``), and those its scripts ran (``NAME``), in the order Redis ran them."""
    sent: list[str] = []
    ran: list[str] = []
    async with store.client.monitor() as monitor:
        for call in calls:
            await call()
        await store.client.ping()
        while not sent or sent[-1] != "PING":
            command = await monitor.next_command()
            words = command["command"].split(" ")
            if command["client_type"] == "lua":
                ran.append(words[0].upper())
                sent.append("(script)")
            else:
                sent.append(" ".join(words[:2]).upper() if words[0].upper() in ("EVALSHA", "SCRIPT") else words[0].upper())
    return sent, ran


async def test_a_fraud_labelled_twice_counts_once_with_its_earliest_label(store: StateStore) -> None:
    await store.write_fraud([tx(1, T0 + DAY)])
    await store.write_labels([FraudLabel("t001", "c", "t", T0 + DAY, True, T0 + 9 * DAY)])
    await store.write_labels([FraudLabel("t001", "c", "t", T0 + DAY, True, T0 + 3 * DAY)])  # sent again, earlier
    await store.write_labels([FraudLabel("t001", "c", "t", T0 + DAY, True, T0 + 5 * DAY)])
    window = (T0, T0 + 8 * DAY)
    _, listed, _ = await store.read_fraud({}, {"t": window})
    _, counted, _ = await store.read_fraud({}, {"t": window}, terminal_ends={"t": [T0 + 2 * DAY]})
    assert listed["t"].frauds == counted["t"].frauds == [(T0 + DAY, "t001", T0 + 3 * DAY)]


async def test_a_terminal_is_pruned_below_the_newest_of_each_write(store: StateStore) -> None:
    """A transaction or fraud more than the horizon and grace late is kept until the
    terminal's next write, then pruned: every store prunes a write's terminals below the
    newest event of that write (the replay's in-memory store as the worker's Redis)."""
    late = T0 + 50 * DAY
    await store.write_fraud([tx(1, T0 + 100 * DAY)])
    await store.write_fraud([tx(2, late)])  # 50 days behind the terminal's newest
    await store.write_labels([FraudLabel("t002", "c", "t", late, True, late + DAY)])
    window = (late - DAY, late + DAY)

    async def held() -> tuple[list[str], list[str]]:
        _, terminals, _ = await store.read_fraud({}, {"t": window})
        return [t[1] for t in terminals["t"].transactions], [f[1] for f in terminals["t"].frauds]

    assert await held() == (["t002"], ["t002"])
    await store.write_fraud([tx(3, T0 + 101 * DAY)])
    await store.write_labels([FraudLabel("t003", "c", "t", T0 + 101 * DAY, True, T0 + 102 * DAY)])
    assert await held() == ([], [])


async def test_a_write_stores_its_progress_after_the_state_it_covers(redis_url: str, namespace: str) -> None:
    """A reader that sees the progress then reads the state (``read_fraud``) must find
    every event the progress covers: Redis runs a connection's commands in order, so
    the progress goes last (checked on the commands Redis ran, through MONITOR)."""
    store = RedisStateStore(redis_url, namespace)
    try:
        await store.write_fraud([tx(0, T0)])  # the scripts loaded
        sent, ran = await _sent(store, lambda: store.write_users([UserUpdate(
            "u", [Click("e1", "u", "i", T0, format_time(T0), "click")],
            CachedEmbedding(np.ones(4, dtype=np.float32), T0, "e1", "m"))]), lambda: store.write_fraud(
            [tx(1, T0)], [row(1)], StreamProgress("transactions", {0: (2, T0)})))
    finally:
        await store.close()
    shas = [c.split(" ")[1].lower() for c in sent if c.startswith("EVALSHA")]
    # a user's clicks and embedding, then a terminal's transaction, a card's (with its row) and the progress
    assert shas == [store._add_many.sha, store._set_embeddings.sha, store._add_many.sha, store._append_cards.sha,
                    store._set_progress.sha], sent
    assert ran[-1] == "HSET" and ran.count("HSET") == 2  # the embedding's and, last of all, the progress


async def test_a_round_trip_sends_its_scripts_without_asking_whether_redis_has_them(redis_url: str,
                                                                                     namespace: str) -> None:
    """redis-py's own script calls in a pipeline first ask SCRIPT EXISTS, a round trip of
    its own every time."""
    store = RedisStateStore(redis_url, namespace)
    try:
        await store.write_fraud([tx(0, T0)])
        sent, _ = await _sent(store, lambda: store.write_fraud([tx(1, T0)], None, StreamProgress("transactions", {0: (2, T0)})),
                              lambda: store.read_fraud({"c": (T0 - DAY, T0)}, {"t": (T0 - DAY, T0)}, 16, ["transactions"]),
                              lambda: store.read_users(["u"]))
    finally:
        await store.close()
    assert not [c for c in sent if c.startswith("SCRIPT")], sent
    # connection set-up aside: the write's three scripts, the read's progress, cards and two scripts, the users' script
    commands = [c.split(" ")[0] for c in sent if c != "(script)" and c not in ("HELLO", "SELECT", "CLIENT")]
    assert commands == ["EVALSHA"] * 3 + ["HGETALL", "MGET"] + ["EVALSHA"] * 2 + ["PING"], sent


async def test_scripts_redis_lost_are_loaded_again_and_nothing_lands_before_them(redis_url: str, namespace: str) -> None:
    """After a restart or a failover Redis may not know the scripts: the round trip fails
    with NOSCRIPT before any of its writes ran (the progress too is written by a
    script), the scripts are loaded, and the round trip is made again."""
    store = RedisStateStore(redis_url, namespace)
    try:
        await store.write_fraud([tx(0, T0)])
        await store.client.script_flush()
        sent, _ = await _sent(store, lambda: store.write_fraud([tx(1, T0 + 1)], None, StreamProgress("transactions", {0: (2, T0 + 1)})))
        cards, _, progress = await store.read_fraud({"c": (T0 - DAY, T0 + DAY)}, {}, 0, ["transactions"])
        await store.client.script_flush()
        users = await store.read_users(["u"])  # a read the same
    finally:
        await store.close()
    first_load = sent.index("SCRIPT LOAD")
    assert "(script)" not in sent[:first_load] and sent[:first_load].count("EVALSHA " + store._add_many.sha.upper()) == 1
    assert sent.count("SCRIPT LOAD") == 7 and "(script)" in sent[first_load:]
    assert [entry[1] for entry in cards["c"].history.entries] == ["t000", "t001"]
    assert progress == {"transactions": {0: (2, T0 + 1)}} and users["u"].sequence == []


async def test_card_rows_keep_the_latest_in_event_order_without_duplicates(store: StateStore) -> None:
    events = [tx(i, T0 + 60 * i) for i in range(CARD_ROWS_CAP + 5)]
    await store.write_fraud(events[5:][::-1], [row(i) for i in range(CARD_ROWS_CAP + 5)][5:][::-1])
    await store.write_fraud(events[-3:], [row(i) for i in range(CARD_ROWS_CAP + 2, CARD_ROWS_CAP + 5)])
    await store.write_fraud(events[:5], [row(i) for i in range(5)])  # older than the cap keeps
    window = {"c": (T0 - DAY, T0 + DAY)}
    cards, _, _ = await store.read_fraud(window, {}, sequence_rows=20)
    assert [tx_id for _, tx_id, _ in cards["c"].rows] == [e.transaction_id for e in events[-20:]]
    assert all(np.frombuffer(r, dtype=np.float32)[0] == float(int(tx_id[1:])) for _, tx_id, r in cards["c"].rows)
    cards, _, _ = await store.read_fraud({"c": (T0 - DAY, T0 + 60 * 30)}, {}, sequence_rows=4)
    assert [tx_id for _, tx_id, _ in cards["c"].rows] == ["t027", "t028", "t029", "t030"]  # none after the window


async def test_a_user_keeps_the_latest_sequence_and_the_most_recently_first_seen_items(store: StateStore) -> None:
    n = SEEN_CAP + 50
    clicks = [Click(f"e{i}", "u", f"item{i % (n - 10)}", T0 + i, format_time(T0 + i), "click") for i in range(n)]
    for start in range(0, n, 100):
        await store.write_users([UserUpdate("u", clicks[start : start + 100], None)])
    state = (await store.read_users(["u"]))["u"]
    assert [event_id for _, event_id, _ in state.sequence] == [c.event_id for c in clicks[-SEQUENCE_CAP:]]
    distinct = n - 10  # the last 10 clicks touched items seen before: their first time stays
    assert len(state.seen) == SEEN_CAP
    assert set(state.seen) == {f"item{i}" for i in range(distinct - SEEN_CAP, distinct)}
    assert state.seen[f"item{distinct - 1}"] == T0 + distinct - 1


async def test_many_cards_terminals_and_users_come_back_each_with_its_own_state(store: StateStore) -> None:
    events = [tx(i, T0 + i * 60, card=f"c{i % 5}", terminal=f"t{i % 3}") for i in range(30)]
    await store.write_fraud(events, [row(i) for i in range(30)])
    await store.write_users([
        UserUpdate(f"u{u}", [Click(f"e{u}-{i}", f"u{u}", f"item{u}-{i}", T0 + i, format_time(T0 + i), "click")
                             for i in range(u + 1)],
                   CachedEmbedding(np.full(4, u, dtype=np.float32), T0 + u, f"e{u}-{u}", "m1") if u % 2 else None)
        for u in range(5)
    ])
    window = (T0 - DAY, T0 + DAY)
    cards, terminals, _ = await store.read_fraud({f"c{c}": window for c in range(5)}, {f"t{t}": window for t in range(3)},
                                              sequence_rows=3)
    for c in range(5):
        mine = [e.transaction_id for e in events if e.card_id == f"c{c}"]
        assert [entry[1] for entry in cards[f"c{c}"].history.entries] == mine
        assert [tx_id for _, tx_id, _ in cards[f"c{c}"].rows] == mine[-3:]
    for t in range(3):
        assert [entry[1] for entry in terminals[f"t{t}"].transactions] == [e.transaction_id for e in events if e.terminal_id == f"t{t}"]
    users = await store.read_users([f"u{u}" for u in range(5)])
    for u in range(5):
        assert [item for _, _, item in users[f"u{u}"].sequence] == [f"item{u}-{i}" for i in range(u + 1)]
        assert set(users[f"u{u}"].seen) == {f"item{u}-{i}" for i in range(u + 1)}
        assert (users[f"u{u}"].embedding is not None) == bool(u % 2)


async def test_ids_with_braces_bars_and_backslashes_come_back_as_they_went(store: StateStore) -> None:
    """An item id holding ``|`` (the separator of a user's members before), and ids that
    begin with ``}`` (an empty Redis Cluster hash tag: an entity's keys in other slots)
    or a backslash (what ``keys.hash_tag`` puts before those)."""
    odd = ["}u", "\\}u", "\\u", "u|1", "{u}"]
    await store.write_fraud([tx(i, T0 + i, card=card, terminal=card) for i, card in enumerate(odd)])
    await store.write_users([UserUpdate(user, [Click(f"e|{i}", user, f"sku|{user}", T0 + i, format_time(T0 + i), "click"),
                                               Click(f"e|{i}x", user, "plain", T0 + i, format_time(T0 + i), "click")], None)
                             for i, user in enumerate(odd)])
    window = (T0 - DAY, T0 + DAY)
    cards, terminals, _ = await store.read_fraud(dict.fromkeys(odd, window), dict.fromkeys(odd, window))
    users = await store.read_users(odd)
    for i, entity in enumerate(odd):
        assert [entry[1] for entry in cards[entity].history.entries] == [f"t{i:03d}"]
        assert [tx_id for _, tx_id in terminals[entity].transactions] == [f"t{i:03d}"]
        assert users[entity].sequence == [(T0 + i, f"e|{i}", f"sku|{entity}"), (T0 + i, f"e|{i}x", "plain")]


@pytest.mark.parametrize("counter", ["redis", "redis-1-per-call", "redis-cluster", "memory"])
async def test_terminals_counted_by_the_store_give_the_features_their_transactions_give(
        request: pytest.FixtureRequest, redis_url: str, namespace: str, counter: str) -> None:
    """Terminals a batch reaches within a week are counted by the store (``TerminalCounts``:
    Redis, or the in-memory twin as training and the offline replay run it) and give
    exactly the features of their transactions (the in-memory twin listing them),
    including those sitting on a window's bounds; a terminal the batch reaches over a
    week or more comes whole."""
    if counter == "redis-cluster":
        redis_store = RedisStateStore(request.getfixturevalue("redis_cluster_url"), namespace, cluster=True)
    else:
        redis_store = RedisStateStore(redis_url, namespace, entities_per_call=int(counter == "redis-1-per-call"))
    counting: StateStore = InMemoryStateStore() if counter == "memory" else redis_store
    listing = InMemoryStateStore(count_terminals=False)
    now = T0 + 40 * DAY + 0.123412345  # fractional bounds: 14 significant digits would move them past one
    end = now - DELAY_DAYS * DAY
    # every window's start and end, a bit inside and outside each, and the month before
    times = sorted({*(t + d for t in (end, *window_starts(end)) for d in (-1.0, -0.001, 0.0, 0.001, 1.0)),
                    *(T0 + i * DAY / 3 for i in range(120))})
    history = [tx(i, ts, card=f"c{i % 7}", terminal=("t", "u")[i % 2]) for i, ts in enumerate(times)]
    labels = [FraudLabel(h.transaction_id, h.card_id, h.terminal_id, h.ts, True, h.ts + offset * DAY)
              for h, offset in zip(history[::5], [1, 5, 30, 40] * 100)]
    batch = [tx(900, now, card="c1", terminal="t"), tx(901, now + 3600.0, card="c2", terminal="t"),
             tx(902, now - 8 * DAY, card="c3", terminal="u"), tx(903, now, card="c4", terminal="u"),
             tx(904, now, card="c5", terminal="v")]  # nothing in its windows
    ranges = {"t": (end - 30 * DAY, end + 3600.0), "u": (end, end)}
    try:
        for store in (counting, listing):
            await store.write_fraud(history)
            await store.write_labels(labels)
        counted = await TransactionFeatures(counting).rows(batch)
        listed = await TransactionFeatures(listing).rows(batch)
        _, terminals, _ = await counting.read_fraud({}, ranges, terminal_ends={"t": [end, end + 3600.0]})
        _, whole, _ = await listing.read_fraud({}, ranges, terminal_ends={"t": [end, end + 3600.0]})
    finally:
        await redis_store.delete_namespace()
        await redis_store.close()
    assert counted.rows == listed.rows
    assert isinstance(terminals["t"], TerminalCounts) and isinstance(terminals["u"], TerminalHistory)
    assert isinstance(whole["t"], TerminalHistory)
    assert counted.rows[0][9:15] != [0.0] * 6 and counted.rows[4][9:15] == [0.0] * 6
    assert any(risk not in (0.0, 1.0) for risk in counted.rows[0][10:15:2])


@pytest.fixture(params=["redis", "redis-1-per-call", "redis-cluster"])
async def redis_store(request: pytest.FixtureRequest, redis_url: str, namespace: str):  # type: ignore[no-untyped-def]
    """The Redis store alone (the in-memory twin keeps no TTLs), its refreshes on a clock
    the test moves."""
    if request.param == "redis-cluster":
        store = RedisStateStore(request.getfixturevalue("redis_cluster_url"), namespace, cluster=True)
    else:
        store = RedisStateStore(redis_url, namespace, entities_per_call=1 if request.param == "redis-1-per-call" else 0)
    store.refreshes = RecentRefreshes(store.ttl, clock=Clock())
    yield store
    await store.delete_namespace()
    await store.close()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _ttls(store: RedisStateStore) -> dict[str, int]:
    """Every key of the store's namespace, with its TTL in seconds (-1: none)."""
    return {key.decode(): await store.client.ttl(key) async for key in store.client.scan_iter(match=f"{store.ns}:*")}


async def _write_every_kind_of_key(store: RedisStateStore, at: float) -> None:
    await store.write_fraud([tx(int(at) % 1000, T0 + at)], [row(at)], StreamProgress("transactions", {0: (1, T0 + at)}))
    await store.write_labels([FraudLabel(f"f{at}", "c", "t", T0 + at, True, T0 + at + DAY)])
    await store.write_users([UserUpdate("u", [Click(f"e{at}", "u", "i", T0 + at, format_time(T0 + at), "click")],
                                        CachedEmbedding(np.ones(4, dtype=np.float32), T0 + at, f"e{at}", "m"))])


async def test_every_key_a_write_makes_expires_after_the_ttl(redis_store: RedisStateStore) -> None:
    await _write_every_kind_of_key(redis_store, 0)
    ttls = await _ttls(redis_store)
    # the card's log; terminal transactions and frauds; user sequence, seen items and embedding
    assert len([key for key in ttls if "progress" not in key]) == 6, ttls
    assert all(redis_store.ttl - 60 < ttl <= redis_store.ttl for key, ttl in ttls.items() if "progress" not in key), ttls


async def test_a_key_written_again_within_the_hour_keeps_its_ttl_and_gets_it_again_after(
        redis_store: RedisStateStore) -> None:
    """Refreshing a TTL of weeks on every write cost an EXPIRE per key per batch
    (``streamer.state.expiry``)."""
    await _write_every_kind_of_key(redis_store, 0)
    for key in await _ttls(redis_store):
        await redis_store.client.expire(key, 100)
    redis_store.refreshes.clock.now += 1800  # type: ignore[attr-defined]
    await _write_every_kind_of_key(redis_store, 1)
    assert all(ttl <= 100 for ttl in (await _ttls(redis_store)).values())
    redis_store.refreshes.clock.now += 1800  # type: ignore[attr-defined]
    await _write_every_kind_of_key(redis_store, 2)
    ttls = await _ttls(redis_store)
    assert all(redis_store.ttl - 60 < ttl for key, ttl in ttls.items() if "progress" not in key), ttls


async def test_after_redis_lost_its_scripts_or_a_round_trip_failed_every_key_gets_its_ttl_again(
        redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis that lost its scripts (a restart, a failover) may have lost keys, which a
    write would make again without a TTL; so may a round trip that failed."""
    store = RedisStateStore(redis_url, namespace)
    try:
        await _write_every_kind_of_key(store, 0)
        for lose in ("scripts", "round trip"):
            for key in await _ttls(store):
                await store.client.expire(key, 100)
            if lose == "scripts":
                await store.client.script_flush()
            else:
                failing = store._round_trip

                async def fail_once(*args: object) -> list[object]:
                    monkeypatch.setattr(store, "_round_trip", failing)
                    raise aioredis.ConnectionError("connection reset")

                monkeypatch.setattr(store, "_round_trip", fail_once)
                with pytest.raises(DependencyError):
                    await store.write_fraud([tx(9, T0 + 9)])
            await _write_every_kind_of_key(store, 1)
            ttls = await _ttls(store)
            assert all(store.ttl - 60 < ttl for key, ttl in ttls.items() if "progress" not in key), (lose, ttls)
    finally:
        await store.close()


async def test_deleting_a_namespace_leaves_the_others(redis_url: str, namespace: str) -> None:
    mine, other = RedisStateStore(redis_url, namespace), RedisStateStore(redis_url, namespace + "-other")
    try:
        for store in (mine, other):
            await store.write_fraud([tx(i, T0 + i, card=f"c{i}", terminal=f"t{i}") for i in range(3)], [row(i) for i in range(3)])
        assert await mine.delete_namespace() == 6  # per transaction: the card's log, terminal tx
        cards, _, _ = await mine.read_fraud({"c0": (T0 - 1, T0 + 1)}, {}, sequence_rows=4)
        assert cards["c0"].history.entries == [] and cards["c0"].rows == []
        cards, _, _ = await other.read_fraud({"c0": (T0 - 1, T0 + 1)}, {}, sequence_rows=4)
        assert [entry[1] for entry in cards["c0"].history.entries] == ["t000"]
    finally:
        await other.delete_namespace()
        await mine.close()
        await other.close()
