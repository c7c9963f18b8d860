-- A consistent snapshot of one stream's counters (in chunks), its ingest cursor and the epoch
-- of the key stream the cursor counts in. No ARGV.
local m = redis.call('HMGET', meta, 'capacity', 'chunk_bytes', 'added', 'consumed', 'dropped',
  'pooled', 'mirrored', 'holding', 'cursor', 'epoch')
if not m[1] then
  return {E_UNKNOWN_STREAM}
end
return {OK, tonumber(m[1]), tonumber(m[2]), tonumber(m[3]), available(avail, incoming),
  tonumber(m[4]), tonumber(m[5]), tonumber(m[6]), tonumber(m[7]), tonumber(m[8]),
  tonumber(m[9] or 0), tonumber(m[10] or 0)}
