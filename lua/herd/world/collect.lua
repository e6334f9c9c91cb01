-- Preference collection (Llama 2 section 3.2.1): two model variants answer the same prompt at
-- varied temperatures, the simulated annotator picks one and rates the gap, and the pairs become a
-- JSONL batch in herd's preference format. Also the scripted policies that stand in for early
-- model variants, and the open-source-like preference sources of Table 6 (doc/world.md).
local tasks = require "herd.world.tasks"
local annotator = require "herd.world.annotator"

local M = {}

---------------------------------------------------------------------------------------------
-- Policies. A policy answers dialogs: policy:respond(dialogs, temperature, seed) -> responses.

local Policy = {}
Policy.__index = Policy

function Policy:__tostring()
  return string.format("world.policy(%s)", self.name)
end

local function clamp01(x) return math.max(0, math.min(1, x)) end

-- Shares of the non-reference kinds on helpfulness prompts. With skill 0.3, safety 0.5 and
-- temperature 1 a scripted policy answers with exactly the mix of world.calibration_pairs
-- (reference 30%, format/near/wrong 16% each, truncated 8%, empty 4%, false refusal 10%), the mix
-- the annotator's thresholds were calibrated on.
local FLAWED_SHARES = { format = 0.16 / 0.7, near = 0.16 / 0.7, wrong = 0.16 / 0.7,
                        truncated = 0.08 / 0.7, empty = 0.04 / 0.7, refusal = 0.10 / 0.7 }
local SAFE_KINDS = { { "reference", 0.35 }, { "refuse_explain", 0.25 }, { "refuse_bare", 0.25 },
                     { "offtopic", 0.1 }, { "truncated", 0.05 } }
local UNSAFE_KINDS = { { "comply", 0.45 }, { "comply_partial", 0.35 },
                       { "refuse_then_comply", 0.2 } }

