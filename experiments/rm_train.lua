-- The helpfulness and safety reward models of Llama 2 section 3.2.2, on the toy world:
-- both initialised from the SFT chat model (experiments/sft.lua), trained one epoch on the
-- paper's two data recipes, then evaluated on the test split of every source.
--   Table 7 analogue: accuracy of both RMs on every test set (95% bootstrap intervals);
--   Table 8 analogue: accuracy per rating level on the Meta Helpful and Meta Safety tests;
--   Figure 27-style score histograms (SVG) of each RM on its own test set.
--
--   herd experiments/rm_train.lua [--quick] [--seed N] [--sft RUN_ID] [--batches N] [--pairs N]
local herd = require "herd"
local rmdata = require "herd.world.rmdata"

local args = herd.experiment.args{
  usage = "herd experiments/rm_train.lua [options]",
  description = "Trains the helpfulness and safety reward models (section 3.2.2).",
  options = {
    { "sft", "int", "run id of the chat model (default: the latest finished 'sft' run)" },
    { "batches", "int", "weekly preference batches (default 5, --quick 2)" },
    { "pairs", "int", "prompts per weekly batch (default 2000, --quick 300)" },
  },
}

local run <close> = herd.run.start{
  name = "rm-train",
  config = {
    quick = args.quick, seed = args.seed, sft_run = args.sft,
    batches = args.batches or (args.quick and 2 or 5),
    pairs = args.pairs or (args.quick and 300 or 2000),
    source_pairs = args.quick and 150 or 800, test_fraction = 0.1,
    preset = "toy", margins = "small", safety_aux = 1.0, rows = 16,
    recipes = rmdata.RECIPES, -- section 3.2.2, "Data Composition"
  },
  tags = { "world", "reward-model" },
}
local cfg = run.config
local out = herd.experiment.outdir(run)

local sft = rmdata.chat_model(cfg.sft_run, cfg.quick)
run:param("sft_run", sft.id)
local prefs = rmdata.corpus(run, cfg, out)

local rms = {}
for _, kind in ipairs{ "helpfulness", "safety" } do
  print(string.format("training the %s RM", kind))
  rms[kind] = rmdata.train(run, sft, prefs, cfg.recipes[kind], kind .. "-rm", {
    margins = cfg.margins, safety_aux = kind == "safety" and cfg.safety_aux or 0,
    seed = cfg.seed, preset = cfg.preset, rows = cfg.rows, save = out .. "/" .. kind .. "_rm" })
end

-- ---------------------------------------------------------------- evaluation

local reports = {}
for _, kind in ipairs{ "helpfulness", "safety" } do
  reports[kind] = {}
  for _, name in ipairs(prefs.names) do
    local r = rms[kind]:evaluate(prefs.test[name], { seed = cfg.seed, quiet = true, empty = "keep" })
    reports[kind][name] = r
    run:param(string.format("acc_%s_%s", kind, name), r.accuracy.value)
  end
end

local report = rmdata.reporter()
local say = report.say
local fmt = herd.rm.format

say("")
say("# Reward models from SFT run %d (run %d, seed %d%s)", sft.id, run.id, cfg.seed,
  cfg.quick and ", quick" or "")
say("")
say("Table 7 analogue: accuracy (%%) on each test set, 95%% bootstrap intervals.")
say("")
local header = { "| RM |" }
for _, name in ipairs(prefs.names) do header[#header + 1] = string.format(" %s (%d) |", name, #prefs.test[name]) end
say("%s", table.concat(header))
say("|---|%s", string.rep("---|", #prefs.names))
for _, kind in ipairs{ "helpfulness", "safety" } do
  local cells = { "| " .. kind .. " |" }
  for _, name in ipairs(prefs.names) do cells[#cells + 1] = " " .. fmt(reports[kind][name].accuracy) .. " |" end
  say("%s", table.concat(cells))
end

say("")
say("Table 8 analogue: accuracy (%%) per rating level.")
say("")
say("| RM / test set | %s |", table.concat(herd.data.ratings, " | "))
say("|---|---|---|---|---|")
for _, row in ipairs{ { "helpfulness", "meta_helpful" }, { "safety", "meta_safety" } } do
  local r = reports[row[1]][row[2]]
  local cells = {}
  for i, rating in ipairs(herd.data.ratings) do
    cells[i] = fmt(r.by_rating[rating])
    if r.by_rating[rating] then
      run:param(string.format("acc_%s_%s_level%d", row[1], row[2], i), r.by_rating[rating].value)
    end
  end
  say("| %s RM / %s | %s |", row[1], row[2], table.concat(cells, " | "))
end

local safety_report = reports.safety.meta_safety
say("")
say("Safety RM on the Meta Safety test by bin: safe/unsafe %s, safe/safe %s, unsafe/unsafe %s; " ..
  "unsafe-response recall at score 0.5: %s", fmt(safety_report.by_bin["safe/unsafe"]),
  fmt(safety_report.by_bin["safe/safe"]), fmt(safety_report.by_bin["unsafe/unsafe"]),
  fmt(safety_report.unsafe_recall))

-- ---------------------------------------------------------------- figures

for _, row in ipairs{ { "helpfulness", "meta_helpful" }, { "safety", "meta_safety" } } do
  local h = reports[row[1]][row[2]].histogram
  local path = string.format("%s/scores_%s.svg", out, row[1])
  herd.svg.write(path, herd.svg.histogram{
    title = string.format("%s RM scores on the %s test set", row[1], row[2]),
    x_label = "sigmoid(score)", edges = h.edges,
    series = { { name = "chosen", counts = h.chosen }, { name = "rejected", counts = h.rejected } },
  })
  run:artifact("scores_" .. row[1], path, "svg")
end

report.write(run, out .. "/rm_train.md")
print(string.format("\nreward models, data, figures and report in %s", out))
