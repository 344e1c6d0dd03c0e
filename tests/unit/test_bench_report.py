"""The GPU section of docs/benchmarks.md, rendered from bench.gpu's and bench.load's files."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import gpu_section


def test_without_a_gpu_run_the_section_says_so(tmp_path: Path) -> None:
    assert "No GPU run recorded yet" in "\n".join(gpu_section(tmp_path))


def test_the_section_shows_inference_engine_and_load_per_provider(tmp_path: Path) -> None:
    (tmp_path / "gpu.json").write_text(json.dumps({
        "onnxruntime": "1.31.1", "available": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "machine": "NVIDIA H200; 16 CPUs", "date": "2026-12-04 13:34 UTC", "engine_events": 20000,
        "runs": [{"provider": "cuda", "fp16": True, "int8": False, "fraud_per_s_batch_512": 286807,
                  "max_fraud_difference_vs_cpu_fp32": 0.0017236}],
        "engine": {"cpu": {"transactions_per_s": 9469, "clicks_per_s": 12195},
                   "cuda": {"transactions_per_s": 8818, "clicks_per_s": 31346}},
    }))
    (tmp_path / "gpu-load-clicks-cuda.json").write_text(json.dumps({
        "kind": "clicks", "results": [{"offered": 8000.0, "achieved_send_rate": 7992, "p50_ms": 23.0, "p99_ms": 34.6,
                                       "max_ms": 42.9, "lost": 0, "held": True}],
    }))
    lines = gpu_section(tmp_path)
    (versions,) = [line for line in lines if line.startswith("onnxruntime ")]
    assert "1.31.1" in versions and "Machine: NVIDIA H200; 16 CPUs, 2026-12-04 13:34 UTC." in versions
    assert "Models: not recorded by this run." in versions  # as bench.gpu's runs before the fraud model changed
    assert "| cuda | True | False | fraud_per_s_batch_512 | 286,807 |" in lines
    assert "| cuda | True | False | max_fraud_difference_vs_cpu_fp32 | 0.001724 |" in lines
    assert "| cpu | 9,469 | 12,195 |" in lines and "| cuda | 8,818 | 31,346 |" in lines
    assert "| cuda | clicks | 8,000 | 7,992 | 23.0 | 34.6 | 42.9 | 0 | yes |" in lines


def test_the_section_names_the_models_a_run_measured(tmp_path: Path) -> None:
    from bench.gpu import model_versions

    versions = model_versions()
    assert versions["fraud"].startswith("fraud-") and versions["recommend"]
    (tmp_path / "gpu.json").write_text(json.dumps({"onnxruntime": "1.32.0", "available": [], "runs": [],
                                                   "models": versions}))
    (line,) = [line for line in gpu_section(tmp_path) if line.startswith("onnxruntime ")]
    assert f"Models: fraud {versions['fraud']}, recommend {versions['recommend']}." in line


def test_the_targets_table_shows_the_drains_of_one_worker_and_of_two(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-04-m.json").read_text())
    write_docs(run, tmp_path, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| ≥ 20,000 transactions/s drained | 16,723/s; at steady state 10,757/s; two workers 20,652/s |" in text
    assert "| ≥ 11,000 clicks/s drained | 17,010/s; two workers 15,519/s |" in text
    assert "micro-batch size 512, 4,096 from a backlog" in text and "fraud model alone in ONNX Runtime, batch 4,096" in text
    assert "each worker runs both jobs" in text  # as every worker did before STREAMER_WORKER_JOBS


def test_a_run_with_a_worker_per_job_says_which_job_each_kind_ran(tmp_path: Path) -> None:
    from bench.report import write_docs
    from bench.run import JOB_OF

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-04-m.json").read_text())
    write_docs({**run, "worker_jobs": JOB_OF}, tmp_path, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "each worker runs the job of the events measured alone, `STREAMER_WORKER_JOBS`: `fraud` for transactions, `recommend` for clicks" in text


def test_a_run_whose_two_workers_drained_a_longer_backlog_says_so(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-04-m.json").read_text())
    write_docs({**run, "clicks_drain_two_workers_events": 40000}, tmp_path, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| engine, two worker processes, clicks (a backlog of 40,000: as many per worker as one worker's drain) |" in text
    assert "| engine, two worker processes, transactions |" in text  # not recorded: as the run was


def test_a_run_says_where_one_worker_and_two_ran_their_models(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-04-m.json").read_text())
    write_docs({**run, "models_beside_the_loop": {"1": {"thread": True, "process": True},
                                                  "2": {"thread": False, "process": False}}}, tmp_path, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert ("one worker ran the models beside the event loop (the fraud models on a thread, the next-item models in a "
            "child process), two workers ran the models on the event loop (`STREAMER_MODELS_THREAD` and "
            "`STREAMER_MODELS_PROCESS` false)") in text


def test_the_docs_of_a_run_that_read_the_cpu_table_it_for_every_rate(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-04-n.json").read_text())
    write_docs(run, tmp_path, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| transactions |", "| clicks |")) and " of 2 |" in line]
    assert len(rows) == 16  # six rates and two with two workers, per stream
    # other: -0.003 cores, -0.3 µs, shown without a sign
    assert ("| transactions | 2 | 8,000 | 7,824 | 1.24 (158) | 0.28 (35) | 0.28 (36) | 0.08 (10) | 0.00 (0) "
            "| 1.88 of 2 | 8,347 |") in rows


def test_the_naive_agents_latency_is_tabled_and_plotted_beside_the_engines(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-04-n.json").read_text())
    run["transactions_naive_latency"] = [
        {"offered": 50, "achieved_send_rate": 50, "p50_ms": 21.0, "p99_ms": 48.5, "max_ms": 60.1, "lost": 0},
        {"offered": 100, "achieved_send_rate": 100, "p50_ms": 900.0, "p99_ms": 2100.0, "max_ms": 2300.0, "lost": 0}]
    write_docs(run, tmp_path, tmp_path)
    lines = (tmp_path / "benchmarks.md").read_text().splitlines()
    assert "| transactions | 1, naive | 50 | 50 | 21.0 | 48.5 | 60.1 | 0 | yes |" in lines
    assert "| transactions | 1, naive | 100 | 100 | 900.0 | 2100.0 | 2300.0 | 0 | no |" in lines
    assert (tmp_path / "latency.png").stat().st_size > 0


def test_a_run_says_how_it_timed_its_drains(tmp_path: Path) -> None:
    from bench.report import write_docs
    from bench.run import DRAIN_TIMING

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-04-m.json").read_text())
    write_docs(run, tmp_path, tmp_path)
    assert "A drain is timed" not in (tmp_path / "benchmarks.md").read_text()  # as the run was
    write_docs({**run, "drains_timed": DRAIN_TIMING}, tmp_path, tmp_path)
    assert ("the model alone. A drain is timed from when the workers, settled in their group and paused while the "
            "backlog was produced, resume, to the last output record being readable.") in (tmp_path / "benchmarks.md").read_text()


def test_a_run_that_recorded_its_first_outputs_tables_them_beside_the_drain_rates(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-04-m.json").read_text())
    write_docs(run, tmp_path, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| engine, transactions | 16,723 | " in text and "First output" not in text  # as the run was
    run["transactions_drain_per_s"]["first_output_s"] = 0.214
    write_docs(run, tmp_path, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "First output: the median time from the workers resuming to their first output." in text
    assert "| what | median/s | spread | share of the smaller ceiling | first output, s |" in text
    row = next(line for line in text.splitlines() if line.startswith("| engine, transactions |"))
    assert row.endswith("| 0.21 |")


def test_a_run_with_long_drains_tables_them_and_their_share_beside_the_short_ones(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-05-zb.json").read_text())
    write_docs(run, tmp_path, tmp_path)
    assert "a longer drain" not in (tmp_path / "benchmarks.md").read_text()  # as the run was
    run |= {"clicks_long_drain_events": 60_000,
            "clicks_long_drain_per_s": {"median": 13_931, "min": 13_500, "max": 14_000, "runs": 3, "first_output_s": 0.22}}
    write_docs(run, tmp_path, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| engine, clicks, a backlog of 60,000 (a longer drain) | 13,931 | 13,500 – 14,000 | 96% | 0.22 |" in text
    assert "| ≥ 80 % of the smaller ceiling | transactions 28%, clicks 78% (over 60,000: 96%) |" in text


def test_a_run_that_offered_the_targets_rates_again_tables_their_median_and_spread(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-07-b.json").read_text())
    runs = [{"offered": 15000, "achieved_send_rate": 14990, "lost": lost, "p50_ms": p50, "p99_ms": p99, "max_ms": top}
            for p50, p99, top, lost in ((20.1, 130.5, 160.0, 0), (18.0, 40.2, 70.3, 0), (19.4, 61.0, 90.9, 12))]
    run["transactions_target_latency"] = {"offered": 15000, "workers": 2, "runs": runs,
                                          "p50_ms": {"median": 19.4, "min": 18.0, "max": 20.1, "runs": 3},
                                          "p99_ms": {"median": 61.0, "min": 40.2, "max": 130.5, "runs": 3},
                                          "max_ms": {"median": 90.9, "min": 70.3, "max": 160.0, "runs": 3}}
    write_docs(run, tmp_path, tmp_path)
    lines = (tmp_path / "benchmarks.md").read_text().splitlines()
    # the third run's p99 was under 100 ms, but it lost inputs: it did not hold
    assert ("| transactions | 2 | 15,000 | 3 | 19.4 (18.0 – 20.1) | 61.0 (40.2 – 130.5) | 90.9 (70.3 – 160.0) "
            "| 130.5, 40.2, 61.0 | 0, 0, 12 | 1 of 3 |") in lines
    (target,) = [line for line in lines if line.startswith("| 15,000 transactions/s sustained")]
    assert target.endswith("; at 15,000/s to 2 workers, offered 3 times: p99 61.0 ms (median; 40.2 – 130.5), held in 1 of 3 |")
    (clicks,) = [line for line in lines if line.startswith("| 8,000 clicks/s sustained")]
    assert "offered 3 times" not in clicks and "held in" not in clicks  # run b offered the clicks' target once, in its series


def test_the_targets_rate_offered_at_steady_state_is_tabled_beside_the_fresh_one(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-07-h.json").read_text())
    fresh = run["transactions_target_latency"]
    runs = [{**point, "p99_ms": p99, "windows": [{"p99_ms": p99}]} for point, p99 in zip(fresh["runs"], (95.0, 180.0, 240.0))]
    run["transactions_target_latency_steady"] = {
        **fresh, "runs": runs, "p99_ms": {"median": 180.0, "min": 95.0, "max": 240.0, "runs": 3}}
    write_docs(run, tmp_path, tmp_path)
    lines = (tmp_path / "benchmarks.md").read_text().splitlines()
    (row,) = [line for line in lines if line.startswith("| transactions at steady state | 2 | 15,000 | 3 |")]
    assert "| 180.0 (95.0 – 240.0) |" in row and row.endswith("| 95.0, 180.0, 240.0 | 0, 0, 0 | 1 of 3 |")
    (target,) = [line for line in lines if line.startswith("| 15,000 transactions/s sustained")]
    assert target.endswith("; at steady state: p99 180.0 ms (95.0 – 240.0), held in 1 of 3 |")


def test_a_rate_counts_as_sustained_only_if_it_and_every_rate_below_it_held(tmp_path: Path) -> None:
    """The targets table once took the highest rate whose p99 was under 100 ms: a rate
    that lost inputs, or whose last 10 s climbed past the limit, or one above a rate
    that failed, counted as sustained."""
    from bench.report import held_up_to, write_docs

    def point(offered: float, p99: float | None, lost: int = 0, last_p99: float = 50.0) -> dict[str, object]:
        return {"offered": offered, "achieved_send_rate": offered, "p50_ms": p99 and 10.0, "p99_ms": p99, "max_ms": p99,
                "lost": lost, "windows": [{"p99_ms": 40.0}, {"p99_ms": last_p99}]}

    assert held_up_to([point(1000, 30.0), point(2000, 60.0)]) == 2000
    assert held_up_to([point(2000, 60.0, lost=3), point(1000, 30.0)]) == 1000  # in any order
    assert held_up_to([point(1000, 30.0), point(2000, 90.0, last_p99=140.0)]) == 1000  # climbing at the end
    assert held_up_to([point(1000, 130.0), point(2000, 60.0)]) == 0  # above a rate that failed
    assert held_up_to([point(1000, None, lost=8000)]) == 0  # every input lost

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-07-b.json").read_text())
    run["transactions_latency"] = [point(500, 30.0), point(1000, None, lost=8000), point(2000, 60.0)]
    write_docs(run, tmp_path, tmp_path)
    lines = (tmp_path / "benchmarks.md").read_text().splitlines()
    assert "| transactions | 1 | 1,000 | 1,000 | – | – | – | 8,000 | no |" in lines
    (target,) = [line for line in lines if line.startswith("| 15,000 transactions/s sustained")]
    assert "highest offered rate held, with every rate below it: 500/s;" in target


def test_the_two_workers_drains_have_no_share_of_one_process_ceilings(tmp_path: Path) -> None:
    """The ceilings are one process's: two workers' clicks once read 139 % of them."""
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-07-h.json").read_text())
    write_docs(run, tmp_path, tmp_path)
    rows = [line for line in (tmp_path / "benchmarks.md").read_text().splitlines()
            if line.startswith("| engine, two worker processes,")]
    assert len(rows) == 2 and all(row.split(" | ")[3] == "" for row in rows)


def test_a_run_says_where_its_naive_agent_ran_the_models(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-07-h.json").read_text())
    write_docs(run, tmp_path, tmp_path)
    assert "the naive agent ran them" not in (tmp_path / "benchmarks.md").read_text()  # as the run was
    write_docs({**run, "naive_models_beside_the_loop": {"thread": False, "process": False}}, tmp_path, tmp_path)
    assert "; the naive agent ran them on its event loop)." in (tmp_path / "benchmarks.md").read_text()


def test_latency_is_said_to_end_where_the_run_measured_it(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-07-h.json").read_text())
    write_docs(run, tmp_path, tmp_path)
    assert "timestamp to the output record's, at fixed offered rates" in (tmp_path / "benchmarks.md").read_text()
    for point in run["transactions_latency"]:
        point["to_output_stamps"] = {"p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 3.0}
    write_docs(run, tmp_path, tmp_path)
    assert "to the output record being readable (`bench.readable`), at fixed" in (tmp_path / "benchmarks.md").read_text()


def test_a_soak_whose_worker_died_or_fell_behind_is_not_flat(tmp_path: Path) -> None:
    """A worker that stopped working holds its memory flat too."""
    from bench.report import soak_verdict

    soak = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-07-f-soak.json").read_text())
    assert soak_verdict(soak).startswith("flat: ")
    assert soak_verdict({**soak, "worker_alive": False}).startswith("not met: the worker died: ")
    behind = {**soak, "not_committed_at_end": {"transactions": 1200, "clicks": 0}}
    assert soak_verdict(behind).startswith("not met: the worker left 1,200 inputs uncommitted: ")


def test_a_run_from_before_the_targets_were_offered_again_has_no_such_table(tmp_path: Path) -> None:
    from bench.report import write_docs

    run = json.loads((Path(__file__).parents[2] / "docs" / "bench-runs" / "2026-12-07-b.json").read_text())
    write_docs(run, tmp_path, tmp_path)
    assert "offered again" not in (tmp_path / "benchmarks.md").read_text()
