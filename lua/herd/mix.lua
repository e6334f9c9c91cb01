-- herd.mix: data-mixing recipes as plain data (Llama 2 section 3.2.2, "Data Composition").
--
-- The helpfulness RM is trained on all Meta Helpfulness data plus an equal part of the rest,
-- sampled uniformly from Meta Safety and the open-source sets; the safety RM on all Meta Safety
-- and Anthropic Harmless data mixed with helpfulness data in a 90/10 proportion:
--
--   local helpful = { name = "helpfulness",
--                     all = { "meta_helpful" },
--                     add = { from = { "meta_safety", "open_source" }, ratio = 1 } }
--   local safety = { name = "safety",
--                    all = { "meta_safety", "anthropic_harmless" },
--                    add = { from = { "meta_helpful", "open_helpful" }, share = 0.1 } }
--   local ds, report = herd.mix.build(helpful, { meta_helpful = ds1, ... }, { seed = 1 })
--
-- `all` sources are taken whole; `add` draws ratio x (size of `all`) records, or enough for
-- `share` of the final mix (share 0.1 -> ratio 1/9), without replacement, either pooled (every
-- record of the `from` sources equally likely, the default) or `split = "even"` (each source
-- the same count). A recipe is plain data, so it goes into a run's config as it is.
local M = {}

local ALLOWED = { name = true, all = true, add = true }
local ALLOWED_ADD = { from = true, ratio = true, share = true, split = true, n = true }

local function fail(recipe, fmt, ...)
  error(string.format("mix '%s': " .. fmt, recipe.name or "recipe", ...), 3)
end

local function check(recipe, sources)
  if type(recipe) ~= "table" then error("herd.mix.build: recipe must be a table", 3) end
  for key in pairs(recipe) do
    if not ALLOWED[key] then fail(recipe, "unknown field '%s' (name, all, add)", tostring(key)) end
  end
  if type(recipe.all or {}) ~= "table" then fail(recipe, "'all' must be a list of source names") end
  local function known(name)
    if not sources[name] then
      local names = {}
      for k in pairs(sources) do names[#names + 1] = k end
      table.sort(names)
      fail(recipe, "no source named '%s' (have: %s)", tostring(name), table.concat(names, ", "))
    end
  end
  for _, name in ipairs(recipe.all or {}) do known(name) end
  local add = recipe.add
  if add then
    for key in pairs(add) do
      if not ALLOWED_ADD[key] then
        fail(recipe, "unknown field 'add.%s' (from, ratio, share, n, split)", tostring(key))
      end
    end
    if type(add.from) ~= "table" or #add.from == 0 then
      fail(recipe, "'add.from' must be a non-empty list of source names")
    end
    for _, name in ipairs(add.from) do known(name) end
    local given = (add.ratio and 1 or 0) + (add.share and 1 or 0) + (add.n and 1 or 0)
    if given ~= 1 then fail(recipe, "'add' needs exactly one of ratio, share or n") end
    if add.share and not (add.share >= 0 and add.share < 1) then
      fail(recipe, "'add.share' must be in [0, 1), got %s", tostring(add.share))
    end
    if add.ratio and not (add.ratio >= 0) then
      fail(recipe, "'add.ratio' must be >= 0, got %s", tostring(add.ratio))
    end
    if add.split and add.split ~= "pooled" and add.split ~= "even" then
      fail(recipe, "'add.split' must be \"pooled\" or \"even\", got %s", tostring(add.split))
    end
  end
end

-- The number of records `add` asks for, given the size of the `all` part.
function M.added_count(add, n_all)
  if add.n then return math.tointeger(add.n) or error("add.n must be an integer", 2) end
  local ratio = add.ratio or add.share / (1 - add.share)
  return math.floor(ratio * n_all + 0.5)
end

local function concat_all(list)
  local ds = nil
  for _, part in ipairs(list) do ds = ds and ds:concat(part) or part end
  return ds
end

-- herd.mix.build(recipe, sources, { seed = 1, print = true }) -> dataset, report
-- sources: { name = dataset, ... }. report = { name =, total =, counts = { source = n },
-- order = { source names in the mix's order } }. The result is shuffled with the seed.
function M.build(recipe, sources, opts)
  opts = opts or {}
  check(recipe, sources)
  local seed = opts.seed or 1
  local parts, counts, order = {}, {}, {}
  local function take(name, ds)
    parts[#parts + 1] = ds
    if not counts[name] then order[#order + 1] = name end
    counts[name] = (counts[name] or 0) + #ds
  end
  local n_all = 0
  for _, name in ipairs(recipe.all or {}) do
    take(name, sources[name])
    n_all = n_all + #sources[name]
  end
  local add = recipe.add
  if add then
    local want = M.added_count(add, n_all)
    if (add.split or "pooled") == "pooled" then
      local sizes, total = {}, 0
      for i, name in ipairs(add.from) do sizes[i] = #sources[name]; total = total + sizes[i] end
      if want > total then
        fail(recipe, "asks for %d records from %s, which hold %d", want,
          table.concat(add.from, " + "), total)
      end
      -- Selection sampling (Knuth's algorithm S) over the pooled records: every subset of
      -- `want` records is equally likely, and each source keeps its own order.
      local g = require("herd.rng").new(seed)
      local picked, left = 0, want
      for i, name in ipairs(add.from) do
        local mine = {}
        for j = 1, sizes[i] do
          picked = picked + 1
          if left > 0 and g:float() * (total - picked + 1) < left then
            mine[#mine + 1] = j
            left = left - 1
          end
        end
        if #mine > 0 then take(name, sources[name]:select(mine)) end
      end
      assert(left == 0)
    else
      local k = #add.from
      for i, name in ipairs(add.from) do
        local n = want // k + (i <= want % k and 1 or 0)
        if n > #sources[name] then
          fail(recipe, "asks for %d records from %s, which holds %d", n, name, #sources[name])
        end
        if n > 0 then take(name, sources[name]:sample(n, seed + i)) end
      end
    end
  end
  if #parts == 0 then fail(recipe, "selects no data") end
  local mixed = concat_all(parts):shuffle(seed)
  local report = { name = recipe.name, total = #mixed, counts = counts, order = order }
  if opts.print ~= false then print(M.describe(report)) end
  return mixed, report
end

-- One line: "helpfulness mix: 8000 records = meta_helpful 4000 + meta_safety 2100 + ..."
function M.describe(report)
  local parts = {}
  for _, name in ipairs(report.order) do
    parts[#parts + 1] = string.format("%s %d", name, report.counts[name])
  end
  return string.format("%s mix: %d records = %s", report.name or "data", report.total,
    table.concat(parts, " + "))
end

return M
