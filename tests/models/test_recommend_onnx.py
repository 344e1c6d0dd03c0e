"""Tests of the shipped recommender (models/shipped/recommend) with ONNX Runtime only, no torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from models.recommend import check, data as D, evaluate as E

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "shipped" / "recommend"
BEAUTY = ROOT.parent / "shared" / "data" / "rec" / "Beauty.txt"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((MODEL / "manifest.json").read_text())


@pytest.fixture(scope="module")
def sessions() -> tuple[ort.InferenceSession, ort.InferenceSession]:
    return E.load_sessions(MODEL, threads=1)


def _histories(n: int, num_items: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, num_items + 1, rng.integers(1, 80)) for _ in range(n)]


def test_files_are_small() -> None:
    sizes = {p.name: p.stat().st_size for p in MODEL.iterdir()}
    assert {"encoder.onnx", "ranker.onnx", "manifest.json", "items.txt"} <= set(sizes)
    assert sum(sizes.values()) < 12 * 2**20  # float32 and int8 graphs


def test_manifest(manifest: dict) -> None:
    assert manifest["name"] == "recommend"
    assert re.fullmatch(r"[a-z0-9-]+-\d{8}-[0-9a-f]{8}", manifest["version"])
    items = D.read_items(MODEL / "items.txt")
    assert manifest["num_items"] == len(items)
    assert len(manifest["popular"]) == 100 and set(manifest["popular"]) <= set(items)
    for split in ("valid", "test"):
        assert 0 < manifest["metrics"][split]["ndcg@10"] <= manifest["metrics"][split]["hr@10"] <= 1
    assert manifest["check"]["ok"]
    assert len(manifest["data"]["sha256"]) == 64
    assert manifest["train"]["hyperparameters"]["seed"] == 0


def test_io_contract(manifest: dict, sessions) -> None:
    encoder, ranker = sessions
    L, Dm, K = manifest["max_len"], manifest["embedding_dim"], manifest["top_k"]
    (i,), (o,) = encoder.get_inputs(), encoder.get_outputs()
    assert (i.name, i.type) == ("item_ids", "tensor(int64)")
    assert (o.name, o.type, o.shape[1:]) == ("user_embedding", "tensor(float)", [Dm])
    assert isinstance(i.shape[0], str) and isinstance(i.shape[1], str)  # dynamic batch and length
    assert E.max_len_of(encoder) == L
    ins, outs = ranker.get_inputs(), ranker.get_outputs()
    assert [(x.name, x.type) for x in ins] == [
        ("user_embedding", "tensor(float)"), ("exclude", "tensor(int64)"), ("k", "tensor(int64)")]
    assert ins[0].shape[1:] == [Dm] and isinstance(ins[1].shape[1], str) and ins[2].shape == [1]
    assert [(x.name, x.type, x.shape[1:]) for x in outs] == [
        ("top_items", "tensor(int64)", ["k"]), ("top_scores", "tensor(float)", ["k"])]
    for k in (1, 10, K):
        items, scores = E.rank(ranker, np.zeros((2, Dm), dtype=np.float32), np.zeros((2, 1), dtype=np.int64), k)
        assert items.shape == scores.shape == (2, k)
    for graph, session in (("encoder", encoder), ("ranker", ranker)):
        assert manifest["files"][graph] == f"{graph}.onnx"
        assert [x["name"] for x in manifest["inputs"][graph]] == [x.name for x in session.get_inputs()]
        assert [x["name"] for x in manifest["outputs"][graph]] == [x.name for x in session.get_outputs()]
        assert manifest["outputs"][graph][0]["shape"][1] == session.get_outputs()[0].shape[1]


def test_a_narrower_input_gives_the_same_embeddings(manifest: dict, sessions) -> None:
    encoder, _ = sessions
    histories = _histories(64, manifest["num_items"], seed=3)
    short = [h[:5] for h in histories]
    wide = encoder.run(None, {"item_ids": D.left_pad(short, manifest["max_len"])})[0]
    for width in (5, 8, 16):
        narrow = encoder.run(None, {"item_ids": D.left_pad(short, width)})[0]
        np.testing.assert_allclose(narrow, wide, atol=1e-5)


def test_ranker_excludes_and_never_returns_padding(manifest: dict, sessions) -> None:
    encoder, ranker = sessions
    n = manifest["num_items"]
    histories = _histories(16, n)
    items, scores = E.recommend(encoder, ranker, histories, manifest["max_len"], k=manifest["top_k"])
    assert items.shape == scores.shape == (16, manifest["top_k"])
    top10, _ = E.recommend(encoder, ranker, histories, manifest["max_len"], k=10)
    assert (top10 == items[:, :10]).all()  # asking for fewer gives the head of the same ranking
    assert (items >= 1).all() and (items <= n).all()
    assert (np.diff(scores, axis=1) <= 0).all()
    for hist, row in zip(histories, items):
        assert not set(hist.tolist()) & set(row.tolist())
        assert len(set(row.tolist())) == len(row)
    # Excluding the whole first answer gives a disjoint second answer.
    emb = encoder.run(None, {"item_ids": D.left_pad(histories, manifest["max_len"])})[0]
    again, _ = E.rank(ranker, emb, items, manifest["top_k"])
    assert all(not set(a.tolist()) & set(b.tolist()) for a, b in zip(items, again))


@pytest.mark.parametrize("files", [E.GRAPHS, ("encoder.int8.onnx", "ranker.int8.onnx")])
def test_padding_is_never_returned_even_below_the_excluded_items(manifest: dict, files: tuple[str, str]) -> None:
    _, ranker = E.load_sessions(MODEL, threads=1, files=files)
    n = manifest["num_items"]
    kept = np.array([5, 17, 42])
    exclude = np.setdiff1d(np.arange(1, n + 1), kept)[None, :]  # every item but three, no padding
    with_padding = np.concatenate([exclude, np.zeros((1, 4), dtype=np.int64)], axis=1)
    emb = np.random.default_rng(0).normal(size=(1, manifest["embedding_dim"])).astype(np.float32)
    for excluded in (exclude, with_padding):
        items, scores = E.rank(ranker, emb, excluded, 10)
        assert set(items[0, :3].tolist()) == set(kept.tolist())
        assert 0 not in items[0].tolist()  # the excluded fill the rest, at the excluded score
        assert (scores[0, 3:] == np.finfo(np.float32).min).all()


def test_the_ranker_sets_padding_aside_without_an_addition_over_the_catalogue() -> None:
    import onnx

    for name in ("ranker.onnx", "ranker.int8.onnx"):
        ops = [node.op_type for node in onnx.load(str(MODEL / name)).graph.node]
        assert "TopK" in ops and not {"Add", "Sub"} & set(ops), (name, ops)


def test_unknown_ids_are_padding_and_empty_history_works(manifest: dict, sessions) -> None:
    encoder, _ = sessions
    L, n = manifest["max_len"], manifest["num_items"]
    x = np.zeros((3, L), dtype=np.int64)
    x[:, -3:] = [5, 6, 7]
    x[1, -5] = n + 1  # the internal [MASK] index
    x[2, -6:-4] = [n + 100, -4]
    emb = encoder.run(None, {"item_ids": x})[0]
    assert np.abs(emb[1] - emb[0]).max() < 1e-5 and np.abs(emb[2] - emb[0]).max() < 1e-5
    empty = encoder.run(None, {"item_ids": np.zeros((1, L), dtype=np.int64)})[0]
    assert np.isfinite(empty).all()


def test_batch_sizes_and_repeats_agree(manifest: dict) -> None:
    if BEAUTY.exists():
        seqs = D.read_sequences(BEAUTY, items=D.read_items(MODEL / "items.txt"))
        histories = check.check_histories(seqs.sequences, seqs.num_items)
    else:
        histories = _histories(256, manifest["num_items"])
    result = check.check_onnx(MODEL, histories, threads=1)
    assert result["ok"], result


def test_evaluation_is_torch_free(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "from models.recommend import evaluate, check, data\n"
            "import numpy as np\n"
            f"h = [np.array([1, 2, 3]), np.array([4])]\n"
            f"print(check.check_onnx({str(MODEL)!r}, h, threads=1)['ok'])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.skipif(not BEAUTY.exists(), reason="benchmark data not available")
def test_offline_evaluation_reproduces_manifest(manifest: dict) -> None:
    if D.file_sha256(BEAUTY) != manifest["data"]["sha256"]:
        pytest.skip("shipped model was not trained on this Beauty.txt")
    result = E.evaluate(BEAUTY, MODEL, split_name="test", batch_size=512, threads=1)
    expected = manifest["metrics"]["test"]
    assert result["users"] == expected["users"]
    assert result["hr@10"] == pytest.approx(expected["hr@10"], abs=2e-4)
    assert result["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=2e-4)
    assert result["ndcg@10"] > 0.03  # popularity is .0068, published SASRec .0318
