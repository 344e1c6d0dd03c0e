"""The ``streamer`` command: worker, demo, training and evaluation.

Sub-commands import what they need lazily, so ``streamer worker`` never imports
torch, and ``streamer train`` works without a broker.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from streamer.settings import Settings


def _worker(args: argparse.Namespace) -> int:
    from streamer.worker.main import run_worker

    settings = Settings.from_env()
    if args.partitions:
        settings = settings.replace(kafka={"partitions": args.partitions})
    run_worker(settings, loglevel=args.loglevel)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from streamer.demo.run import run_demo

    return run_demo(Settings.from_env(), duration_s=args.duration, rate=args.rate, data_dir=args.data)


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    if args.model == "fraud":
        from models.fraud.train import main as train_fraud

        return train_fraud(rest)
    from models.recommend.train import main as train_recommend

    return train_recommend(rest)


def _evaluate(args: argparse.Namespace, rest: list[str]) -> int:
    if args.model == "recommend":
        from models.recommend.stream_eval import main as evaluate_recommend

        return evaluate_recommend(rest)
    from models.fraud.stream_eval import main as evaluate_fraud

    return evaluate_fraud(rest)


def _time_ms(text: str) -> int:
    """An RFC 3339 time given on the command line, in epoch milliseconds."""
    from streamer.errors import InvalidEvent
    from streamer.events import parse_time

    try:
        return int(parse_time(text) * 1000)
    except InvalidEvent as exc:
        raise argparse.ArgumentTypeError(exc.detail) from exc


def _rename(text: str) -> tuple[str, str]:
    old, equals, new = text.partition("=")
    if not (old and equals and new):
        raise argparse.ArgumentTypeError(f"{text!r} is not OLD=NEW")
    return old, new


def _capture(args: argparse.Namespace) -> int:
    import asyncio

    from streamer.replay.capture import CaptureBounds, capture

    bounds = CaptureBounds(args.from_offset, args.from_time, args.to_time, args.count, args.follow)
    partitions = [int(p) for p in args.partitions.split(",")] if args.partitions else None
    topics = [t for t in args.topics.split(",") if t]
    servers = args.bootstrap_servers or Settings.from_env().kafka.bootstrap_servers
    asyncio.run(capture(servers, topics, args.out, partitions=partitions, bounds=bounds, progress=print))
    return 0


def _replay(args: argparse.Namespace) -> int:
    import asyncio
    import json

    settings = Settings.from_env()
    if args.offline:
        from streamer.replay.offline import Outputs, run_offline

        records = asyncio.run(run_offline(args.captures, settings, batch_size=args.batch_size))
        outputs = Outputs.collect(((r.topic, r.key, r.value, r.headers) for r in records), settings)
        summary = {k: len(v) for k, v in vars(outputs).items()}
        print(f"offline replay: {summary}")
        if args.expected_out:
            args.expected_out.write_text(json.dumps(outputs.to_json(), indent=1, sort_keys=True) + "\n")
            print(f"wrote {args.expected_out}")
        return 0
    from streamer.replay.replay import replay

    rename = dict(args.rename)
    servers = args.bootstrap_servers or settings.kafka.bootstrap_servers
    lead = [t for t in args.lead.split(",") if t] if args.lead is not None else [settings.topics.fraud_labels]
    asyncio.run(replay(servers, args.captures, rename=rename, speed=args.speed, progress=print,
                       create_partitions=settings.kafka.partitions, lead=lead, pace_step_s=args.pace_step_ms / 1000.0))
    return 0


def _import(args: argparse.Namespace) -> int:
    from streamer.replay.importers import import_fraud, import_sequences

    topics = Settings.from_env().topics
    if args.kind == "fraud":
        start, end = args.start, args.end
        count = import_fraud(args.data, args.out, topics=topics, delay_days=args.label_delay_days,
                             start_ts=None if start is None else start / 1000, end_ts=None if end is None else end / 1000,
                             limit=args.limit)
    else:
        start = 1533081600000 if args.start is None else args.start  # the epoch itself is a start too
        count = import_sequences(args.data, args.out, topics=topics, start_ts=start / 1000, step_s=args.step_s,
                                 hold_out=args.hold_out, limit_users=args.limit)
    print(f"wrote {count:,} records to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description="Real-time fraud scoring and next-item ranking.")
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run the Faust worker (settings from STREAMER_* variables)")
    worker.add_argument("--partitions", type=int, default=None, help="partitions of topics it creates")
    worker.add_argument("-l", "--loglevel", default="info")
    worker.set_defaults(handler=_worker)

    demo = commands.add_parser("demo", help="embedded broker + Redis + worker + live events on screen")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--rate", type=float, default=1000.0, help="events per second to play")
    demo.add_argument("--data", type=Path, default=None, help="benchmark data folder (default ../shared/data)")
    demo.set_defaults(handler=_demo)

    cap = commands.add_parser("capture", help="read topics between bounds into a capture file")
    cap.add_argument("--topics", required=True, help="comma-separated topic names")
    cap.add_argument("--out", type=Path, required=True, help="capture file (.jsonl.gz)")
    cap.add_argument("--partitions", default=None, help="comma-separated partitions (default: all)")
    cap.add_argument("--from-offset", type=int, default=None, help="start offset in every partition")
    cap.add_argument("--from-time", default=None, type=_time_ms, metavar="TIME", help="skip records before this RFC 3339 time")
    cap.add_argument("--to-time", default=None, type=_time_ms, metavar="TIME", help="stop each partition at this RFC 3339 time")
    cap.add_argument("--count", type=int, default=None, help="stop after this many records")
    cap.add_argument("--follow", action="store_true", help="keep reading past the end seen at the start")
    cap.add_argument("--bootstrap-servers", default=None, help="default: STREAMER_KAFKA_BOOTSTRAP_SERVERS")
    cap.set_defaults(handler=_capture)

    rep = commands.add_parser("replay", help="write captures back into topics (or run them offline)")
    rep.add_argument("captures", type=Path, nargs="+")
    rep.add_argument("--speed", type=float, default=0.0, help="pace by timestamps times this factor (0: as fast as possible)")
    rep.add_argument("--rename", action="append", default=[], type=_rename, metavar="OLD=NEW",
                     help="write topic OLD into NEW")
    rep.add_argument("--pace-step-ms", type=float, default=500.0,
                     help="paced: send what is due within this much wall time as one chunk")
    rep.add_argument("--lead", default=None, metavar="TOPICS",
                     help="captured topics written first within each chunk (default: STREAMER_TOPICS_FRAUD_LABELS)")
    rep.add_argument("--bootstrap-servers", default=None, help="default: STREAMER_KAFKA_BOOTSTRAP_SERVERS")
    rep.add_argument("--offline", action="store_true", help="run the pipeline over the captures, no broker")
    rep.add_argument("--batch-size", type=int, default=256, help="offline micro-batch size")
    rep.add_argument("--expected-out", type=Path, default=None, help="offline: write the outputs as JSON (golden file)")
    rep.set_defaults(handler=_replay)

    imp = commands.add_parser("import", help="turn benchmark data into a capture file")
    imp.add_argument("kind", choices=["fraud", "sequences"])
    imp.add_argument("--data", type=Path, required=True, help="handbook CSV(.gz) or a sequence file")
    imp.add_argument("--out", type=Path, required=True)
    imp.add_argument("--label-delay-days", type=float, default=7.0, help="fraud: label release delay")
    imp.add_argument("--start", default=None, type=_time_ms, metavar="TIME", help="fraud: first transaction time; sequences: first click time")
    imp.add_argument("--end", default=None, type=_time_ms, metavar="TIME", help="fraud: transactions before this time only")
    imp.add_argument("--limit", type=int, default=None, help="fraud: transactions; sequences: users")
    imp.add_argument("--step-s", type=float, default=60.0, help="sequences: seconds between clicks")
    imp.add_argument("--hold-out", type=int, default=0, help="sequences: drop each user's last N items")
    imp.set_defaults(handler=_import)

    train = commands.add_parser("train", help="train a model: streamer train {fraud,recommend} [options]")
    train.add_argument("model", choices=["fraud", "recommend"])
    train.set_defaults(handler=_train, passthrough=True)

    evaluate = commands.add_parser("evaluate", help="evaluate a model: streamer evaluate {fraud,recommend} [options]")
    evaluate.add_argument("model", choices=["fraud", "recommend"])
    evaluate.set_defaults(handler=_evaluate, passthrough=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        return int(args.handler(args, rest))
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
