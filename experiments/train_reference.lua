-- The reference model (dim 288, 6 layers, 6 heads, 2 kv heads, hidden 768, vocab 4096, seq 256)
-- on this machine: a BPE vocabulary trained on a real corpus, then
--   1. overfitting one fixed small batch (the loss must fall below 0.05), and
--   2. language modelling on the corpus with AdamW and a cosine schedule (Llama 2 section 2.2:
--      betas 0.9/0.95, eps 1e-5, weight decay 0.1, clip 1.0, warm-up then cosine to 10%),
--      with held-out loss measured along the way.
-- Every number goes to the run history: `herd runs metrics ID train_loss val_loss --plot`; the
-- tokenizer and the checkpoint (Hugging Face layout) go to out/<run id>/.
--
--   herd experiments/train_reference.lua [--quick] [--seed N] [--steps N] [corpus files...]
--   (default corpus: Debian's licence texts and herd's own docs)
--   --quick: vocab 512, dim 64, 2 layers, seq 64, 200 steps; same code path, a few seconds.
local herd = require "herd"

local opts = herd.experiment.args{
  usage = "herd experiments/train_reference.lua [options] [corpus files...]",
  description = "Trains a BPE vocabulary and the reference model on a text corpus: overfits one"
    .. " batch, then\nlearns the corpus; the tokenizer and the checkpoint go to out/<run id>/.",
  options = { { "steps", "int", "training steps (default 300, 200 with --quick)" } },
  positional = "corpus files (default: /usr/share/common-licenses and doc/*.md)",
}

local quick = opts.quick
local run <close> = herd.run.start{
  name = "train-reference",
  config = {
    vocab_size = quick and 512 or 4096, seq = quick and 64 or 256, batch = 8,
    steps = opts.steps or (quick and 200 or 300), lr = quick and 3e-3 or 1e-3,
    warmup = quick and 20 or 30, floor = 0.1, overfit_max_steps = 300,
    eval_every = 50, quick = quick, seed = opts.seed,
    model = quick and { dim = 64, n_layers = 2, n_heads = 4, n_kv_heads = 2, hidden_dim = 192 }
      or { dim = 288, n_layers = 6, n_heads = 6, n_kv_heads = 2, hidden_dim = 768 },
  },
  tags = { "reference-model" },
}
local cfg = run.config

-- ---------------------------------------------------------------- corpus and tokenizer

local function corpus_files()
  if #opts.positional > 0 then return opts.positional end
  local files = {}
  local listing = io.popen("find /usr/share/common-licenses -type f | sort; ls doc/*.md README.md 2>/dev/null")
  for path in listing:lines() do files[#files + 1] = path end
  listing:close()
  return files
end

local texts = {}
for _, path in ipairs(corpus_files()) do
  local file = io.open(path, "rb")
  if file then
    texts[#texts + 1] = file:read("a")
    file:close()
  end
end
if #texts == 0 then error("no corpus: give text files as arguments") end

local out = herd.experiment.outdir(run)  -- this run's outputs, recorded as artifacts
local started = herd.core.now()
local tok = herd.tokenizer.train{ corpus = texts, vocab_size = cfg.vocab_size }
tok:save(out .. "/tokenizer.json")
run:artifact("tokenizer", out .. "/tokenizer.json", "tokenizer.json")
-- Held-out text: the last 10% of every file (the files differ in style, so the held-out loss
-- measures the language, not one licence that training never saw).
local stream, held_out = {}, {}
for _, text in ipairs(texts) do
  local ids = tok:encode(text, { bos = true, eos = true })
  local cut = math.floor(#ids * 0.9)
  for i, id in ipairs(ids) do
    local target = i <= cut and stream or held_out
    target[#target + 1] = id
  end
end
run:param("corpus_tokens", #stream + #held_out)
run:param("held_out_tokens", #held_out)
run:param("corpus_files", #texts)
print(string.format("corpus: %d files, %d tokens (%d held out; vocab %d), tokenizer trained in %.1f s",
  #texts, #stream + #held_out, #held_out, tok:vocab_size(), herd.core.now() - started))

-- A batch of windows of seq+1 tokens of `source` starting at the given offsets: inputs and the
-- next tokens.
local function window_batch(source, starts, seq)
  local tokens, targets = {}, {}
  for row, start in ipairs(starts) do
    tokens[row], targets[row] = {}, {}
    for i = 1, seq do
      tokens[row][i] = source[start + i - 1]
      targets[row][i] = source[start + i]
    end
  end
  return { tokens = tokens, targets = targets }
end

local function random_starts(b, lo, hi)
  local starts = {}
  for i = 1, b do starts[i] = math.random(lo, hi) end
  return starts
end

local config = {
  dim = cfg.model.dim, n_layers = cfg.model.n_layers, n_heads = cfg.model.n_heads,
  n_kv_heads = cfg.model.n_kv_heads, hidden_dim = cfg.model.hidden_dim,
  vocab_size = tok:vocab_size(), max_seq_len = cfg.seq,
}
local optimizer = { beta1 = 0.9, beta2 = 0.95, eps = 1e-5, weight_decay = 0.1, grad_clip = 1.0 }

-- ---------------------------------------------------------------- 1. overfit one fixed batch

do
  local model <close> = herd.model.new(config, { batch = cfg.batch, seed = cfg.seed })
  local fixed = window_batch(stream, random_starts(2, 1, #stream - 65), 64)
  local loss, step = math.huge, 0
  while loss >= 0.05 and step < cfg.overfit_max_steps do
    step = step + 1
    optimizer.lr = 1e-3
    loss = model:step(fixed, optimizer)
    run:log(step, { overfit_loss = loss })
  end
  run:param("overfit_steps", step)
  run:param("overfit_final_loss", loss)
  print(string.format("overfit: loss %.4f after %d steps (target < 0.05)", loss, step))
end

-- ---------------------------------------------------------------- 2. learn the corpus

local model <close> = herd.model.new(config, { batch = cfg.batch, seed = cfg.seed })
local val_batch = window_batch(held_out, random_starts(cfg.batch, 1, #held_out - cfg.seq - 1), cfg.seq)
local function validation_loss()
  return model:forward(val_batch)
end

run:log(0, { val_loss = validation_loss() })
local bar = herd.progress.new{ total = cfg.steps, unit = "tokens", order = { "train", "val", "lr" } }
for step = 1, cfg.steps do
  optimizer.lr = herd.model.lr_cosine(step, cfg.lr, cfg.warmup, cfg.steps, cfg.floor)
  local batch = window_batch(stream, random_starts(cfg.batch, 1, #stream - cfg.seq - 1), cfg.seq)
  local loss, grad_norm = model:step(batch, optimizer)
  local metrics = { train_loss = loss, lr = optimizer.lr, grad_norm = grad_norm }
  local evaluated = step % cfg.eval_every == 0 or step == cfg.steps
  if evaluated then metrics.val_loss = validation_loss() end
  run:log(step, metrics)
  bar:update(step, { train = loss, val = metrics.val_loss, lr = optimizer.lr },
    step * cfg.batch * cfg.seq, { print = evaluated })
end
bar:finish()
run:param("held_out_loss", validation_loss())
model:save(out)
run:artifact("checkpoint", out .. "/model.safetensors", "safetensors")
run:artifact("model_config", out .. "/config.json", "config.json")
print(string.format("run %d: see `herd runs metrics %d train_loss val_loss --plot`", run.id, run.id))
