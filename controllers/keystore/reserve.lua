-- Reserve `count` keys of `size_bits` from the oldest (or the newest) available chunks, all or
-- nothing. Either way the chunks are the `need` consecutive ones at that end of the available
-- order, and each key is made of consecutive ones in stream order, so its ID is the one the
-- peer derives from its chunk IDs (reserve_ids.lua).
-- KEYS: meta, avail, incoming, keys, res, rsv, gaps.
-- ARGV: reservation_id, owner, size_bits, count, id_namespace, end ('oldest' or 'newest').
-- Reply: {OK, owner, size_bits, {key_id, chunk_id...}...}; a retry with the same reservation ID
-- gets the same reply (whichever end it names).
local meta, avail, incoming, keys, res, rsv = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local gaps = KEYS[7]
local rid, owner, size_bits, count, ns = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  ARGV[5]
local newest = ARGV[6] == 'newest'
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
-- Take `need` chunks from one end of the available order: the sorted set and the list merged
-- by number. Each step takes a run from one of them that no chunk of the other lies within.
local ids, seqs = {}, {}
local function take(popped, number, step)
  for i, c in ipairs(popped) do
    ids[#ids + 1] = c
    seqs[#seqs + 1] = number + (i - 1) * step
  end
end
local function take_scored(scored)
  for i = 1, #scored, 2 do
    ids[#ids + 1] = scored[i]
    seqs[#seqs + 1] = tonumber(scored[i + 1])
  end
end
while #ids < need do
  local want, before = need - #ids, #ids
  local list_empty = redis.call('LLEN', incoming) == 0
  if not newest then
    local head = tonumber(redis.call('HGET', meta, 'head'))
    local first = redis.call('ZRANGE', avail, 0, 0, 'WITHSCORES')
    if list_empty or (first[1] and tonumber(first[2]) < head) then
      -- The sorted set's chunks older than the list's first.
      local scored = redis.call('ZRANGE', avail, '-inf', list_empty and '+inf' or '(' .. int(head),
        'BYSCORE', 'LIMIT', 0, want, 'WITHSCORES')
      if #scored > 0 then
        redis.call('ZREMRANGEBYRANK', avail, 0, #scored / 2 - 1)
      end
      take_scored(scored)
    else
      local popped, number = pop_head(meta, incoming, gaps, want)
      take(popped, number, 1)
    end
  else
    local tail = list_empty and 0 or list_tail(meta, gaps)
    local last = redis.call('ZRANGE', avail, -1, -1, 'WITHSCORES')
    if list_empty or (last[1] and tonumber(last[2]) > tail) then
      -- The sorted set's chunks newer than the list's last.
      local scored = redis.call('ZRANGE', avail, '+inf', list_empty and '-inf' or '(' .. int(tail),
        'BYSCORE', 'REV', 'LIMIT', 0, want, 'WITHSCORES')
      if #scored > 0 then
        redis.call('ZREMRANGEBYRANK', avail, -#scored / 2, -1)
      end
      take_scored(scored)
    else
      local popped, number = pop_tail(meta, incoming, gaps, want)
      take(popped, number, -1)
    end
  end
  if #ids == before then
    -- Cannot happen while the counts are right: the chunks counted available are not there.
    return redis.error_reply('key store: stream ' .. meta .. ' has fewer chunks than counted')
  end
end
if newest then
  -- Newest first so far; every key's chunks go in stream order, as the oldest end gives them.
  local n = #ids
  for i = 1, math.floor(n / 2) do
    ids[i], ids[n + 1 - i] = ids[n + 1 - i], ids[i]
    seqs[i], seqs[n + 1 - i] = seqs[n + 1 - i], seqs[i]
  end
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
