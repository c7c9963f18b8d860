-- Delete a stream and everything in it, its blocks' sets and pool lists too. Reply: {OK, existed}.
local existed = redis.call('EXISTS', meta)
local base = base_of(meta)
for _, bid in ipairs(redis.call('HKEYS', blk)) do
  redis.call('DEL', block_set(base, bid))
end
for _, pool in ipairs(redis.call('SMEMBERS', pools)) do
  redis.call('DEL', pool)
end
redis.call('DEL', unpack(KEYS))
return {OK, existed}
