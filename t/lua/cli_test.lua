-- `herd runs ...` against a run history built through herd.core, run as a subprocess
-- (util.run), plus herd.plot and the export literal in-process.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"
local core = require "herd.core"
local plot = require "herd.plot"
local cli = require "herd.cli"

local q = util.quote
local dir = util.tmpdir()
local db_path = dir .. "/runs.db"

-- ---------------------------------------------------------------- the fixture history

local SFT_CONFIG = {
  lr = 0.001,
  ppo = { beta = 0.01, clip = 0.2 },
  layers = { 64, 64 },
  name = "x y",
  one = 1.0,
  big = 9007199254740993,
  tiny = 1e-300,
  ["end"] = true,
  ["a-b"] = "quote \" backslash \\ newline \n tab \t",
  ["1"] = "a string key that looks like an index",
  nested = { deeper = { list = { { k = 1 }, { k = 2.5 } } } },
  nothing = core.null,
}
local SFT_ARGS = { "--steps", "30", "two words" }
local RM_CONFIG = { lr = 0.002, ppo = { beta = 0.01, clip = 0.3 }, extra = true }

local function sha256_hex(text)
  return core.sha256(text)
end

-- Starts a run in another process that exits without finishing it: the run stays 'running'
-- with a dead pid, as after a crash.
local CRASH_SCRIPT = [[
local core = require "herd.core"
local db = core.runlog_open(arg[1], true)
local run = db:start { name = arg[2] }
run:log(1, "loss", 3.5)
run:flush()
os.exit(0, false)
]]

local function start_and_die(path, name)
  util.write(dir .. "/crash.lua", CRASH_SCRIPT)
  local code, _, stderr = util.run(dir, "--no-record crash.lua " .. q(path) .. " " .. q(name))
  assert(code == 0, "crash.lua failed: " .. tostring(stderr))
end

local function build_history(path)
  local db = core.runlog_open(path, true)
  local sft = db:start { name = "sft-base", script = "experiments/sft.lua",
    script_sha256 = sha256_hex("sft"), git_rev = "0123abcd", git_dirty = true, seed = 7,
    args_json = core.json_encode(SFT_ARGS),
    config_json = core.json_encode(SFT_CONFIG) }
  for step = 1, 30 do
    sft:log(step, "loss", 2 / step)
    if step % 2 == 0 then sft:log(step, "acc", step / 30) end
  end
  sft:log(31, "loss", 0 / 0)
  sft:add_tag("baseline")
  sft:add_tag("cpu")
  util.write(dir .. "/model.bin", "hello")
  sft:artifact("model", dir .. "/model.bin", "checkpoint")
  sft:finish("finished")
  local rm = db:start { name = "rm-margin", parent = sft:id(),
    config_json = core.json_encode(RM_CONFIG) }
  for step = 1, 10 do rm:log(step, "loss", 1 / step) end
  rm:finish("failed", "boom: out of memory\nstack traceback:\n\trm.lua:3: in main chunk")
  local bare = db:start { name = "rm-small" }
  bare:add_tag("cpu")
  bare:finish("killed")
  start_and_die(path, "sweep")
  assert(db:gc() == 1, "the run of the dead process is marked crashed")
  local info = { sft_uuid = sft:uuid(), sft_config = db:query("SELECT config_json FROM runs"
    .. " WHERE id = 1")[1].config_json }
  db:close()
  return info
end

local fixture = build_history(db_path)

local function runs(args, env)
  return util.run(dir, "runs " .. args, env or { HERD_DB = db_path })
end

local function file_sha(path)
  return (core.sha256_file(path))
end

