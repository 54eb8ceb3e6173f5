-- WRITE-BEHIND REPLAY: KEYS = dead stream, stream, dead counts, queued counts;
-- ARGV = dead letter id.
-- Queues the letter again (attempts 0, same sequence: it still never lands over a newer
-- write). Returns 1, or 0 if there is no such letter.
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = {}
local fields = e[1][2]
for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
redis.call('XADD', KEYS[2], '*', 'k', f['k'], 's', f['s'], 'n', 0, 'b', 0, 'a', f['a'],
  'q', f['q'] or '0')
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[4], f['k'], 1)
if redis.call('HINCRBY', KEYS[3], f['k'], -1) <= 0 then redis.call('HDEL', KEYS[3], f['k']) end
return 1
