-- The peer holds a pending block's keys: make the block servable (into its pool) until
-- t0 + serve_ms, t0 being when it was reserved, before the peer could have received it; so the
-- peer's copies (held lease_ms from when it received them) outlive every key served from it by
-- at least lease_ms - serve_ms.
-- ARGV: block_id, serve_ms. Reply: {OK, 'active'}, {OK, 'late'} (past its serve deadline
-- already: given back at once), or {E_UNKNOWN_BLOCK} (not pending: e.g. the sweeper gave it
-- back meanwhile because the agreement took too long).
local bid, serve = ARGV[1], tonumber(ARGV[2])
local rec = get_block(blk, bid)
if not rec or rec.r ~= 'm' then
  return {E_UNKNOWN_BLOCK}
end
if rec.st == 'active' then
  return {OK, 'active'}
end
if rec.st ~= 'pending' then
  return {E_UNKNOWN_BLOCK}
end
local base = base_of(meta)
local now = now_ms()
if rec.t0 + serve <= now then
  start_release(base, blk, exp, ob, obq, bid, rec, now)
  return {OK, 'late'}
end
rec.st = 'active'
rec.dl = rec.t0 + serve
put_block(blk, bid, rec)
redis.call('ZADD', exp, rec.dl, bid)
local pool = pool_list(base, rec.o, rec.b)
redis.call('RPUSH', pool, bid)
redis.call('SADD', pools, pool)
return {OK, 'active'}
