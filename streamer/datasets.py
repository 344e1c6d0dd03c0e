"""Readers for the benchmark data files, as the engine's own event records.

Used by the demo (to play real traffic), by training and by the importers. The data
lives outside the repository (``../shared/data``); nothing here downloads anything.

* Fraud Detection Handbook CSV: ``TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID,
  TERMINAL_ID, TX_AMOUNT, …, TX_FRAUD`` → ``Transaction`` plus its label, released
  ``label_delay_days`` after the transaction (7 days in the book's protocol).
* Interaction sequences (``user item item …`` per line) → item-id lists.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from streamer.events import FraudLabel, Transaction, format_time

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FRAUD_CSV = SHARED_DATA / "fraud" / "transactions_2018-04-01_2018-07-31.csv.gz"
BEAUTY = SHARED_DATA / "rec" / "Beauty.txt"


def read_fraud_csv(path: Path, limit: int | None = None) -> Iterator[tuple[Transaction, bool]]:
    """Transactions in file order (sorted by time) with their fraud flag."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        for n, row in enumerate(csv.DictReader(handle)):
            if limit is not None and n >= limit:
                return
            moment = datetime.fromisoformat(row["TX_DATETIME"]).replace(tzinfo=timezone.utc)
            ts = moment.timestamp()
            tx = Transaction(
                transaction_id=row["TRANSACTION_ID"],
                card_id=row["CUSTOMER_ID"],
                terminal_id=row["TERMINAL_ID"],
                amount=float(row["TX_AMOUNT"]),
                ts=ts,
                timestamp=format_time(ts),
            )
            yield tx, row["TX_FRAUD"] == "1"


def label_for(tx: Transaction, is_fraud: bool, delay_days: float = 7.0) -> FraudLabel:
    return FraudLabel(
        transaction_id=tx.transaction_id,
        card_id=tx.card_id,
        terminal_id=tx.terminal_id,
        ts=tx.ts,
        is_fraud=is_fraud,
        labelled_ts=tx.ts + delay_days * 86400.0,
    )


def read_sequences(path: Path) -> Iterator[tuple[str, list[str]]]:
    """``(user_id, [item_id, …])`` per line, items in interaction order."""
    with open(path) as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 2:
                yield parts[0], parts[1:]
