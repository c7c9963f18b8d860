-- Read or set a stream's ingest cursor (the next device index its QKDM fetches) and the key
-- stream ID (KSID) that cursor counts in.
-- KEYS: meta. ARGV: '' to read, or the new cursor; '' to keep the KSID, or a new one (then the
-- cursor is set with it, in the same step). Reply: {OK, cursor, KSID or ''}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {E_UNKNOWN_STREAM}
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'cursor', ARGV[1], 'cursor_ksid', ARGV[2])
elseif ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'cursor', ARGV[1])
end
local m = redis.call('HMGET', KEYS[1], 'cursor', 'cursor_ksid')
return {OK, tonumber(m[1] or 0), m[2] or ''}
