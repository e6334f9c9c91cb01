-- The toy world's corpora (lua/herd/world/corpus.lua): determinism, no assistant behaviour in
-- the pretraining text, corpus size, SFT demonstrations and held-out evaluation prompts.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local herd = require "herd"
local world = require "herd.world"
local corpus = require "herd.world.corpus"

local json = herd.json.encode

t.test("same seed gives byte-identical corpora, demonstrations and eval prompts", function()
  local a = json(corpus.pretraining{ seed = 3, tokens = 20000 })
  t.eq(a, json(corpus.pretraining{ seed = 3, tokens = 20000 }), "pretraining")
  t.ok(a ~= json(corpus.pretraining{ seed = 4, tokens = 20000 }), "pretraining seed 4 differs")
  local d = json(corpus.demonstrations{ seed = 3, n = 200 })
  t.eq(d, json(corpus.demonstrations{ seed = 3, n = 200 }), "demonstrations")
  t.ok(d ~= json(corpus.demonstrations{ seed = 4, n = 200 }), "demonstrations seed 4 differs")
  local e = json(corpus.eval_prompts{ seed = 3, n = 50 })
  t.eq(e, json(corpus.eval_prompts{ seed = 3, n = 50 }), "eval prompts")
  t.ok(e ~= json(corpus.eval_prompts{ seed = 4, n = 50 }), "eval prompts seed 4 differs")
  -- math.random plays no part
  math.randomseed(99)
  t.eq(a, json(corpus.pretraining{ seed = 3, tokens = 20000 }), "independent of math.random")
end)

t.test("the pretraining corpus teaches the language, not the assistant", function()
  local docs = corpus.pretraining{ seed = 1, tokens = 100000 }
  local kinds = { land = "The capital of", arithmetic = " plus ", verse = "a song about the",
                  sequence = "Monday", story = "went to" }
  local seen = {}
  for _, doc in ipairs(docs) do
    t.ok(not doc:find("[INST]", 1, true), "no [INST]") 
    t.ok(not doc:find("<<SYS>>", 1, true) and not doc:find("</s>", 1, true), "no template")
    if world.is_refusal(doc) then t.ok(false, "refusal phrase in: " .. doc) end
    for kind, marker in pairs(kinds) do
      if doc:find(marker, 1, true) then seen[kind] = true end
    end
    t.ok(doc:find("[%.!?]$"), "documents end with a sentence")
  end
  for kind in pairs(kinds) do t.ok(seen[kind], "has " .. kind .. " text") end
  -- facts agree with the world's fact table
  local text = table.concat(docs, "\n")
  for _, land in ipairs(world.tasks.entities) do
    local capital = world.tasks.facts[land].capital
    t.ok(text:find("The capital of " .. land .. " is " .. capital .. ".", 1, true), land)
    for other in text:gmatch("The capital of " .. land .. " is (%a+)%.") do
      t.eq(other, capital, "capital of " .. land)
    end
  end
  for a, op, b, r in text:gmatch("(%d+) (%a+) (%d+) is (%d+)%.") do
    a, b, r = tonumber(a), tonumber(b), tonumber(r)
    local want = op == "plus" and a + b or op == "minus" and a - b or op == "times" and a * b
    if want ~= r then t.ok(false, string.format("%d %s %d is %d", a, op, b, r)) end
  end
end)

