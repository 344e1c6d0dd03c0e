"""The shipped graphs load in every onnxruntime the runtime allows (``onnxruntime>=1.18``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from models.fraud import gbt

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "shipped"
#: The newest IR version onnxruntime 1.18 reads. 1.31 still refused IR 14, which onnx's
#: helper writes by default (the GPU run of 2026-12-04).
OLDEST_RUNTIME_IR = 10


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*/*.onnx")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_graph_ir_version_is_one_the_oldest_allowed_runtime_reads(path: Path) -> None:
    assert onnx.load(str(path), load_external_data=False).ir_version <= OLDEST_RUNTIME_IR


def test_tree_export_writes_that_ir_version(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    trees, _ = gbt.fit(x, (x[:, 0] > 0.5).astype(np.float32), epochs=3, genuine_share=1.0)
    gbt.export_onnx(trees, tmp_path / "trees.onnx", 3)
    assert onnx.load(str(tmp_path / "trees.onnx")).ir_version <= OLDEST_RUNTIME_IR
