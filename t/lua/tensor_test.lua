-- herd.tensor from Lua: construction, indexing, views, arithmetic, reductions, dtypes, printing
-- and safetensors files.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"
local tensor = require("herd").tensor

local function same_table(a, b)
  if type(a) ~= "table" then return a == b end
  if #a ~= #b then return false end
  for i = 1, #a do
    if not same_table(a[i], b[i]) then return false end
  end
  return true
end

t.test("zeros, ones, full: shape, dtype, values", function()
  local z = tensor.zeros{ 2, 3 }
  t.ok(same_table(z:shape(), { 2, 3 }))
  t.eq(z:dtype(), "f32")
  t.eq(z:numel(), 6)
  t.eq(z:sum(), 0.0)
  local o = tensor.ones({ 4 }, "i32")
  t.eq(o:dtype(), "i32")
  t.eq(o:sum(), 4.0)
  t.eq(math.type(o[1]), "integer")
  t.eq(tensor.full({ 3 }, 2.5):sum(), 7.5)
  t.raises(function() tensor.zeros({ 2 }, "f64") end, "unknown dtype 'f64'")
  t.raises(function() tensor.zeros{ 1, 1, 1, 1, 1 } end, "at most 4 dims")
  t.raises(function() tensor.zeros{ -1 } end, "non%-negative")
end)

