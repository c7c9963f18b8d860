-- Look a hold up. ARGV: hold_id. Reply: {OK, owner, size_bits, deadline ms,
-- {key_id, size_bits, chunk material...}...} or {E_UNKNOWN_BLOCK}.
local rec = get_block(blk, ARGV[1])
if not rec or rec.r ~= 'h' then
  return {E_UNKNOWN_BLOCK}
end
local reply = {OK, rec.o, rec.b, rec.dl}
for _, kid in ipairs(redis.call('SMEMBERS', block_set(base_of(meta), ARGV[1]))) do
  local entry = {kid, rec.b}
  for _, v in ipairs(redis.call('HMGET', data, unpack(key_chunks(kc, kid)))) do
    if not v then
      return {E_CORRUPT, kid}
    end
    entry[#entry + 1] = v
  end
  reply[#reply + 1] = entry
end
return reply
