-- WRITE-BEHIND START: KEYS = latest (hash), done (hash), the key's lock, stream; ARGV = K, seq,
-- coalesce ('1'/'0'), lock token, lock px, stream id. A write no longer in the stream was
-- finished by another flusher (a second delivery) and is dropped; so is one older than (or as
-- old as) the newest done one, so an older value never lands over a newer one; with
-- coalescing, so is one older than the newest queued. Otherwise it runs if it takes the key's
-- lock. Returns 'run', 'superseded' or 'busy'.
if #redis.call('XRANGE', KEYS[4], ARGV[6], ARGV[6]) == 0 then return 'superseded' end
local seq = tonumber(ARGV[2])
local done = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if done >= seq then return 'superseded' end
if ARGV[3] == '1' then
  local latest = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
  if latest > seq then return 'superseded' end
end
if redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[5]) then return 'run' end
return 'busy'