t.test("from nested tables, get/set, t[i], totable", function()
  local a = tensor.from{ { 1, 2, 3 }, { 4, 5, 6 } }
  t.ok(same_table(a:shape(), { 2, 3 }))
  t.eq(a:get(2, 3), 6.0)
  t.eq(a[2][1], 4.0)
  t.eq(#a, 2)
  a:set(1, 2, -7)
  t.eq(a:get(1, 2), -7.0)
  t.ok(same_table(a:totable(), { { 1, -7, 3 }, { 4, 5, 6 } }))
  t.raises(function() a:get(3, 1) end, "index 2 out of range for dim 0 of size 2")
  t.raises(function() a:get(1) end, "needs 2 indices")
  t.raises(function() tensor.from{ { 1, 2 }, { 3 } } end, "ragged")
  t.raises(function() tensor.from{ 1, "x" } end, "is a string")
end)

t.test("views share memory: select, narrow, transpose, reshape", function()
  local a = tensor.from{ { 1, 2, 3 }, { 4, 5, 6 } }
  local row = a[2]
  row:set(1, 40)
  t.eq(a:get(2, 1), 40.0, "a row view writes through")
  local tr = a:transpose(1, 2)
  t.ok(same_table(tr:shape(), { 3, 2 }))
  t.eq(tr:get(3, 2), 6.0)
  t.eq(tr:is_contiguous(), false)
  t.raises(function() tr:reshape{ 6 } end, "contiguous")
  t.ok(same_table(tr:contiguous():reshape{ 6 }:totable(), { 1, 40, 2, 5, 3, 6 }))
  t.ok(same_table(a:narrow(2, 2, 2):totable(), { { 2, 3 }, { 5, 6 } }))
  t.ok(same_table(a:reshape(3, -1):shape(), { 3, 2 }))
end)

t.test("arithmetic matches element-wise Lua", function()
  local x = { { 1.5, -2, 3 }, { 0.25, 8, -1 } }
  local y = { { 2, 4, -0.5 }, { 1, 0.5, 3 } }
  local a, b = tensor.from(x), tensor.from(y)
  local function check(result, f)
    local r = result:totable()
    for i = 1, 2 do
      for j = 1, 3 do t.near(r[i][j], f(x[i][j], y[i][j]), 1e-6) end
    end
  end
  check(a + b, function(p, q) return p + q end)
  check(a - b, function(p, q) return p - q end)
  check(a * b, function(p, q) return p * q end)
  check(a / b, function(p, q) return p / q end)
  check(-a, function(p) return -p end)
  check(a * 3, function(p) return p * 3 end)
  check(10 - a, function(p) return 10 - p end)
  check(a / 4, function(p) return p / 4 end)
  t.raises(function() return a + tensor.zeros{ 3, 2 } end, "shapes %(2,3%) and %(3,2%) differ")
end)

t.test("reductions: sum, mean, max, argmax", function()
  local a = tensor.from{ { 3, -1, 7 }, { 7, 2, 0 } }
  t.eq(a:sum(), 18.0)
  t.eq(a:mean(), 3.0)
  t.eq(a:max(), 7.0)
  t.eq(a:argmax(), 3, "the first maximum, as a 1-based flat index")
  local big = tensor.ones{ 1000, 1000 }
  t.eq(big:sum(), 1e6)
end)

t.test("dtype conversions round to nearest even", function()
  local a = tensor.from{ 1.0, 1.00390625, 1.01171875, 65519, 70000, 1e-8 }
  local bf = a:to("bf16"):totable()
  t.eq(bf[2], 1.0, "halfway between 1 and 1+2^-7 rounds to even (down)")
  t.eq(bf[3], 1.015625, "halfway rounds to even (up)")
  local half = a:to("f16"):totable()
  t.eq(half[4], 65504.0)
  t.eq(half[5], math.huge, "beyond f16's range")
  t.eq(half[6], 0.0)
  t.eq(a:to("i32"):totable()[2], 1)
end)

t.test("randn and rand are reproducible by seed", function()
  local a = tensor.randn({ 100 }, { seed = 5 })
  local b = tensor.randn({ 100 }, { seed = 5 })
  local c = tensor.randn({ 100 }, { seed = 6 })
  t.ok(same_table(a:totable(), b:totable()))
  t.ok(not same_table(a:totable(), c:totable()))
  local tail = tensor.randn({ 90 }, { seed = 5, offset = 10 }):totable()
  t.eq(tail[1], a[11], "an offset continues the same stream")
  local u = tensor.rand({ 10000 }, { seed = 1 })
  t.ok(u:max() < 1 and u:mean() > 0.48 and u:mean() < 0.52)
  t.raises(function() tensor.randn({ 2 }, { seed = 1.5 }) end, "seed must be an integer")
end)

t.test("tostring: values, elision, shape and dtype footer", function()
  local small = tostring(tensor.from{ { 1, 2 }, { 3, 4 } })
  t.eq(small, "1 2\n3 4\n[f32 tensor of shape (2,2)]")
  local long = tostring(tensor.zeros{ 100 })
  t.match(long, "^0 0 0 %.%.%. 0 0 0\n%[f32 tensor of shape %(100%)%]$")
  t.match(tostring(tensor.from{ 0.5, 1 / 3 }), "0%.5000 0%.3333")
  t.match(tostring(tensor.ones{ 2, 2, 2 }), "%(2,,?%.?,?%.?%) =") -- slices are labelled
  t.match(tostring(tensor.from{ 0 / 0, 1 / 0 }), "nan")
end)

t.test("safetensors save and load round trip bit-exactly", function()
  local dir = util.tmpdir()
  local path = dir .. "/x.safetensors"
  local a = tensor.randn({ 3, 5 }, { seed = 3 })
  local b = tensor.from({ { 1, 2 }, { 3, 4 } }, "i32")
  local c = tensor.randn({ 7 }, { seed = 4 }):to("bf16")
  tensor.save(path, { a = a, b = b, ["model.layers.0.weight"] = c })
  local loaded = tensor.load(path)
  t.ok(same_table(loaded.a:totable(), a:totable()))
  t.eq(loaded.b:dtype(), "i32")
  t.ok(same_table(loaded.b:totable(), b:totable()))
  t.eq(loaded["model.layers.0.weight"]:dtype(), "bf16")
  t.ok(same_table(loaded["model.layers.0.weight"]:totable(), c:totable()))
  util.write(dir .. "/bad.safetensors", "\16\0\0\0\0\0\0\0{not json at all}")
  t.raises(function() tensor.load(dir .. "/bad.safetensors") end, "bad%.safetensors")
  t.raises(function() tensor.save(path, { a = 1 }) end, "'a' is not a tensor")
  util.cleanup()
end)

t.test("closing a tensor frees it; using it afterwards is an error", function()
  local a = tensor.zeros{ 2 }
  do
    local b <close> = tensor.ones{ 2 }
    t.eq(b:sum(), 2.0)
  end
  a:close()
  t.raises(function() return a:sum() end, "tensor is closed")
end)

t.test("the REPL completes tensor methods", function()
  local repl = require "herd.repl"
  _G.completion_probe = tensor.zeros{ 2 }
  local found = table.concat(repl.complete("completion_probe:to"), " ")
  _G.completion_probe = nil
  t.match(found, "completion_probe:totable")
  t.match(" " .. found .. " ", " completion_probe:to ")
end)

t.done()
