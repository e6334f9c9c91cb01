-- Helpers shared by the Lua tests: temporary directories, running the herd binary, files.
local M = {}

M.herd = os.getenv("HERD_BIN") or "herd"

local function shell_quote(text)
  return "'" .. tostring(text):gsub("'", "'\\''") .. "'"
end
M.quote = shell_quote

-- A fresh directory under $TMPDIR, removed by M.cleanup().
local made = {}
function M.tmpdir()
  local handle = io.popen("mktemp -d \"${TMPDIR:-/tmp}/herd-test.XXXXXX\"")
  local dir = handle:read("l")
  handle:close()
  made[#made + 1] = dir
  return dir
end

function M.cleanup()
  for _, dir in ipairs(made) do os.execute("rm -rf " .. shell_quote(dir)) end
  made = {}
end

function M.write(path, text)
  local file = assert(io.open(path, "wb"))
  file:write(text)
  file:close()
end

function M.read(path)
  local file = io.open(path, "rb")
  if not file then return nil end
  local text = file:read("a")
  file:close()
  return text
end

-- Runs herd with `args` (a string of already quoted words) in `dir` with environment `env`
-- (a table). Returns exit code, stdout, stderr.
function M.run(dir, args, env)
  local out, err = os.tmpname(), os.tmpname()
  local assignments = {}
  for k, v in pairs(env or {}) do assignments[#assignments + 1] = k .. "=" .. shell_quote(v) end
  local command = string.format("cd %s && env %s %s %s >%s 2>%s </dev/null",
    shell_quote(dir), table.concat(assignments, " "), shell_quote(M.herd), args, out, err)
  local _, _, code = os.execute(command)
  local stdout, stderr = M.read(out), M.read(err)
  os.remove(out)
  os.remove(err)
  return code, stdout, stderr
end

-- Lines of text (without empty trailing line).
function M.lines(text)
  local lines = {}
  for line in (text or ""):gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines
end

return M
