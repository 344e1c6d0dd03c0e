"""Micro-batches that gather while the previous one is processed and delivered.

An agent hands each chunk of events it takes from Faust to ``Batcher.add``. Events go
to a lane by their partition (``lane_of``); each lane processes its events in arrival
order, at most ``max_size`` at a time, and starts its next batch with everything that
arrived while its last one was in flight. A batch closes once it holds ``max_size``
events or its oldest event has waited ``max_wait_s``, whichever comes first: at low
load a batch is what arrived within that wait; under load batches fill up, and the
work of fetching the next events runs while the lanes wait on Redis and the broker.
When ``backlog_size`` events or more are already waiting, a batch takes that many
instead: a backlog (a restart, a rebalance, a replay, a backfill, a worker that fell
behind), whose events have waited already and go faster in larger batches, each
batch's fixed costs shared by more events. A lane with no batch in flight starts a
backlog at ``max_size`` and doubles from batch to batch up to ``backlog_size``, so a
restarted worker's first outputs come as soon as a normal batch's would (0.2 s after a
worker resumed on a backlog, against 0.6 s for a first batch of 4,096, on the benchmark
machine: docs/benchmarks.md, 2026-12-05 from 16:42 UTC). Events that arrive in real time
are never held back for it.

A batch goes through four steps: ``process`` (its state read, and what the next batch
reads written), the ``Infer`` step that ``process`` returns (its models), the ``Finish``
step that ``Infer`` returns (the rest of its state written, its outputs made), then
``deliver`` (its outputs published and acknowledged, its events let go). Within a lane
the steps of one kind run one at a time in batch order. A batch is processed once the
previous one has been processed, so it reads the state the previous one wrote, while
the previous one infers: its models run on the inference thread while the event loop
reads and writes for the next. It infers once the previous one inferred, so the
inference thread goes from one batch's models to the next while the event loop finishes
the previous batch. It finishes once the previous one finished, and is delivered once
the previous one was. Lanes run side by side: while one waits on Redis, another
computes. Since a key's events are all in one partition, a key's events are all in one
lane, as they are all in one worker when several share a topic. ``add`` waits while a
backlog batch is already waiting in a lane, so the rest of a backlog stays in Faust's
buffers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from streamer.errors import ConfigurationError

T = TypeVar("T")
R = TypeVar("R")

Finish = Callable[[], Awaitable[R]]
"""A batch's last step, as its ``Infer`` step returns it: the batch's result."""
Infer = Callable[[], Awaitable[Finish[R]]]
"""A batch's middle step, as its first step (``process``) returns it."""


def finished(result: R) -> Finish[R]:
    """The last step of a batch whose earlier steps did everything: ``result`` as it is."""

    async def finish() -> R:
        return result

    return finish


def inferred(finish: Finish[R]) -> Infer[R]:
    """The middle step of a batch with no models to run: ``finish`` as it is."""

    async def infer() -> Finish[R]:
        return finish

    return infer


async def every_step(infer: Infer[R]) -> R:
    """A batch's middle and last steps, one after the other."""
    return await (await infer())()


class Batcher(Generic[T, R]):
    def __init__(self, process: Callable[[list[T]], Awaitable[Infer[R]]], deliver: Callable[[list[T], R], Awaitable[None]],
                 max_size: int, lanes: int = 1, lane_of: Callable[[T], int] = lambda item: 0,
                 max_wait_s: float = 0.0, backlog_size: int = 0) -> None:
        if lanes < 1:
            raise ConfigurationError(f"STREAMER_BATCH_LANES must be 1 or more, not {lanes}")
        self.lanes = [Lane(process, deliver, max_size, max_wait_s, backlog_size) for _ in range(lanes)]
        self.lane_of = lane_of

    @property
    def pending(self) -> list[T]:
        return [item for lane in self.lanes for item in lane.pending]

    async def __aenter__(self) -> Batcher[T, R]:
        for lane in self.lanes:
            lane.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stops processing; the batches in flight (in any step) are cancelled and what is
        pending dropped, so none of them may have been acknowledged to Kafka (they are
        consumed again)."""
        await asyncio.gather(*(lane.stop() for lane in self.lanes))

    async def add(self, items: Sequence[T]) -> None:
        """Queue ``items`` for processing; returns once fewer than a backlog batch are
        waiting in every lane. Raises what a lane's processing or delivery died of."""
        for lane in self.lanes:
            lane.raise_if_dead()
        if len(self.lanes) == 1:
            self.lanes[0].queue(items)
        else:
            routed: dict[int, list[T]] = {}
            for item in items:
                routed.setdefault(self.lane_of(item) % len(self.lanes), []).append(item)
            for index, lane_items in routed.items():
                self.lanes[index].queue(lane_items)
        for lane in self.lanes:
            await lane.wait_for_room()


