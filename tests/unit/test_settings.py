"""Settings from STREAMER_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.errors import ConfigurationError
from streamer.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.kafka.bootstrap_servers == "localhost:9092"
    assert str(s.redis.url) == "redis://localhost:6379/0"
    assert (s.models.fraud / "manifest.json").is_file()
    assert (s.models.recommend / "manifest.json").is_file()


def test_environment_overrides() -> None:
    s = Settings.from_env({
        "STREAMER_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "STREAMER_REDIS_URL": "redis://:hunter2@r:6379/1",
        "STREAMER_FRAUD_MODEL": "/models/fraud",
        "STREAMER_BATCH_MAX_SIZE": "64",
        "STREAMER_BATCH_MAX_WAIT_MS": "5",
        "STREAMER_FRAUD_ALERT_THRESHOLD": "0.8",
        "STREAMER_TOPICS_TRANSACTIONS": "tx-eu",
    })
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.models.fraud == Path("/models/fraud")
    assert (s.batch.max_size, s.batch.max_wait_ms, s.fraud.alert_threshold) == (64, 5, 0.8)
    assert s.topics.transactions == "tx-eu"
    assert "hunter2" not in repr(s)


def test_bad_values_are_reported_by_name() -> None:
    with pytest.raises(ConfigurationError, match="STREAMER_BATCH_MAX_SIZE"):
        Settings.from_env({"STREAMER_BATCH_MAX_SIZE": "many"})


def test_the_state_store_takes_its_redis_settings() -> None:
    from streamer.state.store import RedisStateStore

    redis = Settings.from_env({"STREAMER_REDIS_ENTITIES_PER_CALL": "1", "STREAMER_REDIS_NAMESPACE": "eu"}).redis
    store = RedisStateStore.from_settings(redis)  # connects on first use only
    assert (store.entities_per_call, store.ns) == (1, "eu")
    with pytest.raises(ConfigurationError, match="entities_per_call"):
        RedisStateStore.from_settings(Settings.from_env({"STREAMER_REDIS_ENTITIES_PER_CALL": "-1"}).redis)
    assert not store.cluster


def test_a_ttl_under_a_second_is_refused_and_one_under_the_features_horizon_is_warned_of(
        caplog: pytest.LogCaptureFixture) -> None:
    from streamer.state.store import RedisStateStore

    with pytest.raises(ConfigurationError, match="ttl_days"):  # it would be 0 seconds: no TTL at all
        RedisStateStore.from_settings(Settings.from_env({"STREAMER_REDIS_TTL_DAYS": "0.000001"}).redis)
    RedisStateStore.from_settings(Settings.from_env({}).redis)
    assert not caplog.records
    assert RedisStateStore.from_settings(Settings.from_env({"STREAMER_REDIS_TTL_DAYS": "10"}).redis).ttl == 10 * 86400
    assert "STREAMER_REDIS_TTL_DAYS=10 is shorter than the 37 days" in caplog.text


def test_a_store_waits_for_as_many_replicas_as_it_is_told() -> None:
    from streamer.state.store import RedisStateStore

    redis = Settings.from_env({"STREAMER_REDIS_WAIT_REPLICAS": "2", "STREAMER_REDIS_WAIT_TIMEOUT_MS": "250"}).redis
    store = RedisStateStore.from_settings(redis)
    assert (store.wait_replicas, store.wait_timeout_ms) == (2, 250)
    assert RedisStateStore.from_settings(Settings.from_env({}).redis).wait_replicas == 0
    with pytest.raises(ConfigurationError, match="wait_replicas"):
        RedisStateStore.from_settings(Settings.from_env({"STREAMER_REDIS_WAIT_REPLICAS": "-1"}).redis)


def test_a_cluster_store_talks_to_a_redis_cluster_one_entity_per_script_call() -> None:
    import redis.asyncio as aioredis

    from streamer.state.store import RedisStateStore

    redis = Settings.from_env({"STREAMER_REDIS_CLUSTER": "true", "STREAMER_REDIS_URL": "redis://10.0.0.7:7000/0"}).redis
    store = RedisStateStore.from_settings(redis)  # connects on first use only
    assert store.cluster and isinstance(store.client, aioredis.RedisCluster)
    assert store.entities_per_call == 1  # a script call's keys must share a slot
    assert [(node.host, node.port) for node in store.client.nodes_manager.startup_nodes.values()] == [("10.0.0.7", 7000)]


def test_a_worker_runs_both_jobs_unless_told_which() -> None:
    both = Settings.from_env({}).worker
    assert both.runs("fraud") and both.runs("recommend")
    one = Settings.from_env({"STREAMER_WORKER_JOBS": " recommend "}).worker
    assert one.runs("recommend") and not one.runs("fraud")
    assert Settings.from_env({"STREAMER_WORKER_JOBS": "fraud,recommend"}).worker.runs("fraud")
    with pytest.raises(ValueError, match="ads"):
        one.runs("ads")


@pytest.mark.parametrize("jobs", ["", " , ", "fraud,ads", "Fraud"])
def test_unknown_or_no_jobs_are_refused_by_name(jobs: str) -> None:
    with pytest.raises(ConfigurationError, match="STREAMER_WORKER_JOBS"):
        Settings.from_env({"STREAMER_WORKER_JOBS": jobs})


def test_the_demo_and_the_replay_run_both_jobs_whatever_the_environment_says(monkeypatch, tmp_path: Path) -> None:
    """They play and replay every input topic; a worker told to run one job would leave
    the other's events unanswered."""
    from streamer.demo.run import demo_settings
    from streamer.replay.through_worker import Replayer

    monkeypatch.setenv("STREAMER_WORKER_JOBS", "fraud")
    demo = demo_settings(Settings.from_env(), "demo-1").worker
    replay = Replayer("localhost:9092", "redis://localhost:6379/0", tmp_path).settings().worker
    assert all(worker.runs("fraud") and worker.runs("recommend") for worker in (demo, replay))


@pytest.mark.parametrize(("variable", "value"), [
    ("STREAMER_FRAUD_ALERT_THRESHOLD", "nan"),  # no score is ever at or above NaN: no alert, ever
    ("STREAMER_FRAUD_ALERT_THRESHOLD", "1.5"),
    ("STREAMER_KAFKA_PARTITIONS", "-3"),
    ("STREAMER_KAFKA_BOOTSTRAP_SERVERS", " "),
    ("STREAMER_BATCH_MAX_SIZE", "0"),
    ("STREAMER_RECOMMEND_TOP_K", "-1"),
])
def test_values_out_of_range_are_refused_by_name(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({variable: value})


def test_a_redis_url_changed_in_code_stays_out_of_reprs() -> None:
    settings = Settings.from_env({}).replace(redis={"url": "redis://:hunter2@r:6379/1"})
    assert "hunter2" not in repr(settings) and str(settings.redis.url) == "redis://:hunter2@r:6379/1"
