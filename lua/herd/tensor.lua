-- herd.tensor: tensors in Lua (the C side is bindings/ltensor.c).
--
--   local tensor = require("herd").tensor
--   local a = tensor.from{ {1, 2}, {3, 4} }
--   local b = tensor.randn({2, 2}, { seed = 1 })
--   print(a + b * 2, (a * b):sum(), a[2][1], a:get(2, 1))
--   tensor.save("x.safetensors", { a = a, b = b })
--
-- Indices and dims are 1-based, as everywhere in Lua.
local core = require "herd.tensor_core"

local M = {}
local metatable = core.metatable
local methods = metatable.methods

function M.is_tensor(value)
  return getmetatable(value) == metatable
end

function M.zeros(shape, dtype) return core.new(shape, dtype) end
function M.ones(shape, dtype) return core.new(shape, dtype, 1) end
function M.full(shape, value, dtype) return core.new(shape, dtype, value) end

-- Seeds default to math.random, which herd.run seeds from the run's seed: reproducible runs.
local function seed_of(opts)
  if opts.seed ~= nil and math.type(opts.seed) ~= "integer" then
    error("seed must be an integer", 3)
  end
  return opts.seed or math.random(0, 2147483647), opts.offset or 0
end

-- Standard normal values (Philox: the same seed gives the same numbers on any thread count).
function M.randn(shape, opts)
  local seed, offset = seed_of(opts or {})
  return core.random(shape, "normal", seed, offset)
end

-- Uniform values in [0, 1).
function M.rand(shape, opts)
  local seed, offset = seed_of(opts or {})
  return core.random(shape, "uniform", seed, offset)
end

