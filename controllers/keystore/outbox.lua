-- The messages to the peer node that must get there.
-- ARGV: 'due', limit: {OK, now, id, body, id, body, ...}: the messages due now, oldest first,
--       and the Redis clock's now (ms);
--       'later', id, delay_ms: try that message again after delay_ms;
--       'done', id: the peer acknowledged it (a hand-over ID is remembered for a day, so that
--       committing its request again queues no second hand-over).
local mode = ARGV[1]
local now = now_ms()
if mode == 'due' then
  local ids = redis.call('ZRANGE', obq, '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
  local reply = {OK, now}
  if #ids > 0 then
    local bodies = redis.call('HMGET', ob, unpack(ids))
    for i, id in ipairs(ids) do
      if bodies[i] then
        reply[#reply + 1] = id
        reply[#reply + 1] = bodies[i]
      else
        redis.call('ZREM', obq, id)
      end
    end
  end
  return reply
end
local id = ARGV[2]
if mode == 'later' then
  if redis.call('HEXISTS', ob, id) == 1 then
    redis.call('ZADD', obq, now + tonumber(ARGV[3]), id)
  end
  return {OK}
end
outbox_drop(ob, obq, id)
if string.sub(id, 1, 3) == 'ho:' then
  redis.call('ZADD', done, now, id)
end
return {OK}
