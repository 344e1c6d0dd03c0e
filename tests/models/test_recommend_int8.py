"""The shipped recommender's int8 graphs (``models.recommend.quantize``) and how the runtime picks them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.recommend import check, data as D, quantize as Q
from streamer.inference.next_item import NextItemRanker
from streamer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "shipped" / "recommend"
SAMPLE = ROOT / "tests" / "data" / "beauty_sample.txt"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((MODEL / "manifest.json").read_text())


def sample_histories() -> list[list[str]]:
    """Every prefix of every user in the sample, as catalogue item ids."""
    users = [line.split()[1:] for line in SAMPLE.read_text().splitlines()]
    return [items[: n + 1] for items in users for n in range(len(items))]


def test_only_the_valid_split_decides_whether_int8_ships() -> None:
    """The test split is reported, not consulted: a fall there alone does not stop the
    int8 graphs, one on the valid split does."""
    float32 = {"valid": {"hr@10": 0.100, "ndcg@10": 0.060}, "test": {"hr@10": 0.080, "ndcg@10": 0.050}}
    worse_on_test = {"valid": {"hr@10": 0.100, "ndcg@10": 0.060}, "test": {"hr@10": 0.070, "ndcg@10": 0.040}}
    worse_on_valid = {"valid": {"hr@10": 0.098, "ndcg@10": 0.060}, "test": {"hr@10": 0.080, "ndcg@10": 0.050}}
    assert Q.shortfalls(float32, worse_on_test, 0.01) == []
    assert Q.shortfalls(float32, worse_on_valid, 0.01) == ["valid hr@10: 0.09800 against 0.10000"]


def test_the_shipped_int8_graphs_kept_the_evaluation_and_give_a_row_the_same_result_in_any_batch(manifest: dict) -> None:
    int8 = manifest["int8"]
    assert (MODEL / int8["encoder"]).is_file() and (MODEL / int8["ranker"]).is_file()
    assert Q.shortfalls(int8["metrics"]["float32"], int8["metrics"]["int8"], int8["tolerance"]) == []
    assert int8["metrics"]["float32"]["test"]["hr@10"] == pytest.approx(manifest["metrics"]["test"]["hr@10"], abs=2e-4)
    seqs = D.read_sequences(SAMPLE, items=D.read_items(MODEL / "items.txt"))
    histories = check.check_histories(seqs.sequences, seqs.num_items)
    result = check.check_onnx(MODEL, histories, threads=1, files=(int8["encoder"], int8["ranker"]))
    assert result["ok"] and result["batch_max_abs_diff"] == 0.0, result


def test_the_runtime_runs_the_int8_graphs_on_the_cpu_unless_told_not_to() -> None:
    on = NextItemRanker(MODEL, provider="cpu")
    off = NextItemRanker(MODEL, provider="cpu", int8=Settings.from_env({"STREAMER_MODELS_INT8": "false"}).models.int8)
    assert (on.encoder.path.name, on.ranker.path.name) == ("encoder.int8.onnx", "ranker.int8.onnx")
    assert (off.encoder.path.name, off.ranker.path.name) == ("encoder.onnx", "ranker.onnx")
    assert on.version == off.version + "+int8"


def float32_copy(directory: Path) -> dict:
    """The shipped model's float32 graphs in ``directory``, without int8 ones; its manifest."""
    directory.mkdir(exist_ok=True)
    for name in ("encoder.onnx", "ranker.onnx", "items.txt"):
        shutil.copy(MODEL / name, directory / name)
    manifest = json.loads((MODEL / "manifest.json").read_text())
    del manifest["int8"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_a_model_without_int8_graphs_runs_in_float32(tmp_path: Path) -> None:
    manifest = float32_copy(tmp_path)
    ranker = NextItemRanker(tmp_path, provider="cpu")
    assert not ranker.int8 and ranker.ranker.path.name == "ranker.onnx" and ranker.version == manifest["version"]


def test_int8_recommendations_mostly_match_float32_and_do_not_depend_on_the_batch() -> None:
    int8, float32 = NextItemRanker(MODEL, provider="cpu"), NextItemRanker(MODEL, provider="cpu", int8=False)
    histories = [int8.indices(items) for items in sample_histories()][:512]

    def top(ranker: NextItemRanker, batch: list[list[int]]) -> list[list[str]]:
        return [[item for item, _ in ranked] for ranked in ranker.rank(ranker.encode(batch), batch, 10)]

    together = top(int8, histories)
    assert [top(int8, [h])[0] for h in histories[:64]] == together[:64]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(together, top(float32, histories))])
    assert overlap > 0.9


def test_quantize_writes_the_graphs_and_their_evaluation_or_nothing(tmp_path: Path) -> None:
    model = tmp_path / "model"
    float32_copy(model)

    assert Q.main([str(model), "--data", str(SAMPLE), "--tolerance", "-1"]) == 1  # asks int8 to double every metric
    assert "int8" not in json.loads((model / "manifest.json").read_text())
    assert not (model / Q.FILES["encoder"]).exists()

    assert Q.main([str(model), "--data", str(SAMPLE), "--tolerance", "1"]) == 0
    written = json.loads((model / "manifest.json").read_text())["int8"]
    assert written["check"]["ok"]
    assert set(written["metrics"]["int8"]) == {"valid", "test"}
    assert NextItemRanker(model, provider="cpu").int8


def test_an_encoder_of_fixed_width_shorter_than_max_len_is_refused_at_load(tmp_path: Path) -> None:
    """Else the longest histories fit none of its widths, and every click of a user with
    one fails at encode time (dead-lettered as a processing error)."""
    import onnx

    from streamer.errors import ConfigurationError

    for path in MODEL.iterdir():
        shutil.copy(path, tmp_path / path.name)
    for name in ("encoder.onnx", json.loads((MODEL / "manifest.json").read_text())["int8"]["encoder"]):
        graph = onnx.load(tmp_path / name)
        length = graph.graph.input[0].type.tensor_type.shape.dim[1]
        length.ClearField("dim_param")
        length.dim_value = 16  # the manifest's max_len is 50
        onnx.save(graph, tmp_path / name)
    with pytest.raises(ConfigurationError, match="sequences of 16 items"):
        NextItemRanker(tmp_path, provider="cpu")
