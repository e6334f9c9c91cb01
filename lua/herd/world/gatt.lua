-- herd.world.gatt: system-message constraints for Ghost Attention (Llama 2, section 3.3).
--
--   local gatt = require "herd.world.gatt"
--   local c = gatt.sample_constraint{ seed = 7, families = gatt.train_families, max_combined = 2 }
--   print(gatt.instruction(c))         -- "Always act as Napoleon from now." or "Figure: Napoleon"
--   local d = gatt.dialog{ constraint = c, turns = 6, seed = 7 }   -- { {role=, content=}, ... }
--   local r = gatt.reference_reply(c, "Who are you?")              -- a reply that adheres
--   print(gatt.adherence(c, r, "Who are you?"))                     -- 1.0
--
-- Families (gatt.families): "hobby", "figure" (public figure), "language" (the toy language
-- Velan, a letter-to-syllable cipher of English), and four format variants "capitals", "emoji",
-- "one_sentence", "verse" (three lines). The format variants share the group "format"
-- (gatt.group), and a combination takes at most one family per group; "emoji" answers carry no
-- words, so it is never combined with anything. "language" and "verse" are held out of GAtt
-- training (gatt.zero_shot_families) for the zero-shot test of Figure 28.
--
-- The adherence of a combination is the minimum over its parts (a reply that breaks one
-- constraint does not adhere); gatt.adherence_parts gives each part's score. An empty reply
-- scores 0 for every family. Everything is deterministic from the seed (xorshift64*, not
-- math.random). See doc/world-gatt.md.
local M = {}

---------------------------------------------------------------------------------- randomness

local function splitmix(x)
  x = x + 0x9E3779B97F4A7C15
  x = (x ~ (x >> 30)) * 0xBF58476D1CE4E5B9
  x = (x ~ (x >> 27)) * 0x94D049BB133111EB
  return x ~ (x >> 31)
end

local Rng = {}
Rng.__index = Rng

-- xorshift64* seeded through splitmix64; `>>` is a logical shift on Lua 5.4 integers.
local function new_rng(seed)
  local s = splitmix(seed)
  if s == 0 then s = 0x2545F4914F6CDD1D end
  return setmetatable({ s = s }, Rng)
end

function Rng:next()
  local x = self.s
  x = x ~ (x >> 12)
  x = x ~ (x << 25)
  x = x ~ (x >> 27)
  self.s = x
  return x * 0x2545F4914F6CDD1D
end

