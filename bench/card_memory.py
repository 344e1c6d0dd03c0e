"""What a card held in a worker's card cache takes, ``python -m bench.card_memory``.

Builds ``--cards`` card states the way a worker holds them (``CardState``: a month of
transactions in the card's history, and its latest ``CARD_ROWS_CAP`` feature rows, added
one by one as a worker stores them) and prints the Python heap they take per card
(``tracemalloc``), as one JSON object. This sizes ``STREAMER_REDIS_CARD_CACHE``: a
worker holding that many cards takes about that many times this.

The card is synthetic, from the data's shape: ``--transactions`` in its history (80: a
month and the prune grace at about two a day), ids of 15 characters, and rows of
``ROW_WIDTH`` float32; a row shares its event time and id with the history's entry, as
when the worker computed it.
"""

from __future__ import annotations

import argparse
import json
import tracemalloc

import numpy as np

from streamer.features.fraud import CardHistory
from streamer.state.interface import CARD_ROWS_CAP, ROW_WIDTH, CardState

T0 = 1533081600.0


def card(number: int, transactions: int, rows: int) -> CardState:
    """A card with ``transactions`` in its history and the rows of its latest ``rows``."""
    ids = [f"{number:06d}-{i:08d}" for i in range(transactions)]
    times = [T0 + i * 40000.0 for i in range(transactions)]
    state = CardState(CardHistory.of((times[i], ids[i], 50.0 + i) for i in range(transactions)))
    for i in range(max(transactions - rows, 0), transactions):
        state.add_row(times[i], ids[i], np.full(ROW_WIDTH, i, dtype=np.float32).tobytes(), CARD_ROWS_CAP)
    return state


def measure(cards: int, transactions: int, rows: int = CARD_ROWS_CAP) -> dict[str, float]:
    tracemalloc.start()
    try:
        held = [card(number, transactions, rows) for number in range(cards)]
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"cards": len(held), "transactions": transactions, "rows": min(rows, transactions),
            "kb_per_card": round(size / cards / 1024, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.card_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--cards", type=int, default=2000)
    parser.add_argument("--transactions", type=int, default=80)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.cards, args.transactions)))


if __name__ == "__main__":
    main()
