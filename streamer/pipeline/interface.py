"""What a worker, the offline replay and the tests ask of a pipeline.

``Pipeline.process`` turns a micro-batch of source records into its output records.
``Staged`` pipelines (transactions and clicks) also split it in three steps, which a
worker overlaps with the neighbouring batches' (``streamer.worker.batching``). Here, not
beside the Faust app, so that what runs a pipeline without a broker loads no Faust.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from streamer.records import OutputRecord, SourceRecord
from streamer.worker.batching import Infer


class Pipeline(Protocol):
    async def process(self, records: Sequence[SourceRecord]) -> list[OutputRecord]: ...


class Staged(Pipeline, Protocol):
    """A pipeline whose ``process`` runs in three steps, which a worker lets overlap with
    the neighbouring batches' (``streamer.worker.batching``)."""

    async def prepare(self, records: Sequence[SourceRecord]) -> Infer[list[OutputRecord]]:
        """The first step: the batch's state read, and what the next batch reads
        written. Returns the second step (the models), which must run before the next
        batch's second step and returns the third (the rest of the state, the outputs),
        which must run before the next batch's third."""
        ...
