-- WRITE-BEHIND FINISH: KEYS = stream, latest, done, pending, the key's lock, dead stream,
-- dead counts (hash), queued counts (hash); ARGV = how ('done', 'superseded', 'retry', 'dead'), K, seq, stream id,
-- group, lock token, attempts, retry delay ms, error, arguments, queued-at ms.
-- Acknowledges and deletes the stream entry; 'retry' appends it again with its attempts and
-- a not-before time; 'dead' moves it to the dead stream. 'done' advances the key's done
-- sequence; 'done' and 'dead' drop the pending value if it is this write's (or older). The
-- key's lock is released if this flusher holds it. A key with no write left in the stream, no
-- pending value and no dead letters loses its sequence fields (the next write starts over).
-- A write finished twice (delivered twice: at least once) is counted once: only the first
-- XACK acknowledges it.
local how, K, seq = ARGV[1], ARGV[2], tonumber(ARGV[3])
local acked = redis.call('XACK', KEYS[1], ARGV[5], ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[4])
if redis.call('GET', KEYS[5]) == ARGV[6] then redis.call('DEL', KEYS[5]) end
local function drop_pending()
  local p = redis.call('HGET', KEYS[4], K)
  if p then
    local c = string.find(p, ':', 1, true)
    if c and tonumber(string.sub(p, 1, c - 1)) <= seq then redis.call('HDEL', KEYS[4], K) end
  end
end
if how == 'retry' then
  if acked == 0 then return 0 end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XADD', KEYS[1], '*', 'k', K, 's', seq, 'n', ARGV[7],
    'b', string.format('%.0f', now + tonumber(ARGV[8])), 'a', ARGV[10], 'q', ARGV[11])
  return 1
end
if how == 'done' then
  local done = tonumber(redis.call('HGET', KEYS[3], K) or '0')
  if seq > done then redis.call('HSET', KEYS[3], K, seq) end
  drop_pending()
elseif how == 'dead' and acked == 1 then
  redis.call('XADD', KEYS[6], '*', 'k', K, 's', seq, 'n', ARGV[7], 'a', ARGV[10],
    'q', ARGV[11], 'e', ARGV[9])
  redis.call('HINCRBY', KEYS[7], K, 1)
  drop_pending()
end
if acked == 1 and redis.call('HINCRBY', KEYS[8], K, -1) <= 0 then
  redis.call('HDEL', KEYS[8], K)
end
if redis.call('HEXISTS', KEYS[8], K) == 0 and redis.call('HEXISTS', KEYS[7], K) == 0
    and redis.call('HEXISTS', KEYS[4], K) == 0 then
  redis.call('HDEL', KEYS[2], K)
  redis.call('HDEL', KEYS[3], K)
end
return 1
