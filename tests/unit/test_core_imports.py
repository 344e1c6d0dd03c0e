"""The pure core loads no outside system's client.

The pipelines, the features, the in-memory state store and the offline replay run from
a Faust agent, over a capture file without a broker, in training and in unit tests; none
of them may need Faust, a Kafka client or a Redis client to be importable or loaded.
"""

from __future__ import annotations

import subprocess
import sys

CORE = ("streamer.pipeline.fraud", "streamer.pipeline.recommend", "streamer.features.fraud", "streamer.state.memory",
        "streamer.replay.offline")
CLIENTS = ("faust", "mode", "aiokafka", "kafka", "redis")


def test_the_core_imports_no_faust_kafka_or_redis_client() -> None:
    script = (f"import importlib, sys; [importlib.import_module(m) for m in {CORE!r}]; "
              f"print(sorted(c for c in {CLIENTS!r} if c in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    assert imported.stdout.decode().strip() == "[]"
