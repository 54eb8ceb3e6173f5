-- GC: ARGV = P, key texts of entries that expired or were evicted. For each one that does not
-- exist (again), removes it from the reverse-index sets of its dependencies and deletes its
-- forward list. Returns the number of references removed.
local n = 0
for i = 2, #ARGV do
  local t = ARGV[i]
  if redis.call('EXISTS', ik(t)) == 0 then
    for _, d in ipairs(deps_of(t)) do n = n + redis.call('SREM', sk(d), t) end
    drop_deps(t)
  end
end
return n