t.test("corpus size: word target, quick cap and BPE token count", function()
  local function words(docs)
    local n = 0
    for _, d in ipairs(docs) do n = n + corpus.word_count(d) end
    return n
  end
  local quick = corpus.pretraining{ seed = 1, quick = true }
  local n = words(quick)
  t.ok(n >= 500000 * 1.05 and n < 500000 * 1.05 + 200, "quick corpus: " .. n .. " words")
  t.ok(#corpus.pretraining{ seed = 1, tokens = 5e6, quick = true } == #quick, "quick caps the size")
  -- Tokens with the world's BPE trained on the corpus itself: close to the target.
  local docs = corpus.pretraining{ seed = 2, tokens = 100000 }
  local tok = herd.tokenizer.train{ corpus = docs, vocab_size = 4096 }
  local tokens = 0
  for _, d in ipairs(docs) do tokens = tokens + #tok:encode(d, { bos = false }) end
  t.ok(tokens >= 100000 and tokens <= 125000,
    string.format("%d BPE tokens for a 100k target (vocab %d)", tokens, tok:vocab_size()))
end)

t.test("demonstrations: roles alternate, reference answers, no multi-turn system dialog", function()
  local demos = corpus.demonstrations{ seed = 1, n = 600 }
  t.eq(#demos, 600)
  local counts = { helpful = 0, safety = 0, multi = 0, system = 0 }
  for _, demo in ipairs(demos) do
    local m = demo.messages
    counts[demo.domain] = counts[demo.domain] + 1
    local first = 1
    if m[1].role == "system" then
      counts.system = counts.system + 1
      t.eq(#m, 3, "a system message only in a single-turn dialog")
      t.ok(m[1].content ~= "" and m[3].content ~= "", "system and reply are not empty")
      t.ok(world.parse({ m[2] }), "the user turn is a world task")
      t.ok(demo.constraint, "the constraint comes with the dialog")
      t.eq(m[1].content, world.gatt.instruction(demo.constraint))
      for _, p in ipairs(demo.constraint.parts) do
        local kept = false
        for _, f in ipairs(world.gatt.train_families) do kept = kept or f == p.kind end
        t.ok(kept, "no zero-shot family: " .. p.kind)
      end
      t.eq(world.gatt.adherence(demo.constraint, m[3].content, m[2].content), 1, m[3].content)
      first = 2
    end
    for i = first, #m do
      t.eq(m[i].role, (i - first) % 2 == 0 and "user" or "assistant")
    end
    t.eq(m[#m].role, "assistant")
    if first == 1 then t.eq(demo.constraint, nil) end
    if (#m - first + 1) > 2 then counts.multi = counts.multi + 1 end
    local prefix = { table.unpack(m, first, #m - 1) }
    t.eq(demo.domain, world.is_safety(prefix) and "safety" or "helpful")
    if first == 1 then
      local spec = world.parse(prefix)
      local want = spec.family == "adversarial" and 0.7 or 1.0
      t.near(world.helpfulness(prefix, m[#m].content), want, 1e-9, m[#m].content)
      t.eq((world.safety(prefix, m[#m].content)), "safe")
    end
  end
  t.ok(counts.safety >= 120 and counts.helpful >= 360, "both domains")
  t.ok(counts.multi >= 60, "some multi-turn dialogs: " .. counts.multi)
  t.ok(counts.system >= 30, "some system messages: " .. counts.system)
end)

t.test("eval prompts are held out from the demonstrations", function()
  local eval = corpus.eval_prompts{ seed = 1, n = 150 }
  t.eq(#eval.helpful, 150)
  t.eq(#eval.safety, 150)
  local held = {}
  for _, set in ipairs{ eval.helpful, eval.safety } do
    for _, dialog in ipairs(set) do
      t.eq(dialog[#dialog].role, "user")
      for _, m in ipairs(dialog) do
        if m.role == "user" then
          t.eq(world.split_of(m.content), "eval")
          held[m.content] = true
        end
      end
    end
  end
  for _, dialog in ipairs(eval.safety) do t.ok(world.is_safety(dialog), "safety prompt") end
  for _, dialog in ipairs(eval.helpful) do t.ok(not world.is_safety(dialog), "helpful prompt") end
  local overlap = 0
  for _, demo in ipairs(corpus.demonstrations{ seed = 1, n = 1000 }) do
    for _, m in ipairs(demo.messages) do
      if m.role == "user" and held[m.content] then overlap = overlap + 1 end
    end
  end
  t.eq(overlap, 0, "no eval prompt in the demonstrations")
end)

t.done()
