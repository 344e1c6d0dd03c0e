"""int8 copies of an exported recommender's graphs for the CPU provider, checked on the evaluation.

``python -m models.recommend.quantize models/shipped/recommend --data ../shared/data/rec/Beauty.txt``
writes ``encoder.int8.onnx`` and ``ranker.int8.onnx`` beside the float32 graphs and records
them under ``int8`` in ``manifest.json`` with HR@10 / NDCG@10 of both on the valid and test
splits. It writes nothing when a metric of the int8 graphs on the valid split falls more
than ``--tolerance`` (relative) below the float32 one, or when they fail
``check.check_onnx`` (a row's result must not depend on the batch around it or on the
width it is padded to). The test split is reported, never consulted: a choice made on it
would leave no untouched split to report.

The matrix multiplications by a weight (the item table's among them) are quantised,
weights per output channel in 7 bits (``reduce_range``: x86 CPUs without VNNI add pairs
of 8-bit products in 16 bits and could saturate, so results would differ by CPU). The
attention's products of two activations stay float32, and so does every product's
output (the ranker's scores keep their order). Activations are quantised with **fixed**
scales, calibrated once on training histories: with dynamic quantisation a batch's
largest value sets every row's scale, so a user's recommendations would change with the
users batched alongside (the runtime batches by arrival, and a replay must give what the
live stream gave).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .check import check_histories, check_onnx
from .data import left_pad, read_items, read_sequences, right_pad, split
from .evaluate import evaluate

FILES = {"encoder": "encoder.int8.onnx", "ranker": "ranker.int8.onnx"}
CALIBRATION_USERS = 2048
CALIBRATION_BATCH = 128


class _Feeds:
    """An ONNX Runtime calibration data reader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def calibration_feeds(model_dir: Path, histories: list[np.ndarray], max_len: int) -> tuple[list[Any], list[Any]]:
    """The encoder's and the ranker's inputs for ``histories``, a batch at a time (the
    ranker's embeddings from the float32 encoder)."""
    encoder = ort.InferenceSession(str(model_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    encoder_feeds, ranker_feeds = [], []
    for start in range(0, len(histories), CALIBRATION_BATCH):
        chunk = histories[start : start + CALIBRATION_BATCH]
        ids = {"item_ids": left_pad(chunk, max_len)}
        embeddings = encoder.run(["user_embedding"], ids)[0]
        encoder_feeds.append(ids)
        ranker_feeds.append({"user_embedding": embeddings, "exclude": right_pad(chunk), "k": np.array([10], dtype=np.int64)})
    return encoder_feeds, ranker_feeds


def quantize_graph(source: Path, target: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(source), str(target), _Feeds(feeds), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"MatMulConstBOnly": True, "OpTypesToExcludeOutputQuantization": ["MatMul"]})


#: The split whose metrics decide whether the int8 graphs ship.
GATE_SPLIT = "valid"


def shortfalls(float32: dict[str, Any], int8: dict[str, Any], tolerance: float) -> list[str]:
    """Each metric of ``int8`` on ``GATE_SPLIT`` more than ``tolerance`` (relative) below
    ``float32``'s; the other splits' metrics are only reported."""
    return [f"{GATE_SPLIT} {metric}: {int8[GATE_SPLIT][metric]:.5f} against {float32[GATE_SPLIT][metric]:.5f}"
            for metric in ("hr@10", "ndcg@10")
            if int8[GATE_SPLIT][metric] < float32[GATE_SPLIT][metric] * (1.0 - tolerance)]


def quantize(model_dir: Path, data: Path, tolerance: float = 0.01, seed: int = 0) -> tuple[dict[str, Any], list[str]]:
    """The manifest's ``int8`` entry, and what fell short; the int8 graphs and the entry
    are written only when nothing did."""
    manifest_path = model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    read = read_sequences(data, items=read_items(model_dir / "items.txt"))
    sequences = read.sequences
    training, _, _ = split(sequences, "valid")  # every item but the last two: what it was trained on
    picked = np.random.default_rng(seed).choice(len(training), min(CALIBRATION_USERS, len(training)), replace=False)
    encoder_feeds, ranker_feeds = calibration_feeds(model_dir, [training[i] for i in picked], int(manifest["max_len"]))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        quantize_graph(model_dir / "encoder.onnx", out / FILES["encoder"], encoder_feeds)
        quantize_graph(model_dir / "ranker.onnx", out / FILES["ranker"], ranker_feeds)
        shutil.copy(model_dir / "items.txt", out / "items.txt")
        float32 = {name: evaluate(data, model_dir, split_name=name, threads=1) for name in ("valid", "test")}
        files = (FILES["encoder"], FILES["ranker"])
        int8 = {name: evaluate(data, out, split_name=name, threads=1, files=files) for name in ("valid", "test")}
        checked = check_onnx(out, check_histories(sequences, read.num_items), threads=1, files=files)
        entry = {
            **FILES,
            "method": "onnxruntime.quantization.quantize_static (QDQ): MatMul by a weight only, int8 weights per "
                      "channel in 7 bits (reduce_range), uint8 activations with fixed MinMax scales, float32 outputs",
            "calibration": {"users": len(picked), "split": "valid histories (training items only)", "seed": seed},
            "onnxruntime": ort.__version__,
            "metrics": {"float32": float32, "int8": int8},
            "tolerance": tolerance,
            "check": checked,
        }
        missing = shortfalls(float32, int8, tolerance) + ([] if checked["ok"] else [f"check: {checked}"])
        if not missing:
            for name in FILES.values():
                shutil.copy(out / name, model_dir / name)
            manifest["int8"] = entry
            manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return entry, missing


def quantize_again(model_dir: Path, data: Path) -> tuple[dict[str, Any], list[str]]:
    """``quantize`` for graphs just exported into ``model_dir``: the int8 copies of the
    graphs they replace are removed first (with their manifest entry), so a shortfall
    leaves the float32 graphs alone, not stale int8 ones."""
    manifest_path = model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if manifest.pop("int8", None) is not None:
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for name in FILES.values():
        (model_dir / name).unlink(missing_ok=True)
    return quantize(model_dir, data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.recommend.quantize", description=__doc__.split("\n")[0])
    p.add_argument("model_dir", type=Path, help="an exported model directory (encoder.onnx, ranker.onnx, manifest.json)")
    p.add_argument("--data", type=Path, required=True, help="the sequence file it was trained on")
    p.add_argument("--tolerance", type=float, default=0.01, help="largest relative fall of a metric allowed")
    p.add_argument("--seed", type=int, default=0, help="which training histories calibrate")
    args = p.parse_args(argv)
    entry, missing = quantize(args.model_dir, args.data, args.tolerance, args.seed)
    print(json.dumps({"metrics": entry["metrics"], "short": missing}, indent=2))
    if missing:
        print("int8 graphs not written: accuracy fell short", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
