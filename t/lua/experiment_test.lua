-- herd.experiment (the shared command line of experiment scripts, out/<run id>) and herd.progress,
-- in-process and through the herd binary (util.run) where exit codes and stdout matter.
package.path = (os.getenv("HERD_TEST_DIR") or "t") .. "/lua/?.lua;" .. package.path
local t = require "tap"
local util = require "util"
local herd = require "herd"
local experiment = require "herd.experiment"
local progress = require "herd.progress"

local q = util.quote
local dir = util.tmpdir()

local SPEC = {
  usage = "herd demo.lua [options]",
  description = "A demo experiment.",
  options = {
    { "steps", "int", "number of training steps" },
    { "lr", "number", "learning rate", default = 0.001 },
    { "name", "string", "a label" },
    { "verbose", "flag", "print more" },
  },
}

local function parse(...)
  local spec = {}
  for k, v in pairs(SPEC) do spec[k] = v end
  spec.arg = { [0] = "demo.lua", ... }
  return experiment.args(spec)
end

-- ---------------------------------------------------------------- herd.experiment.args

t.test("herd.experiment and herd.progress are lazy fields of herd", function()
  t.eq(herd.experiment, experiment)
  t.eq(herd.progress, progress)
end)

t.test("defaults: quick false, seed 1, options nil unless they have a default", function()
  local opts = parse()
  t.eq(opts.quick, false)
  t.eq(opts.seed, 1)
  t.eq(opts.steps, nil)
  t.eq(opts.lr, 0.001)
  t.eq(opts.name, nil)
  t.eq(opts.verbose, false)
  t.eq(#opts.positional, 0)
end)

t.test("spec.seed sets the default seed", function()
  t.eq(experiment.args{ arg = {}, seed = 7 }.seed, 7)
  t.eq(experiment.args{ arg = { "--seed", "2" }, seed = 7 }.seed, 2)
end)

t.test("--quick, --seed N, --seed=N, --steps N and the other types", function()
  t.eq(parse("--quick").quick, true)
  t.eq(parse("--seed", "5").seed, 5)
  t.eq(math.type(parse("--seed", "5").seed), "integer")
  t.eq(parse("--seed=5").seed, 5)
  t.eq(parse("--seed", "-3").seed, -3)
  local opts = parse("--steps", "3", "--lr=0.5", "--name", "two words", "--verbose", "--quick")
  t.eq(opts.steps, 3)
  t.eq(opts.lr, 0.5)
  t.eq(opts.name, "two words")
  t.eq(opts.verbose, true)
  t.eq(opts.quick, true)
  t.eq(parse("--name=a=b").name, "a=b")
end)

t.test("--eval-every is opts.eval_every", function()
  local opts = experiment.args{ arg = { "--eval-every", "20" },
                                options = { { "eval-every", "int", "steps between evaluations" } } }
  t.eq(opts.eval_every, 20)
end)

t.test("an unknown option is an error naming it and listing the valid ones", function()
  local err = t.raises(function() parse("--stpes", "3") end, "unknown option '%-%-stpes'")
  local message = tostring(err)
  t.match(message, "^demo%.lua: ")
  for _, valid in ipairs{ "--quick", "--seed N", "--steps N", "--lr X", "--name TEXT", "--verbose",
                          "--help" } do
    t.ok(message:find(valid, 1, true), valid .. " listed in " .. message)
  end
end)

t.test("a missing value, a bad integer or number, a value for a flag are errors", function()
  t.raises(function() parse("--steps") end, "%-%-steps needs a value")
  t.raises(function() parse("--steps", "--quick") end, "%-%-steps needs a value")
  t.raises(function() parse("--steps", "2.5") end, "%-%-steps expects an integer, got '2%.5'")
  t.raises(function() parse("--seed", "x") end, "%-%-seed expects an integer, got 'x'")
  t.raises(function() parse("--seed=") end, "%-%-seed expects an integer")
  t.raises(function() parse("--lr", "fast") end, "%-%-lr expects a number, got 'fast'")
  t.raises(function() parse("--quick=yes") end, "%-%-quick takes no value")
end)

t.test("an option with choices accepts only those, and says which they are", function()
  local spec = function(value)
    return { arg = { "--head", value },
             options = { { "head", "string", "initial head", choices = { "zero", "random" } } } }
  end
  t.eq(experiment.args(spec("random")).head, "random")
  t.eq(experiment.args(spec("zero")).head, "zero")
  t.raises(function() experiment.args(spec("Zero")) end,
    "%-%-head expects one of zero, random, got 'Zero'")
end)

t.test("positional arguments only where the spec names them", function()
  t.raises(function() parse("file.txt") end, "unexpected argument 'file%.txt'")
  local opts = experiment.args{ arg = { "a.txt", "--quick", "b.txt", "--", "--c" },
                                positional = "corpus files" }
  t.eq(opts.quick, true)
  t.eq(table.concat(opts.positional, "|"), "a.txt|b.txt|--c")
end)

t.test("a mistake in the spec is the script's error", function()
  t.raises(function() experiment.args{ arg = {}, options = { { "seed", "int", "again" } } } end,
    "option 'seed' is defined twice")
  t.raises(function() experiment.args{ arg = {}, options = { { "n", "integer", "count" } } } end,
    "option 'n' has type integer")
end)

local DEMO = [[
local herd = require "herd"
local opts = herd.experiment.args{
  usage = "herd demo.lua [options]",
  description = "A demo experiment.",
  options = { { "steps", "int", "number of training steps" } },
  positional = "input files",
}
print(string.format("quick=%s seed=%d steps=%s files=%s", opts.quick, opts.seed,
  tostring(opts.steps), table.concat(opts.positional, ",")))
]]
util.write(dir .. "/demo.lua", DEMO)

t.test("--help and -h print every option with its help, then exit 0", function()
  for _, flag in ipairs{ "--help", "-h" } do
    local code, stdout, stderr = util.run(dir, "--no-record demo.lua --steps 3 " .. flag)
    t.eq(code, 0, stderr)
    t.eq(stderr, "")
    t.match(stdout, "^usage: herd demo%.lua %[options%]\n")
    t.match(stdout, "A demo experiment%.")
    t.match(stdout, "\n  %-%-quick +a quick version")
    t.match(stdout, "\n  %-%-seed N +random seed %(default 1%)\n")
    t.match(stdout, "\n  %-%-steps N +number of training steps\n")
    t.match(stdout, "\n  %-h, %-%-help +print this help and exit\n")
    t.match(stdout, "input files")
    t.no_match(stdout, "quick=")
  end
end)

t.test("through the host: parsed values, and a usage error as one line, exit != 0", function()
  local code, stdout, stderr = util.run(dir, "--no-record demo.lua --quick --seed=9 a b")
  t.eq(code, 0, stderr)
  t.eq(stdout, "quick=true seed=9 steps=nil files=a,b\n")
  code, stdout, stderr = util.run(dir, "--no-record demo.lua --bogus")
  t.ok(code ~= 0, "exit code")
  t.eq(stdout, "")
  t.eq(stderr, "herd: demo.lua: unknown option '--bogus' (options: --quick, --seed N, --steps N,"
    .. " --help)\n")
end)

-- ---------------------------------------------------------------- herd.experiment.outdir

t.test("outdir creates out/<run id> and names the path when it cannot", function()
  local work = dir .. "/outdir"
  os.execute("mkdir -p " .. q(work))
  util.write(work .. "/make.lua", [[
local herd = require "herd"
local run = herd.run.start{ name = "x" }
local path = herd.experiment.outdir(run)
print(path, run.id, herd.experiment.outdir(run.id))
]])
  local code, stdout, stderr = util.run(work, "make.lua", { HERD_DB = work .. "/runs.db" })
  t.eq(code, 0, stderr)
  t.eq(stdout, "out/1\t1\tout/1\n")
  t.ok(os.execute("test -d " .. q(work .. "/out/1")), "out/1 is a directory")
  -- "out" as a plain file: the directory cannot be made.
  local blocked = dir .. "/blocked"
  os.execute("mkdir -p " .. q(blocked))
  util.write(blocked .. "/out", "not a directory")
  code, stdout, stderr = util.run(blocked, "--no-record -e " .. q("require('herd').experiment.outdir(4)"))
  t.ok(code ~= 0, "exit code")
  t.match(stderr, "cannot create directory 'out/4'")
  t.raises(function() experiment.outdir("x") end, "expected a run")
end)

-- ---------------------------------------------------------------- herd.progress

-- An output stream that keeps what is written.
local function capture()
  local buffer = {}
  return {
    write = function(self, ...)
      for _, s in ipairs{ ... } do buffer[#buffer + 1] = s end
      return self
    end,
    flush = function(self) return self end,
    text = function() return table.concat(buffer) end,
  }
end

t.test("values: three decimals, three digits when very small or large, integers as they are", function()
  t.eq(progress.format_value(1.23), "1.230")
  t.eq(progress.format_value(0.0), "0.000")
  t.eq(progress.format_value(3e-4), "0.0003")
  t.eq(progress.format_value(123456.0), "1.23e+05")
  t.eq(progress.format_value(-2.5), "-2.500")
  t.eq(progress.format_value(42), "42")
  t.eq(progress.format_value(0 / 0), "nan")
  t.eq(progress.clock(0), "0:00")
  t.eq(progress.clock(90), "1:30")
  t.eq(progress.clock(3725), "1:02:05")
end)

t.test("plain mode prints asked-for lines and the last step only", function()
  local out = capture()
  local bar = progress.new{ total = 5, unit = "tokens", tty = false, out = out, order = { "loss" } }
  for step = 1, 5 do
    bar:update(step, { loss = 1 / step, val = step == 2 and 0.7 or nil }, step * 100,
      { print = step == 2 })
  end
  bar:finish()
  local lines = util.lines(out.text())
  t.eq(#lines, 2, out.text())
  t.match(lines[1], "^%[#########%.+%] step 2/5  loss 0%.500  val 0%.700  %d+ tokens/s  0:00 elapsed"
    .. "  ETA 0:00$")
  t.match(lines[2], "^%[########################%] step 5/5  loss 0%.200  ")
  t.no_match(out.text(), "\r")
end)

t.test("plain mode prints every plain_every seconds, and finish prints an unprinted last line", function()
  local out = capture()
  local bar = progress.new{ total = 10, tty = false, out = out, plain_every = 0 }
  bar:update(1, { loss = 2.0 })
  bar:update(2, { loss = 1.5 })
  t.eq(#util.lines(out.text()), 2, "plain_every = 0 prints every update")
  out = capture()
  bar = progress.new{ total = 10, tty = false, out = out }
  bar:update(3, { loss = 1.0 })
  t.eq(out.text(), "", "nothing within plain_every")
  bar:finish()
  t.match(out.text(), "^%[[#.]+%] step 3/10  loss 1%.000  0:00 elapsed  ETA 0:00\n$")
  bar:finish()
  t.eq(#util.lines(out.text()), 1, "finish prints once")
end)

t.test("terminal mode redraws one line and ends it at the last step", function()
  local out = capture()
  local bar = progress.new{ total = 3, tty = true, out = out }
  for step = 1, 3 do bar:update(step, { loss = 0.5 }) end
  bar:finish()
  local text = out.text()
  local redraws = select(2, text:gsub("\r", ""))
  t.eq(redraws, 3)
  t.eq(select(2, text:gsub("\27%[K", "")), 3)
  t.match(text, "step 3/3  loss 0%.500  0:00 elapsed  ETA 0:00\27%[K\n$")
  t.eq(select(2, text:gsub("\n", "")), 1, "one newline")
end)

t.test("bad arguments are errors", function()
  t.raises(function() progress.new{} end, "total must be a positive integer")
  t.raises(function() progress.new{ total = 2, tty = false }:update(1.5, {}) end,
    "step must be an integer")
end)

t.test("through the host with stdout not a terminal: plain lines with elapsed and ETA", function()
  util.write(dir .. "/bar.lua", [[
local herd = require "herd"
local bar = herd.progress.new{ total = 4, unit = "tokens" }
for step = 1, 4 do bar:update(step, { loss = 4 - step + 0.5 }, step * 64, { print = step == 2 }) end
bar:finish()
]])
  local code, stdout, stderr = util.run(dir, "--no-record bar.lua")
  t.eq(code, 0, stderr)
  local lines = util.lines(stdout)
  t.eq(#lines, 2, stdout)
  t.match(lines[1], "step 2/4  loss 2%.500  %d+ tokens/s  %d:%d%d elapsed  ETA %d:%d%d$")
  t.match(lines[2], "^%[#+%] step 4/4  loss 0%.500  ")
  t.no_match(stdout, "[\r\27]")
end)

util.cleanup()
t.done()
