"""Next-item ranking of a micro-batch of clicks.

``RecommendPipeline.process`` runs in three steps (``prepare``, then the step it
returns, then the step that one returns; a worker runs a batch's first step while the
previous batch's second one runs, and its second while the previous batch's third runs):

1. decode → read each user's sequence, seen items and cached embedding (one round
   trip) → per click, in arrival order, the user's events ordered at or before it by
   ``(event time, event id)`` → write the clicks to the users' sequences and seen
   items (one round trip): what the next batch reads;
2. one encoder call for all clicks (a cached embedding of the same event and model is
   reused) → one ranker call excluding the items each user already touched: in the
   worker's model process when it has one (``encode_and_rank``, which lives with the
   models in ``streamer.inference.next_item``; the first step sends it the job, so the
   child starts on it once the batch before is ranked), else on its inference thread;
3. write the users' new embeddings (one round trip) → one recommendation per click,
   and a dead letter per bad message. A ranking arrives from step 2 as the record's
   ``items`` already in JSON (``published_items``), so the event loop only wraps it.

``RankingRequestPipeline`` answers a ranking asked for without a click (a page view, a
push campaign): it ranks from the user's cached embedding with no encoder call, encodes
only when nothing usable is cached, and falls back to popular items for unknown users.
Its models run where the clicks' do (the model process, else the inference thread), not
on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

import numpy as np
import orjson

from streamer.events import Click, RankingRequest, decode_all, decode_click, decode_ranking_request, encode
from streamer.inference.model_process import ModelProcess
from streamer.inference.next_item import NextItemRanker, Ranking, encode_and_rank, published_items
from streamer.inference.runner import off_the_loop
from streamer.output.dead_letter import dead_letter
from streamer.records import OutputRecord, SourceRecord
from streamer.settings import Settings
from streamer.state.interface import CachedEmbedding, StateStore, UserState, UserUpdate, replaces
from streamer.worker.batching import Finish, Infer, every_step, finished, inferred


def history_until(state: UserState, click: Click) -> tuple[list[str], set[str]]:
    """The user's items up to and including ``click``, and every item touched by then."""
    cutoff = (click.ts, click.event_id)
    items = [item for ts, event_id, item in state.sequence if (ts, event_id) <= cutoff]
    seen = set(items) | {item for item, first in state.seen.items() if first < click.ts}
    return items, seen


def clicks_by_user(clicks: Sequence[Click]) -> list[UserUpdate]:
    """The batch's clicks per user, without embeddings (the third step writes those)."""
    by_user: dict[str, list[Click]] = {}
    for click in clicks:
        by_user.setdefault(click.user_id, []).append(click)
    return [UserUpdate(user, user_clicks, None) for user, user_clicks in by_user.items()]


def remember(state: UserState, click: Click) -> None:
    """Fold a click into the state read for the batch, so later clicks see it."""
    if all(event_id != click.event_id for _, event_id, _ in state.sequence):
        state.sequence.append((click.ts, click.event_id, click.item_id))
        state.sequence.sort()
    state.seen[click.item_id] = min(state.seen.get(click.item_id, click.ts), click.ts)


class _UserPipeline:
    """What both ranking pipelines hold: the ranker, the store, their settings, and the
    worker's model process if it has one."""

    def __init__(self, ranker: NextItemRanker, store: StateStore, settings: Settings,
                 models: ModelProcess | None = None) -> None:
        self.ranker = ranker
        self.store = store
        self.topics = settings.topics
        self.top_k = settings.recommend.top_k
        self.max_bytes = settings.kafka.max_message_bytes
        self.max_ahead_s = settings.kafka.max_event_ahead_s
        self.models = models
        """A child process holding the same next-item models, which runs
        ``encode_and_rank``; None: the inference thread runs it."""
        self.inference_thread = settings.models.thread

    async def _ranking(self, sequences: list[list[int]], excluded: list[list[int]],
                       cached: list[np.ndarray | None]) -> Awaitable[Ranking]:
        """``encode_and_rank`` off the event loop. With a model process the call is sent
        at once, and what is returned only waits for its answer; else it runs on the
        inference thread (inline for a small batch) once awaited."""
        if self.models is not None:
            return await self.models.submit(encode_and_rank, self.top_k, sequences, excluded, cached)
        return off_the_loop(len(sequences), encode_and_rank, self.ranker, self.top_k, sequences, excluded, cached,
                            thread=self.inference_thread)


