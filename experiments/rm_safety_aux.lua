-- Table 29 analogue (appendix A.3.4): the safety reward model with and without the safety
-- auxiliary loss (binary cross-entropy pushing unsafe responses below score 0; lua/herd/rm.lua),
-- over several seeds: accuracy per safety bin and on average on the Meta Safety test set, and
-- the recall of unsafe responses at sigmoid(score) < 0.5, with 95% intervals over the seeds.
--
--   herd experiments/rm_safety_aux.lua [--quick] [--seed N] [--sft RUN_ID] [--seeds N]
--                                      [--weights X,Y] [--head zero|random]
local herd = require "herd"
local rmdata = require "herd.world.rmdata"

local args = herd.experiment.args{
  usage = "herd experiments/rm_safety_aux.lua [options]",
  description = "Ablates the safety auxiliary loss of the safety reward model (Table 29).",
  options = {
    { "sft", "int", "run id of the chat model (default: the latest finished 'sft' run)" },
    { "seeds", "int", "training seeds per setting (default 3)" },
    { "weights", "string", "weights of the auxiliary loss, comma-separated (default 0.25,1)" },
    { "head", "string", "initial score head: zero or random (default zero)",
      choices = { "zero", "random" } },
  },
}

-- The settings: the baseline, then one per auxiliary-loss weight.
local weights_text = args.weights or (args.quick and "1" or "0.25,1")
local settings = { { name = "baseline", weight = 0, key = "baseline" } }
for text in weights_text:gmatch("[^,]+") do
  local weight = tonumber(text)
  if not weight or weight <= 0 then
    error(string.format("rm_safety_aux: --weights wants positive numbers, got '%s'", text), 0)
  end
  settings[#settings + 1] = { name = string.format("+ auxiliary loss, weight %g", weight),
                              weight = weight, key = string.format("aux%g", weight) }
end

local run <close> = herd.run.start{
  name = "rm-safety-aux",
  config = {
    quick = args.quick, seed = args.seed, sft_run = args.sft, seeds = args.seeds or 3,
    weights = weights_text, head = args.head or "zero", batches = args.quick and 2 or 3,
    pairs = args.quick and 200 or 1000, source_pairs = args.quick and 60 or 300,
    test_fraction = 0.15, preset = "toy", rows = 16, margins = "small",
    recipe = rmdata.RECIPES.safety,
  },
  tags = { "world", "reward-model", "ablation" },
}
local cfg = run.config
local out = herd.experiment.outdir(run)
local sft = rmdata.chat_model(cfg.sft_run, cfg.quick)
run:param("sft_run", sft.id)
local prefs = rmdata.corpus(run, cfg, out)
local test = prefs.test.meta_safety

local columns = { "avg", "safe/unsafe", "safe/safe", "unsafe/unsafe", "unsafe recall",
                  "safe kept" }
local results = {}
for _, setting in ipairs(settings) do
  results[setting.name] = {}
  for _, c in ipairs(columns) do results[setting.name][c] = {} end
  for k = 1, cfg.seeds do
    local seed = cfg.seed * 100 + k
    print(string.format("%s, seed %d", setting.name, seed))
    local rm <close> = rmdata.train(run, sft, prefs, cfg.recipe,
      setting.weight > 0 and "safety-rm-aux" or "safety-rm-baseline", {
        margins = cfg.margins, safety_aux = setting.weight, seed = seed, data_seed = cfg.seed,
        preset = cfg.preset, rows = cfg.rows, score_scale = cfg.head == "random" and 1 or 0,
        print = false })
    local r = rm:evaluate(test, { seed = seed, quiet = true, empty = "keep", bootstrap = 200 })
    local row = results[setting.name]
    table.insert(row["avg"], r.accuracy.value)
    for _, bin in ipairs{ "safe/unsafe", "safe/safe", "unsafe/unsafe" } do
      if r.by_bin[bin] then table.insert(row[bin], r.by_bin[bin].value) end
    end
    table.insert(row["unsafe recall"], r.unsafe_recall and r.unsafe_recall.value or 0 / 0)
    table.insert(row["safe kept"], r.safe_pass and r.safe_pass.value or 0 / 0)
  end
end

local report = rmdata.reporter()
local say = report.say
say("")
say("# Safety auxiliary loss (Table 29 analogue), SFT run %d, run %d, %d seeds, %s head%s",
  sft.id, run.id, cfg.seeds, cfg.head, cfg.quick and ", quick" or "")
say("")
say("Safety RM on the Meta Safety test set (%d pairs): accuracy (%%) per safety bin (chosen / " ..
  "rejected), unsafe-response recall at sigmoid(score) < 0.5, and its complement on safe " ..
  "responses (the share scored >= 0.5, \"safe kept\"); mean over seeds, 95%% t-intervals.", #test)
say("")
say("| | %s |", table.concat(columns, " | "))
say("|---|---|---|---|---|---|---|")
local means = {}
for _, setting in ipairs(settings) do
  local cells = {}
  means[setting.name] = {}
  for i, c in ipairs(columns) do
    local s = rmdata.seed_interval(results[setting.name][c])
    means[setting.name][c] = s
    cells[i] = string.format("%.1f [%.1f, %.1f]", 100 * s.value, 100 * s.lo, 100 * s.hi)
    run:param(string.format("%s_%s", setting.key, (c:gsub("[^%w]", "_"))), s.value)
  end
  say("| %s | %s |", setting.name, table.concat(cells, " | "))
end
local base = means[settings[1].name]
say("")
say("The paper (Table 29): unsafe recall 73.0 -> 90.4 (+16.6), average accuracy +0.4.")
for i = 2, #settings do
  local aux = means[settings[i].name]
  say("Weight %g: unsafe recall %+.1f points, safe responses kept %+.1f points, average " ..
    "accuracy %+.1f points.", settings[i].weight,
    100 * (aux["unsafe recall"].value - base["unsafe recall"].value),
    100 * (aux["safe kept"].value - base["safe kept"].value),
    100 * (aux.avg.value - base.avg.value))
end
report.write(run, out .. "/rm_safety_aux.md")
print(string.format("\nreport in %s", out))
