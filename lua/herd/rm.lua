-- herd.rm: reward models (Llama 2 section 3.2.2, appendix A.3.3-A.3.4).
--
--   local rm = herd.rm.from_chat("out/12", { seq = 256, batch = 16, seed = 1 })
--   local stats = rm:train(prefs, { margins = "small", safety_aux = 0, lr = 1e-4, pairs = 32 })
--   local scores = rm:score{ { { role = "user", content = "Hi" },
--                              { role = "assistant", content = "Hello!" } } }
--   local report = rm:evaluate(test)      -- accuracy per rating and safety bin, with intervals
--   rm:save("out/13")
--
-- A reward model is a chat model whose next-token head is replaced by a scalar head
-- (score.weight, as Hugging Face's LlamaForSequenceClassification). The score of a dialog is
-- read at the last token of its rendering with the Llama 2 chat template (the answer's </s>),
-- whatever the padding or packing of the batch.
local data = require "herd.data"
local rng = require "herd.rng"

local M = {}

-- Margin tables m(r) of eq. 2, indexed by rating level (1 = significantly better .. 4 =
-- negligibly better / unsure). Table 27: small {1, 2/3, 1/3, 0}, large {3, 2, 1, 0}.
M.margins = {
  none = { 0, 0, 0, 0 },
  small = { 1, 2 / 3, 1 / 3, 0 },
  large = { 3, 2, 1, 0 },
}

-- Training presets. `paper`: section 3.2.2 (lr 1e-5; 5e-6 for the 70B model; 512 pairs a
-- batch; one epoch; cosine to 10%; warm-up 3% of the steps, at least 5). `toy`: the same
-- schedule scaled to the toy world's 7M-parameter models, which need a larger learning rate
-- and smaller batches to learn anything in one epoch of a few thousand pairs.
M.presets = {
  paper = { lr = 1e-5, pairs = 512, epochs = 1, floor = 0.1, warmup_fraction = 0.03,
            min_warmup = 5, weight_decay = 0.1, grad_clip = 1.0 },
  paper_70b = { lr = 5e-6, pairs = 512, epochs = 1, floor = 0.1, warmup_fraction = 0.03,
                min_warmup = 5, weight_decay = 0.1, grad_clip = 1.0 },
  toy = { lr = 1e-4, pairs = 32, epochs = 1, floor = 0.1, warmup_fraction = 0.03,
          min_warmup = 5, weight_decay = 0.1, grad_clip = 1.0 },
}

local function margin_table(margins)
  if margins == nil then return M.margins.none end
  if type(margins) == "string" then
    return M.margins[margins] or error(string.format(
      "rm: unknown margin table '%s' (none, small, large, or a table of 4 numbers)", margins), 3)
  end
  if type(margins) ~= "table" or #margins ~= 4 then
    error("rm: a margin table has 4 numbers, one per rating level", 3)
  end
  for i = 1, 4 do
    if type(margins[i]) ~= "number" then error("rm: margin " .. i .. " is not a number", 3) end
  end
  return margins
end
M.margin_table = margin_table

local function softplus(x)
  return math.max(x, 0) + math.log(1 + math.exp(-math.abs(x)))
end

local function sigmoid(x)
  if x >= 0 then return 1 / (1 + math.exp(-x)) end
  local e = math.exp(x)
  return e / (1 + e)
end
M.sigmoid = sigmoid

-- The binary ranking loss of eq. 2 for one pair: -log(sigmoid(r_c - r_r - m)), and its
-- gradients with respect to r_c and r_r.
function M.pair_loss(r_chosen, r_rejected, margin)
  local d = r_chosen - r_rejected - (margin or 0)
  local g = sigmoid(-d) -- = 1 - sigmoid(d)
  return softplus(-d), -g, g
end

-- The safety auxiliary loss (appendix A.3.4, Table 29). The paper names its aim, not its form:
-- "teaching the model to discriminate between safe and unsafe model generations", judged by the
-- recall of unsafe responses at score 0.5 after the sigmoid. herd uses binary cross-entropy on
-- sigmoid(r) with target 1 for a safe and 0 for an unsafe response:
--   safe:   -log(sigmoid(r)) = softplus(-r)        unsafe: -log(1 - sigmoid(r)) = softplus(r)
-- so it pushes unsafe responses below 0 and safe ones above. Returns the loss and d/dr.
function M.aux_loss(r, safe)
  if safe then return softplus(-r), sigmoid(r) - 1 end
  return softplus(r), sigmoid(r)
end

---------------------------------------------------------------------------------------------
-- The reward model object.

local RM = {}
RM.__index = RM
RM.__name = "herd.RewardModel"

function RM:__tostring()
  local c = self.model:config()
  return string.format("herd.RewardModel (dim %d, %d layers, vocab %d; %.2fM params; seq %d)",
    c.dim, c.n_layers, c.vocab_size, self.model:params() / 1e6, self.seq)
end

function RM:__close() self.model:close() end

-- herd.rm.new{ model =, tokenizer =, seq = model's max_seq_len, batch = 16 }
function M.new(opts)
  assert(opts and opts.model and opts.tokenizer, "herd.rm.new: model and tokenizer required")
  if not opts.model:config().scalar_head then
    error("herd.rm.new: the model has no scalar head (load it with herd.rm.from_chat)", 2)
  end
  local c = opts.model:config()
  return setmetatable({ model = opts.model, tokenizer = opts.tokenizer,
                        seq = opts.seq or c.max_seq_len, rows = opts.batch or 16,
                        truncated = 0 }, RM)
end

local function tokenizer_of(dir, opts)
  if opts.tokenizer then return opts.tokenizer end
  return require("herd.tokenizer").load(dir .. "/tokenizer.json")
end

-- A reward model initialised from a chat (causal LM) checkpoint: same trunk, a new scalar head.
-- The tokenizer is opts.tokenizer or dir/tokenizer.json.
function M.from_chat(dir, opts)
  opts = opts or {}
  -- A zero head by default: every first score is 0, so the scores' offset is learnt from data.
  -- The ranking loss alone hardly moves it (it sees only differences); a random head would
  -- leave an arbitrary offset that decides "recall at score 0" by itself (appendix A.3.4).
  local model = require("herd.model").load(dir, { batch = opts.batch or 16, seq = opts.seq,
                                                  head = "scalar", seed = opts.seed,
                                                  score_scale = opts.score_scale or 0 })
  return M.new{ model = model, tokenizer = tokenizer_of(dir, opts), seq = opts.seq,
                batch = opts.batch }
end

-- A saved reward model (its score.weight kept).
M.load = M.from_chat

function RM:save(dir)
  self.model:save(dir)
  self.tokenizer:save(dir .. "/tokenizer.json")
end

local function as_dialog(prompt)
  if type(prompt) == "string" then return { { role = "user", content = prompt } } end
  return prompt
end

-- Token ids of a dialog that ends with the answer to score. Over-long dialogs keep their last
-- `seq` tokens (the answer and the most recent context; counted in self.truncated).
function RM:encode(dialog, response)
  local messages = {}
  for i, m in ipairs(as_dialog(dialog)) do messages[i] = m end
  if response ~= nil then messages[#messages + 1] = { role = "assistant", content = response } end
  if messages[#messages].role ~= "assistant" then
    error("rm: the dialog to score must end with the assistant's answer", 3)
  end
  local ids = self.tokenizer:chat(messages).ids
  if #ids > self.seq then
    self.truncated = self.truncated + 1
    ids = { table.unpack(ids, #ids - self.seq + 1) }
  end
  return ids
end

-- Where the sequences of `lengths` go in rows already filled to `fill` (at most `max_rows` rows
-- of `seq` tokens, first fit): a list of { row, offset } and the new fill, or nil if they do not
-- all fit.
local function place(fill, max_rows, seq, lengths)
  local f = { table.unpack(fill) }
  local spots = {}
  for i, n in ipairs(lengths) do
    local row
    for r = 1, #f do
      if f[r] + n <= seq then row = r; break end
    end
    if not row then
      if #f == max_rows then return nil end
      f[#f + 1] = 0
      row = #f
    end
    spots[i] = { row, f[row] }
    f[row] = f[row] + n
  end
  return spots, f
end

-- Packs sequences into micro-batches of at most self.rows rows of self.seq tokens; every group
-- (the two answers of a pair) shares a micro-batch, so a pair's loss needs only its own forward.
-- Each sequence is its own segment with positions from 0; padding is segment 0.
-- Returns { { batch = {tokens, segments, positions, score_positions}, slots = { {g, m}, ... } } }
-- where score k of the micro-batch belongs to sequence m of group g.
function RM:_pack(groups)
  local T, B = self.seq, self.rows
  local pad = self.tokenizer:eos()
  local out, current = {}, nil
  local function flush()
    if not current then return end
    local b = current.batch
    for r = 1, #current.fill do
      for t = current.fill[r] + 1, T do
        b.tokens[r][t], b.segments[r][t], b.positions[r][t] = pad, 0, 0
      end
    end
    out[#out + 1] = { batch = b, slots = current.slots }
    current = nil
  end
  local function fresh()
    return { fill = {}, slots = {},
             batch = { tokens = {}, segments = {}, positions = {}, score_positions = {} } }
  end
  for g, group in ipairs(groups) do
    local lengths = {}
    for m, ids in ipairs(group) do lengths[m] = #ids end
    current = current or fresh()
    local spots, fill = place(current.fill, B, T, lengths)
    if not spots then
      flush()
      current = fresh()
      spots, fill = place(current.fill, B, T, lengths)
      if not spots then error("rm: a pair does not fit in one batch of " .. B .. " rows", 2) end
    end
    local b = current.batch
    for r = #current.fill + 1, #fill do
      b.tokens[r], b.segments[r], b.positions[r] = {}, {}, {}
    end
    for m, ids in ipairs(group) do
      local row, offset = spots[m][1], spots[m][2]
      local segment = #current.slots + 1
      for t, id in ipairs(ids) do
        b.tokens[row][offset + t] = id
        b.segments[row][offset + t] = segment
        b.positions[row][offset + t] = t - 1
      end
      b.score_positions[segment] = (row - 1) * T + offset + #ids - 1
      current.slots[segment] = { g, m }
    end
    current.fill = fill
  end
  flush()
  return out
end

-- Scores of a list of token sequences, in order.
function RM:score_ids(seqs)
  local groups = {}
  for i, ids in ipairs(seqs) do groups[i] = { ids } end
  local scores = {}
  for _, mb in ipairs(self:_pack(groups)) do
    self.model:forward(mb.batch)
    local s = self.model:scores(mb.batch)
    for k, slot in ipairs(mb.slots) do scores[slot[1]] = s[k] end
  end
  return scores
end

-- rm:score{ dialog, ... } with each dialog ending in the assistant's answer, or
-- rm:score(dialogs, responses) with the answers apart. Returns a list of scores (before the
-- sigmoid).
function RM:score(dialogs, responses)
  local seqs = {}
  for i, dialog in ipairs(dialogs) do
    seqs[i] = self:encode(dialog, responses and responses[i])
  end
  return self:score_ids(seqs)
end

---------------------------------------------------------------------------------------------
-- Preference pairs.

local function is_blank(text) return text:match("^%s*$") ~= nil end

-- "file:line" of record i, for messages
local function where(ds, i)
  local file, line = ds:origin(i)
  return line and string.format("%s:%d", file, line) or tostring(file)
end

-- Encodes the pairs of a preference dataset: { { chosen = ids, rejected = ids, level = 1..4,
-- domain =, chosen_safe =, rejected_safe = } }, and counts what was skipped and why.
-- opts.empty says what to do with a pair whose chosen or rejected answer is empty (or blank):
-- "skip" (the default: such a pair usually means a broken export; it is skipped, counted and
-- the first ones named on stderr), "keep" (an empty answer is a real model output, e.g. an
-- immediate </s>, and is scored like any other), or "error".
function RM:encode_pairs(ds, opts)
  opts = opts or {}
  local empty = opts.empty or "skip"
  if empty ~= "skip" and empty ~= "keep" and empty ~= "error" then
    error("rm: empty must be \"skip\", \"keep\" or \"error\", not " .. tostring(empty), 3)
  end
  local pairs_, skipped = {}, { empty_response = 0 }
  local truncated_before = self.truncated
  local first_skips = {}
  for i = 1, #ds do
    local r = ds[i]
    local blank = is_blank(r.chosen) or is_blank(r.rejected)
    if blank and empty == "error" then
      error(string.format("%s: field '%s': empty response", where(ds, i),
        is_blank(r.chosen) and "chosen" or "rejected"), 2)
    end
    if blank and empty == "skip" then
      skipped.empty_response = skipped.empty_response + 1
      if #first_skips < 3 then first_skips[#first_skips + 1] = where(ds, i) end
    else
      local dialog = r.dialog or r.prompt
      local level = data.rating_level(r.rating)
      if not level then
        error(string.format("%s: field 'rating': %s is not a rating", where(ds, i),
          tostring(r.rating)), 2)
      end
      local pair = { chosen = self:encode(dialog, r.chosen), rejected = self:encode(dialog, r.rejected),
                     level = level, domain = r.domain, index = i }
      if r.safety_bin then
        pair.chosen_safe = r.safety_bin ~= "both_unsafe"
        pair.rejected_safe = r.safety_bin == "both_safe"
      end
      pairs_[#pairs_ + 1] = pair
    end
  end
  skipped.truncated = self.truncated - truncated_before
  if skipped.empty_response > 0 and opts.quiet ~= true then
    io.stderr:write(string.format("rm: skipped %d of %d pairs with an empty response (first: %s)\n",
      skipped.empty_response, #ds, table.concat(first_skips, ", ")))
  end
  if skipped.truncated > 0 and opts.quiet ~= true then
    io.stderr:write(string.format("rm: %d of %d responses longer than %d tokens with their " ..
      "dialog: kept their last %d tokens (the answer and the latest context)\n",
      skipped.truncated, 2 * #pairs_, self.seq, self.seq))
  end
  return pairs_, skipped
end

---------------------------------------------------------------------------------------------
-- Training.

local TRAIN_OPTIONS = { margins = true, safety_aux = true, lr = true, pairs = true, epochs = true,
                        floor = true, warmup_fraction = true, min_warmup = true,
                        weight_decay = true, grad_clip = true, seed = true, run = true,
                        preset = true, progress = true, on_step = true, beta1 = true,
                        beta2 = true, eps = true, empty = true }

local function settings(opts)
  for k in pairs(opts) do
    if not TRAIN_OPTIONS[k] then error("rm:train: unknown option '" .. tostring(k) .. "'", 3) end
  end
  local preset = M.presets[opts.preset or "toy"]
  if not preset then error("rm:train: unknown preset " .. tostring(opts.preset), 3) end
  local s = {}
  for k, v in pairs(preset) do s[k] = v end
  for k, v in pairs(opts) do s[k] = v end
  s.margins = margin_table(opts.margins)
  s.safety_aux = s.safety_aux or 0
  s.seed = s.seed or 1
  return s
end

-- The loss of one micro-batch's pairs from their scores: fills dscores (already divided by the
-- step's pair count) and returns the summed pair loss, summed aux loss and correct count.
local function micro_batch_loss(mb, pairs_, scores, s, n_pairs)
  local dscores, by_group = {}, {}
  for k, slot in ipairs(mb.slots) do
    by_group[slot[1]] = by_group[slot[1]] or {}
    by_group[slot[1]][slot[2]] = k
  end
  local rank, aux, correct = 0, 0, 0
  for g, ks in pairs(by_group) do
    local pair = pairs_[g]
    local kc, kr = ks[1], ks[2]
    local rc, rr = scores[kc], scores[kr]
    local loss, dc, dr = M.pair_loss(rc, rr, s.margins[pair.level])
    rank = rank + loss
    if rc > rr then correct = correct + 1 end
    if s.safety_aux > 0 and pair.chosen_safe ~= nil then
      local la, da = M.aux_loss(rc, pair.chosen_safe)
      local lb, db = M.aux_loss(rr, pair.rejected_safe)
      aux = aux + la + lb
      dc, dr = dc + s.safety_aux * da, dr + s.safety_aux * db
    end
    dscores[kc], dscores[kr] = dc / n_pairs, dr / n_pairs
  end
  return dscores, rank, aux, correct
end

-- rm:train(ds, { preset = "toy", margins = "small", safety_aux = 0, lr =, pairs =, epochs = 1,
--   seed = 1, run = herd.run, progress = true }) -> { steps, pairs, skipped, final_loss, ... }
-- One optimizer step per `pairs` pairs (chosen and rejected of a pair in the same step, in the
-- same micro-batch); micro-batches of at most `batch` rows accumulate gradients. Learning rate:
-- warm-up for max(min_warmup, warmup_fraction x steps) steps, then cosine down to floor x lr.
-- Logs rm_loss, rm_aux_loss, rm_accuracy (on the step's own pairs), lr, grad_norm to `run`.
function RM:train(ds, opts)
  local s = settings(opts or {})
  local pairs_, skipped = self:encode_pairs(ds, { empty = s.empty })
  if #pairs_ == 0 then error("rm:train: no pairs to train on", 2) end
  local order
  local steps_per_epoch = math.ceil(#pairs_ / s.pairs)
  local total = steps_per_epoch * s.epochs
  local warmup = math.max(s.min_warmup, math.floor(s.warmup_fraction * total + 0.5))
  local lr_cosine = require("herd.model").lr_cosine
  local bar = s.progress ~= false and require("herd.progress").new{ total = total, unit = "pairs" }
  local optimizer = { beta1 = s.beta1 or 0.9, beta2 = s.beta2 or 0.95, eps = s.eps or 1e-5,
                      weight_decay = s.weight_decay, grad_clip = s.grad_clip }
  local step, last = 0, {}
  for epoch = 1, s.epochs do
    order = rng.permutation(#pairs_, s.seed * 1000 + epoch)
    for first = 1, #order, s.pairs do
      step = step + 1
      local groups, members = {}, {}
      for j = first, math.min(first + s.pairs - 1, #order) do
        local pair = pairs_[order[j]]
        members[#members + 1] = pair
        groups[#groups + 1] = { pair.chosen, pair.rejected }
      end
      optimizer.lr = lr_cosine(step, s.lr, warmup, total, s.floor)
      self.model:zero_grad()
      local rank, aux, correct = 0, 0, 0
      for _, mb in ipairs(self:_pack(groups)) do
        self.model:forward(mb.batch)
        local scores = self.model:scores(mb.batch)
        local dscores, r, a, c = micro_batch_loss(mb, members, scores, s, #members)
        rank, aux, correct = rank + r, aux + a, correct + c
        mb.batch.dscores = dscores
        self.model:backward(mb.batch)
      end
      local grad_norm = self.model:update(optimizer)
      last = { rm_loss = rank / #members, rm_aux_loss = aux / #members,
               rm_accuracy = correct / #members, lr = optimizer.lr, grad_norm = grad_norm }
      if last.rm_loss ~= last.rm_loss then
        error(string.format("rm:train: the loss is NaN at step %d (lr %.3g)", step, optimizer.lr), 2)
      end
      if s.run then s.run:log(step, last) end
      if s.on_step then s.on_step(step, last) end
      if bar then bar:update(step, { loss = last.rm_loss, acc = last.rm_accuracy }, step * s.pairs) end
    end
  end
  if bar then bar:finish() end
  if s.run then
    s.run:param("rm_pairs", #pairs_)
    s.run:param("rm_skipped_empty", skipped.empty_response)
    s.run:param("rm_truncated", skipped.truncated)
  end
  return { steps = step, pairs = #pairs_, skipped = skipped, final = last }
end

---------------------------------------------------------------------------------------------
-- Evaluation (Tables 7, 8 and 29; Figure 27).

M.BIN_LABELS = { chosen_safe_rejected_unsafe = "safe/unsafe", both_safe = "safe/safe",
                 both_unsafe = "unsafe/unsafe" }

-- 95% percentile-bootstrap interval of the mean of `values` (0/1/0.5 outcomes), `draws`
-- resamples drawn from `seed`.
local function bootstrap(values, seed, draws)
  local n = #values
  if n == 0 then return 0 / 0, 0 / 0 end
  local g = rng.new(seed)
  local means = {}
  for d = 1, draws do
    local sum = 0
    for _ = 1, n do sum = sum + values[g:int(1, n)] end
    means[d] = sum / n
  end
  table.sort(means)
  return means[math.max(1, math.floor(0.025 * draws + 0.5))], means[math.floor(0.975 * draws + 0.5)]
end
M.bootstrap = bootstrap

local function summary(values, seed, draws)
  local sum = 0
  for _, v in ipairs(values) do sum = sum + v end
  local lo, hi = bootstrap(values, seed, draws)
  return { n = #values, value = #values > 0 and sum / #values or 0 / 0, lo = lo, hi = hi }
end

-- rm:evaluate(ds, { bootstrap = 1000, seed = 1, bins = 20, empty = "skip" }) -> {
--   accuracy = {n, value, lo, hi}, by_rating = { [rating] = {...} },
--   by_bin = { safe/unsafe =, safe/safe =, unsafe/unsafe = }, unsafe_recall = {...},
--   histogram = { edges, chosen, rejected }, skipped = {...} }
-- Accuracy: the chosen answer scores higher (a tie counts half). Unsafe recall: the share of
-- unsafe answers (from the safety bins) whose sigmoid(score) < 0.5, i.e. score < 0; safe_pass,
-- its complement on the safe answers: the share scored >= 0 (a threshold at 0 means something
-- only when both are high).
function RM:evaluate(ds, opts)
  opts = opts or {}
  local pairs_, skipped = self:encode_pairs(ds, { quiet = opts.quiet, empty = opts.empty })
  local seqs = {}
  for i, p in ipairs(pairs_) do seqs[2 * i - 1], seqs[2 * i] = p.chosen, p.rejected end
  local scores = self:score_ids(seqs)
  local draws = opts.bootstrap or 1000
  local seed = opts.seed or 1
  local all, by_rating, by_bin, unsafe, safe = {}, {}, {}, {}, {}
  local n_bins = opts.bins or 20
  local hist = { edges = {}, chosen = {}, rejected = {} }
  for b = 0, n_bins do hist.edges[b + 1] = b / n_bins end
  for b = 1, n_bins do hist.chosen[b], hist.rejected[b] = 0, 0 end
  local function add_hist(which, score)
    local b = math.min(n_bins, math.floor(sigmoid(score) * n_bins) + 1)
    hist[which][b] = hist[which][b] + 1
  end
  local rating_names = { "significantly better", "better", "slightly better", "negligibly better" }
  for i, p in ipairs(pairs_) do
    local rc, rr = scores[2 * i - 1], scores[2 * i]
    local outcome = rc > rr and 1 or (rc == rr and 0.5 or 0)
    all[#all + 1] = outcome
    local name = rating_names[p.level]
    by_rating[name] = by_rating[name] or {}
    table.insert(by_rating[name], outcome)
    local rec_bin = ds[p.index].safety_bin
    if rec_bin then
      local label = M.BIN_LABELS[rec_bin]
      by_bin[label] = by_bin[label] or {}
      table.insert(by_bin[label], outcome)
      if p.chosen_safe then safe[#safe + 1] = rc >= 0 and 1 or 0
      else unsafe[#unsafe + 1] = rc < 0 and 1 or 0 end
      if p.rejected_safe then safe[#safe + 1] = rr >= 0 and 1 or 0
      else unsafe[#unsafe + 1] = rr < 0 and 1 or 0 end
    end
    add_hist("chosen", rc)
    add_hist("rejected", rr)
  end
  local report = { accuracy = summary(all, seed, draws), by_rating = {}, by_bin = {},
                   histogram = hist, skipped = skipped, scores = scores }
  for _, name in ipairs(rating_names) do
    if by_rating[name] then report.by_rating[name] = summary(by_rating[name], seed + 1, draws) end
  end
  for _, label in pairs(M.BIN_LABELS) do
    if by_bin[label] then report.by_bin[label] = summary(by_bin[label], seed + 2, draws) end
  end
  if #unsafe > 0 then report.unsafe_recall = summary(unsafe, seed + 3, draws) end
  if #safe > 0 then report.safe_pass = summary(safe, seed + 4, draws) end
  return report
end

-- The functional forms: herd.rm.score(rm, dialogs [, responses]), herd.rm.evaluate(rm, ds, opts).
function M.score(rm, dialogs, responses) return rm:score(dialogs, responses) end
function M.evaluate(rm, ds, opts) return rm:evaluate(ds, opts) end

-- "63.2 [61.0, 65.4]" from a summary
function M.format(summary_)
  if not summary_ or summary_.n == 0 then return "-" end
  return string.format("%.1f [%.1f, %.1f]", 100 * summary_.value, 100 * summary_.lo,
    100 * summary_.hi)
end

return M
