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
results are best kept to arrays and plain lists. The event loop writes the calls and
reads the answers itself: no thread in between, so no wait for the GIL on the way.

``await process.submit(call, *args)`` sends a call at once and returns the future of its
answer: a caller that knows its next call early (the clicks' first step) sends it while
the child is still busy with the one before, and the child goes straight on to it when
it has answered. Waiting for each answer before sending the next call left the child
idle about a quarter of a clicks drain, while the event loop, busy with other batches'
steps, got round to reading it (docs/benchmarks.md, 2026-12-04).

An exception raised by ``call`` is raised by ``run`` (and set on ``submit``'s future),
and the child goes on. A child that dies fails every call it had not answered with
``DependencyError`` (a retry can succeed: the worker processes the batch again), and the
next call starts another, on the event loop's thread (Linux stops a child when the
thread that started it ends), which it holds for the second or two the models take to
load. A call given up on (its future cancelled: the worker stopping) stops the child, so
its late answer cannot be taken for another call's; the calls sent after it fail. The
child exits when its socket closes: when the worker closes it, and when the worker dies.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import pickle
import socket
import struct
import subprocess
import sys
import traceback
from collections import deque
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
        self._child: _Child | None = None
        self._opening = asyncio.Lock()
        """Held while the child's socket is wrapped for the event loop: calls sent before
        that wait for it, so they go out in the order given."""

    def start(self) -> ModelProcess:
        """Start the child and wait until its models are loaded (blocks: call it before
        the event loop serves events)."""
        if self._child is not None:
            return self
        ours, theirs = socket.socketpair()
        with theirs:
            process = subprocess.Popen(
                [sys.executable, "-c", f"from {__name__} import serve; serve({theirs.fileno()})"],
                pass_fds=(theirs.fileno(),), env={**os.environ, "PYTHONPATH": _import_path()},
                preexec_fn=die_with_parent,
            )
        conn = Connection(os.dup(ours.fileno()))  # for the start only: the event loop takes the socket after
        try:
            conn.send(self.load)
            if not conn.poll(START_TIMEOUT_S):
                raise DependencyError(f"the {self.name} process did not load its models in {START_TIMEOUT_S:.0f} s")
            status, detail = conn.recv()
        except (EOFError, OSError):
            status, detail = "failed", f"it exited with code {process.wait()}"
        except BaseException:
            ours.close()
            process.kill()
            process.wait()
            raise
        finally:
            conn.close()
        if status != "ready":
            ours.close()
            process.wait()
            raise DependencyError(f"the {self.name} process failed to start: {detail}")
        self._child = _Child(process, ours)
        atexit.register(self.close)
        return self

    async def submit(self, call: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        """Send ``call(models, *args)`` to the child, after the calls sent before it, and
        return the future of its result at once: the child goes from one call to the
        next without waiting for the event loop to read its answer and send the next.
        A future given up on (cancelled) stops the child, and so fails the calls sent
        after it; a child that dies fails every call it had not answered."""
        async with self._opening:
            if self._child is None:
                self.start()  # on the event loop's thread: the child dies with the thread that started it
            child = self._child
            assert child is not None
            if child.loop is not asyncio.get_running_loop():
                if child.loop is not None:  # wrapped for an event loop that is gone: a fresh child for this one
                    self._stop()
                    child = self.start()._child
                    assert child is not None
                await child.open(self._gone)
        result: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        result.add_done_callback(self._given_up_on)
        child.send(result, pickle.dumps((call, args), protocol=pickle.HIGHEST_PROTOCOL))
        return result

    @property
    def unanswered(self) -> int:
        """Calls sent to the child that it has not answered yet."""
        return len(self._child.waiting) if self._child is not None else 0

    async def run(self, call: Callable[..., R], *args: Any) -> R:
        """``call(models, *args)`` in the child, after the calls given before it."""
        return await (await self.submit(call, *args))

    def _given_up_on(self, result: asyncio.Future[Any]) -> None:
        """A call no one waits for any more (the worker stopping): its answer, when it
        came, would belong to no one, so the child is stopped."""
        if result.cancelled():
            self._stop()

    def _gone(self, child: _Child, reason: str) -> None:
        if self._child is child:
            self._stop(f"the {self.name} process died: {reason}")

    def _stop(self, reason: str | None = None) -> None:
        """Forget the child (the next call starts another), fail the calls it had not
        answered, and make sure it is gone."""
        child, self._child = self._child, None
        if child is not None:
            child.stop(DependencyError(reason or f"the {self.name} process was stopped"))
        atexit.unregister(self.close)

    def close(self) -> None:
        """Stop the child: its socket closed, it exits (killed if still busy a second later)."""
        self._stop()


class _Child:
    """A running child: its process, its socket, and the futures of the calls it has not
    answered yet, oldest first (it answers in the order it was asked)."""

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.loop: asyncio.AbstractEventLoop | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reading: asyncio.Task[None] | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()

    async def open(self, gone: Callable[[_Child, str], None]) -> None:
        """Wrap the socket for the event loop, and read the answers as they come."""
        self.loop = asyncio.get_running_loop()
        reader, self.writer = await asyncio.open_unix_connection(sock=self.sock)
        self.reading = asyncio.create_task(self._read(reader, gone))

    def send(self, result: asyncio.Future[Any], message: bytes) -> None:
        """Queue a pickled call (framed as ``multiprocessing.connection`` frames it) on
        the socket; the event loop writes it as the child reads."""
        assert self.writer is not None
        header = struct.pack("!i", len(message)) if len(message) <= 0x7FFFFFFF else struct.pack("!iQ", -1, len(message))
        self.waiting.append(result)
        self.writer.write(header + message)

    async def _read(self, reader: asyncio.StreamReader, gone: Callable[[_Child, str], None]) -> None:
        try:
            while True:
                (size,) = struct.unpack("!i", await reader.readexactly(4))
                if size == -1:
                    (size,) = struct.unpack("!Q", await reader.readexactly(8))
                answer = await reader.readexactly(size)
                result = self.waiting.popleft()
                try:
                    status, value = pickle.loads(answer)
                except Exception as exc:  # noqa: BLE001 - fails its own call, not the calls after it
                    status, value = "raised", RuntimeError(f"an answer could not be unpickled: {type(exc).__name__} {exc}")
                if result.done():
                    continue
                if status == "raised":
                    result.set_exception(value)
                else:
                    result.set_result(value)
        except (asyncio.IncompleteReadError, OSError) as exc:
            gone(self, f"{type(exc).__name__} {exc}")

    def stop(self, error: Exception) -> None:
        """Fail the calls not answered with ``error``, close the socket (the child exits),
        and wait for the child (killed if still busy a second later)."""
        if self.loop is not None and not self.loop.is_closed():
            while self.waiting:
                result = self.waiting.popleft()
                if not result.done():
                    result.set_exception(error)
            if self.reading is not None and self.reading is not asyncio.current_task(self.loop):
                self.reading.cancel()
            assert self.writer is not None
            self.writer.close()
        else:  # never wrapped, or its event loop is gone with what waited on it
            self.sock.close()
        try:
            self.process.wait(1)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
