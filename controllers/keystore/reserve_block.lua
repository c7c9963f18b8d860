-- A master node's pool block: take `count` keys of `size_bits` from the oldest (or the newest)
-- available chunks, all or nothing, into block `block_id` (state 'pending' until the peer holds
-- the same keys: activate.lua). Either way the chunks are the `need` consecutive ones at that
-- end of the available order, and each key is made of consecutive ones in stream order, so its
-- ID is the one the peer derives from its chunk IDs (accept.lua).
-- ARGV: block_id, owner, size_bits, count, id_namespace, end ('oldest' or 'newest'), lease_ms
--       (how long the peer may hold its copies), pending_ms (how long the agreement may take).
-- Reply: {OK, state, {key_id, chunk_id, device index, epoch, chunk_id, ...}...} (the epoch of
-- the key stream the index counts in: common.lua); a retry
-- with the same block ID gets the same keys (whichever end it names), or {E_CONFLICT} if the
-- ID names another block; {E_INSUFFICIENT, need, have} takes nothing.
local bid, owner, size_bits, count, ns = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  ARGV[5]
local newest = ARGV[6] == 'newest'
local lease, pending = tonumber(ARGV[7]), tonumber(ARGV[8])
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local base = base_of(meta)
local existing = get_block(blk, bid)
if existing then
  if existing.r ~= 'm' or existing.o ~= owner or existing.b ~= size_bits or existing.n ~= count
  then
    return {E_CONFLICT}
  end
  local reply = {OK, existing.st}
  for _, kid in ipairs(redis.call('SMEMBERS', block_set(base, bid))) do
    local cs = key_chunks(kc, kid)
    local where = redis.call('HMGET', out, unpack(cs))
    local seqs = {}
    for i = 1, #cs do
      local _, seq = out_of(where[i])
      seqs[i] = seq
    end
    local idx, epochs = indices_of(segs, seqs)
    local entry = {kid}
    for i, c in ipairs(cs) do
      entry[#entry + 1] = c
      entry[#entry + 1] = idx[i]
      entry[#entry + 1] = epochs[i]
    end
    reply[#reply + 1] = entry
  end
  return reply
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
local now = now_ms()
local bset = block_set(base, bid)
local indices, epochs = indices_of(segs, seqs)
local reply = {OK, 'pending'}
local hset, key_ids = {}, {}
for k = 0, count - 1 do
  local chunk_ids = {}
  local entry = {}
  for c = 1, per_key do
    local i = k * per_key + c
    chunk_ids[c] = ids[i]
    hset[#hset + 1] = ids[i]
    hset[#hset + 1] = bid .. '|' .. int(seqs[i])
    entry[#entry + 1] = ids[i]
    entry[#entry + 1] = indices[i]
    entry[#entry + 1] = epochs[i]
  end
  local kid = composed_id(ns, chunk_ids)
  if per_key > 1 then
    redis.call('HSET', kc, kid, table.concat(chunk_ids, ','))
  end
  key_ids[k + 1] = kid
  table.insert(entry, 1, kid)
  reply[#reply + 1] = entry
end
call_sliced('HSET', out, hset, 2 * SLICE)
call_sliced('SADD', bset, key_ids, SLICE)
put_block(blk, bid, {r = 'm', o = owner, b = size_bits, k = per_key, n = count, st = 'pending',
  t0 = now, dl = now + pending, ls = lease})
redis.call('ZADD', exp, now + pending, bid)
redis.call('HINCRBY', meta, 'pooled', need)
return reply
