-- INVALIDATE, one bounded step: ARGV = P, generation ('new' = take a new one), budget, mode
-- ('k' = the names are entry key texts to remove first, 'd' = dependencies), names.
-- An invalidation runs as a sequence of steps driven by the client (src/backend.rs), so no
-- step holds the server for long whatever the fan-out: each step does at most `budget` units of
-- work (an entry removed costs 1 + its dependency count).
-- For every name it takes, the step stamps the name's slot with the generation (before
-- touching its dependents, so a fill that races from here on is rejected) and pops dependents
-- from its reverse-index set, replacing each by a tombstone and stamping its slot too (a fill
-- in flight that depends on that entry, e.g. a nested cached call, has not joined any index
-- yet: only the stamp rejects it). A
-- removed entry that has dependents of its own is returned, to be taken by a later step
-- (transitive); a name whose set is not yet empty when the budget runs out is returned as
-- unfinished, to be taken again.
-- Returns {entries removed, generation, {reached names}, {unfinished names}}.
local g = ARGV[2]
if g == 'new' then g = bump() end
local budget = tonumber(ARGV[3])
local removed = 0
local reached = {}
local unfinished = {}
local function stamp(name) redis.call('HSET', EK, slot(name), g) end
local function take(t)
  stamp(t)
  local r, deps = unlink_item(t, g)
  budget = budget - 1 - deps
  removed = removed + r
  if redis.call('EXISTS', sk(t)) == 1 then reached[#reached + 1] = t end
end
for i = 5, #ARGV do
  local d = ARGV[i]
  if budget <= 0 then
    unfinished[#unfinished + 1] = d
  else
    if ARGV[4] == 'k' then take(d) end
    stamp(d)
    while budget > 0 do
      local batch = redis.call('SPOP', sk(d), math.min(budget, 100))
      if #batch == 0 then break end
      for _, t in ipairs(batch) do take(t) end
    end
    if budget <= 0 and redis.call('EXISTS', sk(d)) == 1 then
      unfinished[#unfinished + 1] = d
    end
  end
end
return {removed, g, reached, unfinished}
