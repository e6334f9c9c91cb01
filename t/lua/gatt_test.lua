-- herd.world.gatt: GAtt system-message constraints, adherence checkers, dialogs.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local gatt = require "herd.world.gatt"

local started = os.clock()

-- A canonical text for nested tables (sorted keys), to compare outputs byte for byte.
local function serialize(value)
  if type(value) ~= "table" then return string.format("%q", value) end
  local keys = {}
  for k in pairs(value) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = tostring(k) .. "=" .. serialize(value[k]) end
  return "{" .. table.concat(out, ",") .. "}"
end

local function adh(spec, response, user_turn)
  return gatt.adherence(gatt.constraint(spec), response, user_turn)
end

t.test("families and the zero-shot split", function()
  t.eq(#gatt.families, 7)
  local seen = {}
  for _, f in ipairs(gatt.train_families) do seen[f] = "train" end
  for _, f in ipairs(gatt.zero_shot_families) do
    t.eq(seen[f], nil, "disjoint")
    seen[f] = "zero"
  end
  for _, f in ipairs(gatt.families) do t.ok(seen[f], "every family is in one split: " .. f) end
  t.eq(#gatt.zero_shot_families, 2)
  t.eq(seen.language, "zero")
  t.eq(seen.verse, "zero")
  t.eq(gatt.group.verse, "format")
end)

t.test("same seed gives identical constraints and dialogs", function()
  for seed = 1, 50 do
    local a = gatt.sample_constraint{ seed = seed, families = gatt.families }
    local b = gatt.sample_constraint{ seed = seed, families = gatt.families }
    t.eq(serialize(a), serialize(b))
    t.eq(gatt.instruction(a), gatt.instruction(b))
    local da = gatt.dialog{ constraint = a, turns = 8, seed = seed }
    local db = gatt.dialog{ constraint = b, turns = 8, seed = seed }
    t.eq(serialize(da), serialize(db))
  end
  local distinct = {}
  for seed = 1, 50 do
    distinct[gatt.describe(gatt.sample_constraint{ seed = seed, families = gatt.families })] = true
  end
  local n = 0
  for _ in pairs(distinct) do n = n + 1 end
  t.ok(n > 15, "different seeds give different constraints (" .. n .. ")")
  t.raises(function() gatt.sample_constraint{ seed = 1.5 } end, "seed must be an integer")
end)

t.test("pinned samples stay the same across versions", function()
  t.eq(string.format("%d", gatt.rng(1):next()), "5424204624148110235")
  t.eq(gatt.describe(gatt.sample_constraint{ seed = 42, families = gatt.families }), "emoji short")
  local c = gatt.sample_constraint{ seed = 2, families = gatt.families }
  t.eq(gatt.instruction(c), "Always answer in Velan. Write every answer in capitals.")
  t.eq(gatt.reference_reply(c, "What is your favorite hobby?"),
    "VE XOXAZUQO VAKO KIXAZUKOZAVEXIQO XOKOKAKAQU.")
  t.eq(gatt.untranslate(gatt.reference_reply(c, "What is your favorite hobby?")),
    "I HAVE NO FAVORITE HOBBY.")
end)

t.test("combinations respect families, max_combined and groups", function()
  local counts = {}
  for seed = 1, 600 do
    local c = gatt.sample_constraint{ seed = seed, families = gatt.families, max_combined = 2 }
    t.ok(#c.parts >= 1 and #c.parts <= 2)
    counts[#c.parts] = (counts[#c.parts] or 0) + 1
    local groups = {}
    for _, p in ipairs(c.parts) do
      t.eq(groups[gatt.group[p.kind]], nil, "one part per group")
      groups[gatt.group[p.kind]] = true
      if p.kind == "emoji" then t.eq(#c.parts, 1, "emoji stands alone") end
    end
  end
  t.ok(counts[1] > 100 and counts[2] > 100, "single and combined constraints both occur")
  for seed = 1, 200 do
    local c = gatt.sample_constraint{ seed = seed } -- train families by default
    for _, p in ipairs(c.parts) do
      t.ok(p.kind ~= "language" and p.kind ~= "verse", "no zero-shot family in training samples")
    end
    local f = gatt.sample_constraint{ seed = seed, families = { "format" }, max_combined = 3 }
    t.eq(#f.parts, 1)
    t.eq(gatt.group[f.parts[1].kind], "format")
  end
  local c3 = gatt.sample_constraint{ seed = 3,
    families = { "hobby", "figure", "language", "capitals" }, max_combined = 4 }
  t.ok(#c3.parts <= 4)
  t.raises(function() gatt.sample_constraint{ seed = 1, families = { "dance" } } end,
    "unknown family")
end)

t.test("instructions are shortened about half of the time", function()
  local short, n = 0, 2000
  for seed = 1, n do
    local c = gatt.sample_constraint{ seed = seed, families = gatt.families }
    local inst = gatt.instruction(c)
    if c.short then
      short = short + 1
      t.match(inst, "^%u%l+: ")
      t.no_match(inst, "Always")
    else
      t.no_match(inst, "^%u%l+: ")
    end
  end
  t.ok(short / n > 0.45 and short / n < 0.55, "short fraction " .. short / n)
  local napoleon = gatt.constraint{ figure = "Napoleon" }
  t.eq(gatt.instruction(napoleon), "Always act as Napoleon from now.")
  t.eq(gatt.instruction(gatt.constraint{ figure = "Napoleon", short = true }), "Figure: Napoleon")
  t.eq(gatt.instruction(gatt.constraint{ format = "capitals" }),
    "Always answer in capital letters.")
  t.eq(gatt.instruction(gatt.constraint{ format = "capitals", short = true }), "Format: capitals")
  t.eq(gatt.instruction(gatt.constraint{ figure = "Napoleon", hobby = "chess", short = true }),
    "Figure: Napoleon; Hobby: chess")
  t.eq(gatt.instruction(gatt.constraint{ hobby = "tennis", language = true }),
    "You enjoy tennis. Always answer in Velan.")
end)

t.test("dialogs respect the turn count and ask about attributes", function()
  local c = gatt.constraint{ figure = "Cleopatra", hobby = "chess" }
  for _, turns in ipairs({ 1, 2, 4, 6, 20 }) do
    local d = gatt.dialog{ constraint = c, turns = turns, seed = turns }
    t.eq(#d, 1 + 2 * turns)
    t.eq(d[1].role, "system")
    t.eq(d[1].content, gatt.instruction(c))
    for i = 1, turns do
      t.eq(d[2 * i].role, "user")
      t.eq(d[2 * i + 1].role, "assistant")
      t.eq(d[2 * i].asks, gatt.attribute_asked(d[2 * i].content))
    end
    t.ok(d[#d - 1].asks == "figure" or d[#d - 1].asks == "hobby", "the last turn asks")
  end
  local users = gatt.dialog{ constraint = c, turns = 5, seed = 1, replies = false, system = false }
  t.eq(#users, 5)
  for _, m in ipairs(users) do t.eq(m.role, "user") end
  local plain = gatt.dialog{ constraint = c, turns = 20, seed = 9, asks_attributes = false }
  local questions = {}
  for i = 1, 20 do
    t.eq(plain[2 * i].asks, nil)
    t.eq(questions[plain[2 * i].content], nil, "no generic question repeats within 20 turns")
    questions[plain[2 * i].content] = true
  end
  local asked = 0
  for seed = 1, 50 do
    for _, m in ipairs(gatt.dialog{ constraint = c, turns = 20, seed = seed }) do
      if m.asks then asked = asked + 1 end
    end
  end
  t.ok(asked > 50 * 4 and asked < 50 * 12, "attribute questions spread over the dialog: " .. asked)
  local fmt = gatt.dialog{ constraint = gatt.constraint{ format = "verse" }, turns = 3, seed = 1 }
  t.eq(fmt[#fmt - 1].asks, "figure") -- "Who are you?" when there is no attribute
  t.raises(function() gatt.dialog{ constraint = c, turns = 21 } end, "1..20")
  t.raises(function() gatt.dialog{ constraint = c, turns = 0 } end, "1..20")
end)

t.test("reference replies adhere, for every family and combination", function()
  local questions = {}
  for _, qa in ipairs(gatt.chat) do questions[#questions + 1] = qa[1] end
  for _, qs in pairs(gatt.attribute_questions) do
    for _, q in ipairs(qs) do questions[#questions + 1] = q end
  end
  questions[#questions + 1] = "Something the world has never heard of?"
  local checked = 0
  for seed = 1, 150 do
    local c = gatt.sample_constraint{ seed = seed, families = gatt.families, max_combined = 3 }
    for _, q in ipairs(questions) do
      local r = gatt.reference_reply(c, q)
      local score = gatt.adherence(c, r, q)
      if score ~= 1 then
        error(string.format("%s / %q -> %q scores %s", gatt.describe(c), q, r, score))
      end
      checked = checked + 1
    end
    -- with a base answer from elsewhere, and with the instruction concatenated to the turn
    local base = "Seven times six is 42. That is the answer!"
    t.eq(gatt.adherence(c, gatt.reference_reply(c, "What is 7 x 6?", base), "What is 7 x 6?"), 1)
    local q = gatt.instruction(c) .. " What is your favorite hobby?"
    t.eq(gatt.adherence(c, gatt.reference_reply(c, q), q), 1)
  end
  t.ok(checked > 4000)
  for _, f in ipairs(gatt.figures) do
    for _, h in ipairs(gatt.hobbies) do
      for _, fmt in ipairs({ "capitals", "one_sentence", "verse", false }) do
        local c = gatt.constraint{ figure = f.name, hobby = h, language = true,
          format = fmt or nil }
        for _, q in ipairs(questions) do
          t.eq(gatt.adherence(c, gatt.reference_reply(c, q), q), 1, gatt.describe(c) .. " " .. q)
        end
      end
    end
  end
  -- dialog assistant turns are reference replies
  local c = gatt.constraint{ figure = "Oscar Wilde", format = "one_sentence" }
  local d = gatt.dialog{ constraint = c, turns = 10, seed = 5 }
  for i = 1, 10 do t.eq(gatt.adherence(c, d[2 * i + 1].content, d[2 * i].content), 1) end
end)

t.test("reference replies look right", function()
  t.match(gatt.reference_reply(gatt.constraint{ figure = "Napoleon" }, "Who are you?"),
    "^I am Napoleon%. ")
  t.eq(gatt.reference_reply(gatt.constraint{ hobby = "chess" }, "What is your favorite hobby?"),
    "My favorite hobby is chess.")
  t.eq(gatt.reference_reply(gatt.constraint{ format = "capitals" }, "How do I make tea?"),
    "BOIL FRESH WATER. POUR IT OVER THE LEAVES AND WAIT THREE MINUTES.")
  t.eq(gatt.reference_reply(gatt.constraint{ format = "one_sentence" }, "How do I make tea?"),
    "Boil fresh water, and pour it over the leaves and wait three minutes.")
  local verse = gatt.reference_reply(gatt.constraint{ format = "verse" }, "How do I make tea?")
  t.match(verse, "^Boil fresh water,\nPour it over the leaves and wait three minutes,\n[^\n]+%.$")
  local emoji = gatt.reference_reply(gatt.constraint{ format = "emoji" }, "How do I make tea?")
  t.match(emoji, "^:%a+: :%a+: :%a+:$")
  local velan = gatt.reference_reply(gatt.constraint{ language = true }, "How do I make tea?")
  t.eq(gatt.untranslate(velan), "Boil fresh water. Pour it over the leaves and wait three minutes.")
end)

t.test("the toy language round-trips", function()
  local text = "Hello, World! I speak Velan 3 times; OK?"
  local v = gatt.translate(text)
  t.ok(v ~= text)
  t.eq(gatt.untranslate(v), text)
  t.match(v, "^%u%l+, %u%l+! %u%l+ %l+ %u%l+ 3 %l+; %u+%?$")
  for w in v:gmatch("%a+") do t.ok(gatt.is_velan(w), w) end
  for _, w in ipairs({ "hello", "the", "a", "Paris", "zebra", "" }) do
    t.ok(not gatt.is_velan(w), w)
  end
  t.eq(gatt.translate(""), "")
end)

t.test("capitals: hand-written cases", function()
  local c = { format = "capitals" }
  t.eq(adh(c, "I WILL HELP YOU."), 1)
  t.eq(adh(c, ""), 0, "empty")
  t.eq(adh(c, "   ...  "), 0, "no words")
  t.eq(adh(c, "i will help you."), 0)
  t.near(adh(c, "ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE ten"), 0.9, 1e-9, "one word missing")
  t.near(adh(c, "HELLO World"), 0.5, 1e-9, "mixed case")
  t.eq(adh(c, "WAIT 3 MINUTES, OK?"), 1, "digits and punctuation do not count")
  t.near(adh(c, "Hello THERE"), 0.5, 1e-9, "a capitalized word is not all capitals")
end)

t.test("emoji: hand-written cases", function()
  local c = { format = "emoji" }
  t.eq(adh(c, ":sun: :moon: :star:"), 1)
  t.eq(adh(c, ":sun:"), 1)
  t.eq(adh(c, ""), 0, "empty")
  t.near(adh(c, ":sun: hello"), 0.5, 1e-9)
  t.near(adh(c, ":sun: :moon: :cat:"), 2 / 3, 1e-9, "not in the token set")
  t.eq(adh(c, "Paris is far."), 0)
end)

t.test("one sentence: hand-written cases", function()
  local c = { format = "one_sentence" }
  t.eq(adh(c, "Fly across the ocean."), 1)
  t.eq(adh(c, "Fly across the ocean"), 1, "no end mark is still one sentence")
  t.eq(adh(c, "Is it 3.5 miles away?"), 1, "a decimal point is no sentence end")
  t.eq(adh(c, "Fly there... then rest"), 0.5, "an ellipsis ends a sentence")
  t.eq(adh(c, "Fly across the ocean. Many airlines serve it."), 0.5, "two periods")
  t.near(adh(c, "One. Two! Three?"), 1 / 3, 1e-9)
  t.eq(adh(c, ""), 0, "empty")
  t.eq(adh(c, "..."), 0)
end)

t.test("verse: hand-written cases", function()
  local c = { format = "verse" }
  t.eq(adh(c, "Paris to New York,\nFly across the Atlantic,\nMany airlines serve."), 1)
  t.eq(adh(c, "Paris to New York,\n\nFly across the Atlantic,\nMany airlines serve.\n"), 1,
    "blank lines")
  t.near(adh(c, "Paris to New York,\nFly across the Atlantic."), 2 / 3, 1e-9, "two lines")
  t.near(adh(c, "One,\nTwo,\nThree,\nFour."), 2 / 3, 1e-9, "four lines")
  t.near(adh(c, "Just one line."), 1 / 3, 1e-9)
  t.eq(adh(c, "1\n2\n3\n4\n5\n6"), 0)
  t.eq(adh(c, ""), 0, "empty")
end)

t.test("language: hand-written cases", function()
  local c = { language = true }
  local english = "You can fly across the ocean today"
  t.eq(adh(c, gatt.translate(english)), 1)
  t.eq(adh(c, english), 0)
  t.eq(adh(c, ""), 0, "empty")
  t.eq(adh(c, gatt.translate(english):upper()), 1, "capitals do not matter")
  local half = gatt.translate("You can fly across") .. " the ocean and back"
  t.near(adh(c, half), 0.5, 1e-9, "half in the toy language")
  t.eq(adh(c, gatt.translate("I speak Velan"), "What language do you speak?"), 1)
  t.eq(adh(c, "I speak Velan", "What language do you speak?"), 0, "named, but in English")
  t.eq(adh(c, gatt.translate("I speak English"), "What language do you speak?"), 0,
    "wrong language")
  t.eq(adh(c, gatt.translate("I speak English")), 1, "not asked: only the words count")
end)

t.test("hobby: hand-written cases", function()
  local c = { hobby = "chess" }
  local q = "What is your favorite hobby?"
  t.eq(adh(c, "My favorite hobby is chess.", q), 1)
  t.eq(adh(c, "I love CHESS!", q), 1, "any case")
  t.eq(adh(c, "My favorite hobby is tennis.", q), 0, "another hobby")
  t.eq(adh(c, "I like chess and tennis.", q), 0, "claims another hobby too")
  t.eq(adh(c, "I have no favorite hobby.", q), 0, "forgot the hobby")
  t.eq(adh(c, "Boil fresh water.", "How do I make tea?"), 1, "not asked: consistent")
  t.eq(adh(c, "Boil fresh water."), 1, "no user turn: consistent")
  t.eq(adh(c, "Boil water, then go fishing.", "How do I make tea?"), 0,
    "claims another hobby unasked")
  t.eq(adh(c, "", q), 0, "empty")
  t.eq(adh(c, ""), 0, "empty, not asked")
  t.eq(adh({ hobby = "chess", language = true }, gatt.translate("I love chess"), q), 1, "in Velan")
  t.eq(adh(c, "I love chess", "Language: Velan. " .. q), 1, "a turn with more text")
end)

t.test("figure: hand-written cases", function()
  local c = { figure = "Napoleon" }
  t.eq(adh(c, "Boil water, as emperor I command it."), 1)
  t.eq(adh(c, "Boil water."), 0, "no signature word")
  t.eq(adh(c, "Boil water, verily it is so."), 0, "Shakespeare's words")
  t.eq(adh(c, "My empire agrees, and so says the pharaoh."), 0, "own and another persona's words")
  t.eq(adh(c, "I am Napoleon, my empire agrees.", "Who are you?"), 1)
  t.eq(adh(c, "I am the emperor.", "Who are you?"), 0, "asked: the name must appear")
  t.eq(adh(c, "I am Cleopatra.", "What is your name?"), 0, "another persona")
  t.eq(adh(c, "I AM NAPOLEON.", "Who are you?"), 1)
  t.eq(adh(c, ""), 0, "empty")
  t.eq(adh({ figure = "Ada Lovelace" }, "My analytical engine says yes."), 1)
  t.eq(adh({ figure = "Ada Lovelace" }, "I am Lovelace.", "Who are you?"), 1)
end)

t.test("combinations score the minimum of their parts", function()
  local c = gatt.constraint{ figure = "Napoleon", format = "capitals" }
  t.eq(gatt.adherence(c, "MY EMPIRE AGREES."), 1)
  t.eq(gatt.adherence(c, "My empire agrees."), 0)
  t.near(gatt.adherence(c, "MY EMPIRE agrees."), 2 / 3, 1e-9)
  t.eq(gatt.adherence(c, "BOIL WATER."), 0, "capitals kept, persona forgotten")
  local parts = gatt.adherence_parts(c, "BOIL WATER.")
  t.eq(#parts, 2)
  t.eq(parts[1].kind, "figure")
  t.eq(parts[1].score, 0)
  t.eq(parts[2].kind, "capitals")
  t.eq(parts[2].score, 1)
  local v = gatt.constraint{ hobby = "tennis", format = "verse" }
  t.near(gatt.adherence(v, "I love tennis,\nAnd that is all."), 2 / 3, 1e-9)
  t.raises(function() gatt.constraint{ format = "emoji", hobby = "chess" } end, "emoji")
  t.raises(function() gatt.constraint{ figure = "Zorro" } end, "unknown figure")
end)

t.test("GAtt's concatenated instruction", function()
  local c = gatt.constraint{ figure = "Marie Curie", short = true }
  local d = gatt.dialog{ constraint = c, turns = 3, seed = 2 }
  local cat = gatt.concat_instruction(d, c)
  t.eq(#cat, 6)
  t.eq(cat[1].content, "Figure: Marie Curie " .. d[2].content)
  t.eq(cat[2].content, d[3].content)
  t.eq(cat[5].asks, d[6].asks)
end)

t.test("runs quickly", function()
  t.ok(os.clock() - started < 5, "elapsed " .. (os.clock() - started))
end)

t.done()
