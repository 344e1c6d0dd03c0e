"""The README's first command, shortened: ``streamer demo`` shows scores, alerts with
reasons and recommendations within seconds (against the test broker and Redis)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.embedded import EmbeddedBroker

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


@pytest.mark.timeout(180)
def test_the_demo_shows_scores_alerts_and_recommendations(broker: EmbeddedBroker, redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "STREAMER_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "STREAMER_REDIS_URL": redis_url}
    done = subprocess.run([sys.executable, "-m", "streamer.cli", "demo", "--duration", "30", "--rate", "300"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    final = done.stdout.rsplit("Streamer demo", 1)[-1]
    counts = {name: int(n.replace(",", "")) for name, n in re.findall(r"^\s+([a-z-]+)\s+([\d,]+)\s", final, re.M)}
    assert counts["sent"] > 3000
    assert counts["fraud-scores"] > 1000 and counts["recommendations"] > 1000
    assert counts["fraud-alerts"] > 0 and counts["dead-letter"] > 0  # the demo plays some broken messages
    alerts = final.split("Latest fraud alerts:")[1].split("Latest recommendations:")[0]
    assert re.search(r"score 0\.\d{3}\s+\S", alerts)  # an alert with its reasons in words


def test_the_demo_fails_when_its_worker_died(broker: EmbeddedBroker, redis_url: str) -> None:
    """It exits non-zero (``run_demo``'s status) rather than 0 after a worker that stopped."""
    import asyncio

    from streamer.demo.run import _demo, demo_settings
    from streamer.settings import Settings

    settings = demo_settings(Settings.from_env({"STREAMER_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                                                "STREAMER_REDIS_URL": redis_url}), "demo-test-died")
    worker = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    worker.wait()
    assert asyncio.run(_demo(settings, 3.0, 100.0, None, worker, Path("worker.log"))) is False
