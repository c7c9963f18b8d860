-- Look a hold up. ARGV: hold_id. Reply: {OK, owner, size_bits, deadline ms,
-- {key_id, size_bits, chunk material...}...} or {E_UNKNOWN_BLOCK}.
local rec = get_block(blk, ARGV[1])
if not rec or rec.r ~= 'h' then
  return {E_UNKNOWN_BLOCK}
end
return material_reply(
  kc, data, {OK, rec.o, rec.b, rec.dl}, redis.call('SMEMBERS', block_set(base_of(meta), ARGV[1])),
  rec.b
)
