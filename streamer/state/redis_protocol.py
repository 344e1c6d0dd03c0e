"""How ``RedisStateStore`` talks to Redis: batched Lua scripts, their replies, packing.

The scripts each serve many entities in one call: ``EntityCalls`` lays out a script's
calls as entities are added (``Additions``: the sorted-set writes'), the reply parsers
turn script replies into entries, and ``with_hiredis_packing`` makes redis-py's asyncio
client pack commands in C (``pack_cluster_commands_with_hiredis``: its cluster client).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import hiredis
import msgpack
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.connection import HiredisRespSerializer


# In every script KEYS holds a fixed number of keys per entity, and ARGV[1] their
# arguments in the same order as one MessagePack array (``A``, unpacked by the script's
# ``cmsgpack``): one argument per call instead of a dozen per entity, which the client
# packed at about 150 ns each and Redis parsed one by one. Keys of one entity share a
# hash tag, so a call for one entity stays within one Redis Cluster slot
# (``entities_per_call=1``).
#
# Event times travel as numbers: Redis turns a number it is given by a script into
# text that reads back as the same double (Lua's own ``..`` would keep 14 digits), so an
# exclusive bound ``(x`` goes as the inclusive bound ``above(x)``, the next double up.
UNPACK = "local A = cmsgpack.unpack(ARGV[1])\n"


def pack(arguments: list[object]) -> bytes:
    """A script call's arguments as its ``A``. Byte strings go as MessagePack's raw
    strings, the only kind Redis's ``cmsgpack`` reads (it rejects the newer bin type)."""
    packed: bytes = msgpack.packb(arguments, use_bin_type=False)
    return packed


def above(x: float) -> float:
    """The inclusive score bound that means "greater than ``x``" (Redis's ``(x``)."""
    return math.nextafter(x, math.inf)


def below(x: float) -> float:
    """The inclusive score bound that means "less than ``x``"."""
    return math.nextafter(x, -math.inf)


# Per key: replace the cached embedding only by one of a later (ts, event_id); set the
# TTL unless it is 0 (``RecentRefreshes``). A per key: vector, ts, event_id, model, ttl.
SET_EMBEDDINGS_IF_NEWER = UNPACK + """
for k = 1, #KEYS do
  local at = 5 * k - 4
  local new_ts = A[at + 1]
  local old = redis.call('HMGET', KEYS[k], 'ts', 'event_id')
  if old[1] == false or tonumber(old[1]) < new_ts or (tonumber(old[1]) == new_ts and old[2] <= A[at + 2]) then
    redis.call('HSET', KEYS[k], 'vector', A[at], 'ts', new_ts, 'event_id', A[at + 2], 'model', A[at + 3])
  end
  if A[at + 4] > 0 then redis.call('EXPIRE', KEYS[k], A[at + 4]) end
end
return #KEYS
"""

# Per terminal (KEYS: tx, fraud): its transactions and frauds from lo to hi (inclusive
# bounds). A: lo, hi per terminal.
READ_TERMINALS = UNPACK + """
local out = {}
for t = 1, #KEYS / 2 do
  local lo, hi = A[2 * t - 1], A[2 * t]
  out[t] = {redis.call('ZRANGEBYSCORE', KEYS[2 * t - 1], lo, hi, 'WITHSCORES'),
            redis.call('ZRANGEBYSCORE', KEYS[2 * t], lo, hi, 'WITHSCORES')}
end
return out
"""

