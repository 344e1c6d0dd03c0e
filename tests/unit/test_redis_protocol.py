"""``streamer.state.redis_protocol.Additions``: how a write's sorted-set additions are laid
out into ``ADD_MANY`` calls (the Redis store's integration tests run them)."""

from __future__ import annotations

from streamer.state.redis_protocol import Additions, EntityCalls


def test_an_entitys_keys_stay_in_one_call_and_a_call_serves_at_most_per_call_entities() -> None:
    additions = Additions(per_call=2)
    for entity in ("a", "b", "c"):
        additions.entity()
        additions.key(f"{entity}:tx", "(1.0", 0, "", 3600, ["5.0", f"{entity}1", "6.0", f"{entity}2"])
        additions.key(f"{entity}:rows", "", 64, "LT", 0, ["5.0", "r"])
    assert [call_keys for call_keys, _ in additions.calls] == [["a:tx", "a:rows", "b:tx", "b:rows"], ["c:tx", "c:rows"]]
    assert additions.calls[1][1] == ["(1.0", 0, "", 3600, 2, "5.0", "c1", "6.0", "c2", "", 64, "LT", 0, 1, "5.0", "r"]


def test_per_call_zero_puts_every_entity_in_one_call_and_no_entity_makes_no_call() -> None:
    assert Additions().calls == []
    additions = Additions()
    for entity in range(300):
        additions.entity()
        additions.key(f"t{entity}", "", 0, "", 0, ["1.0", "x"])
    assert len(additions.calls) == 1 and len(additions.calls[0][0]) == 300


def test_each_call_is_one_evalsha_of_its_entities_keys_then_the_head_then_their_arguments() -> None:
    calls = EntityCalls(per_call=2)
    for entity in ("a", "b", "c"):
        calls.entity([f"{entity}:tx", f"{entity}:rows"], [f"({entity}", "+inf"])
    assert calls.commands("sha1", [16]) == [
        ("EVALSHA", "sha1", 4, "a:tx", "a:rows", "b:tx", "b:rows", 16, "(a", "+inf", "(b", "+inf"),
        ("EVALSHA", "sha1", 2, "c:tx", "c:rows", 16, "(c", "+inf"),
    ]
