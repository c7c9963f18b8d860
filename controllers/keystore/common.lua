-- Shared prelude of every key-store script (keystore/scripts.py prepends it).
--
-- Status codes returned as the first element of each reply; keystore/store.py maps them to
-- exceptions. Keep the two lists in step.
local OK = 0
local E_UNKNOWN_STREAM = -1
local E_CONFLICT = -2
local E_INSUFFICIENT = -3
local E_ID_MISMATCH = -4
local E_UNKNOWN_RESERVATION = -5
local E_UNKNOWN_KEYS = -6
local E_CORRUPT = -7
local E_CHUNK_SIZE_CHANGE = -8
local E_BAD_CHUNK = -9
local E_RETRY = -10

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

-- The reply for an existing reservation (idempotent retries of reserve and reserve_ids).
local function reservation_reply(keys_hash, record)
  local out = {OK, record.o, record.b}
  for _, kid in ipairs(record.k) do
    local krec = redis.call('HGET', keys_hash, kid)
    if krec then
      out[#out + 1] = key_reply(kid, cjson.decode(krec).c)
    end
  end
  return out
end
