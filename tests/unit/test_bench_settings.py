"""The benchmark's settings and bookkeeping: the naive agent really takes one event at a time,
the latency runs split by rate, the CPU time stolen from the VM."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest

from bench.cpu import cpu_times, stolen_share
import bench.run
from bench.run import clicks, for_kind, for_workers, fresh_settings, latency_windows, models_beside_the_loop
from streamer.events import parse_time
from streamer.settings import Settings


def test_the_naive_agent_has_one_lane_and_no_backlog_batches_and_the_engine_its_configured_ones() -> None:
    base = Settings.from_env({"STREAMER_BATCH_LANES": "2", "STREAMER_BATCH_BACKLOG_SIZE": "4096"})
    naive, engine = fresh_settings(base, 1), fresh_settings(base, 512)
    assert (naive.batch.max_size, naive.batch.lanes, naive.batch.backlog_size) == (1, 1, 1)
    assert (engine.batch.max_size, engine.batch.lanes, engine.batch.backlog_size) == (512, 2, 4096)
    assert (naive.batch.largest, engine.batch.largest) == (1, 4096)
    assert naive.topics.transactions != engine.topics.transactions and naive.redis.namespace != engine.redis.namespace


def test_the_naive_agent_runs_its_models_itself_unless_the_environment_says_where() -> None:
    """One event at a time handed to a thread or a child process costs each event a
    hand-over that an agent written the plain way would not pay."""
    base = Settings.from_env({})
    assert models_beside_the_loop(fresh_settings(base, 1, environ={})) == {"thread": False, "process": False}
    assert models_beside_the_loop(fresh_settings(base, 512, environ={})) == models_beside_the_loop(base)
    chosen = fresh_settings(base, 1, environ={"STREAMER_MODELS_PROCESS": "true"})
    assert models_beside_the_loop(chosen) == {"thread": False, "process": base.models.process}


def test_the_workers_measured_run_the_job_of_the_events_offered_unless_told_otherwise() -> None:
    base = Settings.from_env({})
    assert base.worker.runs("fraud") and base.worker.runs("recommend")
    fraud, recommend = for_kind(base, "transactions").worker, for_kind(base, "clicks").worker
    assert fraud.runs("fraud") and not fraud.runs("recommend")
    assert recommend.runs("recommend") and not recommend.runs("fraud")
    both = for_kind(base, "clicks", "fraud,recommend").worker
    assert both.runs("fraud") and both.runs("recommend")


def test_as_many_workers_as_cores_run_their_models_on_the_event_loop_unless_the_environment_says() -> None:
    base = Settings.from_env({})
    assert models_beside_the_loop(for_workers(base, 1, {}, cores=2)) == {"thread": True, "process": True}
    assert models_beside_the_loop(for_workers(base, 2, {}, cores=2)) == {"thread": False, "process": False}
    assert models_beside_the_loop(for_workers(base, 3, {}, cores=2)) == {"thread": False, "process": False}
    told = {"STREAMER_MODELS_PROCESS": "true"}
    assert models_beside_the_loop(for_workers(Settings.from_env(told), 2, told, cores=2)) == {"thread": False,
                                                                                               "process": True}


def test_the_frameworks_ceiling_echoes_only_the_topics_of_its_jobs() -> None:
    from bench.faust_loop import echo_runtime

    clicks = echo_runtime(for_kind(Settings.from_env({}), "clicks"))
    assert clicks.transactions is None and clicks.labels is None
    assert clicks.clicks is not None and clicks.clicks.topic == clicks.settings.topics.recommendations
    transactions = echo_runtime(for_kind(Settings.from_env({}), "transactions"))
    assert transactions.clicks is None and transactions.ranking_requests is None
    assert transactions.transactions is not None and transactions.transactions.topic == transactions.settings.topics.fraud_scores


def test_each_offered_rate_gets_topics_and_a_group_of_its_own_on_one_state(monkeypatch, tmp_path) -> None:
    """The embedded broker's work per fetch grows with a partition's length, so a rate
    must not run on the topics the rates before it filled (bench.broker_growth)."""
    import bench.run as run

    calls, deleted = [], []

    def one_rate(settings, kind, rate, messages, log, workers, broker_pid):
        calls.append((settings, rate, messages))
        assert workers == 1 and settings.models.thread and settings.models.process  # one worker: models beside its loop
        return {"offered": rate}

    async def delete_namespace(redis):
        deleted.append(redis.namespace)

    monkeypatch.setattr(run, "_latency_at", one_rate)
    monkeypatch.setattr(run, "delete_namespace", delete_namespace)
    monkeypatch.setattr(run.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("STREAMER_MODELS_THREAD", raising=False)
    monkeypatch.delenv("STREAMER_MODELS_PROCESS", raising=False)
    messages = [(b"k", str(i).encode()) for i in range(100)]
    results = run.latency(Settings.from_env(), "transactions", messages, [2.0, 4.0], 5, tmp_path / "log")

    assert results == [{"offered": 2.0}, {"offered": 4.0}]
    (first, _, first_messages), (second, _, second_messages) = calls
    assert first.worker.jobs == second.worker.jobs == "fraud"  # the workers run the job measured
    assert first.topics.transactions != second.topics.transactions
    assert first.kafka.group_id != second.kafka.group_id
    assert first.redis.namespace == second.redis.namespace == deleted[0] and len(deleted) == 1
    # one message to wait for the worker, then rate x seconds, the feed read on
    assert first_messages == messages[:11] and second_messages == messages[11:32]


def test_the_naive_agents_latency_runs_take_one_event_at_a_time(monkeypatch, tmp_path) -> None:
    import bench.run as run

    taken = []

    def one_rate(settings, kind, rate, messages, log, workers, broker_pid):
        taken.append(settings.batch)
        return {"offered": rate}

    async def delete_namespace(redis):
        pass

    monkeypatch.setattr(run, "_latency_at", one_rate)
    monkeypatch.setattr(run, "delete_namespace", delete_namespace)
    base = Settings.from_env({"STREAMER_BATCH_MAX_SIZE": "256"})
    messages = [(b"k", str(i).encode()) for i in range(100)]
    run.latency(base, "clicks", messages, [2.0], 5, tmp_path / "log", batch=1)
    run.latency(base, "clicks", messages, [2.0], 5, tmp_path / "log")
    naive, engine = taken
    assert (naive.max_size, naive.lanes, naive.backlog_size) == (1, 1, 1)
    assert engine.max_size == 256 and engine.backlog_size == base.batch.backlog_size


def test_a_target_rate_is_offered_once_per_run_each_on_fresh_state_from_the_feeds_start(monkeypatch, tmp_path) -> None:
    import bench.run as run

    offered, deleted = [], []
    p99s = iter([130.5, 40.2, 61.0])

    def one_rate(settings, kind, rate, messages, log, workers, broker_pid):
        offered.append((settings, rate, workers, messages))
        p99 = next(p99s)
        return {"offered": rate, "p50_ms": p99 / 2, "p99_ms": p99, "max_ms": p99 + 10}

    async def delete_namespace(redis):
        deleted.append(redis.namespace)

    monkeypatch.setattr(run, "_latency_at", one_rate)
    monkeypatch.setattr(run, "delete_namespace", delete_namespace)
    messages = [(b"k", str(i).encode()) for i in range(100)]
    target = run.target_latency(Settings.from_env({}), "transactions", messages, 2.0, 2, 3, 5, tmp_path / "log")

    assert [(rate, workers) for _, rate, workers, _ in offered] == [(2.0, 2)] * 3
    assert all(taken == messages[:11] for *_, taken in offered)  # each run reads the feed from its start
    assert len({settings.redis.namespace for settings, *_ in offered}) == 3 == len(set(deleted))
    assert len({settings.topics.transactions for settings, *_ in offered}) == 3
    assert target["p99_ms"] == {"median": 61.0, "min": 40.2, "max": 130.5, "runs": 3}
    assert target["p50_ms"]["median"] == 30.5 and target["max_ms"]["max"] == 140.5
    assert [point["p99_ms"] for point in target["runs"]] == [130.5, 40.2, 61.0]
    assert (target["offered"], target["workers"]) == (2.0, 2)


def test_the_suite_reports_the_share_of_cpu_time_the_hypervisor_stole(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 5 35 7 0\ncpu0 50 0 25 400 5 0 2 17 3 0\n")
    before = cpu_times(stat)
    assert before == [100, 0, 50, 800, 10, 0, 5, 35, 7, 0]
    stat.write_text("cpu  180 0 70 1500 10 0 5 135 9 0\n")
    # 80 user + 20 system + 700 idle + 100 steal: guest time (already in user) left out
    assert stolen_share(before, cpu_times(stat)) == 0.1111
    assert stolen_share(None, cpu_times(stat)) is None
    assert cpu_times(tmp_path / "missing") is None


def test_the_suite_tables_where_the_drains_batches_spent_their_time() -> None:
    from bench.report import steps_section

    taken = {"batches": 40, "mean_size": 500, "steps_ms": {
        "first step": {"mean": 116.5, "longest": 194.1}, "models": {"mean": 72.7, "longest": 110.5},
        "last step": {"mean": 37.6, "longest": 91.7}, "delivery": {"mean": 36.1, "longest": 101.6}}}
    lines = steps_section({"transactions_drain_steps": taken, "clicks_drain_steps": None})
    assert lines[-1] == "| transactions, one worker | 40 | 500 | 116.5 (194.1) | 72.7 (110.5) | 37.6 (91.7) | 36.1 (101.6) |"
    assert lines[-2].startswith("|---")
    assert steps_section({"transactions_drain_steps": None}) == []  # a run from before the reports


def test_the_steady_state_drain_starts_after_a_month_of_state_and_the_labels_known_by_then(monkeypatch) -> None:
    import bench.run as run
    from streamer.datasets import FRAUD_CSV
    from streamer.features.fraud import DAY, TERMINAL_HORIZON

    if not FRAUD_CSV.is_file():
        pytest.skip("the benchmark data is not here")
    monkeypatch.setattr(run, "STEADY_FROM", 100_000)  # about ten days in: quicker to read than day 40
    history, labels, drained = run.steady_transactions(100)

    start = orjson.loads(drained[0][1])["timestamp"]
    first = parse_time(start)
    assert len(drained) == 100 and len(history) == 100_000  # ten days: all of them within the reach
    assert history[-1].ts <= first and history[0].ts > first - TERMINAL_HORIZON
    assert labels and all(label.labelled_ts <= first for label in labels)
    assert max(label.ts for label in labels) <= first - 7 * DAY  # labels come 7 days late
    assert {label.transaction_id for label in labels} <= {tx.transaction_id for tx in history}


def test_the_inference_choices_show_the_int8_graphs_as_the_runtimes_choice_with_their_evaluation(tmp_path: Path) -> None:
    from bench.report import ort_section

    measured = {"card_encoder_fused_per_s": 1, "card_encoder_unfused_per_s": 2, "item_encoder_width50_fused_per_s": 3,
                "item_encoder_width50_unfused_per_s": 4, "item_encoder_by_length_per_s": 5, "ranker_k100_per_s": 6,
                "ranker_k10_per_s": 7}
    (tmp_path / "ort_options.json").write_bytes(orjson.dumps(measured))
    float32_only = ort_section(tmp_path)
    assert not any("int8" in line for line in float32_only)
    (tmp_path / "ort_options.json").write_bytes(orjson.dumps({
        **measured, "item_encoder_by_length_int8_per_s": 8, "ranker_k10_int8_per_s": 9_000,
        "next_item_float32_test": {"hr@10": 0.0791, "ndcg@10": 0.0482}, "next_item_int8_test": {"hr@10": 0.079, "ndcg@10": 0.0481}}))
    lines = ort_section(tmp_path)
    assert "| ranker asked for the top 10, int8 graph | **9,000** |" in lines
    assert "| ranker asked for the top 10 (what is served), float32 | 7 |" in lines
    assert lines[-2].endswith("HR@10 0.079 / NDCG@10 0.0481 against 0.0791 / 0.0482 in float32.")


def test_a_drain_is_timed_from_its_workers_resuming_to_its_last_output_being_readable() -> None:
    """Seen in the suite: two workers processed several batches before their first
    outputs went out, then 16,271 of 40,000 outputs within 100 ms. Timed from the first
    output, that drain read 42,984/s; from its workers' start it reads what it took. Its
    end is when the last output could be read, not the timestamp the worker's producer
    gave it before sending it."""
    from bench.run import drained

    resumed = 1000.0
    readable = [1001.5] * 16_271 + [1001.6 + (i // 100) / 1000 for i in range(23_729)]
    stamps = [1_001_450] * 16_271 + [1_001_550 + i // 100 for i in range(23_729)]  # epoch ms, 50 ms before
    drain = drained(resumed, readable, stamps, produced_s=0.4)
    assert drain.events == 40_000
    assert drain.seconds == pytest.approx(1.6 + 237 / 1000)
    assert drain.rate == pytest.approx(40_000 / 1.837)
    assert drain.first_output_s == pytest.approx(1.5)
    assert drain.to_stamp_s == pytest.approx(1.55 + 237 / 1000)


def test_repeated_drains_give_their_rates_spread_and_their_first_outputs_median() -> None:
    from bench.run import Drained, drain_rates

    rates = drain_rates([Drained(10_000, 1.0, 0.2, 0.3, 0.8), Drained(10_000, 0.5, 0.2, 0.1, 0.5),
                         Drained(10_000, 2.0, 0.2, 0.6, 2.0)])
    assert rates == {"median": 10_000, "min": 5_000, "max": 20_000, "runs": 3, "first_output_s": 0.3,
                     "median_to_stamps": 12_500}


def test_latency_percentiles_of_a_run_that_lost_every_input_are_none() -> None:
    """A worker that died mid-run answered nothing: the run reports every input lost
    instead of ending the suite with an IndexError."""
    from bench.run import percentiles

    assert percentiles([]) == {"p50_ms": None, "p99_ms": None, "max_ms": None}
    assert percentiles([5.0, 1.0, 3.0]) == {"p50_ms": 3.0, "p99_ms": 5.0, "max_ms": 5.0}


def test_how_far_the_producer_fell_behind_its_schedule() -> None:
    """At 1,000/s the n-th input is due n ms after the first: sent at those times it is
    on schedule, sent in a burst after a 50 ms stall the inputs held back count."""
    from bench.run import behind_schedule

    on_time = [100.0 + n / 1000 for n in range(100)]
    assert behind_schedule(on_time, 1000.0) == {"p99_ms": 0.0, "max_ms": 0.0}
    stalled = [100.0 + n / 1000 for n in range(50)] + [100.1] * 50  # inputs 50-99 held until 100 ms
    assert behind_schedule(stalled, 1000.0)["max_ms"] == pytest.approx(50.0)
    assert behind_schedule([], 1000.0) == behind_schedule(on_time, 0.0) == {"p99_ms": 0.0, "max_ms": 0.0}


def test_paused_processes_run_nothing_until_the_block_ends() -> None:
    import subprocess
    import sys

    from bench.run import paused

    def printed(fd: int) -> bytes:
        try:
            return os.read(fd, 1 << 20)
        except BlockingIOError:
            return b""

    counter = subprocess.Popen([sys.executable, "-u", "-c", "import itertools\nfor i in itertools.count(): print(i)"],
                               stdout=subprocess.PIPE)
    try:
        assert counter.stdout is not None
        fd = counter.stdout.fileno()
        os.set_blocking(fd, False)
        while not printed(fd):
            time.sleep(0.01)
        with paused([counter.pid]) as resumed:
            time.sleep(0.2)
            while printed(fd):  # what it printed before the stop
                pass
            time.sleep(0.3)
            assert printed(fd) == b""
            assert resumed == []
        assert resumed and abs(resumed[0] - time.time()) < 1.0
        time.sleep(0.2)
        assert printed(fd)
    finally:
        counter.kill()
        counter.wait()


def test_two_workers_are_offered_the_targets_rates_and_more() -> None:
    from bench.run import SuitePlan

    plan = SuitePlan()
    transactions, clicks = plan.two_worker_rates["transactions"], plan.two_worker_rates["clicks"]
    assert 15000 in transactions
    assert 8000 in clicks and max(clicks) > 8000
    assert 8000 in plan.rates  # one worker too, at the click target's rate
    assert plan.targets == {"transactions": (15000, 2), "clicks": (8000, 1)}  # offered again, once per repeat


def test_the_suites_feed_holds_its_longest_series_of_rates_after_the_drain() -> None:
    from bench.run import LONG_DRAIN, SuitePlan, events_offered

    for plan in (SuitePlan(), SuitePlan.quick()):
        for kind in ("transactions", "clicks"):
            n = plan.events[kind]
            for series in (plan.rates, plan.two_worker_rates[kind], plan.naive_rates[kind], plan.targets[kind][:1]):
                assert plan.feed(kind) >= n + events_offered(series, plan.seconds)
            assert plan.feed(kind) >= LONG_DRAIN * n


def test_the_benchmarks_clicks_are_enough_for_the_suites_feed() -> None:
    """``bench.run.clicks`` stops at the data's end: a shorter feed would cut the last
    rates' runs short."""
    from bench.run import SuitePlan
    from streamer.datasets import BEAUTY, read_sequences

    if not BEAUTY.exists():
        pytest.skip(f"no benchmark data at {BEAUTY}")
    assert sum(len(items) for _, items in read_sequences(BEAUTY)) >= SuitePlan().feed("clicks")