-- An error: non-zero exit, exactly one line on stderr starting "herd runs: ", nothing on stdout.
local function check_error(code, stdout, stderr, pattern, expected_code)
  t.ok(code ~= 0, "exit code should be non-zero")
  if expected_code then t.eq(code, expected_code, "exit code") end
  local lines = util.lines(stderr)
  t.eq(#lines, 1, "stderr lines in " .. string.format("%q", stderr))
  t.match(stderr, "^herd runs: ")
  t.eq(stderr:sub(-1), "\n", "stderr ends with a newline")
  if pattern then t.match(stderr, pattern) end
  t.eq(stdout, "", "stdout")
end

-- The table's rows split into cells (two or more spaces separate columns).
local function cells(line)
  local out = {}
  for cell in (line .. "  "):gmatch("(.-)%s%s+") do
    if cell ~= "" then out[#out + 1] = cell end
  end
  return out
end

-- ---------------------------------------------------------------- usage

t.test("herd runs and herd runs --help print the usage", function()
  for _, args in ipairs({ "", "--help" }) do
    local code, stdout, stderr = runs(args)
    t.eq(code, 0)
    t.match(stdout, "^usage: herd runs COMMAND")
    for _, command in ipairs({ "ls", "show", "metrics", "compare", "export", "gc" }) do
      t.match(stdout, "\n  " .. command .. " ")
    end
    t.eq(stderr, "")
  end
end)

t.test("each command has --help", function()
  for _, command in ipairs({ "ls", "show", "metrics", "compare", "export", "gc" }) do
    local code, stdout = runs(command .. " --help")
    t.eq(code, 0, command)
    t.match(stdout, "^usage: herd runs " .. command)
  end
end)

-- ---------------------------------------------------------------- ls

t.test("ls lists runs newest first with aligned columns", function()
  local code, stdout, stderr = runs("ls")
  t.eq(code, 0, stderr)
  local lines = util.lines(stdout)
  t.eq(#lines, 5)
  t.eq(table.concat(cells(lines[1]), "|"), "id|name|status|started|duration|tags|metrics")
  local ids = {}
  for i = 2, 5 do ids[#ids + 1] = lines[i]:match("^%s*(%d+)") end
  t.eq(table.concat(ids, ","), "4,3,2,1")
  local status_column = lines[1]:find("status")
  for i = 2, 5 do
    t.match(lines[i]:sub(status_column), "^%a+ ", "status column aligned")
    t.match(lines[i], "%d%d%d%d%-%d%d%-%d%d %d%d:%d%d", "local start time")
  end
  t.match(lines[2], "sweep%s+crashed")
  t.match(lines[3], "rm%-small%s+killed")
  t.match(lines[4], "rm%-margin%s+failed")
  t.match(lines[5], "sft%-base%s+finished")
  t.match(lines[5], "baseline,cpu")
  t.match(lines[5], "acc=1 loss=nan")
  t.match(lines[4], "loss=0%.1")
  t.match(lines[2], "loss=3%.5")
end)

t.test("ls filters by name, status, tag and limit", function()
  local function ids(args)
    local code, stdout, stderr = runs("ls " .. args)
    t.eq(code, 0, stderr)
    local found = {}
    for line in stdout:gmatch("[^\n]+") do found[#found + 1] = line:match("^%s*(%d+)%s") end
    return table.concat(found, ",")
  end
  t.eq(ids("--name " .. q("rm-*")), "3,2")
  t.eq(ids("--name sft-base"), "1")
  t.eq(ids("--name sft"), "", "no wildcard: exact name")
  t.eq(ids("--status failed"), "2")
  t.eq(ids("--tag cpu"), "3,1")
  t.eq(ids("--tag cpu --name " .. q("rm*")), "3")
  t.eq(ids("--status crashed"), "4")
  t.eq(ids("--limit 2"), "4,3")
  t.eq(ids("--limit=1"), "4")
  t.eq(ids("--limit 0"), "4,3,2,1")
  local _, stdout = runs("ls --limit 1")
  t.match(stdout, "%(1 of 4 runs")
  _, stdout = runs("ls --status running")
  t.eq(stdout, "no runs match\n")
end)

t.test("ls on an empty history says so", function()
  local empty = dir .. "/empty.db"
  core.runlog_open(empty, true):close()
  local code, stdout = runs("ls", { HERD_DB = empty })
  t.eq(code, 0)
  t.eq(stdout, "no runs\n")
end)

t.test("--db PATH works before or after the command, runs.db is the default", function()
  local other = util.tmpdir()
  for _, args in ipairs({ "runs ls --db " .. q(db_path), "runs --db " .. q(db_path) .. " ls",
    "runs ls --db=" .. q(db_path) }) do
    local code, stdout, stderr = util.run(other, args, {})
    t.eq(code, 0, stderr)
    t.eq(#util.lines(stdout), 5, args)
  end
  if os.getenv("HERD_DB") then return end  -- the default is only the default without HERD_DB
  local code, stdout = util.run(dir, "runs ls", {})
  t.eq(code, 0)
  t.eq(#util.lines(stdout), 5)
end)

-- ---------------------------------------------------------------- show

t.test("show prints every recorded field", function()
  local code, stdout, stderr = runs("show 1")
  t.eq(code, 0, stderr)
  t.match(stdout, "^run 1\n")
  t.match(stdout, "\n  name +sft%-base\n")
  t.match(stdout, "\n  uuid +" .. fixture.sft_uuid:gsub("%-", "%%-") .. "\n")
  t.match(stdout, "\n  status +finished\n")
  t.match(stdout, "\n  parent +%-\n")
  t.match(stdout, "\n  script +experiments/sft%.lua\n")
  t.match(stdout, "\n  args +%-%-steps 30 'two words'\n")
  t.match(stdout, "\n  sha256 +" .. sha256_hex("sft") .. "\n")
  t.match(stdout, "\n  git +0123abcd %(dirty%)\n")
  t.match(stdout, "\n  host +%S+ pid %d+\n")
  t.match(stdout, "\n  seed +7\n")
  t.match(stdout, "\n  started +%d%d%d%d%-%d%d%-%d%d %d%d:%d%d\n")
  t.match(stdout, "\n  ended +%d%d%d%d%-%d%d%-%d%d %d%d:%d%d\n")
  t.match(stdout, "\n  duration +[%d.]+s\n")
  t.match(stdout, "\n  tags +baseline, cpu\n")
  -- config: pretty JSON, floats in shortest form
  t.match(stdout, '\nconfig\n  {\n')
  t.match(stdout, '\n      "clip": 0%.2\n')
  t.match(stdout, '\n    "layers": %[64, 64%],\n')
  -- params sorted by key
  local params = stdout:match("\nparams\n(.-)\n\n")
  local keys = {}
  for line in params:gmatch("[^\n]+") do keys[#keys + 1] = line:match("^  (%S+)") end
  local sorted = { table.unpack(keys) }
  table.sort(sorted)
  t.eq(table.concat(keys, " "), table.concat(sorted, " "))
  t.match(params, "ppo%.beta +0%.01")
  t.match(params, "layers%.2 +64")
  t.match(params, "nothing +null")
  t.match(params, '\n  a%-b +"quote \\" backslash \\\\ newline \\n tab \\t"\n',
    "control characters escaped")
  -- metrics: last value by step
  t.match(stdout, "\n  acc +1 +step 30\n")
  t.match(stdout, "\n  loss +nan +step 31\n")
  -- artifacts
  local sha_prefix = sha256_hex("hello"):sub(1, 12)
  t.match(stdout, "\n  model +checkpoint +5 +" .. sha_prefix .. " +/%S*model%.bin\n")
end)

t.test("show prints the error and the parent of a failed run", function()
  local code, stdout = runs("show 2")
  t.eq(code, 0)
  t.match(stdout, "\n  status +failed: boom: out of memory\n")
  t.match(stdout, "\nerror\n  boom: out of memory\n  stack traceback:\n"
    .. "  \trm%.lua:3: in main chunk\n", "a multi-line error in full")
  t.match(stdout, "\n  parent +1 %(sft%-base%)\n")
  t.match(stdout, "\n  git +%-\n")
  t.match(stdout, "\n  tags +%-\n")
  t.no_match(stdout, "\nartifacts\n")
  code, stdout = runs("show 3")
  t.eq(code, 0)
  t.no_match(stdout, "\nconfig\n")
  t.no_match(stdout, "\nmetrics")
end)

-- ---------------------------------------------------------------- metrics

t.test("metrics prints a table outer-joined by step", function()
  local code, stdout, stderr = runs("metrics 1 loss acc")
  t.eq(code, 0, stderr)
  local lines = util.lines(stdout)
  t.eq(#lines, 32, "a header and 31 steps")
  t.eq(table.concat(cells(lines[1]:gsub("^%s+", "")), "|"), "step|loss|acc")
  t.eq(table.concat(cells((lines[2]:gsub("^%s+", ""))), "|"), "1|2|-")
  t.eq(table.concat(cells((lines[3]:gsub("^%s+", ""))), "|"), "2|1|0.0666667")
  t.eq(table.concat(cells((lines[32]:gsub("^%s+", ""))), "|"), "31|nan|-")
  t.eq(#lines[2], #lines[1], "right-aligned columns have one width")
end)

t.test("metrics --csv keeps full precision, nan and empty cells", function()
  local code, stdout = runs("metrics 1 loss acc --csv")
  t.eq(code, 0)
  local lines = util.lines(stdout)
  t.eq(lines[1], "step,loss,acc")
  t.eq(#lines, 32)
  t.eq(lines[2], "1,2,")
  t.eq(lines[32], "31,nan,")
  for i = 2, 31 do
    local step, loss, acc = lines[i]:match("^(%d+),([^,]*),([^,]*)$")
    step = tonumber(step)
    t.eq(tonumber(loss), 2 / step, "loss at step " .. step)
    if step % 2 == 0 then t.eq(tonumber(acc), step / 30, "acc at step " .. step) end
  end
end)

t.test("metrics without keys lists the run's metrics", function()
  local code, stdout = runs("metrics 1")
  t.eq(code, 0)
  local lines = util.lines(stdout)
  t.eq(#lines, 3)
  t.eq(table.concat(cells(lines[2]), "|"), "acc|15|2..30")
  t.eq(table.concat(cells(lines[3]), "|"), "loss|31|1..31")
  code, stdout = runs("metrics 3")
  t.eq(code, 0)
  t.eq(stdout, "run 3 has no metrics\n")
end)

t.test("metrics --plot draws a chart of the requested size", function()
  local code, stdout, stderr = runs("metrics 1 loss acc --plot --width 40 --height 10")
  t.eq(code, 0, stderr)
  local lines = util.lines(stdout)
  t.eq(#lines, 13, "10 rows, axis, x labels, legend")
  local bar = lines[1]:find("|", 1, true)
  for i = 1, 10 do
    t.eq(#lines[i], bar + 40, "row " .. i .. " width")
    t.eq(lines[i]:sub(bar, bar), "|")
  end
  t.match(lines[1], "^%s*2 |%*", "the largest loss (2 at step 1) is top left")
  t.match(lines[11], "^%s+%+%-+$")
  t.match(lines[12], "^%s+1%s+30$", "x range of the finite points (loss is NaN at 31)")
  t.match(lines[13], "%* loss")
  t.match(lines[13], "%+ acc")
end)

-- ---------------------------------------------------------------- compare

t.test("compare shows only differing params, then metrics and status", function()
  local code, stdout, stderr = runs("compare 1 2")
  t.eq(code, 0, stderr)
  local lines = util.lines(stdout)
  t.eq(table.concat(cells(lines[1]), "|"), "run 1|run 2")
  t.eq(table.concat(cells(lines[2]), "|"), "name|sft-base|rm-margin")
  t.eq(lines[3], "params that differ")
  local rows = {}
  for _, line in ipairs(lines) do
    local c = cells(line)
    if #c == 3 then rows[c[1]] = c[2] .. "|" .. c[3] end
  end
  t.eq(rows["lr"], "0.001|0.002")
  t.eq(rows["ppo.clip"], "0.2|0.3")
  t.eq(rows["extra"], "-|true")
  t.eq(rows["layers.1"], "64|-")
  t.eq(rows["ppo.beta"], nil, "equal params are left out")
  t.eq(rows["loss"], "nan|0.1")
  t.eq(rows["acc"], "1|-")
  t.eq(rows["status"], "finished|failed")
  t.ok(rows["duration"])
  t.match(stdout, "\nmetrics %(last value%)\n")
end)

t.test("compare of identical params says so", function()
  local code, stdout = runs("compare 1 1 3")
  t.eq(code, 0)
  t.match(stdout, "params that differ")  -- run 3 has no params: all of run 1's differ
  code, stdout = runs("compare 2 2")
  t.eq(code, 0)
  t.match(stdout, "\nparams %(no differences%)\n")
end)

-- ---------------------------------------------------------------- export

local function deep_equal(a, b, path)
  path = path or "config"
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= b or math.type(a) ~= math.type(b) then
      error(string.format("%s: %s (%s) ~= %s (%s)", path, tostring(a), math.type(a) or type(a),
        tostring(b), math.type(b) or type(b)), 0)
    end
    return true
  end
  for k, v in pairs(a) do deep_equal(v, b[k], path .. "." .. tostring(k)) end
  for k in pairs(b) do
    if a[k] == nil then error(path .. "." .. tostring(k) .. " missing", 0) end
  end
  return true
end

-- Loads an exported recipe with a stub herd whose rerun returns its argument.
local function load_recipe(text)
  local env = {
    require = function(name)
      t.eq(name, "herd")
      return { rerun = function(recipe) return recipe end, json = { null = core.null } }
    end,
  }
  local chunk = assert(load(text, "=export", "t", env))
  return chunk()
end

t.test("export writes a Lua recipe whose config round-trips", function()
  local code, stdout, stderr = runs("export 1")
  t.eq(code, 0, stderr)
  t.match(stdout, "^%-%- Reruns run 1 %(sft%-base%)")
  t.match(stdout, "\n%-%- sha256 " .. sha256_hex("sft") .. "\n")
  t.match(stdout, "\n%-%- git    0123abcd %(dirty%)\n")
  t.match(stdout, '\nlocal herd = require "herd"\nreturn herd.rerun {\n')
  local recipe = load_recipe(stdout)
  t.eq(recipe.run, 1)
  t.eq(recipe.script, "experiments/sft.lua")
  t.eq(recipe.script_sha256, sha256_hex("sft"))
  deep_equal(recipe.args, SFT_ARGS, "args")
  deep_equal(recipe.config, core.json_decode(fixture.sft_config))
  deep_equal(recipe.config, SFT_CONFIG)
  t.eq(math.type(recipe.config.one), "float")
  t.eq(math.type(recipe.config.big), "integer")
end)

t.test("export -o FILE writes the same text; a run without config exports config = {}", function()
  local _, stdout = runs("export 1")
  local code, out, stderr = runs("export 1 -o " .. q(dir .. "/recipe.lua"))
  t.eq(code, 0, stderr)
  t.eq(out, "")
  t.eq(util.read(dir .. "/recipe.lua"), stdout)
  code, stdout = runs("export 3")
  t.eq(code, 0)
  local recipe = load_recipe(stdout)
  t.eq(recipe.run, 3)
  t.eq(recipe.script, nil)
  t.eq(next(recipe.config), nil)
  t.eq(next(recipe.args), nil)
end)

-- The whole loop through the host: a recorded script, its export edited, the recipe run.
local EXPERIMENT = [[
local herd = require "herd"
local run = herd.run.start { config = { lr = 0.5, opt = { beta = 0.9, names = { "a", "b" } } } }
run:log { loss = run.config.lr * 2 }
print("args: " .. table.concat(arg, "|"))
]]

t.test("an exported recipe reruns the script with its config and args", function()
  local work = util.tmpdir()
  local env = { HERD_DB = work .. "/runs.db" }
  util.write(work .. "/exp.lua", EXPERIMENT)
  local code, stdout, stderr = util.run(work, "exp.lua first " .. q("second word"), env)
  t.eq(code, 0, stderr)
  t.eq(stdout, "args: first|second word\n")
  local recipe
  code, recipe, stderr = util.run(work, "runs export 1", env)
  t.eq(code, 0, stderr)
  t.match(recipe, '\n  script = "exp%.lua",\n')
  t.match(recipe, '\n  args = {\n    "first",\n    "second word",\n  },\n')
  recipe = recipe:gsub("lr = 0%.5", "lr = 0.25")
  util.write(work .. "/recipe.lua", recipe)
  code, stdout, stderr = util.run(work, "recipe.lua", env)
  t.eq(code, 0, stderr)
  t.eq(stdout, "args: first|second word\n")
  local db = core.runlog_open(env.HERD_DB, false)
  local rerun = db:query("SELECT * FROM runs WHERE id = 2")[1]
  t.eq(rerun.script, "exp.lua")
  t.eq(rerun.status, "finished")
  deep_equal(core.json_decode(rerun.config_json),
    { lr = 0.25, opt = { beta = 0.9, names = { "a", "b" } } })
  deep_equal(core.json_decode(rerun.args_json), { "first", "second word" }, "args")
  t.eq(db:query("SELECT value FROM metrics WHERE run_id = 2 AND key = 'loss'")[1].value, 0.5)
  t.eq(db:query("SELECT tag FROM tags WHERE run_id = 2")[1].tag, "rerun-of:1")
  db:close()
  code, stdout = util.run(work, "runs compare 1 2", env)
  t.eq(code, 0)
  t.match(stdout, "\n  lr +0%.5 +0%.25\n")
end)

t.test("the export literal keeps tricky values exact", function()
  local value = {
    floats = { 0.1, 1.0, -0.0, 1e300, 2 ^ 53, 5e-324, 123456.789 },
    ints = { 0, -1, math.maxinteger, math.mininteger },
    keys = { ["and"] = 1, ["with space"] = 2, ["1"] = 3, _ok = 4, ["é"] = 5 },
    strings = { "\0\1\127", "é", "]]", "\r\n" },
    empty = {},
    deep = { { { { "x" } } } },
  }
  local text = cli.lua_literal(value)
  local back = assert(load("return " .. text, "=literal", "t", {}))()
  deep_equal(back, value, "value")
  t.eq(1 / back.floats[3], -math.huge, "-0.0 keeps its sign")
end)

-- ---------------------------------------------------------------- gc

t.test("gc marks a run whose process died as crashed", function()
  local gc_path = dir .. "/gc.db"
  local db = core.runlog_open(gc_path, true)
  local alive = db:start { name = "alive" }
  local other = db:start { name = "other" }
  start_and_die(gc_path, "dead")  -- (before other's pid changes: starting a run runs gc)
  local dead = db:query("SELECT id, pid FROM runs WHERE name = 'dead'")[1]
  -- other's process is another one that is gone
  local shell = io.popen("sh -c 'echo $$'")
  local dead_pid = math.tointeger(tonumber(shell:read("l")))
  shell:close()
  db:query("UPDATE runs SET pid = ? WHERE id = ?", dead_pid, other:id())
  local env = { HERD_DB = gc_path }
  local code, stdout, stderr = runs("gc", env)
  t.eq(code, 0, stderr)
  t.eq(stdout, "marked 2 runs crashed\n")
  local _, shown = runs("show " .. dead.id, env)
  t.match(shown, "\n  status +crashed: process " .. dead.pid .. " on %S+ stopped")
  _, shown = runs("show " .. other:id(), env)
  t.match(shown, "\n  status +crashed: process " .. dead_pid .. " on %S+ stopped")
  _, shown = runs("show " .. alive:id(), env)
  t.match(shown, "\n  status +running\n")
  code, stdout = runs("gc", env)
  t.eq(code, 0)
  t.eq(stdout, "marked 0 runs crashed\n")
  alive:finish("finished")
  other:finish("failed")  -- after the checks: its handle is still open in this process
  db:close()
end)

-- ---------------------------------------------------------------- errors

t.test("errors print one line, exit non-zero and leave the database untouched", function()
  util.write(dir .. "/garbage.db", string.rep("not a database, just bytes\0\255", 200))
  local cases = {
    { "lss", "^herd runs: unknown command 'lss' "
      .. "%(commands: ls, show, metrics, compare, export, gc%)\n$", 2 },
    { "show 999", "^herd runs: no run 999 in runs%.db\n$", 1, {} },
    { "show 999", "^herd runs: no run 999 in " .. db_path:gsub("%p", "%%%0") .. "\n$", 1 },
    { "show abc", "a run id is a positive integer, got 'abc'", 2 },
    { "show", "show takes one run id", 2 },
    { "metrics 1 lss", "run 1 has no metric 'lss' %(metrics: acc, loss%)", 1 },
    { "metrics 999 loss", "no run 999", 1 },
    { "metrics 1 loss --csv --plot", "choose one of", 2 },
    { "metrics 1 loss --plot --width 1", "%-%-width must be between 2 and 1000", 2 },
    { "compare 1", "two or more run ids", 2 },
    { "compare 1 999", "no run 999", 1 },
    { "export 999", "no run 999", 1 },
    { "ls --bogus", "unknown option '%-%-bogus' for 'ls'", 2 },
    { "ls --status weird", "unknown status 'weird'", 2 },
    { "ls --limit many", "%-%-limit must be an integer", 2 },
    { "ls --name", "option %-%-name of 'ls' needs a value", 2 },
    { "gc now", "gc takes no arguments", 2 },
  }
  local before = file_sha(db_path)
  for _, case in ipairs(cases) do
    local args, pattern, expected, env = case[1], case[2], case[3], case[4]
    local code, stdout, stderr = runs(args, env and {} or nil)
    local ok, err = pcall(check_error, code, stdout, stderr, pattern, expected)
    if not ok then error(args .. ": " .. tostring(err), 0) end
    t.eq(file_sha(db_path), before, args .. " left the database unchanged")
  end
end)

t.test("a missing database is an error and is not created", function()
  local missing = dir .. "/missing.db"
  local code, stdout, stderr = runs("ls", { HERD_DB = missing })
  check_error(code, stdout, stderr, "^herd runs: no run history at '" .. missing:gsub("%p", "%%%0")
    .. "'\n$")
  t.eq(io.open(missing), nil, "not created")
  code, stdout, stderr = runs("gc", { HERD_DB = missing })
  check_error(code, stdout, stderr, "no run history")
  t.eq(io.open(missing), nil, "gc does not create it either")
end)

t.test("a corrupt database is one error line naming the file, and stays as it was", function()
  local garbage = dir .. "/garbage.db"
  local before = file_sha(garbage)
  for _, args in ipairs({ "ls", "show 1", "metrics 1 loss", "gc" }) do
    local code, stdout, stderr = runs(args, { HERD_DB = garbage })
    check_error(code, stdout, stderr, "garbage%.db")
    t.match(stderr, "not a database")
    t.eq(file_sha(garbage), before, args)
  end
end)

-- ---------------------------------------------------------------- the documented queries

-- Every `sqlite3 runs.db "..."` example in doc/runs.md runs against this history.
t.test("the example queries of doc/runs.md work", function()
  local doc = util.read((os.getenv("HERD_TEST_DIR") or "t") .. "/../doc/runs.md")
  if not doc then error("doc/runs.md not found") end
  local db = core.runlog_open(db_path, false)
  local n = 0
  for sql in doc:gmatch('sqlite3[^\n"]- runs%.db "(.-)"') do
    n = n + 1
    local ok, rows = pcall(db.query, db, sql)
    if not ok then error("query failed: " .. sql .. "\n" .. tostring(rows), 0) end
    t.ok(#rows > 0, "no rows from: " .. sql)
  end
  db:close()
  t.ok(n >= 6, "found " .. n .. " example queries")
end)

-- ---------------------------------------------------------------- herd.plot

local function grid_rows(text)
  local rows = {}
  for line in text:gmatch("[^\n]+") do
    local grid = line:match("^[^|+]*|(.*)$")
    if grid then rows[#rows + 1] = grid end
  end
  return rows
end

t.test("plot.lines has the requested dimensions, defaults 72 x 16", function()
  local series = { { name = "s", xs = { 1, 2, 3 }, ys = { 3, 1, 2 } } }
  local rows = grid_rows(plot.lines(series))
  t.eq(#rows, 16)
  for _, row in ipairs(rows) do t.eq(#row, 72) end
  rows = grid_rows(plot.lines(series, { width = 20, height = 5 }))
  t.eq(#rows, 5)
  for _, row in ipairs(rows) do t.eq(#row, 20) end
  local small = { width = 20, height = 5 }
  t.eq(plot.lines(series, small), plot.lines(series, small), "deterministic")
end)

t.test("plot.lines puts the max in the top row and the min in the bottom one", function()
  local xs, ys = {}, {}
  for i = 0, 50 do xs[#xs + 1], ys[#ys + 1] = i, math.sin(i / 8) end
  local text = plot.lines({ { name = "sin", xs = xs, ys = ys } }, { width = 51, height = 9 })
  local rows = grid_rows(text)
  t.eq(rows[1]:sub(13, 13), "*", "sin peaks at x = 4 pi = 12.6")
  t.match(rows[9], "%*", "the minimum is drawn in the bottom row")
  t.eq(rows[5]:sub(1, 1), "*", "x = 0, y = 0 is in the middle row, first column")
  t.match(text, "\n%s+0%s+50\n", "x range labels")
  t.match(text, "^%s*%d[%d.]* |", "max label on the first row")
end)

t.test("plot.lines handles one point, flat series and non-finite values", function()
  local one = grid_rows(plot.lines({ { name = "p", xs = { 5 }, ys = { 3 } } },
    { width = 11, height = 5 }))
  t.eq(one[3], "     *     ", "a single point sits in the middle")
  local flat = plot.lines({ { name = "f", xs = { 1, 2, 3 }, ys = { 2, 2, 2 } } },
    { width = 10, height = 4 })
  local rows = grid_rows(flat)
  local drawn = 0
  for _, row in ipairs(rows) do
    if row:find("*", 1, true) then
      drawn = drawn + 1
      t.eq(row, string.rep("*", 10), "a flat series is one full row")
    end
  end
  t.eq(drawn, 1)
  local mixed = plot.lines({ { name = "m", xs = { 1, 2, 3, 4 }, ys = { 1, 0 / 0, math.huge, 2 } } },
    { width = 10, height = 4 })
  rows = grid_rows(mixed)
  t.eq(rows[1]:sub(-1), "*", "inf is skipped: 2 is the max")
  t.eq(rows[4]:sub(1, 1), "*")
  t.eq(plot.lines({ { name = "n", xs = { 1 }, ys = { 0 / 0 } } }), "(no finite points to plot)\n")
  t.eq(plot.lines({}), "(no finite points to plot)\n")
end)

t.test("plot.lines gives each series a marker and a legend entry", function()
  local text = plot.lines({
    { name = "up", xs = { 0, 10 }, ys = { 0, 10 } },
    { name = "down", xs = { 0, 10 }, ys = { 10, 0 } },
  }, { width = 11, height = 11 })
  local rows = grid_rows(text)
  t.eq(rows[11]:sub(1, 1), "*")
  t.eq(rows[1]:sub(1, 1), "+")
  t.eq(rows[1]:sub(11, 11), "*")
  t.match(text, "%* up   %+ down\n$")
  t.raises(function() plot.lines({}, { width = 1 }) end, "width must be between 2 and 1000")
end)

util.cleanup()
t.done()
