// Tests of the REPL (bindings/repl.c, lua/herd/repl.lua): the herd binary ($HERD_BIN) runs on a
// pseudo-terminal, as a person would use it, with HOME in a fresh directory; and once with its
// standard input a file, as `herd -i script.lua < input` is used in scripts.
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum { TIMEOUT_MS = 5000, OUTPUT_SIZE = 1 << 16 };

static char home[256];  // empty when the tests are skipped

// A skipped test does not reach the suite's .fini: no directory is made for one.
static void make_home(void) {
  const char *bin = getenv("HERD_BIN");
  if (!bin || !*bin) return;
  snprintf(home, sizeof home, "%s/herd-repl-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  cr_assert_not_null(mkdtemp(home));
}

static void remove_home(void) {
  if (!home[0]) return;
  char command[300];
  snprintf(command, sizeof command, "rm -rf '%s'", home);
  cr_assert_eq(system(command), 0);
}

TestSuite(repl, .init = make_home, .fini = remove_home, .timeout = 60);

// ---------------------------------------------------------------- a herd on a terminal

typedef struct session {
  pid_t pid;
  int master;             // our side of the terminal
  char out[OUTPUT_SIZE];  // output not yet matched by expect(), '\r' removed
  size_t len;
  char seen[OUTPUT_SIZE];       // what the last successful expect() consumed
  char why[OUTPUT_SIZE + 512];  // expect()'s failure message
} session;

static session herd;  // each test runs in its own process (Criterion forks)

static const char *herd_bin(void) {
  const char *bin = getenv("HERD_BIN");
  if (!bin || !*bin) cr_skip_test("HERD_BIN is not set (run through `make check`)");
  return bin;
}

// Starts `herd --no-record` on a new terminal with HOME=home_dir.
static void start(const char *home_dir) {
  const char *bin = herd_bin();
  struct winsize size = {.ws_row = 24, .ws_col = 100};
  herd = (session){0};
  herd.pid = forkpty(&herd.master, NULL, NULL, &size);
  cr_assert_neq(herd.pid, -1, "forkpty: %s", strerror(errno));
  if (herd.pid == 0) {
    setenv("HOME", home_dir, 1);
    setenv("TERM", "dumb", 1);                     // no escape sequences in what the tests read
    setenv("HERD_DB", "/nonexistent/runs.db", 1);  // --no-record: never opened
    unsetenv("LUA_INIT");
    unsetenv("LUA_INIT_5_4");
    if (chdir(home) != 0) _exit(126);
    execl(bin, "herd", "--no-record", (char *)NULL);
    _exit(127);
  }
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

// Reads what herd printed into herd.out; 0 at end of output (herd exited) or timeout.
static int read_some(int timeout_ms) {
  struct pollfd p = {.fd = herd.master, .events = POLLIN};
  if (poll(&p, 1, timeout_ms) <= 0) return 0;
  char buffer[4096];
  ssize_t n = read(herd.master, buffer, sizeof buffer);
  if (n <= 0) return 0;  // EIO once the terminal's last user is gone
  for (ssize_t i = 0; i < n; i++) {
    if (buffer[i] == '\r' || buffer[i] == '\0') continue;
    if (herd.len + 1 >= sizeof herd.out) {  // keep the newest half
      memmove(herd.out, herd.out + sizeof herd.out / 2, herd.len - sizeof herd.out / 2);
      herd.len -= sizeof herd.out / 2;
    }
    herd.out[herd.len++] = buffer[i];
  }
  herd.out[herd.len] = '\0';
  return 1;
}

// Control characters as ^X, so a failure message shows what the terminal got.
static void printable(char *to, size_t size, const char *text) {
  size_t n = 0;
  for (; *text && n + 3 < size; text++) {
    unsigned char c = (unsigned char)*text;
    if (c < 32 && c != '\n')
      to[n++] = '^', to[n++] = (char)(c + '@');
    else
      to[n++] = (char)c;
  }
  to[n] = '\0';
}

// Waits until herd prints `want`, and consumes the output up to its end (so the next
// expect() looks only at what came after). Fills herd.why and returns 0 after the timeout.
static int expect(const char *want) {
  double deadline = now_ms() + TIMEOUT_MS;
  for (;;) {
    char *hit = strstr(herd.out, want);
    if (hit) {
      size_t end = (size_t)(hit - herd.out) + strlen(want);
      memcpy(herd.seen, herd.out, end);
      herd.seen[end] = '\0';
      memmove(herd.out, herd.out + end, herd.len - end + 1);
      herd.len -= end;
      return 1;
    }
    double left = deadline - now_ms();
    if (left <= 0 || !read_some((int)left)) break;
  }
  char shown_want[256], shown_out[OUTPUT_SIZE];
  printable(shown_want, sizeof shown_want, want);
  printable(shown_out, sizeof shown_out, herd.out);
  snprintf(herd.why, sizeof herd.why, "expected \"%s\" within %d ms; herd printed:\n%s\n",
           shown_want, TIMEOUT_MS, shown_out);
  return 0;
}

#define EXPECT(text) cr_assert(expect(text), "%s", herd.why)

static void type(const char *text) {
  size_t len = strlen(text);
  cr_assert_eq(write(herd.master, text, len), (ssize_t)len);
}

// Waits until the terminal is (line_mode) or is not in line mode, 0 on timeout. libedit takes
// the terminal out of line mode after it prints the prompt: keys typed in between would go
// through the terminal's line editing (Ctrl-D there is an end of file that libedit never sees).
static int wait_for_mode(int line_mode) {
  double deadline = now_ms() + TIMEOUT_MS;
  struct termios mode;
  while (tcgetattr(herd.master, &mode) == 0) {
    if (((mode.c_lflag & ICANON) != 0) == line_mode) return 1;
    if (now_ms() > deadline) return 0;
    usleep(1000);
  }
  return 0;
}

static int editing(void) {
  return wait_for_mode(0);
}

// Waits for `prompt` and for libedit to read keys.
static void at_prompt(const char *prompt) {
  EXPECT(prompt);
  cr_assert(editing(), "the terminal stayed in line mode after the prompt");
}

// Types a line at the primary prompt.
static void enter(const char *line) {
  at_prompt("> ");
  type(line);
}

// Ends the session with Ctrl-D at the next prompt (typed earlier, the terminal's line mode would
// take it) and returns herd's exit status (-1: did not exit in time).
static int finish(void) {
  if (expect("> ")) editing();
  type("\004");
  double deadline = now_ms() + TIMEOUT_MS;
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(herd.pid, &status, WNOHANG)) == 0 && now_ms() < deadline) read_some(50);
  if (done == 0) {
    kill(herd.pid, SIGKILL);
    waitpid(herd.pid, &status, 0);
    close(herd.master);
    return -1;
  }
  while (read_some(0)) continue;
  close(herd.master);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// ---------------------------------------------------------------- values

Test(repl, expressions_print_their_values) {
  start(home);
  enter("1+1\n");
  EXPECT("\n2\n");
  enter("{a=1,b={2,3}}\n");
  EXPECT("\n{ a = 1, b = { 2, 3 } }\n");
  enter("\"hi\"..\"!\", 1.5, nil, {\"s\"}\n");  // several results, tab-separated
  EXPECT("\nhi!\t1.5\tnil\t{ \"s\" }\n");
  enter("=6*7\n");  // the `=expr` shorthand
  EXPECT("\n42\n");
  enter("_+1\n");  // the last value is `_`
  EXPECT("\n43\n");
  enter("setmetatable({}, {__tostring = function() return 'custom!' end})\n");
  EXPECT("\ncustom!\n");
  enter("local c = {x = 1}; c.self = c; return c\n");
  EXPECT("\n{ self = <cycle>, x = 1 }\n");
  enter("x = 5\n");  // a statement prints nothing
  enter("x*2\n");
  EXPECT("x*2\n10\n");
  cr_assert_eq(finish(), 0);
}

Test(repl, long_tables_print_over_several_lines) {
  start(home);
  enter(
      "{ name = 'a fairly long experiment name', lr = 0.001, layers = {1, 2, 3}, "
      "tags = {'sft', 'rm'} }\n");
  EXPECT(
      "\n{\n  layers = { 1, 2, 3 },\n  lr = 0.001,\n  name = \"a fairly long experiment name\","
      "\n  tags = { \"sft\", \"rm\" }\n}\n");
  cr_assert_eq(finish(), 0);
}

Test(repl, utf8_text_goes_through_the_line_editor) {
  start(home);
  enter("\"h\xc3\xa9llo \xe2\x9c\x93\"\n");
  EXPECT("\nh\xc3\xa9llo \xe2\x9c\x93\n");
  cr_assert_eq(finish(), 0);
}

// ---------------------------------------------------------------- continuation lines

Test(repl, incomplete_statements_continue_on_the_next_line) {
  start(home);
  enter("for i=1,2 do\n");
  at_prompt(">> ");
  type("print(i*10)\n");
  at_prompt(">> ");
  type("end\n");
  EXPECT("\n10\n20\n");
  enter("{\n");  // an expression over several lines prints too
  at_prompt(">> ");
  type("'multi', 'line'\n");
  at_prompt(">> ");
  type("}\n");
  EXPECT("\n{ \"multi\", \"line\" }\n");
  cr_assert_eq(finish(), 0);
}

// ---------------------------------------------------------------- completion

Test(repl, tab_completes_globals_fields_and_methods) {
  start(home);
  enter("zebra_long_name = 42\n");
  enter("zebra_lo\t");
  type("+0\n");  // nothing is appended after a completed name
  EXPECT("zebra_long_name+0\n42\n");
  enter("string.forma\t(\"%d\", 7)\n");
  EXPECT("\n7\n");
  enter("nest = { inner = { deep_value = 99 } }\n");
  enter("nest.inn\t.deep_v\t\n");
  EXPECT("\n99\n");
  enter("obj = setmetatable({}, { __index = { method_one = function() return 'm1' end } })\n");
  enter("obj:meth\t()\n");
  EXPECT("\nm1\n");
  enter("s = 'abc'\n");  // methods of strings come from the string metatable
  enter("s:upp\t()\n");
  EXPECT("\nABC\n");
  enter("whi\t x ~= 5 do x = 5 end print(x)\n");  // keywords complete too
  EXPECT("\n5\n");
  cr_assert_eq(finish(), 0);
}

Test(repl, tab_completes_a_shared_prefix_and_lists_candidates) {
  start(home);
  enter("cand_alpha, cand_beta = 1, 2\n");
  enter("cand\t");  // both candidates: the shared "cand_" is filled in
  EXPECT("cand_");
  type("\t");  // a second TAB lists them
  EXPECT("cand_alpha");
  EXPECT("cand_beta");
  type("b\t + 40\n");
  EXPECT("\n42\n");
  cr_assert_eq(finish(), 0);
}

// ---------------------------------------------------------------- errors and Ctrl-C

Test(repl, errors_are_reported_and_the_loop_goes_on) {
  start(home);
  enter("error('boom')\n");
  EXPECT("herd: stdin:1: boom\nstack traceback:");
  enter("x = = 1\n");
  EXPECT("herd: stdin:1: unexpected symbol near '='");
  enter("6*7\n");
  EXPECT("\n42\n");
  cr_assert_eq(finish(), 0);
}

Test(repl, ctrl_c_interrupts_a_running_statement) {
  start(home);
  enter("while true do end\n");
  cr_assert(wait_for_mode(1), "libedit kept the terminal");  // the line was read: it runs
  usleep(100 * 1000);
  type("\003");
  EXPECT("interrupted!");
  enter("6*7\n");
  EXPECT("\n42\n");
  cr_assert_eq(finish(), 0);
}

Test(repl, ctrl_c_at_the_prompt_discards_the_line) {
  start(home);
  enter("12345");
  EXPECT("12345");
  type("\003");
  at_prompt("> ");
  cr_assert_null(strstr(herd.seen, "12345"), "the discarded line ran:\n%s", herd.seen);
  type("6*7\n");
  EXPECT("\n42\n");
  enter("for i = 1, 3 do\n");  // and a statement begun over several lines
  at_prompt(">> ");
  type("\003");
  enter("6*8\n");
  EXPECT("\n48\n");
  cr_assert_eq(finish(), 0);
}

// ---------------------------------------------------------------- history

static char *read_file(const char *path) {
  FILE *file = fopen(path, "rb");
  if (!file) return NULL;
  static char text[1 << 16];
  size_t n = fread(text, 1, sizeof text - 1, file);
  text[n] = '\0';
  fclose(file);
  return text;
}

Test(repl, history_is_saved_and_read_back) {
  char path[300];
  snprintf(path, sizeof path, "%s/.herd_history", home);
  start(home);
  enter("40+2\n");
  EXPECT("\n42\n");
  enter("for i = 1, 2 do\n");
  at_prompt(">> ");
  type("end\n");
  cr_assert_eq(finish(), 0);

  const char *text = read_file(path);
  cr_assert_not_null(text, "no %s after the session", path);
  cr_assert_not_null(strstr(text, "40+2"), "history file:\n%s", text);
  struct stat info;
  cr_assert_eq(stat(path, &info), 0);
  cr_assert_eq(info.st_mode & 0777, 0600, "history mode %o", info.st_mode & 0777);

  start(home);  // a new session recalls the lines: Ctrl-P twice is `40+2`
  at_prompt("> ");
  type("\020\020\n");
  EXPECT("\n42\n");
  cr_assert_eq(finish(), 0);
}

Test(repl, history_is_saved_when_os_exit_ends_the_session) {
  char path[300];
  snprintf(path, sizeof path, "%s/.herd_history", home);
  start(home);
  enter("marker_before_exit = 1\n");
  enter("os.exit(3)\n");
  int status = 0;
  for (double deadline = now_ms() + TIMEOUT_MS; waitpid(herd.pid, &status, WNOHANG) == 0;) {
    cr_assert(now_ms() < deadline, "herd did not exit");
    read_some(50);
  }
  close(herd.master);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 3);
  const char *text = read_file(path);
  cr_assert_not_null(text, "no %s after os.exit()", path);
  cr_assert_not_null(strstr(text, "marker_before_exit"), "history file:\n%s", text);
}

