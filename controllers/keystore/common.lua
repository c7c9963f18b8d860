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

-- Available chunks: the `avail` sorted set (by arrival number) holds the older ones, the
-- `incoming` list the newer ones, in arrival order and numbered `head`, `head` + 1, ... .
local function available(avail, incoming)
  return redis.call('ZCARD', avail) + redis.call('LLEN', incoming)
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