# Per terminal (KEYS: tx, fraud): its frauds from lo to hi, and its transactions counted
# per window for m window ends: ZCOUNT from start to end for each of the end's starts
# (WINDOWS_DAYS ascending; inclusive bounds).
# A: the number of windows w, then per terminal: lo, hi, m, then m times: the end and
# its w window starts.
COUNT_TERMINALS = UNPACK + """
local windows = A[1]
local at = 2
local out = {}
for t = 1, #KEYS / 2 do
  local lo, hi, m = A[at], A[at + 1], A[at + 2]
  at = at + 3
  local counts = {}
  for e = 1, m do
    local stop, base = A[at], #counts
    -- the windows are nested (ascending), so once one is empty the narrower ones are too
    local count = 1
    for w = windows, 1, -1 do
      if count > 0 then count = redis.call('ZCOUNT', KEYS[2 * t - 1], A[at + w], stop) end
      counts[base + w] = count
    end
    at = at + windows + 1
  end
  out[t] = {redis.call('ZRANGEBYSCORE', KEYS[2 * t], lo, hi, 'WITHSCORES'), counts}
end
return out
"""

# Per user (KEYS: sequence, seen, emb): the whole sequence and seen set, with scores,
# and the cached embedding.
READ_USERS = """
local out = {}
for u = 1, #KEYS / 3 do
  out[u] = {redis.call('ZRANGE', KEYS[3 * u - 2], 0, -1, 'WITHSCORES'),
            redis.call('ZRANGE', KEYS[3 * u - 1], 0, -1, 'WITHSCORES'),
            redis.call('HGETALL', KEYS[3 * u])}
end
return out
"""

# Per sorted set: add (score, member) pairs (ZADD's flag: '' or 'LT'), prune the
# scores up to a bound (nil: none) and beyond the newest ``keep`` entries (0: no cap),
# set the TTL unless it is 0. A per key: prune, keep, flag, ttl, n, n pairs.
ADD_MANY = UNPACK + """
local at = 1
for k = 1, #KEYS do
  local key, prune, keep, flag, ttl, n = KEYS[k], A[at], A[at + 1], A[at + 2], A[at + 3], A[at + 4]
  at = at + 5
  local last = at + 2 * n - 1
  for from = at, last, 4000 do
    local to = math.min(from + 3999, last)
    if flag == '' then
      redis.call('ZADD', key, unpack(A, from, to))
    else
      redis.call('ZADD', key, flag, unpack(A, from, to))
    end
  end
  at = last + 1
  if prune then redis.call('ZREMRANGEBYSCORE', key, '-inf', prune) end
  if keep > 0 then redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1)) end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return #KEYS
"""

# The stream progress (KEYS: the hash): A holds partition, value pairs. A script like
# the writes before it in the round trip, so that it fails with them when Redis has
# lost its scripts (``RedisStateStore._execute``).
SET_PROGRESS = UNPACK + """
redis.call('HSET', KEYS[1], unpack(A))
return 1
"""


