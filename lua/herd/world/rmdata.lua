-- What the reward-model experiments share (experiments/rm_*.lua): the chat model they start
-- from, the world's preference corpus with its train/test splits, and the paper's two data
-- recipes (section 3.2.2, "Data Composition").
local herd = require "herd"
local collect = require "herd.world.collect"

local M = {}

-- The helpfulness RM: all Meta Helpfulness data plus an equal part sampled uniformly from Meta
-- Safety and the open-source sets. The safety RM: all Meta Safety and Anthropic Harmless data
-- mixed with Meta Helpfulness and open-source helpfulness data in a 90/10 proportion.
M.RECIPES = {
  helpfulness = { name = "helpfulness", all = { "meta_helpful" },
                  add = { from = { "meta_safety", "anthropic_helpful", "anthropic_harmless",
                                   "openai_summarize", "stackexchange", "shp" }, ratio = 1 } },
  safety = { name = "safety", all = { "meta_safety", "anthropic_harmless" },
             add = { from = { "meta_helpful", "anthropic_helpful", "openai_summarize",
                              "stackexchange", "shp" }, share = 0.1 } },
}

-- The chat model: run `id` named 'sft', or the latest finished one.
function M.chat_model(id, quick)
  return herd.experiment.find_run{ name = "sft", id = id, artifacts = { "checkpoint", "tokenizer" },
    hint = "herd experiments/sft.lua" .. (quick and " --quick" or "") }
end

-- The preference corpus of a run's config (seed, batches, pairs, source_pairs, test_fraction),
-- written to out/data/ and counted in the run's params.
function M.corpus(run, cfg, out)
  assert(os.execute("mkdir -p " .. out .. "/data"))
  local prefs = collect.preference_data{ seed = cfg.seed, batches = cfg.batches, pairs = cfg.pairs,
                                         source_pairs = cfg.source_pairs,
                                         test_fraction = cfg.test_fraction or 0.1,
                                         dir = out .. "/data" }
  for _, name in ipairs(prefs.names) do
    run:param("train_pairs_" .. name, #prefs.train[name])
    run:param("test_pairs_" .. name, #prefs.test[name])
  end
  return prefs
end

-- Trains one reward model from the chat model on `recipe`'s mix of prefs.train, logging to a
-- child run named `name`. opts: margins, safety_aux, seed (training order and head init),
-- data_seed (the mix), preset, rows, score_scale (the head's initial scale: 0, the default, a
-- zero head; 1 a random one), save (a directory). Returns the RM.
function M.train(run, chat, prefs, recipe, name, opts)
  local mixed, report = herd.mix.build(recipe, prefs.train, { seed = opts.data_seed or opts.seed,
                                                              print = opts.print })
  local rm = herd.rm.from_chat(chat.dir, { batch = opts.rows or 16, seed = opts.seed,
                                           score_scale = opts.score_scale,
                                           tokenizer = herd.tokenizer.load(chat.artifacts.tokenizer) })
  local child <close> = run:child{ name = name, config = { recipe = recipe, mix = report.counts,
    margins = opts.margins, safety_aux = opts.safety_aux or 0, preset = opts.preset or "toy",
    seed = opts.seed } }
  -- The world's empty answers are deliberate (a model that stops at once): kept and scored.
  rm:train(mixed, { preset = opts.preset or "toy", margins = opts.margins, empty = "keep",
                    safety_aux = opts.safety_aux or 0, seed = opts.seed, run = child,
                    progress = opts.progress })
  if opts.save then
    rm:save(opts.save)
    run:artifact((name:gsub("%-", "_")), opts.save .. "/model.safetensors", "safetensors")
  end
  return rm
end

-- Mean and a 95% t-interval over seeds of a list of values.
local T975 = { 12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262 }
function M.seed_interval(values)
  local n = #values
  local mean = 0
  for _, v in ipairs(values) do mean = mean + v / n end
  if n < 2 then return { value = mean, lo = mean, hi = mean, n = n } end
  local var = 0
  for _, v in ipairs(values) do var = var + (v - mean) ^ 2 / (n - 1) end
  local half = (T975[n - 1] or 1.96) * math.sqrt(var / n)
  -- accuracies and recalls live in [0, 1]; so does their interval
  return { value = mean, lo = math.max(0, mean - half), hi = math.min(1, mean + half), n = n }
end

-- Collects report lines, printing each; write(path) saves them as markdown.
function M.reporter()
  local lines = {}
  local r = {}
  function r.say(fmt, ...)
    local line = string.format(fmt, ...)
    print(line)
    lines[#lines + 1] = line
  end
  function r.write(run, path)
    local file = assert(io.open(path, "w"))
    file:write(table.concat(lines, "\n"), "\n")
    file:close()
    run:artifact("report", path, "markdown")
  end
  return r
end

return M
