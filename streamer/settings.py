"""One frozen settings object, read from ``STREAMER_*`` environment variables.

Every field has a type, a default and an environment variable; ``Settings.from_env``
is the only place that reads the environment. Sections follow the flow: Kafka in and
out, Redis state, the models, micro-batching, fraud alerting and recommendations, then the
jobs a worker runs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from streamer.errors import ConfigurationError

PREFIX = "STREAMER_"
SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models" / "shipped"


class Secret(str):
    """A string that never shows itself in ``repr`` (passwords in URLs, tokens)."""

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "localhost:9092"
    """STREAMER_KAFKA_BOOTSTRAP_SERVERS: comma-separated host:port list."""
    partitions: int = 4
    """STREAMER_KAFKA_PARTITIONS: partitions of each topic the worker creates."""
    replication_factor: int = 1
    """STREAMER_KAFKA_REPLICATION_FACTOR: replicas of each topic the worker creates."""
    group_id: str = "streamer"
    """STREAMER_KAFKA_GROUP_ID: consumer group (and Faust app id) of the workers."""
    fetch_max_wait_ms: int = 5
    """STREAMER_KAFKA_FETCH_MAX_WAIT_MS: longest a fetch waits at the broker."""
    rebalance_timeout_s: float = 4.0
    """STREAMER_KAFKA_REBALANCE_TIMEOUT_S: how long a rebalance may take."""
    session_timeout_s: float = 10.0
    """STREAMER_KAFKA_SESSION_TIMEOUT_S: a silent worker is dropped after this."""
    commit_interval_s: float = 1.0
    """STREAMER_KAFKA_COMMIT_INTERVAL_S: how often processed offsets are committed."""
    max_message_bytes: int = 65536
    """STREAMER_KAFKA_MAX_MESSAGE_BYTES: larger input messages go to dead-letter."""
    max_event_ahead_s: float = 86400.0
    """STREAMER_KAFKA_MAX_EVENT_AHEAD_S: an input whose event time is further ahead of its
    record's timestamp goes to dead-letter (0: not checked)."""

    def __post_init__(self) -> None:
        _require(bool(self.bootstrap_servers.strip()), "kafka", "bootstrap_servers", self.bootstrap_servers,
                 "one host:port or more")
        for name in ("partitions", "replication_factor", "max_message_bytes"):
            _require(getattr(self, name) >= 1, "kafka", name, getattr(self, name), "1 or more")
        _require(self.max_event_ahead_s >= 0, "kafka", "max_event_ahead_s", self.max_event_ahead_s, "0 or more")


