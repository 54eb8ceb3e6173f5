-- GET with distributed single flight: ARGV = P, T, token, lock px.
-- Returns {2, generation, value} on a hit, {1, generation, nil} when this caller took the
-- lock (or this node holds it already), {0, generation, nil} when another node holds it.
-- A tombstone is a miss (the generation read here is at least as new as the tombstone's).
local T = ARGV[2]
local g = redis.call('GET', GK) or '0'
local v = redis.call('GET', ik(T))
if v and string.sub(v, 1, 3) ~= TOMB then return {2, g, v} end
-- a lock this node holds already (a second look at a key it leads) is still its own
if redis.call('GET', lk(T)) == ARGV[3] then
  redis.call('PEXPIRE', lk(T), ARGV[4])
  return {1, g, false}
end
if redis.call('SET', lk(T), ARGV[3], 'NX', 'PX', ARGV[4]) then return {1, g, false} end
return {0, g, false}
