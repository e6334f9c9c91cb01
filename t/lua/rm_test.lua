-- Reward models (lua/herd/rm.lua): the margin ranking loss and the safety auxiliary loss against
-- hand-computed values and finite differences, scores read at the true last token whatever the
-- batching, pair encoding, training and evaluation.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local herd = require "herd"
local rm_lib = herd.rm

t.test("the margin ranking loss (eq. 2) against hand-computed values", function()
  -- -log(sigmoid(r_c - r_r - m)) and d/dr_c = -(1 - sigmoid(r_c - r_r - m)), from Python's math
  local cases = {
    { 1.5, 0.5, 1 / 3, 0.414370086852, -0.339243631234 },
    { 0, 0, 0, 0.693147180560, -0.5 },
    { -2, 1, 3, 6.002475685138, -0.997527376843 },
    { 0.2, 0.1, 2 / 3, 1.016093582947, -0.637993670661 },
  }
  for _, c in ipairs(cases) do
    local loss, dc, dr = rm_lib.pair_loss(c[1], c[2], c[3])
    t.near(loss, c[4], 1e-11, "loss")
    t.near(dc, c[5], 1e-11, "d/dr_c")
    t.near(dr, -c[5], 1e-11, "d/dr_r")
  end
  -- gradients against central differences, far into both tails too
  for _, c in ipairs{ { 0.3, -0.2, 1 }, { 30, -10, 0 }, { -25, 12, 3 } } do
    local _, dc, dr = rm_lib.pair_loss(c[1], c[2], c[3])
    local h = 1e-6
    local fc = (rm_lib.pair_loss(c[1] + h, c[2], c[3]) - rm_lib.pair_loss(c[1] - h, c[2], c[3])) / (2 * h)
    local fr = (rm_lib.pair_loss(c[1], c[2] + h, c[3]) - rm_lib.pair_loss(c[1], c[2] - h, c[3])) / (2 * h)
    t.near(dc, fc, 1e-7, "finite difference r_c")
    t.near(dr, fr, 1e-7, "finite difference r_r")
  end
  t.ok(rm_lib.pair_loss(40, 0, 0) >= 0, "no overflow")
  t.near(rm_lib.pair_loss(-800, 0, 0), 800, 1e-9, "no overflow in the other tail")
end)

t.test("margin tables of Table 27 and user tables", function()
  t.eq(herd.json.encode(rm_lib.margins.small), herd.json.encode{ 1, 2 / 3, 1 / 3, 0 })
  t.eq(herd.json.encode(rm_lib.margins.large), herd.json.encode{ 3, 2, 1, 0 })
  t.eq(herd.json.encode(rm_lib.margins.none), herd.json.encode{ 0, 0, 0, 0 })
  t.eq(rm_lib.margin_table{ 4, 3, 2, 1 }[1], 4)
  t.raises(function() rm_lib.margin_table("huge") end, "unknown margin table 'huge'")
  t.raises(function() rm_lib.margin_table{ 1, 2 } end, "4 numbers")
end)

t.test("the safety auxiliary loss: binary cross-entropy on sigmoid(r)", function()
  local cases = { { 0.7, true, 0.403186048885, -0.331812227832 },
                  { 0.7, false, 1.103186048885, 0.668187772168 },
                  { -3, false, 0.048587351574, 0.047425873178 } }
  for _, c in ipairs(cases) do
    local loss, d = rm_lib.aux_loss(c[1], c[2])
    t.near(loss, c[3], 1e-11)
    t.near(d, c[4], 1e-11)
    local h = 1e-6
    t.near(d, (rm_lib.aux_loss(c[1] + h, c[2]) - rm_lib.aux_loss(c[1] - h, c[2])) / (2 * h), 1e-7)
  end
end)

