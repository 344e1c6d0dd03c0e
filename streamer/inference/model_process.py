"""Models in a child process, which shares no GIL with the worker's event loop.

A worker's event loop and its inference thread share one GIL: each ONNX Runtime call
lets go of it while it runs, but has to take it back on return, and so does the Python
around the calls. On the 2-core benchmark machine a batch of clicks' next-item job took
74 ms of wall time for 50 ms of CPU in a worker (52 for 52 alone), while the machine was
a third idle. In a child process the models run on the other core undisturbed
(docs/benchmarks.md, 2026-12-03 from 17:55).

``ModelProcess(load)`` starts one child (``spawn``: a fresh interpreter, nothing
inherited from the worker's threads) that calls ``load()`` once, then runs the calls it
is given one at a time, in the order given: ``await process.run(call, *args)`` returns
``call(models, *args)`` as computed in the child, where ``models`` is what ``load``
returned. ``call``, ``load``, the arguments and the result travel pickled, so ``call``
and ``load`` must be module-level functions (or partials of them) and arguments are best
kept to arrays and plain lists. A child that dies is started again, and the calls it
held fail with ``DependencyError`` (a retry can succeed: the worker processes the batch
again). The child exits with the worker, and on Linux also when the worker is killed.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from streamer.embedded import die_with_parent
from streamer.errors import DependencyError

R = TypeVar("R")

_models: Any = None
"""In the child: what ``load`` returned."""


def _load(load: Callable[[], Any]) -> None:
    global _models
    die_with_parent()
    _models = load()


def _call(call: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return call(_models, *args)


def _loaded(models: Any) -> bool:
    return models is not None


class ModelProcess:
    def __init__(self, load: Callable[[], Any], name: str = "models") -> None:
        self.load = load
        self.name = name
        self._pool: ProcessPoolExecutor | None = None
        self._closing = False
        self._starting = asyncio.Lock()

    def start(self) -> ModelProcess:
        """Start the child and wait until its models are loaded (blocks: call it before
        the event loop serves events)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_load, initargs=(self.load,))
            atexit.register(self.close)
            try:
                if not self._pool.submit(_call, _loaded, ()).result():
                    raise DependencyError(f"the {self.name} process loaded nothing")
            except BrokenProcessPool as exc:
                self.close()
                raise DependencyError(f"the {self.name} process failed to start: {exc}") from exc
        return self

    async def run(self, call: Callable[..., R], *args: Any) -> R:
        """``call(models, *args)`` in the child, after the calls given before it. After a
        child died, the next call starts another (off the event loop)."""
        if self._pool is None:
            async with self._starting:
                if self._pool is None:
                    await asyncio.to_thread(self.start)
        pool = self._pool
        assert pool is not None
        try:
            return await asyncio.wrap_future(pool.submit(_call, call, args))
        except BrokenProcessPool as exc:
            if self._pool is pool and not self._closing:
                self._pool = None  # the next call starts a new child
                pool.shutdown(wait=False, cancel_futures=True)
            raise DependencyError(f"the {self.name} process died: {exc}") from exc

    def close(self) -> None:
        """Stop the child (it finishes the call it runs; the ones waiting are cancelled)."""
        self._closing = True
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        atexit.unregister(self.close)
        self._closing = False
