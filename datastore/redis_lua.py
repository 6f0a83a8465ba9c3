"""Server-side Lua for the Redis backend: conditional put, delete and ``operate``, each atomic on one hash.

Scripts touch only ``KEYS[1]`` (one record), so they run unchanged on Redis Cluster. They mirror the pure
rules of ``datastore.policy``; on a rule failure they return a status and the state needed for Python to
raise the very error (class, code, message) the embedded store raises, by calling the same policy
function. Nothing is written before every check has passed (Redis does not roll back a failing script).

Value encoding shared with ``redis_store``: an int bin is its decimal string (so ``HINCRBY`` works), a
float is ``b"f" + repr``, anything else is ``b"m" + msgpack``. Reserved fields start with byte 0xFF, which
no UTF-8 bin name can produce: ``\\xffg`` generation, ``\\xffe`` absolute expiry in Unix microseconds
(server clock, ``TIME``). TTL specs passed in: ``""`` never expires, ``"K"`` keep the current expiry,
otherwise seconds (> 0).

Arguments: ``put`` and ``operate`` take all their arguments in ONE string ``ARGV[1]`` (``put``: a sequence
of msgpack objects, ``operate``: one msgpack array), unpacked with Redis' bundled ``cmsgpack`` (one argument
is much cheaper to send through redis-py than fifteen). It is packed with ``use_bin_type=False`` (bytes and
str as msgpack raw, which ``cmsgpack`` reads as Lua strings; it does not know the bin types) and holds no
nil (a nil would cut a Lua array or the list of values short). Numbers in it become Lua doubles, so anything
that must stay exact (int bin values, increments, generations) is sent as a decimal string, as before.

Replies: ``put`` returns the new generation (an integer) on success; ``delete`` returns 1 (deleted) or 0
(absent); ``confirm`` (``cas`` with replicas: the record read, replicated again unchanged) returns 1;
``operate`` returns ``{0, gen, exp_us or -1, [name, value]...}``. Failures are tables:
``{1, current gen or -1}`` policy failure; ``{2, size}`` record too big; ``{3}`` operate on an absent record
without an op that creates data; ``{4, what, bin, old value}`` bad op (``what``: ``type`` incr on a
non-number, ``overflow``, ``list`` append to a non-list).
"""

from __future__ import annotations

PRELUDE = r"""
local GEN, EXP = '\255g', '\255e'
local sbyte, ssub, sfmt = string.byte, string.sub, string.format
local floor = math.floor

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- generation and expiry of the live record, or nil; an expired record is deleted and counts as absent
local function live(k, gen, exp)
  if not gen then return nil, nil end
  if exp and exp <= now_us() then
    redis.call('DEL', k)
    return nil, nil
  end
  return gen, exp
end

local function head(k)
  local h = redis.call('HMGET', k, GEN, EXP)
  return live(k, tonumber(h[1]), tonumber(h[2]))
end

-- head() for a caller that needs the whole hash anyway: the HGETALL reply, then generation and expiry
-- (one call instead of HMGET + HGETALL; the reply is only meaningful when the generation is not nil)
local function head_all(k)
  local all = redis.call('HGETALL', k)
  local gen, exp
  for i = 1, #all, 2 do
    local f = all[i]
    if f == GEN then gen = tonumber(all[i + 1]) elseif f == EXP then exp = tonumber(all[i + 1]) end
  end
  gen, exp = live(k, gen, exp)
  return all, gen, exp
end

-- HSET in chunks (unpack has a stack limit)
local function hset(k, gen, list)
  local n = #list
  local first = math.min(n, 998)
  redis.call('HSET', k, GEN, gen, unpack(list, 1, first))
  local i = first + 1
  while i <= n do
    local j = math.min(n, i + 999)
    redis.call('HSET', k, unpack(list, i, j))
    i = j + 1
  end
end

local function hdel(k, list)
  local i, n = 1, #list
  while i <= n do
    local j = math.min(n, i + 999)
    redis.call('HDEL', k, unpack(list, i, j))
    i = j + 1
  end
end

-- apply a TTL spec after a write; `fresh` is true when the hash was (re)created by this write
local function set_ttl(k, ttl, cur, fresh)
  if ttl == 'K' then
    if cur and fresh then
      redis.call('HSET', k, EXP, sfmt('%.0f', cur))
      redis.call('PEXPIREAT', k, math.ceil(cur / 1000))
    end
    return cur
  elseif ttl == '' then
    if cur and not fresh then
      redis.call('HDEL', k, EXP)
      redis.call('PERSIST', k)
    end
    return nil
  end
  local exp = now_us() + math.ceil(tonumber(ttl) * 1000000)
  redis.call('HSET', k, EXP, sfmt('%.0f', exp))
  redis.call('PEXPIREAT', k, math.ceil(exp / 1000))
  return exp
end
"""

