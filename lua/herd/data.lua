-- herd.data: JSONL datasets in compact C storage (doc/data.md). Records stay in one C arena;
-- ds[i] builds a Lua table for one record when asked, so a million preference pairs never become
-- a million Lua tables.
--
--   local prefs = herd.data.jsonl("prefs.jsonl", { schema = "preference" })
--   print(#prefs, prefs[1].rating)
--   local safety = prefs:filter{ domain = "safety" }
--   local train, test = prefs:split(0.9, 1)
--   local hard = prefs:filter(function(r) return r.rating == "negligibly better" end)
--   train:shuffle(7):sample(1000, 7):write("small.jsonl")
--   local stats = prefs:describe()          -- counts per source/rating/domain/safety_bin, lengths
local core = require "herd.data_core"

local M = {}
local methods = core.metatable.methods

-- The rating scale, strongest first; "unsure" is accepted and ranks with "negligibly better"
-- (the paper's "negligibly better / unsure").
M.ratings = { "significantly better", "better", "slightly better", "negligibly better" }
local rating_levels = { ["significantly better"] = 1, better = 2, ["slightly better"] = 3,
                        ["negligibly better"] = 4, unsure = 4 }
M.domains = { "helpful", "safety" }
-- Safety annotation bins (only with domain = "safety"); a pair whose chosen response is unsafe
-- while the rejected one is safe is not collected, as in the paper.
M.safety_bins = { "chosen_safe_rejected_unsafe", "both_safe", "both_unsafe" }

-- 1 (significantly better) .. 4 (negligibly better or unsure), nil for anything else.
function M.rating_level(rating) return rating_levels[rating] end

local function check_options(opts, allowed, where)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(where .. ": options must be a table", 3) end
  for key in pairs(opts) do
    if not allowed[key] then error(where .. ": unknown option '" .. tostring(key) .. "'", 3) end
  end
  return opts
end

local function check_schema(schema, where)
  if schema ~= nil and schema ~= "preference" and schema ~= "none" then
    error(string.format("%s: unknown schema %s (\"preference\" or none)", where,
      tostring(schema)), 3)
  end
  return schema
end

-- herd.data.jsonl(path, { schema = "preference" }) -> dataset
function M.jsonl(path, opts)
  if type(path) ~= "string" then error("data.jsonl: path must be a string", 2) end
  opts = check_options(opts, { schema = true }, "data.jsonl")
  return core.load(path, check_schema(opts.schema, "data.jsonl"))
end

-- herd.data.from_records({ record, ... }, { schema =, origin = "name" }) -> dataset
-- Each record is stored as compact JSON with sorted keys (herd.json.encode), so writing and
-- reading it back is byte-stable.
function M.from_records(records, opts)
  if type(records) ~= "table" then error("data.from_records: records must be a list", 2) end
  opts = check_options(opts, { schema = true, origin = true }, "data.from_records")
  local encode = require("herd.core").json_encode
  local lines = {}
  for i, record in ipairs(records) do
    if type(record) ~= "table" then
      error(string.format("data.from_records: record %d is a %s, not a table", i, type(record)), 2)
    end
    lines[i] = encode(record)
  end
  return core.from_lines(lines, opts.origin or "(records)",
    check_schema(opts.schema, "data.from_records"))
end

function M.is_dataset(value) return getmetatable(value) == core.metatable end

-- ds:filter(function(record, i) ... end) or ds:filter{ field = value, ... } (every field equal;
-- numbers compare by value). Returns a new dataset sharing the storage.
function methods:filter(predicate)
  if type(predicate) == "table" then return self:_filter_eq(predicate) end
  if type(predicate) == "function" then return self:_filter_fn(predicate) end
  error("filter: expected a function or a table of field = value", 2)
end

-- for i, record in ds:records() do ... end
function methods:records()
  local i, n = 0, #self
  return function()
    i = i + 1
    if i <= n then return i, self[i] end
  end
end

local function length_stats(values)
  local n = #values
  if n == 0 then return { n = 0 } end
  table.sort(values)
  local total = 0
  for _, v in ipairs(values) do total = total + v end
  return { n = n, mean = total / n, min = values[1], max = values[n],
           median = values[n // 2 + 1], total = total }
end

-- ds:describe{ tokenizer = tok } -> counts per source/rating/domain/safety_bin/batch and lengths
-- of prompt/chosen/rejected in characters (computed in C); with a tokenizer also `tokens` =
-- { prompt =, chosen =, rejected = } in tokens (no BOS; a dialog's prompt is the sum over its
-- messages), which reads every record through Lua.
function methods:describe(opts)
  opts = check_options(opts, { tokenizer = true }, "describe")
  local stats = self:_describe()
  local tok = opts.tokenizer
  if tok then
    local no_bos = { bos = false }
    local function count(text) return #tok:encode(text, no_bos) end
    local prompt, chosen, rejected = {}, {}, {}
    for i = 1, #self do
      local r = self[i]
      if type(r.prompt) == "string" then
        prompt[#prompt + 1] = count(r.prompt)
      elseif type(r.dialog) == "table" then
        local total = 0
        for _, m in ipairs(r.dialog) do
          if type(m) == "table" and type(m.content) == "string" then total = total + count(m.content) end
        end
        prompt[#prompt + 1] = total
      end
      if type(r.chosen) == "string" then chosen[#chosen + 1] = count(r.chosen) end
      if type(r.rejected) == "string" then rejected[#rejected + 1] = count(r.rejected) end
    end
    stats.tokens = { prompt = length_stats(prompt), chosen = length_stats(chosen),
                     rejected = length_stats(rejected) }
  end
  return stats
end

-- herd.data.pack({ { ids = {...}, mask = {...} }, ... }, { seq = 256, pad = tok:eos(),
--                 overlong = "truncate" | "error" }) -> packed rows (doc/data.md, "Packing for SFT")
-- mask[t] = 1 when token t is an answer token whose prediction is trained (e.g.
-- herd.tokenizer.assistant_mask(chat)). #packed is the number of rows; packed:batch(first, n)
-- gives { tokens, targets, weights, segments, positions } tensors for model:forward/step;
-- packed:stats() the counts; packed:placement(i) where sample i went.
function M.pack(samples, opts)
  if type(samples) ~= "table" then error("pack: samples must be a list", 2) end
  opts = check_options(opts, { seq = true, pad = true, overlong = true }, "pack")
  if math.type(opts.seq) ~= "integer" then error("pack: seq must be an integer", 2) end
  if math.type(opts.pad) ~= "integer" then
    error("pack: pad must be a token id (e.g. tok:eos())", 2)
  end
  local overlong = opts.overlong or "truncate"
  if overlong ~= "truncate" and overlong ~= "error" then
    error(string.format("pack: overlong is %s; use \"truncate\" or \"error\"",
      tostring(overlong)), 2)
  end
  return core.pack(samples, opts.seq, opts.pad, overlong)
end

return M
