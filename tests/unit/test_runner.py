"""OnnxModel: a batch larger than ``max_rows`` runs in slices with the same results."""

import numpy as np

from streamer.inference.runner import OnnxModel
from streamer.settings import Settings

MODELS = Settings.from_env().models


def test_slices_of_a_batch_give_the_outputs_of_the_whole_batch() -> None:
    whole = OnnxModel(MODELS.recommend / "encoder.onnx", provider="cpu")
    sliced = OnnxModel(MODELS.recommend / "encoder.onnx", provider="cpu", max_rows=3)
    ids = np.random.default_rng(0).integers(1, 1000, (10, 8))
    (expected,) = whole.run({"item_ids": ids})
    (got,) = sliced.run({"item_ids": ids})
    assert got.shape == expected.shape == (10, 64)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_inputs_without_a_batch_axis_go_whole_to_every_slice() -> None:
    ranker = OnnxModel(MODELS.recommend / "ranker.onnx", provider="cpu", max_rows=4)
    assert ranker.batched == {"user_embedding", "exclude"}
    embeddings = np.random.default_rng(1).standard_normal((9, 64)).astype(np.float32)
    items, scores = ranker.run({"user_embedding": embeddings, "exclude": np.zeros((9, 1), dtype=np.int64),
                                "k": np.array([5], dtype=np.int64)})
    assert items.shape == scores.shape == (9, 5)


async def test_large_batches_are_inferred_in_a_thread_small_ones_on_the_loop() -> None:
    import threading

    from streamer.inference.runner import INLINE_ROWS, off_the_loop

    def where(rows: int) -> tuple[int, int]:
        return rows, threading.get_ident()

    loop_thread = threading.get_ident()
    assert await off_the_loop(INLINE_ROWS - 1, where, 1) == (1, loop_thread)
    rows, thread = await off_the_loop(INLINE_ROWS, where, 2)
    assert rows == 2 and thread != loop_thread
    assert await off_the_loop(INLINE_ROWS * 100, where, 3, thread=False) == (3, loop_thread)  # STREAMER_MODELS_THREAD=false