class Lane(Generic[T, R]):
    """One lane: its pending events, the task processing them batch by batch, the
    inference of its last processed batch, the finishing of its last inferred one and
    the delivery of its last finished one."""

    def __init__(self, process: Callable[[list[T]], Awaitable[Infer[R]]], deliver: Callable[[list[T], R], Awaitable[None]],
                 max_size: int, max_wait_s: float = 0.0, backlog_size: int = 0) -> None:
        self.process = process
        self.deliver = deliver
        self.max_size = max_size
        self.backlog_size = max(backlog_size, max_size)
        """A batch takes this many when at least this many are waiting (``max_size``: never)."""
        self.max_wait_s = max_wait_s
        self._ramp = max_size
        """How large the lane's backlog batches have grown since it was last idle (``_size``)."""
        self.pending: list[T] = []
        self._oldest_arrival = 0.0
        """When the oldest pending event arrived (the event loop's clock)."""
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.task: asyncio.Task[None] | None = None
        self.inferring: asyncio.Task[None] | None = None
        self.finishing: asyncio.Task[None] | None = None
        self.delivering: asyncio.Future[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self.task, self.inferring, self.finishing, self.delivering) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # their errors, if they died, were raised by ``add``

    def queue(self, items: Sequence[T]) -> None:
        if not self.pending:
            self._oldest_arrival = asyncio.get_running_loop().time()
        self.pending.extend(items)
        self._arrived.set()
        if len(self.pending) >= self.backlog_size:
            self._room.clear()

    async def wait_for_room(self) -> None:
        """Returns once fewer than a backlog batch are waiting; raises what the lane died of."""
        if self._room.is_set():
            return
        assert self.task is not None
        room = asyncio.ensure_future(self._room.wait())
        try:
            await asyncio.wait([room, self.task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.cancel()
        self.raise_if_dead()

    def raise_if_dead(self) -> None:
        for task in (self.delivering, self.finishing, self.inferring, self.task):
            if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
                task.result()  # re-raises the error
        if self.task is not None and self.task.done():
            raise RuntimeError("batch processing stopped")

    async def _fill(self) -> None:
        """Wait until a batch is full or its oldest event has waited ``max_wait_s``."""
        remaining = self._oldest_arrival + self.max_wait_s - asyncio.get_running_loop().time()
        if remaining <= 0 or len(self.pending) >= self.max_size:
            return
        try:
            await asyncio.wait_for(self._full(), remaining)
        except asyncio.TimeoutError:
            pass

    async def _full(self) -> None:
        while len(self.pending) < self.max_size:
            self._arrived.clear()
            await self._arrived.wait()

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            await self._fill()
            size = self._size()
            batch, self.pending = self.pending[:size], self.pending[size:]
            if self.pending:
                self._arrived.set()  # ``_fill`` may have cleared it
            else:
                self._arrived.clear()
            if len(self.pending) < self.backlog_size:
                self._room.set()
            infer = await self.process(batch)
            if self.inferring is not None:
                await self.inferring  # infers in batch order; raises what the last one died of
            self.inferring = asyncio.create_task(self._infer(batch, infer))

    def _size(self) -> int:
        """How many events the next batch takes: ``max_size``, or a backlog batch while a
        backlog batch or more is waiting. A lane with no batch in its later steps starts
        a backlog at ``max_size`` and doubles batch by batch up to ``backlog_size``: its
        first outputs come as soon as a normal batch's would, and the model step has work
        while the larger batches behind it are read."""
        if self._idle():
            self._ramp = self.max_size
        else:
            self._ramp = min(2 * self._ramp, self.backlog_size)
        return self._ramp if len(self.pending) >= self.backlog_size else self.max_size

    def _idle(self) -> bool:
        """Whether no batch is in its later steps (inferring, finishing, delivering)."""
        return all(task is None or task.done() for task in (self.inferring, self.finishing, self.delivering))

    async def _infer(self, batch: list[T], infer: Infer[R]) -> None:
        finish = await infer()
        if self.finishing is not None:
            await self.finishing  # finishes in batch order; raises what the last one died of
        self.finishing = asyncio.create_task(self._finish(batch, finish))

    async def _finish(self, batch: list[T], finish: Finish[R]) -> None:
        result = await finish()
        if self.delivering is not None:
            await self.delivering  # deliveries in batch order; raises what the last one died of
        self.delivering = asyncio.ensure_future(self.deliver(batch, result))
