-- Add a batch of chunks, idempotent per chunk ID, up to the stream's capacity.
-- KEYS: meta, avail, incoming, data, gone (current bucket), gone (previous bucket).
-- ARGV: the chunk IDs concatenated (36 characters each), their material concatenated, and the
--       device index of the batch's first chunk or '' (see below).
-- (Two arguments rather than two per chunk: packing and parsing arguments cost more than the
-- work itself at 10^5 chunks/s. For the same reason new chunks go to the `incoming` list, not
-- the sorted set.) The caller guarantees the IDs within one batch are distinct.
-- Reply: {OK, accepted, duplicates, refused}; the refused chunks are always the batch's tail.
-- With a first index, the stream's ingest cursor moves past the chunks now stored, in the same
-- atomic step, so the QKDM resumes exactly after what the store holds.
local meta, avail, incoming, data = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local gone_cur, gone_prev = KEYS[5], KEYS[6]
local id_blob, material_blob = ARGV[1], ARGV[2]
local m = redis.call('HMGET', meta, 'capacity', 'chunk_bytes', 'added', 'reserved')
if not m[1] then
  return {E_UNKNOWN_STREAM}
end
local size = tonumber(m[2])
local n = #id_blob / 36
if #material_blob ~= n * size then
  return {E_BAD_CHUNK, size}
end
local room = tonumber(m[1]) - available(avail, incoming) - tonumber(m[4])
local check_cur = redis.call('EXISTS', gone_cur) == 1
local check_prev = redis.call('EXISTS', gone_prev) == 1
local sub = string.sub
local accepted, duplicates, refused = 0, 0, 0
local first = 1
while first <= n and refused == 0 do
  local last = math.min(n, first + SLICE - 1)
  local ids = {}
  for i = first, last do
    ids[i - first + 1] = sub(id_blob, i * 36 - 35, i * 36)
  end
  -- One HMGET (and SMISMEMBER per tombstone bucket) per slice rather than one call per chunk.
  local held = redis.call('HMGET', data, unpack(ids))
  local dead_cur = check_cur and redis.call('SMISMEMBER', gone_cur, unpack(ids)) or {}
  local dead_prev = check_prev and redis.call('SMISMEMBER', gone_prev, unpack(ids)) or {}
  local hset, push = {}, {}
  local taken = 0
  for j, id in ipairs(ids) do
    if held[j] or dead_cur[j] == 1 or dead_prev[j] == 1 then
      duplicates = duplicates + 1
    elseif accepted >= room then
      refused = n - (first + j - 1) + 1
      break
    else
      local i = first + j - 1
      accepted = accepted + 1
      taken = taken + 1
      hset[2 * taken - 1] = id
      hset[2 * taken] = sub(material_blob, (i - 1) * size + 1, i * size)
      push[taken] = id
    end
  end
  if taken > 0 then
    redis.call('HSET', data, unpack(hset))
    redis.call('RPUSH', incoming, unpack(push))
  end
  first = last + 1
end
if accepted > 0 then
  redis.call('HINCRBY', meta, 'added', accepted)
end
if ARGV[3] ~= '' then
  redis.call('HSET', meta, 'cursor', tonumber(ARGV[3]) + accepted + duplicates)
end
return {OK, accepted, duplicates, refused}
