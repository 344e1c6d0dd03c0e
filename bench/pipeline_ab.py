"""Two sets of models in the pipelines, side by side: CPU per event, batch by batch.

``python -m bench.pipeline_ab --fraud-a DIR --recommend-a DIR [--fraud-b DIR
--recommend-b DIR] [--events N]`` runs ``FraudPipeline`` and ``RecommendPipeline`` with
models A and with models B (default: the configured ones) over the same benchmark
events, against the real Redis (``STREAMER_REDIS_URL``, else an embedded Valkey), each
set in its own scratch namespace. The two alternate batch by batch in one process (A
then B, then B then A), so a machine that changes speed during the run (these do)
slows both alike; the first half of the events warms the state up and the second half
is measured, with the garbage collector set as a worker sets it
(``bench.pipeline.worker_gc``). Prints one JSON object: microseconds of this process's
CPU per event for A and B, B / A, and how many events each answered (a score, a
recommendation).

The models of an earlier commit: ``git archive <commit> models/shipped | tar -x -C DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from pathlib import Path

from bench.pipeline import worker_gc
from bench.run import clicks, transactions
from streamer.embedded import start_missing_services
from streamer.inference.fraud_scorer import FraudScorer
from streamer.inference.next_item import NextItemRanker
from streamer.pipeline.fraud import FraudPipeline
from streamer.pipeline.recommend import RecommendPipeline
from streamer.records import SourceRecord
from streamer.settings import Settings
from streamer.state.store import RedisStateStore

Pipelines = dict[str, FraudPipeline | RecommendPipeline]


async def compare(settings: Settings, models: dict[str, tuple[Path, Path]], n: int) -> dict[str, object]:
    batch = settings.batch.max_size
    stores: dict[str, RedisStateStore] = {}
    pipelines: dict[str, Pipelines] = {}
    for label, (fraud, recommend) in models.items():
        scoped = settings.replace(redis={"namespace": f"bench-ab-{label}-{uuid.uuid4().hex[:8]}"})
        stores[label] = store = RedisStateStore.from_settings(scoped.redis)
        threads = settings.models.threads
        pipelines[label] = {
            "transactions": FraudPipeline(FraudScorer(fraud, provider="cpu", threads=threads), store, scoped),
            "clicks": RecommendPipeline(NextItemRanker(recommend, provider="cpu", threads=threads), store, scoped),
        }
    result: dict[str, object] = {"events": n, "batch_size": batch,
                                 "models": {label: [str(p) for p in paths] for label, paths in models.items()}}
    try:
        with worker_gc():  # as a worker runs
            for kind, messages in (("transactions", transactions(n)), ("clicks", clicks(n))):
                records = [SourceRecord("bench", 0, offset, key, value) for offset, (key, value) in enumerate(messages)]
                answer = settings.topics.fraud_scores if kind == "transactions" else settings.topics.recommendations
                cpu = dict.fromkeys(models, 0.0)
                answered = dict.fromkeys(models, 0)
                for number, start in enumerate(range(0, len(records), batch)):
                    for label in (list(models) if number % 2 == 0 else list(reversed(models))):
                        started = time.process_time()
                        outputs = await pipelines[label][kind].process(records[start : start + batch])
                        if start >= len(records) // 2:
                            cpu[label] += time.process_time() - started
                        answered[label] += sum(output.topic == answer for output in outputs)
                measured = len(records) - len(records) // 2
                result[kind] = {**{f"{label}_cpu_us_per_event": round(1e6 * cpu[label] / measured, 1) for label in models},
                                "b_over_a": round(cpu["b"] / cpu["a"], 3),
                                **{f"{label}_answered": answered[label] for label in models}}
    finally:
        for store in stores.values():
            await store.delete_namespace()
            await store.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline_ab", description=__doc__.split("\n")[0])
    parser.add_argument("--fraud-a", type=Path, required=True, help="fraud model directory A")
    parser.add_argument("--recommend-a", type=Path, required=True, help="next-item model directory A")
    parser.add_argument("--fraud-b", type=Path, help="fraud model directory B (default: the configured one)")
    parser.add_argument("--recommend-b", type=Path, help="next-item model directory B (default: the configured one)")
    parser.add_argument("--events", type=int, default=30000, help="events per pipeline (half warm-up)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        settings = start_missing_services(Settings.from_env(), stack, broker_port=None)
        models = {"a": (args.fraud_a, args.recommend_a),
                  "b": (args.fraud_b or settings.models.fraud, args.recommend_b or settings.models.recommend)}
        print(json.dumps(asyncio.run(compare(settings, models, args.events)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
