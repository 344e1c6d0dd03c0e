"""``start_missing_services``: what it starts for a Redis that does not answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import pytest

from streamer.embedded import EmbeddedBroker, free_port, start_missing_services
from streamer.settings import Settings
from streamer.state.store import RedisStateStore

pytestmark = pytest.mark.kafka  # the session's embedded broker, so that none other is started


async def answers(settings: Settings) -> bool:
    store = RedisStateStore.from_settings(settings.redis)
    try:
        return await store.ping()
    finally:
        await store.close()


def test_a_redis_started_for_a_missing_cluster_is_talked_to_as_one_server(broker: EmbeddedBroker) -> None:
    """A laptop with ``STREAMER_REDIS_CLUSTER=true`` left set and no Redis running gets an
    embedded Valkey server, which is not a cluster."""
    settings = Settings.from_env({}).replace(kafka={"bootstrap_servers": broker.bootstrap_servers},
                                             redis={"url": f"redis://127.0.0.1:{free_port()}/0", "cluster": True})
    with contextlib.ExitStack() as stack:
        started = start_missing_services(settings, stack)
        assert str(started.redis.url) != str(settings.redis.url) and not started.redis.cluster
        assert asyncio.run(answers(started))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="scheduling policies are Linux's")
def test_the_embedded_broker_runs_as_a_batch_process(broker: EmbeddedBroker) -> None:
    """A request that wakes the broker does not take the core from the worker that sent it
    (``broker_child``): every thread of the broker has the ``SCHED_BATCH`` policy."""
    assert broker.process is not None
    threads = os.listdir(f"/proc/{broker.process.pid}/task")
    assert len(threads) > 1  # its runtime's workers started after exec, and inherited the policy
    assert {os.sched_getscheduler(int(tid)) for tid in threads} == {os.SCHED_BATCH}


def test_a_broker_that_does_not_come_up_in_time_is_not_left_running(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamer.embedded as embedded

    def never_up(host: str, port: int, timeout_s: float) -> None:
        raise TimeoutError(f"nothing listens on {host}:{port}")

    monkeypatch.setattr(embedded, "wait_for_port", never_up)
    broker = EmbeddedBroker()
    with pytest.raises(TimeoutError):
        broker.start()
    assert broker.process is None  # stopped: ``__exit__`` never runs for a start that failed
