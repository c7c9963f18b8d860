-- Look a reservation up. KEYS: meta, keys, res. ARGV: reservation_id.
-- Reply as reserve.lua (only the keys not consumed yet), or {E_UNKNOWN_RESERVATION}.
local meta, keys, res = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', meta) == 0 then
  return {E_UNKNOWN_STREAM}
end
local existing = redis.call('HGET', res, ARGV[1])
if not existing then
  return {E_UNKNOWN_RESERVATION}
end
return reservation_reply(keys, cjson.decode(existing))
