-- herd.run and herd.json, in process.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"

local dir = util.tmpdir()
local db_path = dir .. "/runs.db"
-- herd.run reads HERD_DB when it first opens the database; point it at the temp dir.
local herd_run = require "herd.run"
herd_run.db_path = function() return db_path end
local herd = require "herd"
local core = herd.core

local function query(sql, ...)
  return (herd_run.database():query(sql, ...))
end

t.test("start, log with auto and explicit steps, finish", function()
  local run = herd.run.start{ name = "basic", config = { lr = 0.001, model = { dim = 64 } } }
  t.eq(run.name, "basic")
  run:log{ loss = 2.0 }
  run:log{ loss = 1.5 }
  run:log(10, { loss = 1.0, acc = 0.5 })
  run:log{ loss = 0.5 }
  run:finish()
  local rows = query("SELECT key, step, value FROM metrics WHERE run_id = ? ORDER BY key, step", run.id)
  local seen = {}
  for _, row in ipairs(rows) do seen[#seen + 1] = row.key .. "@" .. row.step .. "=" .. row.value end
  t.eq(table.concat(seen, " "), "acc@10=0.5 loss@1=2.0 loss@2=1.5 loss@10=1.0 loss@11=0.5")
  local status = query("SELECT status FROM runs WHERE id = ?", run.id)[1].status
  t.eq(status, "finished")
  local params = query("SELECT key, value FROM params WHERE run_id = ? ORDER BY key", run.id)
  t.eq(params[1].key, "lr")
  t.eq(params[1].value, 0.001)
  t.eq(params[2].key, "model.dim")
  t.eq(params[2].value, 64)
end)

t.test("config keeps exact numbers and types through JSON", function()
  local run = herd.run.start{ name = "json", config = { a = 0.2, b = 1.0, c = 3, d = 0.1 + 0.2 } }
  run:finish()
  local text = query("SELECT config_json FROM runs WHERE id = ?", run.id)[1].config_json
  t.eq(text, '{"a":0.2,"b":1.0,"c":3,"d":0.30000000000000004}')
  local back = core.json_decode(text)
  t.eq(math.type(back.b), "float")
  t.eq(math.type(back.c), "integer")
  t.eq(back.d, 0.1 + 0.2)
end)

t.test("json encode/decode round trip and errors", function()
  local value = { list = { 1, 2.5, "x", true }, nested = { k = { ["a b"] = "q\"\n" } }, empty = {} }
  local text = core.json_encode(value)
  t.eq(text, '{"empty":{},"list":[1,2.5,"x",true],"nested":{"k":{"a b":"q\\"\\n"}}}')
  local back = core.json_decode(text)
  t.eq(back.nested.k["a b"], "q\"\n")
  t.eq(back.list[2], 2.5)
  t.raises(function() core.json_encode({ f = print }) end, "value%.f: cannot store a function")
  t.raises(function() core.json_encode({ x = 0 / 0 }) end, "cannot be stored in JSON")
  t.raises(function() core.json_encode({ [true] = 1 }) end, "keys must be strings")
  local cycle = {}
  cycle.self = cycle
  t.raises(function() core.json_encode(cycle) end, "nested too deeply")
  t.raises(function() core.json_encode({ s = "\xff" }) end, "not valid UTF%-8")
  t.raises(function() core.json_decode("{oops") end, "invalid JSON at line 1")
end)

t.test("bad arguments name the problem", function()
  t.raises(function() herd.run.start{ nmae = "typo" } end, "unknown option 'nmae'")
  t.raises(function() herd.run.start{ config = 3 } end, "config must be a table")
  local run = herd.run.start{ name = "bad" }
  t.raises(function() run:log{ loss = "high" } end, "metric 'loss' must be a number %(got string%)")
  t.raises(function() run:log(1.5, { loss = 1 }) end, "step must be an integer")
  t.raises(function() run:param("", 1) end, "non%-empty")
  run:finish()
  t.raises(function() run:finish() end, "already finished")
  t.raises(function() run:log{ loss = 1 } end, "already finished")
end)

t.test("NaN metrics are stored as NaN, not NULL", function()
  local run = herd.run.start{ name = "nan" }
  run:log{ loss = 0 / 0 }
  run:log{ loss = math.huge }
  run:finish()
  local rows = query("SELECT typeof(value) AS type, value FROM metrics WHERE run_id = ? ORDER BY step", run.id)
  t.eq(rows[1].type, "text")
  t.eq(rows[1].value, "NaN")
  t.eq(rows[2].value, math.huge)
end)

t.test("<close> finishes a run, with the error when one escapes", function()
  local id
  do
    local run <close> = herd.run.start{ name = "closed" }
    id = run.id
  end
  t.eq(query("SELECT status FROM runs WHERE id = ?", id)[1].status, "finished")
  local ok = pcall(function()
    local run <close> = herd.run.start{ name = "closing-with-error" }
    id = run.id
    error("diverged at step 3")
  end)
  t.eq(ok, false)
  local row = query("SELECT status, error FROM runs WHERE id = ?", id)[1]
  t.eq(row.status, "failed")
  t.match(row.error, "diverged at step 3")
end)

t.test("params, tags, artifacts and child runs", function()
  local run = herd.run.start{ name = "parent", tags = { "baseline", "toy" } }
  run:param("tokens", 1234):param("opt", { lr = 1e-5, betas = { 0.9, 0.95 } })
  local file = dir .. "/weights.bin"
  util.write(file, "abc")
  run:artifact("weights", file, "checkpoint")
  local child = run:child{ name = "iteration-1" }
  child:finish()
  run:finish()
  t.eq(query("SELECT parent_id FROM runs WHERE id = ?", child.id)[1].parent_id, run.id)
  t.eq(#query("SELECT tag FROM tags WHERE run_id = ?", run.id), 2)
  local keys = {}
  for _, row in ipairs(query("SELECT key FROM params WHERE run_id = ? ORDER BY key", run.id)) do
    keys[#keys + 1] = row.key
  end
  t.eq(table.concat(keys, " "), "opt.betas.1 opt.betas.2 opt.lr tokens")
  local artifact = query("SELECT sha256, bytes FROM artifacts WHERE run_id = ?", run.id)[1]
  t.eq(artifact.sha256, core.sha256("abc"))
  t.eq(artifact.bytes, 3)
end)

t.test("recipe overrides win over the script's defaults", function()
  herd_run._rerun(7, "script.lua", nil, {}, { lr = 0.5, model = { layers = 4 } })
  local run = herd.run.start{ config = { lr = 0.1, model = { dim = 8, layers = 2 } } }
  t.eq(run.config.lr, 0.5)
  t.eq(run.config.model.dim, 8)
  t.eq(run.config.model.layers, 4)
  run:finish()
  t.eq(#query("SELECT 1 FROM tags WHERE run_id = ? AND tag = 'rerun-of:7'", run.id), 1)
  herd_run._rerun(nil, "script.lua", nil, {}, nil)
end)

t.test("the seed comes from the config and seeds math.random", function()
  local run = herd.run.start{ name = "seeded", config = { seed = 1234 } }
  local first = math.random()
  run:finish()
  t.eq(run.seed, 1234)
  math.randomseed(1234)
  t.eq(math.random(), first)
  t.eq(query("SELECT seed FROM runs WHERE id = ?", run.id)[1].seed, 1234)
end)

util.cleanup()
t.done()
