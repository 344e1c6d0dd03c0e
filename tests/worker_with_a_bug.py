"""``python -m tests.worker_with_a_bug``: ``streamer worker`` (settings from the
environment) whose sink hits a bug, an error that is not Kafka's, at its second send.

The batch it was sending is never acknowledged; the test checks the worker does not go on
without it (``tests/integration/test_engine.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from streamer.output.sink import Delivery, Sink
from streamer.records import OutputRecord
from streamer.settings import Settings
from streamer.worker.app import Runtime
from streamer.worker.main import build_runtime, run_worker


@dataclasses.dataclass
class BreaksAtSecondSend:
    sink: Sink
    sends: int = 0

    async def start(self) -> None:
        await self.sink.start()

    async def send(self, records: Sequence[OutputRecord]) -> Delivery:
        self.sends += 1
        if self.sends == 2:
            raise RuntimeError("a bug in the sink")
        return await self.sink.send(records)

    async def stop(self) -> None:
        await self.sink.stop()


def with_a_bug(settings: Settings) -> Runtime:
    runtime = build_runtime(settings)
    return dataclasses.replace(runtime, sink=BreaksAtSecondSend(runtime.sink))


if __name__ == "__main__":
    run_worker(Settings.from_env(), build=with_a_bug)
