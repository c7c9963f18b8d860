-- A master pool (owner, size_bits).
-- ARGV: 'level', owner, size_bits: {OK, keys servable now, chunks pooled for it};
--       'release', owner, size_bits: give every active block of it back (an idle pool):
--       {OK, keys given back}.
local mode, owner, size_bits = ARGV[1], ARGV[2], tonumber(ARGV[3])
local base = base_of(meta)
local pool = pool_list(base, owner, size_bits)
local now = now_ms()
local keys, chunks = 0, 0
for _, bid in ipairs(redis.call('LRANGE', pool, 0, -1)) do
  local rec = get_block(blk, bid)
  if not rec or rec.st ~= 'active' then
    redis.call('LREM', pool, 0, bid)
  elseif mode == 'release' or rec.dl <= now then
    keys = keys + start_release(base, blk, exp, ob, obq, bid, rec, now)
  else
    local n = redis.call('SCARD', block_set(base, bid))
    keys = keys + n
    chunks = chunks + n * rec.k
  end
end
return {OK, keys, chunks}
