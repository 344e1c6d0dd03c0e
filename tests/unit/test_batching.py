"""Micro-batches gather while the previous one is processed and delivered (pure asyncio, no broker)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from streamer.worker.batching import Batcher, Finish, Infer, finished, inferred


class SlowPipeline:
    """Records each batch; a batch's first step ends only when the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, batch: list[int]) -> Infer[None]:
        self.batches.append(batch)
        self.started.set()
        await self.release.wait()
        self.release.clear()
        return inferred(finished(None))


class SlowSteps:
    """Records each batch's first step as it ends, and its later steps as they start and
    as they end; a middle step ends only when the test releases ``infer``, a last step
    only when it releases ``finish``."""

    def __init__(self) -> None:
        self.log: list[tuple[str, list[int]]] = []
        self.infer = asyncio.Event()
        self.finish = asyncio.Event()

    async def __call__(self, batch: list[int]) -> Infer[None]:
        self.log.append(("first", batch))

        async def infer() -> Finish[None]:
            await self._step("second", batch, self.infer)

            async def finish() -> None:
                await self._step("third", batch, self.finish)

            return finish

        return infer

    async def _step(self, name: str, batch: list[int], release: asyncio.Event) -> None:
        self.log.append((name, batch))
        await release.wait()
        release.clear()
        self.log.append((f"{name} ended", batch))


class SlowDelivery:
    """Records each delivery as it starts and as it ends; a delivery ends only when the
    test releases it."""

    def __init__(self) -> None:
        self.log: list[tuple[str, list[int]]] = []
        self.release = asyncio.Event()

    async def __call__(self, batch: list[int], result: None) -> None:
        self.log.append(("start", batch))
        await self.release.wait()
        self.release.clear()
        self.log.append(("end", batch))


async def processed(batch: list[int]) -> Infer[None]:
    return inferred(finished(None))


async def delivered(batch: list[int], result: None) -> None:
    return None


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_what_arrives_during_a_batch_goes_together_into_the_next_in_order() -> None:
    pipeline = SlowPipeline()
    async with Batcher(pipeline, delivered, max_size=10) as batcher:
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
    async with Batcher(pipeline, delivered, max_size=3) as batcher:
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
    async def failing(batch: list[int]) -> Infer[None]:
        raise ValueError("boom")

    async with Batcher(failing, delivered, max_size=2) as batcher:
        await batcher.add([1])
        await settle()
        with pytest.raises(ValueError, match="boom"):
            await batcher.add([2])


async def test_leaving_cancels_the_batch_in_flight() -> None:
    pipeline = SlowPipeline()
    async with Batcher(pipeline, delivered, max_size=2) as batcher:
        await batcher.add([1])
        await pipeline.started.wait()
        task = batcher.lanes[0].task
    assert task is not None and task.cancelled()


async def test_the_next_batch_is_processed_while_the_last_is_delivered_and_deliveries_keep_their_order() -> None:
    pipeline, delivery = SlowPipeline(), SlowDelivery()
    async with Batcher(pipeline, delivery, max_size=10) as batcher:
        await batcher.add([1])
        await pipeline.started.wait()
        pipeline.release.set()
        await settle()
        assert delivery.log == [("start", [1])]
        await batcher.add([2])
        await settle()
        assert pipeline.batches == [[1], [2]]  # processed while [1] is still being delivered
        pipeline.release.set()
        await settle()
        assert delivery.log == [("start", [1])]  # [2] is delivered only after [1]
        delivery.release.set()
        await settle()
        assert delivery.log == [("start", [1]), ("end", [1]), ("start", [2])]
        delivery.release.set()
        await settle()
        assert delivery.log[-1] == ("end", [2])


async def test_the_next_batch_takes_its_first_step_while_the_last_takes_its_second_and_seconds_keep_their_order() -> None:
    steps = SlowSteps()
    async with Batcher(steps, delivered, max_size=10) as batcher:
        await batcher.add([1])
        await settle()
        assert steps.log == [("first", [1]), ("second", [1])]
        await batcher.add([2])
        await settle()
        assert steps.log[2:] == [("first", [2])]  # while [1] is in its second step
        await batcher.add([3])
        await settle()
        assert steps.log[3:] == []  # [3] waits: [2]'s second step has not begun
        steps.infer.set()
        await settle()
        assert steps.log[3] == ("second ended", [1])  # then [2]'s second step, beside [3]'s first
        assert ("first", [3]) in steps.log[4:] and ("second", [2]) in steps.log[4:]
        for _ in range(2):
            steps.infer.set()
            steps.finish.set()
            await settle()
        assert [entry for entry in steps.log if entry[0] == "second"] == [("second", [1]), ("second", [2]), ("second", [3])]


