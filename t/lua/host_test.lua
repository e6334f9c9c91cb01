-- The herd program: scripts recorded as runs, bad input, Ctrl-C, SIGKILL, rerunning a recipe.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"
local core = require "herd.core"

local dir = util.tmpdir()
local db = dir .. "/runs.db"
local env = { HERD_DB = db, HOME = dir }

local function script(name, text)
  util.write(dir .. "/" .. name, text)
  return name
end

local function query(sql, ...)
  local handle = core.runlog_open(db, false)
  local rows = handle:query(sql, ...)
  handle:close()
  return rows
end

local function last_run()
  return query("SELECT * FROM runs ORDER BY id DESC LIMIT 1")[1]
end

-- The database's runs, as text, to show that a failure changed nothing.
local function snapshot()
  local rows = query("SELECT id, name, status, config_json, error FROM runs ORDER BY id")
  local lines = {}
  for _, r in ipairs(rows) do
    lines[#lines + 1] = table.concat({ r.id, r.name, r.status, tostring(r.config_json), tostring(r.error) }, "|")
  end
  local metrics = query("SELECT count(*) AS n, total(value) AS sum FROM metrics")[1]
  return table.concat(lines, "\n") .. "\nmetrics " .. metrics.n .. " " .. metrics.sum
end

local function one_line(text)
  return #util.lines(text) == 1
end

script("train.lua", [[
local herd = require "herd"
local run = herd.run.start{ name = "toy-train", config = { lr = 0.1, steps = 5 }, tags = { "t" } }
for step = 1, run.config.steps do run:log{ loss = 1 / step, lr = run.config.lr } end
print("args", ...)
]])

t.test("a script is recorded with its sha256, args, config, metrics and status", function()
  local code, out, err = util.run(dir, "train.lua one two", env)
  t.eq(code, 0, err)
  t.match(out, "args\tone\ttwo")
  local run = last_run()
  t.eq(run.name, "toy-train")
  t.eq(run.status, "finished")
  t.eq(run.script, "train.lua")
  t.eq(run.script_sha256, core.sha256_file(dir .. "/train.lua"))
  t.eq(run.args_json, '["one","two"]')
  t.eq(run.config_json, '{"lr":0.1,"steps":5}')
  t.ok(run.seed, "a seed is recorded")
  t.ok(run.host ~= nil and run.pid > 0)
  t.ok(run.ended_at >= run.started_at)
  t.eq(query("SELECT count(*) AS n FROM metrics WHERE run_id = ? AND key = 'loss'", run.id)[1].n, 5)
  t.eq(query("SELECT value FROM params WHERE run_id = ? AND key = 'lr'", run.id)[1].value, 0.1)
end)

t.test("a script that starts no run is still recorded", function()
  script("plain.lua", "local x = 1 + 1\n")
  local code = util.run(dir, "plain.lua", env)
  t.eq(code, 0)
  local run = last_run()
  t.eq(run.name, "plain")
  t.eq(run.status, "finished")
end)

t.test("git revision and dirty flag of the working directory", function()
  if os.execute("git --version >/dev/null 2>&1") ~= true then
    return t.ok(true)
  end
  local repo = util.tmpdir()
  util.write(repo .. "/s.lua", "print('hi')\n")
  assert(os.execute("cd " .. util.quote(repo) .. " && git init -q && git add s.lua && " ..
    "git -c user.email=t@t -c user.name=t commit -qm init"))
  local h = io.popen("cd " .. util.quote(repo) .. " && git rev-parse HEAD")
  local rev = h:read("l")
  h:close()
  t.eq((util.run(repo, "s.lua", env)), 0)
  local run = last_run()
  t.eq(run.git_rev, rev)
  t.eq(run.git_dirty, 0)
  util.write(repo .. "/s.lua", "print('changed')\n")
  t.eq((util.run(repo, "s.lua", env)), 0)
  t.eq(last_run().git_dirty, 1)
end)

t.test("a runtime error prints a traceback, exits 1 and marks the run failed", function()
  script("boom.lua", "local function f() error('loss is NaN at step 3') end\nf()\n")
  local code, _, err = util.run(dir, "boom.lua", env)
  t.eq(code, 1)
  t.match(err, "^herd: boom%.lua:1: loss is NaN at step 3")
  t.match(err, "stack traceback")
  local run = last_run()
  t.eq(run.status, "failed")
  t.match(run.error, "loss is NaN at step 3")
end)

t.test("os.exit finishes open runs before leaving", function()
  script("exits.lua", "require('herd').run.start{ name = 'exiting' }\nos.exit(3)\n")
  local code = util.run(dir, "exits.lua", env)
  t.eq(code, 3)
  local run = last_run()
  t.eq(run.status, "failed")
  t.eq(run.error, "os.exit(3)")
end)

t.test("bad input: one clear line, non-zero exit, existing runs untouched", function()
  script("syntax.lua", "local x = = 1\n")
  local before = snapshot()
  local cases = {
    { "syntax.lua", "syntax%.lua:1: unexpected symbol near '='" },
    { "missing.lua", "cannot open missing%.lua" },
    { "runs lss", "unknown command 'lss'" },
    { "runs show 99999", "no run 99999" },
    { "--bogus", "unknown option %-%-bogus" },
  }
  for _, case in ipairs(cases) do
    local code, _, err = util.run(dir, case[1], env)
    t.ok(code ~= 0, case[1] .. " should fail")
    t.match(err, case[2], case[1])
    t.ok(#util.lines(err) <= 2, case[1] .. " prints a short error, got: " .. err)
    t.eq(snapshot(), before, case[1] .. " changed the history")
  end
  -- the syntax error and the missing script record no run at all
  t.eq(snapshot(), before)
end)

t.test("an unwritable database location is one error line", function()
  local code, _, err = util.run(dir, "plain.lua", { HERD_DB = "/nonexistent-dir/runs.db" })
  t.eq(code, 1)
  t.ok(one_line(err), err)
  t.match(err, "^herd: run history '/nonexistent%-dir/runs%.db': cannot open")
  code, _, err = util.run(dir, "plain.lua", { HERD_DB = dir })  -- a directory
  t.eq(code, 1)
  t.ok(one_line(err), err)
end)

t.test("a corrupt database is refused and left byte-identical", function()
  local bad = dir .. "/corrupt.db"
  util.write(bad, string.rep("not a database\0", 500))
  local digest = core.sha256_file(bad)
  local code, _, err = util.run(dir, "plain.lua", { HERD_DB = bad })
  t.eq(code, 1)
  t.ok(one_line(err), err)
  t.match(err, "corrupt%.db.*not a database")
  code, _, err = util.run(dir, "runs ls", { HERD_DB = bad })
  t.ok(code ~= 0)
  t.ok(one_line(err), err)
  t.eq(core.sha256_file(bad), digest)
end)

t.test("a read-only database file is refused and left intact", function()
  local h = io.popen("id -u")
  local uid = h:read("l")
  h:close()
  if uid == "0" then return t.ok(true) end  -- root writes read-only files anyway
  local ro = dir .. "/ro.db"
  assert(util.run(dir, "plain.lua", { HERD_DB = ro }) == 0)
  os.execute("chmod 444 " .. util.quote(ro))
  local digest = core.sha256_file(ro)
  local code, _, err = util.run(dir, "plain.lua", { HERD_DB = ro })
  t.eq(code, 1)
  t.ok(one_line(err), err)
  t.match(err, "read%-only")
  t.eq(core.sha256_file(ro), digest)
end)

-- Starts `herd file` in the background and returns its pid once its run is in the database.
local function start_background(file, name)
  local h = io.popen(string.format("cd %s && HERD_DB=%s %s %s >/dev/null 2>%s/bg.err & echo $!",
    util.quote(dir), util.quote(db), util.quote(util.herd), file, util.quote(dir)))
  local pid = h:read("l")
  h:close()
  for _ = 1, 200 do
    local rows = query("SELECT id FROM runs WHERE name = ? AND status = 'running'", name)
    if #rows > 0 then return pid, rows[1].id end
    core.sleep(0.05)
  end
  error("background run never started")
end

local function wait_for_exit(pid)
  for _ = 1, 200 do
    if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then return end
    core.sleep(0.05)
  end
  error("process " .. pid .. " did not exit")
end

t.test("Ctrl-C (SIGINT) interrupts the script and marks the run killed", function()
  script("spin.lua", "require('herd').run.start{ name = 'spinner' }\nwhile true do end\n")
  local pid, id = start_background("spin.lua", "spinner")
  os.execute("kill -INT " .. pid)
  wait_for_exit(pid)
  local run = query("SELECT status, error FROM runs WHERE id = ?", id)[1]
  t.eq(run.status, "killed")
  t.match(run.error, "interrupted!")
  local err = util.read(dir .. "/bg.err")
  t.match(err, "^herd: interrupted!")
  t.no_match(err, "Sanitizer", "a clean exit after Ctrl-C")
end)

t.test("SIGKILL mid-run: crashed after `herd runs gc`, and at the next start", function()
  script("sleepy.lua", [[
local herd = require "herd"
local run = herd.run.start{ name = 'sleepy' }
for i = 1, 1e9 do run:log{ x = i }; if i % 1000 == 0 then herd.core.sleep(0.01) end end
]])
  local pid, id = start_background("sleepy.lua", "sleepy")
  os.execute("kill -KILL " .. pid)
  wait_for_exit(pid)
  t.eq(query("SELECT status FROM runs WHERE id = ?", id)[1].status, "running")
  local code, out = util.run(dir, "runs gc", env)
  t.eq(code, 0)
  t.match(out, "1 run")
  t.eq(query("SELECT status FROM runs WHERE id = ?", id)[1].status, "crashed")

  pid, id = start_background("sleepy.lua", "sleepy")
  os.execute("kill -KILL " .. pid)
  wait_for_exit(pid)
  t.eq((util.run(dir, "plain.lua", env)), 0)
  t.eq(query("SELECT status FROM runs WHERE id = ?", id)[1].status, "crashed")
end)

t.test("-e runs code without recording; --version and --help", function()
  local before = #query("SELECT id FROM runs")
  local code, out = util.run(dir, "-e 'print(1 + 1)'", env)
  t.eq(code, 0)
  t.eq(out, "2\n")
  t.eq(#query("SELECT id FROM runs"), before)
  code, out = util.run(dir, "--version", env)
  t.eq(code, 0)
  t.match(out, "^herd %d+%.%d+%.%d+ %(Lua 5%.4")
  code, out = util.run(dir, "--help", env)
  t.eq(code, 0)
  t.match(out, "usage: herd")
  code = util.run(dir, "--no-record plain.lua", env)
  t.eq(code, 0)
  t.eq(#query("SELECT id FROM runs"), before)
end)

t.test("require 'herd' works from any directory", function()
  local elsewhere = util.tmpdir()
  local code, out, err = util.run(elsewhere, "-e 'print(require(\"herd\").version)'", {})
  t.eq(code, 0, err)
  t.match(out, "^%d+%.%d+%.%d+")
end)

t.test("export then run the recipe: same config, original script, tagged rerun", function()
  local code, out, err = util.run(dir, "train.lua a", env)
  t.eq(code, 0, err)
  local original = last_run()
  code, out, err = util.run(dir, "runs export " .. original.id, env)
  t.eq(code, 0, err)
  util.write(dir .. "/recipe.lua", out:gsub("lr = 0%.1", "lr = 0.25"))
  code, out, err = util.run(dir, "recipe.lua", env)
  t.eq(code, 0, err)
  t.match(out, "args\ta")
  local rerun = last_run()
  t.eq(rerun.script, "train.lua")
  t.eq(rerun.script_sha256, original.script_sha256)
  t.eq(rerun.config_json, '{"lr":0.25,"steps":5}')
  t.eq(#query("SELECT 1 FROM tags WHERE run_id = ? AND tag = ?", rerun.id, "rerun-of:" .. original.id), 1)
end)

util.cleanup()
t.done()
