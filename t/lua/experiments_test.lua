-- The experiment scripts' --quick versions, run with the real binary in a temporary directory:
-- each run is recorded as finished with its seed in the config, and its outputs lie under
-- out/<run id>/ and are recorded as artifacts. (base.lua --quick is the slow one: 91 s on 2 cores.)
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"
local core = require "herd.core"

local q = util.quote
local experiments = (os.getenv("HERD_TEST_DIR") or "t") .. "/../experiments"
-- Absolute, since the scripts run from the temporary directory.
if experiments:sub(1, 1) ~= "/" then
  local handle = io.popen("pwd")
  experiments = handle:read("l") .. "/" .. experiments
  handle:close()
end
local dir = util.tmpdir()
local env = { HERD_DB = dir .. "/runs.db" }

local function run_script(name, args)
  return util.run(dir, q(experiments .. "/" .. name) .. " " .. args, env)
end

-- The newest run of the history (or the newest of that name), with its config decoded and its
-- artifacts by name.
local function last_run(name)
  local db = core.runlog_open(env.HERD_DB, false)
  local row = name and db:query("SELECT * FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1", name)[1]
    or db:query("SELECT * FROM runs ORDER BY id DESC LIMIT 1")[1]
  local artifacts = {}
  for _, a in ipairs(db:query("SELECT * FROM artifacts WHERE run_id = ?", row.id)) do
    artifacts[a.name] = a
  end
  row.params = {}
  for _, p in ipairs(db:query("SELECT key, value FROM params WHERE run_id = ?", row.id)) do
    row.params[p.key] = p.value
  end
  db:close()
  row.config = row.config_json and core.json_decode(row.config_json) or {}
  row.artifacts = artifacts
  return row
end

