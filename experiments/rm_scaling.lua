-- Figure 6 analogue (section 3.2.2, "Scaling Trends"): helpfulness reward-model accuracy on the
-- Meta Helpful test set as the number of weekly preference batches grows, for two model sizes.
-- Each point is an RM trained from that size's chat model on the Meta Helpful pairs of batches
-- 1..k (one epoch, the toy preset); the test set is fixed (the test split of all batches).
--
--   herd experiments/rm_scaling.lua [--quick] [--seed N] [--small RUN_ID] [--large RUN_ID]
-- The chat models are 'sft' runs: by default the latest finished one and the latest finished
-- one of another size. To make one of another size:
--   herd experiments/base.lua --layers 2 && herd experiments/sft.lua --base <that run's id>
local herd = require "herd"
local rmdata = require "herd.world.rmdata"

local args = herd.experiment.args{
  usage = "herd experiments/rm_scaling.lua [options]",
  description = "Reward-model accuracy against preference data, two model sizes (Figure 6).",
  options = {
    { "small", "int", "sft run of the smaller chat model" },
    { "large", "int", "sft run of the larger chat model" },
    { "batches", "int", "weekly batches (default 5, --quick 2)" },
  },
}

local run <close> = herd.run.start{
  name = "rm-scaling",
  config = {
    quick = args.quick, seed = args.seed, small = args.small, large = args.large,
    batches = args.batches or (args.quick and 2 or 5), pairs = args.quick and 150 or 1000,
    source_pairs = 20, test_fraction = 0.1, preset = "toy", margins = "small", rows = 16,
  },
  tags = { "world", "reward-model", "scaling" },
}
local cfg = run.config
local out = herd.experiment.outdir(run)

-- Parameter count of an sft run's model (recorded by sft.lua, or by its base run).
local function size_of(sft)
  if sft.params.params then return tonumber(sft.params.params) end
  local base = sft.params.base_run and herd.run.database():query(
    "SELECT value FROM params WHERE run_id = ? AND key = 'params'", sft.params.base_run)[1]
  return base and tonumber(base.value)
end

-- The two chat models: given, or the latest finished sft run and the latest one of another
-- size; the one with more parameters is "large".
local function chat_models()
  local hint = "make a chat model of another size with `herd experiments/base.lua --layers N` " ..
    "and `herd experiments/sft.lua --base <its run id>`"
  local picked = {}
  for _, id in ipairs{ cfg.small or false, cfg.large or false } do
    if id then picked[#picked + 1] = rmdata.chat_model(id, cfg.quick) end
  end
  if #picked < 2 then
    local rows = herd.run.database():query(
      "SELECT id FROM runs WHERE name = 'sft' AND status = 'finished' ORDER BY id DESC")
    for _, row in ipairs(rows) do
      if #picked == 2 then break end
      -- runs whose checkpoint is gone are passed over
      local ok, candidate = pcall(rmdata.chat_model, row.id, cfg.quick)
      local size = ok and size_of(candidate)
      local known = not size
      for _, p in ipairs(picked) do known = known or p.id == candidate.id or size_of(p) == size end
      if not known then picked[#picked + 1] = candidate end
    end
  end
  if #picked < 2 then error("rm_scaling needs finished sft runs of two model sizes; " .. hint, 0) end
  if size_of(picked[1]) == size_of(picked[2]) then
    error(string.format("sft runs %d and %d have models of the same size; %s", picked[1].id,
      picked[2].id, hint), 0)
  end
  table.sort(picked, function(x, y) return size_of(x) < size_of(y) end)
  return { { name = "small", run = picked[1] }, { name = "large", run = picked[2] } }
end

local sizes = chat_models()
for _, size in ipairs(sizes) do
  run:param(size.name .. "_sft_run", size.run.id)
  size.params = size_of(size.run)
  run:param(size.name .. "_params", size.params)
end
local prefs = rmdata.corpus(run, cfg, out)
local train, test = prefs.train.meta_helpful, prefs.test.meta_helpful
local recipe_all = { name = "meta helpful", all = { "upto" } }

local curves = {}
for _, size in ipairs(sizes) do
  curves[size.name] = {}
  for k = 1, cfg.batches do
    local upto = train:filter(function(r) return r.batch <= k end)
    print(string.format("%s model (%d parameters): batches 1..%d, %d pairs", size.name,
      size.params, k, #upto))
    local rm <close> = rmdata.train(run, size.run, { train = { upto = upto } }, recipe_all,
      string.format("rm-%s-%d", size.name, k), { margins = cfg.margins, seed = cfg.seed,
        preset = cfg.preset, rows = cfg.rows, print = false })
    local r = rm:evaluate(test, { seed = cfg.seed, quiet = true, empty = "keep", bootstrap = 300 })
    curves[size.name][k] = { pairs = #upto, accuracy = r.accuracy }
    run:log(k, { ["acc_" .. size.name] = r.accuracy.value, ["pairs_" .. size.name] = #upto })
  end
end

local report = rmdata.reporter()
local say = report.say
say("")
say("# Reward-model scaling (Figure 6 analogue), run %d, seed %d%s", run.id, cfg.seed,
  cfg.quick and ", quick" or "")
say("")
say("Helpfulness RM accuracy (%%) on the Meta Helpful test set (%d pairs), 95%% bootstrap " ..
  "intervals, by the number of weekly batches trained on.", #test)
say("")
local header = { "| model |" }
for k = 1, cfg.batches do header[#header + 1] = string.format(" %d batch%s |", k, k > 1 and "es" or "") end
say("%s", table.concat(header))
say("|---|%s", string.rep("---|", cfg.batches))
local series = {}
for _, size in ipairs(sizes) do
  local cells, points, band = { string.format("| %s (%.1fM, sft run %d) |",
    size.name, size.params / 1e6, size.run.id) }, {}, {}
  for k, c in ipairs(curves[size.name]) do
    cells[#cells + 1] = " " .. herd.rm.format(c.accuracy) .. " |"
    points[k] = { k, 100 * c.accuracy.value }
    band[k] = { k, 100 * c.accuracy.lo, 100 * c.accuracy.hi }
  end
  say("%s", table.concat(cells))
  series[#series + 1] = { name = string.format("%s (%.1fM)", size.name,
    size.params / 1e6), points = points, band = band }
end
local path = out .. "/rm_scaling.svg"
herd.svg.write(path, herd.svg.lines{ title = "Reward-model accuracy vs preference data (Figure 6 analogue)",
  x_label = "weekly batches", y_label = "accuracy on Meta Helpful test (%)", series = series })
run:artifact("figure", path, "svg")
report.write(run, out .. "/rm_scaling.md")
print(string.format("\nreport and figure in %s", out))
