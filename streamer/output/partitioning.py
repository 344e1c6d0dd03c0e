"""Which partition a keyed record goes to: Kafka's default partitioner, for many keys at once.

The Java client, librdkafka's ``murmur2_random`` and aiokafka put a keyed record in
partition ``(murmur2(key) & 0x7fffffff) % partitions`` (of the topic's partitions by
id), so records of one key from any of them land together, and downstream consumers can
join topics partitioned alike. aiokafka computes ``murmur2`` in pure Python, about 3 µs
per key on the benchmark machine: more than the rest of sending an output record.
``key_partitions`` computes the same hash over a batch's keys in numpy, one array
operation per 4 bytes of key (keys of one length at a time); a record without a key goes
to a random partition, as aiokafka's ``DefaultPartitioner`` sends it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

SEED = 0x9747B28C
M = np.uint32(0x5BD1E995)


def murmur2(keys: Sequence[bytes]) -> np.ndarray:
    """Kafka's 32-bit murmur2 of each key (all of one length), as unsigned ints."""
    if not keys:
        return np.zeros(0, dtype=np.uint32)
    length = len(keys[0])
    data = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), length)
    h = np.full(len(keys), (SEED ^ length) & 0xFFFFFFFF, dtype=np.uint32)
    blocks = length // 4
    words = np.ascontiguousarray(data[:, : 4 * blocks]).view("<u4")  # little-endian, as the reference reads them
    for i in range(blocks):
        k = words[:, i] * M
        k ^= k >> 24
        k *= M
        h *= M
        h ^= k
    tail = data[:, 4 * blocks :].astype(np.uint32)
    extra = length % 4
    if extra >= 3:
        h ^= tail[:, 2] << 16
    if extra >= 2:
        h ^= tail[:, 1] << 8
    if extra >= 1:
        h ^= tail[:, 0]
        h *= M
    h ^= h >> 13
    h *= M
    h ^= h >> 15
    return h


def key_partitions(keys: Sequence[bytes | None], partitions: Sequence[int]) -> list[int]:
    """The partition of each record by its key, among a topic's ``partitions`` (sorted
    by id); a record without a key gets a random one."""
    chosen: list[int] = [random.choice(partitions) if key is None else -1 for key in keys]
    by_length: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        if key is not None:
            by_length.setdefault(len(key), []).append(index)
    for indexes in by_length.values():
        hashes = murmur2([keys[i] for i in indexes])  # type: ignore[misc]
        for index, slot in zip(indexes, ((hashes & 0x7FFFFFFF) % len(partitions)).tolist()):
            chosen[index] = partitions[slot]
    return chosen
