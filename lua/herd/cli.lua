-- `herd runs ...`: reading the run history from the command line.
--
-- The host calls M.main(args) with the words after `runs` and exits with its result: 0 ok,
-- 1 error, 2 usage error. Errors are one line on stderr starting with "herd runs: ". Only `gc`
-- writes to the database. Schema and example queries: doc/runs.md.
local core = require "herd.core"

local M = {}

local COMMAND_NAMES = { "ls", "show", "metrics", "compare", "export", "gc" }
local STATUSES = { running = true, finished = true, failed = true, killed = true, crashed = true }

local USAGE = [=[
usage: herd runs COMMAND [options]

commands:
  ls        list runs, newest first
  show      everything recorded about one run
  metrics   a run's metrics by step: a table, CSV or a terminal chart
  compare   the params that differ and the final metrics of several runs
  export    write a Lua file that reruns a run
  gc        mark runs whose process died as crashed

The database is $HERD_DB, or runs.db in the working directory; --db PATH overrides both.
`herd runs COMMAND --help` describes one command.
]=]

-- ---------------------------------------------------------------- errors and output

-- Errors raised on purpose are tables {code =, message =}; anything else is a failure of the
-- database or of this file, reported with its message (code 1).
local function fail(code, fmt, ...)
  error({ code = code, message = string.format(fmt, ...) }, 0)
end

local function usage_error(fmt, ...)
  fail(2, fmt, ...)
end

local function out(...)
  io.stdout:write(...)
end

-- A message on one line, without the "file.lua:12: " that luaL_error puts before errors raised
-- by herd.core.
local function one_line(text)
  text = tostring(text):gsub("^%s+", ""):gsub("%s+$", "")
  text = text:gsub("^[^%s:]+%.lua:%d+: ", "", 1)
  return (text:gsub("%s*\n%s*", "; "))
end

-- ---------------------------------------------------------------- formatting values

local function is_nan(value)
  return value ~= value or value == "NaN"
end

-- The shortest "%.Ng" that reads back as the same float.
local function exact_float(value)
  for digits = 15, 17 do
    local text = string.format("%." .. digits .. "g", value)
    if tonumber(text) == value then return text end
  end
  return string.format("%.17g", value)
end

-- A number for people: integers in full, floats to 6 significant digits, nan/inf/-inf.
local function format_number(value, exact)
  if is_nan(value) then return "nan" end
  if math.type(value) == "integer" then return string.format("%d", value) end
  if value == math.huge then return "inf" end
  if value == -math.huge then return "-inf" end
  return exact and exact_float(value) or string.format("%.6g", value)
end

-- Text on one line: control characters written as Lua escapes, quoted when there were any.
local function printable(text)
  if not text:find("%c") then return text end
  local escapes = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r" }
  return '"' .. text:gsub('[\\"]', "\\%0"):gsub("%c", function(c)
    return escapes[c] or string.format("\\%03d", c:byte())
  end) .. '"'
end

-- A param or metric value as stored: TEXT, INTEGER, REAL or NULL.
local function format_value(value, exact)
  if value == nil then return "null" end
  if type(value) == "number" or value == "NaN" then return format_number(value, exact) end
  return printable(tostring(value))
end

local function format_time(seconds)
  if not seconds then return "-" end
  return os.date("%Y-%m-%d %H:%M", math.floor(seconds))
end

