-- SET (protocol 2): KEYS[1] = the entry `P:{T}`, KEYS[2] = its lock `P:{T}:lock`, KEYS[3] =
-- its own version key `P:v:{T}` (one hash slot); ARGV[1] = the lease's server time in
-- microseconds ('u' = unconditional), ARGV[2] = the envelope (which lists the dependencies'
-- version tokens), ARGV[3] = px (0 = no expiry), ARGV[4] = the lock token ('' = none).
-- Rejects the fill when the entry's key was invalidated after the lease (its version bumped
-- later than the lease's time); otherwise stores the entry. Releases the lock either way.
-- Reply: {1 stored | 0 rejected, server time in microseconds}.
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
local function release()
  if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
end
if ARGV[1] ~= 'u' then
  local own = tonumber(redis.call('GET', KEYS[3]) or '1') or 1
  if own % 2 == 0 and math.floor(own / 2) > tonumber(ARGV[1]) then
    release()
    return {0, now}
  end
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
release()
return {1, now}
