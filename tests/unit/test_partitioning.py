"""``streamer.output.partitioning``: the same partitions as Kafka's default partitioner
(aiokafka's pure-Python murmur2, itself checked against the Java client's)."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2 as reference

from streamer.output.partitioning import key_partitions, murmur2


def test_murmur2_matches_the_reference_for_keys_of_every_length_up_to_40_bytes() -> None:
    rng = random.Random(7)
    for length in range(41):
        keys = [bytes(rng.randrange(256) for _ in range(length)) for _ in range(50)]
        assert murmur2(keys).tolist() == [reference(key) for key in keys], length


def test_known_java_client_hashes() -> None:
    # org.apache.kafka.common.utils.Utils.murmur2 (the Java client's unit tests)
    assert murmur2([b"21"]).tolist() == [-973932308 & 0xFFFFFFFF]
    assert murmur2([b"foobar"]).tolist() == [-790332482 & 0xFFFFFFFF]


def test_a_batch_of_mixed_keys_goes_where_the_default_partitioner_sends_each() -> None:
    rng = random.Random(11)
    partitions = [0, 1, 2, 3, 4, 5]
    keys = [f"C{rng.randrange(10 ** rng.randrange(1, 9))}".encode() for _ in range(500)] + [b"", "carte-é".encode()]
    default = DefaultPartitioner()
    assert key_partitions(keys, partitions) == [default(key, partitions, partitions) for key in keys]


def test_no_keys_make_no_hashes_and_no_partitions() -> None:
    assert murmur2([]).tolist() == []
    assert key_partitions([], [0, 1]) == []


def test_a_record_without_a_key_goes_to_one_of_the_partitions() -> None:
    chosen = key_partitions([None, b"a", None], [2, 5, 9])
    assert chosen[0] in (2, 5, 9) and chosen[2] in (2, 5, 9)
    assert chosen[1] == DefaultPartitioner()(b"a", [2, 5, 9], [2, 5, 9])
