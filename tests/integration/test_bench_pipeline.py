"""``python -m bench.pipeline --redis-cluster 3``: the pipelines alone against an embedded
Redis Cluster of three that it starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamer.datasets import BEAUTY, FRAUD_CSV
from tests.support import REPO

pytestmark = [pytest.mark.redis, pytest.mark.data,
              pytest.mark.skipif(not (FRAUD_CSV.is_file() and BEAUTY.is_file()), reason="needs ../shared/data")]


def test_the_pipelines_run_against_an_embedded_redis_cluster() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.pipeline", "--events", "1200", "--redis-cluster", "3"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["redis"] == "cluster of 3" and result["events"] == 1200
    for kind in ("transactions", "clicks"):
        assert result[kind]["events_per_s"] > 0 and result[kind]["cpu_us_per_event"] > 0
        assert result[kind]["redis_cpu_us_per_event"] > 0  # every node's
