-- herd.data.pack: SFT packing (Llama 2 section 3.1). Packed samples must not see each other,
-- only answer tokens are trained, and the layout, counts and errors are as doc/data.md says.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local herd = require "herd"

local PAD = 0

-- A sample of token ids 1..n with a mask; `trained` lists the 1-based tokens with mask 1.
local function sample(ids, trained)
  local mask = {}
  for i = 1, #ids do mask[i] = 0 end
  for _, i in ipairs(trained) do mask[i] = 1 end
  return { ids = ids, mask = mask }
end

local function range(first, last)
  local ids = {}
  for i = first, last do ids[#ids + 1] = i end
  return ids
end

local function row_of(batch, field, r)
  return batch[field]:totable()[r]
end

t.test("a packed sample's log-probs equal the sample's own: no attention across samples",
  function()
    local V, T = 41, 24
    math.randomseed(7)
    local samples = {}
    for i = 1, 12 do
      local n = math.random(2, 11)
      local ids, mask = {}, {}
      for k = 1, n do ids[k], mask[k] = math.random(1, V - 1), math.random(0, 1) end
      mask[n] = 1  -- at least one trained token
      samples[i] = { ids = ids, mask = mask }
    end
    local packed = herd.data.pack(samples, { seq = T, pad = PAD })
    t.ok(#packed < #samples, "samples share rows")
    local m = herd.model.new({ dim = 32, n_layers = 2, n_heads = 4, n_kv_heads = 2,
                               hidden_dim = 64, vocab_size = V, max_seq_len = T },
                             { batch = #packed, seed = 1 })
    local together = m:logprobs(packed:batch()):totable()
    local compared, worst = 0, 0
    for i, s in ipairs(samples) do
      local row, start, len = packed:placement(i)
      t.eq(len, #s.ids)
      local targets = {}
      for k = 1, len do targets[k] = s.ids[k + 1] or -1 end
      local alone = m:logprobs{ tokens = { s.ids }, targets = { targets } }:totable()[1]
      for k = 1, len - 1 do
        local diff = math.abs(together[row][start + k - 1] - alone[k])
        worst = math.max(worst, diff)
        compared = compared + 1
      end
      t.eq(together[row][start + len - 1], 0.0, "no prediction across the boundary")
    end
    t.ok(worst <= 1e-5, "largest difference " .. worst)
    t.ok(compared > 40, "compared " .. compared .. " tokens")
  end)

t.test("a packed batch trains: loss is the mean NLL over answer tokens", function()
  local samples = { sample(range(1, 6), { 4, 5, 6 }), sample(range(7, 10), { 3, 4 }),
                    sample(range(11, 19), { 9 }) }
  local packed = herd.data.pack(samples, { seq = 12, pad = PAD })
  local m = herd.model.new({ dim = 32, n_layers = 1, n_heads = 4, hidden_dim = 32,
                             vocab_size = 20, max_seq_len = 12 }, { batch = #packed, seed = 2 })
  local batch = packed:batch()
  local logprobs = m:logprobs(batch):totable()
  local weights = batch.weights:totable()
  local total, trained = 0, 0
  for r = 1, #packed do
    for c = 1, 12 do
      total, trained = total - logprobs[r][c] * weights[r][c], trained + weights[r][c]
    end
  end
  t.eq(trained, packed:stats().trained)
  t.near(m:forward(batch), total / trained, 1e-5)
  local first = m:step(batch, { lr = 1e-2, weight_decay = 0 })
  local loss
  for _ = 1, 20 do loss = m:step(batch, { lr = 1e-2, weight_decay = 0 }) end
  t.ok(loss < first, string.format("loss %g after 20 steps, %g before", loss, first))
end)

local corpus = {
  "the cat sat on the mat", "a dog ran in the park", "hello there how are you",
  "I am fine thank you", "be brief and kind", "what is two plus two", "four is the answer",
}

local dialogs = {
  single = { { role = "user", content = "what is two plus two" },
             { role = "assistant", content = "four is the answer" } },
  multi = { { role = "user", content = "hello there" },
            { role = "assistant", content = "I am fine thank you" },
            { role = "user", content = "the cat" },
            { role = "assistant", content = "sat on the mat" } },
  system = { { role = "system", content = "be brief and kind" },
             { role = "user", content = "how are you" },
             { role = "assistant", content = "I am fine" } },
}

t.test("weights cover exactly the assistant's tokens (single-turn, multi-turn, system)",
  function()
    local tok = herd.tokenizer.train{ corpus = corpus, vocab_size = 300, min_frequency = 1 }
    local names, chats, samples = { "single", "multi", "system" }, {}, {}
    for i, name in ipairs(names) do
      chats[i] = tok:chat(dialogs[name])
      samples[i] = { ids = chats[i].ids, mask = herd.tokenizer.assistant_mask(chats[i]) }
    end
    local packed = herd.data.pack(samples, { seq = 160, pad = tok:eos() })
    local batch = packed:batch()
    local tokens, targets = batch.tokens:totable(), batch.targets:totable()
    local weights, positions = batch.weights:totable(), batch.positions:totable()
    for i, chat in ipairs(chats) do
      local row, start, len = packed:placement(i)
      t.eq(len, #chat.ids, names[i])
      local trained, expected = {}, {}
      for k = 2, #chat.ids do  -- token 1 (<s>) is never a target
        if chat.roles[k] == "assistant" then expected[#expected + 1] = k end
      end
      for k = 1, len do
        local col = start + k - 1
        t.eq(tokens[row][col], chat.ids[k])
        t.eq(positions[row][col], k - 1)
        t.eq(targets[row][col], chat.ids[k + 1] or -1)
        -- the weight at token k trains the prediction of token k + 1
        if weights[row][col] == 1 then trained[#trained + 1] = k + 1 end
      end
      t.eq(table.concat(trained, ","), table.concat(expected, ","), names[i])
      t.ok(#expected > 0 and chat.roles[#chat.ids] == "assistant", names[i] .. " ends with </s>")
    end
  end)

t.test("layout: greedy rows, positions restart, distinct segments, padding", function()
  local lengths, samples = { 4, 5, 3, 7, 10, 2 }, {}
  local next_id = 1
  for i, n in ipairs(lengths) do
    samples[i] = sample(range(next_id, next_id + n - 1), { n })
    next_id = next_id + n
  end
  local packed = herd.data.pack(samples, { seq = 10, pad = 99 })
  t.eq(#packed, 4, "rows: [4 5] [3 7] [10] [2]")
  local b = packed:batch()
  t.eq(table.concat(row_of(b, "positions", 1), " "), "0 1 2 3 0 1 2 3 4 0")
  t.eq(table.concat(row_of(b, "segments", 1), " "), "0 0 0 0 1 1 1 1 1 2")
  t.eq(table.concat(row_of(b, "tokens", 1), " "), "1 2 3 4 5 6 7 8 9 99")
  t.eq(table.concat(row_of(b, "targets", 1), " "), "2 3 4 -1 6 7 8 9 -1 -1")
  t.eq(table.concat(row_of(b, "weights", 1), " "), "0.0 0.0 1.0 0.0 0.0 0.0 0.0 1.0 0.0 0.0")
  t.eq(table.concat(row_of(b, "segments", 2), " "), "0 0 0 1 1 1 1 1 1 1")
  t.eq(table.concat(row_of(b, "positions", 3), " "), "0 1 2 3 4 5 6 7 8 9")
  t.eq(table.concat(row_of(b, "segments", 4), " "), "0 0 1 1 1 1 1 1 1 1")
  t.eq(table.concat(row_of(b, "positions", 4), " "), "0 1 0 1 2 3 4 5 6 7")
  t.eq(table.concat(row_of(b, "tokens", 4), " "), "30 31 99 99 99 99 99 99 99 99")
  t.eq(table.concat(row_of(b, "targets", 4), " "), "31 -1 -1 -1 -1 -1 -1 -1 -1 -1")
  local s = packed:stats()
  t.eq(s.samples, 6)
  t.eq(s.rows, 4)
  t.eq(s.tokens, 31)
  t.eq(s.padding, 9)
  t.eq(s.trained, 6)
  t.eq(s.truncated, 0)
  local row, start, len = packed:placement(4)
  t.eq(row * 100 + start * 10 + len, 247)
  local middle = packed:batch(2, 2)
  t.eq(middle.tokens:shape()[1], 2)
  t.eq(table.concat(middle.positions:totable()[2], " "), "0 1 2 3 4 5 6 7 8 9")
  t.near(middle.loss_scale, 1 / 3, 1e-12, "samples 3, 4 and 5 train one token each")
  t.raises(function() packed:batch(4, 2) end, "rows 4%.%.5 are outside 1%.%.4")
  t.raises(function() packed:batch(0) end, "outside")
  t.match(tostring(packed), "4 rows of 10 tokens, 6 samples")
  local empty = herd.data.pack({}, { seq = 8, pad = 0 })
  t.eq(#empty, 0)
  t.eq(empty:stats().padding, 0)
end)

t.test("over-long samples: truncated and counted, skipped without answers, or an error",
  function()
    local samples = { sample(range(1, 8), { 2, 3, 8 }), sample(range(1, 8), { 7 }),
                      sample(range(1, 3), { 3 }) }
    local packed = herd.data.pack(samples, { seq = 5, pad = 0, overlong = "truncate" })
    local s = packed:stats()
    t.eq(s.truncated, 2)
    t.eq(s.skipped, 1)
    t.eq(s.samples, 2)
    t.eq(s.rows, 2)
    t.eq(s.tokens, 8)
    t.eq(s.trained, 3)
    t.eq(s.padding, 2)
    t.eq(packed:placement(2), nil, "skipped")
    local b = packed:batch()
    t.eq(table.concat(row_of(b, "tokens", 1), " "), "1 2 3 4 5")
    t.eq(table.concat(row_of(b, "targets", 1), " "), "2 3 4 5 -1")
    t.eq(table.concat(row_of(b, "weights", 1), " "), "1.0 1.0 0.0 0.0 0.0")
    t.raises(function() herd.data.pack(samples, { seq = 5, pad = 0, overlong = "error" }) end,
      "pack: sample 1: 8 tokens exceed seq = 5 %(overlong = error%)")
    local fits = herd.data.pack(samples, { seq = 8, pad = 0, overlong = "error" })
    t.eq(fits:stats().truncated, 0)
  end)

t.test("errors name the sample", function()
  local good = sample({ 1, 2, 3 }, { 3 })
  local pack = herd.data.pack
  t.raises(function() pack({ good, sample({ 1, 2, 3 }, {}) }, { seq = 8, pad = 0 }) end,
    "pack: sample 2: no answer token to train on")
  t.raises(function() pack({ good, good, sample({ 1, 2 }, { 1 }) }, { seq = 8, pad = 0 }) end,
    "pack: sample 3: no answer token to train on", "a first token is never predicted")
  -- empty before truncation is an error, not a skip
  t.raises(function() pack({ sample(range(1, 9), {}) }, { seq = 4, pad = 0 }) end,
    "sample 1: no answer token")
  t.raises(function() pack({ good, good, { ids = { 1, 2, 3, 4 }, mask = { 0, 0, 1 } } },
    { seq = 8, pad = 0 }) end, "pack: sample 3: ids has 4 entries but mask has 3")
  t.raises(function() pack({ { ids = { 1, 2 }, mask = { 0, 0.5 } } }, { seq = 8, pad = 0 }) end,
    "pack: sample 1: mask%[2%] = 0.5; it must be 0 or 1")
  t.raises(function() pack({ good, { ids = { 1, -3 }, mask = { 0, 1 } } }, { seq = 8, pad = 0 }) end,
    "pack: sample 2: ids%[2%] = %-3 is not a token id")
  t.raises(function() pack({ good, { ids = { 1, 2 } } }, { seq = 8, pad = 0 }) end,
    "pack: sample 2: field 'mask' must be a list, not nil")
  t.raises(function() pack({ good, "text" }, { seq = 8, pad = 0 }) end,
    "pack: sample 2 is a string")
  t.raises(function() pack({ good }, { seq = 0, pad = 0 }) end,
    "pack: seq = 0; it must be at least 2")
  t.raises(function() pack({ good }, { seq = -4, pad = 0 }) end, "pack: seq = %-4")
  t.raises(function() pack({ good }, { seq = 8 }) end, "pack: pad must be a token id")
  t.raises(function() pack({ good }, { seq = 8, pad = -1 }) end, "pack: pad = %-1")
  t.raises(function() pack({ good }, { seq = 8, pad = 0, overlong = "drop" }) end,
    "pack: overlong is drop")
  t.raises(function() pack({ good }, { seq = 8, pad = 0, sequence = 3 }) end,
    "pack: unknown option 'sequence'")
  t.raises(function() pack(nil, { seq = 8, pad = 0 }) end, "pack: samples must be a list")
end)

t.done()
