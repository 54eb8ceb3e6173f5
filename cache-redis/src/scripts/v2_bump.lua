-- BUMP (protocol 2): KEYS[1] = the version key `P:v:{N}` of the name N being invalidated;
-- KEYS[2] (optional) = the entry `P:{N}` when N is an entry's key text (same hash slot);
-- ARGV[1] = the version ttl (ms), ARGV[2] = the least ttl (ms) a bumped key keeps.
-- Gives N a new version token (even: "bumped", stamped with the server time, and always newer
-- than the one it replaces), so that every entry stored under the old token reads as a miss
-- and every fill leased before now is rejected; deletes the entry KEYS[2].
-- Reply: {entries deleted (0 or 1), server time in microseconds}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local old = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local stamp = math.max(now, math.floor(old / 2) + 1)
local v = string.format('%.0f', stamp * 2)
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then
  redis.call('SET', KEYS[1], v, 'PX', ARGV[1])
elseif ttl == -1 then
  redis.call('SET', KEYS[1], v)
else
  redis.call('SET', KEYS[1], v, 'PX', math.max(ttl, tonumber(ARGV[2])))
end
local deleted = 0
if KEYS[2] then deleted = redis.call('DEL', KEYS[2]) end
return {deleted, string.format('%.0f', now)}