async def test_the_next_batch_takes_its_second_step_while_the_last_takes_its_third_and_thirds_keep_their_order() -> None:
    steps = SlowSteps()
    async with Batcher(steps, delivered, max_size=10) as batcher:
        await batcher.add([1])
        await settle()
        steps.infer.set()
        await settle()
        assert steps.log[-2:] == [("second ended", [1]), ("third", [1])]
        await batcher.add([2])
        await settle()
        assert steps.log[-2:] == [("first", [2]), ("second", [2])]  # while [1] is in its third step
        steps.infer.set()
        await settle()
        assert steps.log[-1] == ("second ended", [2])  # [2]'s third step waits for [1]'s
        steps.finish.set()
        await settle()
        assert steps.log[-2:] == [("third ended", [1]), ("third", [2])]
        steps.finish.set()
        await settle()
        assert steps.log[-1] == ("third ended", [2])


@pytest.mark.parametrize("failing_step", ["second", "third"])
async def test_a_later_step_error_reaches_the_agent(failing_step: str) -> None:
    async def fail() -> None:
        raise ValueError("the model broke")

    async def failing_later(batch: list[int]) -> Infer[None]:
        async def infer() -> Finish[None]:
            if failing_step == "second":
                await fail()
            return fail

        return infer

    async with Batcher(failing_later, delivered, max_size=2) as batcher:
        await batcher.add([1])
        await settle()
        with pytest.raises(ValueError, match="the model broke"):
            await batcher.add([2])
            await settle()
            await batcher.add([3])


async def test_leaving_cancels_the_later_steps_in_flight() -> None:
    steps = SlowSteps()
    async with Batcher(steps, delivered, max_size=2) as batcher:
        await batcher.add([1])
        await settle()
        steps.infer.set()
        await settle()
        await batcher.add([2])
        await settle()
        lane = batcher.lanes[0]
        inferring, finishing = lane.inferring, lane.finishing
    assert steps.log == [("first", [1]), ("second", [1]), ("second ended", [1]), ("third", [1]),
                         ("first", [2]), ("second", [2])]
    assert inferring is not None and inferring.cancelled() and finishing is not None and finishing.cancelled()


async def test_a_delivery_error_reaches_the_agent() -> None:
    async def failing(batch: list[int], result: None) -> None:
        raise ValueError("broker said no")

    async with Batcher(processed, failing, max_size=2) as batcher:
        await batcher.add([1])
        await settle()
        with pytest.raises(ValueError, match="broker said no"):
            await batcher.add([2])


async def test_leaving_cancels_the_delivery_in_flight() -> None:
    delivery = SlowDelivery()
    async with Batcher(processed, delivery, max_size=2) as batcher:
        await batcher.add([1])
        await settle()
        assert delivery.log == [("start", [1])]
        task = batcher.lanes[0].delivering
    assert task is not None and task.cancelled() and delivery.log == [("start", [1])]


async def test_lanes_process_side_by_side_each_in_its_own_order() -> None:
    blocked = asyncio.Event()
    processed: list[list[int]] = []

    async def process(batch: list[int]) -> Infer[None]:
        processed.append(batch)
        if batch[0] % 2 == 0:  # lane 0 (even items) waits, as on a slow Redis reply
            await blocked.wait()
        return inferred(finished(None))

    async with Batcher(process, delivered, max_size=10, lanes=2, lane_of=lambda item: item) as batcher:
        await batcher.add([0, 1, 3])
        await settle()
        assert processed == [[0], [1, 3]]  # lane 1 did not wait for lane 0
        await batcher.add([2, 5, 4, 7])
        await settle()
        assert processed == [[0], [1, 3], [5, 7]]  # lane 0's next batch waits for its first
        blocked.set()
        await settle()
        assert processed == [[0], [1, 3], [5, 7], [2, 4]]
        assert batcher.pending == []


async def test_a_batch_waits_up_to_max_wait_for_more_events() -> None:
    pipeline = SlowPipeline()
    async with Batcher(pipeline, delivered, max_size=10, max_wait_s=0.2) as batcher:
        await batcher.add([1])
        await asyncio.sleep(0.05)
        await batcher.add([2, 3])
        assert pipeline.batches == []  # the oldest has waited less than max_wait
        await asyncio.wait_for(pipeline.started.wait(), 1.0)
        assert pipeline.batches == [[1, 2, 3]]
        pipeline.release.set()


