"""The pipelines over the in-memory store, with the shipped models."""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamer.errors import DependencyError, InvalidEvent
from streamer.events import Click, decode_transaction, encode, format_time, parse_time
from streamer.inference.fraud_scorer import FraudScorer
from streamer.inference.model_process import ModelProcess
from streamer.inference.next_item import NextItemRanker, encode_and_rank, published_items
from streamer.output.sink import Delivery, ListSink, publish
from streamer.pipeline.fraud import FraudPipeline, LabelPipeline
from streamer.pipeline.recommend import RankingRequestPipeline, RecommendPipeline, recommendation
from streamer.records import SCORE_DECIMALS, SCORE_TOLERANCE, OutputRecord, SourceRecord, published_score
from streamer.settings import Settings
from streamer.state.memory import InMemoryStateStore
from streamer.state.interface import CachedEmbedding
from streamer.worker.app import prepare_batch, process_batch, publish_batch
from streamer.worker.batching import Finish, Infer, every_step
from tests.support import DATA, load_jsonl, next_item_child_load

SETTINGS = Settings.from_env()
T0 = 1533081600.0


def records(topic: str, values: list[bytes]) -> list[SourceRecord]:
    return [SourceRecord(topic, 0, i, b"k", v) for i, v in enumerate(values)]


@pytest.fixture(scope="module")
def scorer() -> FraudScorer:
    return FraudScorer(SETTINGS.models.fraud)


@pytest.fixture(scope="module")
def ranker() -> NextItemRanker:
    return NextItemRanker(SETTINGS.models.recommend)


def test_a_batch_of_mixed_lengths_is_encoded_as_if_padded_to_max_len(ranker: NextItemRanker) -> None:
    rng = np.random.default_rng(5)
    lengths = [1, 3, 4, 5, 9, 17, 33, 50, 70, 2, 12]
    sequences = [rng.integers(1, len(ranker.items), n).tolist() for n in lengths]
    assert len(ranker.widths) > 1  # the shipped encoder takes narrower inputs
    full = np.zeros((len(sequences), ranker.max_len), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-ranker.max_len :]
        full[row, -len(tail) :] = tail
    (expected,) = ranker.encoder.run({"item_ids": full})
    np.testing.assert_allclose(ranker.encode(sequences), expected, atol=1e-5)


def test_scores_rounded_by_the_ranker_are_those_rounded_one_by_one(ranker: NextItemRanker) -> None:
    rng = np.random.default_rng(6)
    users = [rng.integers(1, len(ranker.items), int(n)).tolist() for n in rng.integers(1, 40, 300)]
    embeddings = ranker.encode(users)
    raw = ranker.rank(embeddings, users, 10)
    rounded = ranker.rank(embeddings, users, 10, decimals=SCORE_DECIMALS)
    assert [[item for item, _ in r] for r in rounded] == [[item for item, _ in r] for r in raw]
    assert [[score for _, score in r] for r in rounded] == [[published_score(s) for _, s in r] for r in raw]
    assert any(s != published_score(s) for r in raw for _, s in r)  # the float32 scores had more decimals


def test_a_recommendation_carries_the_published_items_as_they_are() -> None:
    click = Click("e-1", "u", "a", T0, format_time(T0), "click")
    items = published_items([("i-1", 0.12345678), ("i-2", 1 / 3)])
    record = orjson.loads(encode(recommendation(click, items, "v1", "model")))
    assert record["items"] == [{"item_id": "i-1", "score": 0.123457}, {"item_id": "i-2", "score": 0.333333}]
    assert record["event_id"] == "e-1" and record["source"] == "model"


def test_encode_and_rank_gives_each_rows_published_items(ranker: NextItemRanker) -> None:
    sequences = [ranker.indices(ranker.items[1:4]), [], ranker.indices(ranker.items[5:6])]
    excluded = [list(seq) for seq in sequences]
    by_row, encoded, fresh = encode_and_rank(ranker, 10, sequences, excluded, [None, None, None])
    assert sorted(by_row) == encoded == [0, 2]  # the row without a history is left to the fallback
    for row, vector in zip(encoded, fresh):
        (expected,) = ranker.rank(vector[None, :], [excluded[row]], 10)
        assert by_row[row] == published_items(expected)


