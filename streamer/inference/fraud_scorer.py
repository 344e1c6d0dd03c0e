"""The fraud model at serving time: feature rows (and the card's sequence) in, a probability out.

Loads an exported directory and refuses one whose feature schema differs from
``streamer.features.fraud``. Two kinds of model, told apart by the manifest:

* ``features`` (``model.onnx``): the 15 features of the transaction → score;
* ``sequence``: ``encoder.onnx`` turns the card's last ``sequence_length`` rows
  (``ROW_FIELDS``) into a card embedding; ``trees.onnx`` (gradient-boosted trees over
  the 15 features) gives its own fraud probability; ``scorer.onnx`` scores the new row
  with both. The pipeline encodes each transaction's card history in one encoder call
  per batch (``streamer.pipeline.card_sequence``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamer.errors import ConfigurationError
from streamer.features.fraud import FEATURE_NAMES, FEATURE_SCHEMA_HASH, ROW_FIELDS
from streamer.inference.manifest import load_manifest
from streamer.inference.runner import OnnxModel

#: Rows per ONNX Runtime call (see ``OnnxModel``). Alone, the card encoder runs 512 rows
#: about as fast in calls of 128, 256 or 512 (11.2, 10.5 and 12.1 ms on the benchmark
#: machine); in a worker, every call returns to Python on the inference thread and waits
#: there for the event loop to let go of the GIL, so a batch of the engine's size goes in
#: one call (docs/benchmarks.md, 2026-12-03 from 16:15 UTC).
ENCODER_ROWS = 512
SCORER_ROWS = 512


class FraudScorer:
    def __init__(self, model_dir: Path, *, provider: str = "auto", threads: int = 1) -> None:
        """Always float32, ``STREAMER_MODELS_FP16`` or not: the card encoder takes raw
        amounts, and float16 holds none above 65,504 (the embedding, and the score, would
        be NaN for an ordinary payment of 70,000 yen)."""
        self.manifest = load_manifest(model_dir, "fraud")
        if tuple(self.manifest["features"]) != FEATURE_NAMES or self.manifest.get("feature_schema_hash") != FEATURE_SCHEMA_HASH:
            raise ConfigurationError(f"{model_dir}: feature schema differs from the engine's")
        self.version: str = self.manifest["version"]
        self.feature_mean = np.asarray(self.manifest["feature_stats"]["mean"], dtype=np.float64)[: len(FEATURE_NAMES)]
        self.feature_std = np.asarray(self.manifest["feature_stats"]["std"], dtype=np.float64)[: len(FEATURE_NAMES)]
        if not len(self.feature_mean) == len(self.feature_std) == len(FEATURE_NAMES):  # an alert's reasons read them
            raise ConfigurationError(f"{model_dir}: feature_stats hold {len(self.feature_mean)} means and "
                                     f"{len(self.feature_std)} deviations, not one of each per feature")
        sequence = self.manifest.get("sequence")
        self.sequence_length = 0
        self.encoder: OnnxModel | None = None
        self.trees: OnnxModel | None = None
        if sequence is None:
            self.model = OnnxModel(model_dir / self.manifest["file"], provider=provider, threads=threads, max_rows=SCORER_ROWS)
        else:
            if tuple(sequence["fields"]) != ROW_FIELDS:
                raise ConfigurationError(f"{model_dir}: sequence fields differ from the engine's rows")
            self.sequence_length = int(sequence["length"])
            self.embedding_size = int(sequence["embedding_size"])
            self.encoder = OnnxModel(model_dir / sequence["encoder"], provider=provider, threads=threads,
                                     max_rows=ENCODER_ROWS)
            self.model = OnnxModel(model_dir / sequence["scorer"], provider=provider, threads=threads, max_rows=SCORER_ROWS)
            if sequence.get("trees"):
                self.trees = OnnxModel(model_dir / sequence["trees"], provider=provider, threads=threads,
                                       max_rows=SCORER_ROWS)
                self.trees.warm_up()
            fixed = self.encoder.session.get_inputs()[0].shape[1]
            if isinstance(fixed, int) and fixed != self.sequence_length:
                raise ConfigurationError(f"{model_dir / sequence['encoder']}: takes histories of {fixed} rows, the "
                                         f"manifest's length is {self.sequence_length}")
            unknown = set(self.model.input_names) - {"card_embedding", "current", *(("tree_score",) if self.trees else ())}
            if unknown:
                raise ConfigurationError(f"{model_dir / sequence['scorer']}: takes {sorted(unknown)}, which this "
                                         "manifest's models do not make")
            self.encoder.warm_up(dims={"length": self.sequence_length})
        self.model.warm_up()

    def encode(self, history: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Card embeddings ``(batch, D)`` of ``(batch, L, 16)`` rows, oldest first, left-padded."""
        if self.encoder is None:
            raise ConfigurationError(f"{self.version} has no card encoder")
        (embeddings,) = self.encoder.run({
            "history": history.astype(np.float32, copy=False), "history_valid": valid.astype(np.float32, copy=False),
        })
        return embeddings

    def score(self, rows: np.ndarray, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Fraud probabilities in [0, 1] for ``(batch, 16)`` rows (``ROW_FIELDS``)."""
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float32)
        rows = rows.astype(np.float32, copy=False)
        if self.encoder is None:
            (scores,) = self.model.run({"features": np.ascontiguousarray(rows[:, : len(FEATURE_NAMES)])})
        else:
            if embeddings is None:
                raise ValueError("a sequence model scores with card embeddings")
            feeds = {"card_embedding": embeddings.astype(np.float32, copy=False), "current": rows}
            if self.trees is not None:
                (feeds["tree_score"],) = self.trees.run({"features": np.ascontiguousarray(rows[:, : len(FEATURE_NAMES)])})
                feeds["tree_score"] = feeds["tree_score"].reshape(-1)
            (scores,) = self.model.run({name: feeds[name] for name in self.model.input_names})
        clipped: np.ndarray = np.clip(scores.reshape(-1), 0.0, 1.0)
        return clipped
