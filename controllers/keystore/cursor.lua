-- Read or set a stream's ingest cursor (the next device index its QKDM fetches).
-- KEYS: meta. ARGV: '' to read, or the new cursor. Reply: {OK, cursor}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {E_UNKNOWN_STREAM}
end
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'cursor', ARGV[1])
end
return {OK, tonumber(redis.call('HGET', KEYS[1], 'cursor') or 0)}
