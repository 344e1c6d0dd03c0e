"""Traffic for the demo: real transactions and clicks, or a built-in generator.

Yields ``(topic, key, value)`` tuples in event-time order. From the benchmark data it
plays the handbook's transactions (with each fraud label released 7 days of event
time later) interleaved with Amazon Beauty users' clicks; without the data folder it
generates look-alike traffic (card and terminal ids, amounts with a long tail above
220, clicks over the shipped model's catalogue). Every ``bad_every``-th message is
deliberately broken, so the dead-letter topic shows up on screen too.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from pathlib import Path

from streamer.datasets import label_for, read_fraud_csv, read_sequences
from streamer.events import Click, click_to_json, encode, format_time, label_to_json, transaction_to_json, Transaction
from streamer.settings import TopicSettings

Message = tuple[str, bytes, bytes]
BAD_MESSAGES = (b"not json at all", b'{"transaction_id": 1}', b"[1, 2, 3]")


def transactions_from_data(path: Path, delay_days: float, topics: TopicSettings) -> Iterator[tuple[float, Message]]:
    pending: list[tuple[float, str, bytes]] = []
    for tx, is_fraud in read_fraud_csv(path):
        while pending and pending[0][0] <= tx.ts:
            ts, key, value = heapq.heappop(pending)
            yield ts, (topics.fraud_labels, key.encode(), value)
        label = label_for(tx, is_fraud, delay_days)
        heapq.heappush(pending, (label.labelled_ts, tx.card_id, encode(label_to_json(label))))
        yield tx.ts, (topics.transactions, tx.card_id.encode(), encode(transaction_to_json(tx)))


def synthetic_transactions(start_ts: float, topics: TopicSettings, seed: int = 7) -> Iterator[tuple[float, Message]]:
    rng = random.Random(seed)
    ts = start_ts
    for n in itertools.count():
        ts += rng.expovariate(1 / 8.0)
        amount = round(rng.lognormvariate(3.5, 0.8), 2)
        tx = Transaction(f"gen-{n}", str(rng.randrange(5000)), str(rng.randrange(10000)), amount, ts, format_time(ts))
        yield ts, (topics.transactions, tx.card_id.encode(), encode(transaction_to_json(tx)))


def clicks_from_sequences(users: Iterator[tuple[str, list[str]]], start_ts: float, topics: TopicSettings) -> Iterator[tuple[float, Message]]:
    """Users take turns; each click is 9 s of event time after the previous one
    (about the pace of the transactions, so the screen shows both)."""
    ts = start_ts
    serial = itertools.count()
    for user_id, items in users:
        for item_id in items:
            ts += 9.0
            click = Click(f"c{next(serial)}", user_id, item_id, ts, format_time(ts), "click")
            yield ts, (topics.clickstream, user_id.encode(), encode(click_to_json(click)))


def synthetic_users(catalogue: list[str], seed: int = 11) -> Iterator[tuple[str, list[str]]]:
    rng = random.Random(seed)
    for user in itertools.count():
        yield f"gen-user-{user}", rng.sample(catalogue, k=rng.randint(2, 8))


def demo_traffic(data_dir: Path | None, catalogue: list[str], topics: TopicSettings, bad_every: int = 500) -> Iterator[Message]:
    fraud_csv = data_dir / "fraud" / "transactions_2018-04-01_2018-07-31.csv.gz" if data_dir else None
    beauty = data_dir / "rec" / "Beauty.txt" if data_dir else None
    if fraud_csv and fraud_csv.is_file():
        transactions = transactions_from_data(fraud_csv, 7.0, topics)
        start_ts = 1522540800.0  # 2018-04-01, the file's first day
    else:
        start_ts = 1533081600.0  # 2018-08-01
        transactions = synthetic_transactions(start_ts, topics)
    users = read_sequences(beauty) if beauty and beauty.is_file() else synthetic_users(catalogue)
    clicks = clicks_from_sequences(users, start_ts, topics)
    merged = heapq.merge(transactions, clicks, key=lambda pair: pair[0])
    for n, (_, message) in enumerate(merged, start=1):
        if bad_every and n % bad_every == 0:
            yield message[0], message[1], BAD_MESSAGES[(n // bad_every) % len(BAD_MESSAGES)]
        yield message
