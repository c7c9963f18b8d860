-- Act on every block whose deadline has passed (at most `limit` of them per call):
-- - a master block pending (its agreement took too long or its outcome is unknown) or active
--   (past its serve deadline) gives its unserved keys back (start_release in common.lua);
-- - a master block releasing whose peer never answered within the peer's lease: the peer's
--   copies are gone by now, so ours are dropped and the release message is withdrawn;
-- - keys held for a slave SAE past their deadline are dropped (the slave did not fetch them);
-- - a hold past its deadline is dropped: its request may have delivered the keys or not, so
--   they must never be served again.
-- Also forgets acknowledged hand-overs older than a day, and kept tombstones whose chunks are
-- gone at both ends (prune_kept in common.lua). ARGV: limit.
-- Reply: {OK, blocks handled, blocks given back, chunks dropped, more due (0/1),
--         keys held for slave SAEs dropped}.
local limit = tonumber(ARGV[1])
local now = now_ms()
local base = base_of(meta)
local due = redis.call('ZRANGE', exp, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
local released, dropped, expired_held = 0, 0, 0
for _, bid in ipairs(due) do
  local rec = get_block(blk, bid)
  if not rec then
    redis.call('ZREM', exp, bid)
  elseif rec.r == 'm' and (rec.st == 'pending' or rec.st == 'active') then
    start_release(base, blk, exp, ob, obq, bid, rec, now)
    released = released + 1
  else
    local bset = block_set(base, bid)
    local members = redis.call('SMEMBERS', bset)
    if rec.r == 's' then
      expired_held = expired_held + #members
    end
    dropped = dropped + remove_keys(meta, data, out, kc, bset, members, rec.r, 'dropped')
    delete_block(base, blk, exp, bid)
    if rec.r == 'm' then
      outbox_drop(ob, obq, 'rel:' .. bid)
    end
  end
end
redis.call('ZREMRANGEBYSCORE', done, '-inf', now - 86400000)
prune_kept(meta, avail, incoming, gaps, segs, drops, blk)
return {OK, #due, released, dropped, #due == limit and 1 or 0, expired_held}