def test_latency_windows_tell_a_climbing_latency_from_a_steady_one() -> None:
    # 30 s of sends, one a second: 10 ms each for the first 10 s, 100 ms the next 10, then 1 s
    sent = [1000.0 + t for t in range(30)]
    latency = [10.0] * 10 + [100.0] * 10 + [1000.0] * 8 + [None, None]
    windows = latency_windows(sent, latency, window_s=10.0)
    assert [w["from_s"] for w in windows] == [0.0, 10.0, 20.0]
    assert [w["sent"] for w in windows] == [10, 10, 10]
    assert [w["p99_ms"] for w in windows] == [10.0, 100.0, 1000.0]
    assert [w["lost"] for w in windows] == [0, 0, 2]


def test_a_short_last_latency_window_joins_the_one_before_and_an_empty_one_has_no_percentiles() -> None:
    sent = [0.0, 5.0, 9.9, 10.5, 12.0]  # 12 s: the 2 s after the first window join it
    windows = latency_windows(sent, [1.0, 2.0, 3.0, 40.0, None], window_s=10.0)
    assert len(windows) == 1 and windows[0]["sent"] == 5 and windows[0]["lost"] == 1
    assert windows[0]["max_ms"] == 40.0
    nothing_answered = latency_windows([0.0, 1.0], [None, None], window_s=10.0)
    assert nothing_answered == [{"from_s": 0.0, "sent": 2, "lost": 2}]
    assert latency_windows([], []) == []


