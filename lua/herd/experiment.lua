-- herd.experiment: what every experiment script shares: its command line and its output folder.
--
--   local opts = herd.experiment.args{
--     usage = "herd experiments/base.lua [options]",
--     description = "Trains the toy world's base model.",
--     options = { { "steps", "int", "number of training steps" } },
--   }
--   -- opts.quick (false), opts.seed (1), opts.steps (nil unless given), opts.positional ({})
--   local run <close> = herd.run.start{ config = { quick = opts.quick, seed = opts.seed, ... } }
--   local out = herd.experiment.outdir(run)      -- "out/<run id>", created
--
-- Every script gets --quick (a <= 2 minute version, same code path, smaller sizes), --seed N and
-- --help; a script's own options come from spec.options as { name, type, help [, default = v] }
-- with type "int", "number", "string" or "flag", and optionally `choices = { ... }`, the only
-- values accepted.
local M = {}

local placeholders = { int = "N", number = "X", string = "TEXT" }

local function option_label(option)
  local label = "--" .. option.name
  if placeholders[option.type] then label = label .. " " .. placeholders[option.type] end
  return label
end

-- A usage error: its message is the whole story, so it carries no Lua traceback (the host's
-- message handler turns an error object with __tostring into its text) and prints as
-- "herd: <message>".
local UsageError = { __tostring = function(e) return e.message end }

