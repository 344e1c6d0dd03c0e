"""Per-card, per-terminal and per-user state: key names, the Redis store, an in-memory twin."""
