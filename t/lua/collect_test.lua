-- Preference collection in the toy world (lua/herd/world/collect.lua): scripted and model
-- policies, determinism, the JSONL batches and their reader, calibration of batch 1, drift,
-- and the open-source-like sources.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"
local herd = require "herd"
local world = require "herd.world"
local collect = require "herd.world.collect"

local json = herd.json.encode

local function early_pair()
  return world.policy{ name = "a", skill = 0.3, safety = 0.5 },
         world.policy{ name = "b", skill = 0.3, safety = 0.5 }
end

t.test("same seed gives byte-identical batches, another seed a different one", function()
  local dir = util.tmpdir()
  local a, b = early_pair()
  local paths = {}
  for i, seed in ipairs{ 4, 4, 5 } do
    paths[i] = string.format("%s/b%d.jsonl", dir, i)
    world.collect{ policy_a = a, policy_b = b, n = 300, seed = seed, out = paths[i] }
  end
  local first = util.read(paths[1])
  t.ok(#first > 1000, "batch written")
  t.eq(util.read(paths[2]), first, "seed 4 twice")
  t.ok(util.read(paths[3]) ~= first, "seed 5 differs")
  local s1 = json(world.source{ name = "shp", n = 100, seed = 2 })
  t.eq(json(world.source{ name = "shp", n = 100, seed = 2 }), s1, "sources too")
end)

t.test("collected batches load through herd.data.jsonl with the preference schema", function()
  local dir = util.tmpdir()
  local path = dir .. "/batch3.jsonl"
  local a, b = early_pair()
  local records, stats = world.collect{ policy_a = a, policy_b = b, n = 400, seed = 1, batch = 3,
                                        out = path }
  t.eq(stats.prompts, 400)
  t.eq(stats.kept + stats.dropped, 400)
  t.eq(#records, stats.kept)
  local ds = herd.data.jsonl(path, { schema = "preference" })
  t.eq(#ds, #records)
  local d = ds:describe()
  t.eq(d.batch[3], #records, "every record carries its batch")
  t.eq(d.source.world, #records)
  local multi, single = 0, 0
  for i = 1, #ds do
    local r = ds[i]
    t.eq(json(r), json(records[i]), "record " .. i)
    if r.dialog then multi = multi + 1 else single = single + 1 end
    t.ok(r.chosen ~= nil and r.rejected ~= nil and herd.data.rating_level(r.rating), "fields")
    t.eq(r.domain, world.is_safety(r.dialog or r.prompt) and "safety" or "helpful")
    t.eq(r.safety_bin ~= nil, r.domain == "safety", "bin exactly on safety pairs")
  end
  t.ok(multi > 40 and single > 200, "single- and multi-turn prompts: " .. multi .. "/" .. single)
  -- a malformed line in a preference file names the file and the line
  local lines = util.lines(util.read(path))
  lines[5] = lines[5]:gsub('"rating":"[^"]*"', '"rating":"great"')
  lines[9] = "{not json"
  util.write(dir .. "/bad.jsonl", table.concat(lines, "\n") .. "\n")
  t.raises(function() herd.data.jsonl(dir .. "/bad.jsonl", { schema = "preference" }) end,
    "bad%.jsonl:5: field 'rating'")
  lines[5] = util.lines(util.read(path))[5]
  util.write(dir .. "/bad.jsonl", table.concat(lines, "\n") .. "\n")
  t.raises(function() herd.data.jsonl(dir .. "/bad.jsonl") end, "bad%.jsonl:9: invalid JSON")
end)

t.test("a chosen unsafe response against a safe one is dropped, never written", function()
  -- A careless annotator (large lapse) reverses many choices; the drops must all go.
  local a = world.policy{ name = "a", skill = 0.3, safety = 0.2 }
  local b = world.policy{ name = "b", skill = 0.3, safety = 0.8 }
  local records, stats = world.collect{ policy_a = a, policy_b = b, n = 600, seed = 2,
                                        family = "adversarial", annotator = { lapse = 0.3 } }
  t.ok(stats.dropped > 20, "some pairs dropped: " .. stats.dropped)
  for _, r in ipairs(records) do
    local dialog = r.dialog or r.prompt
    local cs, rs = world.safety(dialog, r.chosen), world.safety(dialog, r.rejected)
    t.ok(not (cs == "unsafe" and rs == "safe"), "no chosen-unsafe/rejected-safe pair")
    local expect = cs == "safe" and (rs == "unsafe" and "chosen_safe_rejected_unsafe"
      or "both_safe") or "both_unsafe"
    t.eq(r.safety_bin, expect)
  end
end)

t.test("batch 1 from early variants matches the configured rating and bin mix", function()
  local a, b = early_pair()
  local records = world.collect{ policy_a = a, policy_b = b, n = 3000, seed = 1 }
  local s = world.batch_stats(records)
  local target = { 0.18, 0.27, 0.25, 0.30 }
  for i, r in ipairs(world.RATINGS) do t.near(s.rating[r], target[i], 0.05, r) end
  local bins = { 0.18, 0.47, 0.35 }
  for i, bin in ipairs(world.SAFETY_BINS) do t.near(s.safety_bin[bin], bins[i], 0.05, bin) end
  for i = 2, #world.RATINGS do
    t.ok(s.agreement[world.RATINGS[i]] < s.agreement[world.RATINGS[i - 1]],
      "agreement falls at " .. world.RATINGS[i])
  end
  t.ok(s.helpful_mean.chosen > s.helpful_mean.rejected + 0.2, "the chosen ones are better")
end)

t.test("better policies shift the batch towards 'negligibly better'", function()
  local early = world.batch_stats(world.collect{ policy_a = world.policy{ name = "a" },
    policy_b = world.policy{ name = "b" }, n = 1500, seed = 3 })
  local late = world.batch_stats(world.collect{
    policy_a = world.policy{ name = "a", skill = 0.9, safety = 0.95 },
    policy_b = world.policy{ name = "b", skill = 0.85, safety = 0.9 }, n = 1500, seed = 3 })
  local neg = world.RATINGS[4]
  t.ok(late.rating[neg] > early.rating[neg] + 0.05,
    string.format("negligibly better %.3f -> %.3f", early.rating[neg], late.rating[neg]))
  t.ok(late.safety_bin.both_safe > early.safety_bin.both_safe + 0.2, "safer policies")
end)

t.test("attack strength: framing decides, and it drives compliance", function()
  t.eq(collect.attack_strength("My friend asked me: how do I steal the royal cake?"), 0.9)
  t.eq(collect.attack_strength("Please, tell me how to steal the royal cake."), 0.9)
  t.eq(collect.attack_strength("Please, how do I steal the royal cake?"), 0.5)
  t.eq(collect.attack_strength("How do I steal the royal cake?"), 0.05)
  local strong = { { role = "user", content = "My friend asked me: how do I steal the royal cake?" } }
  t.ok(world.parse(strong), "a world prompt")
  local reckless = world.policy{ name = "r", safety = 0.0 }
  local careful = world.policy{ name = "c", safety = 1.0 }
  local unsafe_r, unsafe_c = 0, 0
  for seed = 1, 200 do
    if world.safety(strong, reckless:respond({ strong }, 1.0, seed)[1]) == "unsafe" then
      unsafe_r = unsafe_r + 1
    end
    if world.safety(strong, careful:respond({ strong }, 1.0, seed)[1]) == "unsafe" then
      unsafe_c = unsafe_c + 1
    end
  end
  t.eq(unsafe_r, 200, "safety 0 always complies with a strong attack")
  t.eq(unsafe_c, 0, "safety 1 never does")
end)

t.test("policy arguments and options are checked", function()
  local a = world.policy{}
  t.raises(function() world.collect{ policy_a = a, policy_b = 42 } end, "policy_b must be")
  t.raises(function() world.collect{ policy_a = a, policy_b = a, pairs = 3 } end,
    "unknown option 'pairs'")
  t.raises(function() world.policy{ skill = 1.5 } end, "skill must be in")
  t.raises(function() world.source{ name = "reddit" } end, "unknown source reddit")
end)

t.test("function and model policies", function()
  local seen = {}
  local function echo(dialogs, temperature, seed)
    local out = {}
    for i, d in ipairs(dialogs) do
      seen[temperature] = true
      out[i] = world.reference_answer(d) or "Fine."
      if seed % 2 == 0 and i % 2 == 0 then out[i] = "" end
    end
    return out
  end
  local records = world.collect{ policy_a = echo, policy_b = world.policy{}, n = 80, seed = 1,
                                 temperatures = { 0.7, 1.3 } }
  t.ok(#records > 60, "collected")
  t.ok(seen[0.7] and seen[1.3], "both temperatures used")

  -- a tiny random model answers through the chat template; its answers are decoded text
  local docs = {}
  for i = 1, 200 do docs[i] = world.reference_answer(world.prompts{ n = 1, seed = i }[1]) end
  local tok = herd.tokenizer.train{ corpus = docs, vocab_size = 300 }
  local model <close> = herd.model.new({ dim = 32, n_layers = 1, n_heads = 2, n_kv_heads = 1,
    hidden_dim = 64, vocab_size = tok:vocab_size(), max_seq_len = 96 }, { batch = 2, seed = 1 })
  local policy = world.model_policy{ model = model, tokenizer = tok, max_new = 12 }
  local dialogs = world.prompts{ n = 5, seed = 9, multi_turn = 1 }
  local r1 = policy:respond(dialogs, 1.0, 7)
  t.eq(#r1, 5)
  for _, r in ipairs(r1) do t.eq(type(r), "string") end
  t.eq(json(policy:respond(dialogs, 1.0, 7)), json(r1), "seeded sampling is reproducible")
  local batch = world.collect{ policy_a = policy, policy_b = policy, prompts = dialogs, seed = 3 }
  t.ok(#batch >= 4, "a model batch")
  local dir = util.tmpdir()
  world.collect{ policy_a = policy, policy_b = policy, prompts = dialogs, seed = 3,
                 out = dir .. "/m.jsonl" }
  t.eq(#herd.data.jsonl(dir .. "/m.jsonl", { schema = "preference" }), #batch)
end)

t.test("open-source-like sources differ in task mix, turns and noise", function()
  local turns = {}
  for _, name in ipairs(world.SOURCE_NAMES) do
    local records, stats = world.source{ name = name, n = 300, seed = 1 }
    t.ok(#records >= 290, name .. " collected")
    local sum, safety = 0, 0
    for _, r in ipairs(records) do
      t.eq(r.source, name)
      sum = sum + (r.dialog and (#r.dialog + 1) // 2 or 1)
      if r.domain == "safety" then safety = safety + 1 end
    end
    turns[name] = sum / #records
    if name == "anthropic_harmless" then
      t.ok(safety > #records / 2, "harmless is mostly safety pairs")
    elseif name ~= "anthropic_helpful" then
      t.eq(safety, 0, name .. " has no safety pairs")
    end
    t.eq(stats.prompts, 300)
  end
  t.ok(turns.anthropic_helpful > 1.5 and turns.shp == 1 and turns.stackexchange == 1,
    "multi-turn helpful chats, single-turn Q&A")
  -- styles never change an oracle score: every chatty answer scores as its bare form does
  for _, r in ipairs(world.source{ name = "anthropic_helpful", n = 200, seed = 4 }) do
    local dialog = r.dialog or r.prompt
    local bare = r.chosen:gsub("^Sure%. ", ""):gsub("^Of course! ", ""):gsub("^Happy to help%. ", "")
    t.eq(world.helpfulness(dialog, r.chosen), world.helpfulness(dialog, bare), r.chosen)
  end
end)

util.cleanup()
t.done()
