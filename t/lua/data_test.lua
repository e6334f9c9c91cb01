-- herd.data from Lua: loading JSONL, records on demand, views, writing, describe, and errors
-- naming file, line and field.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"
local herd = require "herd"
local data = require "herd.data"

local function pair(fields)
  local record = { prompt = "What is 2+2?", chosen = "4", rejected = "five", rating = "better",
                   domain = "helpful", batch = 1, source = "world" }
  for k, v in pairs(fields or {}) do record[k] = v end
  return herd.json.encode(record)
end

local function prefs_file(dir)
  local lines = {
    pair{},
    "",
    pair{ rating = "significantly better", domain = "safety", safety_bin = "both_safe" },
    pair{ rating = "negligibly better", batch = 2, source = "shp" },
    herd.json.encode{ dialog = { { role = "user", content = "héllo" } }, chosen = "hi",
                      rejected = "go away", rating = "unsure", domain = "safety",
                      safety_bin = "chosen_safe_rejected_unsafe", batch = 2, source = "world" },
  }
  local path = dir .. "/prefs.jsonl"
  util.write(path, table.concat(lines, "\n") .. "\n")
  return path
end

t.test("herd.data is the module", function()
  t.eq(herd.data, data)
end)

t.test("load, length, records on demand", function()
  local dir = util.tmpdir()
  local ds = data.jsonl(prefs_file(dir), { schema = "preference" })
  t.eq(#ds, 4)
  t.eq(ds[1].rating, "better")
  t.eq(ds[1].batch, 1)
  t.eq(math.type(ds[1].batch), "integer")
  t.eq(ds[4].dialog[1].content, "héllo")
  t.eq(ds[5], nil)
  t.eq(ds[0], nil)
  local file, line = ds:origin(3)
  t.match(file, "prefs.jsonl$")
  t.eq(line, 4)
  local count = 0
  for i, record in ipairs(ds) do count = count + 1; t.eq(type(record), "table") end
  t.eq(count, 4)
  t.match(tostring(ds), "herd.Dataset %(4 records%)")
  t.ok(data.is_dataset(ds))
  t.ok(not data.is_dataset({}))
end)

t.test("filter by fields and by function", function()
  local ds = data.jsonl(prefs_file(util.tmpdir()))
  t.eq(#ds:filter{ domain = "safety" }, 2)
  t.eq(#ds:filter{ domain = "safety", batch = 2 }, 1)
  t.eq(#ds:filter{ batch = 2.0 }, 2)
  t.eq(#ds:filter{ source = "nobody" }, 0)
  t.eq(#ds:filter{ chosen = "hi" }, 1)
  local strong = ds:filter(function(r) return data.rating_level(r.rating) <= 2 end)
  t.eq(#strong, 2)
  t.eq(strong[2].rating, "significantly better")
  t.eq(#ds:filter(function(_, i) return i % 2 == 0 end), 2)
  t.raises(function() ds:filter{ dialog = {} } end, "compare with a string, number or boolean")
  t.raises(function() ds:filter(42) end, "expected a function")
end)

local function numbered(n)
  local records = {}
  for i = 1, n do records[i] = { i = i } end
  return data.from_records(records, { origin = "numbers" })
end

local function order(ds)
  local out = {}
  for i = 1, #ds do out[i] = ds[i].i end
  return out
end

t.test("shuffle, sample, split, concat, select", function()
  local ds = numbered(200)
  local a, b = order(ds:shuffle(42)), order(ds:shuffle(42))
  t.eq(table.concat(a, ","), table.concat(b, ","))
  t.ok(table.concat(a, ",") ~= table.concat(order(ds:shuffle(43)), ","))
  table.sort(a)
  for i = 1, 200 do t.eq(a[i], i) end
  -- Philox: the same order on every machine.
  t.eq(table.concat(order(numbered(8):shuffle(1)), ""), "27435681")
  local sample = ds:sample(10, 42)
  t.eq(#sample, 10)
  t.eq(table.concat(order(sample), ","), table.concat(order(ds:shuffle(42)), ",", 1, 10))
  t.raises(function() ds:sample(201, 1) end, "201")
  local train, test = ds:split(0.9, 3)
  t.eq(#train, 180)
  t.eq(#test, 20)
  local seen = {}
  for _, part in ipairs{ train, test } do
    for i = 1, #part do
      t.ok(not seen[part[i].i], "disjoint")
      seen[part[i].i] = true
    end
  end
  local first, rest = ds:split(0.25)
  t.eq(first[50].i, 50)
  t.eq(rest[1].i, 51)
  local both = train:concat(test)
  t.eq(#both, 200)
  t.eq(#(train .. numbered(3)), 183)
  t.eq(order(ds:select{ 5, 1, 5 })[3], 5)
  t.raises(function() ds:select{ 201 } end, "out of range")
end)

t.test("write and read back byte for byte", function()
  local dir = util.tmpdir()
  local ds = data.jsonl(prefs_file(dir), { schema = "preference" }):shuffle(9)
  ds:write(dir .. "/out.jsonl")
  local back = data.jsonl(dir .. "/out.jsonl", { schema = "preference" })
  back:write(dir .. "/out2.jsonl")
  t.eq(util.read(dir .. "/out.jsonl"), util.read(dir .. "/out2.jsonl"))
  for i = 1, #ds do t.eq(back:json(i), ds:json(i)) end
  local made = data.from_records({ { b = 1, a = "x" } })
  made:write(dir .. "/made.jsonl")
  t.eq(util.read(dir .. "/made.jsonl"), '{"a":"x","b":1}\n')
  t.raises(function() ds:write(dir .. "/no/such/dir.jsonl") end, "dir.jsonl")
end)

t.test("describe: counts and lengths in characters", function()
  local ds = data.jsonl(prefs_file(util.tmpdir()))
  local d = ds:describe()
  t.eq(d.n, 4)
  t.eq(d.source.world, 3)
  t.eq(d.source.shp, 1)
  t.eq(d.rating.better, 1)
  t.eq(d.rating.unsure, 1)
  t.eq(d.domain.safety, 2)
  t.eq(d.safety_bin.both_safe, 1)
  t.eq(d.batch[1], 2)
  t.eq(d.batch[2], 2)
  t.eq(d.unit, "characters")
  t.eq(d.prompt.n, 4)
  t.eq(d.prompt.min, 5)   -- "héllo" is 5 characters
  t.eq(d.prompt.max, 12)
  t.eq(d.rejected.max, 7)
  t.eq(d.dialogs, 1)
  t.near(d.mean_turns, 1, 1e-9)
  t.eq(ds:filter{ domain = "safety" }:describe().n, 2)
end)

t.test("describe with a tokenizer counts tokens", function()
  local fixtures = (os.getenv("HERD_TEST_DIR") or "t") .. "/fixtures"
  local ok, tok = pcall(herd.tokenizer.load, fixtures .. "/tokenizer/tokenizer.json")
  if not ok then return t.ok(false, tok) end
  local ds = data.jsonl(prefs_file(util.tmpdir()))
  local d = ds:describe{ tokenizer = tok }
  t.eq(d.tokens.chosen.n, 4)
  t.eq(d.tokens.prompt.max, #tok:encode("What is 2+2?", { bos = false }))
  t.raises(function() ds:describe{ tokenizr = tok } end, "unknown option 'tokenizr'")
end)

t.test("schema errors name file, line and field", function()
  local dir = util.tmpdir()
  local path = dir .. "/bad.jsonl"
  util.write(path, pair{} .. "\n" .. pair{ rating = "great" } .. "\n")
  t.raises(function() data.jsonl(path, { schema = "preference" }) end,
    "bad.jsonl:2: field 'rating': expected one of \"significantly better\"")
  local ds = data.jsonl(path)  -- no schema: any object
  t.eq(#ds, 2)
  t.raises(function() ds:validate("preference") end, "bad.jsonl:2: field 'rating'")
  util.write(path, pair{ domain = "safety" } .. "\n")
  t.raises(function() data.jsonl(path, { schema = "preference" }) end,
    "bad.jsonl:1: field 'safety_bin': missing")
  t.raises(function() data.jsonl(path, { schema = "prefs" }) end, "unknown schema")
  t.raises(function() data.jsonl(path, { scheme = "preference" }) end, "unknown option 'scheme'")
end)

t.test("malformed lines and missing files", function()
  local dir = util.tmpdir()
  local path = dir .. "/broken.jsonl"
  util.write(path, pair{} .. "\n\n" .. "{\"prompt\": \n")
  t.raises(function() data.jsonl(path) end, "broken.jsonl:3: invalid JSON")
  util.write(path, pair{} .. "\n[1, 2]\n")
  t.raises(function() data.jsonl(path) end, "broken.jsonl:2: expected a JSON object")
  util.write(path, pair{} .. "\n" .. pair{}:sub(1, 20))
  t.raises(function() data.jsonl(path) end, "broken.jsonl:2: .*truncated last line")
  t.raises(function() data.jsonl(dir .. "/missing.jsonl") end, "missing.jsonl: cannot open")
end)

t.test("100k records stay out of the Lua heap", function()
  local dir = util.tmpdir()
  local path = dir .. "/big.jsonl"
  local file = assert(io.open(path, "wb"))
  for i = 1, 100000 do
    file:write(pair{ prompt = "What is " .. i .. " plus " .. i .. "?", chosen = tostring(2 * i),
                     batch = i % 14 + 1 }, "\n")
  end
  file:close()
  collectgarbage("collect")
  local before = collectgarbage("count")
  local clock = os.clock()
  local ds = data.jsonl(path, { schema = "preference" })
  local seconds = os.clock() - clock
  collectgarbage("collect")
  local lua_kb = collectgarbage("count") - before
  t.eq(#ds, 100000)
  t.ok(seconds < 5, string.format("loading took %.2f s", seconds))
  t.ok(lua_kb < 64, string.format("the Lua heap grew by %.0f KiB", lua_kb))
  -- The same records as Lua tables (measured on the first 10k, scaled): the C storage is the
  -- text plus about 63 bytes a record, Lua tables about 370 bytes a record plus the strings.
  collectgarbage("collect")
  before = collectgarbage("count")
  local tables, n = {}, 0
  for line in io.lines(path) do
    n = n + 1
    tables[n] = herd.json.decode(line)
    if n == 10000 then break end
  end
  collectgarbage("collect")
  local table_bytes = (collectgarbage("count") - before) * 1024 * 10
  tables = nil
  t.ok(ds:bytes() < 0.7 * table_bytes,
    string.format("%d bytes in C, %.0f as Lua tables", ds:bytes(), table_bytes))
  t.eq(ds[100000].batch, 100000 % 14 + 1)
  t.eq(#ds:filter{ batch = 3 }, 7143)
end)

util.cleanup()
t.done()
