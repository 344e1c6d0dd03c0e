"""``docker-compose.yml``: what the production stack gives each worker service."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


def _bytes(size: str) -> int:
    return int(size[:-1]) * UNITS[size[-1].upper()]


def test_every_worker_service_has_resource_limits_above_what_a_worker_was_measured_to_hold() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    workers = {name: service for name, service in services.items() if service.get("command", [])[:2] == ["streamer", "worker"]}
    assert set(workers) == {"fraud-worker", "recommend-worker"}
    for name, service in workers.items():
        resources = service["deploy"]["resources"]
        # about 300 MB with its model process over the 10-minute soak (docs/benchmarks.md)
        assert _bytes(resources["reservations"]["memory"]) >= 400 * 2**20, name
        assert _bytes(resources["limits"]["memory"]) >= 2 * _bytes(resources["reservations"]["memory"]), name
        assert float(resources["limits"]["cpus"]) >= float(resources["reservations"]["cpus"]) >= 1, name


def test_every_worker_service_answers_probes_on_the_port_its_healthcheck_asks() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    workers = {name: service for name, service in services.items() if service.get("command", [])[:2] == ["streamer", "worker"]}
    for name, service in workers.items():
        port = service["environment"]["STREAMER_WORKER_METRICS_PORT"]
        assert int(port) > 0, name
        assert f"127.0.0.1:{port}/health" in " ".join(service["healthcheck"]["test"]), name
