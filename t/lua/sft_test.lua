-- Supervised fine-tuning (lua/herd/sft.lua): samples from chats, errors that name the dialog,
-- gradient accumulation equal to one big batch, and a loss that falls.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local herd = require "herd"
local world = require "herd.world"

local function demos(n, seed)
  local out = {}
  for i, dialog in ipairs(world.prompts{ n = n, seed = seed, family = "helpful", multi_turn = 0.3 }) do
    local messages = {}
    for k, m in ipairs(dialog) do messages[k] = m end
    messages[#messages + 1] = { role = "assistant", content = world.reference_answer(dialog) }
    if i % 5 == 0 then table.insert(messages, 1, { role = "system", content = "Be brief." }) end
    out[i] = messages
  end
  return out
end

local tok = herd.tokenizer.train{ corpus = (function()
  local texts = {}
  for i, d in ipairs(demos(300, 1)) do
    for _, m in ipairs(d) do texts[#texts + 1] = m.content end
  end
  return texts
end)(), vocab_size = 400 }

local config = { dim = 32, n_layers = 2, n_heads = 4, n_kv_heads = 2, hidden_dim = 64,
                 vocab_size = tok:vocab_size(), max_seq_len = 128 }

t.test("samples carry the chat's ids and an answer-only mask; empty answers are errors", function()
  local d = demos(3, 2)
  local samples = herd.sft.samples(tok, d)
  for i, s in ipairs(samples) do
    local chat = tok:chat(d[i])
    t.eq(#s.ids, #chat.ids)
    for k = 1, #s.ids do
      t.eq(s.ids[k], chat.ids[k])
      t.eq(s.mask[k], chat.roles[k] == "assistant" and 1 or 0, "token " .. k)
    end
  end
  t.raises(function() herd.sft.samples(tok, { d[1], { { role = "user", content = "hi" } } }) end,
    "sft: dialog 2 has no assistant answer to train on")
  t.raises(function() herd.sft.samples(tok, { {} }) end, "sft: dialog 1 is empty")
  local m <close> = herd.model.new(config, { batch = 4, seed = 1 })
  t.raises(function() herd.sft.train(m, tok, d, { learnrate = 1 }) end, "unknown option 'learnrate'")
  t.eq(select(1, m:capacity()), 4)
  t.eq(select(2, m:capacity()), 128)
end)

t.test("gradient accumulation equals one big batch", function()
  local d = demos(40, 3)
  local a <close> = herd.model.new(config, { batch = 8, seed = 4 })
  local b <close> = herd.model.new(config, { batch = 8, seed = 4 })
  local la, lb = {}, {}
  herd.sft.train(a, tok, d, { lr = 1e-3, batch = 8, seq = 128, epochs = 1, progress = false, micro_batch = 8, on_step = function(s, m) la[s] = m.sft_loss end })
  herd.sft.train(b, tok, d, { lr = 1e-3, batch = 8, seq = 128, epochs = 1, progress = false, micro_batch = 3, on_step = function(s, m) lb[s] = m.sft_loss end })
  t.ok(#la >= 2, "several steps")
  for s = 1, #la do t.near(lb[s], la[s], 1e-5 * la[s], "step " .. s .. " loss") end
  t.near(herd.sft.loss(b, tok, d), herd.sft.loss(a, tok, d), 1e-4, "same model after training")
end)

t.test("training lowers the answer loss", function()
  local d = demos(120, 5)
  local m <close> = herd.model.new(config, { batch = 8, seed = 2 })
  local before = herd.sft.loss(m, tok, d)
  local stats = herd.sft.train(m, tok, d, { lr = 3e-3, batch = 8, epochs = 3, progress = false })
  local after = herd.sft.loss(m, tok, d)
  t.ok(after < before - 1.0, string.format("answer loss %.3f -> %.3f", before, after))
  t.eq(stats.stats.samples, 120)
  t.ok(stats.rows < 120, "samples packed several to a row: " .. stats.rows)
end)

t.done()
