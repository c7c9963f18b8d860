-- The peer side of a pool block: hold exactly these keys (the IDs the master node put in its
-- block) for the pair `owner`, as block `block_id` (role 's') until now + lease_ms, all or
-- nothing. The keys leave the buffer, so they never stop ingest; the slave SAE fetches them by
-- ID (claim.lua) until the deadline, when the rest are dropped (sweep.lua).
-- ARGV: block_id, owner, size_bits, id_namespace, flush_limit, direction ('' on the first
--       call, then what {E_RETRY} returned), lease_ms, held_max (bound on mirrored chunks),
--       count, then per key: key_id, number of chunks, then per chunk: chunk_id, device index
--       (-1 if unknown), epoch of the index's key stream (common.lua).
-- Reply: {OK, 'new'|'again'}; {E_CONFLICT} if the block ID names another block;
-- {E_ID_MISMATCH, key_id, chunks_per_key}; {E_HELD_BOUND, mirrored, held_max};
-- {E_REFUSED, {never...}, {not_yet...}, {taken...}} (chunk IDs): never = not here, and this
-- end's ingest passed it (an epoch this end has left, or below the cursor in the cursor's
-- epoch, or a range the peer dropped), so it never will be; not_yet = beyond the ingest cursor
-- (or of a later epoch than the cursor's); taken = here but out of the buffer (in another
-- block). A refusal changes nothing.
-- {E_RETRY, direction} as locate() in common.lua.
local bid, owner, size_bits, ns = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local flush_limit, direction = tonumber(ARGV[5]), ARGV[6]
local lease, held_max, count = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local per_key = chunks_per_key(meta, size_bits)
local wanted, all, index, epoch_of, seen = {}, {}, {}, {}, {}
local key_ids = {}
local at = 10
for k = 1, count do
  local kid, n = ARGV[at], tonumber(ARGV[at + 1])
  local chunk_ids = {}
  for c = 1, n do
    local chunk = ARGV[at + 3 * c - 1]
    chunk_ids[c] = chunk
    if seen[chunk] then
      return {E_ID_MISMATCH, kid, per_key}
    end
    seen[chunk] = true
    all[#all + 1] = chunk
    index[chunk] = tonumber(ARGV[at + 3 * c])
    epoch_of[chunk] = tonumber(ARGV[at + 3 * c + 1])
  end
  at = at + 2 + 3 * n
  if n ~= per_key or composed_id(ns, chunk_ids) ~= kid then
    return {E_ID_MISMATCH, kid, per_key}
  end
  wanted[k] = {kid, chunk_ids}
  key_ids[k] = kid
end
local base = base_of(meta)
local existing = get_block(blk, bid)
if existing then
  if existing.r ~= 's' or existing.o ~= owner or existing.b ~= size_bits or existing.n ~= count
  then
    return {E_CONFLICT}
  end
  return {OK, 'again'}
end
-- Check every chunk before changing anything.
local m = redis.call('HMGET', meta, 'cursor', 'mirrored', 'epoch')
local cursor, mirrored, epoch = tonumber(m[1] or 0), tonumber(m[2] or 0), tonumber(m[3] or 0)
local never, not_yet, taken = {}, {}, {}
for first = 1, #all, SLICE do
  local part = {unpack(all, first, math.min(#all, first + SLICE - 1))}
  local held = redis.call('HMGET', data, unpack(part))
  local where = redis.call('HMGET', out, unpack(part))
  for i, c in ipairs(part) do
    if where[i] then
      taken[#taken + 1] = c
    elseif not held[i] then
      -- An index compares with the cursor and the tombstones only within its own epoch.
      local idx, e = index[c], epoch_of[c]
      local passed = idx >= 0 and (e < epoch or (e == epoch and (idx < cursor
        or peer_dropped(drops, e, idx))))
      if passed then
        never[#never + 1] = c
      else
        not_yet[#not_yet + 1] = c
      end
    end
  end
end
if #never + #not_yet + #taken > 0 then
  return {E_REFUSED, never, not_yet, taken}
end
if mirrored + #all > held_max then
  return {E_HELD_BOUND, mirrored, held_max}
end
local seq, err = locate(meta, avail, incoming, gaps, all, seen, flush_limit, direction)
if err then
  return err
end
local hset = {}
for _, w in ipairs(wanted) do
  for _, c in ipairs(w[2]) do
    hset[#hset + 1] = c
    hset[#hset + 1] = bid .. '|' .. int(seq[c])
  end
  if per_key > 1 then
    redis.call('HSET', kc, w[1], table.concat(w[2], ','))
  end
end
call_sliced('HSET', out, hset, 2 * SLICE)
call_sliced('SADD', block_set(base, bid), key_ids, SLICE)
local now = now_ms()
put_block(blk, bid, {r = 's', o = owner, b = size_bits, k = per_key, n = count, st = 'held',
  dl = now + lease, ls = lease})
redis.call('ZADD', exp, now + lease, bid)
redis.call('HINCRBY', meta, 'mirrored', #all)
return {OK, 'new'}