async def test_a_batch_closes_as_soon_as_it_is_full_whatever_the_wait() -> None:
    pipeline = SlowPipeline()
    async with Batcher(pipeline, delivered, max_size=3, max_wait_s=60.0) as batcher:
        await batcher.add([1, 2])
        await settle()
        assert pipeline.batches == []
        await batcher.add([3, 4])
        await asyncio.wait_for(pipeline.started.wait(), 1.0)
        assert pipeline.batches == [[1, 2, 3]]
        pipeline.release.set()


async def test_events_that_waited_while_a_batch_ran_go_without_waiting_again() -> None:
    """Under load the next batch's events have waited out ``max_wait`` during the batch
    in flight: it starts at once, full or not."""
    pipeline = SlowPipeline()
    async with Batcher(pipeline, delivered, max_size=10, max_wait_s=0.05) as batcher:
        await batcher.add([1])
        await asyncio.wait_for(pipeline.started.wait(), 1.0)
        pipeline.started.clear()
        await batcher.add([2])
        await asyncio.sleep(0.1)
        pipeline.release.set()
        await settle()
        assert pipeline.batches == [[1], [2]]
        pipeline.release.set()


@contextlib.asynccontextmanager
async def busy(pipeline: SlowPipeline, **sizes: int) -> AsyncIterator[Batcher[int, None]]:
    """A batcher whose first batch, ``[0]``, is in its first step until released."""
    async with Batcher(pipeline, delivered, **sizes) as batcher:
        await batcher.add([0])
        await pipeline.started.wait()
        yield batcher


async def release(pipeline: SlowPipeline, batches: int) -> None:
    for _ in range(batches):
        pipeline.release.set()
        await settle()


async def test_a_backlog_goes_in_backlog_batches_and_add_waits_only_once_a_backlog_batch_is_waiting() -> None:
    pipeline = SlowPipeline()
    async with busy(pipeline, max_size=3, backlog_size=8) as batcher:
        await batcher.add([1, 2, 3, 4, 5])  # more than a batch but less than a backlog batch: no wait
        blocked = asyncio.ensure_future(batcher.add(list(range(6, 21))))
        await settle()
        assert not blocked.done()  # twenty waiting, a backlog batch and more: the caller waits
        await release(pipeline, 1)  # [0] is in its later steps: a batch twice the size of the one before
        assert not blocked.done() and pipeline.batches == [[0], [1, 2, 3, 4, 5, 6]]
        await release(pipeline, 1)  # then a backlog batch, and fewer than one wait
        assert blocked.done() and pipeline.batches[2] == list(range(7, 15))
        await release(pipeline, 2)
        assert pipeline.batches[3:] == [[15, 16, 17], [18, 19, 20]]
        pipeline.release.set()


async def test_a_backlog_reaching_an_idle_lane_starts_at_max_size_and_doubles_up_to_backlog_batches() -> None:
    """Its first outputs come as soon as a normal batch's would, and the later steps have
    work while the larger batches behind are read; so again once the lane fell idle."""
    sizes: list[int] = []

    async def process(batch: list[int]) -> Infer[None]:
        sizes.append(len(batch))
        return inferred(finished(None))

    async with Batcher(process, delivered, max_size=2, backlog_size=8) as batcher:
        await batcher.add(list(range(30)))
        await settle()
        assert sizes == [2, 4, 8, 8, 8]
        await batcher.add(list(range(12)))
        await settle()
    assert sizes == [2, 4, 8, 8, 8, 2, 4, 2, 2, 2]  # then fewer than a backlog batch waiting: max_size


async def test_fewer_than_a_backlog_batch_waiting_go_in_batches_of_max_size() -> None:
    pipeline = SlowPipeline()
    async with busy(pipeline, max_size=3, backlog_size=8) as batcher:
        await batcher.add([1, 2, 3, 4, 5, 6, 7])
        await release(pipeline, 3)
        assert pipeline.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]
        pipeline.release.set()


async def test_a_backlog_size_below_max_size_changes_nothing() -> None:
    pipeline = SlowPipeline()
    async with busy(pipeline, max_size=3, backlog_size=2) as batcher:
        blocked = asyncio.ensure_future(batcher.add([1, 2, 3, 4]))
        await settle()
        assert not blocked.done()
        await release(pipeline, 2)
        assert pipeline.batches == [[0], [1, 2, 3], [4]]
        pipeline.release.set()
