"""The recommender's torch model: a small ``transformers`` BertModel over item sequences.

The transformer is built from a :class:`transformers.BertConfig` (no pretrained weights, nothing is
downloaded). Items have their own embedding table: index 0 is padding, ``1..num_items`` are catalogue
items and ``num_items + 1`` is the ``[MASK]`` item used by masked item pre-training. The output layer
is tied to that table: the score of item ``i`` for a hidden state ``h`` is ``h . E[i]``.

The same weights run in two attention modes: bidirectional (masked item modelling pre-training,
BERT4Rec style) and causal (next-item fine-tuning and serving, SASRec style). Both are made by
passing an explicit 4-D additive attention mask to the BertModel.

Sequences are left-padded with 0 and the most recent item is last. Positions are numbered so that the
last column is always position ``max_len - 1``, whatever the width of the batch, so a batch trimmed
to its longest row gives exactly the same outputs as the same rows padded to ``max_len``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`SeqRecModel` (stored in the manifest)."""

    num_items: int
    max_len: int = 50
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.5
    attn_dropout: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SeqRecModel(nn.Module):
    """Transformer sequence encoder with a tied full-catalogue softmax output."""

    bert: BertModel

    def __init__(self, cfg: ModelConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.cfg = cfg
        self.num_items = cfg.num_items
        self.max_len = cfg.max_len
        self.mask_id = cfg.num_items + 1
        self.item_embedding = nn.Embedding(cfg.num_items + 2, cfg.hidden, padding_idx=0)
        bert_cfg = BertConfig(
            vocab_size=1,  # the word embedding table is unused: inputs_embeds come from item_embedding
            hidden_size=cfg.hidden,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            intermediate_size=4 * cfg.hidden,
            hidden_act="gelu",
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.attn_dropout,
            max_position_embeddings=cfg.max_len,
            type_vocab_size=1,
            initializer_range=0.02,
            layer_norm_eps=1e-12,
            pad_token_id=0,
        )
        bert_cfg._attn_implementation = attn_implementation
        self.bert = BertModel(bert_cfg, add_pooling_layer=False)
        nn.init.normal_(self.item_embedding.weight, std=bert_cfg.initializer_range)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def reset_transformer(self) -> None:
        """Re-initialise the transformer (keep the item embeddings), e.g. after pre-training."""
        attn = self.bert.config._attn_implementation
        self.bert = BertModel(self.bert.config, add_pooling_layer=False)
        self.set_attn_implementation(attn)

    def set_attn_implementation(self, name: str) -> None:
        """Switch between ``"sdpa"`` (fast training) and ``"eager"`` (plain ops, for export)."""
        self.bert.config._attn_implementation = name
        for module in self.bert.modules():
            config = getattr(module, "config", None)
            if config is not None and module is not self.bert:
                config._attn_implementation = name

    def forward(self, item_ids: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """Hidden states ``[B, T, D]`` for left-padded item ids ``[B, T]`` (``T <= max_len``)."""
        if item_ids.shape[1] > self.max_len:
            item_ids = item_ids[:, -self.max_len:]
        batch, width = item_ids.shape
        positions = torch.arange(self.max_len - width, self.max_len, device=item_ids.device)
        positions = positions.unsqueeze(0).expand(batch, width)
        allowed = (item_ids != 0)[:, None, None, :]  # keys that are real items
        if causal:
            tril = torch.ones(width, width, dtype=torch.bool, device=item_ids.device).tril()
            allowed = allowed & tril[None, None, :, :]
        embeds = self.item_embedding(item_ids)
        mask = torch.zeros(allowed.shape, dtype=embeds.dtype, device=embeds.device)
        mask = mask.masked_fill(~allowed, torch.finfo(embeds.dtype).min)
        out = self.bert(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden

    def user_embedding(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Final hidden state ``[B, D]`` of the last (rightmost) position of left-padded sequences."""
        return self.forward(item_ids, causal=True)[:, -1, :]

    def catalogue_weight(self) -> torch.Tensor:
        """Output weights of the catalogue items, ``[num_items, D]`` (row ``i`` = model index ``i+1``)."""
        return self.item_embedding.weight[1:self.num_items + 1]

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores ``[..., num_items]`` of every catalogue item; column ``j`` is model index ``j+1``."""
        return hidden @ self.catalogue_weight().T
