-- Shared header of every cache-redis script. ARGV[1] is the key prefix P; key names follow
-- src/keys.rs. Generations are microsecond timestamps from TIME, forced monotonic.
local P = ARGV[1]
local function ik(t) return P .. ':{' .. t .. '}' end
-- the forward list of entry t: `P:{T}:d`, a string of `<length>:<name>` items (an older
-- layout kept it in a set `P:{T}:deps`, still read and deleted so both can run side by side)
local function fk(t) return P .. ':{' .. t .. '}:d' end
local function dk(t) return P .. ':{' .. t .. '}:deps' end
local function deps_of(t)
  local out = {}
  local s = redis.call('GET', fk(t))
  if s then
    local i = 1
    while i <= #s do
      local c = string.find(s, ':', i, true)
      if not c then break end
      local n = tonumber(string.sub(s, i, c - 1))
      if not n then break end
      out[#out + 1] = string.sub(s, c + 1, c + n)
      i = c + 1 + n
    end
  end
  if redis.call('EXISTS', dk(t)) == 1 then
    for _, d in ipairs(redis.call('SMEMBERS', dk(t))) do out[#out + 1] = d end
  end
  return out
end
local function drop_deps(t) redis.call('DEL', fk(t), dk(t)) end
local function encode_deps(names)
  local parts = {}
  for _, d in ipairs(names) do parts[#parts + 1] = #d .. ':' .. d end
  return table.concat(parts)
end
local function sk(d) return P .. ':dep:{' .. d .. '}' end
local function lk(t) return P .. ':{' .. t .. '}:lock' end
local GK = P .. ':gen'
local EK = P .. ':epochs'
local function slot(s) return tostring(tonumber(string.sub(redis.sha1hex(s), 1, 4), 16) % 16384) end
local function fmt(n) return string.format('%.0f', n) end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function bump()
  local g = tonumber(redis.call('GET', GK) or '0') or 0
  local n = now_us()
  if n <= g then n = g + 1 end
  local s = fmt(n)
  redis.call('SET', GK, s)
  return s
end
local function current_gen()
  local g = redis.call('GET', GK)
  if not g then
    g = fmt(now_us())
    redis.call('SET', GK, g)
  end
  return g
end
-- A tombstone (src/envelope.rs): the envelope header with the tombstone flag, then the
-- generation of the invalidation that removed the entry, in decimal. It stands in the entry's
-- place for TOMB_PX ms so that a plain GET miss learns a lease at least that new.
local TOMB = string.char(0xCA, 1, 8)
local TOMB_PX = 60000
local function is_tomb(t) return redis.call('GETRANGE', ik(t), 0, 2) == TOMB end
-- Removes entry t because of the invalidation of generation g: its dependency references, its
-- forward list, and the entry itself, which becomes a tombstone (an existing tombstone is
-- renewed with g). Returns 1 if an entry was removed, else 0, and its dependency count.
local function unlink_item(t, g)
  local deps = deps_of(t)
  for _, d in ipairs(deps) do redis.call('SREM', sk(d), t) end
  drop_deps(t)
  local tomb = is_tomb(t)
  if not tomb and redis.call('EXISTS', ik(t)) == 0 then return 0, #deps end
  redis.call('SET', ik(t), TOMB .. g, 'PX', TOMB_PX)
  if tomb then return 0, #deps end
  return 1, #deps
end
