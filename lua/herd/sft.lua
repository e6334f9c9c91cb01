-- herd.sft: supervised fine-tuning (Llama 2 section 3.1).
--
--   local stats = herd.sft.train(model, tok, dialogs, { preset = "toy", run = run })
--
-- Each dialog (a list of { role, content } ending with the assistant's answer) is rendered with
-- the Llama 2 chat template. All samples are packed to the sequence length (herd.data.pack):
-- segment ids keep packed samples from attending to each other and positions restart per
-- sample. The loss is zeroed on the template, system and user tokens, so only the answers (and
-- their </s>) are back-propagated; the masks come from the template's per-token roles
-- (herd.tokenizer.assistant_mask), never from re-tokenizing pieces.
local data = require "herd.data"
local rng = require "herd.rng"

local M = {}

-- paper: section 3.1 (cosine schedule from 2e-5, weight decay 0.1, batch 64 sequences of 4096
-- tokens, 2 epochs; the paper gives no warm-up or floor: herd warms up for 3% of the steps and
-- ends at 10% of the peak, as its other trainers do). toy: the same recipe scaled to the toy
-- world's reference model (sequences of 256 tokens, a peak learning rate suited to 7M
-- parameters).
M.presets = {
  paper = { lr = 2e-5, weight_decay = 0.1, batch = 64, seq = 4096, epochs = 2,
            warmup_fraction = 0.03, floor = 0.1, grad_clip = 1.0 },
  toy = { lr = 3e-4, weight_decay = 0.1, batch = 16, seq = 256, epochs = 2,
          warmup_fraction = 0.03, floor = 0.1, grad_clip = 1.0 },
}

local function messages_of(dialog)
  return dialog.messages or dialog
end

-- Token ids and loss mask of each dialog: { { ids =, mask = }, ... }. A dialog without an
-- answer to train on is an error naming it.
function M.samples(tok, dialogs)
  local assistant_mask = require("herd.tokenizer").assistant_mask
  local out = {}
  for i, dialog in ipairs(dialogs) do
    local messages = messages_of(dialog)
    if type(messages) ~= "table" or #messages == 0 then
      error(string.format("sft: dialog %d is empty", i), 2)
    end
    local chat = tok:chat(messages)
    local mask = assistant_mask(chat)
    local any = false
    for _, m in ipairs(mask) do any = any or m > 0 end
    if not any then
      error(string.format("sft: dialog %d has no assistant answer to train on", i), 2)
    end
    out[i] = { ids = chat.ids, mask = mask }
  end
  return out
end

local ALLOWED = { preset = true, lr = true, weight_decay = true, batch = true, seq = true,
                  epochs = true, warmup_fraction = true, floor = true, grad_clip = true,
                  seed = true, run = true, progress = true, overlong = true, on_step = true,
                  micro_batch = true }

local function settings(model, opts)
  for k in pairs(opts) do
    if not ALLOWED[k] then error("sft.train: unknown option '" .. tostring(k) .. "'", 3) end
  end
  local preset = M.presets[opts.preset or "toy"]
  if not preset then error("sft.train: unknown preset " .. tostring(opts.preset), 3) end
  local s = {}
  for k, v in pairs(preset) do s[k] = v end
  for k, v in pairs(opts) do s[k] = v end
  local c = model:config()
  s.seq = math.min(s.seq, c.max_seq_len)
  s.seed = s.seed or 1
  return s
end

