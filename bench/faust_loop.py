"""The engine's Faust app with nothing to do: each input is published unchanged.

The same agents, micro-batches, sink and acknowledgements as ``streamer worker``, but no
decoding, state or model: the ceiling of the framework the engine runs in (the bare
aiokafka loop of ``bench.run`` skips Faust as well). ``python -m bench.faust_loop`` runs
it as a worker configured by the same ``STREAMER_*`` variables: transactions are echoed
to the fraud-scores topic, clicks to the recommendations topic.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamer.output.sink import KafkaSink
from streamer.records import OutputRecord, SourceRecord
from streamer.settings import Settings
from streamer.worker.app import Runtime
from streamer.worker.main import run_worker


class Echo:
    def __init__(self, topic: str) -> None:
        self.topic = topic

    async def process(self, records: Sequence[SourceRecord]) -> list[OutputRecord]:
        return [OutputRecord(self.topic, r.key, r.value or b"") for r in records]


def echo_runtime(settings: Settings) -> Runtime:
    """Echoes over the input topics of the jobs ``settings.worker`` names, as a worker's."""
    topics = settings.topics
    runtime = Runtime(settings=settings, sink=KafkaSink(settings.kafka.bootstrap_servers))
    if settings.worker.runs("fraud"):
        runtime.transactions, runtime.labels = Echo(topics.fraud_scores), Echo(topics.dead_letter)
    if settings.worker.runs("recommend"):
        runtime.clicks = runtime.ranking_requests = Echo(topics.recommendations)
    return runtime


if __name__ == "__main__":
    run_worker(Settings.from_env(), loglevel="warning", build=echo_runtime)
