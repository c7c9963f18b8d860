-- Shared prelude of every key-store script (keystore/scripts.py prepends it, after the status
-- codes it generates from keystore/codes.py: OK, E_UNKNOWN_STREAM, ...).
--
-- Vocabulary (layout.py has the Redis keys): a stream's *buffer* is its available chunks, and
-- capacity bounds only the buffer. Chunks taken out of it belong to a *block*: 'm' (a master
-- node's pool block, agreed with the peer), 's' (the peer side of such a block: the keys held
-- here for a slave SAE) or 'h' (a request's hold). Every block has a deadline in `exp`.

-- Unpack at most this many values into one redis.call (Lua's C stack holds about 8000).
local SLICE = 1000

-- Push or pop `values` in slices (see SLICE).
local function call_sliced(command, key, values, step)
  for first = 1, #values, step do
    redis.call(command, key, unpack(values, first, math.min(#values, first + step - 1)))
  end
end

-- Available chunks: the `incoming` list holds chunks in arrival order, the `avail` sorted set
-- the others (released chunks, chunks moved out of the list) scored by their arrival number.
-- Each chunk has one arrival number (1, 2, ... as added); a reservation takes the lowest or the
-- highest numbers of both together, and release puts a chunk back under its own number.
local function available(avail, incoming)
  return redis.call('ZCARD', avail) + redis.call('LLEN', incoming)
end

-- The numbers of the list's entries are implicit: the first has `head` (meta), each next one
-- the next number, except where chunks were taken from the list's end and more were added
-- after them. There the numbers jump, and the `gaps` sorted set holds one member per jump: the
-- number after it, scored by the number before it. A jump at the list's end (member `added` +
-- 1, the number the next added chunk gets) says where the list ends. add.lua never looks at
-- `gaps`: its appends get the numbers `added` + 1, ... either way.

local function int(n)
  return string.format('%d', n)
end

-- The number of the list's last entry (the list must not be empty), and the next chunk's.
local function list_tail(meta, gaps)
  local next_number = tonumber(redis.call('HGET', meta, 'added')) + 1
  local last = redis.call('ZRANGE', gaps, '+inf', '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1,
    'WITHSCORES')
  if last[1] and tonumber(last[1]) == next_number then
    return tonumber(last[2]), next_number
  end
  return next_number - 1, next_number
end

-- Pop up to `limit` entries from the list's start, no further than the next jump: their IDs
-- (an empty table if the list is empty) and the number of the first; the others follow it.
local function pop_head(meta, incoming, gaps, limit)
  local head = tonumber(redis.call('HGET', meta, 'head'))
  local gap = redis.call('ZRANGE', gaps, head, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
  local run = gap[1] and tonumber(gap[2]) - head + 1 or limit
  local popped = redis.call('LPOP', incoming, math.min(limit, run))
  if not popped then
    return {}, head
  end
  if gap[1] and #popped == run then
    -- Past the jump: the list now starts with the number after it.
    redis.call('HSET', meta, 'head', gap[1])
    redis.call('ZREM', gaps, gap[1])
  else
    redis.call('HSET', meta, 'head', head + #popped)
  end
  return popped, head
end

-- Pop up to `limit` entries from the list's end, no further back than the previous jump: their
-- IDs (newest first) and the number of the first popped; each next one has the number below.
-- The list's end is then marked with a jump, so later chunks do not reuse the popped numbers.
local function pop_tail(meta, incoming, gaps, limit)
  if redis.call('LLEN', incoming) == 0 then
    return {}, 0
  end
  local tail, next_number = list_tail(meta, gaps)
  local gap = redis.call('ZRANGE', gaps, '(' .. int(tail), '-inf', 'BYSCORE', 'REV', 'LIMIT', 0,
    1, 'WITHSCORES')
  local start = gap[1] and tonumber(gap[1]) or tonumber(redis.call('HGET', meta, 'head'))
  local run = tail - start + 1
  local popped = redis.call('RPOP', incoming, math.min(limit, run))
  local new_tail = tail - #popped
  if #popped == run then
    if not gap[1] then
      -- The list is empty: the next chunk added starts it.
      redis.call('DEL', gaps)
      redis.call('HSET', meta, 'head', next_number)
      return popped, tail
    end
    new_tail = tonumber(gap[2])
    redis.call('ZREM', gaps, gap[1])
  end
  -- Replaces the end's old jump, if any (same member).
  redis.call('ZADD', gaps, new_tail, int(next_number))
  return popped, tail
end

-- The ID of a key composed of several chunks: UUIDv5(namespace, "id1,id2,..."), bit for bit what
-- Python's uuid.uuid5 gives, so both nodes and both languages derive the same ID.
local function composed_id(namespace, chunk_ids)
  if #chunk_ids == 1 then
    return chunk_ids[1]
  end
  local h = redis.sha1hex(namespace .. table.concat(chunk_ids, ','))
  local variant = string.format('%x', tonumber(string.sub(h, 17, 17), 16) % 4 + 8)
  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-5' .. string.sub(h, 14, 16)
    .. '-' .. variant .. string.sub(h, 18, 20) .. '-' .. string.sub(h, 21, 32)
end

local function chunks_per_key(meta, size_bits)
  local chunk_bits = tonumber(redis.call('HGET', meta, 'chunk_bytes')) * 8
  return math.floor((size_bits + chunk_bits - 1) / chunk_bits)
end

-- A reply entry for one key: {key_id, chunk_id, chunk_id, ...}.
local function key_reply(key_id, chunk_ids)
  local entry = {key_id}
  for _, c in ipairs(chunk_ids) do
    entry[#entry + 1] = c
  end
  return entry
end


-- Milliseconds of the Redis server's clock: every deadline of a stream is on this one clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The key prefix of a stream, from its meta key (every script gets meta as KEYS[1]).
local function base_of(meta)
  return string.sub(meta, 1, -6)
end

local function block_set(base, bid)
  return base .. ':bs:' .. bid
end

local function pool_list(base, owner, size_bits)
  return base .. ':pool:' .. owner .. '|' .. size_bits
end

local function split(s, sep)
  local out = {}
  for part in string.gmatch(s, '[^' .. sep .. ']+') do
    out[#out + 1] = part
  end
  return out
end

-- The chunk IDs of a key out of the buffer: a composed key's are in `kc`; a key of one chunk
-- has that chunk's ID.
local function key_chunks(kc, key_id)
  local joined = redis.call('HGET', kc, key_id)
  if not joined then
    return {key_id}
  end
  return split(joined, ',')
end

-- A key's reply entry, {key ID, size in bits, chunk values...}, or nil if a chunk is missing
-- from `data` (a corrupt store).
local function key_entry(kc, data, key_id, size_bits)
  local entry = {key_id, size_bits}
  for _, v in ipairs(redis.call('HMGET', data, unpack(key_chunks(kc, key_id)))) do
    if not v then
      return nil
    end
    entry[#entry + 1] = v
  end
  return entry
end

-- Append to `reply` the entry of each key of `key_ids` (key_entry); a missing chunk is a
-- corrupt store: {E_CORRUPT, key ID} replaces the reply.
local function material_reply(kc, data, reply, key_ids, size_bits)
  for _, kid in ipairs(key_ids) do
    local entry = key_entry(kc, data, kid, size_bits)
    if not entry then
      return {E_CORRUPT, kid}
    end
    reply[#reply + 1] = entry
  end
  return reply
end

-- Where a chunk out of the buffer is: its block and its arrival number, or nil.
local function out_of(value)
  if not value then
    return nil
  end
  local bar = string.find(value, '|', 1, true)
  return string.sub(value, 1, bar - 1), tonumber(string.sub(value, bar + 1))
end

local ROLE_COUNTER = {m = 'pooled', s = 'mirrored', h = 'holding'}

local function get_block(blk, bid)
  local raw = redis.call('HGET', blk, bid)
  return raw and cjson.decode(raw) or nil
end

local function put_block(blk, bid, rec)
  redis.call('HSET', blk, bid, cjson.encode(rec))
end

-- Forget a block: its record, its key set, its deadline.
local function delete_block(base, blk, exp, bid)
  redis.call('HDEL', blk, bid)
  redis.call('DEL', block_set(base, bid))
  redis.call('ZREM', exp, bid)
end

-- Move keys (of block `bid`, role `role`) out of the store for good: consumed (delivered) or
-- dropped (destroyed undelivered). Their chunk material is deleted. Returns the chunks.
local function remove_keys(meta, data, out, kc, bset, key_ids, role, outcome)
  local chunks = 0
  for _, kid in ipairs(key_ids) do
    local cs = key_chunks(kc, kid)
    redis.call('HDEL', data, unpack(cs))
    redis.call('HDEL', out, unpack(cs))
    redis.call('HDEL', kc, kid)
    chunks = chunks + #cs
  end
  call_sliced('SREM', bset, key_ids, SLICE)
  if chunks > 0 then
    redis.call('HINCRBY', meta, ROLE_COUNTER[role], -chunks)
    redis.call('HINCRBY', meta, outcome, chunks)
  end
  return chunks
end

-- Put keys back into the buffer, each chunk under its own arrival number (so the order of
-- what is available is as if they had never left).
local function return_keys(meta, avail, out, kc, bset, key_ids, role)
  local chunks = 0
  local zadd = {}
  for _, kid in ipairs(key_ids) do
    local cs = key_chunks(kc, kid)
    local where = redis.call('HMGET', out, unpack(cs))
    for i, c in ipairs(cs) do
      local _, seq = out_of(where[i])
      zadd[#zadd + 1] = seq
      zadd[#zadd + 1] = c
    end
    redis.call('HDEL', out, unpack(cs))
    redis.call('HDEL', kc, kid)
    chunks = chunks + #cs
  end
  call_sliced('ZADD', avail, zadd, 2 * SLICE)
  call_sliced('SREM', bset, key_ids, SLICE)
  if chunks > 0 then
    redis.call('HINCRBY', meta, ROLE_COUNTER[role], -chunks)
  end
  return chunks
end

-- Outbox: messages to the stream's peer node that must get there (retried until acknowledged).
local function outbox_put(ob, obq, id, body, due)
  redis.call('HSET', ob, id, body)
  redis.call('ZADD', obq, due, id)
end

local function outbox_drop(ob, obq, id)
  redis.call('HDEL', ob, id)
  redis.call('ZREM', obq, id)
end

-- A master block gives its unserved keys back: out of its pool, and a release message to the
-- peer, which returns its copies of those keys (or says they are gone); only then do ours go
-- back to the buffer (finish_release.lua). `lease` bounds how long the peer can hold its copies,
-- so after it ours are dropped even if the peer never answers (sweep.lua).
local function start_release(base, blk, exp, ob, obq, bid, rec, now)
  if rec.st == 'active' then
    redis.call('LREM', pool_list(base, rec.o, rec.b), 0, bid)
  end
  local keys = redis.call('SMEMBERS', block_set(base, bid))
  if #keys == 0 then
    delete_block(base, blk, exp, bid)
    return 0
  end
  rec.st = 'releasing'
  rec.dl = now + rec.ls
  put_block(blk, bid, rec)
  redis.call('ZADD', exp, rec.dl, bid)
  local listed = {}
  for i, kid in ipairs(keys) do
    local entry = key_chunks(kc, kid)
    table.insert(entry, 1, kid)
    listed[i] = entry
  end
  outbox_put(ob, obq, 'rel:' .. bid, cjson.encode({kind = 'release', block = bid, owner = rec.o,
    size_bits = rec.b, keys = listed}), now)
  return #keys
end

-- Device indices count within one device key stream (KSID): after the QKDMs move a KeyStream to
-- the next KSID of its sequence (docs/key-streams.md), the indices start again at 0 under the
-- new one. So an index means something only with its KSID, which every chunk here carries as its
-- *epoch* (the KSID's place in the sequence, which both nodes compute alike): meta's `epoch` is
-- the one the ingest cursor counts in, `segs` gives each chunk's, and every comparison of an
-- index with the cursor, a tombstone or a drop notice is within one epoch.

-- The device index and epoch of each arrival number in `seqs`: two lists (index -1, epoch 0
-- where unknown: chunks added without an index). `segs` holds one member per run of chunks
-- whose index - number and epoch are constant: "number:offset:epoch" ("number:x" without an
-- index; "number:offset" in stores from before epochs, which were all epoch 0).
local function indices_of(segs, seqs)
  local out, epochs = {}, {}
  local cache_start, cache_end, cache_off, cache_epoch = nil, nil, nil, 0
  for i, seq in ipairs(seqs) do
    if not (cache_start and seq >= cache_start and (not cache_end or seq < cache_end)) then
      local seg = redis.call('ZRANGE', segs, seq, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1,
        'WITHSCORES')
      local nxt = redis.call('ZRANGE', segs, '(' .. int(seq), '+inf', 'BYSCORE', 'LIMIT', 0, 1,
        'WITHSCORES')
      cache_off, cache_epoch = nil, 0
      if seg[1] then
        cache_start = tonumber(seg[2])
        local parts = split(seg[1], ':')
        if parts[2] ~= 'x' then
          cache_off = tonumber(parts[2])
          cache_epoch = tonumber(parts[3] or 0)
        end
      else
        cache_start = -math.huge
      end
      cache_end = nxt[1] and tonumber(nxt[2]) or nil
    end
    out[i] = cache_off and (seq + cache_off) or -1
    epochs[i] = cache_epoch
  end
  return out, epochs
end

-- A tombstone: device indices [start, stop) of epoch `epoch` the peer's ingest passed over, so
-- the peer never holds them. Member "epoch:start:stop" of `drops`, scored by start; stop ''
-- means every index from start on (the peer left that key stream there). Two kinds:
-- - beyond this end's ingest (the cursor's epoch from the cursor on, or a later epoch): this
--   end never stores them (add.lua), and forgets the tombstone once its cursor passes it;
-- - over chunks this end may hold already (an earlier epoch, or below the cursor), member
--   "epoch:start:stop:k" (kept): the notice drops those in the buffer, but one in a pending
--   block must be dropped too when the block is refused (refuse.lua), never go back to the
--   buffer. One per notice the peer sent (a device restart or an ingest jump), so few, and
--   forgotten once no chunk of theirs can come back (prune_kept, after a refusal and on every
--   sweep).
local function drop_member(epoch, start, stop, kept)
  return int(epoch) .. ':' .. int(start) .. ':' .. (stop and int(stop) or '')
    .. (kept and ':k' or '')
end

-- epoch, start, stop (math.huge: open), kept.
local function parse_drop(member)
  local parts = {}
  for part in string.gmatch(member, '([^:]*):?') do
    parts[#parts + 1] = part
  end
  return tonumber(parts[1]), tonumber(parts[2]), tonumber(parts[3] or '') or math.huge,
    parts[4] == 'k'
end

-- Whether index `idx` of epoch `epoch` lies in a range the peer dropped.
local function peer_dropped(drops, epoch, idx)
  for _, r in ipairs(redis.call('ZRANGE', drops, '-inf', idx, 'BYSCORE')) do
    local e, _, stop = parse_drop(r)
    if e == epoch and idx < stop then
      return true
    end
  end
  return false
end

-- Queue the notice that this end passed over indices [start, stop) (stop nil: every index from
-- start on) of its key stream `ksid` (epoch `epoch`; ksid '' in stores from before KSIDs were
-- recorded, where the upkeep names the epoch's KSID): the peer never stores them either.
local function drop_notice(ob, obq, ksid, epoch, start, stop)
  local range = stop and {start, stop} or {start}
  outbox_put(ob, obq, 'drop:' .. drop_member(epoch, start, stop),
    cjson.encode({kind = 'drop', ksid = ksid, epoch = epoch, ranges = {range}}), now_ms())
end

-- The device index spans {start, stop} of epoch `epoch` that chunks in the buffer may have,
-- within `ranges` ({start, stop}, stop math.huge: open): from `segs`, over the arrival numbers
-- from the oldest available chunk's on (no older chunk is in the buffer).
local function buffer_spans(meta, avail, incoming, segs, epoch, ranges)
  local oldest = nil
  local first = redis.call('ZRANGE', avail, 0, 0, 'WITHSCORES')
  if first[1] then
    oldest = tonumber(first[2])
  end
  if redis.call('LLEN', incoming) > 0 then
    local head = tonumber(redis.call('HGET', meta, 'head'))
    oldest = oldest and math.min(oldest, head) or head
  end
  if not oldest then
    return {}
  end
  local last = tonumber(redis.call('HGET', meta, 'added'))
  local runs = redis.call('ZRANGE', segs, oldest, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1,
    'WITHSCORES')
  local later = redis.call('ZRANGE', segs, '(' .. int(oldest), '+inf', 'BYSCORE', 'WITHSCORES')
  for i = 1, #later do
    runs[#runs + 1] = later[i]
  end
  local spans = {}
  for i = 1, #runs, 2 do
    local parts = split(runs[i], ':')
    local lo = math.max(tonumber(runs[i + 1]), oldest)
    local hi = runs[i + 2] and tonumber(runs[i + 3]) - 1 or last  -- the run's last number
    if parts[2] ~= 'x' and tonumber(parts[3] or 0) == epoch and lo <= hi then
      local off = tonumber(parts[2])
      for _, r in ipairs(ranges) do
        local s, e = math.max(lo + off, r[1]), math.min(hi + off + 1, r[2])
        if s < e then
          spans[#spans + 1] = {s, e}
        end
      end
    end
  end
  return spans
end

-- Whether the buffer may hold a chunk of device indices [start, stop) of epoch `epoch` (stop
-- math.huge: open): each run of `segs` in that epoch maps the indices to arrival numbers, which
-- are looked up in the sorted set; the incoming list counts if its numbers overlap at all.
local function range_in_buffer(meta, avail, incoming, gaps, segs, epoch, start, stop)
  local last = tonumber(redis.call('HGET', meta, 'added'))
  local list_lo, list_hi = nil, nil
  if redis.call('LLEN', incoming) > 0 then
    list_lo = tonumber(redis.call('HGET', meta, 'head'))
    list_hi = list_tail(meta, gaps)
  end
  local runs = redis.call('ZRANGE', segs, 0, -1, 'WITHSCORES')
  for i = 1, #runs, 2 do
    local parts = split(runs[i], ':')
    if parts[2] ~= 'x' and tonumber(parts[3] or 0) == epoch then
      local off = tonumber(parts[2])
      local lo = math.max(tonumber(runs[i + 1]), start - off)
      local hi = runs[i + 2] and tonumber(runs[i + 3]) - 1 or last
      if stop ~= math.huge then
        hi = math.min(hi, stop - 1 - off)
      end
      if lo <= hi then
        if redis.call('ZCOUNT', avail, int(lo), int(hi)) > 0 then
          return true
        end
        if list_lo and lo <= list_hi and hi >= list_lo then
          return true
        end
      end
    end
  end
  return false
end

-- Forget the kept tombstones (drop_member) whose chunks both ends agree are gone: the peer
-- never stored them (its notice said so), and none can come back to this end's buffer. Only
-- a pending master block's chunks can (refuse.lua): every other block was agreed with the
-- peer, which never held these, and a released one's come back only as the peer says
-- (give_back.lua answers 'gone' for them). So: no pending block at all, and no chunk of the
-- range in the buffer (the notice's drop step took them). Returns the tombstones forgotten.
local function prune_kept(meta, avail, incoming, gaps, segs, drops, blk)
  local kept = {}
  for _, r in ipairs(redis.call('ZRANGE', drops, 0, -1)) do
    local e, s, stop, is_kept = parse_drop(r)
    if is_kept then
      kept[#kept + 1] = {r, e, s, stop}
    end
  end
  if #kept == 0 then
    return 0
  end
  for _, raw in ipairs(redis.call('HVALS', blk)) do
    local rec = cjson.decode(raw)
    if rec.r == 'm' and rec.st == 'pending' then
      return 0
    end
  end
  local pruned = 0
  for _, t in ipairs(kept) do
    if not range_in_buffer(meta, avail, incoming, gaps, segs, t[2], t[3], t[4]) then
      redis.call('ZREM', drops, t[1])
      pruned = pruned + 1
    end
  end
  return pruned
end

-- Find available chunks (`wanted`: set of chunk IDs, none out of the buffer, all held) in the
-- buffer: each is in the sorted set (with its number) or else in the incoming list. Chunks in
-- the list are popped from one end until all are found; the others popped go to the sorted set
-- under their own numbers, so the order of what stays available does not change. Returns
-- (seq map, nil) when every chunk is found (and taken out of the buffer's structures, the
-- sorted set's ones too), or (nil, {E_RETRY, direction}) when the chunks lie deeper than
-- flush_limit (call again with that direction), or (nil, {E_CORRUPT, id}).
local function locate(meta, avail, incoming, gaps, all, wanted, flush_limit, direction)
  local seq = {}
  local in_list = 0
  for first = 1, #all, SLICE do
    local part = {unpack(all, first, math.min(#all, first + SLICE - 1))}
    local scores = redis.call('ZMSCORE', avail, unpack(part))
    for i, c in ipairs(part) do
      if scores[i] then
        seq[c] = tonumber(scores[i])
      else
        in_list = in_list + 1
      end
    end
  end
  if in_list > 0 then
    if direction == '' then
      local function hits(entries)
        local n = 0
        for _, c in ipairs(entries) do
          if wanted[c] and not seq[c] then
            n = n + 1
          end
        end
        return n
      end
      local at_head = hits(redis.call('LRANGE', incoming, 0, SLICE - 1))
      local at_tail = hits(redis.call('LRANGE', incoming, -SLICE, -1))
      direction = at_tail > at_head and 'tail' or 'head'
    end
    local moved = 0
    local found = {}
    while in_list > 0 do
      if moved >= flush_limit then
        -- Give back what this call found, so that everything popped is in the sorted set.
        local zadd = {}
        for _, c in ipairs(found) do
          zadd[#zadd + 1] = seq[c]
          zadd[#zadd + 1] = c
        end
        call_sliced('ZADD', avail, zadd, 2 * SLICE)
        return nil, {E_RETRY, direction}
      end
      local popped, number, step
      if direction == 'tail' then
        popped, number = pop_tail(meta, incoming, gaps, SLICE)
        step = -1
      else
        popped, number = pop_head(meta, incoming, gaps, SLICE)
        step = 1
      end
      if #popped == 0 then
        return nil, {E_CORRUPT, all[1]}
      end
      local zadd = {}
      for i, c in ipairs(popped) do
        local n = number + (i - 1) * step
        if wanted[c] and not seq[c] then
          seq[c] = n
          found[#found + 1] = c
          in_list = in_list - 1
        else
          zadd[#zadd + 1] = n
          zadd[#zadd + 1] = c
        end
      end
      call_sliced('ZADD', avail, zadd, 2 * SLICE)
      moved = moved + #popped
    end
  end
  for first = 1, #all, SLICE do
    redis.call('ZREM', avail, unpack(all, first, math.min(#all, first + SLICE - 1)))
  end
  return seq, nil
end