class RecommendPipeline(_UserPipeline):
    async def process(self, records: Sequence[SourceRecord]) -> list[OutputRecord]:
        """Every step, one after the other."""
        return await every_step(await self.prepare(records))

    async def prepare(self, records: Sequence[SourceRecord]) -> Infer[list[OutputRecord]]:
        """The first step: the users' histories per click, and the clicks stored.
        Returns the second: the rankings, which returns the third: the users' new
        embeddings stored, the recommendations made."""
        good, bad = decode_all(records, decode_click, self.max_bytes, self.max_ahead_s)
        outputs = [dead_letter(records[b.index], b.error, self.topics.dead_letter) for b in bad]
        if not good:
            return inferred(finished(outputs))
        clicks = [click for _, click in good]
        states = await self.store.read_users(list(dict.fromkeys(c.user_id for c in clicks)))

        sequences: list[list[int]] = []
        excluded: list[list[int]] = []
        seen_items: list[set[str]] = []
        vectors: list[np.ndarray | None] = []
        for click in clicks:
            state = states[click.user_id]
            remember(state, click)
            items, seen = history_until(state, click)
            sequences.append(self.ranker.indices(items))
            excluded.append(self.ranker.indices(seen))
            seen_items.append(seen)
            cached = state.embedding
            reuse = cached is not None and cached.event_id == click.event_id and cached.model == self.ranker.version
            vectors.append(cached.vector if reuse and cached is not None else None)
        await self.store.write_users(clicks_by_user(clicks))
        ranking = await self._ranking(sequences, excluded, vectors)  # a model process starts on it now

        async def infer() -> Finish[list[OutputRecord]]:
            ranked, encoded, fresh = await ranking
            for row, i in enumerate(encoded):
                vectors[i] = fresh[row]

            async def finish() -> list[OutputRecord]:
                await self.store.write_users(self._embedding_updates(clicks, vectors))
                for i, click in enumerate(clicks):
                    items = ranked.get(i)
                    source = "model"
                    if items is None:
                        items, source = published_items(self.ranker.fallback(seen_items[i], self.top_k)), "popular"
                    record = recommendation(click, items, self.ranker.version, source)
                    outputs.append(OutputRecord(self.topics.recommendations, click.user_id.encode(), encode(record)))
                return outputs

            return finish

        return infer

    def _embedding_updates(self, clicks: Sequence[Click], vectors: Sequence[np.ndarray | None]) -> list[UserUpdate]:
        """Per user, the embedding of the batch's latest click that has one (no clicks:
        the first step stored them)."""
        latest: dict[str, CachedEmbedding] = {}
        for click, vector in zip(clicks, vectors):
            if vector is not None:
                emb = CachedEmbedding(vector, click.ts, click.event_id, self.ranker.version)
                if replaces(emb, latest.get(click.user_id)):
                    latest[click.user_id] = emb
        return [UserUpdate(user, [], embedding) for user, embedding in latest.items()]


class RankingRequestPipeline(_UserPipeline):
    async def process(self, records: Sequence[SourceRecord]) -> list[OutputRecord]:
        good, bad = decode_all(records, decode_ranking_request, self.max_bytes, self.max_ahead_s)
        outputs = [dead_letter(records[b.index], b.error, self.topics.dead_letter) for b in bad]
        if not good:
            return outputs
        requests = [request for _, request in good]
        states = await self.store.read_users(list(dict.fromkeys(r.user_id for r in requests)))
        users = list(states)
        sequences: list[list[int]] = []
        excluded: list[list[int]] = []
        cached: list[np.ndarray | None] = []
        for user_id in users:
            state = states[user_id]
            usable = state.embedding is not None and state.embedding.model == self.ranker.version
            cached.append(state.embedding.vector if usable else None)  # type: ignore[union-attr]
            sequences.append([] if usable else self.ranker.indices([item for _, _, item in state.sequence]))
            excluded.append(self.ranker.indices(seen_items(state)))
        by_row, encoded, _ = await (await self._ranking(sequences, excluded, cached))
        ranked = {users[row]: items for row, items in by_row.items()}
        sources = {users[row]: "cached" for row in by_row} | {users[row]: "model" for row in encoded}
        for request in requests:
            items = ranked.get(request.user_id)
            source = sources.get(request.user_id, "popular")
            if items is None:
                items = published_items(self.ranker.fallback(seen_items(states[request.user_id]), self.top_k))
            outputs.append(OutputRecord(self.topics.recommendations, request.user_id.encode(), encode(
                recommendation(request, items, self.ranker.version, source))))
        return outputs


def seen_items(state: UserState) -> set[str]:
    return {item for _, _, item in state.sequence} | set(state.seen)


def recommendation(event: Click | RankingRequest, items: bytes, version: str, source: str) -> dict[str, Any]:
    """The ``recommendations`` record; ``event_id`` is the click's or the request's id,
    ``items`` what ``published_items`` made, placed in the record as it is."""
    return {
        "event_id": event.event_id if isinstance(event, Click) else event.request_id,
        "user_id": event.user_id,
        "items": orjson.Fragment(items),
        "model_version": version,
        "source": source,
        "timestamp": event.timestamp,
    }
