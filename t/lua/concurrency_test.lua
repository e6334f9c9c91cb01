-- Four herd processes log 20,000 metric points each into one database at the same time.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"
local core = require "herd.core"

local WRITERS, POINTS = 4, 20000
local dir = util.tmpdir()
local db = dir .. "/runs.db"

util.write(dir .. "/writer.lua", string.format([[
local herd = require "herd"
local run = herd.run.start{ name = "writer-" .. arg[1] }
for step = 1, %d do run:log(step, { loss = 1 / step }) end
]], POINTS))

t.test("4 concurrent writers x 20,000 points: none lost", function()
  local commands = {}
  for i = 1, WRITERS do
    commands[i] = string.format("%s writer.lua %d >%s/w%d.out 2>&1 & ", util.quote(util.herd), i,
      util.quote(dir), i)
  end
  local shell = string.format("cd %s; export HERD_DB=%s; %s wait", util.quote(dir),
    util.quote(db), table.concat(commands))
  t.ok(os.execute(shell))
  for i = 1, WRITERS do t.eq(util.read(dir .. "/w" .. i .. ".out"), "", "writer " .. i .. " output") end
  local handle = core.runlog_open(db, false)
  local total = handle:query("SELECT count(*) AS n FROM metrics")[1].n
  t.eq(total, WRITERS * POINTS)
  local per_run = handle:query([[
    SELECT r.name, r.status, count(m.step) AS n, count(DISTINCT m.step) AS steps
    FROM runs r LEFT JOIN metrics m ON m.run_id = r.id GROUP BY r.id ORDER BY r.name]])
  t.eq(#per_run, WRITERS)
  for i, row in ipairs(per_run) do
    t.eq(row.name, "writer-" .. i)
    t.eq(row.status, "finished")
    t.eq(row.n, POINTS)
    t.eq(row.steps, POINTS)
  end
  handle:close()
end)

util.cleanup()
t.done()
