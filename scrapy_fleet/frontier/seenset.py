"""The crawl's seen-set: exact (packed, hashed buckets) or Bloom (scalable, blocked).

Both are checked and filled inside the push script (``SEEN_LUA``, included by FLUSH), so
dedupe and enqueue stay one atomic round trip. Every request's fingerprint (any bytes)
is hashed again with SHA-1 inside the script (``redis.sha1hex``), so the layout never
depends on how random the fingerprinter's output is.

**Exact** (``FLEET_DUPEFILTER = "exact"``, the default): one HASH (``SeenKeys.meta``)
whose numbered fields are buckets; a bucket's value is its entries, each the first 10
bytes (80 bits) of SHA-1(fingerprint), packed end to end (a lookup is one
``string.find`` over the bucket, aligned to 10 bytes). The bucket count grows by linear
hashing: when the entries outnumber ``BUCKET_TARGET`` per bucket, one bucket is split
in two, so every step is bounded and a bucket stays near ``BUCKET_TARGET`` entries
(about 1-2.5 KB) from 100 URLs to billions. "Exact" means: two different fingerprints
are taken for one only if their SHA-1s share 80 bits, about n²/2^81 for a crawl of n
URLs (4e-7 at a billion URLs: most likely no URL of it is ever dropped wrongly).

**Bloom** (``"bloom"``): a scalable Bloom filter of layers; layer i holds
``capacity * 2^i`` fingerprints with ``k + i`` hash bits each (k for half the configured
error rate, so the layers' error rates add up to less than it). A check looks at every
layer, an add goes to the newest; when that one is full a new layer is added. Each layer
is cut into blocks (STRING bitmaps of at most 8 MB, ``SeenKeys.block``), and each block
into 1024-bit sub-blocks: a fingerprint's block and sub-block are chosen from its SHA-1
and all its k bits are in that sub-block, so a check is one GETRANGE per layer and an add
one SETRANGE (BITFIELD costs about 2 µs per bit). A blocked filter needs a few percent
more bits than a plain one for the same error rate (``BITS_PER_ENTRY``); the layers are
sized for that. Every key a script touches is in KEYS: the worker computes the blocks a
batch touches from the layer count it knows (:meth:`SeenSet.block_keys`, the same
arithmetic as the script); when another worker added a layer meanwhile, the script
answers "stale" having changed nothing, and the worker re-reads the seen-set and retries.

A crawl keeps the mode it was made with (``mode`` in the HASH, set once): a worker with
another setting follows the crawl. A crawl made before this seen-set (its fingerprints in
the SET ``SeenKeys.legacy``) is exact; the push script reads that SET too and moves
``MIGRATE_STEP`` of its members into the buckets on each push, until it is empty.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scrapy_fleet.frontier.keys import SeenKeys
from scrapy_fleet.frontier.overview import text

logger = logging.getLogger(__name__)

MODES = ("exact", "bloom")  # FLEET_DUPEFILTER; the first is the default
DEFAULT_BLOOM_CAPACITY = 10_000_000  # FLEET_BLOOM_CAPACITY
DEFAULT_BLOOM_ERROR_RATE = 0.001  # FLEET_BLOOM_ERROR_RATE
ENTRY_BYTES = 10  # of SHA-1(fingerprint) per exact entry: 80 bits (seen_entry in Lua)
BUCKET_TARGET = 24  # entries per exact bucket, on average, before one is split
MAX_SPLITS = 16  # bucket splits in one script call, beyond one per BUCKET_TARGET adds
MIGRATE_STEP = 512  # members of an old crawl's SET moved into the buckets per push
MAX_LAYERS = 32
MAX_K = 40
SUB_BITS = 1024  # a Bloom sub-block: all k bits of a fingerprint (one GETRANGE)
SUB_BYTES = SUB_BITS // 8
BLOCK_SUBS = (8 * 1024 * 1024 - SUB_BYTES) // SUB_BYTES  # one block: under 8 MB, far below 512 MB
MAX_CAPACITY = 10**10  # with MIN_ERROR_RATE: layer sizes stay exact in doubles
MIN_ERROR_RATE = 1e-9
# Thousandths of a bit per entry for k = 1..40 bits per fingerprint: the least with which
# a filter of SUB_BITS-bit sub-blocks keeps its false-positive rate at 2^-k when full
# (blocked_fp_rate; tests/test_seenset.py recomputes it). k/ln 2 for a plain filter; the
# sub-blocks' uneven load needs 5% more at k = 11, 18% more at k = 20. Integers, so that
# every worker and the script compute the same layer sizes.
BITS_PER_ENTRY = (
    1443, 2887, 4337, 5797, 7270, 8762, 10277, 11819, 13391, 14999,
    16646, 18337, 20077, 21869, 23718, 25629, 27606, 29655, 31780, 33987,
    36280, 38666, 41149, 43737, 46436, 49251, 52190, 55261, 58470, 61827,
    65339, 69016, 72867, 76901, 81131, 85567, 90220, 95104, 100233, 105619,
)


@dataclass(frozen=True)
class BloomLayer:
    capacity: int  # fingerprints it takes before the next layer is added
    k: int  # bits per fingerprint
    blocks: int
    subs: int  # sub-blocks per block

    @property
    def size_bits(self) -> int:
        return self.blocks * self.subs * SUB_BITS


def bloom_layer(capacity: int, k: int, index: int) -> BloomLayer:
    """Layer ``index`` of a filter whose first layer holds ``capacity`` with ``k`` bits
    each. Integer steps, as ``bloom_layer`` in SEEN_LUA (whose doubles are exact here:
    ``bloom_can_grow`` keeps the products under 2^50), so every worker and the script
    agree on every size."""
    cap = capacity * 2**index
    ki = k + index
    subs = -(-cap * BITS_PER_ENTRY[ki - 1] // (1000 * SUB_BITS))
    blocks = -(-subs // BLOCK_SUBS)
    return BloomLayer(cap, ki, blocks, -(-subs // blocks))


def bloom_can_grow(capacity: int, k: int, layers: int) -> bool:
    """May a filter of ``layers`` layers get one more? (``bloom_can_grow`` in SEEN_LUA:
    its sizes must stay exact in the script's doubles)"""
    return (layers < MAX_LAYERS and k + layers <= MAX_K
            and capacity * 2**layers * BITS_PER_ENTRY[k + layers - 1] < 2**50)


def blocked_fp_rate(k: int, per_sub: float) -> float:
    """The false-positive rate of a filter whose SUB_BITS-bit sub-blocks hold ``per_sub``
    fingerprints of ``k`` bits on average (their load is Poisson-distributed)."""
    if per_sub <= 0:
        return 0.0
    total, j, log_p = 0.0, 0, -per_sub
    while j <= per_sub + 30 * math.sqrt(per_sub) + 60:
        total += math.exp(log_p) * (1 - (1 - 1 / SUB_BITS) ** (k * j)) ** k
        j += 1
        log_p += math.log(per_sub / j)
    return total


def bloom_estimate(capacity: int, k: int, counts: Sequence[int]) -> dict[str, Any]:
    """A filter's size, fill (estimated fraction of its bits set) and estimated
    false-positive rate, from its layers' counts."""
    bits = set_bits = 0.0
    keep = 1.0  # the chance that no layer gives a false positive
    total = 0
    for index, count in enumerate(counts):
        layer = bloom_layer(capacity, k, index)
        bits += layer.size_bits
        set_bits += (1 - math.exp(-layer.k * count / layer.size_bits)) * layer.size_bits
        keep *= 1 - blocked_fp_rate(layer.k, count / (layer.blocks * layer.subs))
        total += layer.capacity
    return {
        "layers": len(counts),
        "count": sum(counts),
        "capacity": total,
        "fill": set_bits / bits if bits else 0.0,
        "fp_rate": 1 - keep,
        "bytes": int(bits // 8),
    }


@dataclass(frozen=True)
class SeenView:
    """The seen-set as a worker last read it (SEEN_INIT)."""

    mode: str
    capacity: int = 0  # Bloom: the first layer's
    k: int = 0
    layers: int = 0

    def bloom_layers(self) -> list[BloomLayer]:
        """Its layers, and the next one if it may grow: a script whose adds fill the
        newest layer goes on in the next one (its blocks must be in KEYS too)."""
        if self.mode != "bloom" or not self.layers:
            return []
        count = self.layers + bloom_can_grow(self.capacity, self.k, self.layers)
        return [bloom_layer(self.capacity, self.k, i) for i in range(count)]


# Fields of the seen-set HASH that describe it (never its buckets): read by status().
STATUS_FIELDS = ["mode", "n", "cap", "k", "layers", *(f"n{i}" for i in range(MAX_LAYERS))]


class SeenSet:
    """A worker's side of one seen-set: its view of it, and the keys and arguments the
    scripts take. The scripts run through the frontier (retries, reloads)."""

    def __init__(self, keys: SeenKeys, *, mode: str = "exact",
                 bloom_capacity: int = DEFAULT_BLOOM_CAPACITY,
                 bloom_error_rate: float = DEFAULT_BLOOM_ERROR_RATE) -> None:
        if mode not in MODES:
            raise ValueError(f"seen-set mode must be one of {MODES}, got {mode!r}")
        self.keys = keys
        self.mode = mode  # for a new seen-set; an existing one keeps its own
        self.bloom_capacity = bloom_capacity
        self.bloom_error_rate = bloom_error_rate
        self.view: SeenView | None = None
        self._layers: list[BloomLayer] = []
        self._warned = False

    def init_args(self) -> list[Any]:
        return [self.mode, self.bloom_capacity, repr(self.bloom_error_rate)]

    def load(self, reply: Sequence[Any]) -> SeenView:
        """Take SEEN_INIT's answer as the current view."""
        mode = text(reply[0])
        view = SeenView(mode, *(int(x) for x in reply[1:4])) if mode == "bloom" else SeenView(mode)
        self.view = view
        self._layers = view.bloom_layers()
        if mode != self.mode and not self._warned:
            self._warned = True
            logger.warning("This crawl's seen-set is %s (it was made so); FLEET_DUPEFILTER = %r "
                           "applies to new crawls only", mode, self.mode)
        return view

    def forget(self) -> None:
        """The crawl was (re)created: read the seen-set again before the next push."""
        self.view = None
        self._layers = []

    def view_args(self) -> list[Any]:
        view = self.view
        return [view.mode, view.layers] if view is not None else ["", 0]

    def block_keys(self, fingerprints: Sequence[bytes]) -> list[str]:
        """The Bloom blocks a check of ``fingerprints`` touches (one per layer each, and
        one in the layer it may grow into); none for the exact set."""
        if not self._layers:
            return []
        wanted: set[tuple[int, int]] = set()
        for fp in fingerprints:
            if fp:
                word = int.from_bytes(hashlib.sha1(fp).digest()[:4], "big")
                wanted.update((i, word % layer.blocks) for i, layer in enumerate(self._layers))
        return [self.keys.block(i, j) for i, j in sorted(wanted)]

    @staticmethod
    def describe(fields: Sequence[Any], legacy: int) -> dict[str, Any]:
        """The seen-set's size (and a Bloom filter's fill and estimated false-positive
        rate) from its STATUS_FIELDS and the old SET's size; junk reads as 0."""
        values = dict(zip(STATUS_FIELDS, (text(v) for v in fields)))
        mode = values.get("mode") or "exact"
        if mode != "bloom":
            return {"mode": mode, "count": _int(values.get("n")) + legacy, "legacy": legacy}
        layers = max(0, min(MAX_LAYERS, _int(values.get("layers"))))
        capacity, k = _int(values.get("cap")), _int(values.get("k"))
        if not (1 <= capacity <= MAX_CAPACITY and 1 <= k <= MAX_K) or k + layers > MAX_K + 1:
            return {"mode": mode, "count": 0, "legacy": legacy}
        counts = [_int(values.get(f"n{i}")) for i in range(layers)]
        return {"mode": mode, "count": sum(counts), "legacy": legacy,
                "bloom": bloom_estimate(capacity, k, counts)}

    @staticmethod
    def combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The seen-set of a split crawl from its partitions' (:meth:`describe`): counts
        add up; a Bloom filter's fill is over all its bits, and its false-positive rate is
        the partitions' mean (a URL is looked up in one partition, each as likely)."""
        if len(parts) == 1:
            return parts[0]
        out: dict[str, Any] = {"mode": parts[0]["mode"], "count": sum(p["count"] for p in parts),
                               "legacy": sum(p["legacy"] for p in parts)}
        blooms = [p["bloom"] for p in parts if "bloom" in p]
        if blooms:
            size = sum(b["bytes"] for b in blooms)
            out["bloom"] = {
                "layers": max(b["layers"] for b in blooms),
                "count": sum(b["count"] for b in blooms),
                "capacity": sum(b["capacity"] for b in blooms),
                "fill": sum(b["fill"] * b["bytes"] for b in blooms) / size if size else 0.0,
                "fp_rate": sum(b["fp_rate"] for b in blooms) / len(parts),
                "bytes": size,
                "partitions": len(parts),
            }
        return out


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


# Lua for the scripts that check and fill a seen-set (FLUSH, SEEN_INIT, SEEN_ADD in
# scripts.py). It needs the PRELUDE's helpers (is_int, incr, K.stats).
SEEN_LUA = f"""
local SEEN_W, SEEN_TARGET, SEEN_SPLITS, SEEN_MIGRATE = {ENTRY_BYTES}, {BUCKET_TARGET}, {MAX_SPLITS}, {MIGRATE_STEP}
local SEEN_MAX_LAYERS, SEEN_MAX_K, SEEN_MAX_CAP, SEEN_MIN_ERROR = {MAX_LAYERS}, {MAX_K}, {MAX_CAPACITY}, {MIN_ERROR_RATE!r}
local SEEN_SUB_BITS, SEEN_SUB_BYTES, SEEN_BLOCK_SUBS = {SUB_BITS}, {SUB_BYTES}, {BLOCK_SUBS}
local SEEN_DEFAULT_ERROR = {DEFAULT_BLOOM_ERROR_RATE!r}
local SEEN_BPE = {{{", ".join(map(str, BITS_PER_ENTRY))}}}
""" + r"""
-- SHA-1 of a fingerprint (any bytes) as its first three 32-bit words, and in hex
local function seen_words(fp)
  local hex = redis.sha1hex(fp)
  return tonumber(string.sub(hex, 1, 8), 16), tonumber(string.sub(hex, 9, 16), 16),
         tonumber(string.sub(hex, 17, 24), 16), hex
end

-- An exact entry: the first SEEN_W (10) bytes of that SHA-1
local function seen_entry(w0, w1, w2)
  local f = math.floor
  return string.char(f(w0 / 16777216), f(w0 / 65536) % 256, f(w0 / 256) % 256, w0 % 256,
                     f(w1 / 16777216), f(w1 / 65536) % 256, f(w1 / 256) % 256, w1 % 256,
                     f(w2 / 16777216), f(w2 / 65536) % 256)
end

-- An integer of the seen-set's HASH within [lo, hi]; nil for junk
local function seen_int(v, lo, hi)
  if not is_int(v) then return nil end
  local n = tonumber(v)
  if n < lo or n > hi then return nil end
  return n
end

-- Bloom layer i (0-based): the same sizes as bloom_layer() in seenset.py
local function bloom_layer(cap, k, i)
  local c, ki = cap * 2 ^ i, k + i
  local subs = math.ceil(c * SEEN_BPE[ki] / (1000 * SEEN_SUB_BITS))
  local blocks = math.ceil(subs / SEEN_BLOCK_SUBS)
  return {cap = c, k = ki, blocks = blocks, subs = math.ceil(subs / blocks)}
end

-- May a filter of `layers` layers get one more? (its sizes stay exact in doubles)
local function bloom_can_grow(cap, k, layers)
  return layers < SEEN_MAX_LAYERS and k + layers <= SEEN_MAX_K
         and cap * 2 ^ layers * SEEN_BPE[k + layers] < 2 ^ 50
end

-- Is `e` one of the SEEN_W-byte entries packed in `v`? (a match must start on an entry)
local function seen_has(v, e)
  local from = 1
  while true do
    local p = string.find(v, e, from, true)
    if not p then return false end
    if (p - 1) % SEEN_W == 0 then return true end
    from = p + 1
  end
end

-- The exact set's bucket count, when its `N` is junk or disagrees with the buckets
-- there (bucket N-1 must exist, bucket N must not): the highest bucket + 1.
local function exact_recount(meta)
  local top = -1
  for _, f in ipairs(redis.call('HKEYS', meta)) do
    if #f <= 9 and string.find(f, '^%d+$') then top = math.max(top, tonumber(f)) end
  end
  local N = math.max(1, top + 1)
  if redis.call('HEXISTS', meta, N - 1) == 0 then redis.call('HSET', meta, N - 1, '') end
  redis.call('HSET', meta, 'N', N)
  incr(K.stats, 'corrupt', 1)
  return N
end

-- Split the next bucket of the linear hash (N buckets, 2^L <= N < 2^(L+1)): bucket
-- N - 2^L keeps the entries whose SHA-1 has N - 2^L modulo 2^(L+1), bucket N gets the rest.
local function exact_split(meta, N)
  local low = 1
  while low * 2 <= N do low = low * 2 end
  local s = N - low
  local v = redis.call('HGET', meta, s) or ''
  local keep, move = {}, {}
  for i = 1, #v - SEEN_W + 1, SEEN_W do
    local e = string.sub(v, i, i + SEEN_W - 1)
    local a, b, c, d = string.byte(e, 1, 4)
    if (((a * 256 + b) * 256 + c) * 256 + d) % (2 * low) == s then
      keep[#keep + 1] = e
    else
      move[#move + 1] = e
    end
  end
  redis.call('HSET', meta, s, table.concat(keep), N, table.concat(move), 'N', N + 1)
  return N + 1
end

local function exact_apply(plan, add)
  local meta, N, fps = plan.meta, plan.N, plan.fps
  local low = 1
  while low * 2 <= N do low = low * 2 end
  local cache, added = {}, 0
  local function bucket(h)
    local b = h % (2 * low)
    if b >= N then b = h % low end
    local c = cache[b]
    if not c then
      local v = redis.call('HGET', meta, b) or ''
      c = {v = v, new = {}, has = {}}
      local extra = #v % SEEN_W
      if extra > 0 then  -- junk: keep its whole entries
        c.v, c.dirty = string.sub(v, 1, #v - extra), true
        incr(K.stats, 'corrupt', 1)
      end
      cache[b] = c
    end
    return c
  end
  -- true if the fingerprint was there; else it is added (if `add`)
  local function check(w0, w1, w2)
    local e = seen_entry(w0, w1, w2)
    local c = bucket(w0)
    if c.has[e] or seen_has(c.v, e) then return true end
    if add then
      c.new[#c.new + 1] = e
      c.has[e] = true
      added = added + 1
    end
    return false
  end
  local old = {}
  if plan.legacy then
    -- a crawl made before this seen-set: its SET of raw fingerprints is read too, and
    -- moved over SEEN_MIGRATE members at a time (SPOP: each is moved once)
    local raw, at = {}, {}
    for i = 1, #fps do
      if fps[i] ~= '' then
        raw[#raw + 1] = fps[i]
        at[#at + 1] = i
      end
    end
    for j = 1, #raw, 4000 do
      local last = math.min(j + 3999, #raw)
      local hit = redis.call('SMISMEMBER', plan.legacy, unpack(raw, j, last))
      for x = j, last do
        if hit[x - j + 1] == 1 then old[at[x]] = true end
      end
    end
    if add then
      for _, member in ipairs(redis.call('SPOP', plan.legacy, SEEN_MIGRATE)) do
        check(seen_words(member))
      end
    end
  end
  local flags = {}
  for i = 1, #fps do
    local w = plan.items[i]
    if not w then
      flags[i] = false
    elseif old[i] then
      flags[i] = true
    else
      flags[i] = check(w[1], w[2], w[3])
    end
  end
  for b, c in pairs(cache) do
    if #c.new > 0 or c.dirty then redis.call('HSET', meta, b, c.v .. table.concat(c.new)) end
  end
  if added > 0 then
    local n = incr(meta, 'n', added)
    local splits = 0
    -- bounded work per call, yet enough to keep pace with a call's adds, however many
    while n > N * SEEN_TARGET and splits < SEEN_SPLITS + added / SEEN_TARGET and N < 2 ^ 31 do
      N = exact_split(meta, N)
      splits = splits + 1
    end
  end
  return flags
end

-- A Bloom sub-block as a string of SEEN_SUB_BYTES (a missing block reads as zeros; one
-- that is not a string is junk: deleted and counted)
local function bloom_read(key, sub)
  local from = sub * SEEN_SUB_BYTES
  local r = redis.pcall('GETRANGE', key, from, from + SEEN_SUB_BYTES - 1)
  if r.err then
    if not string.find(r.err, 'WRONGTYPE', 1, true) then error(r.err) end
    redis.call('DEL', key)
    incr(K.stats, 'corrupt', 1)
    r = ''
  end
  if #r < SEEN_SUB_BYTES then r = r .. string.rep('\0', SEEN_SUB_BYTES - #r) end
  return r
end

-- A fingerprint's k bits in its sub-block, each drawn on its own from its SHA-1: hex
-- digits 17-40, then the SHA-1 of that hex, and so on, 12 bits a bit (not k steps of one
-- stride: within 1024 bits, two fingerprints would too often share most of their bits).
-- Bit b of a sub-block is bit b % 8 of its byte b / 8. `sub` is the sub-block's string
-- as read, or its bytes (a table) once changed in this call. Without `set`: are all k
-- set? (it stops at the first that is not). With `set` (a table): set them all.
local SEEN_MASK = {1, 2, 4, 8, 16, 32, 64, 128}
local function bloom_bits(sub, hex, k, set)
  local byte, floor = string.byte, math.floor
  local table_ = type(sub) == 'table'
  local from, w, left = 17, 0, 0
  for _ = 1, k do
    if left == 0 then
      if from > 29 then hex, from = redis.sha1hex(hex), 1 end
      w, from, left = tonumber(string.sub(hex, from, from + 11), 16), from + 12, 4
    end
    local b = w % SEEN_SUB_BITS
    w, left = floor(w / 4096), left - 1
    local at, mask = floor(b / 8) + 1, SEEN_MASK[b % 8 + 1]
    local v = table_ and sub[at] or byte(sub, at)
    if floor(v / mask) % 2 == 0 then
      if not set then return false end
      sub[at] = v + mask
    end
  end
  return true
end

-- Are these a Bloom filter's parameters, its sizes exact in doubles?
local function bloom_valid(cap, k, layers)
  return cap and k and layers and bloom_can_grow(cap, k, layers - 1)
end

local function bloom_apply(plan, add)
  local layers, fps, items = plan.layers, plan.fps, plan.items
  local nl = plan.used  -- layers in use; #layers is one more when the filter may grow
  local count = plan.count  -- in the newest layer in use
  -- sub-blocks read in this call, by key and number; those changed are written at the end
  local subs, dirty, added, flags = {}, {}, {}, {}
  local function sub_of(key, n)
    local per_key = subs[key]
    if not per_key then
      per_key = {}
      subs[key] = per_key
    end
    local sub = per_key[n]
    if not sub then
      sub = bloom_read(key, n)
      per_key[n] = sub
    end
    return sub
  end
  -- one at a time, so a repeat within the batch finds the bits its first set
  for i = 1, #fps do
    local it = items[i]
    local seen = false
    if it then
      for l = 1, nl do
        if bloom_bits(sub_of(it.keys[l], it[2] % layers[l].subs), it[4], layers[l].k, false) then
          seen = true
          break
        end
      end
      if not seen and add then
        if count >= layers[nl].cap and layers[nl + 1] then
          -- the newest layer is full: the adds go on in a new one, twice as big, with
          -- half the error rate (so the layers' rates add up to less than the target)
          nl, count = nl + 1, 0
          redis.call('HSET', plan.meta, 'layers', nl)
        end
        local layer = layers[nl]
        local key, n = it.keys[nl], it[2] % layer.subs
        local bytes = sub_of(key, n)
        if type(bytes) == 'string' then
          bytes = {string.byte(bytes, 1, SEEN_SUB_BYTES)}
          subs[key][n] = bytes
        end
        bloom_bits(bytes, it[4], layer.k, true)
        dirty[#dirty + 1] = {key, n, layer.subs}
        added[nl] = (added[nl] or 0) + 1
        count = count + 1
      end
    end
    flags[i] = seen
  end
  local made, written = {}, {}
  for _, d in ipairs(dirty) do
    local key, n = d[1], d[2]
    if not made[key] and redis.call('EXISTS', key) == 0 then
      -- a new block, made at its full size at once (growing it by SETRANGE would
      -- reallocate it again and again, and leave it up to twice its size)
      redis.call('SET', key, string.rep('\0', d[3] * SEEN_SUB_BYTES))
    end
    made[key] = true
    if not written[key .. ' ' .. n] then
      written[key .. ' ' .. n] = true
      redis.call('SETRANGE', key, n * SEEN_SUB_BYTES, string.char(unpack(subs[key][n])))
    end
  end
  for l, c in pairs(added) do incr(plan.meta, 'n' .. (l - 1), c) end
  if count >= layers[nl].cap and layers[nl + 1] then
    redis.call('HSET', plan.meta, 'layers', nl + 1)  -- the next call starts in a new layer
  end
  return flags
end

-- Plan a check of `fps` (an array; "" = not filtered) against the seen-set as the worker
-- sees it: its `mode`, and for Bloom its layer count and the blocks it passed in KEYS
-- from `first_block` on. Returns nil when that view is stale (another worker added a
-- layer; the HASH is gone or junk): nothing was changed, and the worker re-reads the
-- seen-set (SEEN_INIT, which also repairs junk) and tries again.
local function seen_prepare(meta, legacy, first_block, mode, layers, fps)
  local m = redis.pcall('HMGET', meta, 'mode', 'N', 'n', 'cap', 'k', 'layers')
  if m.err or m[1] ~= mode then return nil end
  local plan = {meta = meta, mode = mode, fps = fps, items = {}}
  for i = 1, #fps do
    if fps[i] ~= '' then plan.items[i] = {seen_words(fps[i])} end
  end
  if mode == 'bloom' then
    local cap, k = seen_int(m[4], 1, SEEN_MAX_CAP), seen_int(m[5], 1, SEEN_MAX_K)
    local nl = seen_int(m[6], 1, SEEN_MAX_LAYERS)
    if not bloom_valid(cap, k, nl) or nl ~= tonumber(layers) then return nil end
    plan.cap, plan.k, plan.layers = cap, k, {}
    -- the layers, and the next one if the filter may grow: once the adds of this call
    -- fill the newest layer, they go on in the next one (its blocks are in KEYS too)
    local nk = nl
    if bloom_can_grow(cap, k, nl) then nk = nl + 1 end
    for i = 1, nk do plan.layers[i] = bloom_layer(cap, k, i - 1) end
    plan.used = nl
    plan.count = seen_int(redis.call('HGET', meta, 'n' .. (nl - 1)), 0, 2 ^ 50) or 0
    local blocks = {}  -- [layer + 1][block + 1] = its key
    for l = 1, nk do blocks[l] = {} end
    for i = first_block, K.last do
      local l, b = string.match(KEYS[i], ':(%d+):(%d+)$')
      l = tonumber(l)
      if l and l < nk then blocks[l + 1][tonumber(b) + 1] = KEYS[i] end
    end
    for _, it in pairs(plan.items) do
      it.keys = {}
      for l = 1, nk do
        local key = blocks[l][it[1] % plan.layers[l].blocks + 1]
        if not key then return nil end
        it.keys[l] = key
      end
    end
    return plan
  end
  -- exact: junk in the counts is repaired here (the bucket count from the buckets; the
  -- entry count estimated, it only paces the splits)
  local N = seen_int(m[2], 1, 2 ^ 31)
  if not (N and redis.call('HEXISTS', meta, N - 1) == 1 and redis.call('HEXISTS', meta, N) == 0) then
    N = exact_recount(meta)
  end
  if not seen_int(m[3], 0, 2 ^ 50) then
    redis.call('HSET', meta, 'n', N * SEEN_TARGET)
    incr(K.stats, 'corrupt', 1)
  end
  plan.N = N
  local kind = redis.call('TYPE', legacy).ok
  if kind == 'set' then
    plan.legacy = legacy
  elseif kind ~= 'none' then
    redis.call('DEL', legacy)  -- junk where an old crawl's SET would be
    incr(K.stats, 'corrupt', 1)
  end
  return plan
end

-- Check the planned fingerprints; with `add`, record those not seen (a repeat within
-- the batch is seen). Returns an array of booleans, true = seen, false for "".
local function seen_apply(plan, add)
  if plan.mode == 'bloom' then return bloom_apply(plan, add) end
  return exact_apply(plan, add)
end

-- Make the seen-set if it does not exist (in mode `want`; exact for a crawl that has an
-- old SET of fingerprints), repair junk in its HASH, and describe it:
-- {mode, first layer's capacity, k, layer count} (zeros for exact).
local function seen_init(meta, legacy, want, cap_arg, error_arg)
  local m = redis.pcall('HMGET', meta, 'mode', 'cap', 'k', 'layers', 'N')
  if m.err then  -- not a hash: junk
    redis.call('DEL', meta)
    incr(K.stats, 'corrupt', 1)
    m = {}
  end
  local mode = m[1]
  if mode ~= 'exact' and mode ~= 'bloom' then
    if mode then incr(K.stats, 'corrupt', 1) end  -- junk in the field: the fields tell
    if m[4] then
      mode = 'bloom'
    elseif m[5] or redis.call('TYPE', legacy).ok == 'set' then
      mode = 'exact'
    else
      mode = want
    end
    redis.call('HSET', meta, 'mode', mode)
    if mode == 'exact' and not m[5] then redis.call('HSET', meta, 'N', 1, 'n', 0, 0, '') end
  end
  if mode == 'exact' then return {mode, 0, 0, 0} end
  local cap, k = seen_int(m[2], 1, SEEN_MAX_CAP), seen_int(m[3], 1, SEEN_MAX_K)
  local layers = seen_int(m[4], 1, SEEN_MAX_LAYERS)
  if not bloom_valid(cap, k, layers) then
    -- new, or junk (counted): what is missing or junk comes from this worker's settings
    if m[2] or m[3] or m[4] then incr(K.stats, 'corrupt', 1) end
    if not bloom_valid(cap, k, 1) then
      -- the first layer's rate at capacity, 2^-k, is at most half the error rate: the
      -- layers after it, each half the one before, add up to the other half
      local err = math.max(tonumber(error_arg) or SEEN_DEFAULT_ERROR, SEEN_MIN_ERROR)
      cap = math.max(1, math.min(SEEN_MAX_CAP, math.floor(tonumber(cap_arg) or 1)))
      k = math.max(1, math.ceil(math.log(2 / err) / math.log(2)))
    end
    if not bloom_valid(cap, k, layers) then layers = 1 end
    redis.call('HSET', meta, 'cap', cap, 'k', k, 'layers', layers)
  end
  return {mode, cap, k, layers}
end
"""
