-- Add a batch of chunks, idempotent per chunk ID, up to the stream's capacity.
-- KEYS: meta, avail, data, gone (current bucket), gone (previous bucket).
-- ARGV: id1, bytes1, id2, bytes2, ...
-- Reply: {OK, accepted, duplicates, refused}; the refused chunks are always the batch's tail.
local meta, avail, data, gone_cur, gone_prev = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local m = redis.call('HMGET', meta, 'capacity', 'chunk_bytes', 'added', 'reserved')
if not m[1] then
  return {E_UNKNOWN_STREAM}
end
local chunk_bytes = tonumber(m[2])
local n = #ARGV / 2
for i = 1, n do
  if #ARGV[2 * i] ~= chunk_bytes then
    return {E_BAD_CHUNK, i - 1, chunk_bytes}
  end
end
local added = tonumber(m[3])
local room = tonumber(m[1]) - redis.call('ZCARD', avail) - tonumber(m[4])
local check_cur = redis.call('EXISTS', gone_cur) == 1
local check_prev = redis.call('EXISTS', gone_prev) == 1
local accepted, duplicates, refused = 0, 0, 0
local seen = {}
local first = 1
while first <= n and refused == 0 do
  local last = math.min(n, first + SLICE - 1)
  local ids = {}
  for i = first, last do
    ids[#ids + 1] = ARGV[2 * i - 1]
  end
  -- One HMGET (and SMISMEMBER per tombstone bucket) per slice rather than one call per chunk.
  local held = redis.call('HMGET', data, unpack(ids))
  local dead_cur = check_cur and redis.call('SMISMEMBER', gone_cur, unpack(ids)) or {}
  local dead_prev = check_prev and redis.call('SMISMEMBER', gone_prev, unpack(ids)) or {}
  local hset, zadd = {}, {}
  for j, id in ipairs(ids) do
    if held[j] or seen[id] or dead_cur[j] == 1 or dead_prev[j] == 1 then
      duplicates = duplicates + 1
    elseif accepted >= room then
      refused = n - (first + j - 1) + 1
      break
    else
      seen[id] = true
      accepted = accepted + 1
      added = added + 1
      hset[#hset + 1] = id
      hset[#hset + 1] = ARGV[2 * (first + j - 1)]
      zadd[#zadd + 1] = added
      zadd[#zadd + 1] = id
    end
  end
  if #hset > 0 then
    redis.call('HSET', data, unpack(hset))
    redis.call('ZADD', avail, unpack(zadd))
  end
  first = last + 1
end
if accepted > 0 then
  redis.call('HSET', meta, 'added', added)
end
return {OK, accepted, duplicates, refused}
