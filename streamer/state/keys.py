"""Redis key names, built by pure functions: ``<namespace>:v<schema>:<entity>:{<id>}:<what>``.

The ``{id}`` hash tag keeps every key of one entity in one Redis Cluster slot. Redis
hashes what lies between the first ``{`` and the first ``}`` after it, so an id that
begins with ``}`` would make the tag empty and each key hashed whole, in slots of their
own: such an id goes in behind a backslash (``hash_tag``), and so does one that begins
with a backslash, so that no two ids share a key. Bump ``SCHEMA_VERSION`` when the
layout of a value changes; old keys then simply expire.
"""

from __future__ import annotations

SCHEMA_VERSION = 1


def hash_tag(entity_id: str) -> str:
    """What goes between the key's braces: the id, behind a backslash when it begins
    with ``}`` or a backslash (a tag is never empty; distinct ids, distinct tags)."""
    return "\\" + entity_id if entity_id[:1] in ("}", "\\") else entity_id


def _key(namespace: str, entity: str, entity_id: str, what: str) -> str:
    return f"{namespace}:v{SCHEMA_VERSION}:{entity}:{{{hash_tag(entity_id)}}}:{what}"


def card_log(namespace: str, card_id: str) -> str:
    """String: the card's transactions (with their feature rows, for a sequence model)
    appended as they are stored, behind a header; the layout is
    ``streamer.state.card_log``'s."""
    return _key(namespace, "card", card_id, "log")


def terminal_transactions(namespace: str, terminal_id: str) -> str:
    """Sorted set: member ``<transaction_id>``, score = event time."""
    return _key(namespace, "terminal", terminal_id, "tx")


def terminal_frauds(namespace: str, terminal_id: str) -> str:
    """Sorted set: member ``<transaction_id>|<labelled_at>``, score = transaction time."""
    return _key(namespace, "terminal", terminal_id, "fraud")


def user_sequence(namespace: str, user_id: str) -> str:
    """Sorted set: member ``<event_id>\\x1f<item_id>`` (``redis_protocol.join_ids``),
    score = event time; the last N kept."""
    return _key(namespace, "user", user_id, "seq")


def user_seen(namespace: str, user_id: str) -> str:
    """Sorted set: member ``<item_id>``, score = first time the user touched it."""
    return _key(namespace, "user", user_id, "seen")


def user_embedding(namespace: str, user_id: str) -> str:
    """Hash: ``vector`` (float32 bytes), ``ts``, ``event_id``, ``model``."""
    return _key(namespace, "user", user_id, "emb")


def stream_progress(namespace: str, topic: str) -> str:
    """Hash: partition -> ``<next offset>|<latest event time>`` stored from a consumed topic
    (labels: ``labelled_at``; transactions: their time)."""
    return f"{namespace}:v{SCHEMA_VERSION}:stream:{{{hash_tag(topic)}}}:progress"
