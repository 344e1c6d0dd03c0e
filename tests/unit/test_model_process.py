"""A child process running calls on its models (``streamer.inference.model_process``)."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import Any

import pytest

from streamer.errors import DependencyError, InvalidEvent
from streamer.inference.model_process import ModelProcess


def load_offset(offset: int) -> dict[str, Any]:
    return {"offset": offset, "pid": os.getpid(), "seen": []}


def add(models: dict[str, Any], x: int) -> tuple[int, int, list[int]]:
    models["seen"].append(x)
    return x + models["offset"], models["pid"], list(models["seen"])


def die(models: dict[str, Any]) -> None:
    os._exit(3)


def cannot_load() -> None:
    raise FileNotFoundError("no such model")


def test_calls_run_on_the_childs_models_one_after_another_in_order() -> None:
    process = ModelProcess(functools.partial(load_offset, 10)).start()
    try:
        async def run() -> list[tuple[int, int, list[int]]]:
            return list(await asyncio.gather(*(process.run(add, x) for x in range(5))))

        results = asyncio.run(run())
    finally:
        process.close()
    assert [value for value, _, _ in results] == [10, 11, 12, 13, 14]
    pids = {pid for _, pid, _ in results}
    assert len(pids) == 1 and os.getpid() not in pids  # one child, not this process
    assert results[-1][2] == [0, 1, 2, 3, 4]  # the models stayed loaded, and the calls ran in order


def test_a_child_that_dies_fails_its_call_and_the_next_call_starts_another() -> None:
    process = ModelProcess(functools.partial(load_offset, 0), "test models").start()
    try:
        async def run() -> tuple[int, int]:
            _, before, _ = await process.run(add, 1)
            with pytest.raises(DependencyError, match="the test models process died"):
                await process.run(die)
            _, after, seen = await process.run(add, 2)
            assert seen == [2]  # a new child, its models loaded afresh
            return before, after

        before, after = asyncio.run(run())
    finally:
        process.close()
    assert before != after


def test_a_child_that_cannot_load_its_models_fails_to_start() -> None:
    with pytest.raises(DependencyError, match="failed to start"):
        ModelProcess(cannot_load, "broken models").start()


def fail(models: dict[str, Any], message: str) -> None:
    raise ValueError(message)


def test_an_error_raised_by_a_call_is_raised_by_run_and_the_child_goes_on() -> None:
    process = ModelProcess(functools.partial(load_offset, 0)).start()
    try:
        async def run() -> list[int]:
            with pytest.raises(ValueError, match="a bug") as raised:
                await process.run(fail, "a bug")
            assert "raised in the model process" in "".join(raised.value.__notes__)
            _, _, seen = await process.run(add, 7)
            return seen

        assert asyncio.run(run()) == [7]  # the same child, its models still loaded
    finally:
        process.close()


def sleep_for(models: dict[str, Any], seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_call_given_up_on_stops_its_child_so_no_answer_goes_astray() -> None:
    process = ModelProcess(functools.partial(load_offset, 0)).start()
    try:
        async def run() -> list[int]:
            waiting = asyncio.create_task(process.run(sleep_for, 30.0))
            await asyncio.sleep(0.3)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            _, _, seen = await process.run(add, 1)
            return seen

        started = time.monotonic()
        assert asyncio.run(run()) == [1]  # a new child: the old one's late answer cannot be taken for this one's
        assert time.monotonic() - started < 20
    finally:
        process.close()


def stamped_sleep(models: dict[str, Any], seconds: float) -> tuple[float, float]:
    started = time.monotonic()
    time.sleep(seconds)
    return started, time.monotonic()


def test_calls_sent_ahead_run_back_to_back_while_the_event_loop_is_busy() -> None:
    """The child takes the next call as soon as it answered one: it does not wait for the
    event loop to read the answer and send the next."""
    process = ModelProcess(functools.partial(load_offset, 0)).start()
    try:
        async def run() -> tuple[tuple[float, float], tuple[float, float], int]:
            first = await process.submit(stamped_sleep, 0.3)
            second = await process.submit(stamped_sleep, 0.0)
            await asyncio.sleep(0.05)  # the event loop writes both calls out
            in_flight = process.unanswered
            time.sleep(1.0)  # then runs something long: it reads no answer meanwhile
            return await first, await second, in_flight

        (_, first_ended), (second_started, _), in_flight = asyncio.run(run())
    finally:
        process.close()
    assert in_flight == 2
    assert second_started - first_ended < 0.2  # not after the event loop's second


def test_a_child_that_dies_fails_every_call_it_had_not_answered() -> None:
    process = ModelProcess(functools.partial(load_offset, 0), "test models").start()
    try:
        async def run() -> list[int]:
            dying = await process.submit(die)
            behind = await process.submit(add, 1)
            for call in (dying, behind):
                with pytest.raises(DependencyError, match="the test models process died"):
                    await call
            assert process.unanswered == 0
            _, _, seen = await process.run(add, 2)
            return seen

        assert asyncio.run(run()) == [2]  # a new child took the next call
    finally:
        process.close()


def test_a_process_used_from_a_new_event_loop_starts_a_fresh_child() -> None:
    process = ModelProcess(functools.partial(load_offset, 0)).start()
    try:
        _, first, _ = asyncio.run(process.run(add, 1))
        _, second, seen = asyncio.run(process.run(add, 2))
    finally:
        process.close()
    assert first != second and seen == [2]


def rejects(models: dict[str, Any], reason: str) -> None:
    raise InvalidEvent(reason, "not for these models")


class Unreadable:
    """Pickles, but cannot be unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse, ()


