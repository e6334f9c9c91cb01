-- herd: Llama 2 alignment methods as short Lua scripts over a C runtime.
--   local herd = require "herd"
--   local run <close> = herd.run.start{ name = "demo", config = { lr = 1e-3 } }
local core = require "herd.core"

local herd = {
  version = core.build.version,
  build = core.build,
  core = core,
  run = require "herd.run",
  json = { encode = core.json_encode, decode = core.json_decode, null = core.null },
}

-- Modules loaded on first use, so `require "herd"` stays cheap.
local lazy = { pretty = "herd.pretty", plot = "herd.plot", cli = "herd.cli", tensor = "herd.tensor",
               model = "herd.model", tokenizer = "herd.tokenizer", data = "herd.data",
               world = "herd.world", experiment = "herd.experiment", progress = "herd.progress",
               mix = "herd.mix", rm = "herd.rm", rng = "herd.rng", sft = "herd.sft",
               svg = "herd.svg" }
setmetatable(herd, {
  __index = function(t, key)
    local module = lazy[key]
    if not module then return nil end
    local value = require(module)
    rawset(t, key, value)
    return value
  end,
})

local recipe_fields = { run = true, script = true, script_sha256 = true, args = true, config = true }

-- Reruns a recorded run: `herd runs export ID > recipe.lua; herd recipe.lua`.
-- The recipe's config replaces the script's defaults in herd.run.start; the new run records
-- the original script and the tag "rerun-of:ID".
function herd.rerun(recipe)
  for key in pairs(recipe) do
    if not recipe_fields[key] then error("herd.rerun: unknown field '" .. tostring(key) .. "'", 2) end
  end
  if type(recipe.script) ~= "string" then error("herd.rerun: script must be a path", 2) end
  local script = recipe.script
  local file = io.open(script, "rb")
  if not file then error("herd.rerun: cannot open script '" .. script .. "'", 2) end
  file:close()
  local sha256 = core.sha256_file(script)
  if recipe.script_sha256 and recipe.script_sha256 ~= sha256 then
    io.stderr:write(string.format("herd: warning: %s changed since run %s was recorded\n",
      script, tostring(recipe.run)))
  end
  local args = recipe.args or {}
  herd.run._rerun(recipe.run, script, sha256, args, recipe.config or {})
  local chunk, err = loadfile(script)
  if not chunk then error(err, 0) end
  _G.arg = { [0] = script, table.unpack(args) }
  return chunk(table.unpack(args))
end

return herd
