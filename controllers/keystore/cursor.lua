-- Read or set a stream's ingest cursor (the next device index its QKDM fetches).
-- ARGV: '' to read, or the new cursor. Moving it forward passes over device indices this end
-- will never store: the peer is told to drop them too (an outbox 'drop' message).
-- Reply: {OK, cursor}.
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local cursor = tonumber(redis.call('HGET', meta, 'cursor') or 0)
if ARGV[1] ~= '' then
  local new = tonumber(ARGV[1])
  if new > cursor then
    outbox_put(ob, obq, 'drop:' .. int(cursor) .. ':' .. int(new),
      cjson.encode({kind = 'drop', ranges = {{cursor, new}}}), now_ms())
  end
  redis.call('HSET', meta, 'cursor', int(new))
  cursor = new
end
return {OK, cursor}