function Rng:float() return (self:next() >> 11) * (1.0 / 9007199254740992.0) end
function Rng:int(n) return (self:next() >> 11) % n + 1 end
function Rng:pick(list) return list[self:int(#list)] end

function Rng:shuffle(list)
  for i = #list, 2, -1 do
    local j = self:int(i)
    list[i], list[j] = list[j], list[i]
  end
  return list
end

-- FNV-1a, 64 bits: deterministic choices that depend on a text (e.g. the user turn).
local function hash(text)
  local h = 0xcbf29ce484222325
  for i = 1, #text do h = (h ~ text:byte(i)) * 0x100000001b3 end
  return h
end

local function check_seed(seed, where)
  if seed == nil then return 1 end
  local s = math.tointeger(seed)
  if not s then error(where .. ": seed must be an integer", 3) end
  return s
end

M.rng = new_rng -- exposed for the world's other modules and for tests
M.hash = hash

---------------------------------------------------------------------------------- content

M.families = { "hobby", "figure", "language", "capitals", "emoji", "one_sentence", "verse" }
M.group = { hobby = "hobby", figure = "figure", language = "language", capitals = "format",
  emoji = "format", one_sentence = "format", verse = "format" }
M.train_families = { "hobby", "figure", "capitals", "emoji", "one_sentence" }
M.zero_shot_families = { "language", "verse" }

M.hobbies = { "tennis", "chess", "painting", "gardening", "fishing", "knitting", "hiking",
  "baking" }

-- Toy public figures: a name, the word that must appear when asked "Who are you?", and a
-- signature vocabulary. The sets are disjoint, and no generic answer uses any of them.
M.figures = {
  { name = "Napoleon", key = "napoleon", words = { "emperor", "empire", "cannon", "campaign" },
    clauses = { "as emperor I would win this campaign", "my empire agrees",
      "let the cannon decide", "such is the way of an emperor" } },
  { name = "Ada Lovelace", key = "lovelace",
    words = { "analytical", "engine", "algorithm", "loom" },
    clauses = { "my analytical engine would say the same", "there is an algorithm for that",
      "it is woven like a loom weaves", "the engine never tires" } },
  { name = "Cleopatra", key = "cleopatra", words = { "nile", "pharaoh", "sphinx", "asp" },
    clauses = { "so says the pharaoh", "the nile knows this well", "the sphinx would agree",
      "as a pharaoh of the nile I see it so" } },
  { name = "William Shakespeare", key = "shakespeare",
    words = { "verily", "thee", "quill", "stage" },
    clauses = { "verily it is so", "I tell thee this", "my quill writes it down",
      "all the world is a stage" } },
  { name = "Marie Curie", key = "curie", words = { "radium", "polonium", "laboratory", "isotope" },
    clauses = { "in my laboratory we would test it", "radium taught me patience",
      "like polonium it needs care", "every isotope has its time" } },
  { name = "Oscar Wilde", key = "wilde", words = { "epigram", "dandy", "aesthete", "velvet" },
    clauses = { "a dandy would agree", "that is a fine epigram", "spoken as an aesthete",
      "said in a velvet voice" } },
}
local figure_by_name = {}
for _, f in ipairs(M.figures) do figure_by_name[f.name] = f end

M.language_name = "Velan"
M.emojis = { ":sun:", ":moon:", ":star:", ":heart:", ":fire:", ":tree:", ":smile:", ":rain:" }
local emoji_set = {}
for _, e in ipairs(M.emojis) do emoji_set[e] = true end

-- Instructions: long phrasings (one picked at sampling) and the short form.
local long_forms = {
  hobby = { "You enjoy %s.", "Your favorite hobby is %s.", "You love %s more than anything." },
  figure = { "Always act as %s from now.", "Act as %s.", "You are %s. Stay in character." },
  language = { "Always answer in %s.", "Speak in %s.", "Only speak %s from now." },
  capitals = { "Always answer in capital letters.", "Write every answer in capitals." },
  emoji = { "Always answer with emojis only.",
    "Answer only with emojis like :sun: :moon: :star:." },
  one_sentence = { "Answer in one sentence only.", "Always answer with exactly one sentence." },
  verse = { "Always answer with a three-line verse.",
    "Answer every question as a short poem of three lines." },
}
local short_forms = { hobby = "Hobby: %s", figure = "Figure: %s", language = "Language: %s",
  capitals = "Format: capitals", emoji = "Format: emojis", one_sentence = "Format: one sentence",
  verse = "Format: verse" }

-- Attribute questions (Table 30) and generic chat questions with answers as clauses.
M.attribute_questions = {
  hobby = { "What is your favorite hobby?", "What do you like to do for fun?",
    "What do you do in your free time?" },
  figure = { "Who are you?", "What is your name?" },
  language = { "What language do you speak?", "Which language is this?" },
}

M.chat = {
  { "How do I go from Paris to New York?",
    { "You can fly across the ocean", "many airlines serve that route" } },
  { "What should I do there?", { "You can walk in the park", "you can visit a museum" } },
  { "What is the best season to visit?", { "Spring is mild and bright", "autumn is calm too" } },
  { "Can you suggest a good book?",
    { "Try a book of short stories", "read one story each night" } },
  { "How do I make tea?",
    { "Boil fresh water", "pour it over the leaves and wait three minutes" } },
  { "What is the weather like today?", { "I cannot see the sky", "but a coat is always wise" } },
  { "Can you help me plan my week?",
    { "Write down your tasks", "put the hard ones in the morning" } },
  { "Why is the sky blue?",
    { "Air scatters blue light more than red light", "so the sky looks blue" } },
  { "How can I sleep better?", { "Go to bed at the same time", "keep your room dark and quiet" } },
  { "What should I cook for dinner?", { "Make a simple soup", "add rice and green beans" } },
  { "How do I learn a new word?", { "Say the word out loud", "use it three times in one day" } },
  { "Tell me about the moon.", { "The moon circles the earth", "it shows the same face to us" } },
  { "How far is the sun?",
    { "The sun is very far away", "its light takes eight minutes to reach us" } },
  { "What is a good gift for a friend?",
    { "Give something they can use", "a warm scarf is a kind choice" } },
  { "How do I stay calm?", { "Breathe in slowly", "count to ten before you speak" } },
  { "Can you tell me a joke?", { "The tomato turned red", "because it saw the salad dressing" } },
  { "What is your advice for a long trip?", { "Pack light", "bring water and a map" } },
  { "How do plants grow?", { "Plants take in light and water", "they turn them into food" } },
  { "What time is it?", { "I do not have a clock", "please check your phone" } },
  { "How do I write a letter?",
    { "Start with a greeting", "say what you need and sign your name" } },
  { "Why do cats purr?", { "Cats purr when they are happy", "sometimes they purr to calm down" } },
  { "What makes a good day?",
    { "A good day has rest and work", "it also has time with people you like" } },
  { "How do birds fly?", { "Birds push air down with their wings", "the air lifts them up" } },
  { "What is the best way to save money?",
    { "Spend less than you earn", "put a little aside each week" } },
}

local fillers = { "that is my answer", "so it goes", "and that is all", "I hope it helps" }
local fallback = { "I will do my best to help", "ask me anything you like" }

---------------------------------------------------------------------------------- the toy language

-- Velan: every English letter becomes one consonant-vowel syllable over consonants z v k x q j
-- and vowels a e i o u, so a Velan word is a run of such syllables (almost no English word is).
local consonants = { "z", "v", "k", "x", "q", "j" }
local vowels = { "a", "e", "i", "o", "u" }
local cipher, decipher = {}, {}
do
  local syllables = {}
  for _, c in ipairs(consonants) do
    for _, v in ipairs(vowels) do syllables[#syllables + 1] = c .. v end
  end
  new_rng(0x5e1a):shuffle(syllables) -- a fixed permutation, part of the language's definition
  for i = 1, 26 do
    local letter = string.char(96 + i)
    cipher[letter] = syllables[i]
    decipher[syllables[i]] = letter
  end
end

local function translate_word(word)
  local out = word:lower():gsub("%a", cipher)
  if #word > 1 and not word:find("%l") then return out:upper() end
  if word:find("^%u") then return out:sub(1, 1):upper() .. out:sub(2) end
  return out
end

-- English-like text -> Velan (only letter runs change; spaces, digits, punctuation stay).
function M.translate(text) return (text:gsub("%a+", translate_word)) end

-- Is `word` (a run of letters, any case) a Velan form?
function M.is_velan(word)
  local w = word:lower()
  if #w == 0 or #w % 2 == 1 then return false end
  for i = 1, #w, 2 do
    if not decipher[w:sub(i, i + 1)] then return false end
  end
  return true
end

local function untranslate_word(word)
  if not M.is_velan(word) then return word end
  local out = word:lower():gsub("%a%a", decipher)
  if #word > 2 and not word:find("%l") then return out:upper() end
  if word:find("^%u") then return out:sub(1, 1):upper() .. out:sub(2) end
  return out
end

-- Velan -> English (words that are not Velan forms are left as they are).
function M.untranslate(text) return (text:gsub("%a+", untranslate_word)) end

---------------------------------------------------------------------------------- constraints

local function contains(list, value)
  for _, v in ipairs(list) do if v == value then return true end end
  return false
end

-- gatt.constraint{ figure = "Napoleon", hobby = "chess", language = "Velan" | true,
--   format = "capitals" | "emoji" | "one_sentence" | "verse", short = false, phrase = 1 }
-- builds a constraint by hand (parts in the order figure, hobby, language, format).
function M.constraint(spec)
  local parts = {}
  local phrase = spec.phrase or 1
  if spec.figure then
    if not figure_by_name[spec.figure] then
      error("gatt.constraint: unknown figure " .. tostring(spec.figure), 2)
    end
    parts[#parts + 1] = { kind = "figure", value = spec.figure, phrase = phrase }
  end
  if spec.hobby then
    if not contains(M.hobbies, spec.hobby) then
      error("gatt.constraint: unknown hobby " .. tostring(spec.hobby), 2)
    end
    parts[#parts + 1] = { kind = "hobby", value = spec.hobby, phrase = phrase }
  end
  if spec.language then
    parts[#parts + 1] = { kind = "language", value = M.language_name, phrase = phrase }
  end
  if spec.format then
    if M.group[spec.format] ~= "format" then
      error("gatt.constraint: unknown format " .. tostring(spec.format), 2)
    end
    parts[#parts + 1] = { kind = spec.format, phrase = phrase }
  end
  if #parts == 0 then error("gatt.constraint: no constraint given", 2) end
  for _, p in ipairs(parts) do
    if p.phrase > #long_forms[p.kind] then p.phrase = #long_forms[p.kind] end
  end
  if #parts > 1 and spec.format == "emoji" then
    error("gatt.constraint: emoji combines with nothing", 2)
  end
  return { parts = parts, short = spec.short and true or false }
end

-- gatt.sample_constraint{ seed = 1, families = gatt.train_families, max_combined = 2,
--   short = nil (a fair coin) | true | false }
-- `families` names entries of gatt.families; "format" stands for all four format variants.
function M.sample_constraint(opts)
  opts = opts or {}
  local rng = new_rng(check_seed(opts.seed, "gatt.sample_constraint"))
  local allowed = {}
  for _, name in ipairs(opts.families or M.train_families) do
    if name == "format" then
      for _, f in ipairs(M.families) do
        if M.group[f] == "format" and not contains(allowed, f) then allowed[#allowed + 1] = f end
      end
    elseif M.group[name] then
      if not contains(allowed, name) then allowed[#allowed + 1] = name end
    else
      error("gatt.sample_constraint: unknown family " .. tostring(name), 2)
    end
  end
  if #allowed == 0 then error("gatt.sample_constraint: no families to sample from", 2) end
  local max = opts.max_combined or 2
  if max < 1 then error("gatt.sample_constraint: max_combined must be >= 1", 2) end
  local want = rng:int(max)
  local parts, used = {}, {}
  while #parts < want do
    local choices = {}
    for _, f in ipairs(allowed) do
      if not used[M.group[f]] and not (f == "emoji" and #parts > 0) then
        choices[#choices + 1] = f
      end
    end
    if #choices == 0 then break end
    local kind = rng:pick(choices)
    local part = { kind = kind, phrase = rng:int(#long_forms[kind]) }
    if kind == "hobby" then part.value = rng:pick(M.hobbies)
    elseif kind == "figure" then part.value = rng:pick(M.figures).name
    elseif kind == "language" then part.value = M.language_name end
    parts[#parts + 1] = part
    used[M.group[kind]] = true
    if kind == "emoji" then break end
  end
  local short
  if opts.short == nil then short = rng:float() < 0.5 else short = opts.short and true or false end
  return { parts = parts, short = short }
end

-- The system message for a constraint.
function M.instruction(c)
  local texts = {}
  for _, p in ipairs(c.parts) do
    if c.short then
      texts[#texts + 1] = string.format(short_forms[p.kind], p.value)
    else
      texts[#texts + 1] = string.format(long_forms[p.kind][p.phrase or 1], p.value)
    end
  end
  return table.concat(texts, c.short and "; " or " ")
end

-- A canonical one-line description, e.g. "figure=Napoleon+capitals short".
function M.describe(c)
  local texts = {}
  for _, p in ipairs(c.parts) do
    texts[#texts + 1] = p.value and (p.kind .. "=" .. p.value) or p.kind
  end
  return table.concat(texts, "+") .. (c.short and " short" or " long")
end

local function find_part(c, kind)
  for _, p in ipairs(c.parts) do if p.kind == kind then return p end end
  return nil
end

local function format_of(c)
  for _, p in ipairs(c.parts) do if M.group[p.kind] == "format" then return p.kind end end
  return nil
end

---------------------------------------------------------------------------------- questions

-- Which attribute ("hobby", "figure", "language") a user turn asks about, or nil. The turn may
-- carry more text (e.g. the instruction concatenated to it, as GAtt does).
function M.attribute_asked(user_turn)
  if type(user_turn) ~= "string" then return nil end
  local text = user_turn:lower()
  for _, attr in ipairs({ "hobby", "figure", "language" }) do
    for _, q in ipairs(M.attribute_questions[attr]) do
      if text:find(q:lower(), 1, true) then return attr end
    end
  end
  return nil
end

local function chat_answer(user_turn)
  local text = user_turn:lower()
  for _, qa in ipairs(M.chat) do
    if text:find(qa[1]:lower(), 1, true) then return qa[2] end
  end
  return nil
end

---------------------------------------------------------------------------------- adherence

local function words_of(text)
  local words = {}
  for w in text:gsub(":%a+:", " "):gmatch("%a+") do words[#words + 1] = w end
  return words
end

local function lower_set(words)
  local set = {}
  for _, w in ipairs(words) do set[w:lower()] = true end
  return set
end

-- Does the word set contain `word` in English or in Velan?
local function has(set, word)
  return set[word] or set[M.translate(word)] or false
end

local function sentence_count(text)
  local n = 0
  for segment in (text .. " "):gsub("[.!?]+%s", "\0"):gmatch("[^\0]+") do
    if segment:find("%w") then n = n + 1 end
  end
  return n
end

local function nonempty_lines(text)
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:find("%S") then n = n + 1 end
  end
  return n
end

local checkers = {}

function checkers.capitals(_, response, words)
  local upper = 0
  for _, w in ipairs(words) do if not w:find("%l") then upper = upper + 1 end end
  return upper / #words
end

function checkers.emoji(_, response)
  local total, good = 0, 0
  for token in response:gmatch("%S+") do
    total = total + 1
    if emoji_set[token] then good = good + 1 end
  end
  if total == 0 then return 0 end
  return good / total
end

function checkers.one_sentence(_, response)
  local n = sentence_count(response)
  if n == 0 then return 0 end
  return 1 / n
end

function checkers.verse(_, response)
  local n = nonempty_lines(response)
  return math.max(0, 1 - math.abs(n - 3) / 3)
end

function checkers.language(part, response, words, asked)
  local velan = 0
  for _, w in ipairs(words) do if M.is_velan(w) then velan = velan + 1 end end
  local score = velan / #words
  if asked == "language" and not has(lower_set(words), part.value:lower()) then return 0 end
  return score
end

function checkers.hobby(part, response, words, asked)
  local set = lower_set(words)
  for _, h in ipairs(M.hobbies) do
    if h ~= part.value and has(set, h) then return 0 end -- claims another hobby
  end
  if asked == "hobby" and not has(set, part.value) then return 0 end
  return 1
end

function checkers.figure(part, response, words, asked)
  local set = lower_set(words)
  local own = figure_by_name[part.value]
  for _, f in ipairs(M.figures) do
    if f ~= own then
      if has(set, f.key) then return 0 end
      for _, w in ipairs(f.words) do if has(set, w) then return 0 end end
    end
  end
  if asked == "figure" and not has(set, own.key) then return 0 end
  local present = has(set, own.key)
  for _, w in ipairs(own.words) do present = present or has(set, w) end
  return present and 1 or 0
end

-- Scores per part: { {kind=, value=, score=}, ... }. `user_turn` (optional) tells whether the
-- turn asked about an attribute: then the reply must name it (hobby, figure's name, language).
function M.adherence_parts(c, response, user_turn)
  response = response or ""
  local words = words_of(response)
  local asked = M.attribute_asked(user_turn)
  local scores = {}
  for _, p in ipairs(c.parts) do
    local score
    if p.kind == "emoji" then
      score = checkers.emoji(p, response)
    elseif #words == 0 then
      score = 0
    else
      score = checkers[p.kind](p, response, words, asked)
    end
    scores[#scores + 1] = { kind = p.kind, value = p.value, score = score }
  end
  return scores
end

-- Adherence in [0,1]: the minimum over the constraint's parts.
function M.adherence(c, response, user_turn)
  local min = 1
  for _, s in ipairs(M.adherence_parts(c, response, user_turn)) do
    if s.score < min then min = s.score end
  end
  return min
end

---------------------------------------------------------------------------------- reference replies

local function capitalize(s) return (s:gsub("^%l", string.upper)) end

-- Clauses (no end punctuation) from a free-text base answer.
local function clauses_of(text)
  local clauses = {}
  for piece in (text:gsub("\n", " ") .. " "):gsub("[.!?]+%s", "\0"):gmatch("[^\0]+") do
    local s = piece:gsub("[.!?]+$", ""):gsub("^%s+", ""):gsub("%s+$", "")
    if s:find("%w") then clauses[#clauses + 1] = s end
  end
  return clauses
end

local function render(clauses, format)
  if format == "one_sentence" then
    local text = capitalize(clauses[1])
    for i = 2, #clauses do
      text = text .. (i == #clauses and ", and " or ", ") .. clauses[i]
    end
    return text .. "."
  elseif format == "verse" then
    local lines = {}
    for i = 1, 3 do lines[i] = clauses[i] end
    for i = 4, #clauses do lines[3] = lines[3] .. " and " .. clauses[i] end
    return capitalize(lines[1]) .. ",\n" .. capitalize(lines[2]) .. ",\n"
      .. capitalize(lines[3]) .. "."
  end
  local sentences = {}
  for i, s in ipairs(clauses) do sentences[i] = capitalize(s) .. "." end
  return table.concat(sentences, " ")
end

-- A reply to `user_turn` that adheres to the constraint. `base` (optional) is the plain answer
-- to build on (e.g. a task's reference answer); otherwise a canned answer is used.
function M.reference_reply(c, user_turn, base)
  user_turn = user_turn or ""
  local h = hash(user_turn .. "\0" .. M.describe(c))
  local rng = new_rng(h)
  local format = format_of(c)
  if format == "emoji" then
    local tokens = {}
    for i = 1, 3 do tokens[i] = rng:pick(M.emojis) end
    return table.concat(tokens, " ")
  end
  local hobby, figure = find_part(c, "hobby"), find_part(c, "figure")
  local language = find_part(c, "language")
  local asked = M.attribute_asked(user_turn)
  local clauses
  if asked == "hobby" then
    clauses = { hobby and ("my favorite hobby is " .. hobby.value) or "I have no favorite hobby" }
  elseif asked == "figure" then
    clauses = { figure and ("I am " .. figure.value) or "I am your helpful assistant" }
  elseif asked == "language" then
    clauses = { "I speak " .. (language and language.value or "English") }
  elseif base then
    clauses = clauses_of(base)
    if #clauses == 0 then clauses = { fallback[1] } end
  else
    local answer = chat_answer(user_turn) or fallback
    clauses = {}
    for i, s in ipairs(answer) do clauses[i] = s end
  end
  if figure then
    clauses[#clauses + 1] = rng:pick(figure_by_name[figure.value].clauses)
  end
  if format == "verse" then
    local pool = rng:shuffle({ table.unpack(fillers) })
    for i = 1, 3 - #clauses do clauses[#clauses + 1] = pool[i] end
  end
  local text = render(clauses, format)
  if language then text = M.translate(text) end
  if format == "capitals" then text = text:upper() end
  return text
end

---------------------------------------------------------------------------------- dialogs

-- gatt.dialog{ constraint = c, turns = N (1..20), seed = 1, asks_attributes = true,
--   replies = true, system = true } -> { {role=, content=}, ... }
-- User turns are generic chat questions; with asks_attributes, the last turn and about 30% of
-- the turns from the second on ask about an attribute of the constraint (Table 30); such user
-- messages carry `asks` = "hobby" | "figure" | "language". Assistant turns are reference replies.
function M.dialog(opts)
  local c = opts.constraint or error("gatt.dialog: constraint is required", 2)
  local turns = math.tointeger(opts.turns or 1)
  if not turns or turns < 1 or turns > 20 then
    error("gatt.dialog: turns must be an integer in 1..20", 2)
  end
  local rng = new_rng(check_seed(opts.seed, "gatt.dialog"))
  local asks = opts.asks_attributes ~= false
  local attrs = {}
  for _, p in ipairs(c.parts) do
    if M.attribute_questions[p.kind] then attrs[#attrs + 1] = p.kind end
  end
  if #attrs == 0 then attrs = { "figure" } end -- "Who are you?" (Figure 28)
  local order = {}
  for i = 1, #M.chat do order[i] = i end
  rng:shuffle(order)
  local messages = {}
  if opts.system ~= false then messages[1] = { role = "system", content = M.instruction(c) } end
  for i = 1, turns do
    local question, attr
    if asks and (i == turns or (i > 1 and rng:float() < 0.3)) then
      attr = rng:pick(attrs)
      question = rng:pick(M.attribute_questions[attr])
    else
      question = M.chat[order[(i - 1) % #order + 1]][1]
    end
    messages[#messages + 1] = { role = "user", content = question, asks = attr }
    if opts.replies ~= false then
      messages[#messages + 1] = { role = "assistant", content = M.reference_reply(c, question) }
    end
  end
  return messages
end

-- GAtt's first step: a copy of the dialog with the instruction concatenated to every user
-- message (and the system message left out), to sample replies from the latest model.
function M.concat_instruction(messages, c)
  local out = {}
  local inst = M.instruction(c)
  for _, m in ipairs(messages) do
    if m.role == "user" then
      out[#out + 1] = { role = "user", content = inst .. " " .. m.content, asks = m.asks }
    elseif m.role ~= "system" then
      out[#out + 1] = { role = m.role, content = m.content }
    end
  end
  return out
end

return M
