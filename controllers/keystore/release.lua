-- Release a reservation: its unconsumed keys' chunks go back to available at their old places
-- (the sorted set, under the numbers they arrived with). KEYS: meta, avail, keys, res, rsv.
-- ARGV: reservation_id. Reply: {OK, keys released}.
local meta, avail, keys, res, rsv = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local existing = redis.call('HGET', res, ARGV[1])
if not existing then
  if redis.call('EXISTS', meta) == 0 then
    return {E_UNKNOWN_STREAM}
  end
  return {E_UNKNOWN_RESERVATION}
end
local record = cjson.decode(existing)
local released, chunks = 0, 0
for _, kid in ipairs(record.k) do
  local krec = redis.call('HGET', keys, kid)
  if krec then
    local key = cjson.decode(krec)
    local zadd = {}
    for c, chunk_id in ipairs(key.c) do
      zadd[#zadd + 1] = key.s[c]
      zadd[#zadd + 1] = chunk_id
    end
    redis.call('ZADD', avail, unpack(zadd))
    redis.call('SREM', rsv, unpack(key.c))
    redis.call('HDEL', keys, kid)
    released = released + 1
    chunks = chunks + #key.c
  end
end
redis.call('HDEL', res, ARGV[1])
redis.call('HINCRBY', meta, 'reserved', -chunks)
return {OK, released}
