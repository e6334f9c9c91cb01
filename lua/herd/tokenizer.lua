-- herd.tokenizer: Llama 2 tokenizers (tokenizer.json BPE with byte fallback), training new
-- vocabularies, and the Llama 2 chat template with a role for every token.
--
--   local tok = herd.tokenizer.load("tokenizer.json")
--   local ids = tok:encode("Hello world")             -- with <s> (bos = false to leave it out)
--   print(tok:decode(ids, { skip_special = true }))
--   local chat = tok:chat{ { role = "system", content = "Be brief." },
--                          { role = "user", content = "Hi" }, { role = "assistant", content = "Hello!" } }
--   -- chat.ids, chat.roles ("template", "system", "user", "assistant"), chat.messages (1-based)
local core = require "herd.tokenizer_core"

local M = {}
local methods = core.metatable.__index
local role_names = { [0] = "template", "system", "user", "assistant" }
local role_numbers = { system = 1, user = 2, assistant = 3 }

function M.load(path) return core.load(path) end

-- herd.tokenizer.train{ corpus = "text" | {"text", ...}, vocab_size = 4096, min_frequency = 2 }
function M.train(opts)
  local corpus = opts.corpus
  if type(corpus) == "string" then corpus = { corpus } end
  if type(corpus) ~= "table" then error("tokenizer.train: corpus must be a string or a list", 2) end
  return core.train(corpus, opts.vocab_size or error("tokenizer.train: vocab_size is required", 2),
    opts.min_frequency or 2)
end

-- tok:encode(text, { bos = true, eos = false, special = true })
function methods:encode(text, opts)
  opts = opts or {}
  local flags = 0
  if opts.bos ~= false then flags = flags | core.BOS end
  if opts.eos then flags = flags | core.EOS end
  if opts.special == false then flags = flags | core.NO_SPECIAL end
  return self:_encode(text, flags)
end

-- tok:decode(ids, { skip_special = false })
function methods:decode(ids, opts)
  return self:_decode(ids, (opts and opts.skip_special) and core.SKIP_SPECIAL or 0)
end

function methods:bos() return (self:_special()) end
function methods:eos() return select(2, self:_special()) end

-- tok:chat{ {role =, content =}, ... } -> { ids = {...}, roles = {...}, messages = {...} }
function methods:chat(messages)
  local converted = {}
  for i, message in ipairs(messages) do
    local role = role_numbers[message.role]
    if not role then
      error(string.format("chat: message %d has role %s (system, user or assistant)", i,
        tostring(message.role)), 2)
    end
    converted[i] = { role = role, content = message.content }
  end
  local ids, roles, owners = self:_chat(converted)
  for i, role in ipairs(roles) do roles[i] = role_names[role] end
  return { ids = ids, roles = roles, messages = owners }
end

-- Loss weights for SFT from a chat: 1 on the assistant's tokens (answers and their </s>), 0
-- elsewhere; only_last = true keeps the last answer (earlier turns as context).
function M.assistant_mask(chat, only_last)
  local last = 0
  if only_last then
    for i, role in ipairs(chat.roles) do
      if role == "assistant" then last = math.max(last, chat.messages[i]) end
    end
  end
  local mask = {}
  for i, role in ipairs(chat.roles) do
    mask[i] = (role == "assistant" and (not only_last or chat.messages[i] == last)) and 1 or 0
  end
  return mask
end

function core.metatable.__tostring(tok)
  return string.format("herd.Tokenizer (%d tokens)", tok:vocab_size())
end

return M
