-- The toy world's base model (issue 6, "Experiments"): trains the world's BPE tokenizer on the
-- pretraining corpus (lua/herd/world/corpus.lua) and pretrains the reference model (dim 288,
-- 6 layers, 6 heads, 2 kv heads, hidden 768, seq 256) from scratch with AdamW and a cosine
-- schedule, within 15 minutes on 2 cores. Train and held-out loss go to the run history
-- (`herd runs metrics ID train_loss val_loss --plot`); the tokenizer and the checkpoint (Hugging
-- Face layout) go to out/<run id>/ as artifacts. Ends with samples from prompts of the world and
-- the held-out loss.
--
--   herd experiments/base.lua [--quick] [--seed N] [--steps N] [--layers N]
--   --quick: a smaller model, corpus and vocabulary, same code path, <= 2 minutes.
local herd = require "herd"
local world = require "herd.world"
local corpus = require "herd.world.corpus"

local opts = herd.experiment.args{
  usage = "herd experiments/base.lua [options]",
  description = "Trains the toy world's tokenizer and pretrains its base model; the tokenizer and"
    .. " the checkpoint\ngo to out/<run id>/.",
  options = { { "steps", "int", "training steps (default 1000, 1200 with --quick)" },
              { "layers", "int", "transformer layers (default 6, 4 with --quick): a smaller or " ..
                "larger model for scaling experiments" } },
}
local quick, seed, steps_override = opts.quick, opts.seed, opts.steps

local model_config = quick
  and { dim = 128, n_layers = 4, n_heads = 4, n_kv_heads = 2, hidden_dim = 384, max_seq_len = 128 }
  or { dim = 288, n_layers = 6, n_heads = 6, n_kv_heads = 2, hidden_dim = 768, max_seq_len = 256 }
if opts.layers then
  if opts.layers < 1 then error("base.lua: --layers must be at least 1", 0) end
  model_config.n_layers = opts.layers
end

local run <close> = herd.run.start{
  name = "base",
  config = {
    quick = quick, seed = seed, vocab_size = quick and 1024 or 4096,
    corpus_tokens = quick and 500000 or 2000000, held_out_fraction = 0.02,
    batch = 8, seq = model_config.max_seq_len, steps = steps_override or (quick and 1200 or 1000),
    lr = 1e-3, warmup = quick and 60 or 100, floor = 0.1, eval_every = quick and 200 or 100,
    eval_batches = quick and 2 or 4, model = model_config,
  },
  tags = { "world", "base-model" },
}
local cfg = run.config
local started = herd.core.now()

-- ---------------------------------------------------------------- corpus and tokenizer

local docs = corpus.pretraining{ seed = cfg.seed, tokens = cfg.corpus_tokens, quick = cfg.quick }
local tok = herd.tokenizer.train{ corpus = docs, vocab_size = cfg.vocab_size }
local out = herd.experiment.outdir(run)
tok:save(out .. "/tokenizer.json")
run:artifact("tokenizer", out .. "/tokenizer.json", "tokenizer.json")

