-- herd.progress: one line of progress for long work.
--
--   local bar = herd.progress.new{ total = steps, unit = "tokens" }
--   for step = 1, steps do
--     ...
--     bar:update(step, { loss = loss, val = val }, step * batch * seq, { print = evaluated })
--   end
--   bar:finish()
--
-- shows  [######..................] step 12/100  loss 1.230  val 1.400  1234 tokens/s  0:12 elapsed  ETA 1:30
--
-- On a terminal the line is redrawn in place at every update and ends with a newline at the last
-- step. Otherwise (a log file, CI) a line is printed only when the update asks for it
-- ({ print = true }), at the last step, and when plain_every seconds (default 30) have passed
-- since the last printed line, so logs stay short.
local core = require "herd.core"

local M = {}

local Bar = {}
Bar.__index = Bar
Bar.__name = "herd.Progress"

-- m:ss, or h:mm:ss from an hour on.
local function clock(seconds)
  seconds = math.max(0, math.floor(seconds + 0.5))
  if seconds >= 3600 then
    return string.format("%d:%02d:%02d", seconds // 3600, seconds % 3600 // 60, seconds % 60)
  end
  return string.format("%d:%02d", seconds // 60, seconds % 60)
end
M.clock = clock

-- Integers as they are; other numbers with three decimals, or three significant digits where
-- decimals would hide the value (a learning rate of 3e-4, a loss of 12345.6).
local function format_value(value)
  if math.type(value) == "integer" then return tostring(value) end
  if type(value) ~= "number" then return tostring(value) end
  if value ~= value then return "nan" end
  local magnitude = math.abs(value)
  if magnitude ~= 0 and (magnitude < 1e-2 or magnitude >= 1e5) then
    return string.format("%.3g", value)
  end
  return string.format("%.3f", value)
end
M.format_value = format_value

-- herd.progress.new{ total =, unit = "tokens", width = 24, plain_every = 30, order = { "loss" },
--                    tty = (stdout is a terminal), out = io.stdout }
-- `order` lists the metrics shown first (the others follow, sorted by name).
function M.new(opts)
  opts = opts or {}
  if math.type(opts.total) ~= "integer" or opts.total < 1 then
    error("herd.progress.new: total must be a positive integer (got " .. tostring(opts.total) .. ")", 2)
  end
  local tty = opts.tty
  if tty == nil then tty = core.isatty(1) end
  local started = core.now()
  return setmetatable({
    total = opts.total,
    unit = opts.unit,
    width = opts.width or 24,
    plain_every = opts.plain_every or 30,
    order = opts.order or {},
    tty = tty,
    out = opts.out or io.stdout,
    started = started,
    last_printed = started,  -- the plain mode's clock: the first periodic line comes after plain_every
    line = nil,              -- the latest line
    shown = true,            -- whether the latest line has been printed (plain) or ended (tty)
  }, Bar)
end

function Bar:format(step, metrics, units, elapsed)
  local filled = math.max(0, math.min(self.width, math.floor(self.width * step / self.total)))
  local parts = { string.format("[%s%s] step %d/%d", string.rep("#", filled),
    string.rep(".", self.width - filled), step, self.total) }
  local listed = {}
  for _, key in ipairs(self.order) do
    if metrics[key] ~= nil then
      parts[#parts + 1] = key .. " " .. format_value(metrics[key])
      listed[key] = true
    end
  end
  local rest = {}
  for key in pairs(metrics) do
    if not listed[key] then rest[#rest + 1] = key end
  end
  table.sort(rest)
  for _, key in ipairs(rest) do parts[#parts + 1] = key .. " " .. format_value(metrics[key]) end
  if units and elapsed > 0 then
    parts[#parts + 1] = string.format("%.0f %s/s", units / elapsed, self.unit or "units")
  end
  parts[#parts + 1] = clock(elapsed) .. " elapsed"
  -- The remaining steps at the average pace so far.
  local eta = step > 0 and elapsed * (self.total - step) / step or 0
  parts[#parts + 1] = "ETA " .. clock(eta)
  return table.concat(parts, "  ")
end

-- bar:update(step, metrics, units_done, { print = true }): units_done counts every unit since
-- the start (the rate is units_done / elapsed).
function Bar:update(step, metrics, units, opts)
  if math.type(step) ~= "integer" then
    error("progress:update: step must be an integer (got " .. tostring(step) .. ")", 2)
  end
  local now = core.now()
  local last = step >= self.total
  self.line = self:format(step, metrics or {}, units, now - self.started)
  if self.tty then
    self.out:write("\r", self.line, "\27[K")
    if last then self.out:write("\n") end
    self.shown = last
    self.out:flush()
  elseif last or (opts and opts.print) or now - self.last_printed >= self.plain_every then
    self.out:write(self.line, "\n")
    self.out:flush()
    self.last_printed, self.shown = now, true
  else
    self.shown = false
  end
  return self
end

-- Ends the display: the latest line is printed (plain) or ended with a newline (terminal) if it
-- has not been yet, e.g. when the work stopped before its last step.
function Bar:finish()
  if self.line and not self.shown then
    if self.tty then self.out:write("\n") else self.out:write(self.line, "\n") end
    self.out:flush()
    self.shown = true
  end
  return self
end

return M
