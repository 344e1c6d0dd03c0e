"""A card's state in Redis: one string its transactions are appended to (``keys.card_log``).

A card's transactions were two sorted sets (``id|amount`` and the feature rows), each
pruned on every write. Under load those writes were half of Redis's CPU per transaction:
a sorted set of a month of a card's transactions is a listpack, which every ``ZADD``
scans whole (docs/benchmarks.md, the session of 2026-12-06 from 08:52 UTC). Appending is
cheap whatever the card holds, so a batch appends each card's transactions, and the log
is compacted only once it has doubled since it last was.

Layout: a header, ``HEADER`` (a prune mark; the log's size after its last compaction),
then records in the order they were stored, each ``RECORD`` (event time, amount, the
id's and the row's byte lengths), the transaction id (UTF-8), and the feature row
(``ROW_BYTES``, or nothing for a model without card sequences). A re-processed
transaction is appended again; readers keep one record per id.

The prune mark is the latest ``prune below`` a write asked for: the newest event time
stored, less the card horizon and the prune grace (``behind``). A reader and a
compaction take it from the records (the newest one is never compacted away), or from
the header where that is higher; the header holds it as of the log's creation or its
last compaction, so an append reads the header's size and writes nothing else (keeping
the mark there cost a ``SETRANGE`` per card per write: a twelfth of Redis's calls for a
transaction, docs/benchmarks.md, the session of 2026-12-06 from 14:18 UTC).

What a reader gets is what the sorted sets gave (``read``): the transactions of a time
window at or above the prune mark, and the latest ``CARD_ROWS_CAP`` rows (by event time,
then id) of those stored, whatever their age. A compaction keeps every record from the
first one that either could still be read (at or above the mark, or among the
``CARD_ROWS_CAP`` latest distinct event times), so it never changes an answer.
"""

from __future__ import annotations

import math
import struct

from streamer.events import Transaction
from streamer.features.fraud import CardHistory
from streamer.state.redis_protocol import UNPACK

HEADER = struct.Struct("<dI")
RECORD = struct.Struct("<ddIH")
#: A log is compacted once it is larger than twice its size after the last compaction
#: plus this many bytes: a card's appends then cost a compaction every few dozen.
COMPACT_SLACK_BYTES = 4096

# Per card (KEYS: its log): append its records, compact the log once it has doubled,
# set the TTL unless it is 0. A: the prune mark's lag behind the newest event time
# (``behind``), then per card: records, this write's prune mark (its newest event time
# less ``behind``), rows kept (0: the records carry none), TTL.
APPEND_CARDS = UNPACK + """
local HEADER, SIZE_AT, RECORD, SLACK = %(header)d, %(size_at)d, %(record)d, %(slack)d
local behind = A[1]
local at = 2
for k = 1, #KEYS do
  local key, records, mark, keep, ttl = KEYS[k], A[at], A[at + 1], A[at + 2], A[at + 3]
  at = at + 4
  local size = redis.call('APPEND', key, records)
  local compacted
  if size == #records then  -- a new log: its header first
    size = HEADER + size
    compacted = size
    redis.call('SET', key, struct.pack('<dI4', mark, size) .. records)
  else
    compacted = struct.unpack('<I4', redis.call('GETRANGE', key, SIZE_AT, HEADER - 1))
  end
  if size > 2 * compacted + SLACK then
    local log = redis.call('GET', key)
    local times, starts, n, pos = {}, {}, 0, HEADER + 1
    local header_mark = struct.unpack('<d', log)
    if header_mark > mark then mark = header_mark end
    while pos <= #log do
      local ts, id_bytes, row_bytes = struct.unpack('<dxxxxxxxxI4H', log, pos)
      n = n + 1
      times[n], starts[n] = ts, pos
      if ts - behind > mark then mark = ts - behind end
      pos = pos + RECORD + id_bytes + row_bytes
    end
    -- the oldest time still read: the mark, or the keep-th latest distinct time if older
    local oldest = mark
    if keep > 0 then
      local distinct, seen = {}, {}
      for i = 1, n do
        if not seen[times[i]] then
          seen[times[i]] = true
          distinct[#distinct + 1] = times[i]
        end
      end
      if #distinct <= keep then
        oldest = -math.huge
      else
        table.sort(distinct)
        oldest = math.min(oldest, distinct[#distinct - keep + 1])
      end
    end
    local cut = pos
    for i = 1, n do
      if times[i] >= oldest then
        cut = starts[i]
        break
      end
    end
    local kept = string.sub(log, cut)
    redis.call('SET', key, struct.pack('<dI4', mark, HEADER + #kept) .. kept, 'KEEPTTL')
  end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return #KEYS
""" % {"header": HEADER.size, "size_at": struct.calcsize("<d"), "record": RECORD.size, "slack": COMPACT_SLACK_BYTES}


def record(tx: Transaction, row: bytes) -> bytes:
    """A transaction's record, as appended (``row``: its feature row, or nothing)."""
    tx_id = tx.transaction_id.encode()
    return RECORD.pack(tx.ts, tx.amount, len(tx_id), len(row)) + tx_id + row


def read(log: bytes | None, lo: float, hi: float, rows_kept: int, rows_wanted: int, behind: float
         ) -> tuple[CardHistory, list[tuple[float, str, bytes]]]:
    """A card's transactions with lo < event time <= hi, and (``rows_wanted`` > 0) the
    latest ``rows_wanted`` rows up to ``hi`` of its latest ``rows_kept``, as the sorted
    sets this replaced answered: each sorted by (event time, id), one per transaction.
    ``behind``: the prune mark's lag behind the newest event time, as the log's writes
    were given it."""
    if not log:
        return CardHistory(), []
    mark, newest = HEADER.unpack_from(log)[0], -math.inf
    transactions: dict[str, tuple[float, str, float]] = {}
    rows: dict[str, tuple[float, str, bytes]] = {}
    unpack, size, end, pos = RECORD.unpack_from, RECORD.size, len(log), HEADER.size
    while pos < end:
        ts, amount, id_bytes, row_bytes = unpack(log, pos)
        pos += size
        tx_id = log[pos : pos + id_bytes].decode()
        pos += id_bytes
        newest = max(newest, ts)
        if lo < ts <= hi:
            transactions.setdefault(tx_id, (ts, tx_id, amount))
        if row_bytes and rows_wanted:
            rows.setdefault(tx_id, (ts, tx_id, log[pos : pos + row_bytes]))
        pos += row_bytes
    mark = max(mark, newest - behind)
    history = CardHistory.of(entry for entry in transactions.values() if entry[0] >= mark)
    if not rows_wanted:
        return history, []
    latest = sorted(rows.values())[-rows_kept:]  # one per id: ordered by (event time, id) alone
    return history, [entry for entry in latest if entry[0] <= hi][-rows_wanted:]
