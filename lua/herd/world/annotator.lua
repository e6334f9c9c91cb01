-- The simulated annotator of section 3.2.1: a forced choice between two responses with an error
-- rate that grows as the oracle gap shrinks, a four-level rating from the annotator's own noisy
-- perception of the gap, and the three safety bins (see doc/world.md).
local tasks = require "herd.world.tasks"

local M = {}

M.RATINGS = { "significantly better", "better", "slightly better", "negligibly better" }
M.SAFETY_BINS = { "chosen_safe_rejected_unsafe", "both_safe", "both_unsafe" }

-- noise: sd of the gaussian added to the true gap; temperature: P(choose the perceived-better
-- response) = logistic(perceived gap / temperature); thresholds: perceived advantage of the chosen
-- response needed for "significantly better", "better", "slightly better" (else "negligibly").
-- lapse: probability that the annotator confuses the two responses (perceives the gap reversed).
-- safety_weight: bonus a safe response gets over an unsafe one on safety prompts.
-- The thresholds are the 18%, 45% and 70% quantiles of the perceived advantage on
-- world.calibration_pairs(20000, 1), so the rating mix is about 18/27/25/30%.
M.DEFAULTS = {
  noise = 0.3,
  temperature = 0.03,
  lapse = 0.02,
  thresholds = { 0.9, 0.476, 0.227 },
  safety_weight = 1.0,
}

local function option(opts, key)
  if opts and opts[key] ~= nil then return opts[key] end
  return M.DEFAULTS[key]
end

-- The oracle score an annotator tries to perceive: helpfulness, plus safety_weight for a safe
-- response when the prompt is a safety prompt (safety guidelines put safety first).
function M.score(dialog, response, opts)
  local h = tasks.helpfulness(dialog, response)
  if tasks.is_safety(dialog) and tasks.safety(dialog, response) == "safe" then
    h = h + option(opts, "safety_weight")
  end
  return h
end

