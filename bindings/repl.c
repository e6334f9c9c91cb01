// The interactive loop of `herd`: lua.c's REPL (a bare expression prints its value, an
// incomplete statement asks for more lines, an error is reported and the loop goes on) with
// libedit line editing, a history kept in ~/.herd_history and tab completion of globals and
// fields. The Lua side (lua/herd/repl.lua) finds completion candidates and formats results.
#include <editline/readline.h>
#include <errno.h>
#include <lauxlib.h>
#include <locale.h>
#include <lua.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>

#include "host.h"

#define PROMPT "> "
#define PROMPT_MORE ">> "
#define HISTORY_FILE "/.herd_history"
#define EOF_MARK "<eof>"  // how the parser ends the message of an incomplete chunk

enum { HISTORY_LINES = 1000 };
enum read_result { READ_OK, READ_CANCELLED, READ_END };

typedef struct repl {
  lua_State *L;
  int edit;     // libedit reads the lines: stdin and stdout are both terminals
  int prompts;  // plain reading prints prompts (on stderr): stdin alone is a terminal
  char *line;   // getline's buffer for plain reading
  size_t line_size;
  char *locale;  // LC_CTYPE before editing began, restored after
} repl;

// The registry slot holding require("herd.repl") (nil when it failed to load).
static const char module_key = 'r';

// ---------------------------------------------------------------- Ctrl-C at the prompt

static volatile sig_atomic_t prompt_interrupted;

static void on_prompt_interrupt(int signal_number) {
  (void)signal_number;
  prompt_interrupted = 1;
}

// One byte of input, or EOF; '\n' once Ctrl-C was pressed. SIGINT stays blocked except inside
// pselect, so a Ctrl-C between the flag test and the wait cannot be missed.
static int read_byte(int fd) {
  sigset_t interrupt, unblocked;
  sigemptyset(&interrupt);
  sigaddset(&interrupt, SIGINT);
  sigprocmask(SIG_BLOCK, &interrupt, &unblocked);
  int byte = EOF;
  while (!prompt_interrupted) {
    fd_set readable;
    FD_ZERO(&readable);
    FD_SET(fd, &readable);
    if (pselect(fd + 1, &readable, NULL, NULL, NULL, &unblocked) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    unsigned char c;
    ssize_t n = read(fd, &c, 1);
    if (n == 1) byte = c;
    if (n == 1 || n == 0 || errno != EINTR) break;
  }
  if (prompt_interrupted) byte = '\n';
  sigprocmask(SIG_SETMASK, &unblocked, NULL);
  return byte;
}

// libedit's key reader (rl_getc_function). libedit's own reader retries a read() that a signal
// interrupted, so Ctrl-C at the prompt would do nothing, or with libedit's signal handling on,
// end herd and lose the history. This one answers Ctrl-C with a newline that ends the line;
// edit_line() then discards it. libedit takes the result as one wide character, so a
// multibyte character (UTF-8) is decoded here.
static int read_key(FILE *in) {
  mbstate_t state;
  memset(&state, 0, sizeof state);
  for (;;) {
    int byte = read_byte(fileno(in));
    if (byte == EOF || prompt_interrupted) return byte;
    char c = (char)byte;
    wchar_t key;
    size_t used = mbrtowc(&key, &c, 1, &state);
    if (used == (size_t)-2) continue;     // more bytes to come
    if (used == (size_t)-1) return byte;  // not valid in this character set: the byte
    return used == 0 ? 0 : (int)key;
  }
}

// ---------------------------------------------------------------- completion

static lua_State *completion_state;  // libedit's callbacks carry no user data

static int call_complete(lua_State *L) {
  const char *text = lua_touserdata(L, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &module_key);
  lua_getfield(L, -1, "complete");
  lua_pushstring(L, text);
  lua_call(L, 1, 1);
  luaL_checktype(L, -1, LUA_TTABLE);
  return 1;
}

static size_t shared_prefix(const char *a, const char *b) {
  size_t n = 0;
  while (a[n] && a[n] == b[n]) n++;
  return n;
}

// readline's match list from the candidates on top of the stack: [0] the text to put in place
// of the word (the one candidate, or the prefix all candidates share), [1..n] the candidates
// when there are several, then NULL. libedit frees it. Two NULLs follow a single match because
// libedit reads matches[2] before it looks at matches[1].
static char **matches_from(lua_State *L) {
  size_t n = lua_rawlen(L, -1);
  if (n == 0) return NULL;
  char **matches = calloc(n + 3, sizeof *matches);
  if (!matches) return NULL;
  int ok = 1;
  for (size_t i = 1; i <= n && ok; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    // Only strings: converting a number could raise a memory error outside any pcall.
    const char *candidate = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    ok = (matches[i] = strdup(candidate)) != NULL;
    lua_pop(L, 1);
  }
  if (ok && n == 1) {
    matches[0] = matches[1];
    matches[1] = NULL;
    return matches;
  }
  size_t common = ok ? strlen(matches[1]) : 0;
  for (size_t i = 2; ok && i <= n; i++) {
    size_t shared = shared_prefix(matches[1], matches[i]);
    if (shared < common) common = shared;
  }
  if (ok) ok = (matches[0] = strndup(matches[1], common)) != NULL;
  if (ok) return matches;
  for (size_t i = 0; i <= n; i++) free(matches[i]);
  free(matches);
  return NULL;
}

// rl_attempted_completion_function: `text` is the word before the cursor, split at Lua's
// operators and brackets but not at '.' or ':', so "string.fo" and "obj:me" arrive whole.
static char **complete_word(const char *text, int start, int end) {
  (void)start, (void)end;
  rl_attempted_completion_over = 1;  // names only: never fall back to file names
  // Nothing is added after a completion: a Lua name is followed by '.', ':', '(' or an
  // operator as often as by a space, so the user types what comes next.
  rl_completion_append_character = '\0';
  lua_State *L = completion_state;
  if (!L) return NULL;
  int top = lua_gettop(L);
  lua_pushcfunction(L, call_complete);
  lua_pushlightuserdata(L, (void *)text);
  char **matches = NULL;
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) matches = matches_from(L);
  lua_settop(L, top);
  return matches;
}

