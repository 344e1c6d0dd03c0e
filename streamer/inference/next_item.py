"""The next-item model at serving time: a user encoder and a ranker, both ONNX.

``encoder.onnx`` turns the user's recent items (left-padded model indices, newest
last) into a user embedding; ``ranker.onnx`` scores the whole catalogue against an
embedding and returns the top k with the given items excluded. Catalogue item ids
(strings) map to model indices through the manifest's item list; unknown items are
ignored. Users with nothing known get the training set's most popular items.

An encoder exported with a dynamic sequence axis gives the same embedding for a
history padded to any width that holds it, and costs about in proportion to the width;
so a batch is encoded in groups of similar length, each padded only to its bucket
(``WIDTHS``) rather than to ``max_len``. An older encoder of fixed width is run at that width.

``encode_and_rank`` is a batch's whole next-item job, as a worker's model process runs
it: it lives here, with the models, so the process imports nothing more to run it.

On the CPU provider the int8 graphs a manifest lists (``models.recommend.quantize``:
fixed activation scales, so a user's recommendations do not depend on the batch) run
instead, unless ``int8`` is off; the version then ends in ``+int8``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamer.errors import ConfigurationError
from streamer.inference.manifest import load_manifest
from streamer.inference.runner import OnnxModel, choose_providers
from streamer.records import SCORE_DECIMALS, published_score

Ranked = list[tuple[str, float]]
#: What ``encode_and_rank`` gives: the rankings by row (``published_items``), the rows
#: encoded, their embeddings.
Ranking = tuple[dict[int, bytes], list[int], np.ndarray]

#: Encoder input widths a batch is grouped into (capped at the model's ``max_len``).
WIDTHS = (4, 8, 16, 32)
#: Users per ONNX Runtime call (see ``OnnxModel``): the ranker scores the whole catalogue
#: per user, and both graphs run about 1.3x faster at 64 rows than at 512.
MAX_ROWS = 64
#: Exclusion width the ranker is warmed up with (masks are padded to powers of two).
WARM_EXCLUDE = 256


class NextItemRanker:
    def __init__(self, model_dir: Path, *, provider: str = "auto", threads: int = 1, fp16: bool = False,
                 int8: bool = True) -> None:
        self.manifest = load_manifest(model_dir, "recommend")
        quantised = self.manifest.get("int8") if int8 else None
        self.int8 = quantised is not None and choose_providers(provider)[0] == "CPUExecutionProvider"
        self.version: str = self.manifest["version"] + ("+int8" if self.int8 else "")
        self.max_len: int = int(self.manifest["max_len"])
        self.top_k: int = int(self.manifest["top_k"])
        items_file = model_dir / self.manifest.get("files", {}).get("items", "items.txt")
        if not items_file.is_file():
            raise ConfigurationError(f"{model_dir}: missing item list {items_file.name}")
        self.items: list[str] = ["<pad>", *items_file.read_text().split()]
        if len(self.items) - 1 != int(self.manifest["num_items"]):  # the ranker's indices are into this list
            raise ConfigurationError(f"{items_file}: {len(self.items) - 1} items, the manifest's num_items is "
                                     f"{self.manifest['num_items']}")
        self.index = {item: i for i, item in enumerate(self.items) if i > 0}
        self.popular: list[str] = [str(p) for p in self.manifest["popular"]]
        encoder, ranker = "encoder.onnx", "ranker.onnx"
        if self.int8 and quantised is not None:
            encoder, ranker = quantised["encoder"], quantised["ranker"]
        self.encoder = OnnxModel(model_dir / encoder, provider=provider, threads=threads, fp16=fp16, max_rows=MAX_ROWS)
        self.ranker = OnnxModel(model_dir / ranker, provider=provider, threads=threads, max_rows=MAX_ROWS)
        fixed = self.encoder.session.get_inputs()[0].shape[1]
        if isinstance(fixed, int) and fixed < self.max_len:  # the longest histories would fit no width
            raise ConfigurationError(f"{model_dir / encoder}: takes sequences of {fixed} items, shorter than the "
                                     f"manifest's max_len of {self.max_len}")
        self.widths = [fixed] if isinstance(fixed, int) else [w for w in WIDTHS if w < self.max_len] + [self.max_len]
        self.embedding_dim = int(self.manifest["embedding_dim"])
        # a ranker that takes ``k`` selects only what is asked (the selection is most of its cost)
        self.ranker_takes_k = "k" in self.ranker.input_names
        self.encoder.warm_up(dims={"length": self.max_len})
        rows = self.ranker.max_rows or 1
        self.rank(np.zeros((rows, self.embedding_dim), dtype=np.float32), [[0] * WARM_EXCLUDE] * rows, self.top_k)

    def indices(self, item_ids: Iterable[str]) -> list[int]:
        """Model indices of the known items, in order; unknown items are dropped."""
        return [i for i in (self.index.get(item) for item in item_ids) if i is not None]

    def encode(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """User embeddings for non-empty index sequences (the last ``max_len`` used)."""
        tails = [list(seq)[-self.max_len :] for seq in sequences]
        groups: dict[int, list[int]] = {}
        for row, tail in enumerate(tails):
            width = next(w for w in self.widths if w >= len(tail))
            groups.setdefault(width, []).append(row)
        embeddings = np.empty((len(tails), self.embedding_dim), dtype=np.float32)
        for width, rows in groups.items():
            batch = np.zeros((len(rows), width), dtype=np.int64)
            for i, row in enumerate(rows):
                if tails[row]:
                    batch[i, width - len(tails[row]) :] = tails[row]
            embeddings[rows] = self.encoder.run({"item_ids": batch})[0]
        return embeddings

    def rank(self, embeddings: np.ndarray, exclude: Sequence[Sequence[int]], k: int,
             decimals: int | None = None) -> list[Ranked]:
        """Top ``k`` catalogue items per embedding, never one of its excluded indices; with
        ``decimals``, the scores rounded to that many (for the whole batch at once: the
        same floats as Python's ``round`` of each, since a float32 score times a power of
        ten up to 10**6 is exact in float64)."""
        longest = max((len(e) for e in exclude), default=0)
        width = 1 << max(0, longest - 1).bit_length()  # a power of two: few distinct shapes
        mask = np.zeros((len(exclude), width), dtype=np.int64)
        for row, items in enumerate(exclude):
            mask[row, : len(items)] = list(items)
        feeds = {"user_embedding": embeddings, "exclude": mask}
        if self.ranker_takes_k:
            feeds["k"] = np.array([min(k, len(self.items) - 1)], dtype=np.int64)
        top_items, top_scores = self.ranker.run(feeds)
        if decimals is not None:
            top_scores = np.round(top_scores.astype(np.float64), decimals)
        out: list[Ranked] = []
        for items, scores, excluded in zip(top_items[:, : k + longest].tolist(), top_scores.tolist(), exclude):
            banned = set(excluded)
            kept = ((self.items[i], s) for i, s in zip(items, scores) if i > 0 and i not in banned)
            out.append(list(itertools.islice(kept, k)))
        return out

    def fallback(self, seen: set[str], k: int) -> Ranked:
        """Most popular items the user has not touched, scored by popularity rank."""
        picks = [item for item in self.popular if item not in seen][:k]
        return [(item, 1.0 / (rank + 1)) for rank, item in enumerate(picks)]


def load_next_item_models(version: str, model_dir: Path, **options: Any) -> NextItemRanker:
    """The next-item models in ``model_dir``, if they are of ``version``: what a worker's
    model process loads (``streamer.worker.main.next_item_process``). A child started
    again (after one died) loads them from disk anew: were they replaced there under a
    running worker, the worker's item indices would be another model's, so the child
    refuses to start (the batch is retried, and a restarted worker loads the new model
    whole). It lives here, not with the worker, so the child imports this module alone,
    not Faust and the rest of the worker (about 30 MB)."""
    ranker = NextItemRanker(model_dir, **options)
    if ranker.version != version:
        raise ConfigurationError(f"{model_dir} now holds {ranker.version}; this worker serves {version}: restart it")
    return ranker


def encode_and_rank(ranker: NextItemRanker, top_k: int, sequences: Sequence[list[int]], excluded: Sequence[list[int]],
                    cached: Sequence[np.ndarray | None]) -> Ranking:
    """The rankings by row (a click, or a ranking request's user), for every row with a
    cached embedding or a history, as ``published_items``; and the rows encoded (one
    encoder call for those without a cached embedding) with their embeddings, one each.
    Runs in a model process too, so it takes and gives arrays, plain lists and bytes;
    and it lives here, beside ``load_next_item_models``, so a child imports nothing to
    run it. A child imports the module of each function it is sent at its first call:
    defined with the pipelines, this imported about 150 modules more (redis-py,
    multiprocessing...), 85 ms that held up a restarted worker's first batch of clicks."""
    encoded = [i for i, seq in enumerate(sequences) if seq and cached[i] is None]
    fresh = (ranker.encode([sequences[i] for i in encoded]) if encoded
             else np.empty((0, ranker.embedding_dim), dtype=np.float32))
    vectors = list(cached)
    for row, i in enumerate(encoded):
        vectors[i] = fresh[row]
    ranked_rows = [i for i, v in enumerate(vectors) if v is not None]
    if not ranked_rows:
        return {}, encoded, fresh
    embeddings = np.stack([vectors[i] for i in ranked_rows]).astype(np.float32)  # type: ignore[misc]
    ranked = ranker.rank(embeddings, [excluded[i] for i in ranked_rows], top_k, decimals=SCORE_DECIMALS)
    return {row: published_items(listed, rounded=True) for row, listed in zip(ranked_rows, ranked)}, encoded, fresh


def published_items(listed: Ranked, rounded: bool = False) -> bytes:
    """A ranking as a ``recommendations`` record's ``items``, in JSON; its scores are
    rounded to the published decimals unless ``rounded`` says they already are."""
    return orjson.dumps([{"item_id": item, "score": score if rounded else published_score(score)}
                         for item, score in listed])
