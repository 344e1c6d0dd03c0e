"""``bench.pipeline.worker_gc``: the pipelines alone are measured under the worker's
garbage collector settings, and the process gets its own back afterwards."""

from __future__ import annotations

import gc

from bench.pipeline import worker_gc
from streamer.worker.main import GC_FIRST_THRESHOLD


def test_the_pipelines_are_measured_with_the_workers_collector_settings_then_the_old_ones_return() -> None:
    before = gc.get_threshold()
    with worker_gc():
        assert gc.get_threshold() == (GC_FIRST_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
