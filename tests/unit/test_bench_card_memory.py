"""``bench.card_memory``: the card it measures is held as a worker holds one."""

from __future__ import annotations

from bench.card_memory import card, measure
from streamer.state.interface import CARD_ROWS_CAP, ROW_BYTES


def test_the_measured_card_holds_its_history_and_its_latest_rows() -> None:
    state = card(7, transactions=80, rows=CARD_ROWS_CAP)
    assert len(state.history.times) == 80 and state.history.ids[0] == "000007-00000000"
    assert state.row_ids == state.history.ids[-CARD_ROWS_CAP:]
    assert len(state.joined) == CARD_ROWS_CAP * ROW_BYTES


def test_a_card_with_more_transactions_takes_more() -> None:
    small, large = measure(200, 10), measure(200, 80)
    assert 0 < small["kb_per_card"] < large["kb_per_card"]
    assert large["rows"] == CARD_ROWS_CAP and small["rows"] == 10