Test(repl, history_is_capped) {
  char path[300];
  snprintf(path, sizeof path, "%s/.herd_history", home);
  FILE *file = fopen(path, "w");
  cr_assert_not_null(file);
  fputs("_HiStOrY_V2_\n", file);
  for (int i = 0; i < 1500; i++) fprintf(file, "old_line_%d\n", i);
  fclose(file);
  start(home);
  enter("1+1\n");
  EXPECT("\n2\n");
  cr_assert_eq(finish(), 0);
  const char *text = read_file(path);
  cr_assert_not_null(text);
  int lines = 0;
  for (const char *c = text; *c; c++) lines += *c == '\n';
  cr_assert(lines <= 1001, "%d lines in the history file", lines);
  cr_assert_not_null(strstr(text, "1+1"));
  cr_assert_not_null(strstr(text, "old_line_1499"));
  cr_assert_null(strstr(text, "old_line_0\n"));
}

Test(repl, an_unwritable_home_is_not_an_error) {
  start("/nonexistent/home");
  enter("1+1\n");
  EXPECT("\n2\n");
  cr_assert_eq(finish(), 0);
  cr_assert_null(strstr(herd.out, "herd:"), "herd printed:\n%s", herd.out);
}

// ---------------------------------------------------------------- not a terminal

