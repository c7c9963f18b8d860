-- A consistent snapshot of one stream's counters. KEYS: meta, avail, incoming.
local m = redis.call('HMGET', KEYS[1], 'capacity', 'chunk_bytes', 'added', 'reserved', 'consumed')
if not m[1] then
  return {E_UNKNOWN_STREAM}
end
return {OK, tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), tonumber(m[4]), tonumber(m[5]),
  available(KEYS[2], KEYS[3])}
