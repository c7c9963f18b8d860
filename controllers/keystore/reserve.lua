-- Reserve `count` keys of `size_bits` from the oldest available chunks, all or nothing.
-- KEYS: meta, avail, incoming, keys, res, rsv.
-- ARGV: reservation_id, owner, size_bits, count, id_namespace.
-- Reply: {OK, owner, size_bits, {key_id, chunk_id...}...}; a retry with the same reservation ID
-- gets the same reply.
local meta, avail, incoming, keys, res, rsv = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
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
local have = available(avail, incoming)
if have < need then
  return {E_INSUFFICIENT, need, have}
end
-- Oldest first: the sorted set holds chunks older than any in the incoming list.
local ids, seqs = {}, {}
local from_set = math.min(need, redis.call('ZCARD', avail))
if from_set > 0 then
  local popped = redis.call('ZPOPMIN', avail, from_set)
  for i = 1, from_set do
    ids[i] = popped[2 * i - 1]
    seqs[i] = tonumber(popped[2 * i])
  end
end
local from_list = need - from_set
if from_list > 0 then
  local head = tonumber(redis.call('HGET', meta, 'head'))
  local popped = redis.call('LPOP', incoming, from_list)
  for i = 1, from_list do
    ids[from_set + i] = popped[i]
    seqs[from_set + i] = head + i - 1
  end
  redis.call('HSET', meta, 'head', head + from_list)
end
call_sliced('SADD', rsv, ids, SLICE)
local out = {OK, owner, size_bits}
local key_ids = {}
for k = 0, count - 1 do
  local chunk_ids, chunk_seqs = {}, {}
  for c = 1, per_key do
    chunk_ids[c] = ids[k * per_key + c]
    chunk_seqs[c] = seqs[k * per_key + c]
  end
  local kid = composed_id(ns, chunk_ids)
  key_ids[k + 1] = kid
  redis.call('HSET', keys, kid, cjson.encode({r = rid, o = owner, b = size_bits, c = chunk_ids,
    s = chunk_seqs}))
  out[#out + 1] = key_reply(kid, chunk_ids)
end
redis.call('HSET', res, rid, cjson.encode({o = owner, b = size_bits, k = key_ids, n = count}))
redis.call('HINCRBY', meta, 'reserved', need)
return out
