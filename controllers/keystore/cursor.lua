-- Read or set a stream's ingest cursor (the next device index its QKDM fetches) and the key
-- stream ID (KSID) that cursor counts in.
-- ARGV: '' to read, or the new cursor; '' to keep the KSID, or a new one (then the cursor is
-- set with it, in the same step). Moving the cursor forward within a KSID passes over device
-- indices this end will never store: the peer is told to drop them too (an outbox 'drop'
-- message). Reply: {OK, cursor, KSID or ''}.
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local m = redis.call('HMGET', meta, 'cursor', 'cursor_ksid')
local cursor, ksid = tonumber(m[1] or 0), m[2] or ''
if ARGV[2] ~= '' then
  cursor, ksid = tonumber(ARGV[1]), ARGV[2]
  redis.call('HSET', meta, 'cursor', int(cursor), 'cursor_ksid', ksid)
elseif ARGV[1] ~= '' then
  local new = tonumber(ARGV[1])
  if new > cursor then
    outbox_put(ob, obq, 'drop:' .. int(cursor) .. ':' .. int(new),
      cjson.encode({kind = 'drop', ranges = {{cursor, new}}}), now_ms())
  end
  redis.call('HSET', meta, 'cursor', int(new))
  cursor = new
end
return {OK, cursor, ksid}
