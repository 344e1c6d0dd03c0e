"""The embedded broker's CPU at a steady rate as a partition fills up.

``python -m bench.broker_growth [--seconds 30] [--rate 2000] [--batch 20]`` starts an
embedded Tansu broker and produces ``rate`` records/s (``batch`` records per record
batch) to one partition, first with no consumer, then on a fresh topic with one
consumer reading as the records arrive. It prints the broker's CPU, in % of a core,
every 5 s, against the records the partition holds. Prints one JSON object.

On this machine the broker's CPU with the consumer grows with the partition's length
(without it, it stays flat): a latency run that offers rate after rate on the same
topics would make each rate pay for the records of those before it, so ``bench.run``
gives each rate topics of its own. Real Kafka finds an offset through its index, so
this is a property of the test broker, not of the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer.embedded import EmbeddedBroker

RECORD = b"x" * 100


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after "(command)"
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def steady(bootstrap: str, broker_pid: int, topic: str, consume: bool, seconds: float, rate: float,
                 batch: int) -> list[dict[str, float]]:
    """Broker CPU per 5 s window while ``rate`` records/s go to one partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    await producer.send_and_wait(topic, RECORD, partition=0)  # creates the topic
    consumer = reader = None
    received = 0
    if consume:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=5,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()

        async def read() -> None:
            nonlocal received
            while True:
                fetched = await consumer.getmany(timeout_ms=50)  # type: ignore[union-attr]
                received += sum(len(records) for records in fetched.values())

        reader = asyncio.create_task(read())
    windows = []
    sent = 1
    started = window_start = time.monotonic()
    cpu_start = cpu_seconds(broker_pid)
    try:
        while time.monotonic() - started < seconds:
            records = producer.create_batch()
            for _ in range(batch):
                records.append(key=None, value=RECORD, timestamp=None)
            records.close()
            await (await producer.send_batch(records, topic, partition=0))
            sent += batch
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
            if time.monotonic() - window_start >= 5.0:
                now, cpu = time.monotonic(), cpu_seconds(broker_pid)
                windows.append({"held": sent, "read": received, "broker_cpu_pct": round(100 * (cpu - cpu_start) / (now - window_start))})
                window_start, cpu_start = now, cpu
    finally:
        if reader is not None:
            reader.cancel()
        if consumer is not None:
            await consumer.stop()
        await producer.stop()
    return windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_growth", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="records per second")
    parser.add_argument("--batch", type=int, default=20, help="records per record batch")
    args = parser.parse_args(argv)
    with EmbeddedBroker() as broker:
        pid = broker.pid
        assert pid is not None  # it runs inside the block
        results = {
            "rate": args.rate, "batch": args.batch,
            **{name: asyncio.run(steady(broker.bootstrap_servers, pid, f"growth-{name}", consume,
                                        args.seconds, args.rate, args.batch))
               for name, consume in (("no_consumer", False), ("one_consumer", True))},
        }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
