-- A hold was delivered (its keys are in the request's Secret): delete its keys and, in the same
-- atomic step, queue the message that hands the keys over to the slave SAE's node (retried until
-- that node acknowledges it, or until it is valid no more; outbox.lua). Idempotent: committing
-- again (a request resumed after a crash) deletes nothing more, and queues no second message
-- while one is queued or once one was acknowledged. The hold may be gone (expired): the message
-- is queued all the same, as its keys may be in the Secret.
-- ARGV: hold_id, message ID ('' for none), its kind, its payload (JSON), valid_ms.
-- Reply: {OK, keys committed}.
local hold_id, msg_id, kind, payload, valid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
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
  local now = now_ms()
  local body = cjson.encode({kind = kind, until_ms = now + tonumber(valid)})
  -- The payload goes in as it is (a JSON object), after the two fields above.
  body = string.sub(body, 1, -2) .. ',"message":' .. payload .. '}'
  outbox_put(ob, obq, msg_id, body, now)
end
return {OK, committed}
