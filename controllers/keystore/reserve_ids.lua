-- The peer side of a reservation: reserve exactly these keys (the IDs the other node reserved).
-- KEYS: meta, avail, incoming, data, keys, res, rsv, gaps.
-- ARGV: reservation_id, owner, size_bits, id_namespace, flush_limit, direction ('' on the first
--       call, then what {E_RETRY} returned), count, then per key: key_id, number of chunks,
--       chunk_id...
-- Reply as reserve.lua; {E_INSUFFICIENT, missing, chunk_id...} when a chunk is not available;
-- {E_RETRY, direction} when the chunks lie deeper in the incoming list than flush_limit:
-- entries before them have been moved to the sorted set (which changes nothing a caller can
-- see) and the call should be repeated with that direction. Chunks are found at once in the
-- usual case: the peer reserved its oldest chunks, which are this node's oldest too, or its
-- newest (reserve from_newest), which are at the end of this node's list, searched from there.
local meta, avail, incoming, data = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local keys, res, rsv, gaps = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local rid, owner, size_bits, ns = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local flush_limit, direction, count = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local per_key = chunks_per_key(meta, size_bits)
local wanted = {}
local all = {}
local at = 8
for k = 1, count do
  local kid, n = ARGV[at], tonumber(ARGV[at + 1])
  local chunk_ids = {}
  for c = 1, n do
    chunk_ids[c] = ARGV[at + 1 + c]
    all[#all + 1] = chunk_ids[c]
  end
  at = at + 2 + n
  if n ~= per_key or composed_id(ns, chunk_ids) ~= kid then
    return {E_ID_MISMATCH, kid, per_key}
  end
  wanted[k] = {kid, chunk_ids}
end
local existing = redis.call('HGET', res, rid)
if existing then
  local record = cjson.decode(existing)
  if record.o ~= owner or record.b ~= size_bits or #record.k ~= count then
    return {E_CONFLICT}
  end
  for k, w in ipairs(wanted) do
    if record.k[k] ~= w[1] then
      return {E_CONFLICT}
    end
  end
  return reservation_reply(keys, record)
end
-- Available means held and not reserved. Check every chunk before changing anything.
local missing = {}
local seen = {}
for first = 1, #all, SLICE do
  local part = {unpack(all, first, math.min(#all, first + SLICE - 1))}
  local held = redis.call('HMGET', data, unpack(part))
  local reserved = redis.call('SMISMEMBER', rsv, unpack(part))
  for i, c in ipairs(part) do
    if seen[c] then
      return {E_ID_MISMATCH, c, per_key}
    end
    seen[c] = true
    if not held[i] or reserved[i] == 1 then
      missing[#missing + 1] = c
    end
  end
end
if #missing > 0 then
  local out = {E_INSUFFICIENT, #missing}
  for i = 1, math.min(#missing, 10) do
    out[#out + 1] = missing[i]
  end
  return out
end
-- Each chunk is in the sorted set (with its number) or else in the incoming list.
local seq = {}
local in_list = 0
for first = 1, #all, SLICE do
  local part = {unpack(all, first, math.min(#all, first + SLICE - 1))}
  local scores = redis.call('ZMSCORE', avail, unpack(part))
  for i, c in ipairs(part) do
    if scores[i] then
      seq[c] = tonumber(scores[i])
    else
      in_list = in_list + 1
    end
  end
end
if in_list > 0 then
  -- Pop from one end of the list until every wanted chunk is found; the others move to the
  -- sorted set under their own numbers, so the order of what stays available does not change.
  -- Search from the end nearer the chunks: a peer that reserved from the newest end named
  -- chunks at the list's end. A retried call keeps the direction the first one chose.
  if direction == '' then
    local function hits(entries)
      local n = 0
      for _, c in ipairs(entries) do
        if seen[c] and not seq[c] then
          n = n + 1
        end
      end
      return n
    end
    local at_head = hits(redis.call('LRANGE', incoming, 0, SLICE - 1))
    local at_tail = hits(redis.call('LRANGE', incoming, -SLICE, -1))
    direction = at_tail > at_head and 'tail' or 'head'
  end
  local moved = 0
  local found = {}
  while in_list > 0 do
    if moved >= flush_limit then
      -- Give back what this call found, so that everything popped is in the sorted set.
      local zadd = {}
      for _, c in ipairs(found) do
        zadd[#zadd + 1] = seq[c]
        zadd[#zadd + 1] = c
      end
      call_sliced('ZADD', avail, zadd, 2 * SLICE)
      return {E_RETRY, direction}
    end
    local popped, number, step
    if direction == 'tail' then
      popped, number = pop_tail(meta, incoming, gaps, SLICE)
      step = -1
    else
      popped, number = pop_head(meta, incoming, gaps, SLICE)
      step = 1
    end
    if #popped == 0 then
      return {E_CORRUPT, all[1]}
    end
    local zadd = {}
    for i, c in ipairs(popped) do
      local n = number + (i - 1) * step
      if seen[c] and not seq[c] then
        seq[c] = n
        found[#found + 1] = c
        in_list = in_list - 1
      else
        zadd[#zadd + 1] = n
        zadd[#zadd + 1] = c
      end
    end
    call_sliced('ZADD', avail, zadd, 2 * SLICE)
    moved = moved + #popped
  end
end
for first = 1, #all, SLICE do
  local part = {unpack(all, first, math.min(#all, first + SLICE - 1))}
  redis.call('ZREM', avail, unpack(part))
end
call_sliced('SADD', rsv, all, SLICE)
local out = {OK, owner, size_bits}
local key_ids = {}
for k, w in ipairs(wanted) do
  local seqs = {}
  for c, chunk_id in ipairs(w[2]) do
    seqs[c] = seq[chunk_id]
  end
  key_ids[k] = w[1]
  redis.call('HSET', keys, w[1], cjson.encode({r = rid, o = owner, b = size_bits, c = w[2],
    s = seqs}))
  out[#out + 1] = key_reply(w[1], w[2])
end
redis.call('HSET', res, rid, cjson.encode({o = owner, b = size_bits, k = key_ids, n = count}))
redis.call('HINCRBY', meta, 'reserved', #all)
return out
