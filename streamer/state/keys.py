"""Redis key names, built by pure functions: ``<namespace>:v<schema>:<entity>:{<id>}:<what>``.

The ``{id}`` hash tag keeps every key of one entity in one Redis Cluster slot. Bump
``SCHEMA_VERSION`` when the layout of a value changes; old keys then simply expire.
"""

from __future__ import annotations

SCHEMA_VERSION = 1


def _key(namespace: str, entity: str, entity_id: str, what: str) -> str:
    return f"{namespace}:v{SCHEMA_VERSION}:{entity}:{{{entity_id}}}:{what}"


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
    """Sorted set: member ``<event_id>|<item_id>``, score = event time; the last N kept."""
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
    return f"{namespace}:v{SCHEMA_VERSION}:stream:{{{topic}}}:progress"
