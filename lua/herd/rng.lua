-- herd.rng: a small deterministic random number generator for Lua code (splitmix64 on Lua 5.4's
-- wrapping 64-bit integers). The same seed gives the same numbers on every machine, and unlike
-- math.random it has no global state, so one part of a script drawing numbers never shifts
-- another part's stream. The toy world, bootstrap intervals and data shuffles in Lua use it.
--
--   local rng = herd.rng.new(42)
--   rng:float()  rng:int(1, 6)  rng:pick(list)  rng:normal()  rng:weighted{ {"a", 2}, {"b", 1} }
--   herd.rng.permutation(n, seed)  -- a list of 1..n in random order
local M = {}

local Rng = {}
Rng.__index = Rng

function M.new(seed)
  return setmetatable({ state = math.tointeger(seed or 0) or 0 }, Rng)
end

function Rng:next()
  self.state = self.state + 0x9E3779B97F4A7C15
  local z = self.state
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return z ~ (z >> 31)
end

-- Uniform in [0, 1).
function Rng:float()
  return (self:next() >> 11) * (1.0 / 9007199254740992.0)
end

-- Uniform integer in [lo, hi].
function Rng:int(lo, hi)
  return lo + (self:next() >> 1) % (hi - lo + 1)
end

function Rng:pick(list)
  return list[self:int(1, #list)]
end

-- Standard normal (Box-Muller).
function Rng:normal()
  local u1 = 1.0 - self:float()
  local u2 = self:float()
  return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
end

-- Picks a key of `weights` (a list of {key, weight}) with probability proportional to weight.
function Rng:weighted(weights)
  local total = 0
  for _, w in ipairs(weights) do total = total + w[2] end
  local x = self:float() * total
  for _, w in ipairs(weights) do
    x = x - w[2]
    if x < 0 then return w[1] end
  end
  return weights[#weights][1]
end

-- 1..n in an order drawn from `seed` (Fisher-Yates).
function M.permutation(n, seed)
  local rng = M.new(seed)
  local p = {}
  for i = 1, n do p[i] = i end
  for i = n, 2, -1 do
    local j = rng:int(1, i)
    p[i], p[j] = p[j], p[i]
  end
  return p
end

return M
