-- CLEAR: ARGV = P. Stamps `clear` with a new generation (so fills that began earlier are
-- rejected); the caller then deletes the keys with SCAN. Returns the generation.
local g = bump()
redis.call('HSET', EK, 'clear', g)
return g
