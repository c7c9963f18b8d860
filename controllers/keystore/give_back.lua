-- The peer side of a release: the master node gave back the keys of one of its blocks (none of
-- them was served there). Each key named is 'returned' to the buffer if held here for the pair
-- `owner`; a key whose chunks are all in the buffer anyway (this node never took them: the
-- agreement never reached it) counts as returned too; any other key is 'gone' (delivered to
-- the slave SAE, dropped, or held for someone else), and its chunks still in the buffer, if
-- any, are dropped, since the master node drops its copies of a gone key. Idempotent: a retry
-- finds the returned keys in the buffer and answers alike.
-- ARGV: owner, then per key: key_id, number of chunks, chunk_id...
-- Reply: {OK, {returned key IDs}, {gone key IDs}}.
local owner = ARGV[1]
local base = base_of(meta)
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local returned, gone = {}, {}
local records = {}
local at = 2
while at <= #ARGV do
  local kid, n = ARGV[at], tonumber(ARGV[at + 1])
  local cs = {unpack(ARGV, at + 2, at + 1 + n)}
  at = at + 2 + n
  local where = redis.call('HMGET', out, unpack(cs))
  local bid = out_of(where[1])
  local mine = false
  if bid then
    if records[bid] == nil then
      records[bid] = get_block(blk, bid) or false
    end
    local rec = records[bid]
    mine = rec and rec.r == 's' and rec.o == owner
      and redis.call('SISMEMBER', block_set(base, bid), kid) == 1
  end
  if mine then
    return_keys(meta, avail, out, kc, block_set(base, bid), {kid}, 's')
    returned[#returned + 1] = kid
  else
    local held = redis.call('HMGET', data, unpack(cs))
    local free = {}
    local all_free = true
    for i, c in ipairs(cs) do
      if held[i] and not where[i] then
        free[#free + 1] = c
      else
        all_free = false
      end
    end
    if all_free then
      returned[#returned + 1] = kid
    else
      gone[#gone + 1] = kid
      if #free > 0 then
        -- Chunks of a key the master drops: drop ours too (first out of the buffer).
        local wanted = {}
        for _, c in ipairs(free) do
          wanted[c] = true
        end
        local _, err = locate(meta, avail, incoming, gaps, free, wanted, math.huge, '')
        if err then
          return err
        end
        redis.call('HDEL', data, unpack(free))
        redis.call('HINCRBY', meta, 'dropped', #free)
      end
    end
  end
end
return {OK, returned, gone}
