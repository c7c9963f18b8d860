-- The peer dropped device index ranges (its ingest passed over them): never store them here
-- (add.lua, accept.lua read `drops`), and drop the chunks of them in the buffer now (the caller
-- derives their IDs from the stream's KSID). Chunks out of the buffer are left alone: no block
-- can hold a chunk the peer never had. Idempotent.
-- ARGV: flush_limit, direction ('' first), number of ranges, then start, end per range, then
--       the chunk IDs. Reply: {OK, chunks dropped} or {E_RETRY, direction} (call again).
local flush_limit, direction, nranges = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
for i = 1, nranges do
  local s, e = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  redis.call('ZADD', drops, s, s .. ':' .. e)
end
local candidates = {unpack(ARGV, 4 + 2 * nranges)}
local doomed, wanted = {}, {}
for first = 1, #candidates, SLICE do
  local part = {unpack(candidates, first, math.min(#candidates, first + SLICE - 1))}
  local held = redis.call('HMGET', data, unpack(part))
  local where = redis.call('HMGET', out, unpack(part))
  for i, c in ipairs(part) do
    if held[i] and not where[i] and not wanted[c] then
      doomed[#doomed + 1] = c
      wanted[c] = true
    end
  end
end
if #doomed == 0 then
  return {OK, 0}
end
local _, err = locate(meta, avail, incoming, gaps, doomed, wanted, flush_limit, direction)
if err then
  return err
end
call_sliced('HDEL', data, doomed, SLICE)
redis.call('HINCRBY', meta, 'dropped', #doomed)
return {OK, #doomed}