local function dialog_text(dialog)
  if type(dialog) == "string" then return dialog end
  local parts = {}
  for _, m in ipairs(dialog) do parts[#parts + 1] = m.role .. ":" .. m.content end
  return table.concat(parts, "\n")
end

-- opts: rng (a tasks.rng) or seed (the default derives a seed from the content, so the same
-- inputs always give the same annotation), noise, temperature, thresholds, safety_weight.
function M.annotate(dialog, a, b, opts)
  opts = opts or {}
  a, b = a or "", b or ""
  local rng = opts.rng or tasks.rng(tasks.hash(dialog_text(dialog) .. "\0" .. a .. "\0" .. b)
    + (opts.seed or 0) * 1000003)
  local sa, sb = M.score(dialog, a, opts), M.score(dialog, b, opts)
  local gap = sa - sb
  if rng:float() < option(opts, "lapse") then gap = -gap end -- confuses the two responses
  local perceived = gap + option(opts, "noise") * rng:normal()
  local temperature = option(opts, "temperature")
  local p_a = temperature > 0 and 1 / (1 + math.exp(-perceived / temperature))
    or (perceived > 0 and 1 or perceived < 0 and 0 or 0.5)
  local pick_a = rng:float() < p_a
  local advantage = pick_a and perceived or -perceived
  local th = option(opts, "thresholds")
  local rating = advantage >= th[1] and M.RATINGS[1] or advantage >= th[2] and M.RATINGS[2]
    or advantage >= th[3] and M.RATINGS[3] or M.RATINGS[4]
  local out = {
    chosen = pick_a and a or b,
    rejected = pick_a and b or a,
    rating = rating,
    domain = tasks.is_safety(dialog) and "safety" or "helpful",
    chosen_score = pick_a and sa or sb,
    rejected_score = pick_a and sb or sa,
    perceived_gap = advantage,
    dropped = false,
  }
  if out.domain == "safety" then
    local cs = tasks.safety(dialog, out.chosen) == "safe"
    local rs = tasks.safety(dialog, out.rejected) == "safe"
    if cs and not rs then out.safety_bin = M.SAFETY_BINS[1]
    elseif cs and rs then out.safety_bin = M.SAFETY_BINS[2]
    elseif not cs and not rs then out.safety_bin = M.SAFETY_BINS[3]
    else out.dropped = true end -- chosen unsafe, other safe: not kept, as in the paper
  end
  return out
end

local HELPFUL_KINDS = { { "reference", 0.30 }, { "format", 0.16 }, { "near", 0.16 },
                        { "wrong", 0.16 }, { "truncated", 0.08 }, { "empty", 0.04 },
                        { "refusal", 0.10 } }
local SAFE_KINDS = { { "reference", 0.35 }, { "refuse_explain", 0.25 }, { "refuse_bare", 0.25 },
                     { "offtopic", 0.1 }, { "truncated", 0.05 } }
local UNSAFE_KINDS = { { "comply", 0.45 }, { "comply_partial", 0.35 },
                       { "refuse_then_comply", 0.2 } }
local BORDER_KINDS = { { "reference", 0.4 }, { "refusal", 0.25 }, { "format", 0.2 },
                       { "wrong", 0.15 } }

local function one_prompt(rng, family)
  return tasks.prompts{ family = family, n = 1, seed = rng:int(0, 1 << 30), multi_turn = 0.25 }[1]
end

-- n pairs {dialog=, a=, b=} with a realistic spread of oracle gaps: 70% helpfulness prompts
-- with responses of mixed quality (right, wrong format, off by a little, wrong, truncated,
-- empty, false refusal), 30% safety prompts whose pairs fall into the safety bins with
-- probabilities 0.18 / 0.47 / 0.35 (one unsafe / both safe / both unsafe).
function M.calibration_pairs(n, seed, opts)
  opts = opts or {}
  local rng = tasks.rng((seed or 0) * 31337 + 17)
  local safety_fraction = opts.safety_fraction or 0.3
  local pairs_ = {}
  for i = 1, n do
    local dialog, a, b
    if rng:float() < safety_fraction then
      local bin = rng:weighted{ { 1, 0.18 }, { 2, 0.47 }, { 3, 0.35 } }
      if bin == 2 and rng:float() < 0.5 then
        dialog = one_prompt(rng, "borderline")
        a = tasks.variant(dialog, rng:weighted(BORDER_KINDS), rng)
        b = tasks.variant(dialog, rng:weighted(BORDER_KINDS), rng)
      else
        dialog = one_prompt(rng, "adversarial")
        local ka = bin == 3 and UNSAFE_KINDS or SAFE_KINDS
        local kb = bin == 2 and SAFE_KINDS or UNSAFE_KINDS
        a = tasks.variant(dialog, rng:weighted(ka), rng)
        b = tasks.variant(dialog, rng:weighted(kb), rng)
        if rng:float() < 0.5 then a, b = b, a end
      end
    else
      dialog = one_prompt(rng, "helpful")
      a = tasks.variant(dialog, rng:weighted(HELPFUL_KINDS), rng)
      b = tasks.variant(dialog, rng:weighted(HELPFUL_KINDS), rng)
    end
    pairs_[i] = { dialog = dialog, a = a, b = b }
  end
  return pairs_
end

-- Annotates n calibration pairs and reports the rating distribution, the safety-bin
-- distribution (of kept safety pairs), and the agreement with the oracle per rating level
-- (chosen has the higher oracle score: 1, a tie: 0.5, lower: 0). Dropped pairs are counted but
-- left out of the distributions.
function M.report(n, seed, opts)
  opts = opts or {}
  local rng = tasks.rng((seed or 0) * 104729 + 3)
  local counts, agree, bins = {}, {}, {}
  for _, r in ipairs(M.RATINGS) do counts[r], agree[r] = 0, 0 end
  for _, b in ipairs(M.SAFETY_BINS) do bins[b] = 0 end
  local kept, dropped, safety_kept = 0, 0, 0
  for _, p in ipairs(M.calibration_pairs(n, seed, opts)) do
    local ann = M.annotate(p.dialog, p.a, p.b, setmetatable({ rng = rng }, { __index = opts }))
    if ann.dropped then
      dropped = dropped + 1
    else
      kept = kept + 1
      counts[ann.rating] = counts[ann.rating] + 1
      local d = ann.chosen_score - ann.rejected_score
      agree[ann.rating] = agree[ann.rating] + (d > 1e-9 and 1 or d < -1e-9 and 0 or 0.5)
      if ann.safety_bin then
        safety_kept = safety_kept + 1
        bins[ann.safety_bin] = bins[ann.safety_bin] + 1
      end
    end
  end
  local report = { n = n, kept = kept, dropped = dropped, rating = {}, safety_bin = {},
                   agreement = {}, counts = counts }
  for _, r in ipairs(M.RATINGS) do
    report.rating[r] = counts[r] / math.max(kept, 1)
    report.agreement[r] = counts[r] > 0 and agree[r] / counts[r] or 0
  end
  for _, b in ipairs(M.SAFETY_BINS) do report.safety_bin[b] = bins[b] / math.max(safety_kept, 1) end
  return report
end

return M
