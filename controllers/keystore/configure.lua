-- Create a stream or change its capacity. ARGV: capacity, chunk_bytes.
local current = redis.call('HGET', meta, 'chunk_bytes')
if current and current ~= ARGV[2] then
  return {E_CHUNK_SIZE_CHANGE, tonumber(current)}
end
if not current then
  redis.call('HSET', meta, 'chunk_bytes', ARGV[2], 'added', 0, 'consumed', 0, 'dropped', 0,
    'pooled', 0, 'mirrored', 0, 'holding', 0, 'head', 1, 'cursor', 0, 'epoch', 0, 'segoff', '')
end
redis.call('HSET', meta, 'capacity', ARGV[1])
return {OK}
