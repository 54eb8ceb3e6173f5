-- UNLOCK: KEYS[1] = the entry's lock key P:{T}:lock, ARGV[1] = the holder's token. Releases a
-- distributed single-flight lock whose fill will not store (the body failed or returned
-- nothing to cache), if this holder still holds it. Returns 1 if released.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