PUT = PRELUDE + r"""
-- ARGV[1] = msgpack objects (not an array): exists (u|c|p|r), generation or '', ttl spec, max bytes, size of
--           the given non-None bins, {field, value, ...} bins to set, {field, ...} bins to remove (None)
local k = KEYS[1]
local mode, want, ttl, max, size, sets, dels = cmsgpack.unpack(ARGV[1])
local all, gen, exp
-- a merge needs the whole hash: one HGETALL reads it with the generation and expiry; so does a small
-- replace, which may then overwrite in place (a big one deletes the hash instead of copying it into Lua)
if mode == 'u' or mode == 'p' or (mode == 'r' and size <= 4096) then
  all, gen, exp = head_all(k)
else
  gen, exp = head(k)
end
if gen then
  if mode == 'c' or (want ~= '' and tonumber(want) ~= gen) then return {1, gen} end
else
  if mode == 'p' or mode == 'r' or (want ~= '' and tonumber(want) ~= 0) then return {1, -1} end
end
if gen and mode ~= 'r' then
  -- merge: the record keeps the bins not given; check the merged size
  local given = {}
  for i = 1, #sets, 2 do given[sets[i]] = true end
  for i = 1, #dels do given[dels[i]] = true end
  for i = 1, #all, 2 do
    local f = all[i]
    if not given[f] and sbyte(f, 1) ~= 255 then size = size + #f + #all[i + 1] end
  end
  if size > max then return {2, size} end
  if #dels > 0 then hdel(k, dels) end
  gen = gen + 1
  hset(k, gen, sets)
  set_ttl(k, ttl, exp, false)
  return gen
end
if size > max then return {2, size} end
local fresh = true
if gen then
  -- replace: the record's bins become exactly the given ones. When the bins it has are the first given
  -- ones in the same order, overwriting in place gives the very hash that DEL + HSET would (cas rewrites
  -- the same bins: this saves the DEL, and keeps the expiry for ttl 'K'); otherwise recreate the hash
  local same = all ~= nil and not (exp and ttl == '')
  if same then
    local j = 1
    for i = 1, #all, 2 do
      local f = all[i]
      if sbyte(f, 1) ~= 255 then
        if f ~= sets[j] then same = false; break end
        j = j + 2
      end
    end
  end
  if same then fresh = false else redis.call('DEL', k) end
end
gen = (gen or 0) + 1
hset(k, gen, sets)
set_ttl(k, ttl, exp, fresh)
return gen
"""

DELETE = PRELUDE + r"""
-- ARGV: generation or ''. Reply 1 deleted, 0 absent, {1, gen} generation mismatch
local k = KEYS[1]
local gen = head(k)
if not gen then return 0 end
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= gen then return {1, gen} end
redis.call('DEL', k)
return 1
"""

