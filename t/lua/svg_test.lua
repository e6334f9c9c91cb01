-- Tests of herd.svg: SVG line plots, histograms and stacked bars, and atomic writing.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local svg = require "herd.svg"

-- A tiny XML checker: every tag opened is closed in order, attribute values are quoted, and text
-- holds no raw '<' or stray '&'. Returns true or raises naming the problem.
local function check_xml(text)
  local stack, pos = {}, 1
  while true do
    local s, e, inner = text:find("<([^>]*)>", pos)
    local between = text:sub(pos, (s or #text + 1) - 1)
    if between:find("<") then error("raw '<' in text near " .. pos) end
    local rest = between:gsub("&[%a#][%w]*;", "")
    if rest:find("&") then error("unescaped '&' in text near " .. pos) end
    if not s then break end
    if inner:sub(1, 1) == "/" then
      local name = inner:sub(2)
      local top = table.remove(stack)
      if top ~= name then error(string.format("</%s> closes <%s>", name, tostring(top))) end
    else
      local self_closing = inner:sub(-1) == "/"
      local name, attrs = inner:gsub("/$", ""):match("^([%w:-]+)(.*)$")
      if not name then error("bad tag <" .. inner .. ">") end
      -- Removing every well-formed attribute must leave only spaces.
      local left = attrs:gsub('%s+[%w:-]+="[^"<]*"', "")
      if left:find("%S") then error(string.format("bad attributes in <%s>: %s", name, left)) end
      if not self_closing then stack[#stack + 1] = name end
    end
    pos = e + 1
  end
  if #stack > 0 then error("unclosed <" .. stack[#stack] .. ">") end
  return true
end

local function count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

-- The numbers shown as tick labels: x labels are centred under the axis, y labels end at it.
local function tick_labels(text)
  local block = text:match('<g class="ticks">(.-)</g>')
  local xs, ys = {}, {}
  for anchor, label in block:gmatch('text%-anchor="(%a+)">([^<]*)</text>') do
    local list = anchor == "middle" and xs or ys
    list[#list + 1] = tonumber(label)
  end
  return xs, ys
end

local function is_round(v)
  -- 1, 2 or 5 times a power of ten (or 0), up to printing precision.
  if v == 0 then return true end
  local m = math.abs(v) / 10 ^ math.floor(math.log(math.abs(v), 10) + 1e-9)
  for _, r in ipairs { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 } do
    if math.abs(m - r) < 1e-6 then return true end
  end
  return false
end

local two = {
  title = "Accuracy vs. data", x_label = "samples", y_label = "accuracy",
  series = {
    { name = "helpfulness", points = { { 10, 0.61 }, { 20, 0.66 }, { 40, 0.7 }, { 80, 0.73 } },
      band = { { 10, 0.58, 0.64 }, { 20, 0.63, 0.69 }, { 40, 0.68, 0.72 }, { 80, 0.71, 0.75 } } },
    { name = "safety", points = { { 10, 0.55 }, { 20, 0.62 }, { 40, 0.68 }, { 80, 0.74 } } },
  },
}

t.test("lines: well-formed, one polyline and one legend entry per series", function()
  local out = svg.lines(two)
  t.ok(check_xml(out))
  t.match(out, '^<svg xmlns="http://www.w3.org/2000/svg"')
  t.eq(count(out, "<polyline"), 2)
  t.eq(count(out, '<g class="legend%-entry">'), 2)
  t.match(out, ">helpfulness</text>")
  t.match(out, ">safety</text>")
  t.eq(count(out, 'class="band"'), 1)
  t.eq(count(out, "<circle") - 2, 8, "a marker per point, besides the legend's")
  t.match(out, 'stroke="#0072B2"')
  t.match(out, 'stroke="#E69F00"')
end)

t.test("lines: ticks are round numbers covering the data", function()
  local out = svg.lines{ series = { { name = "s", points = { { 3, 0.123 }, { 97, 0.871 } } } } }
  local xs, ys = tick_labels(out)
  for _, list in ipairs { xs, ys } do
    t.ok(#list >= 3, "at least 3 ticks")
    for _, v in ipairs(list) do t.ok(is_round(v), "round tick " .. tostring(v)) end
  end
  t.ok(xs[1] <= 3 and xs[#xs] >= 97, "x ticks cover 3..97")
  t.ok(ys[1] <= 0.123 and ys[#ys] >= 0.871, "y ticks cover 0.123..0.871")
  local ticks, lo, hi, step = svg.ticks(0.123, 0.871, 5)
  t.eq(step, 0.2)
  t.eq(lo, 0)
  t.eq(hi, 1)
  t.eq(#ticks, 6)
  t.eq(ticks[2], 0.2)
  t.eq(select(4, svg.ticks(0, 1e6, 5)), 200000)
  t.eq(select(4, svg.ticks(-3, 3, 5)), 2)
  local flat = svg.ticks(5, 5, 5)
  t.ok(flat[1] < 5 and flat[#flat] > 5, "a flat range is widened")
end)

t.test("lines: y_min / y_max and log_x", function()
  local out = svg.lines{ y_min = 0, y_max = 1, log_x = true,
    series = { { name = "s", points = { { 100, 0.5 }, { 1e4, 0.7 }, { 0, 0.9 } } } } }
  t.ok(check_xml(out))
  local xs, ys = tick_labels(out)
  t.eq(xs[1], 100)
  t.eq(xs[#xs], 10000)
  t.eq(ys[1], 0)
  t.eq(ys[#ys], 1)
  for _, v in ipairs(xs) do t.ok(is_round(v), "round tick " .. v) end
  -- x = 0 cannot sit on a log axis: two points remain.
  t.eq(count(out:match('<polyline[^>]*>'), "%d+,%d+"), 2)
  t.raises(function() svg.lines{ y_min = 1, y_max = 0, series = two.series } end, "y_min")
end)

t.test("escaping of title, labels and names", function()
  local out = svg.lines{ title = 'a "<&>" \'b\'', x_label = "x<1", y_label = "p & q",
    series = { { name = "<script>", points = { { 1, 2 }, { 2, 3 } } } } }
  t.ok(check_xml(out))
  t.match(out, ">a &quot;&lt;&amp;&gt;&quot; &apos;b&apos;</text>", "title")
  t.match(out, ">x&lt;1</text>")
  t.match(out, ">p &amp; q</text>")
  t.match(out, ">&lt;script&gt;</text>")
  t.no_match(out, "<script")
  t.eq(svg.escape("a\1b"), "ab", "control characters dropped")
end)

t.test("NaN and inf points are skipped", function()
  local out = svg.lines{ series = { { name = "s",
    points = { { 1, 1 }, { 2, 0 / 0 }, { 0 / 0, 3 }, { 3, math.huge }, { 4, 2 } },
    band = { { 1, 0, 2 }, { 2, 0 / 0, 1 }, { 4, 1, 3 } } } } }
  t.ok(check_xml(out))
  t.no_match(out, "nan")
  t.no_match(out, "inf")
  t.eq(count(out:match('<polyline[^>]*>'), "[%d.]+,[%d.]+"), 2)
  t.eq(count(out:match('<polygon[^>]*>'), "[%d.]+,[%d.]+"), 4)
  -- A series left with no finite point keeps its (empty) line and legend entry.
  local empty = svg.lines{ series = { { name = "ok", points = { { 1, 1 } } },
    { name = "diverged", points = { { 1, 0 / 0 } } } } }
  t.ok(check_xml(empty))
  t.eq(count(empty, "<polyline"), 2)
  t.match(empty, ">diverged</text>")
end)

t.test("empty series and bad options raise errors naming them", function()
  t.raises(function() svg.lines{ series = { { name = "reward", points = {} } } } end, "'reward'")
  t.raises(function() svg.lines{ series = { { name = "a", points = { { 1, 1 } } }, {} } } end,
    "'series 2'")
  t.raises(function() svg.lines{ series = {} } end, "series")
  t.raises(function() svg.lines{ x_lable = "x", series = two.series } end, "x_lable")
  t.raises(function() svg.histogram{ edges = { 0, 1 }, series = { { name = "h", counts = {} } } }
  end, "'h'")
  t.raises(function()
    svg.histogram{ edges = { 0, 1, 2 }, series = { { name = "h", counts = { 1 } } } }
  end, "'h' has 1 counts for 2 bins")
  t.raises(function() svg.histogram{ edges = { 0, 2, 1 }, series = { { counts = { 1, 1 } } } } end,
    "increasing")
  t.raises(function()
    svg.stacked{ categories = { "a" }, parts = { { name = "better", values = {} } } }
  end, "'better'")
  t.raises(function()
    svg.stacked{ categories = { "a" }, parts = { { name = "p", values = { -1 } } } }
  end, "'p'")
end)

t.test("histogram: bins x series bars, legend, density", function()
  local edges = { -1, -0.5, 0, 0.5, 1, 1.5 }
  local opts = { title = "Scores", x_label = "score", edges = edges, series = {
    { name = "Meta Safety RM", counts = { 1, 4, 9, 4, 1 } },
    { name = "Meta Helpfulness RM", counts = { 0, 2, 5, 8, 3 } },
    { name = "other", counts = svg.bin({ -1, -0.2, 0.1, 0.2, 1.5, 7, 0 / 0 }, edges) } } }
  local out = svg.histogram(opts)
  t.ok(check_xml(out))
  t.eq(count(out, 'class="bar"'), 15)
  t.eq(count(out, '<g class="legend%-entry">'), 3)
  t.match(out, ">Meta Safety RM</text>")
  t.match(out, 'fill%-opacity="0.45"')
  t.match(out, ">count</text>")
  t.eq(table.concat(svg.bin({ -1, -0.2, 0.1, 0.2, 1.5, 7, 0 / 0 }, edges), ","), "1,1,2,0,1")
  opts.density = true
  local dens = svg.histogram(opts)
  t.ok(check_xml(dens))
  t.match(dens, ">density</text>")
  t.eq(count(dens, 'class="bar"'), 15)
end)

t.test("stacked: each category's bars fill the plot height", function()
  local parts = {
    { name = "significantly better", values = { 12, 3, 7 } },
    { name = "better", values = { 30, 10, 0 } },
    { name = "slightly better", values = { 17.3, 1, 3 } },
    { name = "negligibly better / unsure", values = { 40.7, 9, 1 } },
  }
  local out = svg.stacked{ title = "Ratings per batch",
    categories = { "batch 1", "batch 2", "batch 3" }, parts = parts }
  t.ok(check_xml(out))
  local plot_h = tonumber(out:match('<rect class="frame"[^>]* height="([%d.]+)"'))
  local n = 0
  for group in out:gmatch('<g class="category">(.-)</g>') do
    n = n + 1
    local sum, rects = 0, 0
    for h in group:gmatch('height="([%d.]+)"') do
      sum, rects = sum + tonumber(h), rects + 1
    end
    t.eq(rects, 4)
    t.near(sum, plot_h, 0.01, "category " .. n)
  end
  t.eq(n, 3)
  t.eq(count(out, '<g class="legend%-entry">'), 4)
  t.match(out, ">negligibly better / unsure</text>")
  t.match(out, ">batch 3</text>")
  t.match(out, ">100%%</text>")
end)

t.test("deterministic: same input, same bytes", function()
  t.eq(svg.lines(two), svg.lines(two))
  local h = { edges = { 0, 1, 2 }, series = { { name = "a", counts = { 1, 2 } } } }
  t.eq(svg.histogram(h), svg.histogram(h))
  local s = { categories = { "x" }, parts = { { name = "a", values = { 1 } } } }
  t.eq(svg.stacked(s), svg.stacked(s))
  t.no_match(svg.lines(two), "%d%.%d%d%d", "coordinates keep at most two decimals")
end)

t.test("write is atomic and names the path on failure", function()
  local dir = os.tmpname()
  os.remove(dir)
  local path = dir .. "-fig.svg"
  local text = svg.lines(two)
  t.eq(svg.write(path, text), path)
  local file = assert(io.open(path, "rb"))
  t.eq(file:read("a"), text)
  file:close()
  t.eq(io.open(path .. ".tmp", "rb"), nil, "no temporary file left")
  os.remove(path)
  local bad = "/nonexistent-dir/sub/fig.svg"
  t.raises(function() svg.write(bad, text) end, bad:gsub("%p", "%%%0"))
end)

t.test("the XML checker rejects broken markup", function()
  t.raises(function() check_xml("<svg><g></svg></g>") end, "closes")
  t.raises(function() check_xml("<svg><rect x=1/></svg>") end, "attributes")
  t.raises(function() check_xml("<svg><text>a & b</text></svg>") end, "&")
  t.raises(function() check_xml("<svg>") end, "unclosed")
end)

t.test("herd.svg is loaded lazily", function()
  local herd = require "herd"
  t.eq(herd.svg, svg)
end)

t.done()
