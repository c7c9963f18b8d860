-- Delete a stream and everything in it. KEYS: every key of the stream. Reply: {OK, existed}.
local existed = redis.call('EXISTS', KEYS[1])
redis.call('DEL', unpack(KEYS))
return {OK, existed}
