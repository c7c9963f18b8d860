-- The peer dropped device index ranges of one of its key streams (its ingest passed over them):
-- never store them here, and drop the chunks of them in the buffer. Two calls, in this order:
-- ARGV 'mark', epoch, number of ranges, then start, stop per range (stop '': every index from
--   start on): record the tombstones (add.lua, accept.lua read `drops`; none for an epoch
--   before the cursor's, which is never stored again) and reply {OK, start, stop, ...}: the
--   index spans of those ranges chunks in the buffer may have (the caller derives their IDs
--   from the epoch's KSID). Marking first means no chunk of the ranges arrives after the reply.
-- ARGV 'drop', flush_limit, direction ('' first), then the chunk IDs: drop those in the
--   buffer. Reply {OK, chunks dropped} or {E_RETRY, direction} (call again).
-- Chunks out of the buffer are left alone: no block can hold a chunk the peer never had.
-- Idempotent.
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
if ARGV[1] == 'mark' then
  local epoch, nranges = tonumber(ARGV[2]), tonumber(ARGV[3])
  local m = redis.call('HMGET', meta, 'epoch', 'cursor')
  local current, cursor = tonumber(m[1] or 0), tonumber(m[2] or 0)
  local ranges = {}
  for i = 1, nranges do
    local s, e = tonumber(ARGV[2 + 2 * i]), ARGV[3 + 2 * i]
    local stop = e ~= '' and tonumber(e) or nil
    ranges[i] = {s, stop or math.huge}
    if epoch > current or (epoch == current and (not stop or stop > cursor)) then
      redis.call('ZADD', drops, s, drop_member(epoch, s, stop))
    end
  end
  local reply = {OK}
  for _, span in ipairs(buffer_spans(meta, avail, incoming, segs, epoch, ranges)) do
    reply[#reply + 1] = span[1]
    reply[#reply + 1] = span[2]
  end
  return reply
end
local flush_limit, direction = tonumber(ARGV[2]), ARGV[3]
local doomed, wanted = {}, {}
for first = 4, #ARGV, SLICE do
  local part = {unpack(ARGV, first, math.min(#ARGV, first + SLICE - 1))}
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
