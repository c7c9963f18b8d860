-- Reserve `count` keys of `size_bits` from the oldest available chunks, all or nothing.
-- KEYS: meta, avail, keys, res. ARGV: reservation_id, owner, size_bits, count, id_namespace.
-- Reply: {OK, owner, size_bits, {key_id, chunk_id...}...}; a retry with the same reservation ID
-- gets the same reply.
local meta, avail, keys, res = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rid, owner, size_bits, count, ns = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  ARGV[5]
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local existing = redis.call('HGET', res, rid)
if existing then
  local record = cjson.decode(existing)
  if record.o ~= owner or record.b ~= size_bits or #record.k ~= count then
    return {E_CONFLICT}
  end
  return reservation_reply(keys, record)
end
local per_key = chunks_per_key(meta, size_bits)
local need = per_key * count
local have = redis.call('ZCARD', avail)
if have < need then
  return {E_INSUFFICIENT, need, have}
end
local popped = redis.call('ZPOPMIN', avail, need)
local out = {OK, owner, size_bits}
local key_ids = {}
for k = 0, count - 1 do
  local chunk_ids, seqs = {}, {}
  for c = 1, per_key do
    local at = 2 * (k * per_key + c) - 1
    chunk_ids[c] = popped[at]
    seqs[c] = popped[at + 1]
  end
  local kid = composed_id(ns, chunk_ids)
  key_ids[#key_ids + 1] = kid
  redis.call('HSET', keys, kid, cjson.encode({r = rid, o = owner, b = size_bits, c = chunk_ids,
    s = seqs}))
  out[#out + 1] = key_reply(kid, chunk_ids)
end
redis.call('HSET', res, rid, cjson.encode({o = owner, b = size_bits, k = key_ids, n = count}))
redis.call('HINCRBY', meta, 'reserved', need)
return out
