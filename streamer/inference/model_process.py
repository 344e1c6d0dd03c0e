"""Models in a child process, which shares no GIL with the worker's event loop.

A worker's event loop and its inference thread share one GIL: each ONNX Runtime call
lets go of it while it runs, but has to take it back on return, and so does the Python
around the calls. On the 2-core benchmark machine a batch of clicks' next-item job took
74 ms of wall time for 50 ms of CPU in a worker (52 for 52 alone), while the machine was
a third idle; with the job in a child process, clicks drained 1.35x (docs/benchmarks.md,
2026-12-03 from 17:55).

``ModelProcess(load)`` starts one child (``python -c`` with the worker's import path: a
fresh interpreter that inherits none of the worker's threads and does not import its
main module again) that calls ``load()`` once, then runs the calls it is given one at a
time, in the order given: ``await process.run(call, *args)`` returns ``call(models,
*args)`` as computed in the child, where ``models`` is what ``load`` returned. ``call``,
``load``, the arguments and the result travel pickled through a socket pair, so ``call``
and ``load`` must be module-level functions (or partials of them), and the arguments and
results are best kept to arrays and plain lists. The event loop sends a call and reads
its answer itself: no thread in between, so no wait for the GIL on the way.

An exception raised by ``call`` is raised by ``run``, and the child goes on. A child that
dies fails the call it was running with ``DependencyError`` (a retry can succeed: the
worker processes the batch again), and the next call starts another, on the event
loop's thread (Linux stops a child when the thread that started it ends), which it
holds for the second or two the models take to load. The child exits when its socket
closes: when the worker closes it, and when the worker dies.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from streamer.embedded import die_with_parent
from streamer.errors import DependencyError

R = TypeVar("R")

#: Seconds a child may take to load its models.
START_TIMEOUT_S = 120.0


def serve(fd: int) -> None:
    """The child (``python -c``, so the worker's main module is not imported again, and
    with the worker's import path): take the loader, load the models, then answer calls
    until the pipe closes."""
    conn = Connection(fd)
    try:
        models = conn.recv()()
    except Exception:
        conn.send(("failed", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        try:
            call, args = conn.recv()
        except (EOFError, OSError):  # the worker closed the pipe, or is gone
            return
        try:
            answer = ("ok", call(models, *args))
        except Exception as exc:
            exc.add_note(f"raised in the model process:\n{traceback.format_exc()}")
            answer = ("raised", exc)
        try:
            conn.send(answer)
        except Exception as exc:  # an answer that cannot be pickled
            conn.send(("raised", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _import_path() -> str:
    """The worker's import path, so the child finds this package and the loader's module."""
    return os.pathsep.join(p or os.getcwd() for p in sys.path)


class ModelProcess:
    def __init__(self, load: Callable[[], Any], name: str = "models") -> None:
        self.load = load
        self.name = name
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._turn = asyncio.Lock()
        """Held from sending a call to reading its answer: calls go one at a time, in order."""

    def start(self) -> ModelProcess:
        """Start the child and wait until its models are loaded (blocks: call it before
        the event loop serves events)."""
        if self._conn is not None:
            return self
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen(
                [sys.executable, "-c", f"from {__name__} import serve; serve({theirs.fileno()})"],
                pass_fds=(theirs.fileno(),), env={**os.environ, "PYTHONPATH": _import_path()},
                preexec_fn=die_with_parent,
            )
        conn = Connection(ours.detach())
        try:
            conn.send(self.load)
            if not conn.poll(START_TIMEOUT_S):
                raise DependencyError(f"the {self.name} process did not load its models in {START_TIMEOUT_S:.0f} s")
            status, detail = conn.recv()
        except (EOFError, OSError):
            status, detail = "failed", f"it exited with code {process.wait()}"
        except BaseException:
            process.kill()
            raise
        if status != "ready":
            conn.close()
            process.wait()
            raise DependencyError(f"the {self.name} process failed to start: {detail}")
        self._process, self._conn = process, conn
        atexit.register(self.close)
        return self

    async def run(self, call: Callable[..., R], *args: Any) -> R:
        """``call(models, *args)`` in the child, after the calls given before it."""
        async with self._turn:
            if self._conn is None:
                self.start()  # on the event loop's thread: the child dies with the thread that started it
            conn = self._conn
            assert conn is not None
            loop = asyncio.get_running_loop()
            answered: asyncio.Future[tuple[str, Any]] = loop.create_future()

            def on_readable() -> None:
                loop.remove_reader(conn.fileno())
                try:
                    answered.set_result(conn.recv())
                except (EOFError, OSError) as exc:
                    answered.set_exception(exc)

            try:
                conn.send((call, args))
                loop.add_reader(conn.fileno(), on_readable)
                try:
                    status, value = await answered
                except asyncio.CancelledError:  # the answer, when it comes, would belong to no one
                    loop.remove_reader(conn.fileno())
                    self._stop()
                    raise
            except (EOFError, OSError) as exc:
                self._stop()
                raise DependencyError(f"the {self.name} process died: {type(exc).__name__} {exc}") from exc
        if status == "raised":
            raise value
        return value  # type: ignore[no-any-return]

    def _stop(self) -> None:
        """Forget the child (the next call starts another) and make sure it is gone."""
        conn, process = self._conn, self._process
        self._conn, self._process = None, None
        if conn is not None:
            conn.close()
        if process is not None:
            try:
                process.wait(1)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        atexit.unregister(self.close)

    def close(self) -> None:
        """Stop the child: its socket closed, it exits (killed if still busy a second later)."""
        self._stop()
