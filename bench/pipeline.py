"""The pipelines alone: CPU per event against the real Redis, without Kafka or Faust.

``python -m bench.pipeline [--events N]`` runs ``FraudPipeline`` and
``RecommendPipeline`` over the benchmark's transactions and clicks in batches of the
engine's size, in this process, against the Redis at ``STREAMER_REDIS_URL`` (else an
embedded Valkey), in a scratch namespace deleted afterwards, with the garbage collector
set as a worker sets it (``worker_gc``: at Python's default it took about a fifth of the
transactions' CPU here, which a worker does not spend). The first half of the
events warms the state up; the second half is measured: events per second of wall time,
microseconds of this process's CPU per event (what a worker spends besides Faust and
its Kafka clients), and microseconds of Redis's CPU per event (every node's, for a
cluster: what sizes the Redis a deployment needs). Prints one JSON object.

``--redis-cluster N`` runs them against an embedded Redis Cluster of ``N`` Valkey nodes
instead (``STREAMER_REDIS_CLUSTER``: one script call per card, terminal or user, and
two round trips per state read and write), ``--embedded-redis`` against one embedded
Valkey server, the same server as the cluster's nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import time
import uuid
from collections.abc import Iterator, Sequence

from bench.cpu import redis_cpu_s
from bench.run import Message, clicks, transactions
from streamer.embedded import EmbeddedRedis, EmbeddedRedisCluster, start_missing_services
from streamer.inference.fraud_scorer import FraudScorer
from streamer.inference.next_item import NextItemRanker
from streamer.pipeline.fraud import FraudPipeline
from streamer.pipeline.recommend import RecommendPipeline
from streamer.records import SourceRecord
from streamer.settings import Settings
from streamer.state.store import RedisStateStore
from streamer.worker.main import tune_gc


@contextlib.contextmanager
def worker_gc() -> Iterator[None]:
    """The garbage collector as a worker sets it (``tune_gc``), then as it was."""
    threshold = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def measure(pipeline: FraudPipeline | RecommendPipeline, messages: Sequence[Message], batch: int,
                  redis_url: str) -> dict[str, float | None]:
    records = [SourceRecord("bench", 0, offset, key, value) for offset, (key, value) in enumerate(messages)]
    half = len(records) // 2
    for start in range(0, half, batch):
        await pipeline.process(records[start : start + batch])
    redis_cpu = redis_cpu_s(redis_url)
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(half, len(records), batch):
        await pipeline.process(records[start : start + batch])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    redis_after = redis_cpu_s(redis_url)
    measured = len(records) - half
    return {"events_per_s": round(measured / wall), "cpu_us_per_event": round(1e6 * cpu / measured, 1),
            "redis_cpu_us_per_event": (None if redis_cpu is None or redis_after is None
                                       else round(1e6 * (redis_after - redis_cpu) / measured, 1))}


async def run(settings: Settings, n: int) -> dict[str, object]:
    store = RedisStateStore.from_settings(settings.redis)
    models, batch, url = settings.models, settings.batch.max_size, str(settings.redis.url)
    try:
        scorer = FraudScorer(models.fraud, provider="cpu", threads=models.threads)
        ranker = NextItemRanker(models.recommend, provider="cpu", threads=models.threads, int8=models.int8)
        with worker_gc():
            return {
                "events": n, "batch_size": batch,
                "transactions": await measure(FraudPipeline(scorer, store, settings), transactions(n), batch, url),
                "clicks": await measure(RecommendPipeline(ranker, store, settings), clicks(n), batch, url),
            }
    finally:
        await store.delete_namespace()
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=40000, help="events per pipeline (half warm-up)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--embedded-redis", action="store_true",
                       help="an embedded Valkey server, not the configured Redis (to compare with --redis-cluster)")
    where.add_argument("--redis-cluster", type=int, default=0, metavar="NODES",
                       help="an embedded Redis Cluster of this many Valkey nodes (STREAMER_REDIS_CLUSTER)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        settings = start_missing_services(Settings.from_env(), stack, broker_port=None)
        if args.embedded_redis:
            settings = settings.replace(redis={"url": stack.enter_context(EmbeddedRedis()).url})
        if args.redis_cluster:
            cluster = stack.enter_context(EmbeddedRedisCluster(args.redis_cluster))
            settings = settings.replace(redis={"url": cluster.url, "cluster": True})
        settings = settings.replace(redis={"namespace": f"bench-pipeline-{uuid.uuid4().hex[:8]}"})
        result = asyncio.run(run(settings, args.events))
        print(json.dumps({"redis": "cluster of %d" % args.redis_cluster if args.redis_cluster
                          else "embedded" if args.embedded_redis else "configured", **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
