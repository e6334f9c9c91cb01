-- herd.model from Lua: configs, batches from tables, training steps, logprobs, generation,
-- checkpoints and the errors a script author meets.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"
local herd = require "herd"

local config = { dim = 32, n_layers = 2, n_heads = 4, n_kv_heads = 2, hidden_dim = 48,
                 vocab_size = 37, max_seq_len = 32, rope_theta = 50000 }
local batch = {
  tokens = { { 1, 2, 3, 4, 5, 6, 7, 8 }, { 8, 7, 6, 5, 4, 3, 2, 1 } },
  targets = { { 2, 3, 4, 5, 6, 7, 8, 9 }, { 7, 6, 5, 4, 3, 2, 1, -1 } },
}

t.test("a model trains on a fixed batch and its loss falls", function()
  local m = herd.model.new(config, { batch = 2, seed = 1 })
  t.match(tostring(m), "dim 32, 2 layers, 4 heads, 2 kv heads")
  local first = m:forward(batch)
  t.near(first, math.log(37), 0.5, "a fresh model is near uniform")
  local loss
  for _ = 1, 40 do loss = m:step(batch, { lr = 1e-2, weight_decay = 0 }) end
  t.ok(loss < 0.05, "loss after 40 steps: " .. loss)
  t.eq(m:step_count(), 40)
  local count, bytes = m:params()
  t.eq(bytes, 4 * count)
end)

t.test("the same seed gives the same model; logprobs equal minus the token losses", function()
  local a = herd.model.new(config, { batch = 2, seed = 7 })
  local b = herd.model.new(config, { batch = 2, seed = 7 })
  t.eq(a:forward(batch), b:forward(batch))
  local logprobs = a:logprobs(batch):totable()
  local total, count = 0, 0
  for r = 1, 2 do
    for c = 1, 8 do
      if batch.targets[r][c] >= 0 then total, count = total - logprobs[r][c], count + 1 end
    end
  end
  t.eq(logprobs[2][8], 0.0, "no target, no log-probability")
  t.near(total / count, a:forward(batch), 1e-5)
end)

