-- herd.tokenizer from Lua: the Llama 2 tokenizer, training, and chat masks.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"
local herd = require "herd"

local fixtures = (os.getenv("HERD_TEST_DIR") or "t") .. "/fixtures"

t.test("the Llama 2 tokenizer encodes and decodes", function()
  local tok = herd.tokenizer.load(fixtures .. "/llama2-tokenizer/tokenizer.json")
  t.eq(tok:vocab_size(), 32000)
  t.eq(tok:bos(), 1)
  t.eq(tok:eos(), 2)
  -- ids from sentencepiece and tokenizers (t/fixtures/llama2-tokenizer/reference.json)
  t.eq(table.concat(tok:encode("Hello world"), ","), "1,15043,3186")
  t.eq(table.concat(tok:encode("Hello world", { bos = false }), ","), "15043,3186")
  local text = "  héllo\tworld 🦙\n"
  t.eq(tok:decode(tok:encode(text), { skip_special = true }), text)
  t.eq(tok:token(15043), "▁Hello")
  t.eq(tok:id("▁Hello"), 15043)
  t.eq(tok:id("no such piece"), nil)
end)

t.test("chat: roles per token and a non-empty assistant mask", function()
  local tok = herd.tokenizer.load(fixtures .. "/llama2-tokenizer/tokenizer.json")
  local chat = tok:chat{
    { role = "system", content = "Answer in French." },
    { role = "user", content = "Hello" },
    { role = "assistant", content = "Bonjour" },
    { role = "user", content = "Thanks" },
    { role = "assistant", content = "De rien" },
  }
  t.eq(#chat.ids, #chat.roles)
  t.eq(chat.ids[1], 1, "starts with <s>")
  local answers = {}
  for i, role in ipairs(chat.roles) do
    if role == "assistant" then
      answers[chat.messages[i]] = (answers[chat.messages[i]] or 0) + 1
    end
  end
  t.ok(answers[3] and answers[3] > 0 and answers[5] and answers[5] > 0)
  local last_only = herd.tokenizer.assistant_mask(chat, true)
  local picked = {}
  for i, weight in ipairs(last_only) do
    if weight == 1 then picked[#picked + 1] = chat.ids[i] end
  end
  t.eq(picked[#picked], 2, "the answer's </s> is learned")
  t.match(tok:decode(picked, { skip_special = true }), "^%s*De rien%s*$")
  t.raises(function() tok:chat{ { role = "bot", content = "x" } } end, "role bot")
end)

t.test("train, save and reload a vocabulary", function()
  local dir = util.tmpdir()
  local corpus = {}
  for i = 1, 50 do corpus[i] = "the quick brown fox " .. i .. " jumps over the lazy dog" end
  local tok = herd.tokenizer.train{ corpus = corpus, vocab_size = 320 }
  t.ok(tok:vocab_size() <= 320)
  tok:save(dir .. "/tok.json")
  local again = herd.tokenizer.load(dir .. "/tok.json")
  local ids = again:encode("the lazy fox")
  t.eq(table.concat(ids, ","), table.concat(tok:encode("the lazy fox"), ","))
  t.eq(again:decode(ids, { skip_special = true }), "the lazy fox")
  util.write(dir .. "/bad.json", '{"model": {"type": "WordPiece"}}')
  t.raises(function() herd.tokenizer.load(dir .. "/bad.json") end, "WordPiece")
  util.cleanup()
end)

t.done()
