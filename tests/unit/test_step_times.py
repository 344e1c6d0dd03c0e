"""Batches' step times, as an agent reports them (``streamer.worker.step_times``)."""

from __future__ import annotations

import asyncio

import pytest

from streamer.worker.batching import Batcher, Finish, Infer
from streamer.worker.step_times import STEPS, BatchTimes, parse_reports, timed


class Clock:
    """A clock that each step moves on by the milliseconds it was told to take."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def take(self, ms: float) -> None:
        self.now += ms / 1000.0


def steps_taking(clock: Clock, first: float, models: float, last: float, delivery: float, delivered: list[list[int]]):  # type: ignore[no-untyped-def]
    """A pipeline's ``process`` and ``deliver`` whose steps take the given milliseconds."""

    async def process(batch: list[int]) -> Infer[list[int]]:
        clock.take(first)

        async def infer() -> Finish[list[int]]:
            clock.take(models)

            async def finish() -> list[int]:
                clock.take(last)
                return [2 * x for x in batch]

            return finish

        return infer

    async def deliver(batch: list[int], outputs: list[int]) -> None:
        clock.take(delivery)
        delivered.append(outputs)

    return process, deliver


def test_each_step_of_each_batch_is_timed_and_a_report_starts_afresh() -> None:
    clock, times, delivered = Clock(), BatchTimes("score_transactions"), []
    process, deliver = timed(*steps_taking(clock, 30, 20, 10, 5, delivered), times, clock)

    async def run(batch: list[int]) -> None:
        infer = await process(batch)
        finish = await infer()
        await deliver(batch, await finish())

    asyncio.run(run([1, 2, 3]))
    process, deliver = timed(*steps_taking(clock, 50, 40, 12, 7, delivered), times, clock)
    asyncio.run(run([4]))

    assert delivered == [[2, 4, 6], [8]]  # the wrapped steps' results pass through
    assert times.report() == ("score_transactions: 2 batches, 2 events each on average; mean (longest) ms: "
                              "first step 40.0 (50.0), models 30.0 (40.0), last step 11.0 (12.0), delivery 6.0 (7.0)")
    assert times.report() is None  # nothing since


def test_a_lane_times_every_batch_it_runs() -> None:
    clock, times, delivered = Clock(), BatchTimes("recommend_next_items"), []
    process, deliver = timed(*steps_taking(clock, 4, 3, 2, 1, delivered), times, clock)

    async def run() -> None:
        async with Batcher(process, deliver, max_size=2) as batcher:
            await batcher.add([1, 2, 3, 4, 5])
            while sum(map(len, delivered)) < 5:
                await asyncio.sleep(0.001)

    asyncio.run(run())
    assert (times.batches, times.events) == (3, 5)
    assert {step: durations.count for step, durations in times.steps.items()} == {
        "first step": 3, "models": 3, "last step": 3, "delivery": 3}
    assert times.steps["models"].total_s == pytest.approx(0.009)


def test_a_failed_step_counts_its_batch_but_no_time() -> None:
    clock, times = Clock(), BatchTimes("score_transactions")

    async def process(batch: list[int]) -> Infer[list[int]]:
        clock.take(8)

        async def infer() -> Finish[list[int]]:
            raise ConnectionError("redis went away")

        return infer

    async def deliver(batch: list[int], outputs: list[int]) -> None:
        return None

    timed_process, _ = timed(process, deliver, times, clock)

    async def run() -> None:
        infer = await timed_process([1, 2])
        with pytest.raises(ConnectionError):
            await infer()

    asyncio.run(run())
    assert times.steps["first step"].count == 1 and times.steps["models"].count == 0
    assert times.report() == ("score_transactions: 1 batch, 2 events each on average; mean (longest) ms: "
                              "first step 8.0 (8.0), models 0.0 (0.0), last step 0.0 (0.0), delivery 0.0 (0.0)")


def test_reports_read_back_from_a_log_are_taken_together() -> None:
    first, second = BatchTimes("score_transactions"), BatchTimes("recommend_next_items")
    for times, batches, ms in ((first, 3, 10.0), (second, 1, 99.0)):
        for _ in range(batches):
            times.batches += 1
            times.events += 512
            for step in STEPS:
                times.took(step, ms / 1000)
    first_line = first.report()
    first.batches, first.events = 1, 256
    first.took("first step", 0.030)
    first.took("models", 0.002)
    log = [f"[2026-12-03 18:18:36,456] [8755] [INFO] {first_line} ", "unrelated line", f"... {second.report()}",
           f"[INFO] {first.report()}"]

    taken = parse_reports(log, "score_transactions")

    assert taken == {"batches": 4, "mean_size": 448, "steps_ms": {
        "first step": {"mean": 15.0, "longest": 30.0}, "models": {"mean": 8.0, "longest": 10.0},
        "last step": {"mean": 7.5, "longest": 10.0}, "delivery": {"mean": 7.5, "longest": 10.0}}}
    assert parse_reports(log, "store_labels") is None
