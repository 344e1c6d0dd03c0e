"""The benchmark data readers, on small files written here."""

from __future__ import annotations

import gzip
from pathlib import Path

from streamer.datasets import read_fraud_csv, rfc3339
from streamer.events import format_time, parse_time


def test_the_fraud_file_is_read_by_its_headers_names_in_any_column_order(tmp_path: Path) -> None:
    path = tmp_path / "transactions.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("TX_FRAUD,TX_AMOUNT,TERMINAL_ID,CUSTOMER_ID,TX_DATETIME,TRANSACTION_ID,TX_FRAUD_SCENARIO\n"
                     "0,57.16,3156,596,2018-04-01 00:00:31,0,0\n"
                     "1,81.51,3412,4961,2018-04-01 00:02:10,1,2\n"
                     "0,3.00,1,2,2018-04-01 00:02:11,2,0\n")
    read = list(read_fraud_csv(path))
    assert [(tx.transaction_id, tx.card_id, tx.terminal_id, tx.amount, tx.timestamp, fraud) for tx, fraud in read] == [
        ("0", "596", "3156", 57.16, "2018-04-01T00:00:31Z", False),
        ("1", "4961", "3412", 81.51, "2018-04-01T00:02:10Z", True),
        ("2", "2", "1", 3.0, "2018-04-01T00:02:11Z", False)]
    assert [tx.ts for tx, _ in read] == [parse_time(tx.timestamp) for tx, _ in read]
    assert len(list(read_fraud_csv(path, limit=2))) == 2


def test_an_empty_fraud_file_has_no_transactions(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert list(read_fraud_csv(path)) == []


def test_times_in_the_files_form_are_written_as_the_events_write_them_and_others_formatted() -> None:
    whole = parse_time("2018-04-01T00:00:31Z")
    assert rfc3339("2018-04-01 00:00:31", whole) == format_time(whole) == "2018-04-01T00:00:31Z"
    fraction = whole + 0.25
    assert rfc3339("2018-04-01 00:00:31.250", fraction) == format_time(fraction) == "2018-04-01T00:00:31.250Z"
