-- herd's toy world: a small language with task families, oracles for helpfulness and safety,
-- and a simulated annotator (doc/world.md). Deterministic from a seed.
--   local world = require "herd.world"
--   local dialogs = world.prompts{ family = "arithmetic", n = 8, seed = 1, split = "train" }
--   world.helpfulness(dialogs[1], "17 plus 25 is 42.")
local tasks = require "herd.world.tasks"
local annotator = require "herd.world.annotator"
local collect = require "herd.world.collect"

local world = {
  tasks = tasks,
  annotator = annotator,
  rng = tasks.rng,
  FAMILIES = tasks.FAMILIES,
  HELPFUL_FAMILIES = tasks.HELPFUL_FAMILIES,
  SAFETY_FAMILIES = tasks.SAFETY_FAMILIES,
  RATINGS = annotator.RATINGS,
  SAFETY_BINS = annotator.SAFETY_BINS,
  REFUSALS = tasks.REFUSALS,
  helpfulness = tasks.helpfulness,
  safety = tasks.safety,
  is_safety = tasks.is_safety,
  is_refusal = tasks.is_refusal,
  is_truncated = tasks.is_truncated,
  parse = tasks.parse,
  prompts = tasks.prompts,
  split_of = tasks.split_of,
  reference_answer = tasks.reference_answer,
  variant = tasks.variant,
  vocabulary = tasks.vocabulary,
  annotate = annotator.annotate,
  calibration_pairs = annotator.calibration_pairs,
  annotator_report = annotator.report,
  annotator_defaults = annotator.DEFAULTS,
  policy = collect.policy,
  model_policy = collect.model_policy,
  collect = collect.collect,
  batch_stats = collect.stats,
  evaluate = collect.evaluate,
  weekly_policies = collect.weekly_policies,
  preference_data = collect.preference_data,
  source = collect.source,
  SOURCES = collect.SOURCES,
  SOURCE_NAMES = collect.SOURCE_NAMES,
}

-- world.gatt is loaded on first use, and only when lua/herd/world/gatt.lua is installed.
return setmetatable(world, {
  __index = function(t, key)
    if key == "gatt" then
      local ok, gatt = pcall(require, "herd.world.gatt")
      if ok then
        rawset(t, "gatt", gatt)
        return gatt
      end
      -- A missing module reads as nil; an error inside an existing one is raised.
      if not tostring(gatt):find("module 'herd.world.gatt' not found", 1, true) then
        error(gatt, 2)
      end
    end
    return nil
  end,
})
