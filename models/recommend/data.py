"""Sequence data for the next-item recommender: reading, leave-one-out splits, batching, metrics.

File format (Amazon 5-core as preprocessed by S3-Rec): one line per user, ``user_id item item ...``,
the items in time order. Item ids are opaque strings; when every item id is a positive integer written
without leading zeros (the published files), model index ``i`` is the item ``str(i)`` and the catalogue
has ``max(id)`` items, otherwise items get indices ``1..N`` in order of first appearance. Index 0 is
padding. The mapping is exported as ``items.txt`` (line ``i`` = item of model index ``i``).

Protocol (leave-one-out): for each user the last item is the test target, the second to last is the
validation target, everything before is training data. Ranking is over the whole catalogue, the
user's earlier items are excluded, and HR@10 / NDCG@10 are reported.

This module needs numpy only (no torch) so that the ONNX Runtime evaluation can use it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.provenance import file_sha256

PAD = 0


@dataclass
class SequenceData:
    """All users' item sequences of one file, as model indices (``1..num_items``)."""

    path: Path
    users: list[str]
    sequences: list[np.ndarray]
    items: list[str]
    sha256: str

    @property
    def name(self) -> str:
        """The file name without its extension (e.g. ``Beauty``)."""
        return self.path.stem

    @property
    def num_items(self) -> int:
        """Number of catalogue items (model indices run from 1 to this, 0 is padding)."""
        return len(self.items)


def _is_canonical_int(token: str) -> bool:
    return token.isdigit() and token[0] != "0"


def read_sequences(path: Path | str, items: Sequence[str] | None = None) -> SequenceData:
    """Read a ``user item item ...`` file.

    ``items`` is an existing catalogue (model index ``i`` = ``items[i - 1]``), e.g. an exported
    model's ``items.txt``; items not in it are dropped from the sequences. Without it the catalogue is
    built from the file (see the module docstring).
    """
    path = Path(path)
    users: list[str] = []
    raw: list[list[str]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            users.append(parts[0])
            raw.append(parts[1:])
    if items is None:
        tokens = {t for seq in raw for t in seq}
        if tokens and all(_is_canonical_int(t) for t in tokens):
            items = [str(i) for i in range(1, max(int(t) for t in tokens) + 1)]
        else:
            seen: dict[str, None] = {}
            for seq in raw:
                for t in seq:
                    seen.setdefault(t, None)
            items = list(seen)
    index = {item: i + 1 for i, item in enumerate(items)}
    sequences = [np.array([index[t] for t in seq if t in index], dtype=np.int64) for seq in raw]
    return SequenceData(path, users, sequences, list(items), file_sha256(path))


def read_items(path: Path | str) -> list[str]:
    """Read an ``items.txt`` catalogue (one item id per line, line 1 = model index 1)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def train_sequences(sequences: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The training part of each sequence: everything except the last two items."""
    return [s[:-2] for s in sequences]


def split(sequences: Sequence[np.ndarray], which: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Evaluation examples of a split: ``(histories, targets, user_rows)``.

    ``valid``: history = all but the last two items, target = the second to last.
    ``test``: history = all but the last item, target = the last.
    Users whose history would be empty are left out; ``user_rows`` are the kept rows.
    """
    cut = {"valid": 2, "test": 1}[which]
    rows = [u for u, s in enumerate(sequences) if len(s) > cut]
    histories = [sequences[u][:-cut] for u in rows]
    targets = np.array([sequences[u][-cut] for u in rows], dtype=np.int64)
    return histories, targets, np.array(rows, dtype=np.int64)


def left_pad(sequences: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Stack the last ``length`` items of each sequence, left-padded with 0 (most recent item last)."""
    out = np.zeros((len(sequences), length), dtype=np.int64)
    for r, s in enumerate(sequences):
        s = s[-length:]
        if len(s):
            out[r, length - len(s):] = s
    return out


def right_pad(sequences: Sequence[np.ndarray], min_width: int = 1) -> np.ndarray:
    """Stack sequences of any length, padded on the right with 0 (used for the ranker's ``exclude``)."""
    width = max([min_width] + [len(s) for s in sequences])
    out = np.zeros((len(sequences), width), dtype=np.int64)
    for r, s in enumerate(sequences):
        out[r, : len(s)] = s
    return out


def popularity(sequences: Sequence[np.ndarray], num_items: int) -> np.ndarray:
    """Interaction counts per model index (length ``num_items + 1``, index 0 stays 0)."""
    counts = np.zeros(num_items + 1, dtype=np.int64)
    for s in sequences:
        np.add.at(counts, s, 1)
    counts[PAD] = 0
    return counts


def bucket_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                   bucket: int = 16) -> Iterator[np.ndarray]:
    """Shuffled mini-batches of row indices, rows of similar length grouped together.

    The rows are shuffled, cut into chunks of ``bucket`` batches, sorted by length within a chunk and
    cut into batches; the batch order is shuffled again. Less padding, still random batches.
    """
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    chunk = batch_size * bucket
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    for b in rng.permutation(len(batches)):
        yield batches[b]


def count_batches(n: int, batch_size: int, bucket: int = 16) -> int:
    """Number of batches :func:`bucket_batches` yields for ``n`` rows."""
    chunk = batch_size * bucket
    return sum(-(-min(chunk, n - start) // batch_size) for start in range(0, n, chunk))


def next_item_batch(sequences: Sequence[np.ndarray], rows: np.ndarray,
                    max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Causal next-item training batch: inputs ``s[:-1]``, targets ``s[1:]``, left-padded with 0.

    Only the last ``max_len + 1`` items of each sequence are used; the width is the longest row.
    """
    seqs = [sequences[r][-(max_len + 1):] for r in rows]
    width = max(1, max(len(s) for s in seqs) - 1)
    inputs = left_pad([s[:-1] for s in seqs], width)
    targets = left_pad([s[1:] for s in seqs], width)
    return inputs, targets


def masked_item_batch(sequences: Sequence[np.ndarray], rows: np.ndarray, max_len: int,
                      mask_id: int, mask_prob: float,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Masked item modelling batch (BERT4Rec/Cloze): some items replaced by ``mask_id``.

    Returns ``(inputs, targets)``; ``targets`` holds the original item where masked, 0 elsewhere.
    Each non-empty row gets at least one masked item.
    """
    seqs = [sequences[r][-max_len:] for r in rows]
    width = max(1, max(len(s) for s in seqs))
    items = left_pad(seqs, width)
    real = items != PAD
    masked = (rng.random(items.shape) < mask_prob) & real
    # Guarantee one masked position per row: pick a random real position where none was drawn.
    n_real = real.sum(1)
    need = (masked.sum(1) == 0) & (n_real > 0)
    if need.any():
        pick = width - 1 - (rng.random(need.sum()) * n_real[need]).astype(np.int64)
        masked[np.nonzero(need)[0], pick] = True
    inputs = np.where(masked, mask_id, items)
    targets = np.where(masked, items, PAD)
    return inputs, targets


def rank_metrics(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k from 0-based ranks of the targets (a rank ``>= k`` or -1 means a miss)."""
    ranks = np.asarray(ranks)
    hit = (ranks >= 0) & (ranks < k)
    ndcg = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0) + 2.0), 0.0)
    n = max(1, len(ranks))
    return {f"hr@{k}": float(hit.sum() / n), f"ndcg@{k}": float(ndcg.sum() / n), "users": int(len(ranks))}
