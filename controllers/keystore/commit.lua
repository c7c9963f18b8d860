-- A hold was delivered (its keys are in the request's Secret): delete its keys and, in the same
-- atomic step, queue the message that hands the keys over to the slave SAE's node (retried until
-- that node acknowledges it; outbox.lua). Idempotent: committing again (a request resumed after
-- a crash) deletes nothing more and queues no second message once the first was acknowledged.
-- ARGV: hold_id, message ID ('' for none), message JSON. Reply: {OK, keys committed}.
local hold_id, msg_id, body = ARGV[1], ARGV[2], ARGV[3]
local base = base_of(meta)
local committed = 0
local rec = get_block(blk, hold_id)
if rec and rec.r == 'h' then
  local bset = block_set(base, hold_id)
  local keys = redis.call('SMEMBERS', bset)
  remove_keys(meta, data, out, kc, bset, keys, 'h', 'consumed')
  delete_block(base, blk, exp, hold_id)
  committed = #keys
end
if msg_id ~= '' and not redis.call('ZSCORE', done, msg_id)
  and redis.call('HEXISTS', ob, msg_id) == 0 then
  outbox_put(ob, obq, msg_id, body, now_ms())
end
return {OK, committed}