local function format_duration(seconds)
  if not seconds then return "-" end
  if seconds < 60 then return string.format("%.1fs", math.max(0, seconds)) end
  seconds = math.floor(seconds + 0.5)
  if seconds < 3600 then return string.format("%dm%02ds", seconds // 60, seconds % 60) end
  if seconds < 86400 then
    return string.format("%dh%02dm", seconds // 3600, seconds % 3600 // 60)
  end
  return string.format("%dd%02dh", seconds // 86400, seconds % 86400 // 3600)
end

-- How long a run took, or has been going (a running run counts to its last heartbeat).
local function run_seconds(run)
  local ended = run.ended_at or run.heartbeat_at
  return ended and ended - run.started_at
end

local function display_width(text)
  return utf8.len(text) or #text
end

-- Rows of strings as aligned columns; `right` names the columns aligned right (numbers). A row
-- {heading = text} is a line of its own that does not widen the columns.
local function format_table(rows, right)
  right = right or {}
  local widths = {}
  for _, row in ipairs(rows) do
    for i, cell in ipairs(row) do widths[i] = math.max(widths[i] or 0, display_width(cell)) end
  end
  local lines = {}
  for _, row in ipairs(rows) do
    local cells = { row.heading }
    for i, cell in ipairs(row) do
      local pad = string.rep(" ", widths[i] - display_width(cell))
      cells[i] = right[i] and pad .. cell or (i < #row and cell .. pad or cell)
    end
    lines[#lines + 1] = table.concat(cells, "  "):gsub("%s+$", "") .. "\n"
  end
  return table.concat(lines)
end

-- ---------------------------------------------------------------- arguments

-- Splits `args` by `spec` ({name = "value" | "flag"}). Options may come anywhere, as `--name
-- VALUE` or `--name=VALUE`; `--` ends them. Returns options, positional words.
local function parse_options(command, args, spec)
  local options, words = {}, {}
  local i = 1
  while i <= #args do
    local word = args[i]
    local name, inline = word:match("^%-%-([^=]+)=(.*)$")
    name = name or word:match("^%-%-(.+)$") or (word:match("^%-(%a)$"))
    if word == "--" then
      table.move(args, i + 1, #args, #words + 1, words)
      break
    elseif not name then
      words[#words + 1] = word
    elseif spec[name] == "flag" then
      if inline then usage_error("option --%s of '%s' takes no value", name, command) end
      options[name] = true
    elseif spec[name] == "value" then
      if not inline then
        i = i + 1
        inline = args[i]
        if not inline then usage_error("option --%s of '%s' needs a value", name, command) end
      end
      options[name] = inline
    else
      usage_error("unknown option '%s' for '%s' (see herd runs %s --help)", word, command, command)
    end
    i = i + 1
  end
  return options, words
end

local function parse_integer(text, what)
  local number = math.tointeger(tonumber(text))
  if not number then usage_error("%s must be an integer, got '%s'", what, tostring(text)) end
  return number
end

local function parse_run_id(text)
  local id = math.tointeger(tonumber(text))
  if not id or id < 1 then usage_error("a run id is a positive integer, got '%s'", text) end
  return id
end

-- ---------------------------------------------------------------- reading the database

local function load_run(db, id)
  local rows = db:query("SELECT * FROM runs WHERE id = ?", id)
  if not rows[1] then fail(1, "no run %d in %s", id, db:path()) end
  return rows[1]
end

local function tags_of(db, id)
  local tags = {}
  for _, row in ipairs(db:query("SELECT tag FROM tags WHERE run_id = ? ORDER BY tag", id)) do
    tags[#tags + 1] = row.tag
  end
  return tags
end

local function params_of(db, id)
  local params, keys = {}, {}
  for _, row in ipairs(db:query("SELECT key, value FROM params WHERE run_id = ? ORDER BY key",
    id)) do
    keys[#keys + 1] = row.key
    params[row.key] = format_value(row.value, true)
  end
  return params, keys
end

-- The value of each metric at its largest step (the last written when a step repeats), keyed by
-- run id then metric key: { [id] = { [key] = {step =, value =} } }. `runs_sql` selects run ids.
local LAST_METRICS_SQL = [=[
SELECT run_id, key, step, value FROM (
  SELECT run_id, key, step, value,
         row_number() OVER (PARTITION BY run_id, key ORDER BY step DESC, time DESC, rowid DESC) AS n
  FROM metrics WHERE run_id IN (%s))
WHERE n = 1 ORDER BY run_id, key]=]

local function last_metrics(db, runs_sql, ...)
  local last = {}
  for _, row in ipairs(db:query(string.format(LAST_METRICS_SQL, runs_sql), ...)) do
    last[row.run_id] = last[row.run_id] or {}
    last[row.run_id][row.key] = { step = row.step, value = row.value }
  end
  return last
end

-- The script's command-line arguments (runs.args_json, a JSON array of strings); {} if none.
local function script_args(run)
  if type(run.args_json) ~= "string" then return {} end
  local ok, args = pcall(core.json_decode, run.args_json)
  if not ok or type(args) ~= "table" then return {} end
  return args
end

local function sorted_keys(map)
  local keys = {}
  for key in pairs(map) do keys[#keys + 1] = key end
  table.sort(keys)
  return keys
end

-- ---------------------------------------------------------------- ls

local LS_HELP = [=[
usage: herd runs ls [--name PATTERN] [--status STATUS] [--tag TAG] [--limit N]

Lists runs, newest first: id, name, status, start (local time), duration, tags and the last
value of up to three metrics.
  --name PATTERN   runs whose name matches PATTERN, a glob ('rm-*'); exact without * ? [
  --status STATUS  running, finished, failed, killed or crashed
  --tag TAG        runs tagged TAG
  --limit N        at most N runs (default 20; 0 for all)
]=]

local function ls_filter(options)
  local where, args = {}, {}
  if options.name then
    where[#where + 1] = options.name:find("[%*%?%[]") and "name GLOB ?" or "name = ?"
    args[#args + 1] = options.name
  end
  if options.status then
    if not STATUSES[options.status] then
      usage_error("unknown status '%s' (statuses: running, finished, failed, killed, crashed)",
        options.status)
    end
    where[#where + 1] = "status = ?"
    args[#args + 1] = options.status
  end
  if options.tag then
    where[#where + 1] = "EXISTS (SELECT 1 FROM tags WHERE tags.run_id = runs.id AND tag = ?)"
    args[#args + 1] = options.tag
  end
  return #where > 0 and " WHERE " .. table.concat(where, " AND ") or "", args
end

local function metrics_summary(last)
  local parts = {}
  for i, key in ipairs(sorted_keys(last or {})) do
    if i > 3 then
      parts[#parts + 1] = "..."
      break
    end
    parts[#parts + 1] = key .. "=" .. format_number(last[key].value)
  end
  return table.concat(parts, " ")
end

local function ls(db, options)
  local limit = parse_integer(options.limit or "20", "--limit")
  if limit < 0 then usage_error("--limit must be 0 (all) or more, got %d", limit) end
  local where, args = ls_filter(options)
  local ids_sql = "SELECT id FROM runs" .. where .. " ORDER BY started_at DESC, id DESC"
    .. (limit > 0 and " LIMIT " .. limit or "")
  local runs = db:query("SELECT runs.*, (SELECT group_concat(tag, ',') FROM"
    .. " (SELECT tag FROM tags WHERE run_id = runs.id ORDER BY tag)) AS tags"
    .. " FROM runs WHERE id IN (" .. ids_sql .. ") ORDER BY started_at DESC, id DESC",
    table.unpack(args))
  if #runs == 0 then
    out(where == "" and "no runs\n" or "no runs match\n")
    return 0
  end
  local last = last_metrics(db, ids_sql, table.unpack(args))
  local rows = { { "id", "name", "status", "started", "duration", "tags", "metrics" } }
  for _, run in ipairs(runs) do
    rows[#rows + 1] = { tostring(run.id), run.name, run.status, format_time(run.started_at),
      format_duration(run_seconds(run)), run.tags or "", metrics_summary(last[run.id]) }
  end
  out(format_table(rows, { true, false, false, false, true }))
  if limit > 0 and #runs == limit then
    local total = db:query("SELECT count(*) AS n FROM runs" .. where, table.unpack(args))[1].n
    if total > limit then
      out(string.format("(%d of %d runs; --limit 0 lists all)\n", limit, total))
    end
  end
  return 0
end

-- ---------------------------------------------------------------- show

local SHOW_HELP = [=[
usage: herd runs show ID

Everything recorded about run ID: identity, status, script and code version, config, params,
the last value of each metric, artifacts and tags.
]=]

-- Arguments as a shell would need them: quoted when they hold anything but safe characters.
local function format_args(args)
  if #args == 0 then return "-" end
  local words = {}
  for i, word in ipairs(args) do
    word = tostring(word)
    words[i] = word:match("^[%w%-_./=:,+@%%]+$") and word or "'" .. word:gsub("'", "'\\''") .. "'"
  end
  return printable(table.concat(words, " "))
end

-- The first line of a run's error goes on its status line; a longer error (a traceback) gets
-- a section of its own.
local function show_identity(db, run)
  local status = run.status
  if run.error then status = status .. ": " .. printable(run.error:match("^[^\n]*")) end
  local parent = "-"
  if run.parent_id then
    local rows = db:query("SELECT name FROM runs WHERE id = ?", run.parent_id)
    parent = run.parent_id .. (rows[1] and " (" .. rows[1].name .. ")" or "")
  end
  local tags = tags_of(db, run.id)
  local git = "-"
  if run.git_rev then git = run.git_rev .. (run.git_dirty == 1 and " (dirty)" or "") end
  local rows = {
    { "name", printable(run.name) }, { "uuid", run.uuid }, { "status", status },
    { "parent", parent },
    { "script", run.script or "-" }, { "args", format_args(script_args(run)) },
    { "sha256", run.script_sha256 or "-" }, { "git", git },
    { "host", string.format("%s pid %d", run.host, run.pid) },
    { "seed", run.seed and tostring(run.seed) or "-" },
    { "started", format_time(run.started_at) },
    { "ended", format_time(run.ended_at) },
    { "duration", format_duration(run_seconds(run)) },
    { "tags", #tags > 0 and table.concat(tags, ", ") or "-" },
  }
  out(string.format("run %d\n", run.id))
  out((format_table(rows):gsub("[^\n]+", "  %0")))
end

local function indent(text)
  return (text:gsub("[^\n]+", "  %0"))
end

local json_text

local function json_array(value, depth)
  local scalars = true
  for _, item in ipairs(value) do scalars = scalars and type(item) ~= "table" end
  local items = {}
  for i, item in ipairs(value) do items[i] = json_text(item, depth + 1) end
  if scalars then return "[" .. table.concat(items, ", ") .. "]" end
  local inner = string.rep("  ", depth + 1)
  return "[\n" .. inner .. table.concat(items, ",\n" .. inner) .. "\n"
    .. string.rep("  ", depth) .. "]"
end

local function json_object(value, depth)
  local inner = string.rep("  ", depth + 1)
  local items = {}
  for _, key in ipairs(sorted_keys(value)) do
    items[#items + 1] = inner .. core.json_encode(key) .. ": " .. json_text(value[key], depth + 1)
  end
  return "{\n" .. table.concat(items, ",\n") .. "\n" .. string.rep("  ", depth) .. "}"
end

-- Pretty JSON with keys sorted, arrays of scalars on one line and floats in their shortest
-- exact form (0.2, not 0.20000000000000001).
json_text = function(value, depth)
  if type(value) == "table" then
    if next(value) == nil then return "{}" end
    if value[1] ~= nil then return json_array(value, depth) end
    return json_object(value, depth)
  end
  if math.type(value) == "float" then return exact_float(value) end
  return core.json_encode(value)
end

local function show_error(run)
  if run.error and run.error:find("\n") then out("\nerror\n", indent(run.error), "\n") end
end

local function show_config(run)
  if not run.config_json then return end
  local ok, config = pcall(core.json_decode, run.config_json)
  local text = ok and json_text(config, 0) or run.config_json
  out("\nconfig\n", indent(text), "\n")
end

local function show_params(db, run)
  local params, keys = params_of(db, run.id)
  if #keys == 0 then return end
  local rows = {}
  for _, key in ipairs(keys) do rows[#rows + 1] = { key, params[key] } end
  out("\nparams\n", indent(format_table(rows)))
end

local function show_metrics(db, run)
  local last = last_metrics(db, "?", run.id)[run.id]
  if not last then return end
  local rows = {}
  for _, key in ipairs(sorted_keys(last)) do
    rows[#rows + 1] = { key, format_number(last[key].value), "step " .. last[key].step }
  end
  out("\nmetrics (last value)\n", indent(format_table(rows, { false, true })))
end

local function show_artifacts(db, run)
  local artifacts = db:query("SELECT * FROM artifacts WHERE run_id = ? ORDER BY name", run.id)
  if #artifacts == 0 then return end
  local rows = {}
  for _, a in ipairs(artifacts) do
    rows[#rows + 1] = { a.name, a.kind, tostring(a.bytes), a.sha256:sub(1, 12), a.path }
  end
  out("\nartifacts\n", indent(format_table(rows, { false, false, true })))
end

local function show(db, _, words)
  if #words ~= 1 then usage_error("show takes one run id (herd runs show ID)") end
  local run = load_run(db, parse_run_id(words[1]))
  show_identity(db, run)
  show_error(run)
  show_config(run)
  show_params(db, run)
  show_metrics(db, run)
  show_artifacts(db, run)
  return 0
end

-- ---------------------------------------------------------------- metrics

local METRICS_HELP = [=[
usage: herd runs metrics ID [KEY...] [--csv | --plot [--width N] [--height N]]

The values of metrics KEY... of run ID by step, one column per key (a step a key was not
logged at is '-', empty in CSV; NaN is 'nan'). Without KEY, lists the run's metrics.
  --csv        comma-separated values with a header line, values in full precision
  --plot       a terminal line chart, one series per key
  --width N    chart width in characters (default 72)
  --height N   chart height in lines (default 16)
]=]

local function metric_keys(db, id)
  return db:query("SELECT key, count(*) AS points, min(step) AS first, max(step) AS last"
    .. " FROM metrics WHERE run_id = ? GROUP BY key ORDER BY key", id)
end

local function list_metric_keys(db, id)
  local keys = metric_keys(db, id)
  if #keys == 0 then
    out(string.format("run %d has no metrics\n", id))
    return 0
  end
  local rows = { { "key", "points", "steps" } }
  for _, k in ipairs(keys) do
    rows[#rows + 1] = { k.key, tostring(k.points), k.first .. ".." .. k.last }
  end
  out(format_table(rows, { false, true }))
  return 0
end

local function check_keys(db, id, keys)
  local known, names = {}, {}
  for _, k in ipairs(metric_keys(db, id)) do
    known[k.key] = true
    names[#names + 1] = k.key
  end
  for _, key in ipairs(keys) do
    if not known[key] then
      if #names == 0 then fail(1, "run %d has no metrics (asked for '%s')", id, key) end
      fail(1, "run %d has no metric '%s' (metrics: %s)", id, key, table.concat(names, ", "))
    end
  end
end

-- { steps = {sorted steps}, values = { [key] = { [step] = value } } }; a repeated step keeps its
-- last written value.
local function metric_columns(db, id, keys)
  local values, seen, steps = {}, {}, {}
  for _, key in ipairs(keys) do
    values[key] = {}
    for _, row in ipairs(db:query("SELECT step, value FROM metrics WHERE run_id = ? AND key = ?"
      .. " ORDER BY step, time, rowid", id, key)) do
      values[key][row.step] = row.value == nil and "null" or row.value
      if not seen[row.step] then
        seen[row.step] = true
        steps[#steps + 1] = row.step
      end
    end
  end
  table.sort(steps)
  return { steps = steps, values = values }
end

local function csv_field(text)
  if text:find('[,"\r\n]') then return '"' .. text:gsub('"', '""') .. '"' end
  return text
end

local function metrics_csv(columns, keys)
  local header = { "step" }
  for _, key in ipairs(keys) do header[#header + 1] = csv_field(key) end
  out(table.concat(header, ","), "\n")
  for _, step in ipairs(columns.steps) do
    local cells = { tostring(step) }
    for _, key in ipairs(keys) do
      local value = columns.values[key][step]
      local missing = value == nil or value == "null"
      cells[#cells + 1] = missing and "" or format_number(value, true)
    end
    out(table.concat(cells, ","), "\n")
  end
end

local function metrics_table(columns, keys)
  local rows = { { "step" } }
  local right = { true }
  for _, key in ipairs(keys) do
    rows[1][#rows[1] + 1] = key
    right[#right + 1] = true
  end
  for _, step in ipairs(columns.steps) do
    local row = { tostring(step) }
    for _, key in ipairs(keys) do
      local value = columns.values[key][step]
      row[#row + 1] = value == nil and "-" or value == "null" and "null" or format_number(value)
    end
    rows[#rows + 1] = row
  end
  out(format_table(rows, right))
end

local function metrics_plot(columns, keys, options)
  local plot = require "herd.plot"
  local series = {}
  for _, key in ipairs(keys) do
    local xs, ys = {}, {}
    for _, step in ipairs(columns.steps) do
      local value = columns.values[key][step]
      if type(value) == "number" then
        xs[#xs + 1] = step
        ys[#ys + 1] = value
      end
    end
    series[#series + 1] = { name = key, xs = xs, ys = ys }
  end
  local size = {}
  for _, name in ipairs({ "width", "height" }) do
    if options[name] then
      size[name] = parse_integer(options[name], "--" .. name)
      if size[name] < 2 or size[name] > 1000 then
        usage_error("--%s must be between 2 and 1000, got %d", name, size[name])
      end
    end
  end
  out(plot.lines(series, size))
end

local function metrics(db, options, words)
  if #words < 1 then usage_error("metrics needs a run id (herd runs metrics ID [KEY...])") end
  if options.csv and options.plot then usage_error("choose one of --csv and --plot") end
  if (options.width or options.height) and not options.plot then
    usage_error("--width and --height go with --plot")
  end
  local id = parse_run_id(words[1])
  load_run(db, id)
  local keys = table.move(words, 2, #words, 1, {})
  if #keys == 0 then return list_metric_keys(db, id) end
  check_keys(db, id, keys)
  local columns = metric_columns(db, id, keys)
  if options.csv then
    metrics_csv(columns, keys)
  elseif options.plot then
    metrics_plot(columns, keys, options)
  else
    metrics_table(columns, keys)
  end
  return 0
end

-- ---------------------------------------------------------------- compare

local COMPARE_HELP = [=[
usage: herd runs compare ID ID...

Runs side by side: the params whose values differ (a missing param is '-'), the last value of
every metric, then status and duration.
]=]

local function differing_params(params_by_run)
  local keys = {}
  for _, params in ipairs(params_by_run) do
    for key in pairs(params) do keys[key] = true end
  end
  local differing = {}
  for _, key in ipairs(sorted_keys(keys)) do
    local first = params_by_run[1][key]
    for i = 2, #params_by_run do
      if params_by_run[i][key] ~= first then
        differing[#differing + 1] = key
        break
      end
    end
  end
  return differing
end

local function compare(db, _, words)
  if #words < 2 then
    usage_error("compare needs two or more run ids (herd runs compare ID ID...)")
  end
  local runs, params_by_run, ids, metric_names = {}, {}, {}, {}
  for i, word in ipairs(words) do
    ids[i] = parse_run_id(word)
    runs[i] = load_run(db, ids[i])
    params_by_run[i] = params_of(db, ids[i])
  end
  local placeholders = (table.concat(ids, ","):gsub("[^,]+", "?"))
  local last = last_metrics(db, placeholders, table.unpack(ids))
  for _, id in ipairs(ids) do
    for key in pairs(last[id] or {}) do metric_names[key] = true end
  end
  local header, names = { "" }, { "name" }
  for i, run in ipairs(runs) do
    header[i + 1] = "run " .. run.id
    names[i + 1] = run.name
  end
  local rows = { header, names }
  local function section(title) rows[#rows + 1] = { heading = title } end
  local function row(label, cell)
    local r = { "  " .. label }
    for i = 1, #runs do r[i + 1] = cell(i) end
    rows[#rows + 1] = r
  end
  local differing = differing_params(params_by_run)
  section(#differing > 0 and "params that differ" or "params (no differences)")
  for _, key in ipairs(differing) do
    row(key, function(i) return params_by_run[i][key] or "-" end)
  end
  local keys = sorted_keys(metric_names)
  if #keys > 0 then section("metrics (last value)") end
  for _, key in ipairs(keys) do
    row(key, function(i)
      local m = last[ids[i]] and last[ids[i]][key]
      return m and format_number(m.value) or "-"
    end)
  end
  section("run")
  row("status", function(i) return runs[i].status end)
  row("duration", function(i) return format_duration(run_seconds(runs[i])) end)
  out(format_table(rows))
  return 0
end

-- ---------------------------------------------------------------- export

local EXPORT_HELP = [=[
usage: herd runs export ID [-o FILE]

Writes a Lua file that reruns run ID: its script, with its recorded arguments and config,
through herd.rerun. Run it with `herd FILE`; edit its config to rerun with changes.
  -o, --output FILE  write to FILE instead of standard output
]=]

local LUA_KEYWORDS = {}
for word in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do
  LUA_KEYWORDS[word] = true
end

local function lua_key(key)
  if type(key) == "string" and key:match("^[%a_][%w_]*$") and not LUA_KEYWORDS[key] then
    return key
  end
  if type(key) == "string" then return "[" .. string.format("%q", key) .. "]" end
  return "[" .. string.format("%d", key) .. "]"
end

-- The shortest literal that reads back as the same float, and as a float (1.0, not 1).
local function lua_float(value)
  if value ~= value or value == math.huge or value == -math.huge then
    fail(1, "config holds %s, which a Lua literal cannot express exactly", tostring(value))
  end
  local text = exact_float(value)
  if not text:find("[%.eEn]") then text = text .. ".0" end
  return text
end

local function is_sequence(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  for i = 1, n do
    if t[i] == nil then return false end
  end
  return n > 0
end

local function ordered_keys(t)
  local keys = {}
  for key in pairs(t) do keys[#keys + 1] = key end
  table.sort(keys, function(a, b)
    if type(a) ~= type(b) then return type(a) == "number" end
    return a < b
  end)
  return keys
end

local lua_literal

local function lua_table(t, depth)
  if next(t) == nil then return "{}" end
  local inner = string.rep("  ", depth + 1)
  local items = {}
  if is_sequence(t) then
    for i = 1, #t do items[i] = inner .. lua_literal(t[i], depth + 1) .. "," end
  else
    for _, key in ipairs(ordered_keys(t)) do
      items[#items + 1] = inner .. lua_key(key) .. " = " .. lua_literal(t[key], depth + 1) .. ","
    end
  end
  return "{\n" .. table.concat(items, "\n") .. "\n" .. string.rep("  ", depth) .. "}"
end

-- A Lua expression for a decoded JSON value: tables with sorted keys, strings with %q, integers
-- and floats kept apart, JSON null as herd.json.null.
lua_literal = function(value, depth)
  local kind = type(value)
  if kind == "table" then return lua_table(value, depth) end
  if kind == "string" then return string.format("%q", value) end
  if kind == "boolean" then return tostring(value) end
  -- "-9223372036854775808" would read back as a float: its digits overflow before the minus
  if value == math.mininteger then return "(-9223372036854775807 - 1)" end
  if math.type(value) == "integer" then return string.format("%d", value) end
  if kind == "number" then return lua_float(value) end
  if value == core.null then return "herd.json.null" end
  fail(1, "config holds a %s, which cannot be exported", kind)
end

M.lua_literal = function(value) return lua_literal(value, 0) end

local function comment(text)
  return (tostring(text):gsub("[%c]", " "))
end

local function export_text(run)
  local config = {}
  if run.config_json then config = core.json_decode(run.config_json) end
  local lines = {
    string.format("-- Reruns run %d (%s) of the run history.", run.id, comment(run.name)),
    string.format("-- started %s, status %s", format_time(run.started_at), run.status),
    "-- script " .. comment(run.script or "(not recorded)"),
    "-- sha256 " .. (run.script_sha256 or "(not recorded)"),
    "-- git    " .. (run.git_rev and run.git_rev .. (run.git_dirty == 1 and " (dirty)" or "")
      or "(not recorded)"),
    'local herd = require "herd"',
    "return herd.rerun {",
    string.format("  run = %d,", run.id),
  }
  if run.script then lines[#lines + 1] = string.format("  script = %q,", run.script) end
  if run.script_sha256 then
    lines[#lines + 1] = string.format("  script_sha256 = %q,", run.script_sha256)
  end
  lines[#lines + 1] = "  args = " .. lua_literal(script_args(run), 1) .. ","
  lines[#lines + 1] = "  config = " .. lua_literal(config, 1) .. ","
  lines[#lines + 1] = "}"
  return table.concat(lines, "\n") .. "\n"
end

local function export(db, options, words)
  if #words ~= 1 then usage_error("export takes one run id (herd runs export ID [-o FILE])") end
  local run = load_run(db, parse_run_id(words[1]))
  local text = export_text(run)
  if not options.o then
    out(text)
    return 0
  end
  local file, err = io.open(options.o, "wb")
  if not file then fail(1, "cannot write the export: %s", err) end
  local ok, write_err = file:write(text)
  file:close()
  if not ok then fail(1, "cannot write '%s': %s", options.o, write_err) end
  return 0
end

-- ---------------------------------------------------------------- gc

local GC_HELP = [=[
usage: herd runs gc

Marks runs still 'running' whose process is gone as 'crashed': on this host by pid and
process start time, elsewhere when their heartbeat is older than 300 seconds.
]=]

local function gc(db, _, words)
  if #words > 0 then usage_error("gc takes no arguments") end
  local n = db:gc()
  out(string.format("marked %d run%s crashed\n", n, n == 1 and "" or "s"))
  return 0
end

-- ---------------------------------------------------------------- dispatch

local COMMANDS = {
  ls = { run = ls, help = LS_HELP, options = { name = "value", status = "value", tag = "value",
    limit = "value" } },
  show = { run = show, help = SHOW_HELP, options = {} },
  metrics = { run = metrics, help = METRICS_HELP, options = { csv = "flag", plot = "flag",
    width = "value", height = "value" } },
  compare = { run = compare, help = COMPARE_HELP, options = {} },
  export = { run = export, help = EXPORT_HELP, options = { o = "value", output = "value" } },
  gc = { run = gc, help = GC_HELP, options = {} },
}

-- Takes out --db PATH (anywhere) and finds the command word. Returns db path, command name (or
-- nil), the remaining words.
local function split_global(args)
  local rest, db_path, command = {}, nil, nil
  local i = 1
  while i <= #args do
    local word = args[i]
    if word == "--db" then
      db_path = args[i + 1] or usage_error("option --db needs a path")
      i = i + 1
    elseif word:match("^%-%-db=") then
      db_path = word:sub(6)
    elseif not command and not word:match("^%-") then
      command = word
    else
      rest[#rest + 1] = word
    end
    i = i + 1
  end
  return db_path or os.getenv("HERD_DB") or "runs.db", command, rest
end

local function wants_help(words)
  for _, word in ipairs(words) do
    if word == "--help" or word == "-h" then return true end
    if word == "--" then return false end
  end
  return false
end

local function dispatch(args)
  local db_path, name, rest = split_global(args)
  if not name then
    if #rest == 0 or wants_help(rest) then
      out(USAGE)
      return 0
    end
    usage_error("unknown option '%s' (herd runs --help lists the commands)", rest[1])
  end
  local command = COMMANDS[name]
  if not command then
    usage_error("unknown command '%s' (commands: %s)", name, table.concat(COMMAND_NAMES, ", "))
  end
  if wants_help(rest) then
    out(command.help)
    return 0
  end
  local options, words = parse_options(name, rest, command.options)
  options.o = options.o or options.output
  local db = core.runlog_open(db_path, false)
  local ok, result = pcall(command.run, db, options, words)
  db:close()
  if not ok then error(result, 0) end
  return result
end

-- args: the words after `herd runs`. Returns the exit code.
function M.main(args)
  local ok, result = pcall(dispatch, args or {})
  if ok then
    io.stdout:flush()
    return result
  end
  io.stdout:flush()
  local message, code = result, 1
  if type(result) == "table" then message, code = result.message, result.code end
  io.stderr:write("herd runs: ", one_line(message), "\n")
  return code
end

return M
