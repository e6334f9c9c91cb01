-- Readable, deterministic text for Lua values: what the REPL prints.
--
--   local pretty = require "herd.pretty"
--   pretty.format({ 1, 2, name = "x", ["a b"] = true })  --> { 1, 2, name = "x", ["a b"] = true }
--   pretty.print(t, "label")                               -- like print, tables pretty-printed
--
-- Tables print on one line when that fits in opts.width columns, else one entry per line,
-- indented. The array part (1..n without holes) comes first, then the other keys sorted by type
-- (numbers, strings, booleans, the rest) and value, so the same table always prints the same way.
-- A table met again inside itself prints as <cycle>; tables deeper than opts.max_depth as {...};
-- after opts.max_items entries the rest is counted, not shown. A value whose metatable has
-- __tostring prints as tostring(value). Nothing else of a metatable is consulted: entries are
-- read with next/rawget, so __index, __pairs and __len never run.
local M = {}

M.defaults = { indent = "  ", max_depth = 4, max_items = 50, width = 80 }

local keywords = {}
for word in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do
  keywords[word] = true
end

local function is_identifier(key)
  return type(key) == "string" and key:match("^[%a_][%w_]*$") ~= nil and not keywords[key]
end
M.is_identifier = is_identifier

-- Lua's tostring for numbers, but floats always look like floats ("1.0") and the values that
-- have no literal read as words.
local function format_number(value)
  if math.type(value) == "integer" then return string.format("%d", value) end
  if value ~= value then return "nan" end
  if value == math.huge then return "inf" end
  if value == -math.huge then return "-inf" end
  local text = string.format("%.14g", value)
  if text:match("^-?%d+$") then text = text .. ".0" end
  return text
end

local escapes = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- A double-quoted Lua literal. Unlike %q, newlines become \n (not a backslash and a real
-- newline) and bytes >= 0x80 stay as they are, so UTF-8 text stays readable.
local function quote(text)
  return '"' .. text:gsub('[%c\\"]', function(c)
    return escapes[c] or string.format("\\%03d", c:byte())
  end) .. '"'
end
M.quote = quote

-- tostring(value) when its metatable defines __tostring; a failing __tostring is shown, not
-- raised, so one bad object does not hide the rest of a table.
local function custom_tostring(value)
  local mt = debug.getmetatable(value)
  if not (mt and rawget(mt, "__tostring")) then return nil end
  local ok, text = pcall(tostring, value)
  if ok then return text end
  return "<__tostring error: " .. tostring(text) .. ">"
end

local function scalar(value)
  local kind = type(value)
  if kind == "string" then return quote(value) end
  if kind == "number" then return format_number(value) end
  return custom_tostring(value) or tostring(value)
end

local type_order = { number = 1, string = 2, boolean = 3 }

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  local oa, ob = type_order[ta] or 4, type_order[tb] or 4
  if oa ~= ob then return oa < ob end
  if ta == "number" or ta == "string" then return a < b end
  if ta == "boolean" then return (not a) and b end
  if ta ~= tb then return ta < tb end
  return tostring(a) < tostring(b)
end

local function format_key(key)
  if is_identifier(key) then return key end
  return "[" .. scalar(key) .. "]"
end

-- The length of the array part without __len: 1..n all non-nil.
local function array_length(t)
  local n = 0
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  return n
end

-- Entries of t as a list of { key = text or nil, value = value }, at most max_items, plus the
-- number left out.
local function entries(t, max_items)
  local n = array_length(t)
  local keys = {}
  for key in next, t do
    if not (math.type(key) == "integer" and key >= 1 and key <= n) then keys[#keys + 1] = key end
  end
  table.sort(keys, key_less)
  local list = {}
  for i = 1, math.min(n, max_items) do list[#list + 1] = { value = rawget(t, i) } end
  for _, key in ipairs(keys) do
    if #list >= max_items then break end
    list[#list + 1] = { key = format_key(key), value = rawget(t, key) }
  end
  return list, n + #keys - #list
end

local render

-- `room` is the number of columns left for this value if it starts on its line where the
-- caller will put it; `level` is its indentation level in the multi-line layout.
local function render_table(t, opts, depth, level, room, open)
  if next(t) == nil then return "{}" end
  if depth > opts.max_depth then return "{...}" end
  local list, more = entries(t, opts.max_items)
  open[t] = true
  local inner = opts.width - #opts.indent * (level + 1) - 1  -- the indent and a comma
  local parts, flat, scalars_only = {}, true, true
  for i, entry in ipairs(list) do
    local prefix = entry.key and entry.key .. " = " or ""
    local text = render(entry.value, opts, depth + 1, level + 1, inner - #prefix, open)
    parts[i] = prefix .. text
    if text:find("\n", 1, true) then flat = false end
    if entry.key or type(entry.value) == "table" then scalars_only = false end
  end
  open[t] = nil
  if more > 0 then parts[#parts + 1] = string.format("... (%d more)", more) end

  local line = "{ " .. table.concat(parts, ", ") .. " }"
  if flat and #line <= room then return line end

  local pad = opts.indent:rep(level + 1)
  local lines = {}
  if scalars_only then
    -- A long list of numbers or strings fills lines instead of taking one line per item.
    local current = pad
    for i, part in ipairs(parts) do
      local piece = part .. (i < #parts and "," or "")
      if current ~= pad and #current + 1 + #piece > opts.width then
        lines[#lines + 1] = current
        current = pad .. piece
      else
        current = current == pad and pad .. piece or current .. " " .. piece
      end
    end
    lines[#lines + 1] = current
  else
    for i, part in ipairs(parts) do
      lines[#lines + 1] = pad .. part .. (i < #parts and "," or "")
    end
  end
  return "{\n" .. table.concat(lines, "\n") .. "\n" .. opts.indent:rep(level) .. "}"
end

function render(value, opts, depth, level, room, open)
  if type(value) ~= "table" then return scalar(value) end
  local custom = custom_tostring(value)
  if custom then return custom end
  if open[value] then return "<cycle>" end
  return render_table(value, opts, depth, level, room, open)
end

local function options(opts)
  local merged = {}
  for key, default in pairs(M.defaults) do
    local given = opts and opts[key]
    if given == nil then given = default end
    merged[key] = given
  end
  if type(merged.indent) == "number" then merged.indent = (" "):rep(merged.indent) end
  return merged
end

-- The text of `value`. opts: indent (a string or a number of spaces, default two spaces),
-- max_depth (4), max_items (50), width (80).
function M.format(value, opts)
  opts = options(opts)
  return render(value, opts, 1, 0, opts.width, {})
end

-- Like print: values separated by tabs, strings as they are, everything else formatted.
function M.line(...)
  local parts = {}
  for i = 1, select("#", ...) do
    local value = select(i, ...)
    parts[i] = type(value) == "string" and value or M.format(value)
  end
  return table.concat(parts, "\t")
end

function M.print(...)
  io.stdout:write(M.line(...), "\n")
end

return M