async def score_all(pipeline: FraudPipeline, values: list[bytes], batch: int) -> list[OutputRecord]:
    out: list[OutputRecord] = []
    recs = records("transactions", values)
    for start in range(0, len(recs), batch):
        out.extend(await pipeline.process(recs[start : start + batch]))
    return out


async def test_scores_do_not_depend_on_batch_size(scorer: FraudScorer) -> None:
    values = [orjson.dumps(tx) for tx in load_jsonl(DATA / "transactions_sample.jsonl")[:400]]
    runs = []
    for batch in (1, 37, 400):
        out = await score_all(FraudPipeline(scorer, InMemoryStateStore(), SETTINGS), values, batch)
        runs.append([(orjson.loads(r.value)["transaction_id"], orjson.loads(r.value)["score"]) for r in out if r.topic == "fraud-scores"])
    assert len(runs[0]) == 400
    for run in runs[1:]:  # the same transactions in the same order, the same scores up to rounding
        assert [tx for tx, _ in run] == [tx for tx, _ in runs[0]]
        assert [score for _, score in run] == pytest.approx([score for _, score in runs[0]], abs=SCORE_TOLERANCE)


class RecordingStore(InMemoryStateStore):
    """Records what each ``write_fraud`` carried; ``fail_with`` makes the first one fail."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        super().__init__()
        self.writes: list[tuple[int, bool, bool]] = []
        self.fail_with = fail_with

    async def write_fraud(self, transactions: Sequence[Any], rows: Any = None, progress: Any = None) -> None:
        self.writes.append((len(transactions), rows is not None, progress is not None))
        if self.fail_with is not None and len(self.writes) == 1:
            raise self.fail_with
        await super().write_fraud(transactions, rows, progress)


def noting_runs(pipeline: FraudPipeline, note: Callable[[Sequence[Any]], Any] = len) -> list[Any]:
    """The pipeline's models, noting each batch they score (in the list returned): by
    default its rows, else ``note`` of its transactions."""
    runs: list[Any] = []
    score = pipeline._score

    def noted(transactions: Sequence[Any], *args: Any) -> Any:
        runs.append(note(transactions))
        return score(transactions, *args)

    pipeline._score = noted  # type: ignore[method-assign]
    return runs


async def as_a_worker_overlaps(pipeline: FraudPipeline | RecommendPipeline,
                               batches: Sequence[list[SourceRecord]]) -> list[OutputRecord]:
    """The batches' outputs, their steps taken in the latest order a worker's lane allows:
    a batch is read (first step) while the one before is inferring (second step) and the
    one before that has not finished (third step: for clicks, its new embeddings not yet
    stored), and it infers before the one before it has finished."""
    outputs: list[OutputRecord] = []
    unfinished: deque[Finish[list[OutputRecord]]] = deque()
    infer = await pipeline.prepare(batches[0])
    for batch in batches[1:]:
        unfinished.append(await infer())
        infer = await pipeline.prepare(batch)
        if len(unfinished) == 2:
            outputs += await unfinished.popleft()()
    unfinished.append(await infer())
    for finish in unfinished:
        outputs += await finish()
    return outputs


def transaction_records(n: int, keyed: bool = False) -> list[SourceRecord]:
    """The sample's first ``n`` transactions, keyed by card (as producers must, for the
    card cache) or not."""
    sample = load_jsonl(DATA / "transactions_sample.jsonl")[:n]
    return [SourceRecord("transactions", 0, i, tx["card_id"].encode() if keyed else b"k", orjson.dumps(tx))
            for i, tx in enumerate(sample)]


async def test_the_first_step_stores_the_batchs_state_the_second_runs_the_models_the_third_writes_nothing(scorer: FraudScorer) -> None:
    """One state write per batch, before its models run: no card embedding is stored
    (each transaction's is encoded when it comes)."""
    store = RecordingStore()
    pipeline = FraudPipeline(scorer, store, SETTINGS)
    runs = noting_runs(pipeline)
    infer = await pipeline.prepare(transaction_records(200))
    assert store.writes == [(200, True, True)] and runs == []  # transactions, rows, progress; no model yet
    finish = await infer()
    assert store.writes == [(200, True, True)] and runs == [200]  # the models; nothing written
    outputs = await finish()
    assert store.writes == [(200, True, True)]
    assert len([o for o in outputs if o.topic == SETTINGS.topics.fraud_scores]) == 200


@pytest.mark.parametrize("thread", [True, False])
async def test_a_large_batchs_models_run_on_a_thread_unless_the_settings_say_not(scorer: FraudScorer,
                                                                                 thread: bool) -> None:
    import threading

    settings = SETTINGS.replace(models={"thread": thread})
    pipeline = FraudPipeline(scorer, InMemoryStateStore(), settings)
    threads = noting_runs(pipeline, lambda _: threading.get_ident())
    outputs = await pipeline.process(transaction_records(200))
    assert len([o for o in outputs if o.topic == SETTINGS.topics.fraud_scores]) == 200
    assert (threads == [threading.get_ident()]) is not thread


async def test_a_failed_state_write_fails_the_first_step_before_the_models_run(scorer: FraudScorer) -> None:
    store = RecordingStore(fail_with=DependencyError("redis: down"))
    pipeline = FraudPipeline(scorer, store, SETTINGS)
    runs = noting_runs(pipeline)
    with pytest.raises(DependencyError):
        await pipeline.prepare(transaction_records(100))
    assert store.writes == [(100, True, True)] and runs == []


async def test_a_batch_read_while_the_last_one_is_scored_scores_as_if_read_after_it(scorer: FraudScorer) -> None:
    """The worker's overlap: a batch's first step runs before the previous batch's
    second and the one before that's third. Its features and card histories see the
    previous batches' transactions (through the card cache), and every transaction is
    encoded once."""
    recs = transaction_records(400, keyed=True)
    batches = [recs[i : i + 100] for i in range(0, 400, 100)]
    cards = [{r.key for r in batch} for batch in batches]
    assert all(cards[i] & cards[i + 1] for i in range(3))  # cards that come back in the next batch

    def pipeline(settings: Settings) -> FraudPipeline:
        return FraudPipeline(scorer, InMemoryStateStore(), settings, clock=lambda: T0)

    in_turn = pipeline(SETTINGS.replace(redis={"card_cache": 0}))  # every card read from the store
    overlapped = pipeline(SETTINGS)
    expected = [output for batch in batches for output in await in_turn.process(batch)]
    got = await as_a_worker_overlaps(overlapped, batches)

    assert [(o.topic, o.value) for o in got] == [(o.topic, o.value) for o in expected]
    assert overlapped.features.cache.hits > 0
    assert overlapped.card_embeddings and in_turn.card_embeddings
    assert overlapped.card_embeddings.encoded == in_turn.card_embeddings.encoded == 400


async def test_large_amounts_raise_alerts_with_reasons(scorer: FraudScorer) -> None:
    sample = load_jsonl(DATA / "transactions_sample.jsonl")
    out = await score_all(FraudPipeline(scorer, InMemoryStateStore(), SETTINGS), [orjson.dumps(t) for t in sample], 100)
    alerts = {orjson.loads(r.value)["transaction_id"]: orjson.loads(r.value) for r in out if r.topic == "fraud-alerts"}
    for tx in sample:
        if tx["amount"] > 220:
            assert tx["transaction_id"] in alerts
            reasons = alerts[tx["transaction_id"]]["reasons"]
            assert reasons and all(r["text"] and "value" in r for r in reasons)


async def test_bad_transactions_become_dead_letters_in_place(scorer: FraudScorer) -> None:
    good = orjson.dumps(load_jsonl(DATA / "transactions_sample.jsonl")[0])
    out = await FraudPipeline(scorer, InMemoryStateStore(), SETTINGS).process(records("transactions", [b"{", good]))
    dead = [r for r in out if r.topic == "dead-letter"]
    assert len(dead) == 1 and dead[0].value == b"{" and dict(dead[0].headers)["dlq.offset"] == b"0"
    assert sum(r.topic == "fraud-scores" for r in out) == 1


async def test_labels_feed_terminal_risk_after_their_release(scorer: FraudScorer) -> None:
    store = InMemoryStateStore()
    label = {"transaction_id": "a", "card_id": "c", "terminal_id": "t", "timestamp": format_time(T0),
             "is_fraud": True, "labelled_at": format_time(T0 + 7 * 86400)}
    assert await LabelPipeline(store, SETTINGS).process(records("fraud-labels", [orjson.dumps(label)])) == []
    tx = {"transaction_id": "a", "card_id": "c", "terminal_id": "t", "amount": 10.0, "timestamp": format_time(T0)}
    later = {**tx, "transaction_id": "b", "timestamp": format_time(T0 + 7.5 * 86400)}
    pipeline = FraudPipeline(scorer, store, SETTINGS)
    await pipeline.process(records("transactions", [orjson.dumps(tx)]))
    rows = await pipeline.features.compute([decode_transaction(orjson.dumps(later))])
    assert rows[0][9:11] == [1.0, 1.0]  # one transaction in the 1-day window, all fraud


def click(n: int, user: str, item: str) -> bytes:
    return orjson.dumps({"event_id": f"e{n}", "user_id": user, "item_id": item, "timestamp": format_time(T0 + n)})


async def test_recommendations_exclude_seen_items_and_fall_back_to_popular(ranker: NextItemRanker) -> None:
    pipeline = RecommendPipeline(ranker, InMemoryStateStore(), SETTINGS)
    items = ranker.items[1:6]
    values = [click(i, "u1", item) for i, item in enumerate(items)] + [click(9, "u2", "no-such-item")]
    out = [orjson.loads(r.value) for r in await pipeline.process(records("clickstream", values))]
    assert len(out) == 6
    for i, rec in enumerate(out[:5]):
        recommended = [x["item_id"] for x in rec["items"]]
        assert len(recommended) == 10 and not set(recommended) & set(items[: i + 1])
        assert rec["source"] == "model"
    assert out[5]["source"] == "popular" and "no-such-item" not in [x["item_id"] for x in out[5]["items"]]


async def test_reprocessed_click_reuses_the_cached_embedding(ranker: NextItemRanker) -> None:
    store = InMemoryStateStore()
    pipeline = RecommendPipeline(ranker, store, SETTINGS)
    values = [click(i, "u", item) for i, item in enumerate(ranker.items[1:4])]
    first = await pipeline.process(records("clickstream", values))
    calls = []
    encode = ranker.encode
    ranker.encode = lambda seqs: calls.append(len(seqs)) or encode(seqs)  # type: ignore[method-assign]
    try:
        again = await pipeline.process(records("clickstream", values[-1:]))
    finally:
        ranker.encode = encode  # type: ignore[method-assign]
    assert calls == []
    assert orjson.loads(again[0].value)["items"] == orjson.loads(first[-1].value)["items"]


async def test_a_click_batch_read_while_the_last_one_is_ranked_sees_its_clicks(ranker: NextItemRanker) -> None:
    """The worker's overlap for clicks: the first step stores the batch's clicks (the
    next batch's histories read them), the third the users' new embeddings."""
    items = ranker.items[1:13]
    values = [click(i, f"u{i % 3}", item) for i, item in enumerate(items)]
    batches = [records("clickstream", values[i : i + 4]) for i in range(0, 12, 4)]
    in_turn = RecommendPipeline(ranker, InMemoryStateStore(), SETTINGS)
    expected = [output for batch in batches for output in await in_turn.process(batch)]

    store = InMemoryStateStore()
    infer = await RecommendPipeline(ranker, store, SETTINGS).prepare(batches[0])
    assert len(store.sequences["u0"]) == 2 and "u0" not in store.embeddings  # clicks stored, not yet ranked
    await infer()
    assert "u0" not in store.embeddings  # ranked, embeddings not yet stored

    store = InMemoryStateStore()
    got = await as_a_worker_overlaps(RecommendPipeline(ranker, store, SETTINGS), batches)

    assert [o.value for o in got] == [o.value for o in expected]
    assert {user: e.event_id for user, e in store.embeddings.items()} == {"u0": "e9", "u1": "e10", "u2": "e11"}


async def test_clicks_ranked_in_a_model_process_give_the_same_outputs(ranker: NextItemRanker) -> None:
    """The worker's default: the second step in a child process with the same models,
    batches overlapping as in a worker; then a click processed again reuses its cached
    embedding, which travels to the child."""
    items = ranker.items[1:13]
    values = [click(i, f"u{i % 3}", item) for i, item in enumerate(items)]
    batches = [records("clickstream", values[i : i + 4]) for i in range(0, 12, 4)] + [records("clickstream", values[-1:])]
    in_turn = RecommendPipeline(ranker, InMemoryStateStore(), SETTINGS)
    expected = [output for batch in batches for output in await in_turn.process(batch)]

    models = ModelProcess(functools.partial(NextItemRanker, SETTINGS.models.recommend, provider="cpu", threads=1))
    try:
        store = InMemoryStateStore()
        got = await as_a_worker_overlaps(RecommendPipeline(ranker, store, SETTINGS, models), batches)
    finally:
        models.close()

    assert [o.value for o in got] == [o.value for o in expected]
    assert orjson.loads(got[-1].value)["source"] == "model"
    assert {user: e.event_id for user, e in store.embeddings.items()} == {"u0": "e9", "u1": "e10", "u2": "e11"}
    assert np.array_equal(store.embeddings["u2"].vector, in_turn.store.embeddings["u2"].vector)  # type: ignore[attr-defined]


async def test_the_first_step_sends_the_batchs_job_to_the_model_process(ranker: NextItemRanker) -> None:
    """The child can start on a batch's models while the batch before is still being
    finished: its job leaves with the first step, and the second step only waits for it."""
    values = [click(i, f"u{i % 2}", item) for i, item in enumerate(ranker.items[1:5])]
    models = ModelProcess(functools.partial(NextItemRanker, SETTINGS.models.recommend, provider="cpu", threads=1))
    try:
        pipeline = RecommendPipeline(ranker, InMemoryStateStore(), SETTINGS, models)
        infer = await pipeline.prepare(records("clickstream", values))
        sent = models.unanswered
        got = await every_step(infer)
    finally:
        models.close()
    assert sent == 1
    expected = await RecommendPipeline(ranker, InMemoryStateStore(), SETTINGS).process(records("clickstream", values))
    assert [o.value for o in got] == [o.value for o in expected]


class RankerDyingOnce(NextItemRanker):
    """Next-item models whose process dies at its first encoder call while ``flag`` does
    not exist (it creates it), as a child killed for memory would."""

    def __init__(self, flag: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flag = flag

    def encode(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        if not self.flag.exists():
            self.flag.touch()
            os._exit(9)
        return super().encode(sequences)


async def test_a_batch_whose_model_process_died_is_processed_again_whole(ranker: NextItemRanker, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    values = [click(i, f"u{i % 2}", item) for i, item in enumerate(ranker.items[1:7])]
    batch = records("clickstream", values)
    expected = await RecommendPipeline(ranker, InMemoryStateStore(), SETTINGS).process(batch)

    models = ModelProcess(functools.partial(RankerDyingOnce, tmp_path / "died", SETTINGS.models.recommend, provider="cpu"),
                          "next-item models")
    try:
        infer = await prepare_batch(RecommendPipeline(ranker, InMemoryStateStore(), SETTINGS, models), batch, "dead-letter")
        got = await every_step(infer)
    finally:
        models.close()

    assert (tmp_path / "died").exists()  # the first child died at the model step
    assert [o.value for o in got] == [o.value for o in expected]  # no dead letters: the batch again, in a new child
    assert "the next-item models process died" in caplog.text and "processing the batch again" in caplog.text
    assert "record by record" not in caplog.text  # a retryable failure, not a bad batch


async def test_ranking_request_ranks_from_the_cached_embedding_without_encoding(ranker: NextItemRanker) -> None:
    store = InMemoryStateStore()
    clicks = RecommendPipeline(ranker, store, SETTINGS)
    values = [click(i, "u", item) for i, item in enumerate(ranker.items[1:4])]
    last = orjson.loads((await clicks.process(records("clickstream", values)))[-1].value)
    requests = RankingRequestPipeline(ranker, store, SETTINGS)
    asks = [orjson.dumps({"request_id": f"r-{user}", "user_id": user, "timestamp": format_time(T0 + 99)})
            for user in ("u", "stranger")] + [b'{"user_id": "u"}']
    calls = []
    encode = ranker.encode
    ranker.encode = lambda seqs: calls.append(len(seqs)) or encode(seqs)  # type: ignore[method-assign]
    try:
        out = await requests.process(records("recommend-requests", asks))
    finally:
        ranker.encode = encode  # type: ignore[method-assign]
    assert calls == []
    answers = {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in out if r.topic == "recommendations"}
    assert answers["r-u"]["source"] == "cached" and answers["r-u"]["items"] == last["items"]
    assert answers["r-stranger"]["source"] == "popular" and len(answers["r-stranger"]["items"]) == 10
    assert [r.topic for r in out].count(SETTINGS.topics.dead_letter) == 1  # no request_id


async def test_ranking_request_encodes_when_the_cache_is_of_another_model(ranker: NextItemRanker) -> None:
    store = InMemoryStateStore()
    await RecommendPipeline(ranker, store, SETTINGS).process(
        records("clickstream", [click(i, "u", item) for i, item in enumerate(ranker.items[1:4])]))
    old = store.embeddings["u"]
    store.embeddings["u"] = CachedEmbedding(old.vector * 0, old.ts, old.event_id, "an-older-model")
    ask = orjson.dumps({"request_id": "r", "user_id": "u", "timestamp": format_time(T0 + 99)})
    (answer,) = await RankingRequestPipeline(ranker, store, SETTINGS).process(records("recommend-requests", [ask]))
    assert orjson.loads(answer.value)["source"] == "model"


async def test_ranking_requests_run_their_models_in_the_model_process(ranker: NextItemRanker) -> None:
    """Not on the event loop: the parent's ranker is never called, and the answers are
    those of the models run in the parent."""
    store = InMemoryStateStore()
    await RecommendPipeline(ranker, store, SETTINGS).process(records("clickstream", [
        click(i, user, item) for i, (user, item) in enumerate(zip(["u", "u", "v", "v"], ranker.items[1:5]))]))
    del store.embeddings["v"]  # v has a history and nothing cached: encoded
    asks = [orjson.dumps({"request_id": f"r-{user}", "user_id": user, "timestamp": format_time(T0 + 99)})
            for user in ("u", "v", "stranger")]
    expected = await RankingRequestPipeline(ranker, store, SETTINGS).process(records("recommend-requests", asks))

    models = ModelProcess(functools.partial(NextItemRanker, SETTINGS.models.recommend, provider="cpu", threads=1))
    calls: list[str] = []
    own_encode, own_rank = ranker.encode, ranker.rank
    ranker.encode = lambda *a: calls.append("encode") or own_encode(*a)  # type: ignore[method-assign]
    ranker.rank = lambda *a, **kw: calls.append("rank") or own_rank(*a, **kw)  # type: ignore[method-assign]
    try:
        got = await RankingRequestPipeline(ranker, store, SETTINGS, models).process(records("recommend-requests", asks))
    finally:
        ranker.encode, ranker.rank = own_encode, own_rank  # type: ignore[method-assign]
        models.close()

    assert calls == []
    assert [o.value for o in got] == [o.value for o in expected]
    assert [orjson.loads(o.value)["source"] for o in got] == ["cached", "model", "popular"]


class RecordedCalls:
    """Stands in for a model process: runs each call submitted on the given models, in
    this process, and keeps it as it would have been sent (pickled)."""

    def __init__(self, models: NextItemRanker) -> None:
        self.models = models
        self.sent: list[bytes] = []

    async def submit(self, call: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        self.sent.append(pickle.dumps((call, args)))
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        answer.set_result(call(self.models, *args))
        return answer


async def test_the_calls_sent_to_a_next_item_child_import_nothing_its_models_did_not(
        ranker: NextItemRanker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A child imports the module of each function it is sent, at its first call: a
    ranking job defined with the pipelines imported about 150 modules more there (redis,
    multiprocessing, ...), about 85 ms that held up a restarted worker's first batch of
    clicks (docs/benchmarks.md, 2026-12-07 from 20:19 UTC)."""
    load = next_item_child_load(monkeypatch, SETTINGS.replace(models={"provider": "cpu"}), ranker.version)
    calls = RecordedCalls(ranker)
    store = InMemoryStateStore()
    await RecommendPipeline(ranker, store, SETTINGS, calls).process(  # type: ignore[arg-type]
        records("clickstream", [click(i, "u", item) for i, item in enumerate(ranker.items[1:3])]))
    ask = orjson.dumps({"request_id": "r", "user_id": "u", "timestamp": format_time(T0 + 9)})
    await RankingRequestPipeline(ranker, store, SETTINGS, calls).process(  # type: ignore[arg-type]
        records("recommend-requests", [ask]))
    assert len(calls.sent) == 2

    script = ("import pickle, sys; load, calls = pickle.loads(sys.stdin.buffer.read()); pickle.loads(load); "
              "loaded = set(sys.modules); "
              "[pickle.loads(call) for call in calls]; print(sorted(set(sys.modules) - loaded))")
    child = subprocess.run([sys.executable, "-c", script], input=pickle.dumps((pickle.dumps(load), calls.sent)),
                           capture_output=True, check=True)
    assert child.stdout.decode().strip() == "[]"


class Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error

    async def process(self, batch: list[SourceRecord]) -> list[OutputRecord]:
        if self.failures:
            self.failures -= 1
            raise self.error
        return [OutputRecord("out", r.key, r.value or b"") for r in batch]


async def test_a_batch_is_retried_on_outside_failures_and_poison_goes_to_dead_letter() -> None:
    batch = records("in", [b"1", b"2"])
    outputs = await process_batch(Flaky(2, DependencyError("redis down")), batch, "dead-letter")
    assert [r.value for r in outputs] == [b"1", b"2"]

    outputs = await process_batch(Flaky(2, ValueError("bug")), batch, "dead-letter")
    assert [(r.topic, dict(r.headers).get("dlq.reason")) for r in outputs] == [
        ("dead-letter", b"processing_error"), ("out", None)]

    outputs = await process_batch(Flaky(2, InvalidEvent("unknown_terminal", "t9")), batch, "dead-letter")
    assert [(r.topic, dict(r.headers).get("dlq.reason")) for r in outputs] == [  # its own reason kept
        ("dead-letter", b"unknown_terminal"), ("out", None)]


class FlakyLaterStep(Flaky):
    """A pipeline in steps whose second or third step fails the first ``failures`` times."""

    def __init__(self, failures: int, error: Exception, failing_step: str) -> None:
        super().__init__(0, error)
        self.later_failures = failures
        self.failing_step = failing_step
        self.prepared = 0

    async def process(self, batch: list[SourceRecord]) -> list[OutputRecord]:
        return await every_step(await self.prepare(batch))

    async def prepare(self, batch: list[SourceRecord]) -> Infer[list[OutputRecord]]:
        self.prepared += 1

        async def infer() -> Finish[list[OutputRecord]]:
            self._fail_at("second")

            async def finish() -> list[OutputRecord]:
                self._fail_at("third")
                return [OutputRecord("out", r.key, r.value or b"") for r in batch]

            return finish

        return infer

    def _fail_at(self, step: str) -> None:
        if step == self.failing_step and self.later_failures:
            self.later_failures -= 1
            raise self.error


@pytest.mark.parametrize("failing_step", ["second", "third"])
async def test_a_batch_whose_later_step_fails_is_processed_again_or_record_by_record(failing_step: str) -> None:
    batch = records("in", [b"1", b"2"])
    pipeline = FlakyLaterStep(1, DependencyError("redis down"), failing_step)
    infer = await prepare_batch(pipeline, batch, "dead-letter")
    assert [r.value for r in await every_step(infer)] == [b"1", b"2"] and pipeline.prepared == 2  # whole again

    pipeline = FlakyLaterStep(2, ValueError("bug"), failing_step)  # the batch, then its first record
    infer = await prepare_batch(pipeline, batch, "dead-letter")
    assert [(r.topic, dict(r.headers).get("dlq.reason")) for r in await every_step(infer)] == [
        ("dead-letter", b"processing_error"), ("out", None)]


class FlakySink(ListSink):
    """Fails the first ``failures`` deliveries after queueing, as a broker that
    dropped a request would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def send(self, records: Sequence[OutputRecord]) -> Delivery:
        delivery = await super().send(records)
        if self.failures:
            self.failures -= 1
            await delivery

            async def failed() -> None:
                raise DependencyError("kafka publish failed: not enough replicas")

            return failed()
        return delivery


async def test_publishing_is_retried_until_acknowledged() -> None:
    sink = FlakySink(failures=2)
    outputs = [OutputRecord("out", None, b"1")]
    with pytest.raises(DependencyError):
        await publish(FlakySink(failures=1), outputs)
    await publish_batch(sink, outputs)
    assert sink.failures == 0 and [r.value for r in sink.records] == [b"1"] * 3  # at least once


def test_alert_reasons_name_what_stands_out() -> None:
    from streamer.features.explain import alert_reasons
    from streamer.features.fraud import FEATURE_NAMES

    mean = np.zeros(len(FEATURE_NAMES))
    std = np.ones(len(FEATURE_NAMES))
    row = [500.0, 0, 0, 1, 500.0, 2, 300.0, 10, 100.0, 3, 0.0, 20, 0.62, 80, 0.1]
    reasons = alert_reasons(row, mean, std, limit=3)
    assert reasons[0]["code"] == "amount" and "5.0 × the card's 30-day average 100.00" in reasons[0]["text"]
    assert {"terminal_risk_7d", "card_velocity_7d"} & {r["code"] for r in reasons}
    quiet = alert_reasons([10.0, 0, 0, 1, 10.0, 1, 10.0, 1, 10.0, 0, 0, 0, 0, 0, 0], mean + 50, std, limit=3)
    assert len(quiet) == 1  # nothing else stands out


async def test_a_transaction_dated_decades_ahead_is_a_dead_letter_and_its_card_keeps_its_history(
        scorer: FraudScorer) -> None:
    """Its time used to be stored as the card's newest, and the card's state pruned
    below it: the card's next transactions scored as a new card's."""
    pipeline = FraudPipeline(scorer, InMemoryStateStore(), SETTINGS)

    def sent(offset: int, ts: float, event_ts: float) -> SourceRecord:
        tx = {"transaction_id": f"tx-{offset}", "card_id": "c", "terminal_id": "t", "amount": 10.0,
              "timestamp": format_time(event_ts)}
        return SourceRecord("transactions", 0, offset, b"c", orjson.dumps(tx), int(ts * 1000))

    await pipeline.process([sent(i, T0 + i * 3600, T0 + i * 3600) for i in range(3)])
    out = await pipeline.process([sent(3, T0 + 3 * 3600, parse_time("2081-08-01T12:00:00Z"))])
    assert [(r.topic, dict(r.headers)["dlq.reason"]) for r in out] == [("dead-letter", b"invalid_timestamp")]
    later = {"transaction_id": "tx-4", "card_id": "c", "terminal_id": "t", "amount": 10.0,
             "timestamp": format_time(T0 + 4 * 3600)}
    rows = await pipeline.features.compute([decode_transaction(orjson.dumps(later))])
    assert rows[0][3] == 4.0  # CUSTOMER_ID_NB_TX_1DAY_WINDOW: the three before it, and itself
