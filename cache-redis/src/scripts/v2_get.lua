-- GET with distributed single flight (protocol 2): KEYS[1] = the entry `P:{T}`, KEYS[2] = its
-- lock `P:{T}:lock`; ARGV[1] = this node's lock token, ARGV[2] = lock px, ARGV[3] = 'v' to
-- answer a stored value (the client validates it), 'l' to take the lock whatever is stored
-- (the value read before was not valid).
-- Reply: {2, time, value} a value; {1, time} this caller holds the lock (took it, or held it
-- already); {0, time} another node holds it. Time: the server's, in microseconds.
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
if ARGV[3] == 'v' then
  local v = redis.call('GET', KEYS[1])
  if v then return {2, now, v} end
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return {1, now}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, now} end
return {0, now}
