"""The inference stage and the engine on a GPU: ``python -m bench.gpu``.

The prepared check for a machine with an NVIDIA GPU and ``onnxruntime-gpu`` (see
``bench/gpu.sh``). For each provider present (CPU always, CUDA when onnxruntime offers
it) it measures, on the shipped models and real inputs:

* the fraud model (card encoder + trees + scorer) and the next-item model (encoder +
  ranker) alone, per second, at several batch sizes, in float32 and, on CUDA, with the
  encoders in float16 (``STREAMER_MODELS_FP16``; IO binding is always on for CUDA);
* the CPU's int8 next-item graphs (``STREAMER_MODELS_INT8``, the runtime's choice there);
* float16's and int8's accuracy against float32 on the CPU: the largest fraud-probability
  difference and the share of users whose top 10 is unchanged (the issue's bar: within 0.003);
* with ``--engine``, the engine's drain throughput with ``STREAMER_MODELS_PROVIDER``
  cpu and cuda, side by side (embedded broker, Redis, a worker process).

Results are printed as JSON and written to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamer.datasets import BEAUTY, FRAUD_CSV, read_fraud_csv, read_sequences
from streamer.inference.fraud_scorer import FraudScorer
from streamer.inference.manifest import load_manifest
from streamer.inference.next_item import NextItemRanker
from streamer.pipeline.fraud import TransactionFeatures
from streamer.settings import Settings
from streamer.state.memory import InMemoryStateStore

ROOT = Path(__file__).resolve().parent.parent


def fraud_inputs(scorer: FraudScorer, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real rows of the first transactions, each with its card's earlier rows as history."""
    sample = [tx for tx, _ in read_fraud_csv(FRAUD_CSV, 5 * n)]
    rows = np.asarray(asyncio.run(TransactionFeatures(InMemoryStateStore()).compute(sample)), dtype=np.float32)
    length = scorer.sequence_length
    history = np.zeros((len(rows), length, rows.shape[1]), dtype=np.float32)
    valid = np.zeros((len(rows), length), dtype=np.float32)
    by_card: dict[str, list[int]] = defaultdict(list)
    for i, tx in enumerate(sample):
        earlier = by_card[tx.card_id][-length:]
        if earlier:
            history[i, length - len(earlier):] = rows[earlier]
            valid[i, length - len(earlier):] = 1.0
        by_card[tx.card_id].append(i)
    return rows[-n:], history[-n:], valid[-n:]


def per_second(step: Callable[[], object], batch: int, seconds: float) -> float:
    step()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        calls += 1
    return calls * batch / (time.perf_counter() - started)


def inference(provider: str, fp16: bool, batches: list[int], seconds: float, int8: bool = False) -> dict[str, object]:
    models = Settings().models
    scorer = FraudScorer(models.fraud, provider=provider)  # float32 always: raw amounts pass float16's range
    ranker = NextItemRanker(models.recommend, provider=provider, fp16=fp16, int8=int8)
    rows, history, valid = fraud_inputs(scorer, max(batches))
    users = [ranker.indices(items[:-1]) for _, items in itertools.islice(read_sequences(BEAUTY), max(batches))]
    out: dict[str, object] = {"provider": provider, "fp16": fp16, "int8": ranker.int8}
    for batch in batches:
        out[f"fraud_per_s_batch_{batch}"] = round(per_second(
            lambda: scorer.score(rows[:batch], scorer.encode(history[:batch], valid[:batch])), batch, seconds))
        out[f"ranking_per_s_batch_{batch}"] = round(per_second(
            lambda: ranker.rank(ranker.encode(users[:batch]), users[:batch], 10), batch, seconds))
    out["fraud_scores"] = scorer.score(rows, scorer.encode(history, valid))
    out["top10"] = [[item for item, _ in ranked] for ranked in ranker.rank(ranker.encode(users), users, 10)]
    return out


def engine(provider: str, n: int) -> dict[str, float]:
    import contextlib

    from bench.run import clicks, drain, local_services, transactions

    with contextlib.ExitStack() as stack:
        _, base = local_services(stack)
        base = base.replace(models={"provider": provider})
        log = ROOT / "bench" / "results" / f"gpu-worker-{provider}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        return {
            "transactions_per_s": round(drain(base, "transactions", transactions(n), base.batch.max_size, log).rate),
            "clicks_per_s": round(drain(base, "clicks", clicks(n), base.batch.max_size, log).rate),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="64,512,4096", help="batch sizes of the inference measurement")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--engine", type=int, default=0, metavar="N", help="also drain N events through the engine per provider")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    providers = ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
    results: dict[str, object] = {"onnxruntime": ort.__version__, "available": ort.get_available_providers(),
                                  "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                  "models": model_versions(), "runs": []}
    if args.engine:
        results["engine_events"] = args.engine
    runs: list[dict[str, object]] = results["runs"]  # type: ignore[assignment]
    outputs = []
    # CPU in float32 first (the reference), then the CPU's int8 next-item graphs (the
    # runtime's choice there), then CUDA in float32 and with float16 encoders
    variants = [("cpu", False, False), ("cpu", False, True)] + [("cuda", fp16, False) for fp16 in (False, True)
                                                                 if "cuda" in providers]
    for provider, fp16, int8 in variants:
        run = inference(provider, fp16, batches, args.seconds, int8)
        outputs.append((run.pop("fraud_scores"), run.pop("top10")))
        if len(outputs) > 1:  # against the first run: CPU, float32
            (scores, top10), (ref_scores, ref_top10) = outputs[-1], outputs[0]
            run["max_fraud_difference_vs_cpu_fp32"] = float(np.max(np.abs(scores - ref_scores)))  # type: ignore[operator]
            run["top10_unchanged_share_vs_cpu_fp32"] = float(np.mean([a == b for a, b in zip(top10, ref_top10)]))  # type: ignore[call-overload]
        runs.append(run)
        print(run, flush=True)
    write(results, args.out)  # kept should the engine's run fail or time out
    if args.engine:
        results["engine"] = {}
        for provider in providers:
            results["engine"][provider] = engine(provider, args.engine)  # type: ignore[index]
            write(results, args.out)
    print(json.dumps(results, indent=2))
    return 0


def model_versions() -> dict[str, str]:
    """The versions of the models measured, from their manifests."""
    models = Settings().models
    return {name: load_manifest(path, name)["version"] for name, path in (("fraud", models.fraud), ("recommend", models.recommend))}


def machine() -> str:
    """The GPU (from nvidia-smi, when there is one) and the CPU count."""
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        gpu = "no GPU"
    return f"{gpu}; {os.cpu_count()} CPUs"


def write(results: dict[str, object], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
