"""A card's log in Redis (``streamer.state.card_log``): appended to, compacted once it has
doubled, and read as the in-memory twin reads its sorted sets, whatever the order and
the repeats of the writes."""

from __future__ import annotations

import random

import pytest
import redis.asyncio as aioredis

from streamer.events import Transaction, format_time
from streamer.features.fraud import CARD_HORIZON
from streamer.state import card_log, keys
from streamer.state.memory import InMemoryStateStore
from streamer.state.interface import CARD_ROWS_CAP, PRUNE_GRACE
from streamer.state.store import RedisStateStore

pytestmark = pytest.mark.redis
T0 = 1533081600.0
DAY = 86400.0


def history(seed: int, days: int = 150, per_day: int = 3) -> list[list[Transaction]]:
    """A card's transactions in batches as a worker could store them: mostly in order,
    some late by up to ten days (beyond the prune grace), some batches stored twice."""
    rng = random.Random(seed)
    events = sorted(T0 + rng.uniform(0, days * DAY) for _ in range(days * per_day))
    txs = [Transaction(f"tx{i:05d}", "c", "t", round(rng.uniform(1, 500), 2), ts, format_time(ts))
           for i, ts in enumerate(events)]
    late = [tx for tx in txs if rng.random() < 0.05]
    on_time = [tx for tx in txs if tx not in late]
    batches = []
    while on_time:
        batches.append(on_time[: rng.randint(1, 8)])
        del on_time[: len(batches[-1])]
        due = [tx for tx in late if tx.ts <= batches[-1][-1].ts - rng.uniform(0, 10) * DAY]
        if due:
            batches.append(due)
            late = [tx for tx in late if tx not in due]
        if rng.random() < 0.05:
            batches.append(batches[-1])  # re-processed after a crash
    return batches


def rows_of(batch: list[Transaction]) -> list[list[float]]:
    return [[float(int(tx.transaction_id[2:]))] * 16 for tx in batch]


# A busy card (more than ``CARD_ROWS_CAP`` transactions a month) and a quiet one (rows
# older than the prune mark kept by count), each with and without rows.
@pytest.mark.parametrize("with_rows", [True, False])
@pytest.mark.parametrize("days,per_day", [(150, 3), (400, 1)])
async def test_a_card_log_reads_as_the_sorted_sets_it_replaced_read_and_stays_bounded(
        redis_url: str, namespace: str, with_rows: bool, days: int, per_day: int) -> None:
    redis_store, twin = RedisStateStore(redis_url, namespace), InMemoryStateStore()
    sequence_rows = CARD_ROWS_CAP if with_rows else 0
    written = 0
    try:
        for n, batch in enumerate(history(seed=7, days=days, per_day=per_day)):
            rows = rows_of(batch) if with_rows else None
            for store in (redis_store, twin):
                await store.write_fraud(batch, rows)
            written += len(card_log.record(batch[0], b"\0" * 64 if with_rows else b"")) * len(batch)
            newest = max(tx.ts for tx in batch)
            for lo, hi in [(newest - CARD_HORIZON, newest), (newest - CARD_HORIZON - 9 * DAY, newest - 9 * DAY),
                           (newest - DAY, newest + DAY)]:
                window = {"c": (lo, hi)}
                got, _, _ = await redis_store.read_fraud(window, {}, sequence_rows)
                want, _, _ = await twin.read_fraud(window, {}, sequence_rows)
                assert got["c"].history.entries == want["c"].history.entries, (n, lo, hi)
                assert got["c"].rows == want["c"].rows, (n, lo, hi)
        log = await aioredis.Redis.from_url(redis_url).get(keys.card_log(namespace, "c"))
    finally:
        await redis_store.close()
    assert log is not None
    compacted = card_log.HEADER.unpack_from(log)[1]
    # compacted on the way, and within its bound (a batch holds up to 8 transactions)
    assert compacted < len(log) <= 2 * compacted + card_log.COMPACT_SLACK_BYTES + 8 * (written // (days * per_day))
    assert len(log) < written / 2


async def test_a_transaction_below_the_prune_mark_is_not_read_though_the_log_still_holds_it(
        redis_url: str, namespace: str) -> None:
    """The sorted sets pruned on every write; the log is compacted now and then, so its
    reader skips what a write asked to prune (the header's mark) until then."""
    store = RedisStateStore(redis_url, namespace)
    old = Transaction("old", "c", "t", 5.0, T0, format_time(T0))
    new_ts = T0 + CARD_HORIZON + PRUNE_GRACE + DAY
    new = Transaction("new", "c", "t", 7.0, new_ts, format_time(new_ts))
    try:
        await store.write_fraud([old], [[1.0] * 16])
        await store.write_fraud([new], [[2.0] * 16])
        await store.write_fraud([old], [[1.0] * 16])  # late again: stored, below the mark
        log = await store.client.get(keys.card_log(namespace, "c"))
        cards, _, _ = await store.read_fraud({"c": (T0 - DAY, new_ts)}, {}, CARD_ROWS_CAP)
    finally:
        await store.close()
    assert log is not None and log.count(b"old") == 2  # not compacted yet
    assert [entry[1] for entry in cards["c"].history.entries] == ["new"]
    assert [tx_id for _, tx_id, _ in cards["c"].rows] == ["old", "new"]  # a row is kept by count, not by age


async def test_a_transaction_id_of_any_length_is_stored_and_read_back(redis_url: str, namespace: str) -> None:
    store = RedisStateStore(redis_url, namespace)
    long_id = "x" * 70_000  # beyond a two-byte length
    try:
        await store.write_fraud([Transaction(long_id, "c", "t", 5.0, T0, format_time(T0))], [[1.0] * 16])
        cards, _, _ = await store.read_fraud({"c": (T0 - DAY, T0)}, {}, CARD_ROWS_CAP)
    finally:
        await store.close()
    assert [entry[1] for entry in cards["c"].history.entries] == [long_id]
    assert [tx_id for _, tx_id, _ in cards["c"].rows] == [long_id]
