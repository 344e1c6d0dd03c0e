"""Popularity baseline under the same protocol: most frequent training items, history excluded.

``python -m models.recommend.baselines --data FILE`` prints HR@10 / NDCG@10 on the
leave-one-out test split (popularity counted on the training part only: every user's
sequence without its last two items).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from models.metrics import hit_rate_and_ndcg
from streamer.datasets import read_sequences

K = 10


def popularity(data: Path) -> dict[str, float]:
    sequences = [items for _, items in read_sequences(data)]
    counts = Counter(item for items in sequences for item in items[:-2])
    ranked = [item for item, _ in counts.most_common()]
    ranks = []
    for items in sequences:
        seen = set(items[:-1])
        top = [item for item in ranked[: K + len(seen)] if item not in seen][:K]
        ranks.append(top.index(items[-1]) if items[-1] in top else 10**9)
    hr, ndcg = hit_rate_and_ndcg(np.asarray(ranks), K)
    return {"hr@10": hr, "ndcg@10": ndcg, "users": len(ranks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps({"popularity": popularity(args.data)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
