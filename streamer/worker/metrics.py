"""A worker's health and counters over HTTP, for probes and for Prometheus.

With ``STREAMER_WORKER_METRICS_PORT`` set (0, the default, is off) a worker answers on
that port, on its own event loop:

* ``GET /health``: 200 while the event loop runs. A worker whose loop is stuck (a call
  that never returns, a loop kept busy) stops answering, which is what a liveness probe
  should see; a worker that crashed exits, and its supervisor restarts it.
* ``GET /ready``: 200 once the worker has joined its consumer group (its first
  assignment, of no partitions when the group has more workers than partitions), 503
  before.
* ``GET /metrics``: counters in Prometheus' text format (version 0.0.4), per agent:
  the batches and input records it took, the wall time of each step of its batches
  (``streamer.worker.step_times``), and the output records it had acknowledged, per
  topic (dead letters among them); and the worker's partitions and rebalances, and per
  input partition it holds, the records not answered yet (its lag).

Counting costs a few additions per batch and one per output record; the text is made
only when scraped.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from streamer.errors import ConfigurationError
from streamer.records import OutputRecord
from streamer.worker.step_times import STEPS, BatchTimes

log = logging.getLogger(__name__)

#: Longest wait for a request's line and headers: a client that sends nothing is let go.
REQUEST_TIMEOUT_S = 5.0
#: Most header lines read from one request (a probe sends a handful).
MAX_HEADER_LINES = 100
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass
class WorkerMetrics:
    """What a worker counted since it started, read when scraped."""

    agents: list[BatchTimes] = field(default_factory=list)
    """Each agent's batches and step times (their totals since the start)."""
    outputs: dict[str, dict[str, int]] = field(default_factory=dict)
    """agent -> output topic -> records acknowledged."""
    assigned_partitions: int = 0
    rebalances: int = 0
    joined: bool = False
    input_topics: list[str] = field(default_factory=list)
    high_watermarks: Callable[[str], Mapping[int, int | None]] = lambda topic: {}
    """Per partition of an input topic the worker holds, the high watermark its latest
    fetch response reported (None before the first)."""
    answered: dict[str, dict[int, int]] = field(default_factory=dict)
    """input topic -> partition -> the last offset whose batch's outputs were
    acknowledged, since the last assignment."""

    def delivered(self, agent: str, topic: str, answered: Mapping[int, int], outputs: Sequence[OutputRecord]) -> None:
        """Count a batch's outputs, once the broker acknowledged them, and note how far
        its input ``topic``'s partitions are answered: per partition, its last offset
        in the batch (``HeldRuns.release``)."""
        counts = self.outputs.setdefault(agent, {})
        for output in outputs:
            counts[output.topic] = counts.get(output.topic, 0) + 1
        self.answered.setdefault(topic, {}).update(answered)

    def assigned(self, partitions: int) -> None:
        """The group gave this worker ``partitions`` input partitions; what it answered
        before is no measure of them now (another worker may have answered more)."""
        self.assigned_partitions, self.joined = partitions, True
        self.rebalances += 1
        self.answered.clear()

    def lag(self) -> list[tuple[str, int, int]]:
        """``(topic, partition, records not answered)`` for each input partition held
        whose high watermark is known and of which a record was answered."""
        lags = []
        for topic in self.input_topics:
            for partition, high in sorted(self.high_watermarks(topic).items()):
                answered = self.answered.get(topic, {}).get(partition)
                if high is not None and answered is not None:
                    lags.append((topic, partition, max(0, high - answered - 1)))
        return lags

    def render(self) -> str:
        """The counters in Prometheus' text format."""
        lines: list[str] = []

        def family(name: str, kind: str, about: str, samples: list[tuple[str, float]]) -> None:
            lines.extend((f"# HELP {name} {about}", f"# TYPE {name} {kind}"))
            lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

        family("streamer_batches_total", "counter", "Micro-batches an agent took.",
               [(_labels(agent=t.name), t.all_batches) for t in self.agents])
        family("streamer_input_records_total", "counter", "Input records an agent took.",
               [(_labels(agent=t.name), t.all_events) for t in self.agents])
        family("streamer_step_seconds_total", "counter",
               "Wall time of a step of an agent's batches (steps of neighbouring batches overlap).",
               [(_labels(agent=t.name, step=step.replace(" ", "_")), t.all_seconds[step])
                for t in self.agents for step in STEPS])
        family("streamer_output_records_total", "counter", "Output records an agent had acknowledged, per topic.",
               [(_labels(agent=agent, topic=topic), count)
                for agent, counts in sorted(self.outputs.items()) for topic, count in sorted(counts.items())])
        family("streamer_assigned_partitions", "gauge", "Input partitions the group gave this worker.",
               [("", self.assigned_partitions)])
        family("streamer_rebalances_total", "counter", "Assignments this worker was given.", [("", self.rebalances)])
        family("streamer_partition_lag", "gauge",
               "Records of an input partition held that are not answered yet (its latest fetch's high watermark "
               "less the next offset to answer).",
               [(_labels(topic=topic, partition=str(partition)), lag) for topic, partition, lag in self.lag()])
        return "\n".join(lines) + "\n"

    def answer(self, method: str, path: str) -> tuple[int, str, str]:
        """A request's status, content type and body."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", "method not allowed\n"
        route = path.split("?", 1)[0]
        if route == "/health":
            return 200, "text/plain; charset=utf-8", "ok\n"
        if route == "/ready":
            if self.joined:
                return 200, "text/plain; charset=utf-8", "ready\n"
            return 503, "text/plain; charset=utf-8", "not in its consumer group yet\n"
        if route == "/metrics":
            return 200, PROMETHEUS_TEXT, self.render()
        return 404, "text/plain; charset=utf-8", "not found\n"


def _labels(**labels: str) -> str:
    """``{name="value",...}``, each value escaped as the text format wants."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for value in labels.values())
    return "{" + ",".join(f'{name}="{value}"' for name, value in zip(labels, escaped)) + "}"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))



def listening(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening: taken when the worker is built, so
    that a port already in use stops it at once, not later in a task."""
    try:
        return socket.create_server((host, port))
    except OSError as exc:
        raise ConfigurationError(f"STREAMER_WORKER_METRICS_PORT={port}: cannot listen on {host}:{port}: {exc}") from exc


async def serve(metrics: WorkerMetrics, listener: socket.socket) -> None:
    """Answer ``metrics``' routes on ``listener`` (``listening``) until cancelled."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path = await asyncio.wait_for(_request(reader), REQUEST_TIMEOUT_S)
            status, content_type, body = metrics.answer(method, path)
            payload = body.encode()
            head = (f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(head if method == "HEAD" else head + payload)
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that went away or sent no request gets nothing
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=listener)
    log.info("answering /health, /ready and /metrics on %s:%d", *listener.getsockname()[:2])
    async with server:
        await server.serve_forever()


async def _request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path of one HTTP request, its headers read and ignored."""
    method, path, _version = (await reader.readuntil(b"\r\n")).decode("latin-1").split()
    for _ in range(MAX_HEADER_LINES):
        if await reader.readuntil(b"\r\n") == b"\r\n":
            return method, path
    raise ValueError("too many header lines")
