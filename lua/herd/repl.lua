-- The Lua side of herd's REPL (bindings/repl.c): tab-completion candidates and the text of
-- results.
--
--   local repl = require "herd.repl"
--   repl.complete("string.fo")       --> { "string.format" }
--   repl.format_results(1, "a", {})  --> '1\ta\t{}'
local pretty = require "herd.pretty"

local M = {}

-- The globals table as the REPL's chunks see it (they are loaded with the default _ENV).
local globals = _G

local keywords = {}
for word in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do
  keywords[#keywords + 1] = word
end

-- Completion must never run user code (a Ctrl-C handler is not in place while editing a line,
-- and a TAB should not have side effects): values are read with rawget and next, and an
-- __index metamethod is followed only when it is a table (or names a `methods` table), a
-- bounded number of times.
local max_index_chain = 16

local function index_chain(value)
  local chain, seen = {}, {}
  for _ = 1, max_index_chain do
    if type(value) == "table" then
      if seen[value] then break end
      seen[value] = true
      chain[#chain + 1] = value
    end
    local mt = debug.getmetatable(value)
    local index = mt and rawget(mt, "__index")
    -- A userdata whose __index is a function (tensors: t[1] selects) lists its methods in
    -- the metatable's `methods` table.
    if type(index) == "function" and type(rawget(mt, "methods")) == "table" then
      index = rawget(mt, "methods")
    end
    if type(index) ~= "table" then break end
    value = index
  end
  return chain
end

local function lookup(value, key)
  for _, t in ipairs(index_chain(value)) do
    local found = rawget(t, key)
    if found ~= nil then return found end
  end
  return nil
end

local function is_callable(value)
  if type(value) == "function" then return true end
  local mt = debug.getmetatable(value)
  return mt ~= nil and rawget(mt, "__call") ~= nil
end

-- Splits "a.b:c" into names { "a", "b", "c" } and separators { ".", ":" }. The last name may be
-- empty ("a." completes every field of a). Returns nil for anything else.
local function split_path(path)
  local names, separators = {}, {}
  local position = 1
  while true do
    local name, separator, after = path:match("^([%a_]?[%w_]*)([.:]?)()", position)
    names[#names + 1] = name
    if separator == "" then
      if after <= #path then return nil end
      break
    end
    if name == "" then return nil end
    separators[#separators + 1] = separator
    position = after
  end
  for _, name in ipairs(names) do
    if name:match("^%d") then return nil end
  end
  for i = 1, #separators - 1 do
    if separators[i] == ":" then return nil end  -- a:b.c is a call, not a path
  end
  return names, separators
end

-- Full completions of the expression ending `text` (what the line editor gives: the word
-- before the cursor): globals and keywords for a bare name, fields for `a.b.`, methods for
-- `obj:`. Each candidate is `text` with the last name completed; sorted, no duplicates.
function M.complete(text)
  local head, path = text:match("^(.-)([%a_][%w_.:]*)$")
  if not path then
    if text:match("[.:]$") or text:match("[%w_]$") then return {} end
    head, path = text, ""
  end
  -- After a closing bracket or a string the value would need evaluating: not completed.
  if head:match("[%]%)}\"'.:]$") then return {} end
  local names, separators = split_path(path)
  if not names then return {} end

  local value = globals
  for i = 1, #names - 1 do
    value = lookup(value, names[i])
    if value == nil then return {} end
  end
  local partial = names[#names]
  local method = separators[#separators] == ":"
  local stem = head .. path:sub(1, #path - #partial)

  local found, list = {}, {}
  local function add(name)
    if not found[name] and name:sub(1, #partial) == partial then
      found[name] = true
      list[#list + 1] = stem .. name
    end
  end
  for _, t in ipairs(index_chain(value)) do
    for key, field in next, t do
      if pretty.is_identifier(key) and (not method or is_callable(field)) then add(key) end
    end
  end
  if #names == 1 then
    for _, word in ipairs(keywords) do add(word) end
  end
  table.sort(list)
  return list
end

-- One line for the values an expression returned, as print would show them but with tables
-- pretty-printed (strings themselves are not quoted at the top level, only inside tables).
function M.format_results(...)
  return pretty.line(...)
end

return M
