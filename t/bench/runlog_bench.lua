-- Benchmark: how fast the run history takes metric points, batched (the default) against a
-- transaction per point (what a naive logger does). Prints points/s and the ratio.
local core = require "herd.core"

local POINTS = tonumber(arg and arg[1]) or 200000
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))

local function bench_batched()
  local db = core.runlog_open(dir .. "/batched.db", true)
  local run = db:start{ name = "bench" }
  local start = core.now()
  for step = 1, POINTS do run:log(step, "loss", 1 / step) end
  run:finish("finished")
  local seconds = core.now() - start
  db:close()
  return seconds
end

-- One flush per point: a transaction per point, as a logger without batching would do.
local function bench_per_point(points)
  local db = core.runlog_open(dir .. "/unbatched.db", true)
  local run = db:start{ name = "bench" }
  local start = core.now()
  for step = 1, points do
    run:log(step, "loss", 1 / step)
    run:flush()
  end
  run:finish("finished")
  local seconds = core.now() - start
  db:close()
  return seconds
end

local batched = bench_batched()
local per_point_points = math.max(1, POINTS // 20)
local per_point = bench_per_point(per_point_points)
local batched_rate = POINTS / batched
local per_point_rate = per_point_points / per_point
print(string.format("runlog: batched   %9.0f points/s (%d points in %.3f s)", batched_rate, POINTS, batched))
print(string.format("runlog: per-point %9.0f points/s (%d points in %.3f s)", per_point_rate,
  per_point_points, per_point))
print(string.format("runlog: batching speed-up x%.1f", batched_rate / per_point_rate))
os.execute("rm -rf " .. dir)