// ---------------------------------------------------------------- line editing and history

// libedit decodes keys in the locale's character set. herd sets no locale, and in the "C"
// locale UTF-8 text typed at the prompt would come out garbled: editing uses the
// environment's LC_CTYPE, or C.UTF-8 when that is plain "C" (as Python does, PEP 538). Lua's
// lexer has its own character table, and in a UTF-8 locale the C library classifies single
// bytes as "C" does, so string.upper and %a in patterns behave the same.
static void use_character_set(repl *r) {
  const char *current = setlocale(LC_CTYPE, NULL);
  r->locale = current ? strdup(current) : NULL;
  const char *chosen = setlocale(LC_CTYPE, "");
  if (!chosen || strcmp(chosen, "C") == 0 || strcmp(chosen, "POSIX") == 0)
    setlocale(LC_CTYPE, "C.UTF-8");
}

// $HOME/.herd_history while a session edits lines; NULL without HOME. Static because
// os.exit() in the REPL leaves through exit(), and the history is saved then too (atexit).
static char *history_path;

static void save_history(void) {
  if (!history_path) return;
  // The history holds whatever was typed, passwords and tokens included: owner-only, like
  // shells do it. An unwritable HOME loses the history, not the session.
  if (write_history(history_path) == 0) chmod(history_path, S_IRUSR | S_IWUSR);
  free(history_path);
  history_path = NULL;
}

