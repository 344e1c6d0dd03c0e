"""Turns a benchmark result (``bench/results/latest.json``) into docs/benchmarks.md and a plot."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.cpu import cpu_cell
from bench.load import verdict

#: The p99 (ms) the performance issue's latency targets ask a rate to hold below.
P99_TARGET_MS = 100.0


def _row(name: str, stats: dict[str, float], ceiling: float | None = None) -> str:
    share = f"{stats['median'] / ceiling:.0%}" if ceiling else ""
    first = f"{stats['first_output_s']:.2f}" if "first_output_s" in stats else ""
    return f"| {name} | {stats['median']:,.0f} | {stats['min']:,.0f} – {stats['max']:,.0f} | {share} | {first} |"


def write_docs(results: dict[str, Any], docs: Path, results_dir: Path | None = None) -> None:
    """docs/benchmarks.md (tables from ``results``, the soak and GPU results found in
    ``results_dir``, and the hand-written notes already there) and docs/latency.png."""
    results_dir = results_dir or Path(__file__).resolve().parent / "results"
    soak = read_soak(results_dir)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs.mkdir(exist_ok=True)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind in zip(axes, ("transactions", "clicks")):
        points = results[f"{kind}_latency"]
        rates = [p["offered"] for p in points]
        for key, style in (("p50_ms", "o-"), ("p99_ms", "s-"), ("max_ms", "^:")):
            ax.plot(rates, [_y(p[key]) for p in points], style, label=key.replace("_ms", ""))
        two = results.get(f"{kind}_latency_two_workers", [])
        if two:
            ax.plot([p["offered"] for p in two], [_y(p["p99_ms"]) for p in two], "D--", label="p99, two workers")
        naive = results.get(f"{kind}_naive_latency", [])
        if naive:
            ax.plot([p["offered"] for p in naive], [_y(p["p99_ms"]) for p in naive], "x--", label="p99, naive agent")
        target = results.get(f"{kind}_target_latency")
        if target:
            p99 = target["p99_ms"]
            ax.errorbar([target["offered"]], [p99["median"]], yerr=[[p99["median"] - p99["min"]], [p99["max"] - p99["median"]]],
                        fmt="*", markersize=10, capsize=4,
                        label=f"p99 at the target, {p99['runs']} runs")
        ax.set_xscale("log")
        # every offered rate, not the log scale's ticks; in thousands and slanted, so close rates' labels do not touch
        ticks = sorted({*rates, *(p["offered"] for p in (*two, *naive))})
        ax.set_xticks(ticks, [f"{r / 1000:g}k" for r in ticks], rotation=45)
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel(f"offered {kind}/s")
        ax.set_ylabel("latency, ms (input → output readable)")
        ax.axhline(100, color="grey", linewidth=0.8)
        ax.legend(fontsize="x-small", loc="upper left")
        ax.set_title(kind)
    figure.tight_layout()
    figure.savefig(docs / "latency.png", dpi=110)
    plt.close(figure)

    model = results["model_alone"]
    model_batch = results.get("model_batch_size", results["batch_size"])
    bare = results["bare_loop_per_s"]
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {results['machine']}. Date: {results['date']}. Command: `{results['command']}` "
        f"(embedded Tansu broker, Redis and the worker on the same machine; micro-batch size {results['batch_size']}"
        + (f", {results['backlog_batch_size']:,} from a backlog" if results.get("backlog_batch_size", 0) > results["batch_size"] else "")
        + ("; each worker runs the job of the events measured alone, `STREAMER_WORKER_JOBS`: "
           + ", ".join(f"`{job}` for {kind}" for kind, job in results["worker_jobs"].items()) if "worker_jobs" in results
           else "; each worker runs both jobs")
        + models_placement(results.get("models_beside_the_loop"))
        + ("; the naive agent ran them on its event loop"
           if results.get("naive_models_beside_the_loop") == {"thread": False, "process": False} else "")
        + ").",
        *([f"CPU time taken by the hypervisor for other guests during the run (steal): {results['cpu_stolen_share']:.1%}."]
          if results.get("cpu_stolen_share") is not None else []),
        "",
        "Drain throughput, events per second (median of the runs, min – max). The engine's share is of the",
        "smaller ceiling: the bare consume → produce loop, or the model alone." + drain_timing(results)
        + (" First output: the median time from the workers resuming to their first output."
           if "first_output_s" in results["transactions_drain_per_s"] else ""),
        "",
        "| what | median/s | spread | share of the smaller ceiling | first output, s |",
        "|---|---|---|---|---|",
        _row("bare aiokafka consume → produce (no model, no state)", bare),
        *([_row("the engine's Faust app publishing each input unchanged (`bench.faust_loop`)", results["faust_loop_per_s"])]
          if "faust_loop_per_s" in results else []),
        f"| fraud model alone in ONNX Runtime, batch {model_batch:,} | {model['fraud_model_per_s']:,} | | | |",
        f"| next-item encoder + ranker alone, batch {model_batch:,} | {model['ranker_per_s']:,} | | | |",
    ]
    ceilings = {"transactions": min(bare["median"], model["fraud_model_per_s"]),
                "clicks": min(bare["median"], model["ranker_per_s"])}
    for kind, ceiling in ceilings.items():
        engine = results[f"{kind}_drain_per_s"]
        naive = results[f"{kind}_naive_per_s"]
        lines.append(_row(f"engine, {kind}", engine, ceiling))
        two_events = results.get(f"{kind}_drain_two_workers_events")
        # no share: the ceilings are one process's, two workers have two
        lines.append(_row(f"engine, two worker processes, {kind}"
                          + (f" (a backlog of {two_events:,}: as many per worker as one worker's drain)" if two_events else ""),
                          results[f"{kind}_drain_two_workers_per_s"]))
        if f"{kind}_long_drain_per_s" in results:
            lines.append(_row(f"engine, {kind}, a backlog of {results[f'{kind}_long_drain_events']:,} (a longer drain)",
                              results[f"{kind}_long_drain_per_s"], ceiling))
        if f"{kind}_steady_drain_per_s" in results:
            lines.append(_row(f"engine, {kind} at steady state (from day 40, the 37 days before stored first)",
                              results[f"{kind}_steady_drain_per_s"], ceiling))
        lines.append(_row(f"naive (batches of one event), {kind}", naive, ceiling))
        lines.append(f"| engine ÷ naive, {kind} | {engine['median'] / max(naive['median'], 1):.1f}× | | | |")
        if "faust_loop_per_s" in results:
            lines.append(f"| engine ÷ the Faust app alone, {kind} | {engine['median'] / results['faust_loop_per_s']['median']:.0%} | | | |")
    lines += steps_section(results)
    lines += ["", latency_measured(results) + " at fixed offered rates (workers",
              "*1, naive*: the naive agent, one event at a time, below and beyond the rate it drains; *lost*: inputs",
              "with no output; *held*: p99 under 100 ms over the run and its last 10 s, nothing lost, and the rate",
              "offered, `bench.load.verdict`):", "",
              "| stream | workers | offered/s | sent/s | p50 ms | p99 ms | max ms | lost | held |",
              "|---|---|---|---|---|---|---|---|---|"]
    for kind in ("transactions", "clicks"):
        for workers, key in latency_runs(kind):
            for p in results.get(key, []):
                lines.append(f"| {kind} | {workers} | {p['offered']:,} | {p['achieved_send_rate']:,} | {_ms(p['p50_ms'])} "
                             f"| {_ms(p['p99_ms'])} | {_ms(p['max_ms'])} | {p['lost']:,} "
                             f"| {'yes' if verdict(p, P99_TARGET_MS) else 'no'} |")
    lines += target_section(results)
    lines += cpu_section(results)
    lines += ["", "![latency versus offered load](latency.png)", ""]
    tx, cl = results["transactions_drain_per_s"]["median"], results["clicks_drain_per_s"]["median"]

    def sustained(kind: str) -> str:
        held = held_up_to(results[f"{kind}_latency"])
        two = results.get(f"{kind}_latency_two_workers")
        if two is None:
            return f"{held:,.0f}/s"
        offered = ", ".join(f"{p['offered']:,.0f}" for p in two)
        return f"{held:,.0f}/s; two workers, of {offered}/s offered: {held_up_to(two):,.0f}/s"

    def at_target(kind: str) -> str:
        target = results.get(f"{kind}_target_latency")
        if target is None:
            return ""
        p99 = target["p99_ms"]
        held = runs_held(target)
        steady = results.get(f"{kind}_target_latency_steady")
        return (f"; at {target['offered']:,.0f}/s to {workers_named(target['workers'])}, offered {times(p99['runs'])}: "
                f"p99 {p99['median']} ms (median; {p99['min']} – {p99['max']}), held in {held} of {len(target['runs'])}"
                + ("" if steady is None else
                   f"; at steady state: p99 {steady['p99_ms']['median']} ms ({steady['p99_ms']['min']} – "
                   f"{steady['p99_ms']['max']}), held in {runs_held(steady)} "
                   f"of {len(steady['runs'])}"))

    def long_share(kind: str, ceiling: float) -> str:
        drained = results.get(f"{kind}_long_drain_per_s")
        if drained is None:
            return ""
        return f" (over {results[f'{kind}_long_drain_events']:,}: {drained['median'] / ceiling:.0%})"

    def two_workers(kind: str) -> str:
        drained = results.get(f"{kind}_drain_two_workers_per_s")
        return "" if drained is None else f"; two workers {drained['median']:,.0f}/s"

    lines += [
        "Against the targets of the performance issue (this 2-core machine, everything local):",
        "",
        "| target | measured |",
        "|---|---|",
        f"| ≥ 20,000 transactions/s drained | {tx:,.0f}/s" + (
            f"; at steady state {results['transactions_steady_drain_per_s']['median']:,.0f}/s"
            if "transactions_steady_drain_per_s" in results else "") + two_workers("transactions") + " |",
        f"| 15,000 transactions/s sustained with p99 < 100 ms | highest offered rate held, with every rate below it: {sustained('transactions')}{at_target('transactions')} |",
        f"| ≥ 11,000 clicks/s drained | {cl:,.0f}/s{two_workers('clicks')} |",
        f"| 8,000 clicks/s sustained with p99 < 100 ms | highest offered rate held, with every rate below it: {sustained('clicks')}{at_target('clicks')} |",
        "| ≥ 10 × the naive agent | " + ", ".join(
            f"{kind} {results[f'{kind}_drain_per_s']['median'] / max(results[f'{kind}_naive_per_s']['median'], 1):.1f}×"
            for kind in ("transactions", "clicks")) + " |",
        "| ≥ 80 % of the smaller ceiling | " + ", ".join(
            f"{kind} {results[f'{kind}_drain_per_s']['median'] / ceiling:.0%}" + long_share(kind, ceiling)
            for kind, ceiling in ceilings.items()) + " |",
        f"| worker memory flat over a 10-minute soak | {soak_verdict(soak)} |",
        "",
    ]
    lines += soak_section(soak) + ort_section(results_dir) + gpu_section(results_dir)
    target = docs / "benchmarks.md"
    notes = target.read_text().partition(NOTES)[2] if target.is_file() else ""
    target.write_text("\n".join(lines) + "\n" + NOTES + (notes or "\n"))


#: Everything after this line in docs/benchmarks.md is written by hand and kept.
NOTES = "<!-- notes: kept when the tables above are regenerated -->\n"


def _y(value: float | None) -> float:
    """A latency to plot: a gap where every input was lost."""
    return float("nan") if value is None else value


def _ms(value: float | None) -> str:
    """A latency cell: none when every input was lost."""
    return "–" if value is None else f"{value}"


def runs_held(target: dict[str, Any]) -> int:
    """How many of a target's offerings held (``bench.load.verdict``)."""
    return sum(verdict(run, P99_TARGET_MS) for run in target["runs"])


