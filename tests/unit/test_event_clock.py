"""The event-time barrier between labels and scoring, over the in-memory store."""

from __future__ import annotations

import asyncio

import orjson

from streamer.events import format_time
from streamer.pipeline.fraud import FraudPipeline, LabelPipeline
from streamer.pipeline.event_clock import EventClock
from streamer.records import SourceRecord
from streamer.settings import Settings
from streamer.state.memory import InMemoryStateStore

T0 = 1533081600.0


class Brokers:
    def __init__(self, highs: dict[int, int]) -> None:
        self.highs = highs
        self.asked_since: list[float | None] = []

    async def highwaters(self, topic: str, since_ms: float | None = None) -> dict[int, int]:
        self.asked_since.append(since_ms)
        return dict(self.highs)


def label(partition: int, offset: int, labelled: float) -> SourceRecord:
    value = {"transaction_id": f"{partition}-{offset}", "card_id": "c", "terminal_id": "t", "timestamp": format_time(labelled - 7 * 86400),
             "is_fraud": True, "labelled_at": format_time(labelled)}
    return SourceRecord("fraud-labels", partition, offset, b"c", orjson.dumps(value))


async def test_waits_for_lagging_partitions_and_not_for_caught_up_ones() -> None:
    store = InMemoryStateStore()
    labels = LabelPipeline(store, Settings())
    brokers = Brokers({0: 2, 1: 1, 2: 0})  # partition 2 never had a label
    clock = EventClock(store, "fraud-labels", brokers, max_wait_ms=2000, poll_ms=1)
    await labels.process([label(0, 0, T0), label(0, 1, T0 + 100)])
    assert await clock.lagging(T0 + 50) == [1]  # partition 1 has an unread label

    waiter = asyncio.create_task(clock.wait_until(T0 + 50))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await labels.process([label(1, 0, T0 + 10)])  # partition 1 is now fully stored
    assert await asyncio.wait_for(waiter, 1.0) is True
    assert await clock.lagging(T0 + 1000) == []  # everything the broker holds is stored


async def test_gives_up_after_the_maximum_wait() -> None:
    store = InMemoryStateStore()
    clock = EventClock(store, "fraud-labels", Brokers({0: 5}), max_wait_ms=20, poll_ms=1)
    assert await clock.wait_until(T0) is False


async def test_bad_labels_still_advance_the_progress() -> None:
    store = InMemoryStateStore()
    await LabelPipeline(store, Settings()).process([SourceRecord("fraud-labels", 3, 7, None, b"junk")])
    assert (await store.read_progress("fraud-labels"))[3][0] == 8


class CountingBrokers(Brokers):
    calls = 0

    async def highwaters(self, topic: str, since_ms: float | None = None) -> dict[int, int]:
        self.calls += 1
        return dict(self.highs)


def transaction(partition: int, offset: int, ts: float) -> SourceRecord:
    value = {"transaction_id": f"{partition}-{offset}", "card_id": f"c{partition}", "terminal_id": "t", "amount": 5.0,
             "timestamp": format_time(ts)}
    return SourceRecord("transactions", partition, offset, b"c", orjson.dumps(value))


async def test_scores_are_marked_partial_when_another_partition_lags_more_than_the_delay() -> None:
    from streamer.inference.fraud_scorer import FraudScorer

    store = InMemoryStateStore()
    brokers = CountingBrokers({0: 0, 1: 100})  # nothing in partition 0 yet
    clock = EventClock(store, "transactions", brokers, slack_s=7 * 86400)
    settings = Settings()
    pipeline = FraudPipeline(FraudScorer(settings.models.fraud), store, settings, transaction_clock=clock)

    async def flagged(record: SourceRecord) -> bool:
        (score, *_) = await pipeline.process([record])
        return bool(orjson.loads(score.value).get("partial_state"))

    assert not await flagged(transaction(1, 0, T0))
    brokers.highs[0] = 100
    assert await flagged(transaction(0, 0, T0 + 10 * 86400))  # partition 1 stored only up to T0
    assert not await flagged(transaction(1, 1, T0 + 4 * 86400))  # its own partition is never the laggard
    assert not await flagged(transaction(0, 1, T0 + 10 * 86400))  # 6 days apart: within the delay
    calls = brokers.calls
    assert not await flagged(transaction(0, 2, T0 + 10 * 86400))
    assert brokers.calls == calls  # all partitions within the delay: the broker is not asked


class CountingStore(InMemoryStateStore):
    progress_reads = 0

    async def read_progress(self, topic: str):  # type: ignore[no-untyped-def]
        self.progress_reads += 1
        return await super().read_progress(topic)


def labelled_pipeline(store: InMemoryStateStore, brokers: Brokers):  # type: ignore[no-untyped-def]
    from streamer.inference.fraud_scorer import FraudScorer

    settings = Settings().replace(fraud={"publish_features": True})
    clock = EventClock(store, "fraud-labels", brokers, max_wait_ms=2000, poll_ms=1)
    return FraudPipeline(FraudScorer(settings.models.fraud), store, settings, label_clock=clock)


def terminal_risk(output) -> float:  # type: ignore[no-untyped-def]
    return float(orjson.loads(output.value)["features"]["TERMINAL_ID_RISK_1DAY_WINDOW"])