OPERATE = PRELUDE + r"""
-- ARGV[1] = msgpack {generation or '', ttl spec (operate's ttl), max bytes, true if the ops create data,
--       then ops as (kind, bin, value, max_len or '') quadruples}; kinds: p put ('' removes), i incr,
--       a append (value = one packed msgpack item), x remove, r read (bin '' = all), t touch (value = ttl)

-- list appends and exact decimal arithmetic: rarely needed, so built on first use (an EVAL script runs
-- its whole body on every call, making each top-level function a new closure every time)
local lib
local function L()
  if lib then return lib end
  local function be16(s, p) return sbyte(s, p) * 256 + sbyte(s, p + 1) end
  local function be32(s, p)
    return ((sbyte(s, p) * 256 + sbyte(s, p + 1)) * 256 + sbyte(s, p + 2)) * 256 + sbyte(s, p + 3)
  end

  -- position after `count` msgpack objects starting at p
  local function skip(s, p, count)
    while count > 0 do
      count = count - 1
      local b = sbyte(s, p)
      if b <= 0x7f or b >= 0xe0 or b == 0xc0 or b == 0xc2 or b == 0xc3 then p = p + 1
      elseif b <= 0x8f then p = p + 1; count = count + 2 * (b - 0x80)
      elseif b <= 0x9f then p = p + 1; count = count + (b - 0x90)
      elseif b <= 0xbf then p = p + 1 + (b - 0xa0)
      elseif b == 0xc4 or b == 0xd9 then p = p + 2 + sbyte(s, p + 1)
      elseif b == 0xc5 or b == 0xda then p = p + 3 + be16(s, p + 1)
      elseif b == 0xc6 or b == 0xdb then p = p + 5 + be32(s, p + 1)
      elseif b == 0xc7 then p = p + 3 + sbyte(s, p + 1)
      elseif b == 0xc8 then p = p + 4 + be16(s, p + 1)
      elseif b == 0xc9 then p = p + 6 + be32(s, p + 1)
      elseif b == 0xca or b == 0xce or b == 0xd2 then p = p + 5
      elseif b == 0xcb or b == 0xcf or b == 0xd3 then p = p + 9
      elseif b == 0xcc or b == 0xd0 then p = p + 2
      elseif b == 0xcd or b == 0xd1 then p = p + 3
      elseif b == 0xd4 then p = p + 3
      elseif b == 0xd5 then p = p + 4
      elseif b == 0xd6 then p = p + 6
      elseif b == 0xd7 then p = p + 10
      elseif b == 0xd8 then p = p + 18
      elseif b == 0xdc then count = count + be16(s, p + 1); p = p + 3
      elseif b == 0xdd then count = count + be32(s, p + 1); p = p + 5
      elseif b == 0xde then count = count + 2 * be16(s, p + 1); p = p + 3
      elseif b == 0xdf then count = count + 2 * be32(s, p + 1); p = p + 5
      else error('corrupt msgpack in list bin') end
    end
    return p
  end

  local function array_head(n)
    if n < 16 then return string.char(0x90 + n) end
    if n < 65536 then return string.char(0xdc, floor(n / 256), n % 256) end
    return string.char(0xdd, floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
  end

  -- 'm' .. msgpack array with item appended (oldest dropped beyond max_len), or nil if old is not a list
  local function append(old, item, max_len)
    local n, body
    if old == nil then
      n, body = 0, ''
    else
      if sbyte(old, 1) ~= 109 then return nil end
      local b = sbyte(old, 2)
      if b >= 0x90 and b <= 0x9f then n, body = b - 0x90, ssub(old, 3)
      elseif b == 0xdc then n, body = be16(old, 3), ssub(old, 5)
      elseif b == 0xdd then n, body = be32(old, 3), ssub(old, 7)
      else return nil end
    end
    body = body .. item
    n = n + 1
    if max_len and n > max_len then
      body = ssub(body, skip(body, 1, n - max_len))
      n = max_len
    end
    return 'm' .. array_head(n) .. body
  end

  -- exact decimal arithmetic (Lua numbers are doubles: exact only below 2^53)
  local function dnorm(s)
    local neg = sbyte(s, 1) == 45
    local m = neg and ssub(s, 2) or s
    m = string.gsub(m, '^0+', '')
    if m == '' then return false, '0' end
    return neg, m
  end
  local function mcmp(a, b)
    if #a ~= #b then return #a < #b and -1 or 1 end
    if a == b then return 0 end
    return a < b and -1 or 1
  end
  local function madd(a, b)
    local out, carry, i, j = {}, 0, #a, #b
    while i > 0 or j > 0 or carry > 0 do
      local s = carry + (i > 0 and sbyte(a, i) - 48 or 0) + (j > 0 and sbyte(b, j) - 48 or 0)
      if s >= 10 then s = s - 10; carry = 1 else carry = 0 end
      out[#out + 1] = string.char(48 + s)
      i, j = i - 1, j - 1
    end
    return string.reverse(table.concat(out))
  end
  local function msub(a, b)  -- a >= b
    local out, borrow, i, j = {}, 0, #a, #b
    while i > 0 do
      local s = sbyte(a, i) - 48 - borrow - (j > 0 and sbyte(b, j) - 48 or 0)
      if s < 0 then s = s + 10; borrow = 1 else borrow = 0 end
      out[#out + 1] = string.char(48 + s)
      i, j = i - 1, j - 1
    end
    local r = string.gsub(string.reverse(table.concat(out)), '^0+', '')
    if r == '' then return '0' end
    return r
  end
  local function dadd(a, b)
    if #a < 16 and #b < 16 then return sfmt('%.0f', tonumber(a) + tonumber(b)) end
    local na, ma = dnorm(a)
    local nb, mb = dnorm(b)
    local neg, m
    if na == nb then
      neg, m = na, madd(ma, mb)
    else
      local c = mcmp(ma, mb)
      if c == 0 then return '0' end
      if c > 0 then neg, m = na, msub(ma, mb) else neg, m = nb, msub(mb, ma) end
    end
    return (neg and '-' or '') .. m
  end
  local function in_range(r)  -- [-2^63, 2^64 - 1], as policy.INT_MIN / INT_MAX
    local neg, m = dnorm(r)
    if neg then return mcmp(m, '9223372036854775808') <= 0 end
    return mcmp(m, '18446744073709551615') <= 0
  end

  lib = {append = append, dadd = dadd, in_range = in_range}
  return lib
end

-- new stored value after incr, or nil + reason
local function incr(old, v)
  if old == nil then old = '0' end
  local ob = sbyte(old, 1)
  local old_int = ob == 45 or (ob >= 48 and ob <= 57)
  if not old_int and ob ~= 102 then return nil, 'type' end
  local v_float = sbyte(v, 1) == 102
  if old_int and not v_float then
    -- both below 10^15 in size: exact as doubles, and the sum is far inside the 64-bit range
    if #old < 16 and #v < 16 then return sfmt('%.0f', tonumber(old) + tonumber(v)) end
    local h = L()
    local r = h.dadd(old, v)
    if not h.in_range(r) then return nil, 'overflow' end
    return r
  end
  local a = old_int and tonumber(old) or tonumber(ssub(old, 2))
  local b = v_float and tonumber(ssub(v, 2)) or tonumber(v)
  return 'f' .. sfmt('%.17g', a + b)
end

local k = KEYS[1]
local a = cmsgpack.unpack(ARGV[1])
local want = a[1]
local all, gen, exp = head_all(k)
if not gen then
  if not a[4] then return {3} end
  if want ~= '' and tonumber(want) ~= 0 then return {1, -1} end
elseif want ~= '' and tonumber(want) ~= gen then
  return {1, gen}
end
local rec = {}
if gen then
  for i = 1, #all, 2 do
    if sbyte(all[i], 1) ~= 255 then rec[all[i]] = all[i + 1] end
  end
end
local out = {0, 0, 0}
local wrote, ttl, dirty = false, a[2], {}
for i = 5, #a, 4 do
  local kind, b, v = a[i], a[i + 1], a[i + 2]
  if kind == 'r' then
    if b == '' then
      for f, val in pairs(rec) do out[#out + 1] = f; out[#out + 1] = val end
    elseif rec[b] then
      out[#out + 1] = b; out[#out + 1] = rec[b]
    end
  else
    wrote = true
    if kind == 'i' then
      local new, why = incr(rec[b], v)
      if not new then return {4, why, b, rec[b] or ''} end
      rec[b] = new; dirty[b] = true
    elseif kind == 'p' then
      if v == '' then rec[b] = nil else rec[b] = v end
      dirty[b] = true
    elseif kind == 'a' then
      local new = L().append(rec[b], v, tonumber(a[i + 3]))
      if not new then return {4, 'list', b, rec[b]} end
      rec[b] = new; dirty[b] = true
    elseif kind == 'x' then
      rec[b] = nil; dirty[b] = true
    elseif kind == 't' then
      ttl = v
    else
      return redis.error_reply('unknown op kind ' .. kind)
    end
  end
end
if not wrote then
  out[2] = gen; out[3] = exp or -1
  return out
end
local size = 0
for f, val in pairs(rec) do size = size + #f + #val end
if size > a[3] then return {2, size} end
local sets, dels = {}, {}
if gen then
  for f in pairs(dirty) do
    local val = rec[f]
    if val then sets[#sets + 1] = f; sets[#sets + 1] = val else dels[#dels + 1] = f end
  end
  if #dels > 0 then hdel(k, dels) end
else
  for f, val in pairs(rec) do sets[#sets + 1] = f; sets[#sets + 1] = val end
end
gen = (gen or 0) + 1
hset(k, gen, sets)
exp = set_ttl(k, ttl, exp, false)
out[2] = gen; out[3] = exp or -1
return out
"""

CONFIRM = PRELUDE + r"""
-- ARGV[1] = generation read. Sets the generation field to its own value: the record does not change, but
-- the write enters the replication stream after every earlier write of the record, so a WAIT after it
-- confirms the replicas hold the record as read. Reply 1, or {1, gen or -1} when the record changed
local k = KEYS[1]
local gen = head(k)
if gen ~= tonumber(ARGV[1]) then return {1, gen or -1} end
redis.call('HSET', k, GEN, ARGV[1])
return 1
"""

SCRIPTS: dict[str, str] = {"put": PUT, "delete": DELETE, "operate": OPERATE, "confirm": CONFIRM}