def held_up_to(points: list[dict[str, Any]]) -> float:
    """The highest offered rate that held (``bench.load.verdict``) with every lower rate
    offered: 0 when the lowest did not."""
    held = 0.0
    for point in sorted(points, key=lambda p: p["offered"]):
        if not verdict(point, P99_TARGET_MS):
            break
        held = point["offered"]
    return held


def latency_measured(results: dict[str, Any]) -> str:
    """What a run's latencies end at: the output being readable (``bench.readable``), or
    the output's own timestamp in runs from before it."""
    readable = "to_output_stamps" in next(iter(results.get("transactions_latency", [])), {})
    return ("Latency from the input record's timestamp to the output record being readable (`bench.readable`),"
            if readable else "Latency from the input record's timestamp to the output record's,")


def steps_section(results: dict[str, Any]) -> list[str]:
    """Where the engine's drains spent their time, from the workers' step-time reports."""
    rows = []
    for kind in ("transactions", "clicks"):
        for label, key in (("one worker", f"{kind}_drain_steps"), ("two workers", f"{kind}_drain_two_workers_steps"),
                           ("one worker at steady state", f"{kind}_steady_drain_steps")):
            taken = results.get(key)
            if taken:
                steps = " | ".join(f"{step['mean']} ({step['longest']})" for step in taken["steps_ms"].values())
                rows.append(f"| {kind}, {label} | {taken['batches']} | {taken['mean_size']} | {steps} |")
    if not rows:
        return []
    return ["", "Where the drains' batches spent their time: each step's mean (longest) ms per batch, from the",
            "workers' step-time reports (`STREAMER_BATCH_REPORT_S`). Neighbouring batches' steps overlap (the",
            "models of one run while the event loop takes the next one's first step and the previous one's",
            "last step and delivery), so a drain goes at the pace of its longest kind of step.", "",
            "| drain | batches | events per batch | first step | models | last step | delivery |",
            "|---|---|---|---|---|---|---|", *rows]


