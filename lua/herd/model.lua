-- herd.model: Llama 2 models from Lua (the C side is bindings/lmodel.c over runtime/model.c).
--
--   local herd = require "herd"
--   local m = herd.model.new(herd.model.reference_config, { batch = 8, seed = 1 })
--   local loss, grad_norm = m:step({ tokens = {{1, 2, 3}}, targets = {{2, 3, -1}} },
--                                  { lr = 3e-4 })
--   local samples = m:generate{ prompts = {{1, 5, 9}}, k = 4, temperature = 0.8, max_new = 32 }
--   m:save("ckpt/toy")                     -- a Hugging Face directory; herd.model.load reads it
--   m:to("cuda")                           -- moves it to the GPU (m:device() says where it is)
local core = require "herd.model_core"
local tensor = require "herd.tensor"

local M = {}
local methods = core.metatable.__index

-- The reference model of the benchmarks and the toy world (issue 5).
M.reference_config = {
  dim = 288, n_layers = 6, n_heads = 6, n_kv_heads = 2, hidden_dim = 768,
  vocab_size = 4096, max_seq_len = 256, norm_eps = 1e-5, rope_theta = 10000,
}

-- Learning rate at `step` (from 1): linear warm-up to max_lr, cosine down to floor * max_lr.
function M.lr_cosine(step, max_lr, warmup, total, floor)
  return core.lr_cosine(step, max_lr, warmup, total, floor or 0.1)
end

local function random_seed()
  return math.random(0, 2147483647)
end

local function check_device(device, who)
  if device ~= nil and type(device) ~= "string" then
    error(who .. ": device must be a string (\"cpu\" or \"cuda\")", 3)
  end
end

local new_options = { batch = true, seq = true, seed = true, device = true, precision = true }

local function check_precision(precision, who)
  if precision ~= nil and precision ~= "f32" and precision ~= "bf16" then
    error(string.format("%s: precision is %s; use \"f32\" or \"bf16\"", who,
      tostring(precision)), 3)
  end
end

-- herd.model.new(config, { batch = 8, seq = config.max_seq_len, seed = ..., device = "cpu",
--                         precision = "f32" })
-- device = "cuda" puts parameters, gradients, moments and activations on the GPU; the initial
-- weights are the same bits on either device for the same seed. precision = "bf16" runs the
-- matmuls on bf16 copies of their operands with f32 accumulation, f32 master weights and
-- moments (mixed precision; m:set_precision changes it later).
function M.new(config, opts)
  opts = opts or {}
  if type(config) ~= "table" then error("herd.model.new: expected a config table", 2) end
  for key in pairs(opts) do
    if not new_options[key] then
      error("herd.model.new: unknown option '" .. tostring(key) .. "'", 2)
    end
  end
  check_device(opts.device, "herd.model.new")
  check_precision(opts.precision, "herd.model.new")
  local m = core.new(config, opts.batch or 8, opts.seq or config.max_seq_len or 0,
    opts.seed or random_seed(), opts.device)
  if opts.precision then m:set_precision(opts.precision) end
  return m
end

local load_options = {
  batch = true, seq = true, head = true, seed = true, score_scale = true, device = true,
  precision = true,
}

