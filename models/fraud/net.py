"""The fraud network (torch): standardisation baked in, an MLP, a sigmoid.

Exported whole to ONNX so serving feeds raw features and reads a probability.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class FraudNet(nn.Module):
    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(np.where(std > 0, std, 1.0), dtype=torch.float32))
        width = len(mean)
        self.body = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.body((features - self.mean) / self.std).squeeze(-1)
        return logits

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(features))

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        self.eval()
        scores: np.ndarray = self(torch.from_numpy(features)).numpy()
        return scores


def fit(x: np.ndarray, y: np.ndarray, *, epochs: int = 6, seed: int = 0, batch: int = 1024) -> tuple[FraudNet, dict[str, list[float]]]:
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    mean, std = x.mean(axis=0), x.std(axis=0)
    net = FraudNet(mean, std)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        started = time.monotonic()
        net.train()
        order = torch.randperm(len(features), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            optimiser.zero_grad()
            loss = loss_fn(net.logits(features[idx]), labels[idx])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(order):.5f} ({time.monotonic() - started:.0f} s)", flush=True)
    return net, {"mean": mean.astype(float).tolist(), "std": std.astype(float).tolist()}


def export_onnx(net: FraudNet, path: Path, width: int) -> None:
    net.eval()
    example = torch.zeros(2, width)
    torch.onnx.export(
        net, (example,), str(path), input_names=["features"], output_names=["score"],
        dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}}, opset_version=20, dynamo=False,
    )
