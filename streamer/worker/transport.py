"""A Faust Kafka transport whose consumer waits at most ``fetch_max_wait_ms`` per fetch.

faust-streaming hard-codes ``fetch_max_wait_ms=1500``; brokers that ignore
fetch-min-bytes (the embedded Tansu does) then hold every fetch that long, which puts
1.5 s on every event's latency. Registered as the ``streamer-kafka://`` scheme.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka

SCHEME = "streamer-kafka"


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(getattr(self.app, "streamer_fetch_max_wait_ms", 5))
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


TRANSPORTS.data[SCHEME] = f"{__name__}:Transport"