-- The shape of a nested table of numbers, checking that it is rectangular.
local function nested_shape(value, path)
  if type(value) == "number" then return {} end
  if type(value) ~= "table" then
    error(string.format("tensor.from: %s is a %s, not a number or table", path, type(value)), 4)
  end
  if #value == 0 then return { 0 } end
  local inner = nested_shape(value[1], path .. "[1]")
  for i = 2, #value do
    local other = nested_shape(value[i], path .. "[" .. i .. "]")
    if #other ~= #inner then error("tensor.from: ragged table at " .. path, 4) end
    for d = 1, #inner do
      if other[d] ~= inner[d] then error("tensor.from: ragged table at " .. path .. "[" .. i .. "]", 4) end
    end
  end
  table.insert(inner, 1, #value)
  return inner
end

local function flatten(value, out)
  if type(value) == "number" then
    out[#out + 1] = value
  else
    for i = 1, #value do flatten(value[i], out) end
  end
  return out
end

-- tensor.from{{1, 2}, {3, 4}} (nested tables or a number), dtype "f32" by default.
function M.from(value, dtype)
  local shape = nested_shape(value, "value")
  local t = core.new(shape, dtype)
  t:_set_flat(flatten(value, {}))
  return t
end

function M.load(path) return core.load(path) end

-- tensor.save(path, { name = t, ... }): a safetensors file, written atomically.
function M.save(path, tensors)
  local names, list = {}, {}
  for name in pairs(tensors) do
    if type(name) ~= "string" then error("tensor.save: names must be strings", 2) end
    names[#names + 1] = name
  end
  table.sort(names)
  for i, name in ipairs(names) do
    if not M.is_tensor(tensors[name]) then
      error(string.format("tensor.save: '%s' is not a tensor", name), 2)
    end
    list[i] = tensors[name]
  end
  core.save(path, names, list)
end

-- ---------------------------------------------------------------- Lua-side methods

function methods.totable(t)
  local shape, flat = t:shape(), t:flat()
  if #shape == 0 then return flat[1] end
  local position = 0
  local function build(dim)
    local result = {}
    for i = 1, shape[dim] do
      if dim == #shape then
        position = position + 1
        result[i] = flat[position]
      else
        result[i] = build(dim + 1)
      end
    end
    return result
  end
  return build(1)
end

local EDGE = 3  -- elements shown at each end of a long dim

-- Indices shown along a dim of `size`: all, or the first and last EDGE with a gap (false).
local function shown(size)
  local list = {}
  if size <= 2 * EDGE + 1 then
    for i = 1, size do list[#list + 1] = i end
  else
    for i = 1, EDGE do list[#list + 1] = i end
    list[#list + 1] = false
    for i = size - EDGE + 1, size do list[#list + 1] = i end
  end
  return list
end

local function number_format(values, integral)
  local all_integers, largest, smallest = true, 0, math.huge
  for _, v in ipairs(values) do
    if v ~= v or v == math.huge or v == -math.huge then
      all_integers = all_integers and integral
    else
      if v ~= math.floor(v) then all_integers = false end
      local a = math.abs(v)
      largest = math.max(largest, a)
      if a > 0 then smallest = math.min(smallest, a) end
    end
  end
  if integral or (all_integers and largest < 1e9) then return "%.0f" end
  if largest < 1e5 and (smallest >= 1e-3 or smallest == math.huge) then return "%.4f" end
  return "%.4e"
end

local function render(value, fmt)
  if value ~= value then return "nan" end
  if value == math.huge then return "inf" end
  if value == -math.huge then return "-inf" end
  return string.format(fmt, value)
end

-- The lines of a matrix (rows x cols) read through get(i, j); cells right-aligned.
local function matrix_lines(rows, cols, get, integral)
  local row_list, col_list = shown(rows), shown(cols)
  local values = {}
  for _, i in ipairs(row_list) do
    for _, j in ipairs(col_list) do
      if i and j then values[#values + 1] = get(i, j) end
    end
  end
  local fmt = number_format(values, integral)
  local cells, width = {}, 1
  for r, i in ipairs(row_list) do
    cells[r] = {}
    for c, j in ipairs(col_list) do
      local text = (i and j) and render(get(i, j), fmt) or "..."
      cells[r][c] = text
      if i and j then width = math.max(width, #text) end  -- "..." may stick out
    end
  end
  local lines = {}
  for r, row in ipairs(cells) do
    local parts = {}
    for c, text in ipairs(row) do parts[c] = string.rep(" ", math.max(0, width - #text)) .. text end
    lines[r] = row_list[r] and table.concat(parts, " ") or "..."
  end
  return lines
end

local function describe(t)
  local shape = t:shape()
  local dims = {}
  for i, n in ipairs(shape) do dims[i] = tostring(n) end
  return string.format("[%s tensor of shape (%s)]", t:dtype(), table.concat(dims, ","))
end

function metatable.__tostring(t)
  local shape = t:shape()
  local integral = t:dtype() == "i32" or t:dtype() == "u8"
  local lines = {}
  if #shape == 0 then
    lines[1] = render(t:get(), integral and "%.0f" or "%.4f")
  elseif #shape == 1 then
    lines = matrix_lines(1, shape[1], function(_, j) return t:get(j) end, integral)
  elseif #shape == 2 then
    lines = matrix_lines(shape[1], shape[2], function(i, j) return t:get(i, j) end, integral)
  else
    -- slices over the leading dims, each a matrix: (1,2,.,.) =
    local leading = {}
    for d = 1, #shape - 2 do leading[d] = shown(shape[d]) end
    local function walk(d, prefix)
      if d > #shape - 2 then
        lines[#lines + 1] = "(" .. table.concat(prefix, ",") .. ",.,.) ="
        for _, line in ipairs(matrix_lines(shape[#shape - 1], shape[#shape], function(i, j)
          local index = { table.unpack(prefix) }
          index[#index + 1], index[#index + 2] = i, j
          return t:get(table.unpack(index))
        end, integral)) do
          lines[#lines + 1] = line
        end
        lines[#lines + 1] = ""
        return
      end
      for _, i in ipairs(leading[d]) do
        if i then
          local next_prefix = { table.unpack(prefix) }
          next_prefix[#next_prefix + 1] = i
          walk(d + 1, next_prefix)
        else
          lines[#lines + 1] = "..."
          lines[#lines + 1] = ""
        end
      end
    end
    walk(1, {})
  end
  lines[#lines + 1] = describe(t)
  return table.concat(lines, "\n")
end

metatable.__name = "herd.Tensor"

return M
