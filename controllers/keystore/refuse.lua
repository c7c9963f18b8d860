-- The peer refused a pending block (it holds nothing of it): its chunks go back to the buffer,
-- except those named here (the peer never will hold them, or holds them for another block) and
-- those in a range the peer said it passed over (a tombstone: its drop notice came while they
-- were in the block), which are dropped, as the other end has none of them to deliver. Kept
-- tombstones whose chunks are all gone now are forgotten (prune_kept in common.lua).
-- ARGV: block_id, chunk_id to drop... Reply: {OK, chunks returned, chunks dropped}; a block
-- that is not pending any more is left alone ({OK, 0, 0}).
local bid = ARGV[1]
local rec = get_block(blk, bid)
if not rec or rec.r ~= 'm' or rec.st ~= 'pending' then
  return {OK, 0, 0}
end
local doomed = {}
for i = 2, #ARGV do
  doomed[ARGV[i]] = true
end
local tombstones = {}
for _, r in ipairs(redis.call('ZRANGE', drops, 0, -1)) do
  local e, s, stop = parse_drop(r)
  tombstones[#tombstones + 1] = {e, s, stop}
end
local function passed_over(epoch, idx)
  for _, t in ipairs(tombstones) do
    if t[1] == epoch and idx >= t[2] and idx < t[3] then
      return true
    end
  end
  return false
end
local base = base_of(meta)
local bset = block_set(base, bid)
local keys = redis.call('SMEMBERS', bset)
local back, destroy, all = {}, {}, {}
for _, kid in ipairs(keys) do
  local cs = key_chunks(kc, kid)
  local where = redis.call('HMGET', out, unpack(cs))
  for i, c in ipairs(cs) do
    all[#all + 1] = c
    if doomed[c] then
      destroy[#destroy + 1] = c
    else
      local _, seq = out_of(where[i])
      back[#back + 1] = {c, seq}
    end
  end
  redis.call('HDEL', kc, kid)
end
local zadd = {}
if #tombstones > 0 and #back > 0 then
  local seqs = {}
  for i, b in ipairs(back) do
    seqs[i] = b[2]
  end
  local idx, epochs = indices_of(segs, seqs)
  for i, b in ipairs(back) do
    if idx[i] >= 0 and passed_over(epochs[i], idx[i]) then
      destroy[#destroy + 1] = b[1]
    else
      zadd[#zadd + 1] = b[2]
      zadd[#zadd + 1] = b[1]
    end
  end
else
  for _, b in ipairs(back) do
    zadd[#zadd + 1] = b[2]
    zadd[#zadd + 1] = b[1]
  end
end
call_sliced('HDEL', out, all, SLICE)
call_sliced('ZADD', avail, zadd, 2 * SLICE)
if #destroy > 0 then
  call_sliced('HDEL', data, destroy, SLICE)
  redis.call('HINCRBY', meta, 'dropped', #destroy)
end
redis.call('HINCRBY', meta, 'pooled', -#all)
delete_block(base, blk, exp, bid)
prune_kept(meta, avail, incoming, gaps, segs, drops, blk)
return {OK, #zadd / 2, #destroy}
