-- SWEEP: ARGV = P, number of dependency names k, k dependency names, then key texts of
-- forward lists. Removes reverse-index members whose entry does not exist, and forward lists
-- (with their references) of entries that do not exist. Returns references removed.
local k = tonumber(ARGV[2])
local n = 0
for i = 3, 2 + k do
  local d = ARGV[i]
  local members = redis.call('SMEMBERS', sk(d))
  for _, t in ipairs(members) do
    if redis.call('EXISTS', ik(t)) == 0 then n = n + redis.call('SREM', sk(d), t) end
  end
end
for i = 3 + k, #ARGV do
  local t = ARGV[i]
  if redis.call('EXISTS', ik(t)) == 0 then
    for _, d in ipairs(deps_of(t)) do n = n + redis.call('SREM', sk(d), t) end
    drop_deps(t)
  end
end
return n
