-- herd.run: the run history seen from Lua.
--
--   local run <close> = herd.run.start{ name = "rm-margin", config = { lr = 1e-5, seed = 1 } }
--   run:log{ loss = 0.7 }                 -- step auto-increments (1, 2, ...)
--   run:log(100, { loss = 0.3, acc = 0.8 })
--   run:param("tokens", 123456)
--   run:artifact("model", "ckpt/model.safetensors", "checkpoint")
--   run:finish()                          -- or let <close> / the end of the script do it
--
-- Every script run through `herd` is recorded. The first herd.run.start in a script names and
-- configures the script's own run; later calls start further runs that record the same script.
-- Open runs end when the script ends: finished, failed (with the error) or killed (Ctrl-C).
local core = require "herd.core"

local M = {}

local state = {
  db = nil,          -- the open history database (herd.Runlog)
  script = nil,      -- { path, sha256, args_json, git_rev, git_dirty } of the running script
  script_run = nil,  -- the script's own run until herd.run.start claims it
  open = {},         -- run object -> true for every unfinished run
  overrides = nil,   -- config values a recipe (herd.rerun) imposes on herd.run.start
  rerun_of = nil,    -- id of the run a recipe reruns
}

function M.db_path()
  return os.getenv("HERD_DB") or "runs.db"
end

-- The history database, opened (and created) on first use.
function M.database()
  if not state.db then state.db = core.runlog_open(M.db_path(), true) end
  return state.db
end

-- ---------------------------------------------------------------- run objects

local Run = {}
Run.__index = Run
Run.__name = "herd.Run"

function Run:__tostring()
  local status = self._handle:is_open() and "running" or "ended"
  return string.format("run %d %q (%s)", self.id, self.name, status)
end

-- run:log(step, {key = value, ...}), run:log{key = value, ...} (next step), run:log(step, key, value)
function Run:log(step, metrics, value)
  if type(step) == "table" then
    step, metrics = self._step + 1, step
  end
  if math.type(step) ~= "integer" then
    error(string.format("run:log: step must be an integer (got %s)", tostring(step)), 2)
  end
  if type(metrics) == "string" then
    self._handle:log(step, metrics, value)
  elseif type(metrics) == "table" then
    self._handle:log(step, metrics)
  else
    error("run:log: expected a table of metrics {name = value, ...}", 2)
  end
  if step > self._step then self._step = step end
  return self
end

function Run:param(key, value)
  if type(key) ~= "string" or key == "" then error("run:param: name must be a non-empty string", 2) end
  self._handle:param(key, core.json_encode(value))
  return self
end

function Run:tag(...)
  for _, tag in ipairs{...} do self._handle:add_tag(tag) end
  return self
end

function Run:artifact(name, path, kind)
  self._handle:artifact(name, path, kind or "file")
  return self
end

function Run:flush()
  self._handle:flush()
  return self
end

-- run:finish() / run:finish("failed", "why"). Finishing twice is an error; <close> is not.
function Run:finish(status, message)
  self._handle:finish(status or "finished", message)
  state.open[self] = nil
  return self
end

function Run:is_open()
  return self._handle:is_open()
end

-- A run started from this one (e.g. one RLHF iteration of a loop).
function Run:child(opts)
  opts = opts or {}
  local copy = {}
  for k, v in pairs(opts) do copy[k] = v end
  copy.parent = self.id
  return M.start(copy)
end

function Run:__close(err)
  if not self._handle:is_open() then return end
  if err == nil then
    self:finish("finished")
  else
    self:finish(core.interrupted() and "killed" or "failed", tostring(err))
  end
end

local function wrap(handle, fields)
  local run = setmetatable({
    _handle = handle,
    _step = 0,
    id = handle:id(),
    uuid = handle:uuid(),
    name = fields.name,
    config = fields.config or {},
    seed = fields.seed,
    parent = fields.parent,
  }, Run)
  state.open[run] = true
  return run
end

-- ---------------------------------------------------------------- configuration

local function deep_copy(value)
  if type(value) ~= "table" then return value end
  local copy = {}
  for k, v in pairs(value) do copy[k] = deep_copy(v) end
  return copy
end

-- Values of `over` replace those of `base`, recursing into tables that both sides have.
local function merge(base, over)
  local result = deep_copy(base)
  for k, v in pairs(over) do
    if type(v) == "table" and type(result[k]) == "table" then
      result[k] = merge(result[k], v)
    else
      result[k] = deep_copy(v)
    end
  end
  return result
end
M.merge = merge

local function choose_seed(opts, config)
  if math.type(opts.seed) == "integer" then return opts.seed end
  if math.type(config.seed) == "integer" then return config.seed end
  local from_env = tonumber(os.getenv("HERD_SEED") or "")
  if from_env and math.type(from_env) == "integer" then return from_env end
  return math.random(1, 2147483647)
end

local function git_info()
  local handle = io.popen("git rev-parse HEAD 2>/dev/null")
  local rev = handle and handle:read("l")
  if handle then handle:close() end
  if not rev or not rev:match("^%x+$") then return nil, nil end
  handle = io.popen("git status --porcelain --untracked-files=no 2>/dev/null")
  local changes = handle:read("a")
  handle:close()
  return rev, changes ~= ""
end

