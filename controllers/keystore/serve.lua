-- Serve `count` keys of the master pool (owner, size_bits), all or nothing, from its active
-- blocks oldest first: 'take' deletes them and returns them (delivered, e.g. an ETSI 014
-- enc_keys answer); 'hold' moves them into the hold `hold_id` (role 'h', until now + hold_ms)
-- and returns them, for a request that must write them somewhere before they count as
-- delivered (commit.lua). A hold is idempotent: the same hold ID returns the same keys.
-- Blocks past their serve deadline are given back on the way (start_release in common.lua).
-- ARGV: mode ('take' or 'hold'), owner, size_bits, count, hold_id, hold_ms.
-- Reply: {OK, keys left in the pool, the hold's deadline (0 for 'take'),
-- {key_id, size_bits, chunk material...}...};
-- {E_INSUFFICIENT, keys in the pool} takes nothing; {E_CONFLICT} if the hold ID is another's.
local mode, owner, size_bits, count = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local hold_id, hold_ms = ARGV[5], tonumber(ARGV[6])
local base = base_of(meta)
if mode == 'hold' then
  local held = get_block(blk, hold_id)
  if held then
    if held.r ~= 'h' or held.o ~= owner or held.b ~= size_bits or held.n ~= count then
      return {E_CONFLICT}
    end
    return material_reply(
      kc, data, {OK, -1, held.dl}, redis.call('SMEMBERS', block_set(base, hold_id)), size_bits
    )
  end
end
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local now = now_ms()
local pool = pool_list(base, owner, size_bits)
local plan, level = {}, 0
for _, bid in ipairs(redis.call('LRANGE', pool, 0, -1)) do
  local rec = get_block(blk, bid)
  if not rec or rec.st ~= 'active' then
    redis.call('LREM', pool, 0, bid)
  elseif rec.dl <= now then
    start_release(base, blk, exp, ob, obq, bid, rec, now)
  else
    local n = redis.call('SCARD', block_set(base, bid))
    if level < count then
      plan[#plan + 1] = {bid, rec, math.min(n, count - level)}
    end
    level = level + n
  end
end
if level < count then
  return {E_INSUFFICIENT, level}
end
local reply = {OK, level - count, mode == 'hold' and now + hold_ms or 0}
local taken, lease, sdl = {}, 0, nil
for _, p in ipairs(plan) do
  local bid, rec, n = p[1], p[2], p[3]
  local bset = block_set(base, bid)
  local kids = redis.call('SPOP', bset, n)
  if mode == 'take' then
    reply = material_reply(kc, data, reply, kids, size_bits)
    if reply[1] ~= OK then
      return reply
    end
    -- SPOP took them out of the set already; remove_keys deletes the rest.
    remove_keys(meta, data, out, kc, bset, kids, 'm', 'consumed')
  else
    for _, kid in ipairs(kids) do
      taken[#taken + 1] = kid
    end
    lease = math.max(lease, rec.ls)
  end
  if redis.call('SCARD', bset) == 0 then
    redis.call('LREM', pool, 0, bid)
    delete_block(base, blk, exp, bid)
  end
end
if mode == 'hold' then
  local hset, chunks = {}, 0
  for _, kid in ipairs(taken) do
    local cs = key_chunks(kc, kid)
    local where = redis.call('HMGET', out, unpack(cs))
    for i, c in ipairs(cs) do
      local _, seq = out_of(where[i])
      hset[#hset + 1] = c
      hset[#hset + 1] = hold_id .. '|' .. int(seq)
    end
    chunks = chunks + #cs
  end
  call_sliced('HSET', out, hset, 2 * SLICE)
  call_sliced('SADD', block_set(base, hold_id), taken, SLICE)
  put_block(blk, hold_id, {r = 'h', o = owner, b = size_bits, k = chunks / #taken, n = count,
    st = 'hold', dl = now + hold_ms, ls = lease, src = 'm'})
  redis.call('ZADD', exp, now + hold_ms, hold_id)
  redis.call('HINCRBY', meta, 'pooled', -chunks)
  redis.call('HINCRBY', meta, 'holding', chunks)
  reply = material_reply(kc, data, reply, taken, size_bits)
end
return reply