def drain_timing(results: dict[str, Any]) -> str:
    """How the run timed its drains (runs from before ``bench.run.DRAIN_TIMING`` say nothing)."""
    return f" A drain is timed {results['drains_timed']}." if "drains_timed" in results else ""


def models_placement(placements: Mapping[str, Mapping[str, bool]] | None) -> str:
    """Where the workers ran their models (``bench.run.models_beside_the_loop``), by how
    many of them ran at once; nothing for a run that did not record it."""
    if not placements:
        return ""
    count = {"1": "one worker", "2": "two workers"}

    def where(beside: Mapping[str, bool]) -> str:
        if beside["thread"] and beside["process"]:
            return "beside the event loop (the fraud models on a thread, the next-item models in a child process)"
        if not beside["thread"] and not beside["process"]:
            return "on the event loop (`STREAMER_MODELS_THREAD` and `STREAMER_MODELS_PROCESS` false)"
        return f"with `STREAMER_MODELS_THREAD={str(beside['thread']).lower()}`, `STREAMER_MODELS_PROCESS={str(beside['process']).lower()}`"

    return "; " + ", ".join(f"{count.get(workers, workers + ' workers')} ran the models {where(beside)}"
                            for workers, beside in placements.items())


CPU_PARTS = ("workers", "broker", "redis", "harness", "other")


