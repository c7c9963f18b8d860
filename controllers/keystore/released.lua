-- The peer answered a release (give_back.lua): our copies of the keys it returned go back to the
-- buffer, those of the keys it says are gone are dropped; the block and its message go.
-- ARGV: block_id, gone key_id... Reply: {OK, keys returned, keys dropped}.
local bid = ARGV[1]
local base = base_of(meta)
local rec = get_block(blk, bid)
outbox_drop(ob, obq, 'rel:' .. bid)
if not rec or rec.r ~= 'm' or rec.st ~= 'releasing' then
  return {OK, 0, 0}
end
local bset = block_set(base, bid)
local gone = {}
for i = 2, #ARGV do
  gone[ARGV[i]] = true
end
local back, lost = {}, {}
for _, kid in ipairs(redis.call('SMEMBERS', bset)) do
  if gone[kid] then
    lost[#lost + 1] = kid
  else
    back[#back + 1] = kid
  end
end
return_keys(meta, avail, out, kc, bset, back, 'm')
remove_keys(meta, data, out, kc, bset, lost, 'm', 'dropped')
delete_block(base, blk, exp, bid)
return {OK, #back, #lost}
