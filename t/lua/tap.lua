-- A small TAP producer for herd's Lua tests (run by `herd`, read by automake's tap-driver).
--   local t = require "tap"
--   t.test("name", function() t.eq(1 + 1, 2) end)
--   t.done()
local M = {}

local count, failures = 0, 0

local function describe(value)
  if type(value) == "string" then return string.format("%q", value) end
  return tostring(value)
end

-- Each check raises on failure with a message naming expected and actual values; `test`
-- catches it, so one failing check ends one test, not the file.
function M.ok(value, message)
  if not value then error(message or "expected a true value", 2) end
  return value
end

function M.eq(actual, expected, message)
  if actual ~= expected then
    error(string.format("%sexpected %s, got %s", message and message .. ": " or "",
      describe(expected), describe(actual)), 2)
  end
end

function M.near(actual, expected, tolerance, message)
  if type(actual) ~= "number" or math.abs(actual - expected) > tolerance then
    error(string.format("%sexpected %s within %g, got %s", message and message .. ": " or "",
      describe(expected), tolerance, describe(actual)), 2)
  end
end

function M.match(text, pattern, message)
  if type(text) ~= "string" or not text:find(pattern) then
    error(string.format("%sexpected text matching %q, got %s", message and message .. ": " or "",
      pattern, describe(text)), 2)
  end
end

function M.no_match(text, pattern, message)
  if type(text) == "string" and text:find(pattern) then
    error(string.format("%sexpected no %q in %s", message and message .. ": " or "", pattern,
      describe(text)), 2)
  end
end

-- Runs `fn`, expects it to raise an error whose message matches `pattern`.
function M.raises(fn, pattern, message)
  local ok, err = pcall(fn)
  if ok then error((message and message .. ": " or "") .. "expected an error", 2) end
  if pattern and not tostring(err):find(pattern) then
    error(string.format("%serror %q does not match %q", message and message .. ": " or "",
      tostring(err), pattern), 2)
  end
  return err
end

function M.test(name, fn)
  count = count + 1
  local ok, err = xpcall(fn, debug.traceback)
  if ok then
    io.write(string.format("ok %d - %s\n", count, name))
  else
    failures = failures + 1
    io.write(string.format("not ok %d - %s\n", count, name))
    for line in tostring(err):gmatch("[^\n]+") do io.write("# ", line, "\n") end
  end
  io.flush()
end

function M.skip(name, reason)
  count = count + 1
  io.write(string.format("ok %d - %s # SKIP %s\n", count, name, reason))
end

function M.done()
  io.write(string.format("1..%d\n", count))
  io.flush()
  if failures > 0 then os.exit(1) end
end

return M
