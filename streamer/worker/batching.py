"""Micro-batches that gather while the previous one is processed.

An agent hands each chunk of events it takes from Faust to ``Batcher.add``; one task
processes them in arrival order, at most ``max_size`` at a time, and starts the next
batch with everything that arrived while the last one was in flight. At low load a
batch is whatever the agent took (latency as without the batcher); under load batches
fill up, and the events' per-event work in Faust runs while the processing task waits
on Redis and the broker. One batch is in flight at a time, so a batch reads the state
the previous one wrote. ``add`` waits while a full batch is already waiting, so the
backlog stays in Faust's buffers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(self, process: Callable[[list[T]], Awaitable[None]], max_size: int) -> None:
        self.process = process
        self.max_size = max_size
        self.pending: list[T] = []
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Batcher[T]:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stops processing; a batch in flight is cancelled and what is pending dropped,
        so neither may have been acknowledged to Kafka (they are consumed again)."""
        assert self._task is not None
        self._task.cancel()
        await asyncio.wait([self._task])  # its error, if it died, was raised by ``add``

    async def add(self, items: Sequence[T]) -> None:
        """Queue ``items`` for processing; returns once fewer than a batch are waiting.
        Raises what the processing task died of."""
        self._raise_if_dead()
        self.pending.extend(items)
        self._arrived.set()
        if len(self.pending) >= self.max_size:
            self._room.clear()
            assert self._task is not None
            room = asyncio.ensure_future(self._room.wait())
            try:
                await asyncio.wait([room, self._task], return_when=asyncio.FIRST_COMPLETED)
            finally:
                room.cancel()
            self._raise_if_dead()

    def _raise_if_dead(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()  # re-raises the processing error
            raise RuntimeError("batch processing stopped")

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            batch, self.pending = self.pending[: self.max_size], self.pending[self.max_size :]
            if not self.pending:
                self._arrived.clear()
            if len(self.pending) < self.max_size:
                self._room.set()
            await self.process(batch)