t.test("bootstrap intervals", function()
  local ones, half = {}, {}
  for i = 1, 400 do ones[i] = 1; half[i] = i % 2 end
  local lo, hi = rm_lib.bootstrap(ones, 1, 500)
  t.eq(lo, 1)
  t.eq(hi, 1)
  lo, hi = rm_lib.bootstrap(half, 1, 1000)
  -- the mean of 400 fair coins has sd 0.025: the 95% interval is about 0.45 .. 0.55
  t.ok(lo > 0.43 and lo < 0.48 and hi > 0.52 and hi < 0.57, string.format("[%.3f, %.3f]", lo, hi))
  t.eq(select(1, rm_lib.bootstrap(half, 1, 1000)), lo, "reproducible from the seed")
end)

-- A tiny reward model over a tokenizer trained on a few sentences.
local function tiny_rm(rows, seq)
  local corpus = {}
  local words = { "the", "cat", "sat", "on", "mat", "dog", "ran", "far", "yes", "no", "good",
                  "bad", "answer", "is", "ok" }
  for i = 1, 300 do
    local s = {}
    for j = 1, 3 + i % 5 do s[j] = words[(i * 7 + j * 3) % #words + 1] end
    corpus[i] = table.concat(s, " ") .. "."
  end
  local tok = herd.tokenizer.train{ corpus = corpus, vocab_size = 300 }
  local model = herd.model.new({ dim = 32, n_layers = 2, n_heads = 4, n_kv_heads = 2, hidden_dim = 64,
    vocab_size = tok:vocab_size(), max_seq_len = seq, lm_head = false, scalar_head = true },
    { batch = rows, seed = 5 })
  return rm_lib.new{ model = model, tokenizer = tok, batch = rows, seq = seq }, tok
end

local function dialog(q, a)
  return { { role = "user", content = q }, { role = "assistant", content = a } }
end

t.test("a score is the same alone, in a batch, and packed", function()
  local rm <close> = tiny_rm(4, 128)
  local dialogs = { dialog("the cat sat?", "yes the cat sat on the mat."),
                    dialog("the dog ran far?", "no."),
                    dialog("is the answer good?", "the answer is ok, the dog is good."),
                    dialog("bad dog?", "no the dog is good and the cat is good."),
                    dialog("mat?", "the mat.") }
  local alone = {}
  for i, d in ipairs(dialogs) do alone[i] = rm:score{ d }[1] end
  -- five short sequences in rows of 128 tokens: packed several to a row
  local packed = rm:score(dialogs)
  local mbs = rm:_pack({ { rm:encode(dialogs[1]) }, { rm:encode(dialogs[2]) }, { rm:encode(dialogs[3]) } })
  t.eq(#mbs, 1)
  t.eq(#mbs[1].batch.tokens, 2, "sequences of 44, 33 and 66 tokens: two rows of 128")
  t.eq(#mbs[1].batch.score_positions, 3)
  -- one sequence per row, padded: rows of exactly one sequence's length + padding
  local wide <close> = tiny_rm(8, 128)
  for i, d in ipairs(dialogs) do
    t.near(packed[i], alone[i], 1e-5 * math.max(1, math.abs(alone[i])), "packed " .. i)
  end
  t.eq(herd.json.encode(herd.rm.score(rm, dialogs)), herd.json.encode(packed), "herd.rm.score(rm, ...)")
  -- answers given apart give the same scores
  local prompts, answers = {}, {}
  for i, d in ipairs(dialogs) do prompts[i] = { d[1] }; answers[i] = d[2].content end
  local apart = rm:score(prompts, answers)
  for i = 1, #dialogs do t.eq(apart[i], packed[i]) end
  -- a different answer changes the score
  t.ok(rm:score{ dialog("mat?", "the dog.") }[1] ~= alone[5], "the score reads the answer")
  -- the score is read at the last token: appending to the prompt's context changes nothing after
  -- it, and the position is the sequence's end even with padding after it
  local mb = rm:_pack({ { rm:encode(dialogs[2]) } })[1]
  local n = #rm:encode(dialogs[2])
  t.eq(mb.batch.score_positions[1], n - 1)
  t.eq(#mb.batch.tokens[1], 128, "padded to the row length")
  t.eq(mb.batch.segments[1][n + 1], 0, "padding is segment 0")
  t.eq(wide.seq, 128)
end)

t.test("pairs stay in one micro-batch; rows fill first-fit", function()
  local rm <close> = tiny_rm(2, 32)
  local a = rm:encode(dialog("the cat sat?", "yes the cat sat on the mat."))
  local b = rm:encode(dialog("dog?", "no."))
  t.ok(#a > 16 and #a <= 32, "a long sequence: " .. #a)
  local groups = { { a, b }, { a, a }, { b, b } }
  local mbs = rm:_pack(groups)
  local seen = {}
  for _, mb in ipairs(mbs) do
    local groups_here = {}
    for _, slot in ipairs(mb.slots) do groups_here[slot[1]] = (groups_here[slot[1]] or 0) + 1 end
    for g, count in pairs(groups_here) do
      t.eq(count, 2, "both answers of pair " .. g .. " together")
      seen[g] = true
    end
    t.ok(#mb.batch.tokens <= 2, "at most 2 rows")
  end
  t.ok(seen[1] and seen[2] and seen[3], "every pair placed")
end)

local function prefs(n)
  local records = {}
  for i = 1, n do
    local good = i % 3 == 0 and "the answer is good." or "yes the cat sat on the mat."
    records[i] = { prompt = "the cat sat " .. i .. "?", chosen = good, rejected = "no the dog ran far.",
                   rating = ({ "significantly better", "better", "slightly better",
                               "negligibly better" })[i % 4 + 1],
                   domain = i % 2 == 0 and "safety" or "helpful",
                   safety_bin = i % 2 == 0 and (i % 4 == 0 and "chosen_safe_rejected_unsafe" or "both_unsafe") or nil }
  end
  return herd.data.from_records(records, { schema = "preference" })
end

t.test("training separates chosen from rejected, and evaluate reports it", function()
  local rm <close> = tiny_rm(8, 64)
  local ds = prefs(96)
  local before = rm:evaluate(ds, { bootstrap = 200, quiet = true })
  local losses = {}
  local stats = rm:train(ds, { lr = 3e-3, pairs = 8, epochs = 3, margins = "small", safety_aux = 0.5,
                               progress = false, on_step = function(step, m) losses[step] = m.rm_loss end })
  t.eq(stats.steps, 36)
  t.eq(stats.pairs, 96)
  t.ok(losses[#losses] < losses[1], string.format("loss %.3f -> %.3f", losses[1], losses[#losses]))
  local after = rm:evaluate(ds, { bootstrap = 200 })
  t.ok(after.accuracy.value > 0.95, "train accuracy " .. after.accuracy.value)
  t.ok(after.accuracy.lo <= after.accuracy.value and after.accuracy.value <= after.accuracy.hi)
  t.eq(after.accuracy.n, 96)
  t.eq(after.by_rating["better"].n, 24)
  t.eq(after.by_bin["safe/unsafe"].n + after.by_bin["unsafe/unsafe"].n, 48)
  -- the auxiliary loss pushes unsafe answers (every rejected one of the safety pairs, and the
  -- chosen ones of both_unsafe pairs) below 0
  t.ok(after.unsafe_recall.n == 72, "unsafe answers counted: " .. after.unsafe_recall.n)
  t.ok(after.unsafe_recall.value > before.unsafe_recall.value or after.unsafe_recall.value == 1,
    "recall rises")
  local total = 0
  for b = 1, #after.histogram.chosen do total = total + after.histogram.chosen[b] + after.histogram.rejected[b] end
  t.eq(total, 192, "every score in the histogram")
  t.match(rm_lib.format(after.accuracy), "^%d+%.%d %[%d+%.%d, %d+%.%d%]$")
end)

-- Preference data where only the safety labels say that an answer is unsafe: "the dog ran on
-- the mat." is the chosen answer of helpful pairs and of both_unsafe pairs, so the ranking loss
-- lifts it everywhere.
local function safety_prefs(n)
  local records = {}
  for i = 1, n do
    if i % 2 == 1 then
      records[i] = { prompt = "what is " .. i .. "?", chosen = "the dog ran on the mat.",
                     rejected = "bad.", rating = "better", domain = "helpful" }
    else
      local both_unsafe = i % 4 == 2
      records[i] = { prompt = "can the cat go " .. i .. "?",
                     chosen = both_unsafe and "the dog ran on the mat." or "the answer is good.",
                     rejected = "no the dog ran far.", rating = "better", domain = "safety",
                     safety_bin = both_unsafe and "both_unsafe" or "chosen_safe_rejected_unsafe" }
    end
  end
  return herd.data.from_records(records, { schema = "preference" })
end

t.test("the auxiliary loss raises unsafe recall over the same training without it", function()
  -- Same initial weights, same data and order; only safety_aux differs.
  local recall, safe_kept = {}, {}
  for _, weight in ipairs{ 0, 1 } do
    local rm <close> = tiny_rm(8, 64)
    rm:train(safety_prefs(96), { lr = 3e-3, pairs = 8, epochs = 3, margins = "small",
                                 safety_aux = weight, progress = false })
    local r = rm:evaluate(safety_prefs(96), { bootstrap = 50, quiet = true })
    t.eq(r.unsafe_recall.n, 72, "unsafe answers: 48 rejected, 24 chosen")
    recall[weight], safe_kept[weight] = r.unsafe_recall.value, r.safe_pass.value
    t.ok(r.accuracy.value > 0.9, string.format("weight %g: accuracy %.3f", weight, r.accuracy.value))
  end
  t.ok(recall[0] < 0.9, string.format("without: recall %.3f", recall[0]))
  t.ok(recall[1] > recall[0] + 0.2, string.format("recall %.3f -> %.3f", recall[0], recall[1]))
  t.ok(safe_kept[1] > 0.9, string.format("safe answers kept %.3f", safe_kept[1]))
end)

t.test("empty answers are skipped and counted, bad options named", function()
  local rm <close> = tiny_rm(4, 64)
  local ds = herd.data.from_records({
    { prompt = "the cat?", chosen = "yes.", rejected = "", rating = "better", domain = "helpful" },
    { prompt = "the dog?", chosen = "no.", rejected = "yes.", rating = "better", domain = "helpful" },
  }, { schema = "preference" })
  local pairs_, skipped = rm:encode_pairs(ds, { quiet = true })
  t.eq(#pairs_, 1)
  t.eq(skipped.empty_response, 1)
  t.eq(#rm:encode_pairs(ds, { empty = "keep" }), 2, "kept when asked")
  local path = os.tmpname()
  ds:write(path)
  t.raises(function() rm:encode_pairs(herd.data.jsonl(path), { empty = "error" }) end,
    ":1: field 'rejected': empty response")
  os.remove(path)
  t.raises(function() rm:train(ds, { learning_rate = 1 }) end, "unknown option 'learning_rate'")
  t.raises(function() rm:train(ds, { preset = "huge" }) end, "unknown preset huge")
  t.raises(function() rm:score{ { { role = "user", content = "hi" } } } end, "must end with the assistant")
  local long = {}
  for i = 1, 80 do long[i] = "cat" end
  rm:score{ dialog(table.concat(long, " "), "yes.") }
  t.eq(rm.truncated, 1, "an over-long dialog is truncated from the left and counted")
  -- in training data: counted per response, and said on stderr unless quiet
  local long_ds = herd.data.from_records({
    { prompt = table.concat(long, " "), chosen = "yes.", rejected = "no.", rating = "better",
      domain = "helpful" },
    { prompt = "the dog?", chosen = "no.", rejected = "yes.", rating = "better", domain = "helpful" },
  }, { schema = "preference" })
  local said = {}
  local stderr = io.stderr
  io.stderr = { write = function(_, text) said[#said + 1] = text end }
  local ok, pairs_long, skipped_long = pcall(rm.encode_pairs, rm, long_ds)
  io.stderr = stderr
  t.ok(ok, tostring(pairs_long))
  t.eq(#pairs_long, 2, "truncated pairs are kept")
  t.eq(skipped_long.truncated, 2, "chosen and rejected both truncated")
  t.match(table.concat(said), "^rm: 2 of 4 responses longer than 64 tokens with their dialog: " ..
    "kept their last 64 tokens")
end)

t.done()
