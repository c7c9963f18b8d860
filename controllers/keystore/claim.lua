-- The slave side: keys held here for the pair `owner` (role 's' blocks), by ID, all or nothing.
-- 'check' only says whether they all are (changing nothing); 'consume' deletes and returns them (delivered, e.g. an ETSI 014 dec_keys answer); 'hold'
-- moves them into the hold `hold_id` (until now + hold_ms, at most as long as they would have
-- been held anyway) and returns them, for a request that writes them somewhere first
-- (commit.lua). A hold is idempotent per hold ID.
-- ARGV: mode ('check', 'consume' or 'hold'), owner, hold_id, hold_ms, key_id...
-- Reply: {OK, {key_id, size_bits, chunk material...}...}; {E_UNKNOWN_KEYS, missing, key_id...}
-- when any key is not held for `owner` (unknown, delivered already, or dropped): nothing taken.
local mode, owner, hold_id, hold_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local base = base_of(meta)
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
if mode == 'hold' then
  local held = get_block(blk, hold_id)
  if held then
    if held.r ~= 'h' or held.o ~= owner then
      return {E_CONFLICT}
    end
    return material_reply(
      kc, data, {OK}, redis.call('SMEMBERS', block_set(base, hold_id)), held.b
    )
  end
end
local records, found, missing, seen = {}, {}, {}, {}
for i = 5, #ARGV do
  local kid = ARGV[i]
  local ok = false
  if not seen[kid] then
    seen[kid] = true
    local cs = key_chunks(kc, kid)
    local bid = out_of(redis.call('HGET', out, cs[1]))
    if bid then
      if records[bid] == nil then
        records[bid] = get_block(blk, bid) or false
      end
      local rec = records[bid]
      ok = rec and rec.r == 's' and rec.o == owner
        and redis.call('SISMEMBER', block_set(base, bid), kid) == 1
    end
    if ok then
      found[#found + 1] = {kid, bid}
    end
  end
  if not ok then
    missing[#missing + 1] = kid
  end
end
if #missing > 0 then
  local reply = {E_UNKNOWN_KEYS, #missing}
  for i = 1, math.min(#missing, 10) do
    reply[#reply + 1] = missing[i]
  end
  return reply
end
if mode == 'check' then
  return {OK}
end
local reply = {OK}
local by_block, key_ids = {}, {}
local size_bits, sdl, lease = nil, nil, 0
for _, f in ipairs(found) do
  local kid, bid = f[1], f[2]
  local rec = records[bid]
  size_bits = rec.b
  sdl = math.min(sdl or rec.dl, rec.dl)
  lease = math.max(lease, rec.ls)
  by_block[bid] = by_block[bid] or {}
  table.insert(by_block[bid], kid)
  key_ids[#key_ids + 1] = kid
end
for _, f in ipairs(found) do
  local entry = key_entry(kc, data, f[1], records[f[2]].b)
  if not entry then
    return {E_CORRUPT, f[1]}
  end
  reply[#reply + 1] = entry
end
if mode == 'consume' then
  for bid, kids in pairs(by_block) do
    remove_keys(meta, data, out, kc, block_set(base, bid), kids, 's', 'consumed')
  end
  return reply
end
local now = now_ms()
local hset, chunks = {}, 0
for bid, kids in pairs(by_block) do
  call_sliced('SREM', block_set(base, bid), kids, SLICE)
  for _, kid in ipairs(kids) do
    local cs = key_chunks(kc, kid)
    local where = redis.call('HMGET', out, unpack(cs))
    for i, c in ipairs(cs) do
      local _, seq = out_of(where[i])
      hset[#hset + 1] = c
      hset[#hset + 1] = hold_id .. '|' .. int(seq)
    end
    chunks = chunks + #cs
  end
end
call_sliced('HSET', out, hset, 2 * SLICE)
call_sliced('SADD', block_set(base, hold_id), key_ids, SLICE)
local dl = math.min(now + hold_ms, sdl)
put_block(blk, hold_id, {r = 'h', o = owner, b = size_bits, k = chunks / #key_ids,
  n = #key_ids, st = 'hold', dl = dl, ls = lease, src = 's', sdl = sdl})
redis.call('ZADD', exp, dl, hold_id)
redis.call('HINCRBY', meta, 'mirrored', -chunks)
redis.call('HINCRBY', meta, 'holding', chunks)
return reply
