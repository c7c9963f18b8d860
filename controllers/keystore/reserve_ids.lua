-- The peer side of a reservation: reserve exactly these keys (the IDs the other node reserved).
-- KEYS: meta, avail, keys, res.
-- ARGV: reservation_id, owner, size_bits, id_namespace, count, then per key:
--       key_id, number of chunks, chunk_id...
-- Reply as reserve.lua; {E_INSUFFICIENT, missing, chunk_id...} when a chunk is not available.
local meta, avail, keys, res = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rid, owner, size_bits, ns = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local count = tonumber(ARGV[5])
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local per_key = chunks_per_key(meta, size_bits)
local wanted = {}
local seen = {}
local at = 6
for k = 1, count do
  local kid, n = ARGV[at], tonumber(ARGV[at + 1])
  local chunk_ids = {}
  for c = 1, n do
    chunk_ids[c] = ARGV[at + 1 + c]
  end
  at = at + 2 + n
  if n ~= per_key or composed_id(ns, chunk_ids) ~= kid then
    return {E_ID_MISMATCH, kid, per_key}
  end
  for _, c in ipairs(chunk_ids) do
    if seen[c] then
      return {E_ID_MISMATCH, kid, per_key}
    end
    seen[c] = true
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
-- First check every chunk, then change anything: all or nothing.
local scores = {}
local missing = {}
for k, w in ipairs(wanted) do
  local s = redis.call('ZMSCORE', avail, unpack(w[2]))
  scores[k] = s
  for c, score in ipairs(s) do
    if not score then
      missing[#missing + 1] = w[2][c]
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
local out = {OK, owner, size_bits}
local key_ids = {}
for k, w in ipairs(wanted) do
  redis.call('ZREM', avail, unpack(w[2]))
  key_ids[k] = w[1]
  redis.call('HSET', keys, w[1], cjson.encode({r = rid, o = owner, b = size_bits, c = w[2],
    s = scores[k]}))
  out[#out + 1] = key_reply(w[1], w[2])
end
redis.call('HSET', res, rid, cjson.encode({o = owner, b = size_bits, k = key_ids, n = count}))
redis.call('HINCRBY', meta, 'reserved', per_key * count)
return out
