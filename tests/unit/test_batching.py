"""Micro-batches gather while the previous one is processed (pure asyncio, no broker)."""

from __future__ import annotations

import asyncio

import pytest

from streamer.worker.batching import Batcher


class SlowPipeline:
    """Records each batch; a batch finishes only when the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, batch: list[int]) -> None:
        self.batches.append(batch)
        self.started.set()
        await self.release.wait()
        self.release.clear()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_what_arrives_during_a_batch_goes_together_into_the_next_in_order() -> None:
    pipeline = SlowPipeline()
    async with Batcher(pipeline, max_size=10) as batcher:
        await batcher.add([1, 2])
        await pipeline.started.wait()
        for chunk in ([3], [4, 5], [6]):
            await batcher.add(chunk)
        await settle()
        assert pipeline.batches == [[1, 2]]  # one batch in flight at a time
        pipeline.release.set()
        await settle()
        assert pipeline.batches == [[1, 2], [3, 4, 5, 6]]
        pipeline.release.set()
        await settle()
        assert batcher.pending == []


async def test_batches_hold_at_most_max_size_and_add_waits_while_a_full_one_is_waiting() -> None:
    pipeline = SlowPipeline()
    async with Batcher(pipeline, max_size=3) as batcher:
        await batcher.add([0])
        await pipeline.started.wait()
        blocked = asyncio.ensure_future(batcher.add([1, 2, 3, 4]))
        await settle()
        assert not blocked.done()  # four waiting, more than a batch: the caller waits
        pipeline.release.set()
        await settle()
        assert blocked.done() and pipeline.batches == [[0], [1, 2, 3]]
        pipeline.release.set()
        await settle()
        assert pipeline.batches == [[0], [1, 2, 3], [4]]
        pipeline.release.set()


async def test_a_processing_error_reaches_the_agent() -> None:
    async def failing(batch: list[int]) -> None:
        raise ValueError("boom")

    async with Batcher(failing, max_size=2) as batcher:
        await batcher.add([1])
        await settle()
        with pytest.raises(ValueError, match="boom"):
            await batcher.add([2])


async def test_leaving_cancels_the_batch_in_flight() -> None:
    pipeline = SlowPipeline()
    async with Batcher(pipeline, max_size=2) as batcher:
        await batcher.add([1])
        await pipeline.started.wait()
        task = batcher._task  # noqa: SLF001
    assert task is not None and task.cancelled()