local function basename_without_lua(path)
  return (path:match("([^/]+)$") or path):gsub("%.lua$", "")
end

-- ---------------------------------------------------------------- starting runs

local known_options = { name = true, config = true, tags = true, parent = true, seed = true }

local function check_options(opts)
  if type(opts) ~= "table" then error("herd.run.start: expected a table {name = ..., config = ...}", 3) end
  for key in pairs(opts) do
    if not known_options[key] then
      error(string.format("herd.run.start: unknown option '%s' (known: config, name, parent, seed, tags)",
        tostring(key)), 3)
    end
  end
  if opts.config ~= nil and type(opts.config) ~= "table" then
    error("herd.run.start: config must be a table", 3)
  end
  if opts.tags ~= nil and type(opts.tags) ~= "table" then
    error("herd.run.start: tags must be a list of strings", 3)
  end
end

local function parent_id(parent)
  if type(parent) == "table" then return parent.id end
  return parent
end

-- Turns the script's run into the run the script asked for.
local function claim_script_run(run, opts, config, seed)
  local handle = run._handle
  if opts.name then handle:set_name(opts.name) end
  handle:set_config(core.json_encode(config))
  handle:set_seed(seed)
  if opts.parent then handle:set_parent(parent_id(opts.parent)) end
  run.name = opts.name or run.name
  run.config, run.seed, run.parent = config, seed, parent_id(opts.parent)
  return run
end

-- herd.run.start{ name =, config =, tags =, parent =, seed = } -> run
function M.start(opts)
  opts = opts or {}
  check_options(opts)
  local config = opts.config or {}
  if state.overrides then config = merge(config, state.overrides) end
  local seed = choose_seed(opts, config)
  math.randomseed(seed)
  local run
  if state.script_run then
    run, state.script_run = claim_script_run(state.script_run, opts, config, seed), nil
  else
    local script = state.script or {}
    local handle = M.database():start{
      name = opts.name or (script.path and basename_without_lua(script.path)) or "interactive",
      script = script.path, script_sha256 = script.sha256, args_json = script.args_json,
      git_rev = script.git_rev, git_dirty = script.git_dirty,
      parent = parent_id(opts.parent), seed = seed, config_json = core.json_encode(config),
    }
    run = wrap(handle, { name = opts.name, config = config, seed = seed, parent = parent_id(opts.parent) })
    run.name = opts.name or (script.path and basename_without_lua(script.path)) or "interactive"
  end
  for _, tag in ipairs(opts.tags or {}) do run:tag(tag) end
  if state.rerun_of then run:tag("rerun-of:" .. state.rerun_of) end
  return run
end

-- The runs not yet finished, oldest first.
function M.open_runs()
  local runs = {}
  for run in pairs(state.open) do runs[#runs + 1] = run end
  table.sort(runs, function(a, b) return a.id < b.id end)
  return runs
end

-- ---------------------------------------------------------------- the host's hooks

-- The script's arguments as a JSON array ("[]" when none: an empty table would read as {}).
local function script_args_json(args)
  if #args == 0 then return "[]" end
  return core.json_encode(args)
end

local function script_args()
  local args = {}
  for i = 1, #(arg or {}) do args[i] = arg[i] end
  return args
end

-- Called by the host before a script runs (unless --no-record): records the script's run.
function M._begin_script(path)
  local sha256 = path ~= "-" and core.sha256_file(path) or nil
  local rev, dirty = git_info()
  state.script = {
    path = path, sha256 = sha256, args_json = script_args_json(script_args()),
    git_rev = rev, git_dirty = dirty,
  }
  local seed = choose_seed({}, {})
  math.randomseed(seed)
  local name = basename_without_lua(path == "-" and "stdin" or path)
  local handle = M.database():start{
    name = name, script = path, script_sha256 = sha256, args_json = state.script.args_json,
    git_rev = rev, git_dirty = dirty, seed = seed,
  }
  state.script_run = wrap(handle, { name = name, seed = seed })
end

-- Called by the host as the program ends: every open run ends with `outcome`.
function M._end(outcome, message)
  local runs = M.open_runs()
  for i = #runs, 1, -1 do
    local run = runs[i]
    if run._handle:is_open() then
      run:finish(outcome, outcome ~= "finished" and message or nil)
    end
    state.open[run] = nil
  end
  state.script_run = nil
end

-- Used by herd.rerun: the recipe's config wins over the script's defaults, and the run records
-- the rerun script (not the recipe file) as its script.
function M._rerun(recipe_run, script, sha256, args, config)
  state.overrides = config
  state.rerun_of = recipe_run
  if state.script_run or state.script then
    state.script = state.script or {}
    state.script.path, state.script.sha256 = script, sha256
    state.script.args_json = script_args_json(args)
    if state.script_run then
      state.script_run._handle:set_script(script, sha256, state.script.args_json)
      state.script_run._handle:set_name(basename_without_lua(script))
      state.script_run.name = basename_without_lua(script)
    end
  end
end

-- os.exit ends the process without unwinding: finish open runs first.
local exit = os.exit
os.exit = function(code, close)
  local ok = code == nil or code == true or code == 0
  M._end(ok and "finished" or "failed", "os.exit(" .. tostring(code) .. ")")
  return exit(code, close)
end

return M