-- herd.model.load(dir, { batch =, seq =, head = "lm" | "scalar", seed = 0, score_scale = 1,
--                       device = "cpu", precision = "f32" })
-- -> model, training state (or nil)
-- head = "lm" (the default) keeps the heads the checkpoint has. head = "scalar" makes a reward
-- model from a chat checkpoint (Llama 2 section 3.2.2): lm_head.weight is dropped and
-- score.weight is the checkpoint's own when it has one, else drawn from
-- N(0, score_scale^2 / dim) with `seed` (default 0, so the same checkpoint always gives the same
-- reward model; score_scale 0 gives a zero head, as herd.rm.from_chat uses). A training
-- state saved for other heads is not restored. See doc/checkpoints.md.
function M.load(dir, opts)
  if type(dir) ~= "string" then error("herd.model.load: dir must be a string", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("herd.model.load: options must be a table", 2) end
  for key in pairs(opts) do
    if not load_options[key] then
      error("herd.model.load: unknown option '" .. tostring(key) .. "'", 2)
    end
  end
  local head = opts.head or "lm"
  if head ~= "lm" and head ~= "scalar" then
    error(string.format("herd.model.load: head is %s; use \"lm\" or \"scalar\"", tostring(head)),
      2)
  end
  if opts.seed ~= nil and math.type(opts.seed) ~= "integer" then
    error("herd.model.load: seed must be an integer", 2)
  end
  if opts.score_scale ~= nil and not (type(opts.score_scale) == "number" and opts.score_scale >= 0) then
    error("herd.model.load: score_scale must be a number >= 0", 2)
  end
  check_device(opts.device, "herd.model.load")
  check_precision(opts.precision, "herd.model.load")
  local m, state = core.load(dir, opts.batch or 8, opts.seq or 0, head, opts.seed or 0,
    opts.score_scale or 1, opts.device)
  if opts.precision then m:set_precision(opts.precision) end
  return m, state
end

local function to_tensor(value, dtype)
  if value == nil or tensor.is_tensor(value) then return value end
  return tensor.from(value, dtype)
end

-- A batch table for the C side: nested tables become tensors of the right dtype.
function M.batch(fields)
  if fields.tokens == nil then error("batch.tokens is required", 3) end
  local batch = {}
  for key, value in pairs(fields) do batch[key] = value end
  batch.tokens = to_tensor(fields.tokens, "i32")
  batch.positions = to_tensor(fields.positions, "i32")
  batch.segments = to_tensor(fields.segments, "i32")
  batch.targets = to_tensor(fields.targets, "i32")
  batch.weights = to_tensor(fields.weights, "f32")
  batch.score_positions = to_tensor(fields.score_positions, "i32")
  batch.dscores = to_tensor(fields.dscores, "f32")
  return batch
end

local c_forward, c_backward, c_logprobs = methods.forward, methods.backward, methods.logprobs
local c_forward_backward = methods.forward_backward

function methods:forward(batch) return c_forward(self, M.batch(batch)) end
function methods:backward(batch) return c_backward(self, M.batch(batch)) end
-- Forward and backward at once (gradients accumulate): the LM head runs in chunks of rows, so
-- training never holds the (B*T, vocab) logits. Returns the loss; logits are not kept.
function methods:forward_backward(batch) return c_forward_backward(self, M.batch(batch)) end
function methods:logprobs(batch) return c_logprobs(self, M.batch(batch)) end

-- The logits of the last forward as a (B,T,V) tensor.
function methods:logits(batch)
  local shape = (tensor.is_tensor(batch.tokens) and batch.tokens or tensor.from(batch.tokens, "i32")):shape()
  return self:_logits(shape[1], shape[2])
end

function methods:scores(batch)
  local positions = batch.score_positions
  local n = tensor.is_tensor(positions) and positions:numel() or #positions
  return self:_scores(n)
end

-- One training step: zero_grad, forward_backward, AdamW update. Returns loss, grad norm.
function methods:step(batch, opt)
  self:zero_grad()
  local loss = c_forward_backward(self, M.batch(batch))
  local grad_norm = self:update(opt)
  return loss, grad_norm
end

-- m:freeze{ trunk = true } / m:freeze{ lm_head = true }: frozen parts get no gradient or update.
function methods:freeze(parts)
  parts = parts or {}
  self:_set_trainable(not parts.trunk, not parts.lm_head, not parts.scalar_head)
end

-- m:generate{ prompts = {{ids...}, ...}, k = 1, temperature = 1, top_p = 1, top_k = 0,
--             max_new = 64, seed = n | seeds = {...}, stop = {ids...} }
-- -> { { tokens =, logprobs =, prompt = p, sample = j, seed = s }, ... }
function methods:generate(opts)
  local prompts = opts.prompts or error("generate: prompts is required", 2)
  local k = opts.k or 1
  local n = #prompts * k
  local seeds = opts.seeds
  if not seeds then
    local base = opts.seed or random_seed()
    seeds = {}
    for i = 1, n do seeds[i] = base * 1000003 + i end  -- distinct streams, reproducible from base
  end
  local results = self:_generate(prompts, k, opts.temperature or 1.0, opts.top_p or 1.0,
    opts.top_k or 0, opts.max_new or 64, seeds, opts.stop)
  for i, sample in ipairs(results) do
    sample.prompt = (i - 1) // k + 1
    sample.sample = (i - 1) % k + 1
    sample.seed = seeds[i]
  end
  return results
end

function core.metatable.__tostring(m)
  local count = m:params()
  local c = m:config()
  return string.format(
    "herd.Model (dim %d, %d layers, %d heads, %d kv heads, vocab %d; %.2fM params; %s, %s)",
    c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, count / 1e6, m:device(),
    m:precision())
end

return M
