"""The Faust app's wiring that needs no broker."""

from __future__ import annotations

from faust.types import TP

from streamer.state.card_cache import CachedCard, CardCache
from streamer.worker.app import LeanMonitor
from tests.support import idle_app


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
    cache.cards["c"] = CachedCard(since=0.0)
    app = idle_app(on_rebalance=[cache.clear])
    await app.on_partitions_revoked.send({TP("transactions", 0)})
    assert cache.cards == {} and cache.generation == 1
    await app.on_partitions_assigned.send({TP("transactions", 1)})
    assert cache.generation == 2
