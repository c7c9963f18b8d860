-- Read or set a stream's ingest cursor (the next device index its QKDM fetches) and the key
-- stream (KSID, and its epoch: common.lua) that cursor counts in.
-- ARGV: '' to read, or the new cursor; '' to keep the KSID, or a new one with its epoch (then
-- the cursor starts again at 0 in it, in the same step).
-- Moving the cursor forward within a KSID passes over device indices this end will never store;
-- leaving a KSID passes over every index of it from the cursor on. Either way the peer is told
-- to drop those too (an outbox 'drop' message naming the KSID). A KSID left is never counted
-- in again (the QKDM only moves forwards), so the tombstones of earlier epochs go.
-- Reply: {OK, cursor, KSID or '', epoch}.
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local m = redis.call('HMGET', meta, 'cursor', 'cursor_ksid', 'epoch')
local cursor, ksid, epoch = tonumber(m[1] or 0), m[2] or '', tonumber(m[3] or 0)
if ARGV[2] ~= '' then
  local new_ksid, new_epoch = ARGV[2], tonumber(ARGV[3])
  -- Starting the KSID the cursor counts in already changes nothing: resetting its cursor would
  -- let indices delivered since be stored again.
  if new_ksid ~= ksid then
    if ksid ~= '' or cursor > 0 then
      drop_notice(ob, obq, ksid, epoch, cursor, nil)
    end
    for _, r in ipairs(redis.call('ZRANGE', drops, 0, -1)) do
      if parse_drop(r) < new_epoch then
        redis.call('ZREM', drops, r)
      end
    end
    cursor, ksid, epoch = 0, new_ksid, new_epoch
    redis.call('HSET', meta, 'cursor', 0, 'cursor_ksid', ksid, 'epoch', int(epoch))
  end
elseif ARGV[1] ~= '' then
  local new = tonumber(ARGV[1])
  if new > cursor then
    drop_notice(ob, obq, ksid, epoch, cursor, new)
  end
  redis.call('HSET', meta, 'cursor', int(new))
  cursor = new
end
return {OK, cursor, ksid, epoch}
