-- Tests of herd.pretty (how the REPL prints values) and of herd.repl's completion candidates.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local pretty = require "herd.pretty"
local repl = require "herd.repl"

local format = pretty.format

t.test("scalars", function()
  t.eq(format(42), "42")
  t.eq(format(-7), "-7")
  t.eq(format(math.mininteger), tostring(math.mininteger))
  t.eq(format(1.5), "1.5")
  t.eq(format(1.0), "1.0")
  t.eq(format(-0.0), "-0.0")
  t.eq(format(0.1), "0.1")
  t.eq(format(1 / 3), "0.33333333333333")
  t.eq(format(1e300), "1e+300")
  t.eq(format(2 ^ 53), "9.007199254741e+15")
  t.eq(format(math.huge), "inf")
  t.eq(format(-math.huge), "-inf")
  t.eq(format(0 / 0), "nan")
  t.eq(format(true), "true")
  t.eq(format(nil), "nil")
  t.eq(format(print), tostring(print))
end)

t.test("strings are quoted with readable escapes", function()
  t.eq(format("x"), '"x"')
  t.eq(format('say "hi"\n\tback\\slash'), '"say \\"hi\\"\\n\\tback\\\\slash"')
  t.eq(format("\0\1\127"), '"\\000\\001\\127"')
  t.eq(format("h\xc3\xa9llo"), '"h\xc3\xa9llo"') -- UTF-8 is left alone
  t.eq(format({ "a", "b" }), '{ "a", "b" }')
end)

t.test("arrays and records on one line", function()
  t.eq(format({}), "{}")
  t.eq(format({ 1, 2, 3 }), "{ 1, 2, 3 }")
  t.eq(format({ a = 1, b = { 2, 3 } }), "{ a = 1, b = { 2, 3 } }")
  t.eq(format({ { {} } }), "{ { {} } }")
end)

t.test("keys: identifiers bare, the rest bracketed, in a fixed order", function()
  local value = {
    10, 20, nil, 40,
    name = "n", ["a b"] = 1, ["end"] = 2, _x = 3, [1.5] = 4, [-1] = 5, [true] = 6, [false] = 7,
  }
  t.eq(format(value, { width = 200 }),
    '{ 10, 20, [-1] = 5, [1.5] = 4, [4] = 40, _x = 3, ["a b"] = 1, ["end"] = 2, name = "n", ' ..
    '[false] = 7, [true] = 6 }')
  -- The same table built in another order prints the same.
  local other = { [true] = 6, [false] = 7, [-1] = 5, [1.5] = 4, _x = 3, ["end"] = 2, ["a b"] = 1 }
  other.name, other[4], other[2], other[1] = "n", 40, 20, 10
  t.eq(format(other, { width = 200 }), format(value, { width = 200 }))
end)

