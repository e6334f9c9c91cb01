// The `herd` host program: runs experiment scripts (recording each as a run), the REPL,
// one-liners, and `herd runs ...` queries of the run history.
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "host.h"

enum { EXIT_USAGE = 2, EXIT_INTERRUPTED = 130 };

static const char usage_text[] =
    "usage: herd [options] [script.lua [args...]]\n"
    "       herd runs <command> [args...]     query the run history (herd runs --help)\n"
    "\n"
    "Runs a Lua 5.4 experiment script with `require \"herd\"` available, recording the run\n"
    "(script, sha256, git revision, config, metrics) in the run history. With no script,\n"
    "starts the REPL.\n"
    "\n"
    "options:\n"
    "  -e CODE        run CODE (may be repeated)\n"
    "  -i             enter the REPL after running the script or -e code\n"
    "  -              read the script from standard input\n"
    "  --db PATH      run history database (default: $HERD_DB, else ./runs.db)\n"
    "  --no-record    run the script without recording a run\n"
    "  -v, --version  print version information\n"
    "  -h, --help     print this help\n"
    "\n"
    "environment:\n"
    "  HERD_DB        run history database path\n"
    "  HERD_SEED      seed for runs that set none in their config\n"
    "  HERD_LUA_DIR   where lua/herd/*.lua live (overrides the built-in path)\n";

typedef struct options {
  const char *script;  // NULL for none, "-" for stdin
  int script_index;    // argv index of the script
  int interactive;
  int record;
  int has_code;  // some -e given
  int version;
} options;

static void print_usage_error(const char *message, const char *detail) {
  fprintf(stderr, "herd: %s%s%s\n(run 'herd --help' for usage)\n", message, detail ? " " : "",
          detail ? detail : "");
}

// Options come before the script name; everything after the script belongs to the script.
static int parse_options(int argc, char **argv, options *opts) {
  *opts = (options){.record = 1};
  int i = 1;
  for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
    const char *option = argv[i];
    if (strcmp(option, "--") == 0) {
      i++;
      break;
    } else if (strcmp(option, "-e") == 0) {
      if (++i >= argc) return print_usage_error("-e needs an argument", NULL), -1;
      opts->has_code = 1;
    } else if (strcmp(option, "-i") == 0) {
      opts->interactive = 1;
    } else if (strcmp(option, "--no-record") == 0) {
      opts->record = 0;
    } else if (strcmp(option, "--db") == 0) {
      if (++i >= argc) return print_usage_error("--db needs a path", NULL), -1;
      setenv("HERD_DB", argv[i], 1);
    } else if (strcmp(option, "-v") == 0 || strcmp(option, "--version") == 0) {
      opts->version = 1;
    } else if (strcmp(option, "-h") == 0 || strcmp(option, "--help") == 0) {
      fputs(usage_text, stdout);
      exit(0);
    } else {
      return print_usage_error("unknown option", option), -1;
    }
  }
  if (i < argc) opts->script = argv[i], opts->script_index = i;
  return 0;
}

// The global `arg` as lua.c builds it: arg[0] the script, arg[1..] its arguments, negative
// indices the interpreter and options.
static void create_arg_table(lua_State *L, int argc, char **argv, int script_index) {
  int base = script_index > 0 ? script_index : argc;
  lua_createtable(L, argc - base, base + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - base);
  }
  lua_setglobal(L, "arg");
}

static void print_version(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "herd.core");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "build");
  lua_getfield(L, -1, "sqlite");
  lua_getfield(L, -3, "cuda_device_count");
  lua_call(L, 0, 1);
  printf("herd %s (%s, SQLite %s, CUDA %s", PACKAGE_VERSION, LUA_RELEASE, lua_tostring(L, -2),
#ifdef HERD_HAVE_CUDA
         "built"
#else
         "not built"
#endif
  );
#ifdef HERD_HAVE_CUDA
  printf(", %d GPU(s) visible", (int)lua_tointeger(L, -1));
#endif
  printf(")\nLua library: %s\n", herd_lua_dir());
  lua_pop(L, 4);
}

// Calls require("herd.run")[fn](...) with `nargs` values already on the stack. Internal calls
// report one line (no traceback): their errors are about the run history, not the script.
static int call_run_module(lua_State *L, const char *fn, int nargs) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "herd.run");
  int status = lua_pcall(L, 1, 1, 0);
  if (status == LUA_OK) {
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_insert(L, -(nargs + 1));
    return lua_pcall(L, nargs, 0, 0);
  }
  lua_insert(L, -(nargs + 1));
  lua_pop(L, nargs);
  return status;
}

