"""Next-item training losses: how the hidden states of the recommender are scored against targets.

Used by :mod:`models.recommend.train` on every predicted position of a batch (the positions whose
target is not padding). ``hidden`` is ``[n, D]``, ``targets`` are model indices ``[n]`` in
``1..num_items``.

* ``softmax`` (the project's recipe): cross-entropy of a full softmax over the whole catalogue,
  logits ``hidden @ E.T`` tied to the item embeddings.
* ``sampled-bce`` (the original SASRec recipe, Kang & McAuley, ICDM 2018): binary cross-entropy of
  the target item against ONE negative item per position, drawn uniformly from the catalogue without
  the target: ``-log sigmoid(h . E[pos]) - log sigmoid(-h . E[neg])``, averaged over positions.
  (The SASRec code also keeps the user's other items out of the negatives; with about 8 items per
  user in a catalogue of 12,000 this almost never matters and is not done here.)

Nothing here reads data or files; the negatives come from a seeded ``torch.Generator`` of their own,
so they do not disturb the random stream of dropout and initialisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .model import SeqRecModel

LOSSES = ("softmax", "sampled-bce")

NextItemLoss = Callable[[SeqRecModel, torch.Tensor, torch.Tensor], torch.Tensor]


def full_softmax_cross_entropy(model: SeqRecModel, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the targets under a softmax over every catalogue item."""
    return F.cross_entropy(model.item_logits(hidden), targets - 1)


def sample_negatives(targets: torch.Tensor, num_items: int, generator: torch.Generator) -> torch.Tensor:
    """One item per target, uniform over ``1..num_items`` without that target (needs ``num_items >= 2``)."""
    if num_items < 2:
        raise ValueError("negative sampling needs at least two items")
    negatives = torch.randint(1, num_items, targets.shape, generator=generator)
    return negatives + (negatives >= targets).long()  # skip the target: 1..t-1 stay, t..N-1 -> t+1..N


class SampledBinaryCrossEntropy:
    """SASRec's loss: each position's target against one uniformly sampled negative item."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: SeqRecModel, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        negatives = sample_negatives(targets, model.num_items, self.generator)
        pos = (hidden * model.item_embedding(targets)).sum(-1)
        neg = (hidden * model.item_embedding(negatives)).sum(-1)
        # -log sigmoid(pos) - log sigmoid(-neg), in the numerically stable softplus form
        return (F.softplus(-pos) + F.softplus(neg)).mean()


def next_item_loss(name: str, seed: int) -> NextItemLoss:
    """The fine-tuning loss called ``name`` (one of :data:`LOSSES`)."""
    if name == "softmax":
        return full_softmax_cross_entropy
    if name == "sampled-bce":
        return SampledBinaryCrossEntropy(seed)
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
