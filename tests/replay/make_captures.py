"""Builds the small committed captures of the golden tests (run once; output is committed).

``python -m tests.replay.make_captures`` writes, under ``tests/replay/captures/``:

* ``fraud.jsonl.gz``: 20 days of synthetic card traffic on a few terminals (so the
  terminal windows, 7 days back, fill up), with every label released 7 days after its
  transaction, some compromised terminals and some large amounts, and three bad messages;
* ``clicks.jsonl.gz``: the first 40 users of ``tests/data/beauty_sample.txt`` as clicks,
  plus unknown items and two bad messages.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from streamer.events import Transaction, encode, format_time, label_to_json, transaction_to_json
from streamer.datasets import label_for, read_sequences
from streamer.replay.capture_file import CapturedRecord, CaptureWriter, read_capture, read_header
from streamer.replay.importers import import_sequences

HERE = Path(__file__).resolve().parent
T0 = 1530403200.0  # 2018-07-01T00:00:00Z
DAY = 86400.0


def fraud_capture(path: Path, seed: int = 3) -> None:
    rng = random.Random(seed)
    compromised = {"t3": (T0 + 4 * DAY, T0 + 12 * DAY)}
    records: list[CapturedRecord] = []
    ts = T0
    for n in range(400):
        ts += rng.uniform(0.02, 0.08) * DAY
        card, terminal = f"c{rng.randrange(20)}", f"t{rng.randrange(6)}"
        amount = round(rng.lognormvariate(3.6, 0.7), 2)
        window = compromised.get(terminal)
        fraud = amount > 220 or bool(window and window[0] <= ts < window[1])
        tx = Transaction(str(n), card, terminal, amount, ts, format_time(ts))
        records.append(CapturedRecord("transactions", 0, n, int(ts * 1000), card.encode(), encode(transaction_to_json(tx))))
        label = label_for(tx, fraud)
        records.append(CapturedRecord("fraud-labels", 0, n, int(label.labelled_ts * 1000), card.encode(), encode(label_to_json(label))))
    bad = [b"garbage", b'{"transaction_id": "b1"}', b'{"transaction_id": "b2", "card_id": "c1", "terminal_id": "t1", "amount": -5, "timestamp": "2018-07-02T00:00:00Z"}']
    for i, value in enumerate(bad):
        records.append(CapturedRecord("transactions", 0, 1000 + i, int((T0 + (i + 1) * DAY) * 1000), b"bad", value))
    records.sort(key=lambda r: r.timestamp)
    with CaptureWriter(path, {"builder": "tests/replay/make_captures.py", "seed": seed}, time.time()) as writer:
        writer.write_all(records)


def clicks_capture(path: Path) -> None:
    sample = HERE.parent / "data" / "beauty_sample.txt"
    trimmed = HERE / "captures" / "_users.txt"
    lines = [" ".join([u, *items]) for u, items in list(read_sequences(sample))[:40]]
    lines.append("9001 1 no-such-item 2")
    trimmed.write_text("\n".join(lines) + "\n")
    import_sequences(trimmed, path, step_s=30.0)
    trimmed.unlink()
    records = list(read_capture(path))
    middle = records[len(records) // 2].timestamp
    records += [
        CapturedRecord("clickstream", 0, 10_000, middle, b"u", b'{"event_id": "x", "user_id": "u", "item_id": "1", "timestamp": "2018-08-01T00:00:00Z", "event_type": "hover"}'),
        CapturedRecord("clickstream", 0, 10_001, middle, None, b"\xff\xfe not utf-8"),
    ]
    with CaptureWriter(path, read_header(path)["source"], time.time()) as writer:
        writer.write_all(records)


if __name__ == "__main__":
    fraud_capture(HERE / "captures" / "fraud.jsonl.gz")
    clicks_capture(HERE / "captures" / "clicks.jsonl.gz")
    print("wrote", *sorted(p.name for p in (HERE / "captures").iterdir()))