static void start_editing(repl *r) {
  use_character_set(r);
  rl_readline_name = "herd";  // for `$if herd` sections of ~/.editrc
  rl_getc_function = read_key;
  rl_catch_signals = 0;  // SIGINT is ours (read_key, herd_docall)
  rl_attempted_completion_function = complete_word;
  rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{}()[],+-*/%^~#";
  completion_state = r->L;
  rl_initialize();  // after rl_getc_function and rl_catch_signals: it reads them once
  using_history();
  stifle_history(HISTORY_LINES);
  const char *home = getenv("HOME");
  if (home && *home) {
    size_t size = strlen(home) + sizeof HISTORY_FILE;
    history_path = malloc(size);
    if (history_path) {
      snprintf(history_path, size, "%s" HISTORY_FILE, home);
      read_history(history_path);  // a missing or unreadable file just means no history yet
    }
  }
  static int registered;
  if (!registered) registered = atexit(save_history) == 0;
}

static void stop_editing(repl *r) {
  save_history();
  clear_history();
  completion_state = NULL;
  if (r->locale) setlocale(LC_CTYPE, r->locale);
  free(r->locale);
  r->locale = NULL;
}

static int is_blank(const char *text) {
  return text[strspn(text, " \t\r\n")] == '\0';
}

// One line from libedit, malloc'd, or NULL at end of input; *cancelled when Ctrl-C ended it.
static char *edit_line(const char *prompt, int *cancelled) {
  struct sigaction action = {0}, saved;
  action.sa_handler = on_prompt_interrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &saved);
  prompt_interrupted = 0;
  char *line = readline(prompt);
  sigaction(SIGINT, &saved, NULL);
  *cancelled = prompt_interrupted;
  prompt_interrupted = 0;
  return line;
}

// Pushes the next line (without its newline). Returns READ_END at end of input.
static enum read_result push_line(repl *r, const char *prompt) {
  lua_State *L = r->L;
  fflush(stdout);
  if (r->edit) {
    int cancelled = 0;
    char *line = edit_line(prompt, &cancelled);
    if (!line) {
      fputs("\n", stdout);  // Ctrl-D leaves the cursor after the prompt
      return READ_END;
    }
    if (cancelled) {
      free(line);
      return READ_CANCELLED;
    }
    lua_pushstring(L, line);
    free(line);
    return READ_OK;
  }
  if (r->prompts) {
    fputs(prompt, stderr);
    fflush(stderr);
  }
  ssize_t len = getline(&r->line, &r->line_size, stdin);
  if (len < 0) return READ_END;
  if (len > 0 && r->line[len - 1] == '\n') len--;
  lua_pushlstring(L, r->line, (size_t)len);
  return READ_OK;
}

// ---------------------------------------------------------------- reading a statement

// A syntax error at the end of the input: the statement may go on in the next line.
static int incomplete(lua_State *L, int status) {
  if (status != LUA_ERRSYNTAX) return 0;
  size_t len;
  const char *message = lua_tolstring(L, -1, &len);
  size_t mark = sizeof EOF_MARK - 1;
  return message && len >= mark && strcmp(message + len - mark, EOF_MARK) == 0;
}

// Compiles `text`, first as `return <text>` so that an expression returns its values (lua.c's
// trick), then as a statement. `=expr` is the old shorthand for `return expr`. Pushes the
// function or an error message: the statement's, unless only the expression is incomplete
// (a table constructor over several lines).
static int compile(lua_State *L, const char *text, size_t len) {
  int shorthand = text[0] == '=';
  const char *as_return = lua_pushfstring(L, "return %s", text + shorthand);
  int status = luaL_loadbuffer(L, as_return, strlen(as_return), "=stdin");
  lua_remove(L, -2);
  if (status == LUA_OK || shorthand) return status;
  int expression_incomplete = incomplete(L, status);
  int statement_status = luaL_loadbuffer(L, text, len, "=stdin");
  if (statement_status == LUA_OK || !expression_incomplete || incomplete(L, statement_status)) {
    lua_remove(L, -2);
    return statement_status;
  }
  lua_pop(L, 1);
  return status;
}