-- herd.sft.train(model, tok, dialogs, { preset = "toy", lr =, batch = rows per step, seq =,
--   epochs =, micro_batch = rows per forward (default: the model's batch), seed = 1,
--   overlong = "truncate"|"error", run =, progress = true, on_step = fn(step, metrics) })
-- -> { steps, rows, stats = packing counts, final = last metrics }
-- One optimizer step per `batch` packed rows; when that is more than fits in one forward,
-- micro-batches accumulate gradients and the loss is the mean over all answer tokens of the step.
function M.train(model, tok, dialogs, opts)
  local s = settings(model, opts or {})
  local samples = M.samples(tok, dialogs)
  local pack_opts = { seq = s.seq, pad = tok:eos(), overlong = s.overlong or "truncate" }
  -- Each epoch packs the samples in a new order, so rows differ from epoch to epoch.
  local function pack_epoch(epoch)
    local order = rng.permutation(#samples, s.seed * 7919 + epoch)
    local shuffled = {}
    for i, k in ipairs(order) do shuffled[i] = samples[k] end
    return data.pack(shuffled, pack_opts)
  end
  local packed = pack_epoch(1)
  local counts = packed:stats()
  if s.run then
    for _, key in ipairs{ "samples", "truncated", "skipped", "rows", "tokens", "trained", "padding" } do
      s.run:param("sft_" .. key, counts[key])
    end
  end
  if counts.skipped > 0 then
    io.stderr:write(string.format("sft: %d of %d dialogs were left with no answer token after " ..
      "truncation to %d tokens and were skipped\n", counts.skipped, #dialogs, s.seq))
  end
  local micro = s.micro_batch or model:capacity()
  -- every epoch packs the same samples into about the same number of rows; plan on the first
  local steps_per_epoch = math.ceil(#packed / s.batch)
  local total = steps_per_epoch * s.epochs
  local warmup = math.max(1, math.floor(s.warmup_fraction * total + 0.5))
  local lr_cosine = require("herd.model").lr_cosine
  local optimizer = { beta1 = 0.9, beta2 = 0.95, eps = 1e-5, weight_decay = s.weight_decay,
                      grad_clip = s.grad_clip }
  local bar = s.progress ~= false and require("herd.progress").new{ total = total, unit = "tokens" }
  local step, last = 0, {}
  for epoch = 1, s.epochs do
    if epoch > 1 then packed = pack_epoch(epoch) end
    for first = 1, math.min(#packed, steps_per_epoch * s.batch), s.batch do
      step = step + 1
      local last_row = math.min(first + s.batch - 1, #packed)
      -- micro-batches of rows; the loss is the mean over the step's answer tokens
      local micro_batches, trained = {}, 0
      for k = first, last_row, micro do
        local b = packed:batch(k, math.min(micro, last_row - k + 1))
        trained = trained + b.weights:sum()
        micro_batches[#micro_batches + 1] = b
      end
      optimizer.lr = lr_cosine(step, s.lr, warmup, total, s.floor)
      model:zero_grad()
      local loss = 0
      for _, b in ipairs(micro_batches) do
        b.loss_scale = 1 / math.max(trained, 1)
        loss = loss + model:forward_backward(b)
      end
      local grad_norm = model:update(optimizer)
      if loss ~= loss then
        error(string.format("sft.train: the loss is NaN at step %d (lr %.3g)", step, optimizer.lr), 2)
      end
      last = { sft_loss = loss, lr = optimizer.lr, grad_norm = grad_norm, epoch = epoch }
      if s.run then s.run:log(step, last) end
      if s.on_step then s.on_step(step, last) end
      if bar then bar:update(step, { loss = loss }, step * s.batch * s.seq) end
    end
  end
  if bar then bar:finish() end
  return { steps = step, rows = #packed, stats = counts, final = last }
end

-- The mean next-token loss on the answer tokens of `dialogs` (a held-out SFT loss).
function M.loss(model, tok, dialogs, opts)
  opts = opts or {}
  local seq = math.min(opts.seq or model:config().max_seq_len, model:config().max_seq_len)
  local packed = data.pack(M.samples(tok, dialogs), { seq = seq, pad = tok:eos() })
  local micro = model:capacity()
  local sum, tokens = 0, 0
  for first = 1, #packed, micro do
    local b = packed:batch(first, math.min(micro, #packed - first + 1))
    local trained = b.weights:sum()
    b.loss_scale = 1
    sum = sum + model:forward(b)
    tokens = tokens + trained
  end
  return sum / math.max(tokens, 1)
end

return M