local function valid_list(options)
  local labels = {}
  for i, option in ipairs(options) do labels[i] = option_label(option) end
  labels[#labels + 1] = "--help"
  return table.concat(labels, ", ")
end

-- "<script>: <what went wrong> (options: --quick, --seed N, ..., --help)"
local function usage_error(script, options, message)
  error(setmetatable({ message = string.format("%s: %s (options: %s)", script, message,
    valid_list(options)) }, UsageError))
end

local function script_name(spec)
  local args = spec.arg or arg or {}
  return args[0] or "script"
end

-- The options of `spec` plus the ones every experiment has, in the order --help lists them.
local function all_options(spec)
  local seed_default = spec.seed or 1
  local options = {
    { name = "quick", key = "quick", type = "flag", help = "a quick version (<= 2 minutes on 2 cores): smaller sizes,"
      .. " same code path" },
    { name = "seed", key = "seed", type = "int", help = "random seed", default = seed_default },
  }
  local seen = { quick = true, seed = true, help = true, positional = true }
  for i, option in ipairs(spec.options or {}) do
    local name, kind, help = option[1] or option.name, option[2] or option.type, option[3] or option.help
    if type(name) ~= "string" or not name:match("^[%a][%w_-]*$") then
      error(string.format("herd.experiment.args: option %d needs a name like \"steps\"", i), 3)
    end
    if seen[name] then error("herd.experiment.args: option '" .. name .. "' is defined twice"
      .. " (quick, seed and help are built in)", 3) end
    if not (placeholders[kind] or kind == "flag") then
      error(string.format("herd.experiment.args: option '%s' has type %s (expected int, number,"
        .. " string or flag)", name, tostring(kind)), 3)
    end
    seen[name] = true
    -- --eval-every is opts.eval_every: a field name, not a string index
    options[#options + 1] = { name = name, key = (name:gsub("-", "_")), type = kind, help = help or "",
                              default = option.default, choices = option.choices }
  end
  return options
end

-- The --help text.
function M.usage(spec)
  local options = all_options(spec)
  local lines = { "usage: " .. (spec.usage or ("herd " .. script_name(spec) .. " [options]")) }
  if spec.description then
    lines[#lines + 1] = ""
    lines[#lines + 1] = spec.description
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "options:"
  local labels, width = {}, #"-h, --help"
  for i, option in ipairs(options) do
    labels[i] = option_label(option)
    width = math.max(width, #labels[i])
  end
  for i, option in ipairs(options) do
    local help = option.help
    if option.default ~= nil and option.type ~= "flag" then
      help = string.format("%s (default %s)", help, tostring(option.default))
    end
    lines[#lines + 1] = string.format("  %-" .. width .. "s  %s", labels[i], help)
  end
  lines[#lines + 1] = string.format("  %-" .. width .. "s  %s", "-h, --help", "print this help and exit")
  if spec.positional then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "arguments after the options: " .. spec.positional
  end
  return table.concat(lines, "\n") .. "\n"
end

local function convert(option, text, options, script)
  local value
  if option.type == "int" then
    value = text:match("^[+-]?%d+$") and math.tointeger(tonumber(text))
  elseif option.type == "number" then
    value = tonumber(text)
  else
    value = text
  end
  if value == nil then
    usage_error(script, options, string.format("--%s expects %s, got '%s'", option.name,
      option.type == "int" and "an integer" or "a number", text))
  end
  if option.choices then
    for _, choice in ipairs(option.choices) do
      if value == choice then return value end
    end
    usage_error(script, options, string.format("--%s expects one of %s, got '%s'", option.name,
      table.concat(option.choices, ", "), text))
  end
  return value
end

-- herd.experiment.args(spec) -> { quick =, seed =, <option> =, ..., positional = {...} }
-- Parses spec.arg or the global `arg`. --help prints the usage and exits 0; a bad command line
-- raises an error naming the option and listing the valid ones.
function M.args(spec)
  spec = spec or {}
  if type(spec) ~= "table" then error("herd.experiment.args: expected a table {options = ...}", 2) end
  local options = all_options(spec)
  local by_name = {}
  for _, option in ipairs(options) do by_name[option.name] = option end
  local script = script_name(spec)
  local args = spec.arg or arg or {}
  local result = { positional = {} }
  for _, option in ipairs(options) do
    if option.type == "flag" then result[option.key] = option.default or false
    else result[option.key] = option.default end
  end

  local i, only_positional = 1, false
  while args[i] ~= nil do
    local word = args[i]
    if only_positional or word == "-" or word:sub(1, 1) ~= "-" then
      if not spec.positional then
        usage_error(script, options, string.format("unexpected argument '%s'", word))
      end
      result.positional[#result.positional + 1] = word
    elseif word == "--" then
      only_positional = true
    elseif word == "--help" or word == "-h" then
      io.stdout:write(M.usage(spec))
      io.stdout:flush()
      os.exit(0, true)
    else
      local name, value = word:match("^%-%-([^=]+)=(.*)$")
      name = name or word:match("^%-%-(.+)$")
      local option = name and by_name[name]
      if not option then
        usage_error(script, options, string.format("unknown option '%s'", word))
      end
      if option.type == "flag" then
        if value ~= nil then
          usage_error(script, options, string.format("--%s takes no value", name))
        end
        result[option.key] = true
      else
        if value == nil then
          value = args[i + 1]
          -- "--steps --quick" is a forgotten value, not the value "--quick"
          if value == nil or value:sub(1, 2) == "--" then
            usage_error(script, options, string.format("--%s needs a value", name))
          end
          i = i + 1
        end
        result[option.key] = convert(option, value, options, script)
      end
    end
    i = i + 1
  end
  return result
end

local function shell_quote(text)
  return "'" .. text:gsub("'", "'\\''") .. "'"
end

-- herd.experiment.outdir(run or id) -> "out/<run id>", created (with its parents) if missing.
function M.outdir(run)
  local id = type(run) == "table" and run.id or run
  if math.type(id) ~= "integer" then
    error("herd.experiment.outdir: expected a run (or a run id), got " .. tostring(run), 2)
  end
  local path = "out/" .. id
  local ok = os.execute("mkdir -p " .. shell_quote(path) .. " 2>/dev/null")
  if not ok then error("herd.experiment.outdir: cannot create directory '" .. path .. "'", 2) end
  return path
end

-- herd.experiment.find_run{ name = "base", id = nil, artifacts = { "checkpoint" }, params =
--   { "held_out_loss" }, hint = "herd experiments/base.lua" }
-- -> { id =, params = { key = value }, artifacts = { name = absolute path }, dir = }
-- The run an experiment builds on, from the run history: run `id` (which must carry that name),
-- or the latest finished run of that name. Errors say what is missing and how to make it.
-- `dir` is the folder of the first listed artifact (a checkpoint's directory).
-- A finding error: one line, no traceback (see UsageError).
local function fail(message)
  error(setmetatable({ message = message }, UsageError))
end

function M.find_run(opts)
  local db = require("herd.run").database()
  local name = opts.name
  local rows
  if opts.id then
    rows = db:query("SELECT id FROM runs WHERE id = ? AND name = ?", opts.id, name)
    if not rows[1] then
      fail(string.format("no run %d named '%s' in %s", opts.id, name, db:path()))
    end
  else
    rows = db:query("SELECT id FROM runs WHERE name = ? AND status = 'finished' " ..
      "ORDER BY id DESC LIMIT 1", name)
    if not rows[1] then
      fail(string.format("no finished '%s' run in %s; run `%s` first", name, db:path(),
        opts.hint or ("the " .. name .. " experiment")))
    end
  end
  local found = { id = rows[1].id, params = {}, artifacts = {} }
  for _, r in ipairs(db:query("SELECT key, value FROM params WHERE run_id = ?", found.id)) do
    found.params[r.key] = r.value
  end
  for _, r in ipairs(db:query("SELECT name, path FROM artifacts WHERE run_id = ?", found.id)) do
    found.artifacts[r.name] = r.path
  end
  for _, artifact in ipairs(opts.artifacts or {}) do
    local path = found.artifacts[artifact]
    if not path then
      fail(string.format("%s run %d has no '%s' artifact", name, found.id, artifact))
    end
    local file = io.open(path, "rb")
    if not file then
      fail(string.format("%s run %d: its '%s' artifact %s is gone", name, found.id, artifact,
        path))
    end
    file:close()
  end
  for _, key in ipairs(opts.params or {}) do
    if found.params[key] == nil then
      fail(string.format("%s run %d has no '%s' parameter (did it finish?)", name, found.id, key))
    end
  end
  local first = opts.artifacts and opts.artifacts[1]
  if first then found.dir = found.artifacts[first]:match("^(.*)/[^/]*$") end
  return found
end

return M