class EntityCalls:
    """A script's calls, laid out call by call as entities are added: each call's keys and
    its arguments after the head. An entity's keys stay in one call, and a call serves at
    most ``per_call`` entities (0: all of them)."""

    def __init__(self, per_call: int = 0) -> None:
        self.per_call = per_call
        self.calls: list[tuple[list[str], list[object]]] = []
        self._entities = 0
        """Entities in the last call."""

    def entity(self, keys: Sequence[str] = (), args: Sequence[object] = ()) -> None:
        """Start an entity, with its keys and arguments (more may follow)."""
        if not self.calls or self._entities == self.per_call:
            self.calls.append(([], []))
            self._entities = 0
        self._entities += 1
        call_keys, call_args = self.calls[-1]
        call_keys += keys
        call_args += args

    def commands(self, sha: str, head: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """One ``EVALSHA`` of the script ``sha`` per call: its keys, then its arguments
        after ``head`` as one MessagePack array."""
        return [("EVALSHA", sha, len(call_keys), *call_keys, pack([*head, *call_args])) for call_keys, call_args in self.calls]


class Additions(EntityCalls):
    """What ``ADD_MANY`` calls add: per entity (``entity``), its sorted sets (``key``)."""

    def key(self, key: str, prune: float | None, keep: int, flag: str, ttl: int, pairs: list[object]) -> None:
        """A key of the entity: the score up to which it is pruned (inclusive, ``below``)
        or None, how many to keep or 0, its ZADD flag or '', the TTL to set or 0, and its
        flat (score, member) pairs."""
        call_keys, call_args = self.calls[-1]
        call_keys.append(key)
        call_args += (prune, keep, flag, ttl, len(pairs) // 2)
        call_args += pairs


def pairs(flat: Sequence[bytes]) -> list[tuple[bytes, float]]:
    """A Lua ``WITHSCORES`` reply (member, score, member, score, …) as pairs."""
    return [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]


#: Between the two ids of a two-id member (a user's ``event_id`` and ``item_id``): ids
#: hold no control characters (``streamer.events``), so either may hold any other. And
#: it sorts below them all, so Redis orders such members by their first id, as the
#: in-memory store does. Members stored before it used ``|``.
ID_SEPARATOR = "\x1f"


def join_ids(head: str, tail: str) -> str:
    return f"{head}{ID_SEPARATOR}{tail}"


def split_member(member: bytes) -> tuple[str, str]:
    """A ``join_ids`` member as its two ids (one stored before: at its last ``|``)."""
    text = member.decode()
    head, separator, tail = text.partition(ID_SEPARATOR)
    if not separator:
        head, _, tail = text.rpartition("|")
    return head, tail


def _strings(flat: Sequence[bytes]) -> list[str]:
    """A reply's byte strings decoded at once (members and scores never hold a newline)."""
    return b"\n".join(flat).decode().split("\n") if flat else []


def id_entries(flat: Sequence[bytes]) -> list[tuple[float, str]]:
    """A ``WITHSCORES`` reply of ``id`` members as ``(score, id)``."""
    strings = _strings(flat)
    return [(float(score), member) for member, score in zip(strings[::2], strings[1::2])]


def numbered_entries(flat: Sequence[bytes]) -> list[tuple[float, str, float]]:
    """A ``WITHSCORES`` reply of ``id|number`` members (a card's amount, a fraud's
    ``labelled_at``) as ``(score, id, number)``."""
    strings = _strings(flat)
    out = []
    for member, score in zip(strings[::2], strings[1::2]):
        head, _, tail = member.rpartition("|")
        out.append((float(score), head, float(tail)))
    return out


_PACKER = HiredisRespSerializer()  # hiredis is a dependency (redis[hiredis])


def _pack(*args: object) -> bytes:
    """One command in the Redis protocol, packed by hiredis (C)."""
    if isinstance(args[0], str) and " " in args[0]:  # "SCRIPT LOAD": two words on the wire
        args = (*args[0].split(), *args[1:])
    packed: bytes
    try:
        packed = hiredis.pack_command(args)  # type: ignore[arg-type]  # raises TypeError for what it cannot pack
    except TypeError:  # memoryview or bytearray arguments: redis-py's packer converts them
        packed = _PACKER.pack(*args)[0]  # type: ignore[arg-type]
    return packed


def with_hiredis_packing(connection_class: type) -> type:
    """``connection_class`` packing commands with hiredis, as redis-py's synchronous
    client does; its asyncio client packs argument by argument in Python."""

    class HiredisPacking(connection_class):  # type: ignore[misc]
        def pack_command(self, *args: object) -> list[bytes]:
            return [_pack(*args)]

        def pack_commands(self, commands: Iterable[Iterable[object]]) -> list[bytes]:
            return [b"".join(_pack(*command) for command in commands)]

    HiredisPacking.__name__ = HiredisPacking.__qualname__ = f"Hiredis{connection_class.__name__}"
    return HiredisPacking


def pack_cluster_commands_with_hiredis(client: RedisCluster) -> None:
    """A cluster client's connections packing with hiredis (``with_hiredis_packing``):
    those to the node it starts from and to the nodes it learns of later, which take
    their connection class from the settings the client keeps. Call it before the
    client's first command."""
    settings = client.nodes_manager.connection_kwargs
    settings["connection_class"] = with_hiredis_packing(settings.get("connection_class", Connection))
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = settings["connection_class"]
