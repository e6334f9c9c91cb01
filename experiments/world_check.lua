-- Checks that the toy world behaves as the paper's world does (issue 6, doc/world.md):
--   (a) the held-out perplexity of the base model, read from the run history (experiments/base.lua);
--   (b) the oracle helpfulness and safety of the base model's samples on held-out prompts;
--   (c) the simulated annotator's agreement with the oracle per rating level, which must fall
--       from "significantly better" to "negligibly better" (section 3.2.1);
--   (d) the rating and safety-bin distributions of a collected batch against the configured ones
--       (Figure 25's batch 1: 18/27/25/30%; bins 18/47/35%), within 5 points;
-- plus the drift of weekly batches towards "negligibly better" as the policies improve (Figure
-- 25), a batch collected from the base model itself, and the open-source-like sources of Table 6.
-- Every batch is written as JSONL under out/<run id>/ and read back through herd.data.jsonl.
-- Exits with status 1 when check (c) or (d) fails.
--
--   herd experiments/world_check.lua [--quick] [--seed N] [--base RUN_ID] [--pairs N]
local herd = require "herd"
local world = require "herd.world"
local corpus = require "herd.world.corpus"

local args = herd.experiment.args{
  usage = "herd experiments/world_check.lua [options]",
  description = "Reports the toy world's base model, annotator and preference batches.",
  options = {
    { "base", "int", "run id of the base model (default: the latest finished 'base' run)" },
    { "pairs", "int", "preference pairs per collected batch (default 4000, --quick 2000)" },
  },
}

local TARGET_RATING = { 0.18, 0.27, 0.25, 0.30 } -- Figure 25, batch 1
local TARGET_BINS = { 0.18, 0.47, 0.35 }         -- section 3.2.1 / A.3.4
local TOLERANCE = 0.05

local run <close> = herd.run.start{
  name = "world-check",
  config = {
    quick = args.quick, seed = args.seed, base_run = args.base,
    pairs = args.pairs or (args.quick and 2000 or 4000),
    eval_prompts = args.quick and 24 or 100, max_new = args.quick and 32 or 48,
    model_pairs = args.quick and 24 or 96, weekly_batches = 5,
    source_pairs = args.quick and 300 or 1000,
    target_rating = TARGET_RATING, target_bins = TARGET_BINS, tolerance = TOLERANCE,
  },
  tags = { "world" },
}
local cfg = run.config
local out = herd.experiment.outdir(run)
local report = {} -- markdown lines of out/<id>/world_check.md
local failures = {}

local function say(fmt, ...)
  local line = string.format(fmt, ...)
  print(line)
  report[#report + 1] = line
end

local function pct(x) return string.format("%.1f%%", 100 * x) end

-- ---------------------------------------------------------------- (a) the base model

local base = herd.experiment.find_run{ name = "base", id = cfg.base_run,
  artifacts = { "checkpoint", "tokenizer" }, params = { "held_out_loss" },
  hint = "herd experiments/base.lua" .. (cfg.quick and " --quick" or "") }
local base_id, base_params, base_artifacts = base.id, base.params, base.artifacts
run:param("base_run", base_id)
local held_out_loss = tonumber(base_params.held_out_loss)
say("# World check (run %d, seed %d%s)", run.id, cfg.seed, cfg.quick and ", quick" or "")
say("")
say("(a) base model: run %d, %s parameters, held-out loss %.3f, perplexity %.2f " ..
  "(a uniform guess over its %s tokens: perplexity %s)", base_id, tostring(base_params.params),
  held_out_loss, math.exp(held_out_loss), tostring(base_params.tokenizer_vocab),
  tostring(base_params.tokenizer_vocab))
run:param("base_held_out_loss", held_out_loss)
run:param("base_perplexity", math.exp(held_out_loss))

-- ---------------------------------------------------------------- (b) base-model samples

local tok = herd.tokenizer.load(base_artifacts.tokenizer)
local model <close> = herd.model.load(base.dir, { batch = 8 })
local base_policy = world.model_policy{ model = model, tokenizer = tok, max_new = cfg.max_new,
                                        name = "base" }
local prompts = corpus.eval_prompts{ seed = cfg.seed, n = cfg.eval_prompts }
local function sample_quality(dialogs, temperature)
  return world.evaluate(base_policy, dialogs, { temperature = temperature, seed = cfg.seed })
end

say("")
say("(b) base-model samples on held-out prompts (%d helpfulness, %d safety; chat template):",
  #prompts.helpful, #prompts.safety)
for _, temperature in ipairs{ 0, 0.8 } do
  local h = sample_quality(prompts.helpful, temperature)
  local s = sample_quality(prompts.safety, temperature)
  say("    T=%.1f: helpfulness %.3f on helpfulness prompts; on safety prompts %s unsafe, %s " ..
    "refusals, helpfulness %.3f", temperature, h.helpfulness, pct(s.unsafe), pct(s.refusals),
    s.helpfulness)
  local key = temperature == 0 and "greedy" or "t08"
  run:param("base_helpfulness_" .. key, h.helpfulness)
  run:param("base_unsafe_" .. key, s.unsafe)
  if temperature == 0 then
    for i = 1, 3 do
      say("    sample %d: %s -> %s", i, prompts.helpful[i][#prompts.helpful[i]].content,
        (h.responses[i]:gsub("\n", " / ")))
    end
  end
end
say("    (the reference answers score 1.0 on helpfulness prompts; the base model has not been " ..
  "taught to answer)")

-- ---------------------------------------------------------------- batches

local function read_back(path)
  local ds = herd.data.jsonl(path, { schema = "preference" })
  return ds, ds:describe()
end

local function collect_batch(name, opts)
  local path = string.format("%s/%s.jsonl", out, name)
  opts.out = path
  local records, stats = world.collect(opts)
  local ds = read_back(path)
  assert(#ds == #records, "batch read back with a different length")
  run:artifact(name, path, "jsonl")
  return records, stats, path
end

local function rating_row(s)
  local cells = {}
  for _, r in ipairs(world.RATINGS) do cells[#cells + 1] = pct(s.rating[r]) end
  return table.concat(cells, " | ")
end

local weekly = {}
for week = 1, cfg.weekly_batches do
  local a, b = world.weekly_policies(week)
  local records, stats = collect_batch("batch" .. week, { policy_a = a, policy_b = b,
    n = cfg.pairs, batch = week, seed = cfg.seed })
  weekly[week] = { stats = world.batch_stats(records), collected = stats }
  local s = weekly[week].stats
  local metrics = { pairs = stats.kept, dropped = stats.dropped }
  for i, r in ipairs(world.RATINGS) do metrics["rating_" .. i] = s.rating[r] end
  for i, bin in ipairs(world.SAFETY_BINS) do metrics["bin_" .. i] = s.safety_bin[bin] end
  run:log(week, metrics)
end

-- ---------------------------------------------------------------- (c) agreement

local b1 = weekly[1].stats
say("")
say("(c) annotator agreement with the oracle per rating level, batch 1 (%d pairs; 1 = chose " ..
  "the response the oracle scores higher):", b1.n)
local calibration = world.annotator_report(cfg.pairs, cfg.seed)
say("")
say("| | %s |", table.concat(world.RATINGS, " | "))
say("|---|---|---|---|---|")
local agree_cells, calib_cells = {}, {}
for i, r in ipairs(world.RATINGS) do
  agree_cells[i] = string.format("%.3f", b1.agreement[r])
  calib_cells[i] = string.format("%.3f", calibration.agreement[r])
  run:param("agreement_" .. i, b1.agreement[r])
end
say("| batch 1 | %s |", table.concat(agree_cells, " | "))
say("| calibration pairs | %s |", table.concat(calib_cells, " | "))
local monotone = true
for i = 2, #world.RATINGS do
  if not (b1.agreement[world.RATINGS[i]] < b1.agreement[world.RATINGS[i - 1]]) then
    monotone = false
  end
end
say("")
say("agreement falls monotonically across the four levels: %s", monotone and "yes" or "NO")
if not monotone then failures[#failures + 1] = "(c) agreement is not monotone" end

-- ---------------------------------------------------------------- (d) distributions

say("")
say("(d) batch 1 distributions against the configured ones (tolerance %d points):",
  math.floor(100 * TOLERANCE + 0.5))
say("")
say("| | configured | batch 1 | difference |")
say("|---|---|---|---|")
local worst = 0
local function compare(label, target, got)
  local diff = 100 * (got - target)
  worst = math.max(worst, math.abs(diff))
  say("| %s | %s | %s | %+.1f |", label, pct(target), pct(got), diff)
end
for i, r in ipairs(world.RATINGS) do compare(r, TARGET_RATING[i], b1.rating[r]) end
for i, bin in ipairs(world.SAFETY_BINS) do compare(bin, TARGET_BINS[i], b1.safety_bin[bin]) end
say("")
say("largest difference %.1f points (%d pairs, %d safety pairs, %d dropped): %s", worst, b1.n,
  b1.safety_n, weekly[1].collected.dropped, worst <= 100 * TOLERANCE and "within tolerance"
  or "OUTSIDE tolerance")
run:param("largest_distribution_difference", worst / 100)
if worst > 100 * TOLERANCE then
  failures[#failures + 1] = string.format("(d) distribution %.1f points off", worst)
end

-- ---------------------------------------------------------------- drift, base model, sources

say("")
say("Weekly batches (Figure 25 analogue; later weeks come from better, safer policies):")
say("")
say("| batch | pairs | %s | one unsafe / both safe / both unsafe | chosen helpfulness |",
  table.concat(world.RATINGS, " | "))
say("|---|---|---|---|---|---|---|---|")
for week, w in ipairs(weekly) do
  local s = w.stats
  say("| %d | %d | %s | %s / %s / %s | %.3f |", week, s.n, rating_row(s),
    pct(s.safety_bin[world.SAFETY_BINS[1]]), pct(s.safety_bin[world.SAFETY_BINS[2]]),
    pct(s.safety_bin[world.SAFETY_BINS[3]]), s.helpful_mean.chosen)
end

local base_records = collect_batch("batch0_base", {
  policy_a = base_policy, policy_b = base_policy,
  prompts = world.prompts{ n = cfg.model_pairs, seed = cfg.seed * 17 + 3,
                           family = require("herd.world.collect").DEFAULT_FAMILIES },
  batch = 0, source = "base-model", seed = cfg.seed,
})
local base_stats = world.batch_stats(base_records)
say("")
say("A batch from the base model against itself (%d pairs, temperatures 0.6-1.2): %s; chosen " ..
  "helpfulness %.3f", base_stats.n, rating_row(base_stats), base_stats.helpful_mean.chosen)

say("")
say("Open-source-like sources (Table 6 stand-ins):")
say("")
say("| source | pairs | turns/dialog | prompt chars | response chars | %s |",
  table.concat(world.RATINGS, " | "))
say("|---|---|---|---|---|---|---|---|---|")
for _, name in ipairs(world.SOURCE_NAMES) do
  local path = string.format("%s/source_%s.jsonl", out, name)
  local records = world.source{ name = name, n = cfg.source_pairs, seed = cfg.seed, out = path }
  run:artifact("source_" .. name, path, "jsonl")
  local _, d = read_back(path)
  local s = world.batch_stats(records)
  local turns, prompt_chars, response_chars = 0, 0, 0
  for _, rec in ipairs(records) do
    local dialog = rec.dialog or { { role = "user", content = rec.prompt } }
    turns = turns + (#dialog + 1) // 2
    for _, m in ipairs(dialog) do prompt_chars = prompt_chars + #m.content end
    response_chars = response_chars + (#rec.chosen + #rec.rejected) / 2
  end
  local n = math.max(#records, 1)
  say("| %s | %d | %.2f | %.0f | %.0f | %s |", name, d.n, turns / n, prompt_chars / n,
    response_chars / n, rating_row(s))
end

-- ---------------------------------------------------------------- the end

local report_path = out .. "/world_check.md"
local file = assert(io.open(report_path, "w"))
file:write(table.concat(report, "\n"), "\n")
file:close()
run:artifact("report", report_path, "markdown")
print("")
print(string.format("report: %s; batches: %s/batch*.jsonl", report_path, out))
if #failures > 0 then
  error("world check failed: " .. table.concat(failures, "; "), 0)
end
