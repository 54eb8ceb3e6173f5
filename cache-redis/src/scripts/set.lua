-- SET: ARGV = P, T, lease ('u' = unconditional), envelope, px (0 = no expiry), lock token
-- ('' = none), then the dependencies. Rejects a lease older than an invalidation of T, of a
-- dependency, or of everything (clear); otherwise stores the entry, its forward list and its
-- reverse-index memberships. Returns {1 stored | 0 rejected, current generation}.
local T = ARGV[2]
local g = current_gen()
local function release()
  if ARGV[6] ~= '' and redis.call('GET', lk(T)) == ARGV[6] then redis.call('DEL', lk(T)) end
end
if ARGV[3] ~= 'u' then
  local lease = tonumber(ARGV[3])
  local gn = tonumber(g)
  local stale = (lease == nil) or (lease > gn)
  if not stale and lease < gn then
    local fields = {'clear', slot(T)}
    for i = 7, #ARGV do fields[#fields + 1] = slot(ARGV[i]) end
    local stamps = redis.call('HMGET', EK, unpack(fields))
    for i = 1, #fields do
      local s = stamps[i]
      if s and tonumber(s) > lease then stale = true break end
    end
  end
  if stale then
    release()
    return {0, g}
  end
end
if tonumber(ARGV[5]) > 0 then
  redis.call('SET', ik(T), ARGV[4], 'PX', ARGV[5])
else
  redis.call('SET', ik(T), ARGV[4])
end
local new = {}
local names = {}
for i = 7, #ARGV do
  if not new[ARGV[i]] then
    new[ARGV[i]] = true
    names[#names + 1] = ARGV[i]
  end
end
for _, d in ipairs(deps_of(T)) do
  if not new[d] then redis.call('SREM', sk(d), T) end
end
drop_deps(T)
if #names > 0 then
  redis.call('SET', fk(T), encode_deps(names))
  for _, d in ipairs(names) do redis.call('SADD', sk(d), T) end
end
release()
return {1, g}