def test_the_clicks_feed_goes_on_past_the_data_with_its_sequences_as_new_users(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sequences = tmp_path / "sequences.txt"
    sequences.write_text("u1 a b c\nu2 d e\n")
    monkeypatch.setattr(bench.run, "BEAUTY", sequences)

    feed = [orjson.loads(value) for _, value in clicks(12)]

    assert len(feed) == 12
    assert [(c["user_id"], c["item_id"]) for c in feed[:7]] == [
        ("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "d"), ("u2", "e"), ("u1~2", "a"), ("u1~2", "b")]
    assert [c["user_id"] for c in feed[10:]] == ["u1~3", "u1~3"]
    assert len({c["event_id"] for c in feed}) == 12
    times = [parse_time(c["timestamp"]) for c in feed]
    assert times == sorted(times) and len(set(times)) == 12


def test_the_clicks_feed_of_no_sequences_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "sequences.txt"
    empty.write_text("")
    monkeypatch.setattr(bench.run, "BEAUTY", empty)
    assert clicks(5) == []


def test_a_latency_run_from_steady_state_stores_the_history_where_its_workers_read_first(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--steady`` and the suite's steady target offerings: the month before is in the
    state namespace the rates' workers use, before the first rate is offered."""
    calls: list[tuple[str, str]] = []

    async def stored(redis, transactions, labels) -> None:  # type: ignore[no-untyped-def]
        calls.append(("stored", redis.namespace))

    async def deleted(redis) -> None:  # type: ignore[no-untyped-def]
        calls.append(("deleted", redis.namespace))

    def offered(settings, kind, rate, messages, log, workers, broker_pid):  # type: ignore[no-untyped-def]
        calls.append(("offered", settings.redis.namespace))
        return {"offered": rate}

    monkeypatch.setattr(bench.run, "store_history", stored)
    monkeypatch.setattr(bench.run, "delete_namespace", deleted)
    monkeypatch.setattr(bench.run, "_latency_at", offered)
    bench.run.latency(Settings.from_env({}), "transactions", [(b"c", b"{}")] * 10, [1.0, 2.0], 1.0, tmp_path / "log",
                      history=([], []))
    assert [what for what, _ in calls] == ["stored", "offered", "offered", "deleted"]
    assert len({namespace for _, namespace in calls}) == 1
    calls.clear()
    bench.run.latency(Settings.from_env({}), "transactions", [(b"c", b"{}")] * 10, [1.0], 1.0, tmp_path / "log")
    assert [what for what, _ in calls] == ["offered", "deleted"]