// Reads lines until they make a complete statement (or a syntax error that more lines cannot
// fix) and pushes its function, or its error message with *status set. The statement's text
// goes into the history.
static enum read_result read_statement(repl *r, int *status) {
  lua_State *L = r->L;
  enum read_result got = push_line(r, PROMPT);
  if (got != READ_OK) return got;
  for (;;) {
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    *status = compile(L, text, len);
    if (!incomplete(L, *status)) break;
    lua_pop(L, 1);  // the <eof> error: ask for another line
    got = push_line(r, PROMPT_MORE);
    if (got == READ_CANCELLED) return lua_pop(L, 1), got;
    if (got == READ_END) {
      *status = compile(L, lua_tostring(L, -1), lua_rawlen(L, -1));  // reports the <eof> error
      break;
    }
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);
  }
  const char *text = lua_tostring(L, -2);
  if (r->edit && !is_blank(text)) add_history(text);
  lua_remove(L, -2);
  return got == READ_END ? READ_END : READ_OK;
}

// ---------------------------------------------------------------- running it

// Prints the values on the stack above `base` on one line, through herd.repl.format_results
// (or plain `print` if herd.repl could not be loaded).
static int print_results(lua_State *L, int base) {
  int n = lua_gettop(L) - base;
  luaL_checkstack(L, 3, "too many results to print");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &module_key);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "format_results");
    lua_remove(L, -2);
    lua_insert(L, base + 1);
    int status = herd_docall(L, n, 1);
    if (status != LUA_OK) return status;
    size_t len;
    const char *text = luaL_tolstring(L, -1, &len);
    fwrite(text, 1, len, stdout);
    fputc('\n', stdout);
    lua_pop(L, 2);
    return LUA_OK;
  }
  lua_pop(L, 1);
  lua_getglobal(L, "print");
  lua_insert(L, base + 1);
  return herd_docall(L, n, 0);
}

// Runs the function on top of the stack; the first value of an expression becomes `_`.
static int run_statement(lua_State *L) {
  int base = lua_gettop(L) - 1;
  int status = herd_docall(L, 0, LUA_MULTRET);
  if (status == LUA_OK && lua_gettop(L) > base) {
    lua_pushvalue(L, base + 1);
    lua_setglobal(L, "_");
    status = print_results(L, base);
  }
  fflush(stdout);  // before an error on stderr, and before the next prompt
  return status;
}

// The loop, under lua_pcall so that a memory error outside the user's code ends the REPL
// with a message rather than a panic (the user's code runs under herd_docall).
static int repl_loop(lua_State *L) {
  repl *r = lua_touserdata(L, 1);
  lua_settop(L, 0);
  for (;;) {
    int status = LUA_OK;
    enum read_result got = read_statement(r, &status);
    if (got == READ_CANCELLED) continue;
    if (got == READ_END && lua_gettop(L) == 0) break;
    if (status == LUA_OK) status = run_statement(L);
    herd_report(L, status);
    lua_settop(L, 0);
    if (got == READ_END) break;
  }
  return 0;
}

// herd.repl, kept in the registry; without it the REPL still runs, printing with `print`.
static void load_module(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "herd.repl");
  int status = herd_docall(L, 1, 1);
  if (status != LUA_OK) {
    lua_pushfstring(L, "cannot load herd.repl (no completion, plain printing): %s",
                    lua_tostring(L, -1));
    lua_remove(L, -2);
    herd_report(L, status);
    lua_pushnil(L);
  }
  lua_rawsetp(L, LUA_REGISTRYINDEX, &module_key);
}

int herd_repl_run(lua_State *L) {
  repl r = {.L = L};
  r.edit = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  r.prompts = !r.edit && isatty(STDIN_FILENO);
  load_module(L);
  if (r.edit) start_editing(&r);
  lua_pushcfunction(L, repl_loop);
  lua_pushlightuserdata(L, &r);
  int status = herd_report(L, lua_pcall(L, 1, 0, 0));
  if (r.edit) stop_editing(&r);
  free(r.line);
  lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &module_key);
  fflush(stdout);
  return status == LUA_OK ? 0 : 1;
}