@dataclass(frozen=True)
class TopicSettings:
    transactions: str = "transactions"
    """STREAMER_TOPICS_TRANSACTIONS"""
    fraud_labels: str = "fraud-labels"
    """STREAMER_TOPICS_FRAUD_LABELS"""
    clickstream: str = "clickstream"
    """STREAMER_TOPICS_CLICKSTREAM"""
    fraud_scores: str = "fraud-scores"
    """STREAMER_TOPICS_FRAUD_SCORES"""
    fraud_alerts: str = "fraud-alerts"
    """STREAMER_TOPICS_FRAUD_ALERTS"""
    recommend_requests: str = "recommend-requests"
    """STREAMER_TOPICS_RECOMMEND_REQUESTS"""
    recommendations: str = "recommendations"
    """STREAMER_TOPICS_RECOMMENDATIONS"""
    dead_letter: str = "dead-letter"
    """STREAMER_TOPICS_DEAD_LETTER"""

    def all(self) -> tuple[str, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass(frozen=True)
class RedisSettings:
    url: Secret = Secret("redis://localhost:6379/0")
    """STREAMER_REDIS_URL: may carry a password, so it is kept secret in logs."""
    namespace: str = "streamer"
    """STREAMER_REDIS_NAMESPACE: first part of every key."""
    ttl_days: float = 45.0
    """STREAMER_REDIS_TTL_DAYS: idle keys expire after this, less up to an hour (wall clock
    housekeeping; a store refreshes a key's TTL at most hourly: ``streamer.state.expiry``)."""
    entities_per_call: int = 256
    """STREAMER_REDIS_ENTITIES_PER_CALL: cards, terminals or users one script call serves
    (0: a whole batch). 1 behind a Redis Cluster proxy: a call then stays in one slot."""
    cluster: bool = False
    """STREAMER_REDIS_CLUSTER: ``url`` names a node of a Redis Cluster, reached without a
    proxy: the client learns the other nodes and which slots each holds, and sends every
    command to the node holding its keys. Each script call then serves one entity
    (``entities_per_call`` is taken as 1), and a batch's state read and write take two
    round trips each instead of one (its stream progress after its state)."""
    wait_replicas: int = 0
    """STREAMER_REDIS_WAIT_REPLICAS: every state write waits until this many replicas of
    each primary it wrote to have it (Redis's ``WAIT``), before the batch goes on and its
    offsets can be committed: a primary that then fails over to one of them loses none of
    it. Fewer within ``wait_timeout_ms`` fail the batch, which is retried. Every primary
    needs that many replicas. 0: no waiting (replication stays asynchronous)."""
    wait_timeout_ms: int = 1000
    """STREAMER_REDIS_WAIT_TIMEOUT_MS: how long a write waits for its replicas."""
    card_cache: int = 10000
    """STREAMER_REDIS_CARD_CACHE: cards whose state a worker keeps between batches, so it
    reads only the others from Redis (0: off). Exact as long as transactions are keyed by
    card id (it switches itself off otherwise) and nothing else writes this namespace.
    About 16 KB per card with a month of history and the sequence model's rows
    (``python -m bench.card_memory``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.url, Secret):  # ``Settings.replace`` hands a plain string
            object.__setattr__(self, "url", Secret(self.url))


@dataclass(frozen=True)
class ModelSettings:
    fraud: Path = SHIPPED_MODELS / "fraud"
    """STREAMER_FRAUD_MODEL: directory of an exported fraud model."""
    recommend: Path = SHIPPED_MODELS / "recommend"
    """STREAMER_RECOMMEND_MODEL: directory of an exported next-item model."""
    provider: str = "auto"
    """STREAMER_MODELS_PROVIDER: auto (CUDA when present), cuda or cpu."""
    threads: int = 1
    """STREAMER_MODELS_THREADS: ONNX Runtime intra-op threads per session."""
    fp16: bool = False
    """STREAMER_MODELS_FP16: on CUDA, run the next-item encoder in float16 (its inputs and
    outputs stay float32); ignored on CPU. The fraud models stay float32: their inputs hold
    raw amounts, past float16's range. Needs the ``onnx`` package (``gpu`` extra)."""
    int8: bool = True
    """STREAMER_MODELS_INT8: on the CPU provider, run the int8 graphs a model's manifest
    lists (the next-item model's: ``python -m models.recommend.quantize``, accuracy checked
    on the evaluation and recorded there); its version then ends in ``+int8``. About 1.4x
    on the next-item models alone, clicks drained 1.18x; on two of the VMs measured the
    int8 graphs were 5-12 % slower (``python -m bench.ort_options`` compares them;
    docs/benchmarks.md). Ignored on CUDA."""
    thread: bool = True
    """STREAMER_MODELS_THREAD: run a large batch's fraud models (and the next-item models
    when not in a process of their own) on a thread beside the event loop, which takes
    the next batch's first step meanwhile: one worker drained transactions about 1.3x
    faster with it. Set it false, and ``process`` too, where a machine runs as many
    workers as it has cores: the cores are busy anyway, and the hand-overs cost CPU (two
    workers on 2 cores took about 7 % less per transaction without the thread, 11 % less
    per click without the process; docs/benchmarks.md)."""
    process: bool = True
    """STREAMER_MODELS_PROCESS: run the next-item models (a batch of clicks' encoder and
    ranker calls) in a child process of the worker, which shares no GIL with its event loop
    (``streamer.inference.model_process``); false: on the worker's inference thread. The
    child holds its own copy of the models."""


@dataclass(frozen=True)
class BatchSettings:
    max_size: int = 512
    """STREAMER_BATCH_MAX_SIZE: a micro-batch closes at this many events... (it fills only
    while the worker is behind. On the 2-core benchmark machine 1,024 drained a backlog
    1.14x faster, but near saturation (3,000 transactions/s) its p99 was 1.4-1.6x higher:
    docs/benchmarks.md, 2026-12-03; hence ``backlog_size`` for backlogs.)"""
    backlog_size: int = 4096
    """STREAMER_BATCH_BACKLOG_SIZE: ...unless this many events or more are already waiting
    in the worker (a backlog: a restart, a rebalance, a replay or backfill, a worker that
    fell behind): the batch then takes this many, and the backlog drains faster (each
    batch's fixed costs shared by more events: docs/benchmarks.md, 2026-12-04 from 19:51).
    A worker with no batch in flight starts a backlog at ``max_size`` and doubles up to
    this, so its first outputs are not held back by a large first batch. Events that
    arrive in real time never wait for it. At most ``max_size``: off."""
    max_wait_ms: int = 5
    """STREAMER_BATCH_MAX_WAIT_MS: ...or once its oldest event has waited this long, whichever
    comes first (a busy stream fills batches while the previous one is processed, so a short
    wait costs no throughput)."""
    lanes: int = 1
    """STREAMER_BATCH_LANES: batches of different partitions processed side by side in one
    worker (a partition's batches stay in order): while one waits on Redis, another
    computes. One by default: on the 2-core benchmark machine two lanes' batches are half
    as large, and their per-batch work cost more latency above 1,000 events/s than the
    overlap saved (docs/benchmarks.md, 2026-12-02)."""
    report_s: float = 60.0
    """STREAMER_BATCH_REPORT_S: every this many seconds each agent logs how many batches it
    took, their mean size, and the mean and longest time of each step (the first step,
    the models, the last step, the delivery): where a worker that falls behind is bound
    (``streamer.worker.step_times``); and the worker, how its high-watermark checks were
    answered (``streamer.worker.highwater``). 0: never."""

    def __post_init__(self) -> None:
        for name in ("max_size", "backlog_size", "lanes"):
            _require(getattr(self, name) >= 1, "batch", name, getattr(self, name), "1 or more")
        _require(self.max_wait_ms >= 0, "batch", "max_wait_ms", self.max_wait_ms, "0 or more")

    @property
    def largest(self) -> int:
        """The most events one batch takes: a backlog batch, unless that is off."""
        return max(self.max_size, self.backlog_size)


@dataclass(frozen=True)
class FraudSettings:
    alert_threshold: float = 0.5
    """STREAMER_FRAUD_ALERT_THRESHOLD: scores at or above it raise an alert."""
    max_reasons: int = 3
    """STREAMER_FRAUD_MAX_REASONS: reasons attached to an alert."""
    label_wait_ms: int = 2000
    """STREAMER_FRAUD_LABEL_WAIT_MS: longest a batch waits for the label stream to catch up."""
    publish_features: bool = False
    """STREAMER_FRAUD_PUBLISH_FEATURES: add the feature row to every fraud-scores record
    (feature logging: train on exactly what was served, audit a score)."""

    def __post_init__(self) -> None:
        _require(0.0 <= self.alert_threshold <= 1.0, "fraud", "alert_threshold", self.alert_threshold,
                 "a probability from 0 to 1")  # NaN too: it would never alert
        _require(self.max_reasons >= 0, "fraud", "max_reasons", self.max_reasons, "0 or more")


@dataclass(frozen=True)
class RecommendSettings:
    top_k: int = 10
    """STREAMER_RECOMMEND_TOP_K: items per recommendation."""

    def __post_init__(self) -> None:
        _require(self.top_k >= 1, "recommend", "top_k", self.top_k, "1 or more")


#: The jobs a worker can run, each over its own input topics: ``fraud`` (transactions and
#: fraud labels) and ``recommend`` (clicks and ranking requests).
JOBS = ("fraud", "recommend")
#: ``STREAMER_WORKER_JOBS`` for a worker that runs every job (the default).
EVERY_JOB = ",".join(JOBS)


@dataclass(frozen=True)
class WorkerSettings:
    jobs: str = EVERY_JOB
    """STREAMER_WORKER_JOBS: the jobs this worker runs, comma-separated (``fraud``,
    ``recommend``; both by default). A worker consumes only its jobs' input topics and
    loads only their models, so each job's workers can be scaled and deployed on their own."""
    metrics_port: int = 0
    """STREAMER_WORKER_METRICS_PORT: answer ``/health``, ``/ready`` and ``/metrics``
    (Prometheus' text format) over HTTP on this port (``streamer.worker.metrics``); 0: off.
    Workers that share a host need a port each."""
    metrics_host: str = "0.0.0.0"
    """STREAMER_WORKER_METRICS_HOST: the address those answers listen on."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.job_names) - set(JOBS))
        if unknown or not self.job_names:
            raise ConfigurationError(f"STREAMER_WORKER_JOBS={self.jobs!r}: name one or more of {', '.join(JOBS)}")
        _require(0 <= self.metrics_port <= 65535, "worker", "metrics_port", self.metrics_port,
                 "a port from 0 (off) to 65535")

    @property
    def job_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.jobs.split(",") if name.strip())

    def runs(self, job: str) -> bool:
        """Whether this worker runs ``job`` (one of ``JOBS``)."""
        if job not in JOBS:
            raise ValueError(f"no job named {job!r}")
        return job in self.job_names


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    fraud: FraudSettings = field(default_factory=FraudSettings)
    recommend: RecommendSettings = field(default_factory=RecommendSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``STREAMER_<SECTION>_<FIELD>`` variables."""
        env = os.environ if environ is None else environ
        sections: dict[str, Any] = {}
        for section in dataclasses.fields(cls):
            section_type = get_type_hints(cls)[section.name]
            values: dict[str, Any] = {}
            hints = get_type_hints(section_type)
            for f in dataclasses.fields(section_type):
                name = env_name(section.name, f.name)
                if name in env:
                    values[f.name] = _parse(name, env[name], hints[f.name])
            sections[section.name] = section_type(**values)
        return cls(**sections)

    def replace(self, **sections: Any) -> Settings:
        """A copy with some fields changed: ``replace(kafka={"partitions": 8})``."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **fields)
            for name, fields in sections.items()
        }
        return dataclasses.replace(self, **changed)


_SHORT_NAMES = {
    ("models", "fraud"): "STREAMER_FRAUD_MODEL",
    ("models", "recommend"): "STREAMER_RECOMMEND_MODEL",
}


def _require(holds: bool, section: str, field_name: str, value: object, what: str) -> None:
    if not holds:
        raise ConfigurationError(f"{env_name(section, field_name)}={value!r}: must be {what}")


def env_name(section: str, field_name: str) -> str:
    """The environment variable of one field, e.g. ``STREAMER_KAFKA_PARTITIONS``."""
    return _SHORT_NAMES.get((section, field_name), f"{PREFIX}{section}_{field_name}".upper())


def _parse(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind is bool:
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if kind in (int, float, str, Path, Secret):
            return kind(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name}={raw!r} is not a valid {kind.__name__}") from exc
    raise ConfigurationError(f"{name}: unsupported setting type {kind!r}")