// Finishes whatever runs are open as the program ends: finished, failed (with the message) or
// killed (Ctrl-C). Only when herd.run was ever loaded.
static void end_runs(lua_State *L, int status, const char *message) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_getfield(L, -1, "herd.run");
  int loaded = !lua_isnil(L, -1);
  lua_pop(L, 3);
  if (!loaded) return;
  const char *outcome = status == LUA_OK ? "finished" : herd_interrupted() ? "killed" : "failed";
  lua_pushstring(L, outcome);
  lua_pushstring(L, message);
  herd_report(L, call_run_module(L, "_end", 2));
}

static int run_code(lua_State *L, const char *code) {
  int status = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
  if (status == LUA_OK) status = herd_docall(L, 0, 0);
  return herd_report(L, status);
}

static int run_e_options(lua_State *L, char **argv, int stop) {
  for (int i = 1; i < stop; i++) {
    if (strcmp(argv[i], "--db") == 0)
      i++;
    else if (strcmp(argv[i], "-e") == 0 && run_code(L, argv[++i]) != LUA_OK)
      return 1;
  }
  return 0;
}

static int push_script_args(lua_State *L) {
  lua_getglobal(L, "arg");
  int n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many script arguments");
  for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -(n + 1));
  return n;
}

// Loads (a syntax error or missing file is one line, and records nothing), starts the script's
// run, runs the script, and finishes the run with the outcome.
static int run_script(lua_State *L, const options *opts) {
  const char *path = strcmp(opts->script, "-") == 0 ? NULL : opts->script;
  if (luaL_loadfile(L, path) != LUA_OK) return herd_report(L, LUA_ERRFILE), 1;
  if (opts->record) {
    lua_pushstring(L, opts->script);
    if (herd_report(L, call_run_module(L, "_begin_script", 1)) != LUA_OK) return 1;
  }
  int nargs = push_script_args(L);
  int status = herd_docall(L, nargs, 0);
  const char *message = status == LUA_OK ? NULL : lua_tostring(L, -1);
  // With -i the runs stay open for the REPL session and end when it does.
  if (status != LUA_OK || !opts->interactive) end_runs(L, status, message);
  if (status != LUA_OK) {
    herd_report(L, status);
    return herd_interrupted() ? EXIT_INTERRUPTED : 1;
  }
  return 0;
}

static int run_runs_command(lua_State *L, int argc, char **argv, int first) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "herd.cli");
  int status = lua_pcall(L, 1, 1, 0);
  if (status == LUA_OK) {
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc - first, 0);
    for (int i = first; i < argc; i++) {
      lua_pushstring(L, argv[i]);
      lua_rawseti(L, -2, i - first + 1);
    }
    status = herd_docall(L, 1, 1);
  }
  if (status != LUA_OK) {
    fprintf(stderr, "herd runs: %s\n", lua_tostring(L, -1));
    return 1;
  }
  return (int)luaL_optinteger(L, -1, 0);
}

static int run_main(lua_State *L, int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "runs") == 0) return run_runs_command(L, argc, argv, 2);
  options opts;
  if (parse_options(argc, argv, &opts) != 0) return EXIT_USAGE;
  if (opts.script && strcmp(opts.script, "runs") == 0)  // herd --db x.db runs ls
    return run_runs_command(L, argc, argv, opts.script_index + 1);
  if (opts.version) {
    print_version(L);
    if (!opts.script && !opts.has_code && !opts.interactive) return 0;
  }
  create_arg_table(L, argc, argv, opts.script_index);
  int stop = opts.script_index > 0 ? opts.script_index : argc;
  if (run_e_options(L, argv, stop) != 0) {
    end_runs(L, LUA_ERRRUN, "error in -e code");
    return 1;
  }
  int exit_code = 0;
  if (opts.script) {
    exit_code = run_script(L, &opts);
  } else if (!opts.has_code && !opts.version && !isatty(STDIN_FILENO) && !opts.interactive) {
    opts.script = "-";  // like lua.c: `herd < file.lua` runs the file
    exit_code = run_script(L, &opts);
  }
  if (exit_code == 0 && (opts.interactive || (!opts.script && !opts.has_code && !opts.version))) {
    herd_repl_run(L);
  }
  end_runs(L, LUA_OK, NULL);  // runs left open in the REPL or by -e code end as finished
  return exit_code;
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (!L) {
    fputs("herd: cannot create a Lua state (out of memory)\n", stderr);
    return 1;
  }
  herd_open_libraries(L);
  int exit_code = run_main(L, argc, argv);
  lua_close(L);
  fflush(stdout);
  return exit_code;
}
