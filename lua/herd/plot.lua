-- Terminal line charts in plain ASCII.
--
--   local plot = require "herd.plot"
--   print(plot.lines({ { name = "loss", xs = {1, 2, 3}, ys = {0.9, 0.5, 0.4} } },
--                    { width = 60, height = 12 }))
--
-- The chart is a grid of opts.width x opts.height cells with the y range labelled on the left
-- (max on the top row, min on the bottom row), the x range under the axis and a legend below.
-- Each series gets its own marker ('*', '+', 'o', ...); consecutive points are joined. Points that
-- are not finite numbers (NaN, +/-inf, nil) are skipped. The output depends only on the input.
local M = {}

M.markers = { "*", "+", "o", "x", "#", "%", "@", "=" }

local function is_finite(value)
  return type(value) == "number" and value == value and value > -math.huge and value < math.huge
end

-- A number in at most about 10 characters ("0.0123", "1.5e+06", "100").
function M.format_number(value)
  if math.type(value) == "integer" then return string.format("%d", value) end
  if value == math.floor(value) and math.abs(value) < 1e15 then
    return string.format("%d", math.floor(value))
  end
  return string.format("%.4g", value)
end

-- The finite (x, y) points of one series, ordered by x (stable for equal x).
local function finite_points(series)
  local points = {}
  for i = 1, math.max(#(series.xs or {}), #(series.ys or {})) do
    local x, y = series.xs[i], series.ys[i]
    if is_finite(x) and is_finite(y) then points[#points + 1] = { x = x, y = y, i = i } end
  end
  table.sort(points, function(a, b)
    if a.x ~= b.x then return a.x < b.x end
    return a.i < b.i
  end)
  return points
end

-- The range of x and y over every series; nil when there is no point at all.
local function bounds(all_points)
  local b
  for _, points in ipairs(all_points) do
    for _, p in ipairs(points) do
      if not b then
        b = { xmin = p.x, xmax = p.x, ymin = p.y, ymax = p.y }
      else
        b.xmin, b.xmax = math.min(b.xmin, p.x), math.max(b.xmax, p.x)
        b.ymin, b.ymax = math.min(b.ymin, p.y), math.max(b.ymax, p.y)
      end
    end
  end
  return b
end

-- Maps value in [lo, hi] to a cell in 0 .. cells - 1 (a real number, not rounded). A range of
-- width zero (one point, a flat series) maps to the middle cell.
local function scale(value, lo, hi, cells)
  if hi == lo then return (cells - 1) / 2 end
  return (value - lo) / (hi - lo) * (cells - 1)
end

local function round(value)
  return math.floor(value + 0.5)
end

local function new_grid(width, height)
  local grid = {}
  for row = 1, height do
    grid[row] = {}
    for col = 1, width do grid[row][col] = " " end
  end
  return grid
end

-- Grid rows count from the top; `level` counts from the bottom (0 = bottom row).
local function put(grid, col, level, marker)
  local row = #grid - level
  if grid[row] and grid[row][col + 1] then grid[row][col + 1] = marker end
end

-- Joins (c0, r0) to (c1, r1), c0 <= c1, filling each column between the rows the segment
-- crosses in it so steep segments stay connected.
local function draw_segment(grid, c0, r0, c1, r1, marker)
  if c0 == c1 then
    for level = round(math.min(r0, r1)), round(math.max(r0, r1)) do put(grid, c0, level, marker) end
    return
  end
  local function at(c)
    c = math.max(c0, math.min(c1, c))
    return r0 + (r1 - r0) * (c - c0) / (c1 - c0)
  end
  for col = c0, c1 do
    local a, b = at(col - 0.5), at(col + 0.5)
    for level = round(math.min(a, b)), round(math.max(a, b)) do put(grid, col, level, marker) end
  end
end

local function draw_series(grid, points, b, marker)
  local width, height = #grid[1], #grid
  local prev
  for _, p in ipairs(points) do
    local c = round(scale(p.x, b.xmin, b.xmax, width))
    local r = scale(p.y, b.ymin, b.ymax, height)
    if prev then draw_segment(grid, prev.c, prev.r, c, r, marker) end
    prev = { c = c, r = r }
  end
  -- the points themselves last, so a point is never hidden by its own series' line
  for _, p in ipairs(points) do
    put(grid, round(scale(p.x, b.xmin, b.xmax, width)),
      round(scale(p.y, b.ymin, b.ymax, height)), marker)
  end
end

local function pad_left(text, width)
  return string.rep(" ", width - #text) .. text
end

-- The y labels by grid row: max on the top row, min on the bottom one; a flat range has one
-- label on the row its points were drawn in.
local function y_labels(b, height)
  if b.ymin == b.ymax then
    return { [height - round((height - 1) / 2)] = M.format_number(b.ymin) }
  end
  return { [1] = M.format_number(b.ymax), [height] = M.format_number(b.ymin) }
end

local function x_axis_labels(b, width, indent)
  if b.xmin == b.xmax then
    local text = M.format_number(b.xmin)
    return string.rep(" ", indent + math.max(0, round((width - 1) / 2) - #text // 2)) .. text
  end
  local left, right = M.format_number(b.xmin), M.format_number(b.xmax)
  return string.rep(" ", indent) .. left .. string.rep(" ", math.max(1, width - #left - #right))
    .. right
end

local function render(grid, b, names, markers)
  local width, height = #grid[1], #grid
  local labels = y_labels(b, height)
  local label_width = 0
  for _, text in pairs(labels) do label_width = math.max(label_width, #text) end
  local lines = {}
  for row = 1, height do
    lines[#lines + 1] = pad_left(labels[row] or "", label_width) .. " |" .. table.concat(grid[row])
  end
  lines[#lines + 1] = string.rep(" ", label_width) .. " +" .. string.rep("-", width)
  lines[#lines + 1] = x_axis_labels(b, width, label_width + 2)
  local legend = {}
  for i, name in ipairs(names) do legend[#legend + 1] = markers[i] .. " " .. name end
  lines[#lines + 1] = string.rep(" ", label_width + 2) .. table.concat(legend, "   ")
  return table.concat(lines, "\n") .. "\n"
end

local function check_size(value, default, what)
  value = value or default
  if math.type(value) ~= "integer" and not (type(value) == "number" and value == math.floor(value))
  then
    error(string.format("plot: %s must be an integer, got %s", what, tostring(value)), 3)
  end
  value = math.floor(value)
  if value < 2 or value > 1000 then
    error(string.format("plot: %s must be between 2 and 1000, got %d", what, value), 3)
  end
  return value
end

-- series: { {name = "loss", xs = {...}, ys = {...}}, ... }; opts: width (72), height (16),
-- markers (a list of one-character strings). Returns the chart as a string ending in "\n".
function M.lines(series, opts)
  opts = opts or {}
  local width = check_size(opts.width, 72, "width")
  local height = check_size(opts.height, 16, "height")
  local markers = opts.markers or M.markers
  local all_points, names = {}, {}
  for i, s in ipairs(series) do
    all_points[i] = finite_points(s)
    names[i] = tostring(s.name or ("series " .. i))
  end
  local b = bounds(all_points)
  if not b then return "(no finite points to plot)\n" end
  local grid = new_grid(width, height)
  local marks = {}
  for i, points in ipairs(all_points) do
    marks[i] = markers[(i - 1) % #markers + 1]
    draw_series(grid, points, b, marks[i])
  end
  return render(grid, b, names, marks)
end

return M