def latency_runs(kind: str) -> tuple[tuple[str, str], ...]:
    """The latency runs of ``kind`` a result holds: the workers column, the result's key."""
    return (("1", f"{kind}_latency"), ("2", f"{kind}_latency_two_workers"), ("1, naive", f"{kind}_naive_latency"))


def times(runs: int) -> str:
    return "once" if runs == 1 else f"{runs} times"


def workers_named(workers: int) -> str:
    return "one worker" if workers == 1 else f"{workers} workers"


def target_section(results: dict[str, Any]) -> list[str]:
    """The targets' rates offered once per repeat: each run's p99, and the median and
    spread of their p50 / p99 / max."""
    targets = [(name, results[key]) for name, key in (
        ("transactions", "transactions_target_latency"),
        ("transactions at steady state", "transactions_target_latency_steady"),
        ("clicks", "clicks_target_latency")) if key in results]
    if not targets:
        return []
    lines = ["", "The targets' rates offered again, once per repeat, each time on topics, workers and state of its own",
             "(median of the runs, min – max; `SuitePlan.targets`; *at steady state*: from day 40 of the data, the",
             "37 days before and the labels known by then stored first, as the steady-state drain):", "",
             "| stream | workers | offered/s | runs | p50 ms | p99 ms | max ms | each run's p99 ms | lost | held |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, target in targets:
        cells = [f"{target[key]['median']} ({target[key]['min']} – {target[key]['max']})" for key in ("p50_ms", "p99_ms", "max_ms")]
        each = ", ".join(_ms(run["p99_ms"]) for run in target["runs"])
        lost = ", ".join(f"{run['lost']:,}" for run in target["runs"])
        held = runs_held(target)
        lines.append(f"| {kind} | {target['workers']} | {target['offered']:,.0f} | {target['p99_ms']['runs']} | "
                     + " | ".join(cells) + f" | {each} | {lost} | {held} of {len(target['runs'])} |")
    return lines


def cpu_section(results: dict[str, Any]) -> list[str]:
    """Where the machine's CPU went while each latency rate was offered (``bench.cpu``)."""
    rows = []
    for kind in ("transactions", "clicks"):
        for workers, key in latency_runs(kind):
            for p in results.get(key, []):
                cpu = p.get("cpu")
                if not cpu:  # a run from before the CPU was read
                    continue
                cores, per_event = cpu["cores"], cpu["us_per_event"]
                parts = " | ".join(cpu_cell(cpu, part) if part in cores else "" for part in CPU_PARTS)
                total = per_event.get("machine")
                carried = f"{cpu['machine_cores'] * 1e6 / total:,.0f}" if total else ""
                rows.append(f"| {kind} | {workers} | {p['offered']:,} | {cpu['answered_per_s']:,} | {parts} "
                            f"| {cores.get('machine', 0):.2f} of {cpu['machine_cores']} | {carried} |")
    if not rows:
        return []
    return ["", "Where the machine's CPU went while each rate was offered (`bench.cpu`): cores in use, and in",
            "brackets CPU µs per event answered in that window. *harness* is the producer offering the rate,",
            "*other* the busy time the named processes leave (the kernel's network work among it). The last",
            "column is the rate the machine's cores would carry at that CPU per event, every core busy.", "",
            "| stream | workers | offered/s | answered/s | workers | broker | Redis | harness | other | machine "
            "| events/s at that cost |",
            "|---|---|---|---|---|---|---|---|---|---|---|", *rows]


def read_soak(results_dir: Path) -> dict[str, Any] | None:
    path = results_dir / "soak.json"
    return json.loads(path.read_text()) if path.is_file() else None


def soak_verdict(soak: dict[str, Any] | None) -> str:
    """Flat memory counts only from a worker that kept up to the end: one that died or
    stalled holds its memory flat too."""
    if soak is None:
        return "not run"
    behind = sum(soak.get("not_committed_at_end", {}).values())
    kept_up = soak.get("worker_alive", True) and not behind
    state = ("flat" if soak["flat"] else "not flat") if kept_up else (
        "not met: the worker " + ("died" if not soak.get("worker_alive", True) else f"left {behind:,} inputs uncommitted"))
    return (f"{state}: {soak['rss_second_fifth_median_mb']} → "
            f"{soak['rss_last_fifth_median_mb']} MB, {soak['slope_mb_per_min']} MB/min (`{soak['command']}`, below)")


def soak_caught_up(soak: dict[str, Any]) -> str:
    if "answered" in soak:  # soaks before the worker's group was read: outputs read back
        return f"answered {soak['answered']}"
    return (f"input records not committed by the worker's group {soak['caught_up_after_s']} s after the "
            f"offering stopped: {soak['not_committed_at_end']}")


def soak_section(soak: dict[str, Any] | None) -> list[str]:
    if soak is None:
        return ["## Soak", "", "Not run yet: `python -m bench.soak --minutes 10`.", ""]
    return [
        "## Soak: the worker's memory over a steady run", "",
        f"Date: {soak['date']}. Command: `{soak['command']}`. Offered {soak['offered']}; {soak_caught_up(soak)}.", "",
        "| worker RSS, with its model process | MB |", "|---|---|",
        f"| at the start | {soak['rss_start_mb']} |",
        f"| median over the second fifth of the run | {soak['rss_second_fifth_median_mb']} |",
        f"| median over the last fifth | {soak['rss_last_fifth_median_mb']} |",
        f"| largest | {soak['rss_max_mb']} |",
        f"| slope over the last four fifths | {soak['slope_mb_per_min']} MB/min |", "",
        f"Flat (last fifth within max(5 MB, 3 %) of the second, slope under 1 MB/min): **{'yes' if soak['flat'] else 'no'}**.", "",
    ]


def ort_section(results_dir: Path) -> list[str]:
    path = results_dir / "ort_options.json"
    header = ["## Inference choices, side by side", "",
              "`python -m bench.ort_options --write`: each graph alone on the CPU provider, one thread, "
              "batch 512, in one run (rows per second; the runtime's choice in bold).", ""]
    if not path.is_file():
        return header + ["Not run yet.", ""]
    r = json.loads(path.read_text())
    rows = [
        ("card encoder, SkipLayerNormFusion on (ONNX Runtime's default)", r["card_encoder_fused_per_s"], False),
        ("card encoder, SkipLayerNormFusion off", r["card_encoder_unfused_per_s"], True),
        ("next-item encoder at width 50, fusion on", r["item_encoder_width50_fused_per_s"], False),
        ("next-item encoder at width 50, fusion off", r["item_encoder_width50_unfused_per_s"], False),
        ("next-item encoder, the batch grouped by history length", r["item_encoder_by_length_per_s"], False),
        ("next-item encoder, grouped by length, int8 graph", r.get("item_encoder_by_length_int8_per_s"), True),
        ("ranker asked for the top 100", r["ranker_k100_per_s"], False),
        ("ranker asked for the top 10 (what is served), float32", r["ranker_k10_per_s"], False),
        ("ranker asked for the top 10, int8 graph", r.get("ranker_k10_int8_per_s"), True),
    ]
    table = ["| graph and option | rows/s |", "|---|---|"]
    table += [f"| {name} | {'**' if chosen else ''}{value:,}{'**' if chosen else ''} |"
              for name, value, chosen in rows if value is not None]  # a model without int8 graphs has no int8 rows
    if "next_item_int8_test" not in r:
        return header + table + [""]
    f32, i8 = r["next_item_float32_test"], r["next_item_int8_test"]
    return header + table + ["", f"The next-item model's int8 graphs (`models.recommend.quantize`) on the Beauty test split: "
                             f"HR@10 {i8['hr@10']} / NDCG@10 {i8['ndcg@10']} against {f32['hr@10']} / {f32['ndcg@10']} "
                             "in float32.", ""]


def gpu_section(results_dir: Path) -> list[str]:
    path = results_dir / "gpu.json"
    header = ["## GPU", "", "`bash bench/gpu.sh` on a machine with an NVIDIA GPU and onnxruntime-gpu: the inference",
              "stage on CPU (float32, and the next-item model's int8 graphs) and CUDA (float32, and the encoders in",
              "float16), with their accuracy against the CPU's float32; the engine's drains, and latency at fixed",
              "rates (`bench.load`), with the worker's models on each provider.", ""]
    if not path.is_file():
        return header + ["No GPU run recorded yet: no GPU machine was lent to the sessions that wrote this.", ""]
    gpu = json.loads(path.read_text())
    where = f" Machine: {gpu['machine']}, {gpu['date']}." if "machine" in gpu else ""
    where += (" Models: " + ", ".join(f"{name} {version}" for name, version in gpu["models"].items()) + "."
              if "models" in gpu else " Models: not recorded by this run.")
    rows = ["| provider | fp16 | int8 next-item graphs | measurement | per second |", "|---|---|---|---|---|"]
    for run in gpu["runs"]:
        variant = f"| {run['provider']} | {run['fp16']} | {run.get('int8', False)} |"
        for key, value in run.items():
            if key.endswith(tuple("0123456789")) and "per_s" in key:
                rows.append(f"{variant} {key} | {value:,} |")
        for key in ("max_fraud_difference_vs_cpu_fp32", "top10_unchanged_share_vs_cpu_fp32"):
            if key in run:
                rows.append(f"{variant} {key} | {run[key]:.4g} |")
    lines = header + [f"onnxruntime {gpu['onnxruntime']}, providers {gpu['available']}.{where}", ""] + rows + [""]
    if "engine" in gpu:
        lines += ["The engine (one worker, its models on the provider), a backlog of "
                  f"{gpu['engine_events']:,} events drained:", "",
                  "| provider | transactions/s | clicks/s |", "|---|---|---|"]
        lines += [f"| {provider} | {r['transactions_per_s']:,} | {r['clicks_per_s']:,} |" for provider, r in gpu["engine"].items()]
        lines.append("")
    loads = [(p.stem.split("-")[-1], json.loads(p.read_text())) for p in sorted(results_dir.glob("gpu-load-*.json"))]
    if loads:
        lines += ["Latency at fixed rates (`python -m bench.load`, STREAMER_MODELS_PROVIDER as shown):", "",
                  "| provider | kind | offered/s | achieved/s | p50 ms | p99 ms | max ms | lost | p99 < limit |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for provider, load in loads:
            for r in load["results"]:
                lines.append(f"| {provider} | {load['kind']} | {r['offered']:,.0f} | {r['achieved_send_rate']:,} | {r['p50_ms']} "
                             f"| {r['p99_ms']} | {r['max_ms']} | {r['lost']} | {'yes' if r['held'] else 'no'} |")
        lines.append("")
    return lines


if __name__ == "__main__":
    write_docs(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
