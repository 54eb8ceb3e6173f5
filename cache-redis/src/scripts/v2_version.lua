-- VERSION (protocol 2): KEYS[1] = the version key `P:v:{N}` of a dependency N; ARGV[1] = how
-- long (ms) the entry being stored lives, 0 = without expiry; ARGV[2] = the version ttl (ms).
-- Returns the current version token, creating one if there is none (odd: "created"; see
-- src/versioned.rs), and makes the key live at least as long as the entry.
-- Reply: {token, server time in microseconds}, both decimal strings.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local want = tonumber(ARGV[1])
local v = redis.call('GET', KEYS[1])
if not v then
  v = string.format('%.0f', now * 2 + 1)
  if want == 0 then
    redis.call('SET', KEYS[1], v)
  else
    redis.call('SET', KEYS[1], v, 'PX', math.max(want, tonumber(ARGV[2])))
  end
else
  local ttl = redis.call('PTTL', KEYS[1])
  if want == 0 then
    if ttl >= 0 then redis.call('PERSIST', KEYS[1]) end
  elseif ttl >= 0 and ttl < want then
    redis.call('PEXPIRE', KEYS[1], want)
  end
end
return {v, string.format('%.0f', now)}
