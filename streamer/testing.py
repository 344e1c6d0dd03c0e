"""A pytest plugin for users' own tests: replay captures through the real pipeline.

Enabled automatically once the package is installed (entry point ``pytest11``).
Fixtures:

``streamer_broker``
    An embedded Kafka-compatible broker (Tansu) for the test session.
``streamer_redis_url``
    ``STREAMER_TEST_REDIS_URL`` or ``STREAMER_REDIS_URL`` when that Redis answers, else an
    embedded Valkey for the session.
``streamer_replay``
    ``streamer_replay(captures, **settings_changes) -> Outputs``: starts a
    ``streamer worker`` process on fresh topics, a fresh consumer group and a fresh Redis
    namespace, replays the captures into it, waits for one output per input and
    returns the outputs (scores, alerts, recommendations, dead letters).
``streamer_offline``
    ``streamer_offline(captures, batch_size=256) -> Outputs``: the same pipeline in this
    process, over an in-memory state store, without a broker.

Example::

    def test_my_capture(streamer_replay, streamer_offline):
        live = streamer_replay([Path("captures/july.jsonl.gz")])
        assert not live.differences(streamer_offline([Path("captures/july.jsonl.gz")]))
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from streamer.embedded import EmbeddedBroker, answering_redis
from streamer.replay.offline import Outputs, run_offline
from streamer.replay.through_worker import Replayer
from streamer.settings import Settings


@pytest.fixture(scope="session")
def streamer_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_file=tmp_path_factory.mktemp("tansu") / "tansu.log") as broker:
        yield broker


@pytest.fixture(scope="session")
def streamer_redis_url() -> Iterator[str]:
    url = os.environ.get("STREAMER_TEST_REDIS_URL") or os.environ.get("STREAMER_REDIS_URL") or "redis://127.0.0.1:6379/15"
    with contextlib.ExitStack() as stack:
        yield answering_redis(url, stack)


@pytest.fixture
def streamer_replay(streamer_broker: EmbeddedBroker, streamer_redis_url: str, tmp_path: Path) -> Replayer:
    return Replayer(streamer_broker.bootstrap_servers, streamer_redis_url, tmp_path)


@pytest.fixture
def streamer_offline() -> Callable[..., Outputs]:
    def run(captures: Sequence[Path], batch_size: int = 256, **changes: dict[str, Any]) -> Outputs:
        settings = Settings.from_env().replace(**changes)
        records = asyncio.run(run_offline(captures, settings, batch_size=batch_size))
        return Outputs.collect(((r.topic, r.key, r.value, r.headers) for r in records), settings)

    return run
