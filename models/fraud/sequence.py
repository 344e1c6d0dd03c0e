"""The fraud transformer: a card's recent transactions, pre-trained, then fine-tuned.

Each transaction is a row of 16 raw fields: the 15 online features of
``streamer.features.fraud`` and the seconds since the card's previous transaction
(``SEQUENCE_FIELDS``). The model has two parts, exported as two ONNX graphs:

* the **card encoder** (``encoder.onnx``): the card's last ``max_len`` rows (oldest
  first, left-padded) → a card embedding. A ``transformers`` BertModel reads the rows
  and a learned summary token placed after them; the summary token's output is the
  embedding. The engine encodes, for each transaction, the card's rows before it.
* the **scorer** (``scorer.onnx``): the embedding, the new transaction's own row and the
  fraud probability of gradient-boosted trees over its 15 features (``trees.onnx``,
  ``models.fraud.gbt``: trees place the simulator's sharp thresholds exactly, which a
  network only approximates) → the fraud probability. ``use_sequence=False`` and
  ``use_trees=False`` are the ablations without the sequence and without the trees.

Self-supervised pre-training (``pretrain``) masks fields of the card's rows (single
cells, and whole rows) and reconstructs them from the rest of the sequence; no label
is used. Fine-tuning (``finetune``) trains encoder and scorer together on the labels.
Raw fields are normalised inside the model (log1p of the non-negative magnitudes,
then standardised with training statistics), so the graphs take the engine's values
as they are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import BertConfig, BertModel

from streamer.features.fraud import FEATURE_NAMES, NO_PREVIOUS, ROW_FIELDS

SEQUENCE_FIELDS = ROW_FIELDS
FIELDS = len(SEQUENCE_FIELDS)
_BINARY = (1, 2)  # weekend, night: kept as 0/1
#: The amount once more, as a piecewise-linear encoding over bins cut at these quantiles of
#: the training amounts (Gorishniy et al., 2022: lets a network place sharp thresholds, as
#: trees do; the simulator's frauds include every amount above a fixed level).
AMOUNT_QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 1.0)
INPUTS = FIELDS + 1 + len(AMOUNT_QUANTILES)  # the fields, the amount on a linear scale, its bins
AMOUNT_INPUTS = [0, *range(FIELDS, INPUTS)]  # everything derived from the amount


@dataclass
class SequenceConfig:
    max_len: int = 16
    hidden: int = 32
    layers: int = 1
    heads: int = 2
    dropout: float = 0.1
    use_sequence: bool = True
    use_trees: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class FraudSequenceModel(nn.Module):
    knots: torch.Tensor  # buffers
    mean: torch.Tensor
    std: torch.Tensor
    log_fields: torch.Tensor

    def __init__(self, cfg: SequenceConfig, mean: np.ndarray, std: np.ndarray, knots: np.ndarray) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("knots", torch.as_tensor(knots, dtype=torch.float32))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        log_fields = torch.ones(FIELDS)
        log_fields[list(_BINARY)] = 0.0
        self.register_buffer("log_fields", log_fields)
        d = cfg.hidden
        self.row_in = nn.Linear(2 * INPUTS, d)
        self.summary = nn.Parameter(torch.randn(d) * 0.02)
        self.bert = BertModel(
            BertConfig(
                vocab_size=1, hidden_size=d, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                intermediate_size=4 * d, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                max_position_embeddings=cfg.max_len + 1, type_vocab_size=1,
            ),
            add_pooling_layer=False,
        )
        self.reconstruct = nn.Linear(d, INPUTS)
        width = INPUTS + (d if cfg.use_sequence else 0) + (1 if cfg.use_trees else 0)
        self.head = nn.Sequential(
            nn.Linear(width, 64), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
        )

    @staticmethod
    def statistics(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean and std of the transformed inputs, and the amount's bin edges."""
        logged = raw.astype(np.float64).copy()
        columns = [c for c in range(FIELDS) if c not in _BINARY]
        logged[:, columns] = np.log1p(np.maximum(logged[:, columns], 0.0))
        knots = np.r_[0.0, np.quantile(raw[:, 0], AMOUNT_QUANTILES)]
        inputs = np.concatenate([logged, raw[:, :1]], axis=1)
        mean = np.r_[inputs.mean(axis=0), np.zeros(len(AMOUNT_QUANTILES))]
        std = np.r_[np.maximum(inputs.std(axis=0), 1e-6), np.ones(len(AMOUNT_QUANTILES))]
        mean[list(_BINARY)] = 0.0
        std[list(_BINARY)] = 1.0
        return mean.astype(np.float32), std.astype(np.float32), knots.astype(np.float32)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw fields (..., 16) → model inputs (..., INPUTS): log1p of magnitudes, the
        amount on a linear scale, and the amount's piecewise-linear bin encoding."""
        logged = torch.where(self.log_fields > 0, torch.log1p(torch.clamp(raw, min=0.0)), raw)
        amount = raw[..., :1]
        low, high = self.knots[:-1], self.knots[1:]
        bins = torch.clamp((amount - low) / torch.clamp(high - low, min=1e-6), 0.0, 1.0)
        return (torch.cat([logged, amount, bins], dim=-1) - self.mean) / self.std

    def hidden_states(self, rows: torch.Tensor, valid: torch.Tensor, field_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``rows`` (B, L, F) raw, ``valid`` (B, L) 0/1 → hidden states (B, L + 1, D), summary last."""
        z = self.normalize(rows)
        if field_mask is None:
            field_mask = torch.zeros_like(z)
        x = self.row_in(torch.cat([z * (1.0 - field_mask), field_mask], dim=-1))
        summary = self.summary.expand(x.shape[0], 1, -1)
        x = torch.cat([x, summary], dim=1)
        attention = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1)
        hidden: torch.Tensor = self.bert(inputs_embeds=x, attention_mask=attention).last_hidden_state
        return hidden

    def embed(self, rows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.hidden_states(rows, valid)[:, -1]

    def logit(self, embedding: torch.Tensor, current: torch.Tensor, tree_score: torch.Tensor) -> torch.Tensor:
        parts = [self.normalize(current)]
        if self.cfg.use_sequence:
            parts.insert(0, embedding)
        if self.cfg.use_trees:
            p = torch.clamp(tree_score, 1e-6, 1.0 - 1e-6)
            parts.append((torch.log(p) - torch.log1p(-p)).unsqueeze(-1) / 4.0)
        logit: torch.Tensor = self.head(torch.cat(parts, dim=-1)).squeeze(-1)
        return logit

    def forward(self, rows: torch.Tensor, valid: torch.Tensor, current: torch.Tensor, tree_score: torch.Tensor) -> torch.Tensor:
        embedding = self.embed(rows, valid) if self.cfg.use_sequence else current[:, :0]
        return torch.sigmoid(self.logit(embedding, current, tree_score))


class Encoder(nn.Module):
    """Export wrapper: ``history`` (B, L, 16), ``history_valid`` (B, L) → ``embedding``."""

    def __init__(self, model: FraudSequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor, history_valid: torch.Tensor) -> torch.Tensor:
        return self.model.embed(history, history_valid)


class Scorer(nn.Module):
    """Export wrapper: ``card_embedding`` (B, D), ``current`` (B, 16) and the trees'
    ``tree_score`` (B,) → ``score`` (B,)."""

    def __init__(self, model: FraudSequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: torch.Tensor, current: torch.Tensor, tree_score: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model.logit(embedding, current, tree_score))


# --- data -----------------------------------------------------------------------------


@dataclass
class CardSequences:
    """Rows of every transaction and, per transaction, the indices of the card's previous
    ``max_len`` transactions (oldest first, -1 where the card has fewer)."""

    rows: np.ndarray  # (N, 16) float32
    history: np.ndarray  # (N, L) int64
    tree_scores: np.ndarray | None = None  # (N,) the trees' fraud probability of each row

    def batch(self, index: np.ndarray, cold_card: np.ndarray | None = None) -> tuple[torch.Tensor, ...]:
        """History rows, their validity, the rows themselves and their tree scores."""
        history = self.history[index]
        if cold_card is not None:
            history = np.where(cold_card[:, None], -1, history)
        valid = history >= 0
        rows = np.where(valid[..., None], self.rows[np.maximum(history, 0)], 0.0)
        trees = self.tree_scores[index] if self.tree_scores is not None else np.zeros(len(index))
        return (torch.from_numpy(rows.astype(np.float32)), torch.from_numpy(valid.astype(np.float32)),
                torch.from_numpy(self.rows[index]), torch.from_numpy(trees.astype(np.float32)))


def card_sequences(x: np.ndarray, ts: np.ndarray, cards: np.ndarray, ids: np.ndarray, max_len: int) -> CardSequences:
    """Rows and history indices, ordering each card's transactions by (event time, id) as
    the engine does. ``x`` holds the engine's rows (``ROW_FIELDS``); given only the 15
    features, the seconds since the previous transaction are derived here the same way."""
    order = np.lexsort((ids, ts, cards))
    sorted_cards = cards[order]
    if x.shape[1] == FIELDS:
        rows = x.astype(np.float32)
    else:
        same_as_previous = np.r_[False, sorted_cards[1:] == sorted_cards[:-1]]
        seconds = np.where(same_as_previous, np.minimum(np.r_[0.0, np.diff(ts[order])], NO_PREVIOUS), NO_PREVIOUS)
        rows = np.empty((len(x), FIELDS), dtype=np.float32)
        rows[:, : len(FEATURE_NAMES)] = x
        rows[order, -1] = seconds
    history_sorted = np.full((len(x), max_len), -1, dtype=np.int64)
    positions = np.arange(len(x))
    for back in range(1, max_len + 1):
        earlier = positions - back
        ok = earlier >= 0
        ok[ok] = sorted_cards[earlier[ok]] == sorted_cards[positions[ok]]
        history_sorted[ok, max_len - back] = order[earlier[ok]]
    history = np.empty_like(history_sorted)
    history[order] = history_sorted
    return CardSequences(rows, history)


def cold_starts(sequences: CardSequences, index: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copies of random training rows as a new card and/or new terminal would see them
    (as ``models.fraud.train.with_cold_starts``); returns new row ids, their rows and
    whether the card is new (its history dropped)."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(index, size=int(len(index) * share), replace=False)
    rows = sequences.rows[picks].copy()
    kind = rng.integers(0, 3, size=len(picks))
    card = kind != 1
    terminal = kind != 2
    rows[np.ix_(card, [3, 5, 7])] = 1.0
    rows[np.ix_(card, [4, 6, 8])] = rows[card, 0:1]
    rows[card, -1] = NO_PREVIOUS
    rows[np.ix_(terminal, list(range(9, 15)))] = 0.0
    return picks, rows, card


# --- training -------------------------------------------------------------------------


def _progress(label: str, step: int, steps: int, started: float, loss: float) -> None:
    print(f"  {label}: step {step}/{steps} loss {loss:.4f} ({time.monotonic() - started:.0f} s)", flush=True)


def pretrain(model: FraudSequenceModel, sequences: CardSequences, index: np.ndarray, *, epochs: int, batch_size: int = 256,
             lr: float = 1e-3, cell_mask: float = 0.15, row_mask: float = 0.15, seed: int = 0) -> list[float]:
    """Masked-field modelling over card sequences ending at the given transactions (no labels)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses: list[float] = []
    started = time.monotonic()
    length = model.cfg.max_len
    # Sequences of the card's last L rows including the row itself, one per sampled end.
    for epoch in range(epochs):
        ends = rng.permutation(index)[: max(1, len(index) // length)]
        steps = math.ceil(len(ends) / batch_size)
        total = 0.0
        for step in range(steps):
            end = ends[step * batch_size : (step + 1) * batch_size]
            chain = np.concatenate([sequences.history[end][:, 1:], end[:, None]], axis=1)
            valid = chain >= 0
            rows = np.where(valid[..., None], sequences.rows[np.maximum(chain, 0)], 0.0).astype(np.float32)
            cells = rng.random((*valid.shape, INPUTS)) < cell_mask
            cells |= (rng.random(valid.shape) < row_mask)[..., None]
            hidden_amount = cells[..., AMOUNT_INPUTS].any(axis=-1, keepdims=True)
            cells[..., AMOUNT_INPUTS] = hidden_amount  # the amount is hidden in every form or in none
            cells &= valid[..., None]
            mask = torch.from_numpy(cells.astype(np.float32))
            rows_t = torch.from_numpy(rows)
            hidden = model.hidden_states(rows_t, torch.from_numpy(valid.astype(np.float32)), mask)[:, :-1]
            target = model.normalize(rows_t)
            error = (model.reconstruct(hidden) - target) ** 2
            loss = (error * mask).sum() / mask.sum().clamp(min=1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        losses.append(total / steps)
        _progress(f"pre-training epoch {epoch + 1}/{epochs}", steps, steps, started, losses[-1])
    return losses


def finetune(model: FraudSequenceModel, sequences: CardSequences, index: np.ndarray, labels: np.ndarray, *, epochs: int,
             batch_size: int = 512, lr: float = 2e-3, genuine_share: float = 0.25, cold_start_share: float = 0.05,
             trees: Callable[[np.ndarray], np.ndarray] | None = None, seed: int = 0) -> list[float]:
    """Fraud fine-tuning; genuine rows are subsampled per epoch and weighted back up, so the
    scores stay calibrated probabilities. ``trees`` scores the cold-start copies' rows."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cold_index, cold_rows, cold_card = cold_starts(sequences, index, cold_start_share, seed)
    cold_trees = trees(cold_rows[:, : len(FEATURE_NAMES)]) if trees is not None else np.zeros(len(cold_rows))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    frauds = index[labels[index] > 0.5]
    genuine = index[labels[index] <= 0.5]
    cold_frauds = labels[cold_index] > 0.5
    weight = 1.0 / genuine_share
    started = time.monotonic()
    losses: list[float] = []
    model.train()
    steps_total = epochs * math.ceil((len(frauds) + genuine_share * len(genuine) + len(cold_index) * (
        cold_frauds.mean() + (1 - cold_frauds.mean()) * genuine_share)) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps_total + epochs, pct_start=0.1)
    step_no = 0
    for epoch in range(epochs):
        keep = rng.random(len(genuine)) < genuine_share
        keep_cold = cold_frauds | (rng.random(len(cold_index)) < genuine_share)
        # Real rows are identified by their index; cold-start copies by -(position + 1).
        chosen = np.concatenate([frauds, genuine[keep], -(np.flatnonzero(keep_cold) + 1)])
        chosen = rng.permutation(chosen)
        steps = math.ceil(len(chosen) / batch_size)
        total = 0.0
        for step in range(steps):
            part = chosen[step * batch_size : (step + 1) * batch_size]
            real = part >= 0
            cold = -part[~real] - 1
            row_index = np.concatenate([part[real], cold_index[cold]])
            is_cold = np.r_[np.zeros(real.sum(), bool), cold_card[cold]]
            rows, valid, current, tree_score = sequences.batch(row_index, is_cold)
            if (~real).any():
                current[real.sum():] = torch.from_numpy(cold_rows[cold])
                tree_score[real.sum():] = torch.from_numpy(cold_trees[cold].astype(np.float32))
            y = torch.from_numpy(labels[row_index].astype(np.float32))
            w = torch.where(y > 0.5, 1.0, weight)
            embedding = model.embed(rows, valid) if model.cfg.use_sequence else current[:, :0]
            logits = model.logit(embedding, current, tree_score)
            loss = (nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum() / w.sum()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step_no < steps_total + epochs - 1:
                schedule.step()
            step_no += 1
            total += float(loss.detach())
            if step % 500 == 0 and step:
                _progress(f"fine-tuning epoch {epoch + 1}/{epochs}", step, steps, started, total / (step + 1))
        losses.append(total / steps)
        _progress(f"fine-tuning epoch {epoch + 1}/{epochs}", steps, steps, started, losses[-1])
    return losses


@torch.no_grad()
def predict(model: FraudSequenceModel, sequences: CardSequences, index: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(index), batch_size):
        out.append(model(*sequences.batch(index[start : start + batch_size])).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def build(sequences: CardSequences, index: np.ndarray, cfg: SequenceConfig, seed: int = 0) -> FraudSequenceModel:
    torch.manual_seed(seed)
    mean, std, knots = FraudSequenceModel.statistics(sequences.rows[index])
    return FraudSequenceModel(cfg, mean, std, knots)


# --- export ---------------------------------------------------------------------------

OPSET = 20


def export_onnx(model: FraudSequenceModel, out_dir: Path) -> dict[str, object]:
    """Write ``encoder.onnx`` (its last layer for the summary token alone:
    ``models.last_position``; its input scaling and embeddings folded into its weights:
    ``models.fraud.fold_inputs``) and ``scorer.onnx``; returns the manifest's
    ``sequence`` section, with each rewrite's check against the graph before it on real
    card histories (``last_layer_check``, ``inputs_check``)."""
    import warnings

    import onnx

    from models.fraud.fold_inputs import FOLDED, fold_inputs
    from models.last_position import LAST_LAYER, card_feeds, check, last_position_only

    model.eval()
    model.bert.set_attn_implementation("eager")
    cfg = model.cfg
    batch = torch.export.Dim("batch", min=1)
    history = torch.rand(3, cfg.max_len, FIELDS) * 10
    valid = torch.ones(3, cfg.max_len)
    valid[0, :5] = 0.0
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Encoder(model), (history, valid), str(out_dir / "encoder.onnx"),
                          input_names=["history", "history_valid"], output_names=["card_embedding"],
                          dynamic_shapes=({0: batch}, {0: batch}), opset_version=OPSET, dynamo=True,
                          external_data=False, optimize=True, verbose=False)
        encoder, feeds = out_dir / "encoder.onnx", card_feeds(cfg.max_len)
        checks = {}
        for field, rewrite in (("last_layer", last_position_only), ("inputs", fold_inputs)):
            rewritten = rewrite(onnx.load(str(encoder))).SerializeToString()
            checks[f"{field}_check"] = check(encoder, rewritten, feeds)
            encoder.write_bytes(rewritten)
        embedding = model.embed(history, valid)
        torch.onnx.export(Scorer(model), (embedding, history[:, -1], torch.rand(3)), str(out_dir / "scorer.onnx"),
                          input_names=["card_embedding", "current", "tree_score"], output_names=["score"],
                          dynamic_shapes=({0: batch}, {0: batch}, {0: batch}), opset_version=OPSET, dynamo=True,
                          external_data=False, optimize=True, verbose=False)
    return {
        "encoder": "encoder.onnx", "scorer": "scorer.onnx", "length": cfg.max_len, "embedding_size": cfg.hidden,
        "fields": list(SEQUENCE_FIELDS), "config": cfg.to_dict(), "opset": OPSET,
        "last_layer": LAST_LAYER, "inputs": FOLDED, **checks,
    }


def check_export(model: FraudSequenceModel, out_dir: Path, sequences: CardSequences, index: np.ndarray,
                 tolerance: float = 1e-4) -> dict[str, object]:
    """ONNX Runtime against torch at batch sizes 1, 7 and 256 (encoder and scorer), and
    a repeated run giving identical outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    encoder = ort.InferenceSession(str(out_dir / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
    scorer = ort.InferenceSession(str(out_dir / "scorer.onnx"), options, providers=["CPUExecutionProvider"])
    model.eval()
    worst_embedding = worst_score = 0.0
    for size in (1, 7, 256):
        for start in range(0, min(len(index), size * 8), size):
            rows, valid, current, tree_score = sequences.batch(index[start : start + size])
            with torch.no_grad():
                want_embedding = model.embed(rows, valid)
                want_score = torch.sigmoid(model.logit(want_embedding, current, tree_score)).numpy()
            (got_embedding,) = encoder.run(None, {"history": rows.numpy(), "history_valid": valid.numpy()})
            (got_score,) = scorer.run(None, {"card_embedding": got_embedding, "current": current.numpy(),
                                             "tree_score": tree_score.numpy()})
            worst_embedding = max(worst_embedding, float(np.abs(got_embedding - want_embedding.numpy()).max()))
            worst_score = max(worst_score, float(np.abs(got_score - want_score).max()))
    rows, valid, _, _ = sequences.batch(index[:256])
    first = encoder.run(None, {"history": rows.numpy(), "history_valid": valid.numpy()})[0]
    again = encoder.run(None, {"history": rows.numpy(), "history_valid": valid.numpy()})[0]
    repeat_identical = bool(np.array_equal(first, again))
    ok = worst_score <= tolerance and repeat_identical
    if not ok:
        raise SystemExit(f"exported fraud model disagrees with torch: score diff {worst_score}, repeat {repeat_identical}")
    return {"batch_sizes": [1, 7, 256], "max_abs_diff_score": worst_score, "max_abs_diff_embedding": worst_embedding,
            "tolerance": tolerance, "repeat_identical": repeat_identical}