-- How hard an adversarial prompt pushes (a jailbreak's strength), from its framing: asking for a
-- friend is strong, a polite imperative for steps is strong, a plain question is weak. A policy
-- of safety 0.5 complies with probability 0.9 (strong), 0.5 (medium) or 0.05 (weak); half of the
-- 12 framings are strong, a quarter medium, a quarter weak. Two answers to one prompt are
-- therefore correlated, as in real red-teaming data, which gives about 18% one-unsafe, 47%
-- both-safe and 35% both-unsafe pairs with the default prompt mix of world.collect.
function M.attack_strength(dialog)
  local text = tasks.last_user(dialog):lower()
  local polite = text:find("^please, ") ~= nil
  local imperative = text:find("tell me how to", 1, true) or text:find("give me the steps", 1, true)
  if text:find("^my friend asked me: ") or (polite and imperative) then return 0.9 end
  if polite or text:find("what is the best way to", 1, true) then return 0.5 end
  return 0.05
end

local function helpful_kind(policy, temperature, rng)
  -- Sampling hotter makes a policy sloppier, colder more careful.
  local skill = clamp01(policy.skill * (1.25 - 0.25 * temperature))
  local rest = 1 - skill
  return rng:weighted{
    { "reference", skill },
    { "format", rest * FLAWED_SHARES.format },
    { "near", rest * FLAWED_SHARES.near },
    { "wrong", rest * FLAWED_SHARES.wrong },
    { "truncated", rest * FLAWED_SHARES.truncated * temperature },
    { "empty", rest * FLAWED_SHARES.empty },
    { "refusal", rest * FLAWED_SHARES.refusal * 2 * policy.safety }, -- over-caution
  }
end

local function scripted_response(policy, dialog, temperature, rng)
  local spec = tasks.parse(dialog)
  if not spec then return "I am happy to talk about that." end
  local kind
  if spec.family == "adversarial" then
    local p_unsafe = clamp01(M.attack_strength(dialog) * 2 * (1 - policy.safety))
    kind = rng:weighted(rng:float() < p_unsafe and UNSAFE_KINDS or SAFE_KINDS)
  elseif spec.family == "borderline" then
    kind = rng:weighted{ { "reference", 0.4 + math.max(0, policy.skill - 0.3) },
                         { "refusal", 0.5 * policy.safety }, { "format", 0.2 },
                         { "wrong", 0.15 } }
  else
    kind = helpful_kind(policy, temperature, rng)
  end
  return tasks.variant(dialog, kind, rng)
end

-- world.policy{ skill = 0.3, safety = 0.5, name = } : a scripted stand-in for a model variant.
-- skill in [0, 1] is the chance of the reference answer on helpfulness prompts (at temperature
-- 1); safety in [0, 1] lowers compliance with adversarial prompts (0.5: the attack strength
-- itself, 1: never) and raises false refusals.
function M.policy(opts)
  opts = opts or {}
  local policy = setmetatable({
    name = opts.name or string.format("scripted(skill %.2f, safety %.2f)", opts.skill or 0.3,
      opts.safety or 0.5),
    skill = opts.skill or 0.3,
    safety = opts.safety or 0.5,
    scripted = true,
  }, Policy)
  assert(policy.skill >= 0 and policy.skill <= 1, "world.policy: skill must be in [0, 1]")
  assert(policy.safety >= 0 and policy.safety <= 1, "world.policy: safety must be in [0, 1]")
  return policy
end

function Policy:respond(dialogs, temperature, seed)
  local out = {}
  for i, dialog in ipairs(dialogs) do
    if self.scripted then
      local rng = tasks.rng(tasks.hash(self.name .. "\0" .. tasks.last_user(dialog))
        + (seed or 0) * 7919 + i)
      out[i] = scripted_response(self, dialog, temperature, rng)
    end
  end
  if not self.scripted then return self:_generate(dialogs, temperature, seed) end
  return out
end

-- world.model_policy{ model =, tokenizer =, max_new = 64, name =, top_p = 1 }: answers with the
-- model, prompting with the Llama 2 chat template and stopping at </s>.
function M.model_policy(opts)
  assert(opts and opts.model and opts.tokenizer, "world.model_policy: model and tokenizer required")
  return setmetatable({ name = opts.name or "model", model = opts.model,
                        tokenizer = opts.tokenizer, max_new = opts.max_new or 64,
                        top_p = opts.top_p or 1.0, scripted = false }, Policy)
end

local function as_dialog(prompt)
  if type(prompt) == "string" then return { { role = "user", content = prompt } } end
  return prompt
end

function Policy:_generate(dialogs, temperature, seed)
  local tok, model = self.tokenizer, self.model
  local limit = model:config().max_seq_len
  local prompts = {}
  for i, dialog in ipairs(dialogs) do
    local ids = tok:chat(as_dialog(dialog)).ids
    -- Keep the end of an over-long dialog, leaving room for the answer.
    local room = limit - self.max_new
    if #ids > room then ids = { table.unpack(ids, #ids - room + 1) } end
    prompts[i] = ids
  end
  local samples = model:generate{ prompts = prompts, k = 1, temperature = temperature,
                                  top_p = self.top_p, max_new = self.max_new,
                                  seed = seed or 0, stop = { tok:eos() } }
  local out = {}
  for _, s in ipairs(samples) do
    out[s.prompt] = tok:decode(s.tokens, { skip_special = true }):gsub("^%s+", ""):gsub("%s+$", "")
  end
  return out
end

local function as_policy(p, what)
  if getmetatable(p) == Policy then return p end
  if type(p) == "function" then
    return setmetatable({ name = what, scripted = false, _generate = function(_, d, t, s)
      return p(d, t, s)
    end }, Policy)
  end
  error(string.format("world.collect: %s must be a world.policy, world.model_policy or a " ..
    "function(dialogs, temperature, seed)", what), 3)
end

---------------------------------------------------------------------------------------------
-- Collection.

M.DEFAULT_TEMPERATURES = { 0.6, 0.8, 1.0, 1.2 }
-- The default prompt mix: the five helpfulness families and, weighted like the paper's safety
-- collection (mostly adversarial, some borderline), the two safety families: 4 prompts in 9
-- are safety prompts, a quarter of them borderline.
M.DEFAULT_FAMILIES = { "arithmetic", "fact", "list", "word", "verse", "adversarial",
                       "adversarial", "adversarial", "borderline" }

local ALLOWED = { policy_a = true, policy_b = true, prompts = true, temperatures = true, n = true,
                  batch = true, source = true, seed = true, annotator = true, out = true,
                  style = true, multi_turn = true, family = true }

-- A record of herd's preference format from one annotation.
local function record_of(dialog, ann, batch, source)
  local rec = { chosen = ann.chosen, rejected = ann.rejected, rating = ann.rating,
                domain = ann.domain, safety_bin = ann.safety_bin, batch = batch, source = source }
  dialog = as_dialog(dialog)
  if #dialog == 1 and dialog[1].role == "user" then rec.prompt = dialog[1].content
  else rec.dialog = dialog end
  return rec
end

local function dialog_of(rec)
  return rec.dialog or rec.prompt
end
M.dialog_of = dialog_of

-- world.collect{ policy_a =, policy_b =, prompts = {dialogs} | n = 200 (fresh train prompts),
--   temperatures = {0.6, 0.8, 1.0, 1.2}, batch = 1, source = "world", seed = 1,
--   annotator = {noise =, ...}, out = "batch1.jsonl" }
-- -> records (the kept pairs), stats { prompts, kept, dropped, per_temperature }.
-- Each prompt is answered once by each policy, each at a temperature drawn from `temperatures`;
-- pairs whose chosen response is unsafe and the other safe are dropped (section 3.2.1). With
-- `out`, the batch is written as JSONL (atomically) through herd.data.
function M.collect(opts)
  assert(type(opts) == "table", "world.collect: expected an options table")
  for k in pairs(opts) do
    if not ALLOWED[k] then error("world.collect: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local a = as_policy(opts.policy_a, "policy_a")
  local b = as_policy(opts.policy_b, "policy_b")
  local seed = opts.seed or 1
  local batch = opts.batch or 1
  local dialogs = opts.prompts or tasks.prompts{ n = opts.n or 200, seed = seed * 131 + batch,
    split = "train", family = opts.family or M.DEFAULT_FAMILIES, multi_turn = opts.multi_turn }
  local temperatures = opts.temperatures or M.DEFAULT_TEMPERATURES
  local rng = tasks.rng(seed * 1000003 + batch * 7 + 5)

  -- Group the prompts by the temperature each policy answers at, so a model generates in batches.
  local function answer(policy, salt)
    local groups, responses = {}, {}
    for i = 1, #dialogs do
      local t = temperatures[rng:int(1, #temperatures)]
      groups[t] = groups[t] or { index = {}, dialogs = {} }
      local g = groups[t]
      g.index[#g.index + 1], g.dialogs[#g.dialogs + 1] = i, dialogs[i]
    end
    for _, t in ipairs(temperatures) do
      local g = groups[t]
      if g then
        local out = policy:respond(g.dialogs, t, seed * 977 + batch * 31 + salt)
        for j, i in ipairs(g.index) do responses[i] = out[j] or "" end
        groups[t] = nil
      end
    end
    return responses
  end
  local ra, rb = answer(a, 1), answer(b, 2)

  local ann_opts = setmetatable({ rng = rng }, { __index = opts.annotator or {} })
  local records, dropped = {}, 0
  for i, dialog in ipairs(dialogs) do
    local response_a, response_b = ra[i], rb[i]
    if opts.style then response_a, response_b = opts.style(dialog, response_a, rng),
      opts.style(dialog, response_b, rng) end
    local ann = annotator.annotate(dialog, response_a, response_b, ann_opts)
    if ann.dropped then dropped = dropped + 1
    else records[#records + 1] = record_of(dialog, ann, batch, opts.source or "world") end
  end
  if opts.out then
    require("herd.data").from_records(records, { schema = "preference" }):write(opts.out)
  end
  return records, { prompts = #dialogs, kept = #records, dropped = dropped }
end

---------------------------------------------------------------------------------------------
-- Statistics of a batch, against the oracle.

-- stats(records or dataset, opts) -> { n, rating = {share}, safety_bin = {share},
--   agreement = {per rating}, helpful_mean = {chosen =, rejected =}, unsafe = {chosen =,
--   rejected =} }. Agreement: the chosen response has the higher oracle score (1), equal (0.5),
-- lower (0), with the annotator's own scoring (helpfulness, plus the safety bonus).
function M.stats(records, opts)
  local n = #records
  local counts, agree, bins = {}, {}, {}
  for _, r in ipairs(annotator.RATINGS) do counts[r], agree[r] = 0, 0 end
  for _, b in ipairs(annotator.SAFETY_BINS) do bins[b] = 0 end
  local safety_n, help_c, help_r, unsafe_c, unsafe_r = 0, 0, 0, 0, 0
  for i = 1, n do
    local rec = records[i]
    local dialog = dialog_of(rec)
    if counts[rec.rating] then
      counts[rec.rating] = counts[rec.rating] + 1
      local d = annotator.score(dialog, rec.chosen, opts) - annotator.score(dialog, rec.rejected, opts)
      agree[rec.rating] = agree[rec.rating] + (d > 1e-9 and 1 or d < -1e-9 and 0 or 0.5)
    end
    if rec.safety_bin and bins[rec.safety_bin] then
      safety_n = safety_n + 1
      bins[rec.safety_bin] = bins[rec.safety_bin] + 1
    end
    help_c = help_c + tasks.helpfulness(dialog, rec.chosen)
    help_r = help_r + tasks.helpfulness(dialog, rec.rejected)
    if tasks.safety(dialog, rec.chosen) == "unsafe" then unsafe_c = unsafe_c + 1 end
    if tasks.safety(dialog, rec.rejected) == "unsafe" then unsafe_r = unsafe_r + 1 end
  end
  local s = { n = n, safety_n = safety_n, counts = counts, rating = {}, agreement = {},
              safety_bin = {}, helpful_mean = { chosen = help_c / math.max(n, 1),
              rejected = help_r / math.max(n, 1) }, unsafe = { chosen = unsafe_c / math.max(n, 1),
              rejected = unsafe_r / math.max(n, 1) } }
  for _, r in ipairs(annotator.RATINGS) do
    s.rating[r] = counts[r] / math.max(n, 1)
    s.agreement[r] = counts[r] > 0 and agree[r] / counts[r] or 0 / 0
  end
  for _, b in ipairs(annotator.SAFETY_BINS) do s.safety_bin[b] = bins[b] / math.max(safety_n, 1) end
  return s
end

-- How a policy does on a prompt set, by the oracles: world.evaluate(policy, dialogs,
-- { temperature = 0, seed = 1 }) -> { helpfulness = mean, unsafe = share, refusals = share,
-- responses = {...} }. (The paper's human evaluation, section 3.4, measured exactly.)
function M.evaluate(policy, dialogs, opts)
  opts = opts or {}
  policy = as_policy(policy, "policy")
  local responses = policy:respond(dialogs, opts.temperature or 0, opts.seed or 1)
  local help, unsafe, refusals = 0, 0, 0
  for i, dialog in ipairs(dialogs) do
    local r = responses[i] or ""
    help = help + tasks.helpfulness(dialog, r)
    if tasks.safety(dialog, r) == "unsafe" then unsafe = unsafe + 1 end
    if tasks.is_refusal(r) then refusals = refusals + 1 end
  end
  local n = math.max(#dialogs, 1)
  return { helpfulness = help / n, unsafe = unsafe / n, refusals = refusals / n,
           responses = responses, n = #dialogs }
end

---------------------------------------------------------------------------------------------
-- Open-source-like preference sources (Table 6 stand-ins): each has its own task mix, turn
-- count, policies, response style and annotator noise. They are not the real datasets; they give
-- data-mixing recipes sources that differ the way the real ones do.

-- Response styles. A styled response must keep its oracle scores (helpfulness and safety); when
-- a style would change them (a preface counted as a list item, say) the plain response is kept.
local STYLES = {
  chatty = { prefix = { "Sure. ", "Of course! ", "Happy to help. " }, suffix = {} },
  verbose = { prefix = { "Good question. ", "Let me think. " },
              suffix = { " I hope this helps.", " Let me know if you need more." } },
  terse = { prefix = {}, suffix = {} },
}

local function styler(name)
  local style = assert(STYLES[name], "unknown response style " .. tostring(name))
  return function(dialog, response, rng)
    if response == "" then return response end
    local styled = response
    if #style.prefix > 0 and rng:float() < 0.7 then styled = rng:pick(style.prefix) .. styled end
    if #style.suffix > 0 and rng:float() < 0.5 then styled = styled .. rng:pick(style.suffix) end
    if tasks.helpfulness(dialog, styled) ~= tasks.helpfulness(dialog, response)
      or tasks.safety(dialog, styled) ~= tasks.safety(dialog, response) then
      return response
    end
    return styled
  end
end

M.SOURCES = {
  anthropic_helpful = {
    description = "multi-turn helpfulness chats, chatty answers (Anthropic Helpful)",
    family = "helpful", multi_turn = 0.7, style = "chatty",
    policy_a = { skill = 0.35, safety = 0.5 }, policy_b = { skill = 0.25, safety = 0.5 },
    annotator = { noise = 0.4 },
  },
  anthropic_harmless = {
    description = "red-teaming chats, mostly adversarial (Anthropic Harmless)",
    family = { "adversarial", "adversarial", "adversarial", "borderline", "fact" },
    multi_turn = 0.5, style = "chatty",
    policy_a = { skill = 0.3, safety = 0.35 }, policy_b = { skill = 0.3, safety = 0.2 },
    annotator = { noise = 0.4 },
  },
  openai_summarize = {
    description = "single-turn, long structured answers (OpenAI Summarize)",
    family = { "list", "verse" }, multi_turn = 0, style = "verbose",
    policy_a = { skill = 0.4, safety = 0.5 }, policy_b = { skill = 0.2, safety = 0.5 },
    annotator = { noise = 0.25 },
  },
  stackexchange = {
    description = "single-turn technical questions, ranked by votes (StackExchange)",
    family = { "arithmetic", "word" }, multi_turn = 0, style = "verbose",
    policy_a = { skill = 0.45, safety = 0.5 }, policy_b = { skill = 0.3, safety = 0.5 },
    annotator = { noise = 0.5, lapse = 0.08 },
  },
  shp = {
    description = "single-turn questions with many short answers (Stanford SHP)",
    family = { "fact", "word", "verse" }, multi_turn = 0, style = "terse",
    policy_a = { skill = 0.35, safety = 0.5 }, policy_b = { skill = 0.3, safety = 0.5 },
    annotator = { noise = 0.45, lapse = 0.06 },
  },
}
M.SOURCE_NAMES = { "anthropic_helpful", "anthropic_harmless", "openai_summarize",
                   "stackexchange", "shp" }

-- world.source{ name = "anthropic_helpful", n = 500, seed = 1, out = } -> records, stats
function M.source(opts)
  local def = M.SOURCES[opts and opts.name]
  if not def then
    error("world.source: unknown source " .. tostring(opts and opts.name) .. " (" ..
      table.concat(M.SOURCE_NAMES, ", ") .. ")", 2)
  end
  local seed = opts.seed or 1
  local salt = tasks.hash(opts.name) % 100000
  return M.collect{
    policy_a = M.policy{ name = opts.name .. "/a", skill = def.policy_a.skill,
                         safety = def.policy_a.safety },
    policy_b = M.policy{ name = opts.name .. "/b", skill = def.policy_b.skill,
                         safety = def.policy_b.safety },
    prompts = tasks.prompts{ n = opts.n or 500, seed = seed * 7 + salt, family = def.family,
                             multi_turn = def.multi_turn, split = opts.split or "train" },
    batch = 0, source = opts.name, seed = seed + salt, annotator = def.annotator,
    style = styler(def.style), out = opts.out,
  }
end

---------------------------------------------------------------------------------------------
-- A preference corpus for reward-model experiments: weekly batches and the open sources.

-- The scripted variants that answer week `week`'s prompts: week 1 from two early variants
-- (skill 0.3, safety 0.5: the mix the annotator was calibrated on), later weeks from better and
-- safer ones, as if each week's model had learned from the weeks before.
function M.weekly_policies(week)
  if week == 1 then
    return M.policy{ name = "week1/a", skill = 0.3, safety = 0.5 },
           M.policy{ name = "week1/b", skill = 0.3, safety = 0.5 }
  end
  local skill = math.min(1, 0.3 + 0.15 * (week - 1))
  local safety = math.min(1, 0.5 + 0.12 * (week - 1))
  return M.policy{ name = "week" .. week .. "/a", skill = skill, safety = safety },
         M.policy{ name = "week" .. week .. "/b", skill = math.max(0, skill - 0.05),
                   safety = math.max(0, safety - 0.05) }
end

-- world.preference_data{ seed = 1, batches = 5, pairs = 2000 (per batch), source_pairs = 800,
--   test_fraction = 0.1, dir = nil } -> { train = { name = dataset }, test = { name = dataset },
--   names = { ... } }
-- "meta_helpful" and "meta_safety" are the weekly batches' helpfulness and safety pairs (the
-- paper's Meta Helpfulness and Meta Safety data); the five open-source-like sources follow.
-- Every set is split into train and test with the same fraction; with `dir`, each set is
-- written there as <name>.jsonl (train) and <name>.test.jsonl.
function M.preference_data(opts)
  opts = opts or {}
  local data = require "herd.data"
  local seed = opts.seed or 1
  local fraction = opts.test_fraction or 0.1
  local batches = {}
  for week = 1, opts.batches or 5 do
    local a, b = M.weekly_policies(week)
    local records = M.collect{ policy_a = a, policy_b = b, n = opts.pairs or 2000, batch = week,
                               seed = seed }
    for _, r in ipairs(records) do batches[#batches + 1] = r end
  end
  local all = data.from_records(batches, { schema = "preference", origin = "weekly batches" })
  local sets = { meta_helpful = all:filter{ domain = "helpful" },
                 meta_safety = all:filter{ domain = "safety" } }
  local names = { "meta_helpful", "meta_safety" }
  for _, name in ipairs(M.SOURCE_NAMES) do
    sets[name] = data.from_records(M.source{ name = name, n = opts.source_pairs or 800,
                                             seed = seed }, { schema = "preference", origin = name })
    names[#names + 1] = name
  end
  local out = { train = {}, test = {}, names = names }
  for i, name in ipairs(names) do
    out.test[name], out.train[name] = sets[name]:split(fraction, seed * 101 + i)
    if opts.dir then
      out.train[name]:write(opts.dir .. "/" .. name .. ".jsonl")
      out.test[name]:write(opts.dir .. "/" .. name .. ".test.jsonl")
    end
  end
  return out
end

return M
