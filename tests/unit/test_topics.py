"""Reading a broker's CreateTopics answer: aiokafka's admin client returns its per-topic
error codes instead of raising them."""

from __future__ import annotations

from aiokafka.errors import InvalidReplicationFactorError, RequestTimedOutError
from aiokafka.protocol.admin import CreateTopicsResponse_v0, CreateTopicsResponse_v1

from streamer.worker.topics import refusal


def test_a_topic_created_or_already_there_is_no_refusal() -> None:
    assert refusal(CreateTopicsResponse_v1(topic_errors=[("t", 0, None)])) is None
    assert refusal(CreateTopicsResponse_v0(topic_errors=[("t", 36)])) is None  # another worker made it


def test_a_refusal_carries_the_brokers_error_and_whether_a_retry_may_help() -> None:
    refused = refusal(CreateTopicsResponse_v1(topic_errors=[("t", 38, "replication factor 3 > 1 broker")]))
    assert isinstance(refused, InvalidReplicationFactorError) and not refused.retriable
    assert "replication factor 3" in str(refused)
    timed_out = refusal(CreateTopicsResponse_v0(topic_errors=[("t", 7)]))
    assert isinstance(timed_out, RequestTimedOutError) and timed_out.retriable