-- Every artifact is a file under <dir>/out/<id>/ with the recorded size and hash.
local function check_artifacts(run, expected)
  local outdir = dir .. "/out/" .. run.id .. "/"
  for name, file in pairs(expected) do
    local artifact = run.artifacts[name]
    t.ok(artifact, "artifact '" .. name .. "' recorded")
    t.eq(artifact.path, outdir .. file, "artifact '" .. name .. "' path")
    local text = util.read(artifact.path)
    t.ok(text, artifact.path .. " exists")
    t.eq(artifact.bytes, #text, name .. " size")
    t.eq(artifact.sha256, core.sha256(text), name .. " sha256")
  end
end

t.test("linear_fit --quick --seed 3: recorded, out/<id>/model.json, the same result twice", function()
  local code, stdout, stderr = run_script("linear_fit.lua", "--quick --seed 3")
  t.eq(code, 0, stderr)
  local run = last_run()
  t.eq(run.status, "finished")
  t.eq(run.seed, 3)
  t.eq(run.config.seed, 3)
  t.eq(run.config.quick, true)
  t.eq(run.config.steps, 100)
  check_artifacts(run, { model = "model.json" })
  local result = stdout:match("a = %S+ %(true 3%.0%), b = %S+ %(true %-2%.0%)")
  t.ok(result, "result line in " .. stdout)
  local again
  code, again, stderr = run_script("linear_fit.lua", "--quick --seed 3")
  t.eq(code, 0, stderr)
  -- Only the run ids differ.
  local function without_ids(text) return (text:gsub("run %d+", "run N"):gsub("show %d+", "show N")) end
  t.eq(without_ids(again), without_ids(stdout), "same seed, same output")
  code, again = run_script("linear_fit.lua", "--quick --seed 4")
  t.eq(code, 0)
  t.ok(not again:find(result, 1, true), "another seed, another fit")
end)

t.test("train_reference --quick: small model, artifacts, corpus files as arguments", function()
  local corpus = dir .. "/corpus.txt"
  local text = {}
  for i = 1, 400 do
    text[i] = string.format("Line %d: the quick brown fox jumps over the lazy dog %d times.", i, i % 7)
  end
  util.write(corpus, table.concat(text, "\n"))
  local code, stdout, stderr = run_script("train_reference.lua", "--quick " .. q(corpus))
  t.eq(code, 0, stderr)
  t.match(stdout, "corpus: 1 files")
  t.match(stdout, "step 200/200  train %d")
  local run = last_run()
  t.eq(run.status, "finished")
  t.eq(run.config.quick, true)
  t.eq(run.config.seed, 1)
  t.eq(run.config.vocab_size, 512)
  t.eq(run.config.model.dim, 64)
  t.eq(run.config.model.n_layers, 2)
  check_artifacts(run, { tokenizer = "tokenizer.json", checkpoint = "model.safetensors",
                         model_config = "config.json" })
end)

local base_run

t.test("base --quick: held-out loss below uniform, artifacts in out/<id>/", function()
  local code, stdout, stderr = run_script("base.lua", "--quick --seed 3")
  t.eq(code, 0, stderr)
  local run = last_run()
  t.eq(run.status, "finished")
  t.eq(run.name, "base")
  t.eq(run.config.seed, 3)
  t.eq(run.config.quick, true)
  base_run = run.id
  check_artifacts(run, { tokenizer = "tokenizer.json", checkpoint = "model.safetensors",
                         model_config = "config.json" })
  local uniform = tonumber(stdout:match("%(uniform: ([%d.]+)%)"))
  local held_out = tonumber(stdout:match("\nheld%-out loss ([%d.]+) %(perplexity"))
  t.ok(uniform and held_out, "losses printed in " .. stdout)
  t.ok(held_out < uniform, string.format("held-out loss %.3f < uniform %.3f", held_out, uniform))
  local steps = run.config.steps
  t.match(stdout, "step " .. steps .. "/" .. steps .. "  loss [%d.]+  val [%d.]+  %d+ tokens/s  %d+:%d%d elapsed  ETA 0:00\n")
  t.match(stdout, "outputs in out/" .. run.id .. "\n")
end)

t.test("world_check --quick: reads the base run, passes its checks, writes loadable batches", function()
  local code, stdout, stderr = run_script("world_check.lua", "--quick --seed 2")
  t.eq(code, 0, stderr)
  local run = last_run()
  t.eq(run.status, "finished")
  t.eq(run.name, "world-check")
  t.eq(run.config.seed, 2)
  t.match(stdout, "%(a%) base model: run " .. tostring(base_run) .. ",")
  t.match(stdout, "agreement falls monotonically across the four levels: yes")
  t.match(stdout, "within tolerance")
  check_artifacts(run, { batch1 = "batch1.jsonl", batch5 = "batch5.jsonl",
                         batch0_base = "batch0_base.jsonl", source_shp = "source_shp.jsonl",
                         report = "world_check.md" })
  local herd = require "herd"
  local batch = herd.data.jsonl(run.artifacts.batch1.path, { schema = "preference" })
  t.ok(#batch > 1900, "batch 1 has its pairs")
  t.eq(batch:describe().batch[1], #batch)
  t.eq(util.read(run.artifacts.report.path):match("^# World check"), "# World check")
  -- a missing base run is a one-line error that says what to run
  local empty = { HERD_DB = dir .. "/empty.db" }
  local code2, _, stderr2 = util.run(dir, q(experiments .. "/world_check.lua") .. " --quick", empty)
  t.ok(code2 ~= 0)
  t.match(stderr2, "^herd: no finished 'base' run in .*empty%.db; run `herd experiments/base%.lua " ..
    "%-%-quick` first\n$")
end)

t.test("sft --quick: a chat model from the base run, judged before and after", function()
  local code, stdout, stderr = run_script("sft.lua", "--quick --seed 2")
  t.eq(code, 0, stderr)
  local run = last_run("sft")
  t.eq(run.status, "finished")
  t.eq(run.config.seed, 2)
  check_artifacts(run, { checkpoint = "model.safetensors", tokenizer = "tokenizer.json",
                         report = "sft.md" })
  local before, after = stdout:match("| helpfulness %(helpfulness prompts%) | ([%d.]+) | ([%d.]+) |")
  t.ok(before and after, "helpfulness before and after in " .. stdout)
  t.ok(tonumber(after) > tonumber(before), "SFT raises helpfulness: " .. before .. " -> " .. after)
end)

t.test("rm_train --quick: two reward models, Tables 7 and 8, score histograms", function()
  local code, stdout, stderr = run_script("rm_train.lua", "--quick")
  t.eq(code, 0, stderr)
  local run = last_run("rm-train")
  t.eq(run.status, "finished")
  check_artifacts(run, { helpfulness_rm = "helpfulness_rm/model.safetensors",
                         safety_rm = "safety_rm/model.safetensors", report = "rm_train.md",
                         scores_helpfulness = "scores_helpfulness.svg" })
  t.match(stdout, "| helpfulness | %d+%.%d %[")
  t.match(stdout, "| safety RM / meta_safety | ")
  t.eq(last_run("safety-rm").status, "finished", "each RM is a child run")
  local herd = require "herd"
  t.ok(#herd.data.jsonl(dir .. "/out/" .. run.id .. "/data/meta_helpful.test.jsonl") > 10,
    "the test split is written")
end)

t.test("rm_margin and rm_safety_aux --quick report intervals over seeds", function()
  local code, stdout, stderr = run_script("rm_margin.lua", "--quick --seeds 2")
  t.eq(code, 0, stderr)
  t.match(stdout, "| small | [%d.]+ %[[%d.-]+, [%d.-]+%]")
  check_artifacts(last_run("rm-margin"), { report = "rm_margin.md",
                                           score_distribution = "score_distribution.svg" })
  code, stdout, stderr = run_script("rm_safety_aux.lua", "--quick --seeds 2")
  t.eq(code, 0, stderr)
  t.match(stdout, "| %+ auxiliary loss, weight 1 | [%d.]+ %[")
  t.match(stdout, "Weight 1: unsafe recall [%+%-][%d.]+ points")
  local aux = last_run("rm-safety-aux")
  t.ok(aux.params.aux1_unsafe_recall and aux.params.baseline_unsafe_recall, "recalls recorded")
  code, stdout, stderr = run_script("rm_safety_aux.lua", "--quick --weights 1,x")
  t.eq(code, 1)
  t.match(stderr, "%-%-weights wants positive numbers, got 'x'")
end)

t.test("rm_scaling --quick: two chat-model sizes, accuracy against batches", function()
  -- a smaller chat model: a 1-layer base and its SFT
  local code, _, stderr = run_script("base.lua", "--quick --layers 1 --steps 200")
  t.eq(code, 0, stderr)
  local small_base = last_run("base")
  t.eq(small_base.config.model.n_layers, 1)
  code, _, stderr = run_script("sft.lua", "--quick --base " .. small_base.id)
  t.eq(code, 0, stderr)
  local small_sft = last_run("sft")
  local code2, stdout, stderr2 = run_script("rm_scaling.lua", "--quick")
  t.eq(code2, 0, stderr2)
  local run = last_run("rm-scaling")
  t.eq(run.status, "finished")
  t.match(stdout, "| small %([%d.]+M, sft run " .. small_sft.id .. "%) | [%d.]+ %[")
  t.match(stdout, "| large %([%d.]+M, sft run %d+%) | [%d.]+ %[")
  check_artifacts(run, { figure = "rm_scaling.svg", report = "rm_scaling.md" })
end)

t.test("a bad option stops a script before it records anything but the failure", function()
  local code, stdout, stderr = run_script("base.lua", "--quick --stpes 3")
  t.ok(code ~= 0, "exit code")
  t.eq(stdout, "")
  t.match(stderr, "^herd: [^\n]*base%.lua: unknown option '%-%-stpes' %(options: %-%-quick, %-%-seed N,"
    .. " %-%-steps N, %-%-layers N, %-%-help%)\n$")
  t.eq(last_run().status, "failed")
end)

util.cleanup()
t.done()
