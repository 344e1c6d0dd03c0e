"""A child process running calls on its models (``streamer.inference.model_process``)."""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

import pytest

from streamer.errors import DependencyError
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
