-- Fetch (read) or consume (read and delete, exactly once) reserved keys by ID, all or nothing.
-- KEYS: meta, data, keys, res, gone (current bucket), rsv.
-- ARGV: mode ('fetch' or 'consume'), owner, tombstone TTL in seconds, key_id...
-- Reply: {OK, {key_id, size_bits, chunk bytes...}...} or {E_UNKNOWN_KEYS, missing, key_id...}.
local meta, data, keys, res, gone, rsv = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local consume, owner, ttl = ARGV[1] == 'consume', ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local found, missing, seen = {}, {}, {}
for i = 4, #ARGV do
  if seen[ARGV[i]] then
    return {E_UNKNOWN_KEYS, 1, ARGV[i]}
  end
  seen[ARGV[i]] = true
  local krec = redis.call('HGET', keys, ARGV[i])
  local key = krec and cjson.decode(krec)
  if key and key.o == owner then
    found[#found + 1] = {ARGV[i], key}
  else
    missing[#missing + 1] = ARGV[i]
  end
end
if #missing > 0 then
  local out = {E_UNKNOWN_KEYS, #missing}
  for i = 1, math.min(#missing, 10) do
    out[#out + 1] = missing[i]
  end
  return out
end
local out = {OK}
local values = {}
for i, f in ipairs(found) do
  local v = redis.call('HMGET', data, unpack(f[2].c))
  for _, b in ipairs(v) do
    if not b then
      return {E_CORRUPT, f[1]}
    end
  end
  values[i] = v
end
local reservations = {}
local chunks = 0
for i, f in ipairs(found) do
  local kid, key = f[1], f[2]
  local entry = {kid, key.b}
  for _, b in ipairs(values[i]) do
    entry[#entry + 1] = b
  end
  out[#out + 1] = entry
  if consume then
    redis.call('HDEL', data, unpack(key.c))
    redis.call('SREM', rsv, unpack(key.c))
    redis.call('SADD', gone, unpack(key.c))
    redis.call('HDEL', keys, kid)
    chunks = chunks + #key.c
    if not reservations[key.r] then
      reservations[key.r] = cjson.decode(redis.call('HGET', res, key.r))
    end
    reservations[key.r].n = reservations[key.r].n - 1
  end
end
if consume then
  for rid, record in pairs(reservations) do
    if record.n <= 0 then
      redis.call('HDEL', res, rid)
    else
      redis.call('HSET', res, rid, cjson.encode(record))
    end
  end
  redis.call('EXPIRE', gone, ttl)
  redis.call('HINCRBY', meta, 'reserved', -chunks)
  redis.call('HINCRBY', meta, 'consumed', chunks)
end
return out
