"""The ``streamer`` command: worker, demo, training and evaluation.

Sub-commands import what they need lazily, so ``streamer worker`` never imports
torch, and ``streamer train`` works without a broker.
"""

from __future__ import annotations

import argparse
import logging
import sys
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
        from models.recommend.evaluate import main as evaluate_recommend

        return evaluate_recommend(rest)
    print("streamer evaluate fraud: not implemented yet (see issue 4)", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description="Real-time fraud scoring and next-item ranking.")
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run the Faust worker (settings from STREAMER_* variables)")
    worker.add_argument("--partitions", type=int, default=None, help="partitions of topics it creates")
    worker.add_argument("-l", "--loglevel", default="info")
    worker.set_defaults(handler=_worker)

    demo = commands.add_parser("demo", help="embedded broker + Redis + worker + live events on screen")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--rate", type=float, default=200.0, help="events per second to play")
    demo.add_argument("--data", type=Path, default=None, help="benchmark data folder (default ../shared/data)")
    demo.set_defaults(handler=_demo)

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
