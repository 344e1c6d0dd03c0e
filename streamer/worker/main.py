"""``streamer worker``: create the topics, load the models, run the Faust worker."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import Callable

import faust
from faust import Worker

from streamer.inference.fraud_scorer import FraudScorer
from streamer.inference.model_process import ModelProcess
from streamer.inference.next_item import NextItemRanker, load_next_item_models
from streamer.output.sink import KafkaSink
from streamer.pipeline.fraud import FraudPipeline, LabelPipeline
from streamer.features.fraud import DAY, DELAY_DAYS
from streamer.pipeline.event_clock import EventClock
from streamer.pipeline.recommend import RankingRequestPipeline, RecommendPipeline
from streamer.settings import Settings
from streamer.state.store import RedisStateStore
from streamer.worker.app import Runtime, build_app
from streamer.worker.highwater import FetchedHighWatermarks
from streamer.worker.topics import ensure_topics

log = logging.getLogger(__name__)

#: The collector's first threshold in a worker (Python's default: 700). A batch makes
#: tens of thousands of short-lived containers, none of them in a reference cycle; at
#: 700 the collector ran dozens of times per batch. Drains side by side on the 2-core
#: machine (docs/benchmarks.md): about 1.1x to 1.2x with 10,000 and with 50,000.
GC_FIRST_THRESHOLD = 10_000


def build_runtime(settings: Settings) -> Runtime:
    """The pipelines of the jobs ``settings.worker`` names, with only their models loaded."""
    store = RedisStateStore.from_settings(settings.redis)
    models = settings.models
    runtime = Runtime(settings=settings, sink=KafkaSink(settings.kafka.bootstrap_servers))
    if settings.worker.runs("fraud"):
        scorer = FraudScorer(models.fraud, provider=models.provider, threads=models.threads)
        highwaters = FetchedHighWatermarks(settings.kafka.bootstrap_servers)
        label_clock = EventClock(store, settings.topics.fraud_labels, highwaters, settings.fraud.label_wait_ms)
        transaction_clock = EventClock(store, settings.topics.transactions, highwaters, slack_s=DELAY_DAYS * DAY)
        fraud = FraudPipeline(scorer, store, settings, label_clock=label_clock, transaction_clock=transaction_clock)
        runtime.transactions, runtime.labels = fraud, LabelPipeline(store, settings)
        runtime.on_rebalance, runtime.highwaters = (fraud.features.cache.clear,), highwaters
    if settings.worker.runs("recommend"):
        ranker = NextItemRanker(models.recommend, provider=models.provider, threads=models.threads, fp16=models.fp16,
                                int8=models.int8)
        next_items = next_item_process(settings, ranker.version) if models.process else None  # clicks and requests
        runtime.clicks = RecommendPipeline(ranker, store, settings, next_items)
        runtime.ranking_requests = RankingRequestPipeline(ranker, store, settings, next_items)
    return runtime


def next_item_process(settings: Settings, version: str) -> ModelProcess:
    """A child process with the next-item models of ``version`` (the worker's own),
    started and loaded."""
    models = settings.models
    load = functools.partial(load_next_item_models, version, models.recommend, provider=models.provider,
                             threads=models.threads, fp16=models.fp16, int8=models.int8)
    return ModelProcess(load, "next-item models").start()


def run_worker(settings: Settings, loglevel: str = "info", build: Callable[[Settings], Runtime] = build_runtime) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    kafka = settings.kafka
    loop.run_until_complete(
        ensure_topics(kafka.bootstrap_servers, settings.topics.all(), kafka.partitions, kafka.replication_factor)
    )
    app = build_app(build(settings))
    log.info("running jobs: %s", ", ".join(settings.worker.job_names))
    tune_gc()
    make_worker(app, loop, loglevel).execute_from_commandline()


def tune_gc() -> None:
    """Collect less often, and no longer look through what was loaded at start (modules,
    models, the app): none of it is ever garbage."""
    gc.freeze()
    gc.set_threshold(GC_FIRST_THRESHOLD, *gc.get_threshold()[1:])


def make_worker(app: faust.App, loop: asyncio.AbstractEventLoop, loglevel: str) -> Worker:
    """A Faust worker without its terminal spinner: at levels from WARNING up, the
    spinner lowers the root logger to DEBUG so that it ticks on every record, and every
    library's debug records (aiokafka writes several per fetch) would then be built."""
    worker = Worker(app, loop=loop, loglevel=loglevel, quiet=True)
    worker.spinner = None
    return worker
