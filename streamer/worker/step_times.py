"""Where a worker's batches spend their time, logged by each agent now and then.

``timed`` wraps an agent's ``process`` and ``deliver`` (``streamer.worker.batching``) so
that every batch's four steps are timed: the first step (its state read, and what the
next batch reads written), the models, the last step (the rest of its state written,
its outputs made) and the delivery (its outputs published and acknowledged).
``BatchTimes.report`` turns what was timed since the last report into one log line, such
as this one from a second of a transactions drain:

    score_transactions: 14 batches, 512 events each on average; mean (longest) ms:
    first step 70.6 (96.4), models 44.0 (61.1), last step 24.1 (38.9), delivery 19.4 (28.7)

A step's time is the wall time from its start to its end, and the steps of neighbouring
batches overlap: while a batch's models run on the inference thread, the event loop
runs the next batch's first step and the previous batch's last step. A worker that
falls behind is bound by its longest kind of step: the first step (Redis and the
features), the models, or the delivery (the broker).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from streamer.worker.batching import Finish, Infer

T = TypeVar("T")
R = TypeVar("R")

STEPS = ("first step", "models", "last step", "delivery")
_REPORT = re.compile(r"(?P<name>\w+): (?P<batches>\d+) batch(?:es)?, (?P<size>\d+) events each on average; "
                     r"mean \(longest\) ms: (?P<steps>.*)$")
_STEP = re.compile(r"(?P<step>[a-z ]+) (?P<mean>[\d.]+) \((?P<longest>[\d.]+)\)")


@dataclass
class StepTime:
    """One kind of step's durations since the last report."""

    count: int = 0
    total_s: float = 0.0
    longest_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self.longest_s = max(self.longest_s, seconds)

    def summary(self) -> str:
        mean = self.total_s / self.count if self.count else 0.0
        return f"{1000 * mean:.1f} ({1000 * self.longest_s:.1f})"


@dataclass
class BatchTimes:
    """One agent's batches and their steps' durations since the last report (and since
    it started)."""

    name: str
    batches: int = 0
    events: int = 0
    steps: dict[str, StepTime] = field(default_factory=lambda: {step: StepTime() for step in STEPS})
    all_batches: int = 0
    """The batches, events and step seconds since the agent started, which a report does
    not reset (``streamer.worker.metrics``)."""
    all_events: int = 0
    all_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))

    def started(self, events: int) -> None:
        """A batch of ``events`` began its first step."""
        self.batches += 1
        self.events += events
        self.all_batches += 1
        self.all_events += events

    def took(self, step: str, seconds: float) -> None:
        self.steps[step].add(seconds)
        self.all_seconds[step] += seconds

    def report(self) -> str | None:
        """What was timed since the last report, as one line (None when no batch
        started); starts counting afresh."""
        if not self.batches:
            return None
        steps = ", ".join(f"{step} {durations.summary()}" for step, durations in self.steps.items())
        batches = f"{self.batches} batch" if self.batches == 1 else f"{self.batches} batches"
        line = (f"{self.name}: {batches}, {self.events / self.batches:.0f} events each on average; "
                f"mean (longest) ms: {steps}")
        self.batches, self.events = 0, 0
        self.steps = {step: StepTime() for step in STEPS}
        return line


def timed(
    process: Callable[[list[T]], Awaitable[Infer[R]]],
    deliver: Callable[[list[T], R], Awaitable[None]],
    times: BatchTimes,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Callable[[list[T]], Awaitable[Infer[R]]], Callable[[list[T], R], Awaitable[None]]]:
    """``process`` and ``deliver`` with every step of every batch timed into ``times``
    (a step that fails is not counted)."""

    async def timed_process(batch: list[T]) -> Infer[R]:
        times.started(len(batch))
        started = clock()
        infer = await process(batch)
        times.took("first step", clock() - started)

        async def timed_infer() -> Finish[R]:
            started = clock()
            finish = await infer()
            times.took("models", clock() - started)

            async def timed_finish() -> R:
                started = clock()
                result = await finish()
                times.took("last step", clock() - started)
                return result

            return timed_finish

        return timed_infer

    async def timed_deliver(batch: list[T], result: R) -> None:
        started = clock()
        await deliver(batch, result)
        times.took("delivery", clock() - started)

    return timed_process, timed_deliver


def parse_reports(lines: Iterable[str], name: str) -> dict[str, object] | None:
    """The ``name`` agent's reports among log ``lines``, taken together: batches, mean
    size, and per step the mean (weighted by batches) and longest milliseconds. None
    when there is none."""
    batches, events = 0, 0.0
    totals = {step: 0.0 for step in STEPS}
    longest = {step: 0.0 for step in STEPS}
    for line in lines:
        found = _REPORT.search(line)
        if found is None or found["name"] != name:
            continue
        n = int(found["batches"])
        batches += n
        events += n * int(found["size"])
        for timed_step in _STEP.finditer(found["steps"]):
            step = timed_step["step"].strip()
            totals[step] += n * float(timed_step["mean"])
            longest[step] = max(longest[step], float(timed_step["longest"]))
    if not batches:
        return None
    return {"batches": batches, "mean_size": round(events / batches),
            "steps_ms": {step: {"mean": round(totals[step] / batches, 1), "longest": longest[step]} for step in STEPS}}
