"""A small ONNX Runtime wrapper: provider choice, session options, warm-up.

The inference step of the flow. ``OnnxModel`` runs any batch size (the exported
graphs have a dynamic batch axis); callers hand it numpy arrays by input name.
Provider ``auto`` takes CUDA when onnxruntime-gpu sees a GPU and CPU otherwise;
``cuda`` insists on it and fails loudly when it is missing. On CUDA, inputs and
outputs go through an IO binding (one copy in, one copy out per call), and a graph may
be converted to float16 at load (``fp16``; its inputs and outputs stay float32).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from streamer.errors import ConfigurationError

log = logging.getLogger(__name__)
R = TypeVar("R")

#: Batches of fewer rows run their inference on the event loop: handing one to a thread
#: and back costs more than it frees.
INLINE_ROWS = 64


def runs_off_the_loop(rows: int, thread: bool = True) -> bool:
    """Whether ``off_the_loop`` hands a batch of ``rows`` to a thread."""
    return thread and rows >= INLINE_ROWS


async def off_the_loop(rows: int, infer: Callable[..., R], *args: object, thread: bool = True) -> R:
    """``infer(*args)`` in a thread for a batch of ``rows`` or more: ONNX Runtime lets go
    of the GIL while it runs, so the event loop (Faust's fetching, the next batch's
    state read and write, the other lanes' batches) carries on meanwhile, on another
    core. Without ``thread`` (``STREAMER_MODELS_THREAD``), always on the event loop."""
    if not runs_off_the_loop(rows, thread):
        return infer(*args)
    return await asyncio.to_thread(infer, *args)


#: Graph rewrites left out on the CPU provider: ONNX Runtime's fused SkipLayerNormalization
#: kernel was slower on CPU than the plain Add + LayerNormalization it replaces (1.25-1.4x
#: on this project's encoders as exported until 2026-12-01, batch 512, one thread; a third
#: on a dynamo-exported encoder). In the encoders shipped since, ONNX Runtime finds nothing
#: to fuse (their optimised graphs are the same either way: tests/unit/test_runner.py), so
#: it is kept off for the graphs a user exports. Kept on CUDA.
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def choose_providers(provider: str) -> list[str]:
    available = ort.get_available_providers()
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "cuda":
        raise ConfigurationError(f"CUDA provider asked for, but onnxruntime offers only {available}")
    if provider == "auto":
        return ["CPUExecutionProvider"]
    raise ConfigurationError(f"unknown provider {provider!r}: use auto, cuda or cpu")


class OnnxModel:
    """One ONNX graph in one inference session.

    With ``max_rows`` on the CPU provider, a larger batch runs in slices of that many rows
    (the inputs with a dynamic first axis are sliced, the outputs joined): smaller calls
    keep their working set in cache (1.3x faster for our encoders at 64 to 128 rows than
    at 512) and bound ONNX Runtime's memory arena, which keeps the largest buffers it was
    ever asked for; ``warm_up`` then runs at that size, so the arena has its full size
    from the start instead of growing the first time a large batch comes."""

    def __init__(self, path: Path, *, provider: str = "auto", threads: int = 1, fp16: bool = False,
                 max_rows: int | None = None, optimized_graph: Path | None = None) -> None:
        """``optimized_graph``: where to write the graph as ONNX Runtime optimised it for this
        session (what it fused and left out), to look at with any ONNX viewer."""
        if not path.is_file():
            raise ConfigurationError(f"model file {path} does not exist")
        providers = choose_providers(provider)
        self.fp16 = fp16 and providers[0] == "CUDAExecutionProvider"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if optimized_graph is not None:
            options.optimized_model_filepath = str(optimized_graph)
        self.path = path
        model: str | bytes = float16_graph(path) if self.fp16 else str(path)
        disabled = list(CPU_DISABLED_OPTIMIZERS) if providers[0] == "CPUExecutionProvider" else []
        self.session = ort.InferenceSession(model, options, providers=providers, disabled_optimizers=disabled)
        self.providers = self.session.get_providers()
        self.on_gpu = self.providers[0] == "CUDAExecutionProvider"  # what ORT made, not what was asked
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.batched = {i.name for i in self.session.get_inputs() if i.shape and not isinstance(i.shape[0], int)}
        self.max_rows = None if self.on_gpu else max_rows
        log.info("loaded %s on %s", path.name, self.providers[0])

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        rows = max((len(feeds[name]) for name in self.batched if name in feeds), default=0)
        if self.max_rows is None or rows <= self.max_rows:
            return self._run(feeds)
        parts = [
            self._run({name: array[start : start + self.max_rows] if name in self.batched else array
                       for name, array in feeds.items()})
            for start in range(0, rows, self.max_rows)
        ]
        return [np.concatenate(outputs) for outputs in zip(*parts)]

    def _run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if not self.on_gpu:
            return list(self.session.run(self.output_names, dict(feeds)))
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def warm_up(self, batch_size: int | None = None, dims: Mapping[str, int] | None = None) -> None:
        """Run once on zeros so the first real batch pays no set-up cost; at ``max_rows``
        rows when set, else one."""
        batch_size = batch_size or self.max_rows or 1
        feeds = {}
        for spec in self.session.get_inputs():
            shape = [
                batch_size if i == 0 and spec.name in self.batched
                else (d if isinstance(d, int) else (dims or {}).get(str(d), 1))
                for i, d in enumerate(spec.shape)
            ]
            feeds[spec.name] = np.zeros(shape, dtype=_DTYPES[spec.type])
        self.run(feeds)


def float16_graph(path: Path) -> bytes:
    """The graph at ``path`` with float16 weights and arithmetic, float32 at its edges."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise ConfigurationError("STREAMER_MODELS_FP16 needs the onnx package (pip install -e '.[gpu]')") from exc
    converted = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    return bytes(converted.SerializeToString())
