-- INVALIDATE: ARGV = P, mode ('k' = remove entries by key text, 'd' = dependencies), names.
-- Takes a new generation, stamps the slot of every name reached, replaces the entries that
-- depend on them by tombstones carrying the generation, transitively (an entry's key text is
-- a dependency of its dependents).
-- Returns {entries deleted, generation}.
local g = bump()
local removed = 0
local seen = {}
local queue = {}
for i = 3, #ARGV do
  if ARGV[2] == 'k' then removed = removed + unlink_item(ARGV[i], g) end
  queue[#queue + 1] = ARGV[i]
end
local stamped = {}
local qi = 1
while qi <= #queue do
  local d = queue[qi]
  qi = qi + 1
  if not seen[d] then
    seen[d] = true
    local s = slot(d)
    if not stamped[s] then
      stamped[s] = true
      redis.call('HSET', EK, s, g)
    end
    local members = redis.call('SMEMBERS', sk(d))
    redis.call('DEL', sk(d))
    for _, t in ipairs(members) do
      if not seen[t] then
        removed = removed + unlink_item(t, g)
        queue[#queue + 1] = t
      end
    end
  end
end
return {removed, g}
