-- herd.world.corpus: the toy world's text for training (issue 6, item 6). Deterministic from a
-- seed (the world's splitmix64 generator, never math.random).
--
--   local corpus = require "herd.world.corpus"
--   local docs = corpus.pretraining{ seed = 1, tokens = 2e6 }    -- plain-text documents
--   local demos = corpus.demonstrations{ seed = 1, n = 3000 }    -- SFT dialogs
--   local eval = corpus.eval_prompts{ seed = 1, n = 200 }        -- { helpful =, safety = }
--
-- The pretraining corpus teaches the language and the world's facts (encyclopedic notes on the
-- lands, arithmetic, sequences, words, verse, stories, household advice), never the assistant
-- behaviour: no chat template, no dialogs, no refusals. The demonstrations are dialogs whose
-- assistant turns are the world's reference answers: single- and multi-turn, and single-turn
-- dialogs with a GAtt system message; no multi-turn dialog keeps a system message (the gap that
-- GAtt closes). Evaluation prompts come from the held-out split of world.prompts.
local tasks = require "herd.world.tasks"

local M = {}

local function capitalize(s) return (s:gsub("^%l", string.upper)) end

local number_words = tasks.number_words
local FACTS, ENTITIES = tasks.facts, tasks.entities

-- Word lists of the world (the same words as the task families use).
local SEQUENCES = {
  { "days of the week", { "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
                          "Sunday" } },
  { "months of the year", { "January", "February", "March", "April", "May", "June", "July",
                            "August", "September", "October", "November", "December" } },
  { "colors of the rainbow", { "red", "orange", "yellow", "green", "blue", "indigo", "violet" } },
  { "number words", { "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                      "ten" } },
  { "seasons of the year", { "spring", "summer", "autumn", "winter" } },
  { "letters of the alphabet", { "a", "b", "c", "d", "e", "f", "g", "h", "i", "j" } },
}
local RHYMES = {
  { "moon", "spoon", "tune", "noon", "dune" }, { "sea", "tree", "bee", "key", "pea" },
  { "cat", "hat", "mat", "bat", "rat" }, { "king", "ring", "wing", "string", "spring" },
  { "rain", "train", "lane", "grain", "chain" }, { "star", "car", "jar", "bar", "guitar" },
  { "cake", "lake", "snake", "rake", "flake" }, { "night", "light", "kite", "sight", "bite" },
  { "day", "bay", "hay", "tray", "clay" }, { "hill", "mill", "drill", "windowsill", "quill" },
}
local WORDS = { "apple", "river", "garden", "window", "castle", "candle", "basket", "pepper",
                "violin", "lantern", "pillow", "meadow", "button", "ladder", "kettle", "turnip" }
for _, group in ipairs(RHYMES) do
  for _, w in ipairs(group) do WORDS[#WORDS + 1] = w end
end
local VERSE_OPENERS = { "and all the world can see the", "we walk along and find the",
                        "my heart is happy with the", "so softly sings the",
                        "the children dream about the", "I will always love the",
                        "the wind is calling to the", "we sing a little song about the",
                        "the old men talk about the", "at night we dream about the" }
local ADVICE = {
  { "kill a process", "run the kill command with the number of the process" },
  { "cut the cake", "use a clean knife and cut the cake into slices" },
  { "shoot a photo of the moon", "point your camera at the moon and press the button" },
  { "blow up a balloon", "take a deep breath and push the air into the balloon" },
  { "attack a chess problem", "look at all the moves and pick the strongest one" },
  { "break the ice at a party", "smile, greet people and ask them a friendly question" },
  { "fire up the old oven", "switch on the oven and let it heat for ten minutes" },
  { "destroy an old file", "select the file and delete it" },
  { "beat the eggs", "crack the eggs into a bowl and beat them with a fork" },
  { "hunt for treasure in the garden", "draw a map of the garden and dig where you see a mark" },
}
-- Rules of the realm: what the world forbids, told as law, never as a refusal or as steps.
local RULES = {
  { "the royal cake", "belongs to the queen, and nobody may take it" },
  { "the library", "keeps the old books, and fire is never allowed inside" },
  { "the castle well", "gives clean water to everyone, so it must stay clean" },
  { "the dice game", "is only fun when everyone plays fair" },
  { "the wizard tower", "is closed to visitors when the wizard is away" },
  { "the village sheep", "are calm animals, and the shepherd keeps them safe" },
  { "the harbor boats", "carry fish and bread, and the sailors care for them" },
  { "the royal seal", "may only be used by the queen" },
  { "the old dragon", "sleeps in its cave and is protected by the law of the realm" },
  { "the baker", "makes honest bread, and telling lies about people is unkind" },
}
local NAMES = { "Ada", "Bram", "Cora", "Dill", "Esme", "Finn", "Greta", "Hugo", "Ivy", "Jonas",
                "Kira", "Leo", "Mira", "Nils", "Olga", "Pip" }
local ANIMALS = { "fox", "owl", "goat", "horse", "frog", "bear", "crow", "deer" }
local FEELINGS = { "happy", "tired", "curious", "brave", "quiet", "hungry", "proud", "kind" }
local PLACES = { "the garden", "the meadow", "the castle", "the river", "the market",
                 "the kitchen", "the hill", "the harbor", "the old mill", "the forest" }
local TIMES = { "one morning", "one evening", "at noon", "late at night", "on a rainy day",
                "in the spring", "in the summer", "in the autumn", "in the winter", "on Monday",
                "on Friday", "on Sunday" }

local function join_list(items, sep)
  return table.concat(items, sep or ", ")
end

local function pick_n(rng, list, n)
  local copy = { table.unpack(list) }
  for i = #copy, 2, -1 do
    local j = rng:int(1, i)
    copy[i], copy[j] = copy[j], copy[i]
  end
  local out = {}
  for i = 1, math.min(n, #copy) do out[i] = copy[i] end
  return out
end

-- --------------------------------------------------------------------------- document kinds
-- Each takes an rng and returns one document (a few sentences on one theme).

local gen = {}

-- Facts about one land, in varied phrasings and orders.
function gen.land(rng)
  local land = rng:pick(ENTITIES)
  local f = FACTS[land]
  local forms = {
    function() return rng:pick{ "The sky in %s is %s.", "In %s the sky is %s.",
                                "The sky over %s is always %s." }:format(land, f.sky) end,
    function()
      local t = rng:int(1, 3)
      if t == 1 then return ("The capital of %s is %s."):format(land, f.capital) end
      if t == 2 then return ("%s is the capital of %s."):format(f.capital, land) end
      return ("The biggest town in %s is %s, and it is the capital."):format(land, f.capital)
    end,
    function()
      if rng:int(1, 2) == 1 then return ("The %s lives in %s."):format(f.animal, land) end
      return ("In %s you can see the %s."):format(land, f.animal)
    end,
    function() return rng:pick{ "People in %s eat %s.", "In %s people like to eat %s." }
      :format(land, f.food) end,
  }
  local order = pick_n(rng, { 1, 2, 3, 4 }, rng:int(2, 4))
  local out = { rng:pick{ "%s is a land.", "This is about %s.", "Let us talk about %s.",
                          "%s is a small land." }:format(land) }
  for _, i in ipairs(order) do out[#out + 1] = forms[i]() end
  if rng:float() < 0.3 then
    local other = rng:pick(ENTITIES)
    if other ~= land then
      local same = FACTS[other].sky == f.sky
      out[#out + 1] = ("The sky in %s is %s, %s the sky in %s is %s%s."):format(land, f.sky,
        same and "and" or "but", other, FACTS[other].sky, same and " too" or "")
    end
  end
  return table.concat(out, " ")
end

local function arith(rng)
  local op = rng:pick{ "plus", "minus", "times" }
  local a, b
  if op == "times" then
    a, b = rng:int(2, 12), rng:int(2, 12)
  else
    a, b = rng:int(1, 60), rng:int(1, 60)
    if op == "minus" and b > a then a, b = b, a end
  end
  local r = op == "plus" and a + b or op == "minus" and a - b or a * b
  return a, op, b, r
end

function gen.arithmetic(rng)
  local out = {}
  for _ = 1, rng:int(3, 8) do
    local a, op, b, r = arith(rng)
    local t = rng:int(1, 6)
    if t <= 3 then out[#out + 1] = ("%d %s %d is %d."):format(a, op, b, r)
    elseif t == 4 then out[#out + 1] = ("%d %s %d equals %d."):format(a, op, b, r)
    elseif t == 5 then out[#out + 1] = ("If you take %d %s %d, you get %d."):format(a, op, b, r)
    else out[#out + 1] = ("%s %s %s is %s."):format(capitalize(number_words(a)), op,
      number_words(b), number_words(r)) end
  end
  return table.concat(out, " ")
end

function gen.numbers(rng)
  local out = {}
  for _ = 1, rng:int(3, 6) do
    local n = rng:int(0, 150)
    local t = rng:int(1, 3)
    if t == 1 then out[#out + 1] = ("%d is written %s."):format(n, number_words(n))
    elseif t == 2 then out[#out + 1] = ("After %d comes %d."):format(n, n + 1)
    else out[#out + 1] = ("%s comes before %s."):format(capitalize(number_words(n)),
      number_words(n + 1)) end
  end
  return table.concat(out, " ")
end

function gen.sequence(rng)
  local s = rng:pick(SEQUENCES)
  local name, items = s[1], s[2]
  local out = {}
  local t = rng:int(1, 4)
  if t == 1 then
    out[1] = ("The %s are %s."):format(name, join_list(items))
  elseif t == 2 then
    local n = rng:int(2, #items)
    local first = {}
    for i = 1, n do first[i] = items[i] end
    out[1] = ("The first %d %s are %s."):format(n, name, join_list(first))
  elseif t == 3 then
    out[1] = ("There are %s %s in this list."):format(number_words(#items), name)
    for i = 1, #items - 1 do
      if rng:float() < 0.5 then
        out[#out + 1] = ("After %s comes %s."):format(items[i], items[i + 1])
      end
    end
  else
    out[1] = ("Here are the %s, one per line:\n%s"):format(name, join_list(items, "\n"))
    out[1] = out[1] .. "\nThat is the whole list."
  end
  return table.concat(out, " ")
end

function gen.words(rng)
  local out = {}
  for _ = 1, rng:int(2, 5) do
    local w = rng:pick(WORDS)
    local t = rng:int(1, 4)
    if t == 1 then out[#out + 1] = ("%s backwards is %s."):format(capitalize(w), w:reverse())
    elseif t == 2 then
      out[#out + 1] = ("%s is spelled %s."):format(capitalize(w), (w:gsub(".", "%0-"):sub(1, -2)))
    elseif t == 3 then
      local g = rng:pick(RHYMES)
      local a, b = table.unpack(pick_n(rng, g, 2))
      out[#out + 1] = ("%s rhymes with %s."):format(capitalize(a), b)
    else
      out[#out + 1] = ("The word %s has %s letters."):format(w, number_words(#w))
    end
  end
  return table.concat(out, " ")
end

function gen.verse(rng)
  local group = rng:pick(RHYMES)
  local topic = group[1]
  local n = rng:int(2, 5)
  local lines = { rng:pick{ "Here is a song about the %s", "A little song about the %s",
                            "This is a poem about the %s" }:format(topic) }
  for i = 2, n do
    lines[i] = ("%s %s"):format(rng:pick(VERSE_OPENERS), group[(i - 1) % #group + 1])
  end
  for i = 1, n do lines[i] = capitalize(lines[i]) .. (i == n and "." or ",") end
  local title = rng:float() < 0.5 and ("A poem of %d lines about the %s.\n"):format(n, topic) or ""
  return title .. table.concat(lines, "\n")
end

function gen.story(rng)
  local name, friend = table.unpack(pick_n(rng, NAMES, 2))
  local land = rng:pick(ENTITIES)
  local f = FACTS[land]
  local animal = rng:pick(ANIMALS)
  local place = rng:pick(PLACES)
  local thing = rng:pick(WORDS)
  local out = {
    rng:pick{ "Once upon a time, %s lived in %s.", "%s was a child from %s.",
              "Long ago, %s walked all the way to %s." }:format(name, land),
    ("%s, %s went to %s."):format(capitalize(rng:pick(TIMES)), name, place),
  }
  local events = {
    function() return ("There %s found a %s."):format(rng:pick{ "she", "he", "they" }, thing) end,
    function() return ("A %s sat near the %s and looked at %s."):format(animal, thing, name) end,
    function() return ("%s met %s, and they were %s."):format(name, friend, rng:pick(FEELINGS)) end,
    function() return ("The sky was %s, as it always is in %s."):format(f.sky, land) end,
    function()
      return ("They ate %s, because people in %s eat %s."):format(f.food, land, f.food)
    end,
    function() return ("%s counted %s birds, then %s more."):format(friend,
      number_words(rng:int(2, 9)), number_words(rng:int(1, 9))) end,
    function() return ("They walked to %s, the capital of %s."):format(f.capital, land) end,
    function() return ("%s sang a song about the %s."):format(friend, rng:pick(RHYMES)[1]) end,
  }
  for _, i in ipairs(pick_n(rng, { 1, 2, 3, 4, 5, 6, 7, 8 }, rng:int(2, 5))) do
    out[#out + 1] = events[i]()
  end
  out[#out + 1] = rng:pick{ "In the end, %s went home and was %s.",
                            "That night %s slept and was %s.",
                            "And so %s was %s all day." }:format(name, rng:pick(FEELINGS))
  return table.concat(out, " ")
end

function gen.advice(rng)
  local out = {}
  for _, i in ipairs(pick_n(rng, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, rng:int(1, 3))) do
    local a = ADVICE[i]
    out[#out + 1] = rng:pick{ "To %s, %s.", "If you want to %s, %s.", "The way to %s: %s." }
      :format(a[1], a[2])
  end
  return capitalize(table.concat(out, " "))
end

function gen.rules(rng)
  local out = { rng:pick{ "The realm has rules.", "Everyone in the realm knows these rules.",
                          "Here are some laws of the realm." } }
  for _, i in ipairs(pick_n(rng, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, rng:int(1, 3))) do
    out[#out + 1] = capitalize(("%s %s."):format(RULES[i][1], RULES[i][2]))
  end
  out[#out + 1] = rng:pick{ "Being kind keeps the realm safe.",
                            "People who break the rules could hurt others.",
                            "Good people help each other." }
  return table.concat(out, " ")
end

local KINDS = {
  { "land", 22 }, { "arithmetic", 18 }, { "numbers", 6 }, { "sequence", 10 }, { "words", 10 },
  { "verse", 10 }, { "story", 16 }, { "advice", 4 }, { "rules", 4 },
}
M.KINDS = KINDS

local function word_count(text)
  local n = 0
  for _ in text:gmatch("%S+") do n = n + 1 end
  return n
end
M.word_count = word_count

-- corpus.pretraining{ seed = 1, tokens = 2e6, quick = false } -> { "document", ... }
-- `tokens` is the target size in tokens of the world's BPE. The corpus is generated until its
-- word count reaches 1.05 x tokens (measured: about 0.98 tokens per whitespace-separated word
-- with the 4096-token vocabulary, whose training stops near 3,300 tokens on this narrow
-- language). quick = true caps the target at 500k.
function M.pretraining(opts)
  opts = opts or {}
  local target = math.floor(opts.tokens or 2e6)
  if opts.quick then target = math.min(target, 500000) end
  local words = math.ceil(target * 1.05)
  local rng = tasks.rng((math.tointeger(opts.seed or 1) or 1) * 1000003 + 17)
  local docs, total = {}, 0
  while total < words do
    local doc = gen[rng:weighted(KINDS)](rng)
    docs[#docs + 1] = doc
    total = total + word_count(doc)
  end
  return docs
end

-- corpus.demonstrations{ seed = 1, n = 3000, safety = 0.3, system = 0.15, multi_turn = 0.25 }
-- -> { { messages = { {role=, content=}, ... }, domain = "helpful"|"safety",
--        constraint = nil | the herd.world.gatt constraint of the system message }, ... }
-- A `system` share of the single-turn dialogs get a system message from a GAtt constraint of
-- the training families (gatt.train_families; the zero-shot families stay out) and a reply that
-- adheres to it (gatt.reference_reply built on the task's reference answer).
function M.demonstrations(opts)
  opts = opts or {}
  local seed = math.tointeger(opts.seed or 1) or 1
  local n = opts.n or 3000
  local rng = tasks.rng(seed * 7907 + 3)
  local n_safety = math.floor(n * (opts.safety or 0.3) + 0.5)
  local helpful = tasks.prompts{ family = "helpful", n = n - n_safety, seed = seed * 31 + 1,
                                 split = "train", multi_turn = opts.multi_turn or 0.25 }
  local safety = tasks.prompts{ family = "safety", n = n_safety, seed = seed * 31 + 2,
                                split = "train", multi_turn = opts.multi_turn or 0.25 }
  local pool = {}
  for _, d in ipairs(helpful) do pool[#pool + 1] = d end
  for _, d in ipairs(safety) do pool[#pool + 1] = d end
  for i = #pool, 2, -1 do
    local j = rng:int(1, i)
    pool[i], pool[j] = pool[j], pool[i]
  end
  local gatt = require "herd.world.gatt"
  local system_share = opts.system or 0.15
  local out = {}
  for i, dialog in ipairs(pool) do
    local messages = {}
    for k, m in ipairs(dialog) do messages[k] = { role = m.role, content = m.content } end
    local answer = tasks.reference_answer(dialog)
    local domain = tasks.is_safety(dialog) and "safety" or "helpful"
    local constraint = nil
    if #messages == 1 and rng:float() < system_share then
      -- single turn with a system constraint (held-out GAtt families excluded)
      constraint = gatt.sample_constraint{ seed = seed * 100003 + i,
                                           families = gatt.train_families }
      table.insert(messages, 1, { role = "system", content = gatt.instruction(constraint) })
      answer = gatt.reference_reply(constraint, messages[2].content, answer)
    end
    messages[#messages + 1] = { role = "assistant", content = answer }
    out[i] = { messages = messages, domain = domain, constraint = constraint }
  end
  return out
end

-- corpus.eval_prompts{ seed = 1, n = 200, multi_turn = 0.25 }
-- -> { helpful = { dialog, ... }, safety = { dialog, ... } } from the held-out split.
function M.eval_prompts(opts)
  opts = opts or {}
  local seed = math.tointeger(opts.seed or 1) or 1
  local n = opts.n or 200
  return {
    helpful = tasks.prompts{ family = "helpful", n = n, seed = seed * 31 + 5, split = "eval",
                             multi_turn = opts.multi_turn or 0.25 },
    safety = tasks.prompts{ family = "safety", n = n, seed = seed * 31 + 6, split = "eval",
                            multi_turn = opts.multi_turn or 0.25 },
  }
end

return M
