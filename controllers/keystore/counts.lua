-- A consistent snapshot of one stream's counters (in chunks), its ingest cursor and the device
-- index of its oldest available chunk (-1 if none or unknown). No ARGV.
local m = redis.call('HMGET', meta, 'capacity', 'chunk_bytes', 'added', 'consumed', 'dropped',
  'pooled', 'mirrored', 'holding', 'cursor', 'head')
if not m[1] then
  return {E_UNKNOWN_STREAM}
end
local oldest = -1
local first = redis.call('ZRANGE', avail, 0, 0, 'WITHSCORES')
local candidates = {}
if first[1] then
  candidates[#candidates + 1] = tonumber(first[2])
end
if redis.call('LLEN', incoming) > 0 then
  candidates[#candidates + 1] = tonumber(m[10])
end
if #candidates > 0 then
  oldest = indices_of(segs, {math.min(unpack(candidates))})[1]
end
return {OK, tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), available(avail, incoming),
  tonumber(m[4]), tonumber(m[5]), tonumber(m[6]), tonumber(m[7]), tonumber(m[8]),
  tonumber(m[9] or 0), oldest}