static int run_shell(const char *command) {
  int status = system(command);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Test(repl, reads_standard_input_when_it_is_not_a_terminal) {
  const char *bin = herd_bin();
  char script[300], input[300], out[300], err[300], command[2000];
  snprintf(script, sizeof script, "%s/script.lua", home);
  snprintf(input, sizeof input, "%s/input", home);
  snprintf(out, sizeof out, "%s/out", home);
  snprintf(err, sizeof err, "%s/err", home);
  FILE *file = fopen(script, "w");
  cr_assert_not_null(file);
  fputs("from_script = 'ran'\n", file);
  fclose(file);
  file = fopen(input, "w");
  cr_assert_not_null(file);
  fputs(
      "x = 6*7\n"
      "x\n"
      "=x+1\n"
      "from_script\n"
      "for i = 1, 2 do\n"
      "  print(i * 100)\n"
      "end\n"
      "error('boom')\n"
      "'after the error'\n"
      "{1, 'two', {three = 3}}\n"
      "_[3]\n"
      "table.concat(require('herd.repl').complete('string.fo'), ',')\n"
      "for i = 1, 2 do\n",  // incomplete at the end of input
      file);
  fclose(file);
  snprintf(command, sizeof command,
           "cd '%s' && HOME='%s' '%s' --no-record -i '%s' < '%s' > '%s' 2> '%s'", home, home, bin,
           script, input, out, err);
  cr_assert_eq(run_shell(command), 0);

  char *text = read_file(out);
  cr_assert_not_null(text);
  cr_assert_str_eq(text,
                   "42\n"
                   "43\n"
                   "ran\n"
                   "100\n"
                   "200\n"
                   "after the error\n"
                   "{ 1, \"two\", { three = 3 } }\n"
                   "{ three = 3 }\n"
                   "string.format\n");
  text = read_file(err);
  cr_assert_not_null(text);
  cr_assert_not_null(strstr(text, "herd: stdin:1: boom\n"), "stderr:\n%s", text);
  cr_assert_not_null(strstr(text, "'end' expected near <eof>"), "stderr:\n%s", text);
  cr_assert_null(strstr(text, "> "), "no prompts without a terminal; stderr:\n%s", text);
}
