-- SVG figures for a run folder: line plots with optional error bands (Llama 2 Figure 6),
-- overlapping histograms (Figure 27) and stacked 100% bars (Figure 25).
--
--   local svg = require "herd.svg"
--   svg.write(out .. "/accuracy.svg", svg.lines{
--     title = "Accuracy vs. data", x_label = "samples", y_label = "accuracy", log_x = true,
--     series = { { name = "RM", points = { { 1e3, 0.61 }, { 1e4, 0.66 } } } },
--   })
--
-- The text depends only on the input (fixed palette, ordered loops, fixed number precision), so
-- the same data gives byte-identical files that diff cleanly between runs.
local M = {}

-- Okabe-Ito colours stay distinguishable under the common colour-vision deficiencies. Yellow comes
-- last because it is faint on white.
M.palette = { "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
              "#F0E442" }
-- Dash patterns for later rounds through the palette, so series 1 and 9 still differ.
local dashes = { false, "6 3", "2 2", "8 3 2 3" }

local CHAR_W = 7 -- rough width of one character at font-size 12; used for layout only

local function is_finite(v)
  return type(v) == "number" and v == v and v > -math.huge and v < math.huge
end

local function style(i)
  local n = #M.palette
  return M.palette[(i - 1) % n + 1], dashes[((i - 1) // n) % #dashes + 1]
end

-- Pixel coordinates: two decimals (far below a pixel), trailing zeros dropped.
local function coord(v)
  local s = string.format("%.2f", v):gsub("%.?0+$", "")
  if s == "-0" then return "0" end
  return s
end

-- Axis and tick labels: integers exactly, others with 4 significant digits ("0.25", "1.5e+06").
function M.format_number(v)
  if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", v) end
  return string.format("%.4g", v)
end

local entities = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                   ["'"] = "&apos;" }

-- XML-escapes text; control characters are dropped because XML 1.0 cannot hold them at all.
function M.escape(text)
  local s = tostring(text):gsub("[%z\1-\8\11\12\14-\31]", "")
  return (s:gsub("[&<>\"']", entities))
end
local escape = M.escape

-- `attrs` is a flat list { name, value, ... } so attribute order is fixed; false skips one.
local function start_tag(name, attrs)
  local parts = { "<", name }
  for i = 1, #attrs, 2 do
    local v = attrs[i + 1]
    if v ~= false then
      parts[#parts + 1] = string.format(' %s="%s"', attrs[i],
        type(v) == "number" and coord(v) or escape(v))
    end
  end
  return table.concat(parts)
end

-- An element; `body` (already escaped) nil makes it empty (`<name .../>`).
local function tag(name, attrs, body)
  if body == nil then return start_tag(name, attrs) .. "/>" end
  return start_tag(name, attrs) .. ">" .. body .. "</" .. name .. ">"
end

local function text(x, y, s, anchor, extra)
  local attrs = { "x", x, "y", y, "text-anchor", anchor or false }
  for _, v in ipairs(extra or {}) do attrs[#attrs + 1] = v end
  return tag("text", attrs, escape(s))
end

local function text_width(s)
  return (utf8.len(s) or #s) * CHAR_W
end

-- Ticks ----------------------------------------------------------------------------------------

-- The 1-2-5 step (m * 10^e) that cuts `span` into about `count` intervals.
local function nice_step(span, count)
  local raw = span / count
  local e = math.floor(math.log(raw, 10))
  for _, m in ipairs { 1, 2, 5, 10 } do
    if raw <= m * 10.0 ^ e * (1 + 1e-9) then
      if m == 10 then return 1, e + 1 end
      return m, e
    end
  end
  return 1, e + 1
end

-- k * m * 10^e; dividing by 10^-e gives the double nearest 0.3 where multiplying by 0.1 would not.
local function tick_value(k, m, e)
  if e >= 0 then return k * m * 10.0 ^ e end
  return k * m / 10.0 ^ (-e)
end

-- Round ticks for [lo, hi]: returns ticks, the axis range and the step. The range widens to the
-- outer ticks unless `exact`, in which case only ticks inside [lo, hi] are kept.
function M.ticks(lo, hi, count, exact)
  if hi < lo then lo, hi = hi, lo end
  if hi == lo then
    local pad = lo == 0 and 1 or math.abs(lo) * 0.1
    lo, hi = lo - pad, hi + pad
  end
  local m, e = nice_step(hi - lo, count or 5)
  local step = tick_value(1, m, e)
  local first, last
  if exact then
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
  else
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
  end
  local ticks = {}
  for k = first, last do ticks[#ticks + 1] = tick_value(k, m, e) end
  if not exact then lo, hi = ticks[1], ticks[#ticks] end
  return ticks, lo, hi, step
end

-- Decade ticks for a log axis over [lo, hi] (both > 0), with 2 and 5 added when the range spans
-- few decades so there are enough labels.
local function log_ticks(lo, hi)
  local a = math.floor(math.log(lo, 10) + 1e-9)
  local b = math.ceil(math.log(hi, 10) - 1e-9)
  if b == a then b = a + 1 end
  local mults = b - a <= 2 and { 1, 2, 5 } or { 1 }
  local ticks = {}
  for d = a, b do
    for _, m in ipairs(mults) do
      if d < b or m == 1 then ticks[#ticks + 1] = tick_value(m, 1, d) end
    end
  end
  return ticks, tick_value(1, 1, a), tick_value(1, 1, b)
end

local function linear(lo, hi, p0, p1)
  return function(v) return p0 + (v - lo) / (hi - lo) * (p1 - p0) end
end

local function logarithmic(lo, hi, p0, p1)
  local a, b = math.log(lo, 10), math.log(hi, 10)
  return function(v) return p0 + (math.log(v, 10) - a) / (b - a) * (p1 - p0) end
end

-- Arguments ------------------------------------------------------------------------------------

-- Catches misspelt options (`x_lable`) instead of silently ignoring them.
local function check_fields(fn, opts, allowed)
  if type(opts) ~= "table" then error("herd.svg." .. fn .. ": expected a table of options", 3) end
  local unknown = {}
  for key in pairs(opts) do
    if not allowed[key] then unknown[#unknown + 1] = tostring(key) end
  end
  if #unknown > 0 then
    table.sort(unknown)
    error(string.format("herd.svg.%s: unknown option '%s'", fn, unknown[1]), 3)
  end
end

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function series_name(s, i)
  return s.name ~= nil and tostring(s.name) or "series " .. i
end

local function nonempty_list(fn, value, what)
  if type(value) ~= "table" or #value == 0 then
    error(string.format("herd.svg.%s: %s must be a non-empty list", fn, what), 3)
  end
end

-- Layout ---------------------------------------------------------------------------------------

-- The plot area (x0..x1, y0..y1) inside a width x height canvas, leaving room for the title,
-- axis labels, the widest y tick label and a legend on the right.
local function layout(opts, y_labels, names)
  local w, h = opts.width or 640, opts.height or 400
  local label_w = 0
  for _, s in ipairs(y_labels) do label_w = math.max(label_w, text_width(s)) end
  local legend_w = 0
  for _, s in ipairs(names) do legend_w = math.max(legend_w, text_width(s)) end
  legend_w = math.min(legend_w + 40, w / 3)
  local f = { w = w, h = h, x0 = label_w + 12 + (opts.y_label and 20 or 0),
              y0 = opts.title and 32 or 12, x1 = w - legend_w - 8,
              y1 = h - 26 - (opts.x_label and 18 or 0) }
  if f.x1 - f.x0 < 40 or f.y1 - f.y0 < 40 then
    error(string.format("herd.svg: a %dx%d figure is too small for its labels", w, h), 3)
  end
  return f
end

local function open(f, opts, out)
  out[#out + 1] = start_tag("svg", { "xmlns", "http://www.w3.org/2000/svg", "width", f.w,
    "height", f.h, "viewBox", "0 0 " .. coord(f.w) .. " " .. coord(f.h),
    "font-family", "sans-serif", "font-size", 12 }) .. ">" -- close() ends it
  out[#out + 1] = tag("rect", { "width", f.w, "height", f.h, "fill", "#ffffff" })
  if opts.title then
    out[#out + 1] = text(f.w / 2, 20, opts.title, "middle", { "font-size", 14,
      "font-weight", "bold" })
  end
  if opts.x_label then
    out[#out + 1] = text((f.x0 + f.x1) / 2, f.h - 8, opts.x_label, "middle")
  end
  if opts.y_label then
    local cy = (f.y0 + f.y1) / 2
    out[#out + 1] = text(0, 0, opts.y_label, "middle",
      { "transform", "translate(14," .. coord(cy) .. ") rotate(-90)" })
  end
end

local function close(out)
  out[#out + 1] = "</svg>\n"
  return table.concat(out, "\n")
end

-- Grid lines and labels for x ticks (`xs`: values, `sx`: their pixels) and y ticks.
local function axes(f, out, xs, sx, x_text, ys, sy, y_text)
  local grid, labels = {}, {}
  for i, v in ipairs(xs) do
    local x = sx(v)
    grid[#grid + 1] = tag("line", { "x1", x, "y1", f.y0, "x2", x, "y2", f.y1 })
    labels[#labels + 1] = text(x, f.y1 + 16, x_text[i], "middle")
  end
  for i, v in ipairs(ys) do
    local y = sy(v)
    grid[#grid + 1] = tag("line", { "x1", f.x0, "y1", y, "x2", f.x1, "y2", y })
    labels[#labels + 1] = text(f.x0 - 6, y + 4, y_text[i], "end")
  end
  out[#out + 1] = tag("g", { "class", "grid", "stroke", "#dddddd" }, table.concat(grid))
  out[#out + 1] = tag("g", { "class", "ticks" }, table.concat(labels))
end

local function frame(f, out)
  out[#out + 1] = tag("rect", { "class", "frame", "x", f.x0, "y", f.y0, "width", f.x1 - f.x0,
    "height", f.y1 - f.y0, "fill", "none", "stroke", "#333333" })
end

-- One legend row per entry: a line swatch with a marker (kind "line") or a filled box.
local function legend(f, out, entries, kind)
  local rows = {}
  for i, e in ipairs(entries) do
    local x, y = f.x1 + 12, f.y0 + 10 + (i - 1) * 18
    local swatch
    if kind == "line" then
      swatch = tag("line", { "x1", x, "y1", y, "x2", x + 20, "y2", y, "stroke", e.colour,
        "stroke-width", 2, "stroke-dasharray", e.dash or false }) ..
        tag("circle", { "cx", x + 10, "cy", y, "r", 3, "fill", e.colour })
    else
      swatch = tag("rect", { "x", x, "y", y - 6, "width", 20, "height", 12, "fill", e.colour,
        "fill-opacity", e.opacity or false })
    end
    rows[#rows + 1] = tag("g", { "class", "legend-entry" }, swatch .. text(x + 26, y + 4, e.name))
  end
  out[#out + 1] = tag("g", { "class", "legend" }, table.concat(rows))
end

local function labels_of(values)
  local labels = {}
  for i, v in ipairs(values) do labels[i] = M.format_number(v) end
  return labels
end

-- Lines ----------------------------------------------------------------------------------------

local lines_fields = set { "title", "x_label", "y_label", "series", "width", "height", "y_min",
                           "y_max", "log_x", "markers" }

-- The drawable points of one series, ordered by x (stable for equal x): NaN, inf and (on a log
-- axis) x <= 0 are skipped since they have no position.
local function usable_points(list, log_x, fields)
  local pts = {}
  for i, p in ipairs(list or {}) do
    local ok = type(p) == "table"
    for k = 1, fields do ok = ok and is_finite(p[k]) end
    if ok and (not log_x or p[1] > 0) then pts[#pts + 1] = { p[1], p[2], p[3], i = i } end
  end
  table.sort(pts, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a.i < b.i
  end)
  return pts
end

local function extend(b, x, y)
  if not b.xmin then
    b.xmin, b.xmax, b.ymin, b.ymax = x, x, y, y
  else
    b.xmin, b.xmax = math.min(b.xmin, x), math.max(b.xmax, x)
    b.ymin, b.ymax = math.min(b.ymin, y), math.max(b.ymax, y)
  end
end

local function prepare_series(opts)
  local prepared, b = {}, {}
  for i, s in ipairs(opts.series) do
    local name = series_name(s, i)
    if type(s) ~= "table" or type(s.points) ~= "table" or #s.points == 0 then
      error(string.format("herd.svg.lines: series '%s' has no points", name), 3)
    end
    local pts = usable_points(s.points, opts.log_x, 2)
    local band = usable_points(s.band, opts.log_x, 3)
    for _, p in ipairs(pts) do extend(b, p[1], p[2]) end
    for _, p in ipairs(band) do
      extend(b, p[1], p[2])
      extend(b, p[1], p[3])
    end
    local colour, dash = style(i)
    prepared[i] = { name = name, points = pts, band = band, colour = colour, dash = dash }
  end
  return prepared, b
end

-- The y axis: the data range widened to round ticks; y_min / y_max, when given, are kept exactly.
local function y_axis(opts, b)
  local lo, hi = opts.y_min or b.ymin or 0, opts.y_max or b.ymax or 1
  if opts.y_min and opts.y_max and opts.y_min >= opts.y_max then
    error("herd.svg.lines: y_min must be below y_max", 3)
  end
  local ticks, nlo, nhi = M.ticks(lo, hi, 5)
  lo, hi = opts.y_min or nlo, opts.y_max or nhi
  local kept = {}
  for _, v in ipairs(ticks) do
    if v >= lo - 1e-9 * (hi - lo) and v <= hi + 1e-9 * (hi - lo) then kept[#kept + 1] = v end
  end
  return kept, lo, hi
end

local function x_axis(opts, b)
  if opts.log_x then return log_ticks(b.xmin or 1, b.xmax or 10) end
  local ticks, lo, hi = M.ticks(b.xmin or 0, b.xmax or 1, 6)
  return ticks, lo, hi
end

local function band_polygon(s, sx, sy)
  local pts = {}
  for _, p in ipairs(s.band) do pts[#pts + 1] = coord(sx(p[1])) .. "," .. coord(sy(p[2])) end
  for i = #s.band, 1, -1 do
    local p = s.band[i]
    pts[#pts + 1] = coord(sx(p[1])) .. "," .. coord(sy(p[3]))
  end
  return tag("polygon", { "class", "band", "points", table.concat(pts, " "), "fill", s.colour,
    "fill-opacity", 0.2, "stroke", "none" })
end

local function series_line(s, sx, sy)
  local pts = {}
  for _, p in ipairs(s.points) do pts[#pts + 1] = coord(sx(p[1])) .. "," .. coord(sy(p[2])) end
  return tag("polyline", { "class", "series", "points", table.concat(pts, " "), "fill", "none",
    "stroke", s.colour, "stroke-width", 2, "stroke-dasharray", s.dash or false })
end

local function series_markers(s, sx, sy)
  local dots = {}
  for _, p in ipairs(s.points) do
    dots[#dots + 1] = tag("circle", { "cx", sx(p[1]), "cy", sy(p[2]), "r", 3 })
  end
  return tag("g", { "class", "markers", "fill", s.colour }, table.concat(dots))
end

-- A line plot; see the header comment. Series are drawn in order, each with its own colour.
function M.lines(opts)
  check_fields("lines", opts, lines_fields)
  nonempty_list("lines", opts.series, "series")
  local series, b = prepare_series(opts)
  local yt, ylo, yhi = y_axis(opts, b)
  local xt, xlo, xhi = x_axis(opts, b)
  local names = {}
  for i, s in ipairs(series) do names[i] = s.name end
  local f = layout(opts, labels_of(yt), names)
  local sx = (opts.log_x and logarithmic or linear)(xlo, xhi, f.x0, f.x1)
  local sy = linear(ylo, yhi, f.y1, f.y0)
  local out = {}
  open(f, opts, out)
  axes(f, out, xt, sx, labels_of(xt), yt, sy, labels_of(yt))
  -- Clipped so that points outside a fixed y_min / y_max do not spill over the labels; the margin
  -- keeps whole the markers that sit on the frame.
  out[#out + 1] = tag("defs", {}, tag("clipPath", { "id", "herd-plot-area" }, tag("rect", {
    "x", f.x0 - 4, "y", f.y0 - 4, "width", f.x1 - f.x0 + 8, "height", f.y1 - f.y0 + 8 })))
  local body = {}
  for _, s in ipairs(series) do
    if #s.band > 0 then body[#body + 1] = band_polygon(s, sx, sy) end
  end
  for _, s in ipairs(series) do body[#body + 1] = series_line(s, sx, sy) end
  if opts.markers ~= false then
    for _, s in ipairs(series) do body[#body + 1] = series_markers(s, sx, sy) end
  end
  out[#out + 1] = tag("g", { "clip-path", "url(#herd-plot-area)" }, table.concat(body, "\n"))
  frame(f, out)
  local entries = {}
  for i, s in ipairs(series) do entries[i] = { name = s.name, colour = s.colour, dash = s.dash } end
  legend(f, out, entries, "line")
  return close(out)
end

-- Histogram ------------------------------------------------------------------------------------

local histogram_fields = set { "title", "x_label", "y_label", "edges", "series", "density",
                               "width", "height" }

local function check_edges(edges)
  if type(edges) ~= "table" or #edges < 2 then
    error("herd.svg.histogram: edges must list at least 2 numbers", 3)
  end
  for i, e in ipairs(edges) do
    if not is_finite(e) or (i > 1 and e <= edges[i - 1]) then
      error(string.format("herd.svg.histogram: edges must be finite and increasing (edge %d)",
        i), 3)
    end
  end
end

-- Bar heights of one series: counts, or with `density` counts / (total * bin width) so series of
-- different sizes compare.
local function bar_values(s, i, edges, density)
  local name, bins = series_name(s, i), #edges - 1
  local counts = type(s) == "table" and s.counts
  if type(counts) ~= "table" or #counts == 0 then
    error(string.format("herd.svg.histogram: series '%s' has no counts", name), 3)
  end
  if #counts ~= bins then
    error(string.format("herd.svg.histogram: series '%s' has %d counts for %d bins", name,
      #counts, bins), 3)
  end
  local total = 0
  for k, c in ipairs(counts) do
    if not is_finite(c) or c < 0 then
      error(string.format("herd.svg.histogram: series '%s' count %d is not a finite number >= 0",
        name, k), 3)
    end
    total = total + c
  end
  local values = {}
  for k, c in ipairs(counts) do
    values[k] = (density and total > 0) and c / (total * (edges[k + 1] - edges[k])) or
      (density and 0 or c)
  end
  return values
end

-- Overlapping semi-transparent bars, one set per series (Figure 27 style).
function M.histogram(opts)
  check_fields("histogram", opts, histogram_fields)
  local edges = opts.edges
  check_edges(edges)
  nonempty_list("histogram", opts.series, "series")
  local all, top, names = {}, 0, {}
  for i, s in ipairs(opts.series) do
    all[i] = bar_values(s, i, edges, opts.density)
    names[i] = series_name(s, i)
    for _, v in ipairs(all[i]) do top = math.max(top, v) end
  end
  local yt, _, yhi = M.ticks(0, top > 0 and top or 1, 5)
  local xt = M.ticks(edges[1], edges[#edges], 6, true)
  local labelled = { y_label = opts.y_label or (opts.density and "density" or "count") }
  for _, k in ipairs { "title", "x_label", "width", "height" } do labelled[k] = opts[k] end
  local f = layout(labelled, labels_of(yt), names)
  local sx = linear(edges[1], edges[#edges], f.x0, f.x1)
  local sy = linear(0, yhi, f.y1, f.y0)
  local out, entries = {}, {}
  open(f, labelled, out)
  axes(f, out, xt, sx, labels_of(xt), yt, sy, labels_of(yt))
  for i, values in ipairs(all) do
    local colour = style(i)
    local bars = {}
    for k, v in ipairs(values) do
      local x, y = sx(edges[k]), sy(v)
      bars[k] = tag("rect", { "class", "bar", "x", x, "y", y, "width", sx(edges[k + 1]) - x,
        "height", f.y1 - y })
    end
    out[#out + 1] = tag("g", { "class", "bars", "fill", colour, "fill-opacity", 0.45,
      "stroke", colour, "stroke-width", 0.5 }, table.concat(bars))
    entries[i] = { name = names[i], colour = colour, opacity = 0.45 }
  end
  frame(f, out)
  legend(f, out, entries, "box")
  return close(out)
end

-- Counts of `values` in the bins [e_k, e_k+1) of `edges` (the last bin includes its right edge);
-- NaN and values outside the edges are left out. For histogram's `counts`.
function M.bin(values, edges)
  local counts, n = {}, #edges - 1
  for k = 1, n do counts[k] = 0 end
  for _, v in ipairs(values) do
    if is_finite(v) and v >= edges[1] and v <= edges[n + 1] then
      local lo, hi = 1, n -- binary search for the last edge <= v
      while lo < hi do
        local mid = (lo + hi + 1) // 2
        if edges[mid] <= v then lo = mid else hi = mid - 1 end
      end
      counts[lo] = counts[lo] + 1
    end
  end
  return counts
end

-- Stacked bars ---------------------------------------------------------------------------------

local stacked_fields = set { "title", "x_label", "y_label", "categories", "parts", "width",
                             "height" }

local function check_parts(parts, ncat)
  for i, p in ipairs(parts) do
    local name = series_name(p, i)
    local values = type(p) == "table" and p.values
    if type(values) ~= "table" or #values == 0 then
      error(string.format("herd.svg.stacked: part '%s' has no values", name), 3)
    end
    if #values ~= ncat then
      error(string.format("herd.svg.stacked: part '%s' has %d values for %d categories", name,
        #values, ncat), 3)
    end
    for k, v in ipairs(values) do
      if not is_finite(v) or v < 0 then
        error(string.format("herd.svg.stacked: part '%s' value %d is not a finite number >= 0",
          name, k), 3)
      end
    end
  end
end

-- Segment boundaries of one bar, top to bottom, rounded to the printed precision first so the
-- printed heights add up to the bar exactly. A category whose values sum to 0 draws nothing.
local function boundaries(parts, c, f)
  local total = 0
  for _, p in ipairs(parts) do total = total + p.values[c] end
  local ys, cum = { tonumber(coord(f.y0)) }, 0
  for k, p in ipairs(parts) do
    cum = cum + p.values[c]
    ys[k + 1] = total > 0 and tonumber(coord(f.y0 + (f.y1 - f.y0) * cum / total)) or ys[1]
  end
  if total > 0 then ys[#ys] = tonumber(coord(f.y1)) end
  return ys
end

-- Stacked 100% bars, one per category (Figure 25 style). The first part is the top segment, so
-- the legend (top to bottom) follows the bars.
function M.stacked(opts)
  check_fields("stacked", opts, stacked_fields)
  nonempty_list("stacked", opts.categories, "categories")
  nonempty_list("stacked", opts.parts, "parts")
  local cats, parts = opts.categories, opts.parts
  check_parts(parts, #cats)
  local names = {}
  for i, p in ipairs(parts) do names[i] = series_name(p, i) end
  local yt = { 0, 20, 40, 60, 80, 100 }
  local y_text = {}
  for i, v in ipairs(yt) do y_text[i] = v .. "%" end
  local f = layout(opts, y_text, names)
  local sy = linear(0, 100, f.y1, f.y0)
  local band = (f.x1 - f.x0) / #cats
  local cx = function(c) return f.x0 + (c - 0.5) * band end
  local out = {}
  open(f, opts, out)
  local cat_labels = {}
  for c, name in ipairs(cats) do cat_labels[c] = tostring(name) end
  axes(f, out, {}, cx, {}, yt, sy, y_text)
  local bw = band * 0.6
  for c = 1, #cats do
    local ys, rects = boundaries(parts, c, f), {}
    for k = 1, #parts do
      rects[k] = tag("rect", { "class", "bar", "x", cx(c) - bw / 2, "y", ys[k], "width", bw,
        "height", ys[k + 1] - ys[k], "fill", (style(k)) })
    end
    out[#out + 1] = tag("g", { "class", "category" }, table.concat(rects))
    out[#out + 1] = text(cx(c), f.y1 + 16, cat_labels[c], "middle")
  end
  frame(f, out)
  local entries = {}
  for i, name in ipairs(names) do entries[i] = { name = name, colour = (style(i)) } end
  legend(f, out, entries, "box")
  return close(out)
end

-- Writing --------------------------------------------------------------------------------------

-- Writes `svg_text` to `path` through `path .. ".tmp"` and a rename, so a reader (or a crash)
-- never sees half a figure. Returns path.
function M.write(path, svg_text)
  if type(path) ~= "string" then error("herd.svg.write: path must be a string", 2) end
  if type(svg_text) ~= "string" then
    error("herd.svg.write: '" .. path .. "': text must be a string", 2)
  end
  local tmp = path .. ".tmp"
  local file, err = io.open(tmp, "wb")
  if not file then error(string.format("herd.svg.write: cannot write '%s': %s", path, err), 2) end
  local ok, werr = file:write(svg_text)
  local closed, cerr = file:close()
  if not ok or not closed then
    os.remove(tmp)
    error(string.format("herd.svg.write: cannot write '%s': %s", path, tostring(werr or cerr)), 2)
  end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then
    os.remove(tmp)
    error(string.format("herd.svg.write: cannot write '%s': %s", path, rerr), 2)
  end
  return path
end

return M