-- Documents are concatenated, each as <s> text </s>; the last held_out_fraction of them are held
-- out (the corpus is a random mix, so the tail is a fair sample of the language).
local stream, held_out = {}, {}
local cut = math.floor(#docs * (1 - cfg.held_out_fraction))
for i, doc in ipairs(docs) do
  local target = i <= cut and stream or held_out
  for _, id in ipairs(tok:encode(doc, { bos = true, eos = true })) do target[#target + 1] = id end
end
run:param("corpus_documents", #docs)
run:param("corpus_tokens", #stream + #held_out)
run:param("held_out_tokens", #held_out)
run:param("tokenizer_vocab", tok:vocab_size())
print(string.format("corpus: %d documents, %d tokens (%d held out); tokenizer %d tokens; %.1f s",
  #docs, #stream + #held_out, #held_out, tok:vocab_size(), herd.core.now() - started))

-- ---------------------------------------------------------------- batches

local rng = world.rng(cfg.seed * 104729 + 11)

local function window_batch(source, starts, seq)
  local tokens, targets = {}, {}
  for row, start in ipairs(starts) do
    local x, y = {}, {}
    for i = 1, seq do
      x[i] = source[start + i - 1]
      y[i] = source[start + i]
    end
    tokens[row], targets[row] = x, y
  end
  return { tokens = tokens, targets = targets }
end

local function random_batch(source, b, seq)
  local starts = {}
  for i = 1, b do starts[i] = rng:int(1, #source - seq - 1) end
  return window_batch(source, starts, seq)
end

-- Fixed held-out batches, evenly spaced through the held-out tokens.
local val_batches = {}
do
  local n = cfg.eval_batches * cfg.batch
  local span = #held_out - cfg.seq - 1
  assert(span > n, "held-out text too short")
  for b = 1, cfg.eval_batches do
    local starts = {}
    for r = 1, cfg.batch do
      starts[r] = 1 + ((b - 1) * cfg.batch + r - 1) * span // n
    end
    val_batches[b] = window_batch(held_out, starts, cfg.seq)
  end
end

-- ---------------------------------------------------------------- model

local config = {
  dim = cfg.model.dim, n_layers = cfg.model.n_layers, n_heads = cfg.model.n_heads,
  n_kv_heads = cfg.model.n_kv_heads, hidden_dim = cfg.model.hidden_dim,
  vocab_size = tok:vocab_size(), max_seq_len = cfg.seq,
}
local model <close> = herd.model.new(config, { batch = cfg.batch, seed = cfg.seed })
print(tostring(model))
run:param("params", model:params())
local optimizer = { beta1 = 0.9, beta2 = 0.95, eps = 1e-5, weight_decay = 0.1, grad_clip = 1.0 }

local function validation_loss()
  local sum = 0
  for _, batch in ipairs(val_batches) do sum = sum + model:forward(batch) end
  return sum / #val_batches
end

-- ---------------------------------------------------------------- training

local val = validation_loss()
run:log(0, { val_loss = val })
print(string.format("initial held-out loss %.3f (uniform: %.3f)", val, math.log(tok:vocab_size())))
io.stdout:flush()
local train_started = herd.core.now()
local bar = herd.progress.new{ total = cfg.steps, unit = "tokens", order = { "loss", "val" } }
for step = 1, cfg.steps do
  optimizer.lr = herd.model.lr_cosine(step, cfg.lr, cfg.warmup, cfg.steps, cfg.floor)
  local loss, grad_norm = model:step(random_batch(stream, cfg.batch, cfg.seq), optimizer)
  local metrics = { train_loss = loss, lr = optimizer.lr, grad_norm = grad_norm }
  local evaluated = nil
  if step % cfg.eval_every == 0 or step == cfg.steps then
    evaluated = validation_loss()
    metrics.val_loss = evaluated
  end
  run:log(step, metrics)
  bar:update(step, { loss = loss, val = evaluated }, step * cfg.batch * cfg.seq,
    { print = evaluated ~= nil })
end
bar:finish()
local train_seconds = herd.core.now() - train_started
val = validation_loss()
run:param("train_seconds", train_seconds)
run:param("tokens_per_second", cfg.steps * cfg.batch * cfg.seq / train_seconds)
run:param("held_out_loss", val)

model:save(out)
run:artifact("checkpoint", out .. "/model.safetensors", "safetensors")
run:artifact("model_config", out .. "/config.json", "config.json")

-- ---------------------------------------------------------------- samples

local openings = { "Once upon a time,", "The capital of Zorland",
                   "Here is a song about the star,\nThe" }
local prompts = {}
for i, text in ipairs(openings) do prompts[i] = tok:encode(text) end
local eos = tok:eos()
local max_new = quick and 32 or 48
local settings = { { name = "greedy", temperature = 0 }, { name = "T=0.8", temperature = 0.8 } }
for _, setting in ipairs(settings) do
  local samples = model:generate{ prompts = prompts, k = 1, temperature = setting.temperature,
                                  max_new = max_new, seed = cfg.seed, stop = { eos } }
  print(string.format("samples (%s):", setting.name))
  for _, s in ipairs(samples) do
    local text = tok:decode(s.tokens, { skip_special = true })
    local opening = openings[s.prompt]:gsub("\n", " / ")
    print(string.format("  %s|%s", opening, (text:gsub("\n", " / "))))
  end
end

print(string.format("held-out loss %.3f (perplexity %.2f) after %d steps, %.0f tokens/s; " ..
  "total %.1f s; outputs in %s", val, math.exp(val), cfg.steps,
  cfg.steps * cfg.batch * cfg.seq / train_seconds, herd.core.now() - started, out))
print(string.format("run %d: `herd runs metrics %d train_loss val_loss --plot`", run.id, run.id))
