-- The key relay's steps on a request's hold (controllers/delivery/relay.py):
-- 'drop', hold_id, msg_id, kind, payload, valid_ms: a relay was aborted after its keys or pads
--   may have left this node (as IDs or as ciphertext): the hold's keys are dropped, never to be
--   served again, and in the same step a message for the peer is queued (as commit.lua does;
--   msg_id '' for none). The relay is remembered as aborted here for a day (in `done`, as
--   'ab:<hold_id>'), so a late prepare of it is refused. Reply {OK, keys dropped}.
-- 'aborted', hold_id: {OK, 1} if that relay was aborted here, else {OK, 0}.
-- 'held', hold_id: {OK, 1} if a hold `hold_id` is here, else {OK, 0}.
-- 'unclaim', hold_id: a repeater's hold of what came in (claimed from the keys held for the
--   pair, claim.lua) goes back to being keys held for the pair, until the deadline they had, as
--   a block of its own under a new ID, so that the relay ID names nothing here and the
--   source's retry claims them again (cancel.lua would keep the ID, which a claim then refuses
--   as another's block). {OK, keys} (0: no such hold, or not of claimed keys).
-- 'peek', hold_id, owner, key_id...: what a relay message naming these keys finds here, changing
--   nothing (a read: Redis writes no AOF for it, so no fsync). {OK, 'aborted'} if the relay was
--   aborted here; else if its hold is here: {OK, 'opened', tag} once opened, else {OK, 'held',
--   '', {key_id, size_bits, chunk material...}...} (the hold's keys); else {OK, 'free', '',
--   entries as before} (the keys named, each held here for the pair `owner`, role 's', as
--   claim.lua finds them), or {E_UNKNOWN_KEYS, missing} if any is not. {E_CONFLICT} when
--   hold_id names another owner's hold or a block.
-- 'open', hold_id, owner, tag, consume_count, key_id... (consumed), then per relayed key:
--   pad_key_id, key_id, material: at the relay's destination, the hold holds this link's pad
--   keys (claimed by ID); each pad key becomes a relayed key (its chunks now hold the relayed
--   key's material, under the relayed key's ID), and the tag keys are consumed. The hold keeps
--   the tag of the message it opened, so a retry of the same message is answered alike.
--   Reply {OK, 'new'}, {OK, 'again', tag} (opened before), {E_UNKNOWN_BLOCK} (no such hold for
--   owner), {E_UNKNOWN_KEYS, count} (a pad key is not in the hold), {E_CONFLICT} (a relayed
--   key ID is in use here).
-- 'deliver', hold_id, lease_ms: the relay was committed: the opened hold becomes keys held for
--   the slave SAE (role 's', the pair's owner), until now + lease_ms. Idempotent: {OK, keys}
--   (0 when there is no opened hold).
local mode, hold_id = ARGV[1], ARGV[2]
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local base = base_of(meta)
local rec = get_block(blk, hold_id)
local bset = block_set(base, hold_id)
if mode == 'aborted' then
  return {OK, redis.call('ZSCORE', done, 'ab:' .. hold_id) and 1 or 0}
end
if mode == 'held' then
  return {OK, (rec and rec.r == 'h') and 1 or 0}
end
if mode == 'unclaim' then
  if not rec or rec.r ~= 'h' or rec.src ~= 's' then
    return {OK, 0}
  end
  local keys = redis.call('SMEMBERS', bset)
  local bid = hold_id .. '@' .. int(now_ms())
  local hset, chunks = {}, 0
  for _, kid in ipairs(keys) do
    local cs = key_chunks(kc, kid)
    local where = redis.call('HMGET', out, unpack(cs))
    for i, c in ipairs(cs) do
      local _, seq = out_of(where[i])
      hset[#hset + 1] = c
      hset[#hset + 1] = bid .. '|' .. int(seq)
    end
    chunks = chunks + #cs
  end
  call_sliced('HSET', out, hset, 2 * SLICE)
  if #keys > 0 then
    redis.call('RENAME', bset, block_set(base, bid))
  end
  delete_block(base, blk, exp, hold_id)
  rec.r = 's'
  rec.st = 'held'
  rec.dl = rec.sdl
  rec.n = #keys
  put_block(blk, bid, rec)
  redis.call('ZADD', exp, rec.dl, bid)
  redis.call('HINCRBY', meta, 'holding', -chunks)
  redis.call('HINCRBY', meta, 'mirrored', chunks)
  return {OK, #keys}
end
if mode == 'peek' then
  if redis.call('ZSCORE', done, 'ab:' .. hold_id) then
    return {OK, 'aborted'}
  end
  local owner = ARGV[3]
  if rec then
    if rec.r ~= 'h' or rec.o ~= owner then
      return {E_CONFLICT}
    end
    if rec.tag then
      return {OK, 'opened', rec.tag}
    end
    return material_reply(kc, data, {OK, 'held', ''}, redis.call('SMEMBERS', bset), rec.b)
  end
  local reply, missing, records = {OK, 'free', ''}, 0, {}
  for i = 4, #ARGV do
    local kid = ARGV[i]
    local bid = out_of(redis.call('HGET', out, key_chunks(kc, kid)[1]))
    local b = nil
    if bid then
      if records[bid] == nil then
        records[bid] = get_block(blk, bid) or false
      end
      b = records[bid]
    end
    if b and b.r == 's' and b.o == owner
      and redis.call('SISMEMBER', block_set(base, bid), kid) == 1 then
      local e = key_entry(kc, data, kid, b.b)
      if not e then
        return {E_CORRUPT, kid}
      end
      reply[#reply + 1] = e
    else
      missing = missing + 1
    end
  end
  if missing > 0 then
    return {E_UNKNOWN_KEYS, missing}
  end
  return reply
end
if mode == 'drop' then
  redis.call('ZADD', done, now_ms(), 'ab:' .. hold_id)
  local dropped = 0
  if rec and rec.r == 'h' then
    local keys = redis.call('SMEMBERS', bset)
    remove_keys(meta, data, out, kc, bset, keys, 'h', 'dropped')
    delete_block(base, blk, exp, hold_id)
    dropped = #keys
  end
  local msg_id, kind, payload, valid = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  if msg_id ~= '' and redis.call('HEXISTS', ob, msg_id) == 0 then
    local now = now_ms()
    local body = cjson.encode({kind = kind, until_ms = now + tonumber(valid)})
    body = string.sub(body, 1, -2) .. ',"message":' .. payload .. '}'
    outbox_put(ob, obq, msg_id, body, now)
  end
  return {OK, dropped}
end
if mode == 'deliver' then
  if not rec or rec.r ~= 'h' or not rec.tag then
    return {OK, 0}
  end
  local n = redis.call('SCARD', bset)
  local chunks = n * rec.k
  local now = now_ms()
  redis.call('HINCRBY', meta, 'holding', -chunks)
  redis.call('HINCRBY', meta, 'mirrored', chunks)
  rec.r = 's'
  rec.st = 'held'
  rec.n = n
  rec.dl = now + tonumber(ARGV[3])
  rec.ls = tonumber(ARGV[3])
  rec.tag = nil
  put_block(blk, hold_id, rec)
  redis.call('ZADD', exp, rec.dl, hold_id)
  return {OK, n}
end
-- 'open'
local owner, tag, consume = ARGV[3], ARGV[4], tonumber(ARGV[5])
if not rec or rec.r ~= 'h' or rec.o ~= owner then
  return {E_UNKNOWN_BLOCK}
end
if rec.tag then
  return {OK, 'again', rec.tag}
end
local consumed = {}
for i = 1, consume do
  consumed[i] = ARGV[5 + i]
end
local at = 6 + consume
local relayed = {}
while at <= #ARGV do
  relayed[#relayed + 1] = {ARGV[at], ARGV[at + 1], ARGV[at + 2]}
  at = at + 3
end
local missing = 0
for _, kid in ipairs(consumed) do
  if redis.call('SISMEMBER', bset, kid) == 0 then
    missing = missing + 1
  end
end
for _, r in ipairs(relayed) do
  if redis.call('SISMEMBER', bset, r[1]) == 0 then
    missing = missing + 1
  end
  if redis.call('HEXISTS', kc, r[2]) == 1 or redis.call('HEXISTS', out, r[2]) == 1 then
    return {E_CONFLICT}
  end
end
if missing > 0 then
  return {E_UNKNOWN_KEYS, missing}
end
remove_keys(meta, data, out, kc, bset, consumed, 'h', 'consumed')
local piece = tonumber(redis.call('HGET', meta, 'chunk_bytes'))
for _, r in ipairs(relayed) do
  local pad_id, key_id, material = r[1], r[2], r[3]
  local cs = key_chunks(kc, pad_id)
  for i, c in ipairs(cs) do
    redis.call('HSET', data, c, string.sub(material, (i - 1) * piece + 1, i * piece))
  end
  redis.call('HDEL', kc, pad_id)
  redis.call('HSET', kc, key_id, table.concat(cs, ','))
  redis.call('SREM', bset, pad_id)
  redis.call('SADD', bset, key_id)
end
rec.n = #relayed
rec.tag = tag
put_block(blk, hold_id, rec)
return {OK, 'new'}