t.test("generation: shapes, reproducible by seed, greedy is deterministic", function()
  local m = herd.model.new(config, { batch = 4, seed = 3 })
  local samples = m:generate{ prompts = { { 1, 2, 3 }, { 4, 5 } }, k = 2, max_new = 5, seed = 11 }
  t.eq(#samples, 4)
  t.eq(samples[3].prompt, 2)
  t.eq(samples[3].sample, 1)
  t.eq(#samples[1].tokens, 5)
  t.eq(#samples[1].logprobs, 5)
  local again = m:generate{ prompts = { { 4, 5 } }, seeds = { samples[3].seed }, max_new = 5 }
  t.eq(table.concat(again[1].tokens, ","), table.concat(samples[3].tokens, ","))
  local g1 = m:generate{ prompts = { { 1, 2, 3 } }, temperature = 0, max_new = 6 }
  local g2 = m:generate{ prompts = { { 1, 2, 3 } }, temperature = 0, max_new = 6, seed = 99 }
  t.eq(table.concat(g1[1].tokens, ","), table.concat(g2[1].tokens, ","))
end)

t.test("save and load: same logits, training state restored", function()
  local dir = util.tmpdir()
  local m = herd.model.new(config, { batch = 2, seed = 5 })
  m:step(batch, { lr = 1e-3 })
  m:save(dir .. "/ckpt", { rng_seed = 5, rng_offset = 123, data_position = 2 })
  local loaded, state = herd.model.load(dir .. "/ckpt", { batch = 2 })
  t.eq(loaded:forward(batch), m:forward(batch))
  t.eq(state.step, 1)
  t.eq(state.rng_offset, 123)
  t.eq(state.data_position, 2)
  for step = 2, 4 do  -- resumed training continues bit-identically (losses compared exactly)
    t.eq(loaded:step(batch, { lr = 1e-3 }), m:step(batch, { lr = 1e-3 }), "step " .. step)
  end
  t.eq(loaded:step_count(), 4)
  t.raises(function() herd.model.load(dir .. "/missing") end, "missing")
  util.cleanup()
end)

t.test("bad configs and batches are named", function()
  t.raises(function() herd.model.new({ dim = 32 }) end, "config%.n_layers is required")
  local bad = {}
  for k, v in pairs(config) do bad[k] = v end
  bad.n_head = 4
  t.raises(function() herd.model.new(bad) end, "unknown config field 'n_head'")
  bad.n_head, bad.n_kv_heads = nil, 3
  t.raises(function() herd.model.new(bad) end, "n_kv_heads")
  local m = herd.model.new(config, { batch = 1, seed = 1 })
  t.raises(function() m:forward(batch) end, "batch")
  t.raises(function() m:forward{ tokens = { { 1, 99 } } } end, "token")
  t.raises(function() m:forward{ tokens = { { 1, 2 } }, targts = { { 1, 2 } } } end,
    "unknown batch field 'targts'")
  local one_row = { tokens = { { 1, 2 } }, targets = { { 2, 3 } } }
  t.raises(function() m:step(one_row, { learning_rate = 1 }) end,
    "unknown optimizer field 'learning_rate'")
  t.raises(function() m:step(one_row, {}) end, "lr is required")
end)

local fixture = (os.getenv("HERD_TEST_DIR") or "t") .. "/fixtures/hf-tiny-llama"

-- Scores at every position of one row (the fixture's vocabulary has 64 tokens).
local function all_scores(m)
  local b = { tokens = { { 1, 5, 9, 33, 3, 3, 60, 12 } },
              score_positions = { 0, 1, 2, 3, 4, 5, 6, 7 } }
  m:forward(b)
  return m:scores(b)
end

t.test("a chat checkpoint loads as a reward model (head = \"scalar\")", function()
  local rm = herd.model.load(fixture, { batch = 1, head = "scalar", seed = 3 })
  local c = rm:config()
  t.eq(c.lm_head, false)
  t.eq(c.scalar_head, true)
  local lm = herd.model.load(fixture, { batch = 1 })
  t.eq(lm:config().scalar_head, false, "head = \"lm\" is the default")
  local lm_count = lm:params()
  t.eq(rm:params(), lm_count - c.vocab_size * c.dim + c.dim, "lm_head (V,C) out, score (1,C) in")
  local a, again = all_scores(rm), all_scores(herd.model.load(fixture, { head = "scalar", seed = 3 }))
  local other = all_scores(herd.model.load(fixture, { head = "scalar", seed = 4 }))
  t.eq(#a, 8)
  local differs = false
  for i = 1, 8 do
    t.eq(a[i], again[i], "same seed, position " .. i)
    differs = differs or a[i] ~= other[i]
  end
  t.ok(differs, "another seed draws another score.weight")
  t.raises(function() rm:forward{ tokens = { { 1, 2 } }, targets = { { 2, -1 } } } end,
    "no lm_head")
  t.raises(function() herd.model.load(fixture, { head = "value" }) end,
    "head is value; use \"lm\" or \"scalar\"")
  t.raises(function() herd.model.load(fixture, { heads = "scalar" }) end,
    "unknown option 'heads'")
end)

t.test("a reward model saves as LlamaForSequenceClassification and loads back identically",
  function()
    local dir = util.tmpdir()
    local rm = herd.model.load(fixture, { batch = 1, head = "scalar", seed = 3 })
    local before = all_scores(rm)
    rm:save(dir .. "/rm")
    local file = assert(io.open(dir .. "/rm/config.json"))
    local saved = herd.json.decode(file:read("a"))
    file:close()
    t.eq(#saved.architectures, 1)
    t.eq(saved.architectures[1], "LlamaForSequenceClassification")
    for _, head in ipairs{ "lm", "scalar" } do  -- "scalar" keeps the trained score.weight
      local loaded = herd.model.load(dir .. "/rm", { batch = 1, head = head, seed = 99 })
      t.eq(loaded:config().scalar_head, true)
      local after = all_scores(loaded)
      for i = 1, 8 do t.eq(after[i], before[i], head .. ": position " .. i) end
    end
    util.cleanup()
  end)

t.test("devices: a model says where it is; unknown and missing devices are named", function()
  local m = herd.model.new(config, { batch = 2, seed = 1, device = "cpu" })
  t.eq(m:device(), "cpu")
  t.match(tostring(m), "; cpu, f32%)")
  t.eq(m:to("cpu"), m, "to() returns the model")
  t.raises(function() herd.model.new(config, { device = "tpu" }) end,
    "device 'tpu': unknown %(use \"cpu\" or \"cuda\"%)")
  t.raises(function() m:to("tpu") end, "device 'tpu': unknown")
  t.raises(function() herd.model.new(config, { device = 1 }) end, "device must be a string")
  t.raises(function() herd.model.new(config, { batch = 2, sed = 1 }) end,
    "unknown option 'sed'")
  t.raises(function() herd.model.load(fixture, { device = "tpu" }) end, "device 'tpu'")
  local core = require "herd.core"
  if not core.build.cuda then
    t.raises(function() m:to("cuda") end, "device 'cuda': this herd was built without CUDA")
  elseif core.cuda_device_count() == 0 then
    t.raises(function() m:to("cuda") end, "device 'cuda': no CUDA device is visible")
  end
  t.eq(m:device(), "cpu", "a failed move leaves the model where it was")
  t.eq(m:forward(batch), herd.model.new(config, { batch = 2, seed = 1 }):forward(batch))
end)

t.test("forward_backward: the loss and gradients of forward then backward", function()
  local a = herd.model.new(config, { batch = 2, seed = 13 })
  local b = herd.model.new(config, { batch = 2, seed = 13 })
  local la = a:forward(batch)
  a:backward(batch)
  local lb = b:forward_backward(batch)
  t.near(lb, la, 1e-6 * la)
  local opt = { lr = 1e-3 }
  t.near(b:update(opt), a:update(opt), 1e-5, "the same gradient norm")
  t.near(b:forward(batch), a:forward(batch), 1e-5, "the same step")
end)

t.test("precision: bf16 matmuls train, stay near f32, and are named", function()
  local a = herd.model.new(config, { batch = 2, seed = 12 })
  local b = herd.model.new(config, { batch = 2, seed = 12, precision = "bf16" })
  t.eq(b:precision(), "bf16")
  t.match(tostring(b), "cpu, bf16%)")
  local la, lb = a:forward(batch), b:forward(batch)
  t.ok(la ~= lb and math.abs(la - lb) < 1e-2 * la, string.format("f32 %.7f bf16 %.7f", la, lb))
  local first = lb
  for _ = 1, 40 do lb = b:step(batch, { lr = 1e-2, weight_decay = 0 }) end
  t.ok(lb < 0.1 * first, "bf16 loss " .. first .. " -> " .. lb)
  t.eq(b:set_precision("f32"), b)
  t.eq(b:precision(), "f32")
  t.raises(function() b:set_precision("fp8") end, "invalid option 'fp8'")
  t.raises(function() herd.model.new(config, { precision = "f16" }) end,
    "precision is f16; use \"f32\" or \"bf16\"")
end)

local function has_gpu()
  local core = require "herd.core"
  return core.build.cuda and core.cuda_device_count() > 0
end

local function max_relative_difference(a, b)
  local worst = 0
  for i = 1, #a do
    worst = math.max(worst, math.abs(a[i] - b[i]) / math.max(math.abs(b[i]), 1e-3))
  end
  return worst
end

if not has_gpu() then
  t.skip("cuda: training steps, m:to and checkpoints match the CPU", "no GPU")
  t.skip("cuda: greedy generation gives the CPU's tokens (f32, bf16)", "no GPU")
else
  t.test("cuda: training steps, m:to and checkpoints match the CPU", function()
    local cpu = herd.model.new(config, { batch = 2, seed = 9 })
    local gpu = herd.model.new(config, { batch = 2, seed = 9, device = "cuda" })
    t.eq(gpu:device(), "cuda")
    -- Step 1's loss is computed from identical weights (f32: 1e-5). Later steps start from
    -- weights AdamW moved by lr * m / sqrt(v), where a gradient element near 0 may take either
    -- sign on either device: 1e-3 (t/cuda_model_test.c checks one step element by element).
    for step = 1, 3 do
      local a = cpu:step(batch, { lr = 1e-3 })
      local b = gpu:step(batch, { lr = 1e-3 })
      t.near(b, a, (step == 1 and 1e-5 or 1e-3) * a, "loss at step " .. step)
    end
    cpu:forward(batch)
    local logits_cpu = cpu:logits(batch):totable()
    gpu:forward(batch)
    t.ok(max_relative_difference(gpu:logits(batch):totable()[1][1], logits_cpu[1][1]) < 1e-4,
      "logits")
    local dir = util.tmpdir()
    gpu:save(dir .. "/gpu", { rng_seed = 1 })  -- saved from device memory
    local back = herd.model.load(dir .. "/gpu", { batch = 2 })
    t.eq(back:step_count(), 3)
    t.eq(back:forward(batch), gpu:to("cpu"):forward(batch), "the saved weights are the GPU's")
    t.eq(gpu:device(), "cpu")
    local moved = herd.model.load(dir .. "/gpu", { batch = 2, device = "cuda" })
    t.eq(moved:device(), "cuda")
    t.near(moved:forward(batch), back:forward(batch), 1e-5 * back:forward(batch))
    util.cleanup()
  end)

  -- A model trained to confidence on the batch (loss < 0.05), so that no greedy choice is a
  -- near tie that 1e-6 of summation order could flip.
  t.test("cuda: greedy generation gives the CPU's tokens (f32, bf16)", function()
    local dir = util.tmpdir()
    local trained = herd.model.new(config, { batch = 2, seed = 4 })
    for _ = 1, 40 do trained:step(batch, { lr = 1e-2, weight_decay = 0 }) end
    trained:save(dir .. "/trained")
    for _, precision in ipairs({ "f32", "bf16" }) do
      local c = herd.model.load(dir .. "/trained", { batch = 2, precision = precision })
      local g = herd.model.load(dir .. "/trained", { batch = 2, precision = precision,
                                                     device = "cuda" })
      local opts = { prompts = { { 1, 2, 3 }, { 8, 7 } }, k = 2, temperature = 0, max_new = 6 }
      local a, b = c:generate(opts), g:generate(opts)
      for i = 1, #a do
        t.eq(table.concat(b[i].tokens, ","), table.concat(a[i].tokens, ","),
          precision .. " sequence " .. i)
      end
    end
    util.cleanup()
  end)
end

t.done()
