"""Where the machine's CPU goes while a benchmark runs, part by part.

A latency run (``bench.run.latency``) reads, before and after the window in which it
offers its rate, the CPU time so far of each part of what runs on the machine:

* ``workers``: the worker processes, each with its descendants (the next-item model process);
* ``broker``: the embedded broker's process;
* ``redis``: Redis's own count (``INFO cpu``), the embedded Valkey or the one configured
  (every node of it, for a Redis Cluster);
* ``harness``: this process, the producer offering the rate;
* ``machine``: every core's busy time (``/proc/stat``), from which ``other`` is what the
  parts above leave (the kernel's network work, other processes).

Over the window's wall time the differences are cores in use; over the events answered
in the window, CPU microseconds per event. Off Linux the parts read from ``/proc`` are
left out. The hypervisor's share (steal) is measured here too (``stolen_share``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_times(stat: Path = PROC / "stat") -> list[int] | None:
    """The machine's CPU time so far, in ticks, by kind (user, nice, system, idle, iowait,
    irq, softirq, steal, ...), from the first line of ``/proc/stat``; None off Linux."""
    try:
        return [int(x) for x in stat.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None


def stolen_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of the machine's CPU time between two ``cpu_times`` that the hypervisor
    gave to other guests (steal): a VM's noise, measured. Guest time, already counted in
    user time, is left out of the total."""
    if not before or not after or len(before) < 8 or len(after) < 8:
        return None
    spent = [b - a for a, b in zip(before[:8], after[:8])]
    return round(spent[7] / max(sum(spent), 1), 4)


def cpu_model(cpuinfo: Path = PROC / "cpuinfo") -> str | None:
    """The CPU's model name (``/proc/cpuinfo``), None off Linux: these VMs come on
    different CPUs (an AMD EPYC, an Intel Xeon with AMX), and the same code runs on them
    at speeds further apart than most changes measured."""
    try:
        for line in cpuinfo.read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return None


def machine_busy_s(stat: Path = PROC / "stat") -> float | None:
    """Seconds every core together spent busy so far: user, nice, system, irq and softirq
    (not idle, iowait or steal)."""
    ticks = cpu_times(stat)
    if ticks is None or len(ticks) < 7:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / TICKS_PER_S


def _stat_fields(pid: str, proc: Path) -> list[str] | None:
    try:  # the fields after "(command)", which may itself hold spaces and parentheses
        return (proc / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree_s(pids: Iterable[int], proc: Path = PROC) -> float | None:
    """CPU seconds (user and system) so far of the processes ``pids`` and every process
    descended from them that is still running; None when none of them runs."""
    fields = {pid: f for pid in os.listdir(proc) if pid.isdigit() and (f := _stat_fields(pid, proc)) is not None}
    children: dict[str, list[str]] = {}
    for pid, f in fields.items():
        children.setdefault(f[1], []).append(pid)  # field 4 of stat: the parent's pid
    todo = [str(pid) for pid in pids if str(pid) in fields]
    if not todo:
        return None
    seconds = 0.0
    while todo:
        pid = todo.pop()
        seconds += (int(fields[pid][11]) + int(fields[pid][12])) / TICKS_PER_S  # utime, stime
        todo += children.get(pid, [])
    return seconds


def redis_cpu_s(url: str) -> float | None:
    """Redis's CPU seconds so far (user and system, ``INFO cpu``), every node's when ``url``
    names a node of a Redis Cluster; None if it does not answer."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    cluster_nodes: list[redis.Redis] = []
    try:
        try:
            addresses = _addresses(client.execute_command("CLUSTER NODES"))
        except redis.ResponseError:  # not a cluster
            addresses = []
        parsed = urlparse(url)
        cluster_nodes = [redis.Redis(host=host, port=port, username=parsed.username, password=parsed.password,
                                     ssl=parsed.scheme == "rediss", socket_timeout=5) for host, port in addresses]
        return sum(_cpu_s(node) for node in cluster_nodes or [client])
    except (redis.RedisError, OSError, KeyError):
        return None
    finally:
        for node in [client, *cluster_nodes]:
            node.close()


def _cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _addresses(reply: object) -> list[tuple[str, int]]:
    """Each node's host and port in a ``CLUSTER NODES`` reply, as text or as redis-py
    parses it (a dict keyed by address)."""
    listed = list(reply) if isinstance(reply, dict) else [line.split()[1] for line in bytes(reply).decode().splitlines()  # type: ignore[call-overload]
                                                          if line.strip()]
    hosts_ports = [str(address).split("@")[0].rsplit(":", 1) for address in listed]
    return [(host or "127.0.0.1", int(port)) for host, port in hosts_ports]


@dataclass(frozen=True)
class CpuReading:
    wall: float
    """``time.time()`` when it was read."""
    seconds: dict[str, float]
    """Per part that could be read, its CPU seconds so far."""


def read_cpu(parts: Mapping[str, Callable[[], float | None]]) -> CpuReading:
    seconds = {name: value for name, read in parts.items() if (value := read()) is not None}
    return CpuReading(time.time(), seconds)


def benchmark_parts(worker_pids: Iterable[int], broker_pid: int | None, redis_url: str) -> dict[str, Callable[[], float | None]]:
    """What ``read_cpu`` reads during a latency run (the module's docstring)."""
    workers = list(worker_pids)
    parts: dict[str, Callable[[], float | None]] = {"workers": lambda: process_tree_s(workers)}
    if broker_pid is not None:
        parts["broker"] = lambda: process_tree_s([broker_pid])
    parts["redis"] = lambda: redis_cpu_s(redis_url)
    parts["harness"] = time.process_time
    parts["machine"] = machine_busy_s
    return parts


def cpu_use(before: CpuReading, after: CpuReading, answered: int, cores: int | None = None) -> dict[str, object]:
    """Each part's cores in use between two readings, and its CPU µs per event answered
    in between; ``other`` is the machine's busy time the parts leave."""
    window = max(after.wall - before.wall, 1e-6)
    spent = {name: after.seconds[name] - before.seconds[name] for name in before.seconds if name in after.seconds}
    if "machine" in spent:
        spent["other"] = spent["machine"] - sum(v for k, v in spent.items() if k != "machine")
    return {
        "window_s": round(window, 2),
        "answered_per_s": round(answered / window),
        "machine_cores": cores or os.cpu_count(),
        "cores": {name: round(s / window, 3) for name, s in spent.items()},
        "us_per_event": {name: round(s * 1e6 / answered, 1) for name, s in spent.items()} if answered else {},
    }


def plain(value: float, digits: int) -> float:
    """``value`` rounded, a negative zero made plain (``other`` is near zero, either side)."""
    return round(value, digits) + 0.0


def cpu_cell(cpu: Mapping[str, Any], part: str) -> str:
    """One part of a ``cpu_use`` result as ``bench.load`` prints it and the report tables
    it: its cores in use (its CPU µs per event answered)."""
    return f"{plain(cpu['cores'][part], 2):.2f} ({plain(cpu['us_per_event'].get(part, 0), 0):,.0f})"


def cpu_line(cpu: Mapping[str, Any]) -> str:
    """A ``cpu_use`` result as one line: each part's ``cpu_cell``."""
    return ", ".join(f"{part} {cpu_cell(cpu, part)}" for part in cpu["cores"])
