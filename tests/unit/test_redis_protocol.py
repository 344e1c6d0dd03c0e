"""``streamer.state.redis_protocol.Additions``: how a write's sorted-set additions are laid
out into ``ADD_MANY`` calls (the Redis store's integration tests run them)."""

from __future__ import annotations

import math

import msgpack

from streamer.state import redis_protocol as protocol
from streamer.state.redis_protocol import Additions, EntityCalls, above, below


def test_an_entitys_keys_stay_in_one_call_and_a_call_serves_at_most_per_call_entities() -> None:
    additions = Additions(per_call=2)
    for entity in ("a", "b", "c"):
        additions.entity()
        additions.key(f"{entity}:tx", 1.0, 0, "", 3600, [5.0, f"{entity}1", 6.0, f"{entity}2"])
        additions.key(f"{entity}:rows", None, 64, "LT", 0, [5.0, "r"])
    assert [call_keys for call_keys, _ in additions.calls] == [["a:tx", "a:rows", "b:tx", "b:rows"], ["c:tx", "c:rows"]]
    assert additions.calls[1][1] == [1.0, 0, "", 3600, 2, 5.0, "c1", 6.0, "c2", None, 64, "LT", 0, 1, 5.0, "r"]


def test_per_call_zero_puts_every_entity_in_one_call_and_no_entity_makes_no_call() -> None:
    assert Additions().calls == []
    additions = Additions()
    for entity in range(300):
        additions.entity()
        additions.key(f"t{entity}", None, 0, "", 0, [1.0, "x"])
    assert len(additions.calls) == 1 and len(additions.calls[0][0]) == 300


def test_each_call_is_one_evalsha_of_its_entities_keys_then_the_head_and_their_arguments_packed() -> None:
    calls = EntityCalls(per_call=2)
    for entity, ts in (("a", 1.5), ("b", 2.5), ("c", 3.5)):
        calls.entity([f"{entity}:tx", f"{entity}:rows"], [ts, math.inf, b"row"])
    commands = calls.commands("sha1", [16])
    assert [command[:-1] for command in commands] == [
        ("EVALSHA", "sha1", 4, "a:tx", "a:rows", "b:tx", "b:rows"),
        ("EVALSHA", "sha1", 2, "c:tx", "c:rows"),
    ]
    assert [msgpack.unpackb(command[-1], raw=True) for command in commands] == [
        [16, 1.5, math.inf, b"row", 2.5, math.inf, b"row"], [16, 3.5, math.inf, b"row"],
    ]


def test_exclusive_bounds_become_the_next_double() -> None:
    x = 1_543_536_000.123412345
    assert x < above(x) and math.nextafter(above(x), -math.inf) == x  # no double between them
    assert below(x) < x and math.nextafter(below(x), math.inf) == x
    assert above(-math.inf) > -math.inf


def test_a_users_member_splits_at_its_separator_and_one_stored_before_at_its_last_bar() -> None:
    assert protocol.split_member(protocol.join_ids("e|1", "sku|red").encode()) == ("e|1", "sku|red")
    assert protocol.split_member(b"e|1|sku") == ("e|1", "sku")  # as members were written before
