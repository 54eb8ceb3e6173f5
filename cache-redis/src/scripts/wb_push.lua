-- WRITE-BEHIND PUSH: KEYS = stream, latest (hash), pending (hash), queued counts (hash);
-- ARGV = target key K,
-- arguments, value, capacity. Every key has the writer's hash tag (src/write_queue.rs).
-- Numbers the write (the key's latest sequence + 1), makes its value the key's pending value
-- and appends it to the stream. Returns the stream id, or false when `capacity` writes wait.
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[4]) then return false end
local seq = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[3], ARGV[1], seq .. ':' .. ARGV[3])
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
return redis.call('XADD', KEYS[1], '*', 'k', ARGV[1], 's', seq, 'n', 0, 'b', 0, 'a', ARGV[2])
