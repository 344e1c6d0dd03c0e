"""The fraud model at serving time: 15 features in, a probability out.

Loads an exported directory (``model.onnx`` + ``manifest.json``), refuses one whose
feature schema differs from ``streamer.features.fraud`` and scores a whole batch in
one ONNX Runtime call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamer.errors import ConfigurationError
from streamer.features.fraud import FEATURE_NAMES, FEATURE_SCHEMA_HASH
from streamer.inference.manifest import load_manifest
from streamer.inference.runner import OnnxModel


class FraudScorer:
    def __init__(self, model_dir: Path, *, provider: str = "auto", threads: int = 1) -> None:
        self.manifest = load_manifest(model_dir, "fraud")
        if tuple(self.manifest["features"]) != FEATURE_NAMES or self.manifest.get("feature_schema_hash") != FEATURE_SCHEMA_HASH:
            raise ConfigurationError(f"{model_dir}: feature schema differs from the engine's")
        self.version: str = self.manifest["version"]
        self.feature_mean = np.asarray(self.manifest["feature_stats"]["mean"], dtype=np.float64)
        self.feature_std = np.asarray(self.manifest["feature_stats"]["std"], dtype=np.float64)
        self.model = OnnxModel(model_dir / self.manifest["file"], provider=provider, threads=threads)
        self.model.warm_up()

    def score(self, features: np.ndarray) -> np.ndarray:
        """Fraud probabilities in [0, 1] for a ``(batch, 15)`` float32 array."""
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        (scores,) = self.model.run({"features": features.astype(np.float32, copy=False)})
        return np.clip(scores.reshape(-1), 0.0, 1.0)
