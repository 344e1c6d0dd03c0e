"""Per-card, per-terminal and per-user state: the interface, key names, the Redis store, an in-memory twin."""
