-- A hold whose keys were certainly not delivered (its request failed before writing them)
-- gives them back where they came from: a master's keys through the release path (the peer
-- returns its copies first, as for any pool block: start_release), a slave's to the keys held
-- for the pair, until the deadline they had there.
-- ARGV: hold_id. Reply: {OK, keys given back}.
local hold_id = ARGV[1]
local rec = get_block(blk, hold_id)
if not rec or rec.r ~= 'h' then
  return {OK, 0}
end
local base = base_of(meta)
local n = redis.call('SCARD', block_set(base, hold_id))
local chunks = n * rec.k
redis.call('HINCRBY', meta, 'holding', -chunks)
if rec.src == 'm' then
  redis.call('HINCRBY', meta, 'pooled', chunks)
  rec.r = 'm'
  rec.st = 'pending'
  start_release(base, blk, exp, ob, obq, hold_id, rec, now_ms())
else
  redis.call('HINCRBY', meta, 'mirrored', chunks)
  rec.r = 's'
  rec.st = 'held'
  rec.dl = rec.sdl
  put_block(blk, hold_id, rec)
  redis.call('ZADD', exp, rec.dl, hold_id)
end
return {OK, n}