async def test_a_label_stored_while_the_batch_waits_reaches_its_features() -> None:
    """The batch's state is read before its label wait ends: it is read again after."""
    store = InMemoryStateStore()
    brokers = Brokers({0: 0})
    pipeline = labelled_pipeline(store, brokers)
    await pipeline.process([transaction(0, 0, T0 + 0.5 * 86400)])  # id "0-0", terminal "t"
    brokers.highs[0] = 1  # its fraud label is on the broker, not yet stored
    scoring = asyncio.create_task(pipeline.process([transaction(1, 0, T0 + 8 * 86400)]))
    await asyncio.sleep(0.02)
    assert not scoring.done()
    value = {"transaction_id": "0-0", "card_id": "c0", "terminal_id": "t", "timestamp": format_time(T0 + 0.5 * 86400),
             "is_fraud": True, "labelled_at": format_time(T0 + 2 * 86400)}
    await LabelPipeline(store, Settings()).process([SourceRecord("fraud-labels", 0, 0, b"c0", orjson.dumps(value))])
    (score, *_) = await asyncio.wait_for(scoring, 1.0)
    assert terminal_risk(score) == 1.0  # the one earlier transaction at "t" was a fraud


async def test_a_batch_read_again_after_its_label_wait_gets_the_features_it_got_before() -> None:
    """The card cache holds the states the first read took the batch's transactions
    into: read again, the earlier-arriving transaction must not count the later one,
    earlier in event time, of the same card (as without a wait, and as training)."""

    def keyed(offset: int, ts: float) -> SourceRecord:  # keyed by card: the cache stays on
        value = {"transaction_id": f"tx-{offset}", "card_id": "c0", "terminal_id": "t", "amount": 5.0,
                 "timestamp": format_time(ts)}
        return SourceRecord("transactions", 0, offset, b"c0", orjson.dumps(value))

    async def day_counts(label_lag: int) -> list[float]:
        pipeline = labelled_pipeline(InMemoryStateStore(), Brokers({0: label_lag}))
        pipeline.label_clock.max_wait_s = 0.01  # type: ignore[union-attr]  # the label never comes
        scores = await pipeline.process([keyed(0, T0 + 100), keyed(1, T0 + 50)])
        return [orjson.loads(s.value)["features"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] for s in scores
                if s.topic == "fraud-scores"]

    assert await day_counts(label_lag=0) == [1.0, 1.0]
    assert await day_counts(label_lag=1) == [1.0, 1.0]


async def test_a_batch_whose_labels_are_stored_reads_the_progress_with_its_state() -> None:
    store = CountingStore()
    brokers = CountingBrokers({0: 0})
    pipeline = labelled_pipeline(store, brokers)
    for offset in range(3):
        await pipeline.process([transaction(0, offset, T0 + offset)])
    assert store.progress_reads == 0  # no round trip of its own
    assert brokers.calls == 3  # nothing at or past the batch's time stored: the broker is asked each time


class OverlapBrokers(Brokers):
    """Records how many asks were in flight at once."""

    def __init__(self, highs: dict[int, int]) -> None:
        super().__init__(highs)
        self.in_flight = 0
        self.most_at_once = 0

    async def highwaters(self, topic: str, since_ms: float | None = None) -> dict[int, int]:
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            await asyncio.sleep(0.01)  # a fetch request sent after the ask, held by the broker
            return dict(self.highs)
        finally:
            self.in_flight -= 1


def checking_pipeline(brokers: Brokers) -> FraudPipeline:
    """A fraud pipeline with both clocks asking ``brokers``, over an in-memory store."""
    from streamer.inference.fraud_scorer import FraudScorer

    store = InMemoryStateStore()
    settings = Settings()
    return FraudPipeline(FraudScorer(settings.models.fraud), store, settings,
                         label_clock=EventClock(store, "fraud-labels", brokers, max_wait_ms=2000, poll_ms=1),
                         transaction_clock=EventClock(store, "transactions", brokers, slack_s=7 * 86400))


async def test_both_clocks_ask_the_broker_at_once_while_the_state_is_read() -> None:
    brokers = OverlapBrokers({0: 0})
    pipeline = checking_pipeline(brokers)
    (score, *_) = await pipeline.process([transaction(0, 0, T0)])
    assert brokers.most_at_once == 2  # the transactions' ask did not wait for the labels' to end
    assert "partial_state" not in orjson.loads(score.value)


async def test_the_clocks_ask_for_watermarks_since_the_batch_reached_the_worker() -> None:
    """What the broker held once the batch's last record reached the worker is what
    the checks need: the worker's fetches since then may answer at once. A batch with a
    record of unknown arrival (a capture file, a test) asks from the call on."""
    brokers = Brokers({0: 0})
    pipeline = checking_pipeline(brokers)
    arrived = [transaction(0, 0, T0)._replace(received_ms=1_000.0), transaction(0, 1, T0 + 1)._replace(received_ms=1_005.0)]
    await pipeline.process(arrived)
    assert brokers.asked_since == [1_005.0, 1_005.0]
    brokers.asked_since.clear()
    await pipeline.process([transaction(0, 2, T0 + 2)._replace(received_ms=1_010.0), transaction(0, 3, T0 + 3)])
    assert brokers.asked_since == [None, None]
