"""Tests of recommender training, export and the ONNX-vs-torch check on a tiny synthetic catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.recommend import evaluate as E  # noqa: E402
from models.recommend import train as T  # noqa: E402
from models.recommend.model import ModelConfig, SeqRecModel  # noqa: E402

SMALL = dict(max_len=12, hidden=16, layers=1, heads=2, batch_size=64, threads=1)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 users walking a 40-item catalogue in steps of 3: next item is predictable."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("data") / "Synthetic.txt"
    lines = []
    for user in range(1, 301):
        start, n = rng.integers(1, 41), rng.integers(5, 25)
        lines.append(" ".join(map(str, [user] + [(start + 3 * j - 1) % 40 + 1 for j in range(n)])))
    path.write_text("\n".join(lines) + "\n")
    return path


def _scores(evaluation: dict) -> dict:
    return {key: value for key, value in evaluation.items() if key != "seconds"}


@pytest.mark.slow
def test_train_export_evaluate(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    manifest = T.train(synthetic, out, pretrain_epochs=1, epochs=3, top_k=100, **SMALL)
    assert {p.name for p in out.iterdir()} == {"encoder.onnx", "ranker.onnx", "manifest.json", "items.txt",
                                               "encoder.int8.onnx", "ranker.int8.onnx"}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["int8"]["check"]["ok"]
    # the float32 graphs evaluated twice (by training, by quantisation) score the same; only the time taken differs
    assert _scores(manifest["int8"]["metrics"]["float32"]["test"]) == _scores(manifest["metrics"]["test"])
    assert manifest["num_items"] == 40 and manifest["top_k"] == 40  # K capped at the catalogue size
    assert manifest["check"]["ok"] and manifest["check"]["batch_sizes"] == [1, 7, 256]
    assert manifest["version"].startswith("synthetic-")
    assert manifest["metrics"]["test"]["hr@10"] > 0.5  # popularity would give ~0.25
    again = E.evaluate(synthetic, out)
    assert again["hr@10"] == manifest["metrics"]["test"]["hr@10"]
    assert again["ndcg@10"] == manifest["metrics"]["test"]["ndcg@10"]


def test_a_model_is_rebuilt_from_its_exported_encoder(tmp_path: Path) -> None:
    from models.recommend.export import export_onnx, model_from_encoder

    torch.manual_seed(0)
    cfg = ModelConfig(num_items=30, max_len=10, hidden=16, layers=2, heads=2)
    model = SeqRecModel(cfg).eval()
    with torch.no_grad():  # as after training: no two tensors alike (the exporter shares equal constants)
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    export_onnx(model, tmp_path, top_k=20)
    rebuilt = model_from_encoder(tmp_path / "encoder.onnx", cfg)
    mine, theirs = model.state_dict(), rebuilt.state_dict()
    skipped = {"bert.embeddings.word_embeddings.weight"}  # unused (inputs come from item_embedding): not exported
    assert set(mine) == set(theirs)
    for name in set(mine) - skipped:
        assert torch.equal(mine[name], theirs[name]), name
    ids = torch.tensor([[0, 0, 0, 0, 0, 0, 3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.equal(model.user_embedding(ids), rebuilt.user_embedding(ids))


def test_training_is_reproducible(synthetic: Path, tmp_path: Path) -> None:
    a = T.train(synthetic, tmp_path, pretrain_epochs=1, epochs=1, export=False, **SMALL)
    b = T.train(synthetic, tmp_path, pretrain_epochs=1, epochs=1, export=False, **SMALL)
    assert a["train"]["history"] == b["train"]["history"]
    assert not any(tmp_path.iterdir())


def test_main_cli(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = T.main(["--data", str(synthetic), "--out", str(tmp_path / "m"), "--epochs", "1", "--pretrain-epochs", "0",
                 "--max-len", "8", "--hidden", "16", "--threads", "1", "--save-torch"])
    assert rc == 0
    assert "finetune epoch 1/1" in capsys.readouterr().out
    model = T.load_checkpoint(tmp_path / "m" / "model.pt")
    assert model.max_len == 8 and model.num_items == 40


def test_user_embedding_ignores_left_padding_width() -> None:
    torch.manual_seed(0)
    model = SeqRecModel(ModelConfig(num_items=30, max_len=10, hidden=16, layers=2, heads=2)).eval()
    ids = torch.tensor([[0, 0, 0, 0, 0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 0, 0, 0, 0, 0, 9]])
    with torch.no_grad():
        full = model.user_embedding(ids)
        trimmed = model.user_embedding(ids[:, -4:])
        other = model.user_embedding(torch.tensor([[0, 0, 0, 0, 0, 0, 3, 4, 5, 7]]))
        bidirectional = model(ids, causal=False)[:, -1]
        changed = ids.clone()
        changed[0, -1] = 11  # change only the most recent item
        causal_a, causal_b = model(ids, causal=True), model(changed, causal=True)
        bidir_a, bidir_b = model(ids, causal=False), model(changed, causal=False)
    assert full.shape == (2, 16)
    assert torch.allclose(full, trimmed, atol=1e-5)
    assert not torch.allclose(full[:1], other, atol=1e-3)  # the last item matters
    assert torch.allclose(full[1], bidirectional[1], atol=1e-5)  # one item: both modes agree
    # Causal: earlier positions do not see the last item; bidirectional: they do.
    assert torch.equal(causal_a[0, -4:-1], causal_b[0, -4:-1])
    assert (bidir_a[0, -4:-1] - bidir_b[0, -4:-1]).abs().max() > 1e-6
    logits = model.item_logits(full)
    assert logits.shape == (2, 30)
