-- A first experiment on the run history: fit y = a*x + b to noisy points by mini-batch SGD,
-- logging the loss curve, the parameters and the fitted model as an artifact.
-- (The Llama 2 experiments replace this one as their issues land; quickstart.lua will be the
-- main job.)
--
--   herd experiments/linear_fit.lua [--quick] [--seed N] [--steps N]
--                                              -- then: herd runs ls / herd runs show ID
local herd = require "herd"

local opts = herd.experiment.args{
  usage = "herd experiments/linear_fit.lua [options]",
  description = "Fits y = a*x + b to noisy points by mini-batch SGD; the fitted model goes to\n"
    .. "out/<run id>/model.json.",
  seed = 7,
  options = { { "steps", "int", "number of SGD steps (default 400, 100 with --quick)" } },
}

local run <close> = herd.run.start{
  name = "linear-fit",
  config = {
    lr = 0.05, steps = opts.steps or (opts.quick and 100 or 400), batch = 16,
    points = opts.quick and 128 or 512, noise = 0.1, a = 3.0, b = -2.0,
    quick = opts.quick, seed = opts.seed,
  },
  tags = { "demo" },
}
local cfg = run.config  -- the effective config (a recipe from `herd runs export` may override)
-- herd.run.start seeded math.random with the run's seed already; seeding again from the config
-- keeps the data and the fit a function of the recorded config alone.
math.randomseed(cfg.seed)

-- data: x uniform in [-1, 1], y = a x + b + gaussian noise (Box-Muller)
local xs, ys = {}, {}
for i = 1, cfg.points do
  local x = 2 * math.random() - 1
  local noise = math.sqrt(-2 * math.log(1 - math.random())) * math.cos(2 * math.pi * math.random())
  xs[i], ys[i] = x, cfg.a * x + cfg.b + cfg.noise * noise
end

local a, b = 0.0, 0.0
for step = 1, cfg.steps do
  local grad_a, grad_b, loss = 0.0, 0.0, 0.0
  for _ = 1, cfg.batch do
    local i = math.random(cfg.points)
    local err = a * xs[i] + b - ys[i]
    loss = loss + err * err / cfg.batch
    grad_a = grad_a + 2 * err * xs[i] / cfg.batch
    grad_b = grad_b + 2 * err / cfg.batch
  end
  a, b = a - cfg.lr * grad_a, b - cfg.lr * grad_b
  if loss ~= loss then error(string.format("loss is NaN at step %d", step)) end
  run:log(step, { loss = loss, a = a, b = b })
  if step % 100 == 0 then
    io.write(string.format("step %4d  loss %.5f  a %.4f  b %.4f\n", step, loss, a, b))
  end
end

local model_path = herd.experiment.outdir(run) .. "/model.json"
local file = assert(io.open(model_path, "w"))
file:write(herd.json.encode{ a = a, b = b }, "\n")
file:close()
run:artifact("model", model_path, "json")
run:param("error_a", math.abs(a - cfg.a))
run:param("error_b", math.abs(b - cfg.b))
print(string.format("run %d: a = %.4f (true %.1f), b = %.4f (true %.1f); see `herd runs show %d`",
  run.id, a, cfg.a, b, cfg.b, run.id))
