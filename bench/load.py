"""A load run at stated rates, ``python -m bench.load``: latency read from the output topics.

The suite (``bench.run``) offers a fixed ladder of rates. This offers the rates you ask
for, to one ``streamer worker`` (or ``--workers`` of them in one consumer group), each
rate on topics and workers of its own with the state kept from the rates before (as the
suite does), for ``--seconds`` each, and prints per rate: the rate the producer achieved,
p50 / p99 / max from each input record's timestamp to its output record being readable
(``bench.readable``; the outputs read back from the output topic), how far the producer
fell behind its schedule, the inputs with no output, whether p99 stayed below
``--p99-ms`` (over the whole run and over its last 10 s: ``verdict``), p99 over each 10 s
of the offering (``bench.run.latency_windows``: whether it held or climbed as a backlog
grew), and where the machine's CPU went meanwhile (``bench.cpu``: the workers, the
broker, Redis, the producer, the rest)::

    python -m bench.load transactions 15000
    python -m bench.load clicks 4000 8000 --seconds 30
    python -m bench.load transactions 8000 --workers 2
    python -m bench.load transactions 15000 --workers 2 --steady
    python -m bench.load clicks 8000 --jobs fraud,recommend

It uses the embedded broker and the Redis at ``STREAMER_REDIS_URL`` (else an embedded
Valkey), like the suite, and the worker's settings from the ``STREAMER_*`` environment,
except its jobs: by default each worker runs the job of the events offered alone
(``fraud`` or ``recommend``, as the suite), ``--jobs`` says otherwise; and as many
workers as the machine has cores run their models on their event loops, as in the suite
(``bench.run.for_workers``), unless ``STREAMER_MODELS_THREAD`` or
``STREAMER_MODELS_PROCESS`` is set.
The exit status is 0 when every rate held (``verdict``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from bench.cpu import cpu_line
from bench.run import (LATENCY_WINDOW_S, ROOT, Message, clicks, events_offered, for_kind, for_workers, latency,
                       local_services, models_beside_the_loop, steady_transactions, transactions)
from streamer.events import FraudLabel, Transaction
from streamer.settings import Settings

FEEDS = {"transactions": transactions, "clicks": clicks}


def verdict(result: dict[str, Any], p99_ms: float) -> bool:
    """Whether a rate held: p99 below the limit over the whole run and over its last
    window (``latency_windows``), every input answered, and the producer offering at
    least 95 % of the rate asked (else the run measured the producer). A whole run's p99
    can pass while its last seconds climbed past the limit, a backlog that would go on
    growing: that rate was not sustained."""
    last = (result.get("windows") or [result])[-1]  # a result without windows: the whole run
    return (result["p99_ms"] is not None and result["p99_ms"] < p99_ms and last.get("p99_ms", p99_ms) < p99_ms
            and result["lost"] == 0 and result["achieved_send_rate"] >= 0.95 * result["offered"])


def window_cell(window: dict[str, Any]) -> str:
    """One of ``bench.run.latency_windows`` as ``bench.load`` prints it."""
    p99 = f"{window['p99_ms']:g}" if "p99_ms" in window else "-"
    return p99 + (f" ({window['lost']:,} lost)" if window["lost"] else "")


def load_run(base: Settings, kind: str, messages: list[Message], rates: list[float], seconds: float, p99_ms: float,
             log: Path, workers: int = 1, broker_pid: int | None = None, jobs: str | None = None,
             history: tuple[list[Transaction], list[FraudLabel]] | None = None) -> list[dict[str, Any]]:
    """``bench.run.latency`` at ``rates`` with ``workers`` worker processes running
    ``jobs`` (by default the job of ``kind``), from ``messages`` (``history`` stored
    first), each result with ``held`` (``verdict``)."""
    needed = events_offered(rates, seconds)
    if len(messages) < needed:
        raise SystemExit(f"{kind}: {needed:,} events needed, the feed holds {len(messages):,}: offer fewer seconds")
    results = latency(base, kind, messages, rates, seconds, log, workers, broker_pid, jobs=jobs, history=history)
    for result in results:
        result["held"] = verdict(result, p99_ms)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=sorted(FEEDS))
    parser.add_argument("rates", type=float, nargs="+", help="offered events per second, one run each")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each rate is offered")
    parser.add_argument("--p99-ms", type=float, default=100.0, help="the latency a rate must keep its p99 below")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the consumer group")
    parser.add_argument("--jobs", default=None,
                        help="the workers' STREAMER_WORKER_JOBS (default: the kind's job alone, fraud or recommend)")
    parser.add_argument("--steady", action="store_true",
                        help="transactions from day 40 of the data, the 37 days before and the labels known by then "
                             "stored first (the state of a deployment that has run for a month)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args(argv)
    if args.steady and args.kind != "transactions":
        parser.error("--steady is for transactions")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        broker, base = local_services(stack)
        history: tuple[list[Transaction], list[FraudLabel]] | None = None
        if args.steady:
            stored, labels, messages = steady_transactions(events_offered(args.rates, args.seconds))
            history = (stored, labels)
        else:
            messages = FEEDS[args.kind](events_offered(args.rates, args.seconds))
        results = load_run(base, args.kind, messages, args.rates, args.seconds, args.p99_ms,
                           args.out.parent / "load-worker.log", args.workers, broker.pid, args.jobs, history)
        # what the workers ran, and where they ran their models (``latency`` sets the same)
        jobs = for_kind(base, args.kind, args.jobs).worker.jobs
        models = models_beside_the_loop(for_workers(base, args.workers))
    args.out.write_text(json.dumps({"kind": args.kind, "steady": args.steady, "seconds": args.seconds, "p99_limit_ms": args.p99_ms,
                                    "workers": args.workers, "jobs": jobs, "models_beside_the_loop": models,
                                    "results": results}, indent=2) + "\n")
    print(f"{'offered/s':>10} {'achieved/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'lost':>6}  p99 < {args.p99_ms:g} ms to the end")
    for r in results:
        print(f"{r['offered']:>10,.0f} {r['achieved_send_rate']:>10,.0f} {r['p50_ms']!s:>8} {r['p99_ms']!s:>8} {r['max_ms']!s:>8} "
              f"{r['lost']:>6}  {'yes' if r['held'] else 'no'}")
    print("\nThe same to the outputs' own timestamps (set by the workers before sending), and how far the "
          "producer fell behind its schedule, p99 / max ms:")
    for r in results:
        stamped, behind = r["to_output_stamps"], r["behind_schedule_ms"]
        print(f"{r['offered']:>10,.0f}/s: p50 {stamped['p50_ms']}, p99 {stamped['p99_ms']}, max {stamped['max_ms']}; "
              f"behind {behind['p99_ms']} / {behind['max_ms']}")
    print(f"\np99 ms of the inputs sent in each {LATENCY_WINDOW_S:g} s of the offering (and inputs lost, if any):")
    for r in results:
        print(f"{r['offered']:>10,.0f}/s: " + ", ".join(window_cell(w) for w in r["windows"]))
    print("\nCPU while each rate was offered, cores (µs per event answered):")
    for r in results:
        cpu = r["cpu"]
        print(f"{r['offered']:>10,.0f}/s, {cpu['answered_per_s']:,}/s answered: {cpu_line(cpu)}")
    return 0 if all(r["held"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