t.test("long tables take several lines, nested ones indented", function()
  local value = {
    config = { lr = 0.001, name = "a long run name", layers = { 1, 2, 3 } },
    metrics = { loss = 0.5, accuracy = 0.75 },
  }
  t.eq(format(value), table.concat({
    "{",
    '  config = { layers = { 1, 2, 3 }, lr = 0.001, name = "a long run name" },',
    "  metrics = { accuracy = 0.75, loss = 0.5 }",
    "}",
  }, "\n"))
  t.eq(format(value, { width = 40, indent = 4 }), table.concat({
    "{",
    "    config = {",
    "        layers = { 1, 2, 3 },",
    "        lr = 0.001,",
    '        name = "a long run name"',
    "    },",
    "    metrics = {",
    "        accuracy = 0.75,",
    "        loss = 0.5",
    "    }",
    "}",
  }, "\n"))
  for line in format(value, { width = 40 }):gmatch("[^\n]+") do
    t.ok(#line <= 40, "line too long: " .. line)
  end
end)

t.test("long arrays of scalars fill lines", function()
  local value = {}
  for i = 1, 30 do value[i] = i * 1000 end
  local text = format(value)
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  t.eq(#lines, 5, text)  -- "{", three lines of items, "}"
  t.eq(lines[2], "  1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 12000,")
  t.match(lines[4], "30000$")
  for _, line in ipairs(lines) do t.ok(#line <= 80, "line too long: " .. line) end
end)

t.test("cycles print as <cycle>, shared tables in full", function()
  local value = { x = 1 }
  value.self = value
  t.eq(format(value), "{ self = <cycle>, x = 1 }")
  local inner = { 1 }
  local outer = { inner, inner, { back = nil } }
  outer[3].back = outer
  t.eq(format(outer), "{ { 1 }, { 1 }, { back = <cycle> } }")
end)

t.test("max_depth", function()
  local deep = { a = { b = { c = { d = { e = 1 } } } } }
  t.eq(format(deep), "{ a = { b = { c = { d = {...} } } } }")
  t.eq(format(deep, { max_depth = 2 }), "{ a = { b = {...} } }")
  t.eq(format(deep, { max_depth = 10 }), "{ a = { b = { c = { d = { e = 1 } } } } }")
  t.eq(format({ { {} } }, { max_depth = 1 }), "{ {...} }")
end)

t.test("max_items", function()
  local value = {}
  for i = 1, 100 do value[i] = i end
  value.extra = true
  local text = format(value, { max_items = 3 })
  t.eq(text, "{ 1, 2, 3, ... (98 more) }")
  t.match(format(value), "%.%.%. %(51 more%)")
  t.eq(format({ b = 2, a = 1, c = 3 }, { max_items = 2 }), "{ a = 1, b = 2, ... (1 more) }")
end)

t.test("__tostring is respected, other metamethods never run", function()
  local object = setmetatable({ hidden = 1 }, { __tostring = function() return "<object>" end })
  t.eq(format(object), "<object>")
  t.eq(format({ object, key = object }), "{ <object>, key = <object> }")
  local broken = setmetatable({}, { __tostring = function() error("no text") end })
  t.match(format({ broken }), "^{ <__tostring error: .*no text> }$")
  local touched = {}
  local proxy = setmetatable({ 1, real = true }, {
    __index = function() touched.index = true end,
    __pairs = function() touched.pairs = true end,
    __len = function() touched.len = true; return 99 end,
    __metatable = "locked",
  })
  t.eq(format(proxy), "{ 1, real = true }")
  t.eq(next(touched), nil, "a metamethod ran")
end)

t.test("print writes values like print, tables formatted", function()
  t.eq(pretty.line("text", 1, 2.0, nil, { "s" }, true), 'text\t1\t2.0\tnil\t{ "s" }\ttrue')
  t.eq(pretty.line(), "")
  t.eq(repl.format_results("a", { 1 }), 'a\t{ 1 }')
end)

-- ---------------------------------------------------------------- herd.repl.complete

local function completions(text)
  return table.concat(repl.complete(text), " ")
end

t.test("completion of globals, fields and methods", function()
  _G.zz_test_table = {
    inner = { deep_value = 1, deep_other = 2, [3] = "not a name", ["not id"] = 4 },
    fn = function() end,
  }
  _G.zz_test_object = setmetatable({ own = 1 }, {
    __index = setmetatable({ method_a = function() end, field_b = 2 }, {
      __index = { method_c = function() end },
    }),
  })
  t.eq(completions("string.fo"), "string.format")
  t.eq(completions("string.f"), "string.find string.format")
  t.eq(completions("zz_test_t"), "zz_test_table")
  t.eq(completions("zz_test_table."), "zz_test_table.fn zz_test_table.inner")
  t.eq(completions("zz_test_table.inner.deep_"),
    "zz_test_table.inner.deep_other zz_test_table.inner.deep_value")
  t.eq(completions("zz_test_object:"), "zz_test_object:method_a zz_test_object:method_c")
  t.eq(completions("zz_test_object.f"), "zz_test_object.field_b")
  t.eq(completions("zz_test_object.o"), "zz_test_object.own")
  t.eq(completions("whi"), "while")  -- keywords, at the start of a path only
  t.eq(completions("zz_test_table.whi"), "")
  t.eq(completions("x = zz_test_t"), "x = zz_test_table")
  _G.zz_test_table, _G.zz_test_object = nil, nil
end)

t.test("completion never calls code", function()
  local called = false
  _G.zz_test_proxy = setmetatable({}, {
    __index = function() called = true; return { x = 1 } end,
    __pairs = function() called = true end,
  })
  t.eq(completions("zz_test_proxy.a."), "")
  t.eq(completions("zz_test_proxy."), "")
  t.eq(called, false)
  _G.zz_test_proxy = nil
end)

t.test("completion of things that are not paths", function()
  t.eq(completions("nothing_by_this_name.x"), "")
  t.eq(completions("f().x"), "")
  t.eq(completions("a:b.c"), "")
  t.eq(completions("3.fo"), "")
  t.eq(completions("'str'.fo"), "")
  t.ok(#repl.complete("") > 20, "an empty word completes to every global")
end)

t.done()
