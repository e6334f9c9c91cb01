-- Data-mixing recipes (lua/herd/mix.lua): exact counts, sampling without replacement,
-- determinism, and errors that name the recipe and the field.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local herd = require "herd"
local mix = herd.mix

local function source(name, n)
  local records = {}
  for i = 1, n do
    records[i] = { prompt = name .. " " .. i, chosen = "a.", rejected = "b.", rating = "better",
                   domain = "helpful", source = name }
  end
  return herd.data.from_records(records)
end

local sources = { meta_helpful = source("meta_helpful", 400), meta_safety = source("meta_safety", 300),
                  harmless = source("harmless", 100), shp = source("shp", 250),
                  stack = source("stack", 50) }

local function count_by_source(ds)
  local counts, seen = {}, {}
  for i = 1, #ds do
    local r = ds[i]
    counts[r.source] = (counts[r.source] or 0) + 1
    t.ok(not seen[r.prompt], "no record twice: " .. r.prompt)
    seen[r.prompt] = true
  end
  return counts
end

t.test("all of A plus an equal part sampled uniformly from B and C", function()
  local recipe = { name = "helpfulness", all = { "meta_helpful" },
                   add = { from = { "meta_safety", "shp" }, ratio = 1 } }
  local ds, report = mix.build(recipe, sources, { seed = 3, print = false })
  t.eq(#ds, 800)
  t.eq(report.total, 800)
  local counts = count_by_source(ds)
  t.eq(counts.meta_helpful, 400)
  t.eq(counts.meta_safety + counts.shp, 400)
  t.eq(report.counts.meta_safety, counts.meta_safety)
  t.eq(report.counts.shp, counts.shp)
  -- pooled sampling: shares follow the source sizes (300 : 250), not an even split
  t.ok(counts.meta_safety > counts.shp, "the larger source gives more")
  local same = mix.build(recipe, sources, { seed = 3, print = false })
  for i = 1, #ds do t.eq(ds:json(i), same:json(i)) end
  local other = mix.build(recipe, sources, { seed = 4, print = false })
  local differs = false
  for i = 1, #ds do differs = differs or ds:json(i) ~= other:json(i) end
  t.ok(differs, "another seed, another sample")
end)

t.test("pooled sampling is uniform over records", function()
  -- each of the 550 pooled records is drawn with probability 200/550; over 40 seeds the
  -- per-source totals must be near 40 * 200 * size / 550
  local totals = { meta_safety = 0, shp = 0 }
  for seed = 1, 40 do
    local _, report = mix.build({ name = "u", add = { from = { "meta_safety", "shp" }, n = 200 } },
      sources, { seed = seed, print = false })
    totals.meta_safety = totals.meta_safety + report.counts.meta_safety
    totals.shp = totals.shp + (report.counts.shp or 0)
  end
  t.eq(totals.meta_safety + totals.shp, 8000)
  t.near(totals.meta_safety, 8000 * 300 / 550, 150, "meta_safety share")
end)

t.test("X and Y mixed with Z in a 90/10 proportion, and an even split", function()
  local recipe = { name = "safety", all = { "meta_safety", "harmless" },
                   add = { from = { "meta_helpful", "shp" }, share = 0.1 } }
  local ds, report = mix.build(recipe, sources, { seed = 1, print = false })
  local counts = count_by_source(ds)
  t.eq(counts.meta_safety, 300)
  t.eq(counts.harmless, 100)
  t.eq((counts.meta_helpful or 0) + (counts.shp or 0), 44) -- round(400 / 9)
  t.eq(#ds, 444)
  t.match(mix.describe(report), "^safety mix: 444 records = meta_safety 300 %+ harmless 100 %+ ")
  local even = mix.build({ name = "even", add = { from = { "meta_helpful", "shp", "stack" }, n = 100,
                                                  split = "even" } }, sources, { seed = 2, print = false })
  local c = count_by_source(even)
  t.eq(c.meta_helpful, 34)
  t.eq(c.shp, 33)
  t.eq(c.stack, 33)
end)

t.test("a recipe is plain data and bad recipes are named errors", function()
  local recipe = { name = "r", all = { "meta_helpful" }, add = { from = { "shp" }, ratio = 0.5 } }
  t.eq(herd.json.decode(herd.json.encode(recipe)).add.ratio, 0.5)
  t.raises(function() mix.build({ name = "r", all = { "reddit" } }, sources) end,
    "mix 'r': no source named 'reddit' %(have: harmless, meta_helpful")
  t.raises(function() mix.build({ name = "r", everything = true }, sources) end,
    "unknown field 'everything'")
  t.raises(function() mix.build({ name = "r", all = { "stack" }, add = { from = { "shp" } } },
    sources) end, "exactly one of ratio, share or n")
  t.raises(function() mix.build({ name = "r", all = { "meta_helpful" },
    add = { from = { "stack" }, ratio = 1 } }, sources) end,
    "asks for 400 records from stack, which hold 50")
  t.raises(function() mix.build({ name = "r", add = { from = { "shp" }, share = 1 } }, sources) end,
    "'add.share' must be in")
  t.raises(function() mix.build({ name = "r", all = {} }, sources) end, "selects no data")
end)

t.done()
