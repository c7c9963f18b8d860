-- Add a batch of chunks, idempotent per chunk ID, up to the stream's capacity.
-- ARGV: the chunk IDs concatenated (36 characters each), their material concatenated, and the
--       device index of the batch's first chunk or '' (the batch is then consecutive indices).
-- (Two arguments rather than two per chunk: packing and parsing arguments cost more than the
-- work itself at 10^5 chunks/s. For the same reason new chunks go to the `incoming` list, not
-- the sorted set.) The caller guarantees the IDs within one batch are distinct.
-- Reply: {OK, accepted, duplicates, refused, free}; the refused chunks are always the batch's
-- tail; free is the room left in the buffer after it (as counts' capacity - available).
-- With a first index (an index of the key stream the cursor counts in: common.lua):
-- - a chunk whose index is below the ingest cursor (stored before, maybe delivered since) or in
--   a range the peer dropped (of this epoch) is not stored, and counts as a duplicate (the QKDM
--   moves past it);
-- - the cursor moves past the chunks now stored, in the same atomic step, so the QKDM resumes
--   exactly after what the store holds; a batch that starts beyond the cursor passes over
--   indices this end will never store, and the peer is told to drop them (outbox 'drop').
local id_blob, material_blob = ARGV[1], ARGV[2]
local first_index = ARGV[3] ~= '' and tonumber(ARGV[3]) or nil
local m = redis.call('HMGET', meta, 'capacity', 'chunk_bytes', 'added', 'cursor', 'segoff',
  'epoch', 'cursor_ksid')
if not m[1] then
  return {E_UNKNOWN_STREAM}
end
local size = tonumber(m[2])
local n = #id_blob / 36
if #material_blob ~= n * size then
  return {E_BAD_CHUNK, size}
end
local room = tonumber(m[1]) - available(avail, incoming)
local added = tonumber(m[3])
local cursor = tonumber(m[4] or 0)
local segoff = m[5] or ''
local epoch, ksid = tonumber(m[6] or 0), m[7] or ''
-- Index ranges [s, e) of this batch that must not be stored.
local dead = {}
local stale = {}
if first_index then
  if first_index < cursor then
    dead[#dead + 1] = {first_index, cursor}
  end
  for _, r in ipairs(redis.call('ZRANGE', drops, '-inf', first_index + n - 1, 'BYSCORE')) do
    local e, s, stop, kept = parse_drop(r)
    if e == epoch and not kept then
      if stop > first_index then
        dead[#dead + 1] = {s, stop}
      end
      stale[#stale + 1] = {r, stop}
    end
  end
end
local function is_dead(index)
  for _, r in ipairs(dead) do
    if index >= r[1] and index < r[2] then
      return true
    end
  end
  return false
end
local sub = string.sub
local accepted, duplicates, refused = 0, 0, 0
-- index - number of the last chunk stored: runs of consecutive indices keep it, so the segment
-- member is built only where it changes (not once per chunk).
local delta = nil
local first = 1
while first <= n and refused == 0 do
  local last = math.min(n, first + SLICE - 1)
  local ids = {}
  for i = first, last do
    ids[i - first + 1] = sub(id_blob, i * 36 - 35, i * 36)
  end
  -- One HMGET per slice rather than one call per chunk.
  local held = redis.call('HMGET', data, unpack(ids))
  local hset, push = {}, {}
  local taken = 0
  for j, id in ipairs(ids) do
    local i = first + j - 1
    local index = first_index and (first_index + i - 1)
    if held[j] or (index and #dead > 0 and is_dead(index)) then
      duplicates = duplicates + 1
    elseif accepted >= room then
      refused = n - i + 1
      break
    else
      accepted = accepted + 1
      taken = taken + 1
      hset[2 * taken - 1] = id
      hset[2 * taken] = sub(material_blob, (i - 1) * size + 1, i * size)
      push[taken] = id
      local number = added + accepted
      local d = index and (index - number) or false
      if d ~= delta then
        delta = d
        local off = d and (int(d) .. ':' .. int(epoch)) or 'x'
        if off ~= segoff then
          redis.call('ZADD', segs, number, int(number) .. ':' .. off)
          segoff = off
        end
      end
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
  redis.call('HSET', meta, 'segoff', segoff)
end
if first_index then
  if first_index > cursor then
    drop_notice(ob, obq, ksid, epoch, cursor, first_index)
  end
  local new_cursor = math.max(cursor, first_index + accepted + duplicates)
  redis.call('HSET', meta, 'cursor', int(new_cursor))
  for _, r in ipairs(stale) do
    if r[2] <= new_cursor then
      redis.call('ZREM', drops, r[1])
    end
  end
end
return {OK, accepted, duplicates, refused, math.max(0, room - accepted)}