def _refuse() -> None:
    raise TypeError("cannot be rebuilt")


def answers_unreadably(models: dict[str, Any]) -> Unreadable:
    return Unreadable()


def test_errors_come_back_as_raised_and_an_unreadable_answer_fails_only_its_own_call() -> None:
    """An answer the worker could not unpickle used to end the reading: the call, and
    every call after it, waited for good."""
    process = ModelProcess(functools.partial(load_offset, 0)).start()
    try:
        async def run() -> tuple[int, int, list[int]]:
            with pytest.raises(InvalidEvent) as raised:
                await asyncio.wait_for(process.run(rejects, "unknown_item"), 10)
            assert (raised.value.reason, raised.value.detail) == ("unknown_item", "not for these models")
            with pytest.raises(RuntimeError, match="could not be unpickled"):
                await asyncio.wait_for(process.run(answers_unreadably), 10)
            return await asyncio.wait_for(process.run(add, 7), 10)

        value, _, seen = asyncio.run(run())
    finally:
        process.close()
    assert value == 7 and seen == [7]  # the same child, still answering


def test_the_next_item_child_imports_the_models_not_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child unpickles its load function, importing the module that defines it: once
    the worker's main module, and with it Faust, aiokafka and the fraud models (about 30 MB
    more in every worker's model process)."""
    import pickle
    import subprocess
    import sys

    from streamer.settings import Settings
    from tests.support import next_item_child_load

    load = next_item_child_load(monkeypatch, Settings().replace(models={"provider": "cpu"}), "any-version")
    script = ("import pickle, sys; pickle.loads(sys.stdin.buffer.read()); "
              "print(sorted(m for m in ('faust', 'aiokafka', 'streamer.worker.main') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(load), capture_output=True, check=True)
    assert imported.stdout.decode().strip() == "[]"


def test_a_next_item_child_refuses_models_of_another_version_than_its_workers() -> None:
    """A child started again loads the models from disk: replaced there under a running
    worker, they would rank with another model's item indices."""
    from streamer.inference.next_item import NextItemRanker
    from streamer.settings import Settings
    from streamer.worker.main import next_item_process

    settings = Settings().replace(models={"provider": "cpu"})
    with pytest.raises(DependencyError, match="this worker serves beauty-19990101"):
        next_item_process(settings, "beauty-19990101")
    serving = NextItemRanker(settings.models.recommend, provider="cpu").version
    next_item_process(settings, serving).close()
