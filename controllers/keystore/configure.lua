-- Create a stream or change its capacity. KEYS: meta. ARGV: capacity, chunk_bytes.
local meta = KEYS[1]
local capacity, chunk_bytes = ARGV[1], ARGV[2]
local current = redis.call('HGET', meta, 'chunk_bytes')
if current and current ~= chunk_bytes then
  return {E_CHUNK_SIZE_CHANGE, tonumber(current)}
end
if not current then
  redis.call('HSET', meta, 'chunk_bytes', chunk_bytes, 'added', 0, 'reserved', 0, 'consumed', 0,
    'head', 1)
end
redis.call('HSET', meta, 'capacity', capacity)
return {OK}
