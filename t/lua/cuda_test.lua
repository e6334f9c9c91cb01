-- The CUDA build sees the machine's GPUs (skipped where herd was built without CUDA or no GPU).
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local core = require "herd.core"

local function nvidia_smi_gpus()
  local handle = io.popen("nvidia-smi -L 2>/dev/null")
  local count = 0
  for line in handle:lines() do
    if line:match("^GPU %d+:") then count = count + 1 end
  end
  handle:close()
  return count
end

local gpus = nvidia_smi_gpus()
if not core.build.cuda then
  t.skip("CUDA device count matches nvidia-smi", "herd was built without CUDA")
elseif gpus == 0 then
  t.skip("CUDA device count matches nvidia-smi", "no GPU on this machine")
else
  t.test("CUDA device count matches nvidia-smi", function()
    t.eq(core.cuda_device_count(), gpus)
  end)
end
t.done()
