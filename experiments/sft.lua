-- Supervised fine-tuning of the toy world's base model (Llama 2 section 3.1): the world's
-- helpfulness and safety demonstrations, rendered with the chat template and packed, with the
-- loss on answer tokens only. Reports the oracle helpfulness and safety of greedy samples on
-- held-out prompts before and after, and the held-out answer loss; saves the chat model
-- (Hugging Face layout, with its tokenizer) under out/<run id>/.
--
--   herd experiments/sft.lua [--quick] [--seed N] [--base RUN_ID] [--demos N] [--epochs N]
local herd = require "herd"
local world = require "herd.world"
local corpus = require "herd.world.corpus"

local args = herd.experiment.args{
  usage = "herd experiments/sft.lua [options]",
  description = "Fine-tunes the toy world's base model on its demonstrations (section 3.1).",
  options = {
    { "base", "int", "run id of the base model (default: the latest finished 'base' run)" },
    { "demos", "int", "number of demonstrations (default 3000, --quick 800)" },
    { "epochs", "int", "epochs over the demonstrations (default 2, --quick 1)" },
  },
}

local run <close> = herd.run.start{
  name = "sft",
  config = {
    quick = args.quick, seed = args.seed, base_run = args.base,
    demos = args.demos or (args.quick and 800 or 3000),
    epochs = args.epochs or (args.quick and 1 or 2),
    eval_prompts = args.quick and 24 or 100, max_new = 64, preset = "toy",
    rows = 16,
  },
  tags = { "world", "sft" },
}
local cfg = run.config
local out = herd.experiment.outdir(run)

local base = herd.experiment.find_run{ name = "base", id = cfg.base_run,
  artifacts = { "checkpoint", "tokenizer" },
  hint = "herd experiments/base.lua" .. (cfg.quick and " --quick" or "") }
run:param("base_run", base.id)
local tok = herd.tokenizer.load(base.artifacts.tokenizer)
local model <close> = herd.model.load(base.dir, { batch = cfg.rows })
run:param("params", model:params()) -- rm_scaling.lua tells model sizes apart by it
print(string.format("base model: run %d, %s; held-out loss %s", base.id, tostring(model),
  tostring(base.params.held_out_loss)))

local demos = corpus.demonstrations{ seed = cfg.seed, n = cfg.demos }
local prompts = corpus.eval_prompts{ seed = cfg.seed, n = cfg.eval_prompts }
-- held-out demonstrations: the eval prompts with their reference answers
local held_out = {}
for _, set in ipairs{ prompts.helpful, prompts.safety } do
  for _, dialog in ipairs(set) do
    local messages = {}
    for i, m in ipairs(dialog) do messages[i] = m end
    messages[#messages + 1] = { role = "assistant", content = world.reference_answer(dialog) }
    held_out[#held_out + 1] = messages
  end
end

local function measure(label)
  local policy = world.model_policy{ model = model, tokenizer = tok, max_new = cfg.max_new }
  local h = world.evaluate(policy, prompts.helpful, { temperature = 0, seed = cfg.seed })
  local s = world.evaluate(policy, prompts.safety, { temperature = 0, seed = cfg.seed })
  local loss = herd.sft.loss(model, tok, held_out)
  local m = { helpfulness = h.helpfulness, safety_prompt_helpfulness = s.helpfulness,
              unsafe = s.unsafe, refusals = s.refusals, false_refusals = h.refusals,
              answer_loss = loss }
  for k, v in pairs(m) do run:param(label .. "_" .. k, v) end
  m.samples = h.responses
  m.safety_samples = s.responses
  return m
end

io.write("measuring the base model ... ")
io.flush()
local before = measure("before")
print("done")

local stats = herd.sft.train(model, tok, demos, { preset = cfg.preset, epochs = cfg.epochs,
                                                  seed = cfg.seed, run = run })
print(string.format("packed %d demonstrations into %d rows of %d tokens (%d answer tokens, " ..
  "%d truncated, %d skipped); %d steps", stats.stats.samples, stats.stats.rows, stats.stats.seq,
  stats.stats.trained, stats.stats.truncated, stats.stats.skipped, stats.steps))

local after = measure("after")
model:save(out)
tok:save(out .. "/tokenizer.json")
run:artifact("checkpoint", out .. "/model.safetensors", "safetensors")
run:artifact("tokenizer", out .. "/tokenizer.json", "tokenizer.json")

local lines = {}
local function say(fmt, ...)
  local line = string.format(fmt, ...)
  print(line)
  lines[#lines + 1] = line
end
say("")
say("# SFT of base run %d (run %d, seed %d%s)", base.id, run.id, cfg.seed,
  cfg.quick and ", quick" or "")
say("")
say("Greedy samples on %d held-out helpfulness and %d safety prompts, judged by the oracles:",
  #prompts.helpful, #prompts.safety)
say("")
say("| | base | SFT |")
say("|---|---|---|")
say("| helpfulness (helpfulness prompts) | %.3f | %.3f |", before.helpfulness, after.helpfulness)
say("| false refusals (helpfulness prompts) | %.1f%% | %.1f%% |", 100 * before.false_refusals,
  100 * after.false_refusals)
say("| helpfulness (safety prompts) | %.3f | %.3f |", before.safety_prompt_helpfulness,
  after.safety_prompt_helpfulness)
say("| unsafe answers (safety prompts) | %.1f%% | %.1f%% |", 100 * before.unsafe, 100 * after.unsafe)
say("| refusals (safety prompts) | %.1f%% | %.1f%% |", 100 * before.refusals, 100 * after.refusals)
say("| held-out answer loss | %.3f | %.3f |", before.answer_loss, after.answer_loss)
say("")
say("Samples (base -> SFT):")
for i = 1, 4 do
  local dialog = prompts.helpful[i]
  say("- %s", dialog[#dialog].content)
  say("    base: %s", (before.samples[i]:gsub("\n", " / ")))
  say("    SFT:  %s", (after.samples[i]:gsub("\n", " / ")))
end
for i = 1, 2 do
  local dialog = prompts.safety[i]
  say("- %s", dialog[#dialog].content)
  say("    SFT:  %s", (after.safety_samples[i]:gsub("\n", " / ")))
end
local report = out .. "/sft.md"
local file = assert(io.open(report, "w"))
file:write(table.concat(lines, "\n"), "\n")
file:close()
run:artifact("report", report, "markdown")
print(string.format("\nchat model and report in %s", out))
