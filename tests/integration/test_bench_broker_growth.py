"""``bench.broker_growth`` against the embedded broker: what each window reports."""

from __future__ import annotations

import asyncio

import pytest

from bench.broker_growth import steady
from streamer.embedded import EmbeddedBroker

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("consume", [False, True])
def test_a_window_reports_the_records_held_and_read_and_the_broker_cpu(broker: EmbeddedBroker, topic: str,
                                                                       consume: bool) -> None:
    pid = broker.pid
    assert pid is not None
    (window,) = asyncio.run(steady(broker.bootstrap_servers, pid, topic, consume,
                                   seconds=5.5, rate=400, batch=20))
    assert 1900 <= window["held"] <= 2300  # 400 records/s for the 5 s window
    if consume:
        assert window["held"] - 200 <= window["read"] <= window["held"]  # read as they arrive
    else:
        assert window["read"] == 0
    assert window["broker_cpu_pct"] >= 0
