"""``bench.cpu``: where the machine's CPU went while a latency run offered its rate."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.cpu import TICKS_PER_S, CpuReading, cpu_line, cpu_model, cpu_use, machine_busy_s, process_tree_s
from bench.report import cpu_section
from bench.run import answered_between


def _stat(proc: Path, pid: int, parent: int, utime: int, stime: int, command: str = "python") -> None:
    (proc / str(pid)).mkdir()
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    (proc / str(pid) / "stat").write_text(f"{pid} ({command}) S {parent} 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 1 0\n")


def test_a_process_tree_counts_the_process_and_all_its_descendants_and_nothing_else(tmp_path: Path) -> None:
    _stat(tmp_path, 10, 1, 100, 50, "streamer worker")
    _stat(tmp_path, 11, 10, 30, 10, "model (process)")  # a command with a space and parentheses
    _stat(tmp_path, 12, 11, 5, 5)
    _stat(tmp_path, 20, 1, 999, 999)  # not ours
    (tmp_path / "self").mkdir()
    assert process_tree_s([10], tmp_path) == (150 + 40 + 10) / TICKS_PER_S
    assert process_tree_s([11, 20], tmp_path) == (50 + 1998) / TICKS_PER_S
    assert process_tree_s([99], tmp_path) is None  # gone


def test_a_real_process_tree_includes_a_grandchilds_cpu() -> None:
    burn = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c",
                              f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {burn!r}]); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while (process_tree_s([child.pid]) or 0) < 0.4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_tree_s([child.pid]) >= 0.4  # the child itself only sleeps
    finally:
        subprocess.run(["pkill", "-P", str(child.pid)])
        child.kill()
        child.wait()


def test_the_machines_busy_time_leaves_out_idle_iowait_and_steal(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 1 50 800 10 3 5 35 7 0\ncpu0 50 0 25 400 5 0 2 17 3 0\n")
    assert machine_busy_s(stat) == (100 + 1 + 50 + 3 + 5) / TICKS_PER_S
    assert machine_busy_s(tmp_path / "missing") is None


def test_the_cpu_model_is_the_first_model_name_in_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 9R14\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 9R14"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: \n")
    assert cpu_model(cpuinfo) is None
    assert cpu_model(tmp_path / "missing") is None


def test_cpu_use_gives_cores_and_microseconds_per_answered_event_and_what_the_parts_leave() -> None:
    before = CpuReading(100.0, {"workers": 10.0, "broker": 5.0, "redis": 1.0, "harness": 2.0, "machine": 30.0})
    after = CpuReading(110.0, {"workers": 19.0, "broker": 8.0, "redis": 3.0, "harness": 3.0, "machine": 47.0})
    use = cpu_use(before, after, answered=20_000, cores=2)
    assert use["window_s"] == 10.0 and use["answered_per_s"] == 2000 and use["machine_cores"] == 2
    assert use["cores"] == {"workers": 0.9, "broker": 0.3, "redis": 0.2, "harness": 0.1, "machine": 1.7, "other": 0.2}
    assert use["us_per_event"]["workers"] == 450.0 and use["us_per_event"]["machine"] == 850.0
    # a part that could not be read after (a worker gone) is left out; no events, no µs per event
    use = cpu_use(before, CpuReading(110.0, {"redis": 3.0}), answered=0)
    assert use["cores"] == {"redis": 0.2} and use["us_per_event"] == {}


def test_the_printed_line_shows_each_part_and_a_near_zero_other_without_a_sign() -> None:
    cpu = {"cores": {"workers": 1.084, "broker": 0.316, "other": -0.003},
           "us_per_event": {"workers": 135.2, "broker": 39.5, "other": -0.4}}
    assert cpu_line(cpu) == "workers 1.08 (135), broker 0.32 (40), other 0.00 (0)"
    assert cpu_line({"cores": {"other": -0.031}, "us_per_event": {}}) == "other -0.03 (0)"  # a real negative stays


def test_the_answers_counted_are_those_readable_within_the_window() -> None:
    assert answered_between([0.999, 1.0, 1.5, None, 2.0, 2.001], 1.0, 2.0) == 3


def test_the_report_tables_the_cpu_of_each_rate_and_what_the_machine_would_carry_at_that_cost() -> None:
    cpu = {"window_s": 8.0, "answered_per_s": 5990, "machine_cores": 2,
           "cores": {"workers": 0.92, "broker": 0.3, "redis": 0.21, "harness": 0.09, "machine": 1.6, "other": 0.08},
           "us_per_event": {"workers": 153.6, "broker": 50.1, "redis": 35.1, "harness": 15.0, "machine": 267.1,
                            "other": 13.4}}
    lines = cpu_section({"transactions_latency": [{"offered": 6000, "cpu": cpu}, {"offered": 500}]})
    assert lines[-1] == ("| transactions | 1 | 6,000 | 5,990 | 0.92 (154) | 0.30 (50) | 0.21 (35) | 0.09 (15) "
                         "| 0.08 (13) | 1.60 of 2 | 7,488 |")
    assert lines[-2].startswith("|---") and len(lines[-2].split("|")) == len(lines[-1].split("|"))
    assert cpu_section({"transactions_latency": [{"offered": 500}]}) == []  # runs from before the CPU was read
