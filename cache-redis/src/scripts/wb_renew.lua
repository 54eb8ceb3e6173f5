-- WRITE-BEHIND RENEW: KEYS = the key's lock; ARGV = lock token, lock px. Keeps the lock of a
-- body still running from expiring, if this write still holds it. Returns 1 if renewed.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
