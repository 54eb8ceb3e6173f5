-- Shared header of every cache-redis script. ARGV[1] is the key prefix P; key names follow
-- src/keys.rs. Generations are microsecond timestamps from TIME, forced monotonic.
local P = ARGV[1]
local function ik(t) return P .. ':{' .. t .. '}' end
local function dk(t) return P .. ':{' .. t .. '}:deps' end
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
local function unlink_item(t)
  local deps = redis.call('SMEMBERS', dk(t))
  for _, d in ipairs(deps) do redis.call('SREM', sk(d), t) end
  redis.call('DEL', dk(t))
  return redis.call('DEL', ik(t))
end
