"""The Faust app's wiring that needs no broker."""

from __future__ import annotations

import tempfile
from pathlib import Path

from faust.types import TP

from streamer.output.sink import ListSink
from streamer.settings import Settings
from streamer.state.card_cache import CachedCard, CardCache
from streamer.state.interface import CardState
from streamer.worker.app import LeanMonitor, Runtime, build_app
from streamer.worker.main import build_runtime
from tests.support import NoOutputs, idle_app


def test_the_app_keeps_only_the_stream_timing_its_consumer_reads() -> None:
    app = idle_app()
    assert isinstance(app.monitor, LeanMonitor)
    tp = TP("transactions", 0)
    app.monitor.on_message_in(tp, 5, object())
    app.monitor.on_stream_event_in(tp, 5, object(), object())
    app.monitor.on_stream_event_out(tp, 5, object(), object(), None)
    assert tp in app.monitor.stream_inbound_time  # the consumer's stalled-stream check reads it
    assert app.monitor.messages_received_total == 0 and app.monitor.events_total == 0


async def test_partitions_moving_forget_the_state_a_worker_keeps() -> None:
    cache = CardCache(capacity=10)
    cache.cards["c"] = CachedCard(since=0.0, state=CardState())
    app = idle_app(on_rebalance=[cache.clear])
    await app.on_partitions_revoked.send({TP("transactions", 0)})
    assert cache.cards == {} and cache.generation == 1
    await app.on_partitions_assigned.send({TP("transactions", 1)})
    assert cache.generation == 2


def subscribed(runtime: Runtime) -> dict[str, str]:
    """The app's agents, by name, with the topic each consumes."""
    return {name: agent.channel.get_topic_name() for name, agent in build_app(runtime).agents.items()}


def test_a_worker_consumes_only_the_topics_of_its_jobs() -> None:
    settings, pipeline = Settings.from_env({}), NoOutputs()
    everything = subscribed(Runtime(settings, ListSink(), pipeline, pipeline, pipeline, pipeline))
    assert everything == {"score_transactions": "transactions", "store_labels": "fraud-labels",
                          "recommend_next_items": "clickstream", "answer_ranking_requests": "recommend-requests"}
    clicks_only = subscribed(Runtime(settings, ListSink(), clicks=pipeline, ranking_requests=pipeline))
    assert clicks_only == {"recommend_next_items": "clickstream", "answer_ranking_requests": "recommend-requests"}


def test_a_worker_loads_only_the_models_of_its_jobs() -> None:
    fraud = build_runtime(Settings.from_env({"STREAMER_WORKER_JOBS": "fraud"}))
    assert fraud.transactions is not None and fraud.labels is not None and fraud.highwaters is not None
    assert fraud.clicks is None and fraud.ranking_requests is None
    assert len(fraud.on_rebalance) == 1  # its card cache is forgotten when partitions move
    recommend = build_runtime(Settings.from_env({"STREAMER_WORKER_JOBS": "recommend", "STREAMER_MODELS_PROCESS": "false"}))
    assert recommend.clicks is not None and recommend.ranking_requests is not None
    assert recommend.transactions is None and recommend.labels is None and recommend.highwaters is None
    assert recommend.on_rebalance == ()


def test_faust_keeps_its_data_folder_out_of_the_working_directory(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Faust makes its data folder at start; its default is relative to the working
    directory, which the worker image's user cannot write."""
    monkeypatch.delenv("FAUST_DATADIR", raising=False)
    folder = idle_app().conf.datadir
    assert folder.is_absolute() and folder.parent == Path(tempfile.gettempdir())
    monkeypatch.setenv("FAUST_DATADIR", str(tmp_path / "faust"))
    assert idle_app().conf.datadir == tmp_path / "faust"
