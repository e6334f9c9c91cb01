// Calling Lua safely from the host: library paths, tracebacks, Ctrl-C.
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "host.h"

// ---------------------------------------------------------------- where lua/herd lives

static int same_directory(const char *a, const char *b) {
  char real_a[PATH_MAX], real_b[PATH_MAX];
  return realpath(a, real_a) && realpath(b, real_b) && strcmp(real_a, real_b) == 0;
}

// An in-tree build (no install) uses the source tree's lua/; an installed herd uses
// $(pkgdatadir)/lua; HERD_LUA_DIR overrides both (for relocated installs).
const char *herd_lua_dir(void) {
  static char dir[PATH_MAX];
  if (dir[0]) return dir;
  const char *override = getenv("HERD_LUA_DIR");
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (override && *override) {
    snprintf(dir, sizeof dir, "%s", override);
  } else if (len > 0) {
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    int in_tree = same_directory(exe, HERD_BUILDDIR) || same_directory(exe, HERD_BUILDDIR "/.libs");
    snprintf(dir, sizeof dir, "%s", in_tree ? HERD_SRCDIR "/lua" : HERD_LUADIR);
  } else {
    snprintf(dir, sizeof dir, "%s", HERD_LUADIR);
  }
  return dir;
}

void herd_open_libraries(lua_State *L) {
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  const char *dir = herd_lua_dir();
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_herd_core);
  lua_setfield(L, -2, "herd.core");
  lua_pushcfunction(L, luaopen_herd_tensor_core);
  lua_setfield(L, -2, "herd.tensor_core");
  lua_pushcfunction(L, luaopen_herd_model_core);
  lua_setfield(L, -2, "herd.model_core");
  lua_pushcfunction(L, luaopen_herd_tokenizer_core);
  lua_setfield(L, -2, "herd.tokenizer_core");
  lua_pushcfunction(L, luaopen_herd_data_core);
  lua_setfield(L, -2, "herd.data_core");
  lua_pop(L, 2);
}

// ---------------------------------------------------------------- Ctrl-C

static lua_State *running_state;
static volatile sig_atomic_t interrupt_seen;

// Runs at the next Lua instruction after a signal: raising here is safe, inside the handler not.
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

// As in lua.c: a second Ctrl-C while the first is pending gets the default action (exit).
static void on_interrupt(int signal_number) {
  signal(signal_number, SIG_DFL);
  interrupt_seen = 1;
  if (running_state)
    lua_sethook(running_state, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

int herd_interrupted(void) {
  return interrupt_seen;
}

static int message_handler(lua_State *L) {
  const char *message = lua_tostring(L, 1);
  if (message == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    message = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, message, 1);
  return 1;
}

int herd_docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, message_handler);
  lua_insert(L, base);
  interrupt_seen = 0;
  running_state = L;
  struct sigaction action = {0}, old_int, old_term;
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &old_int);
  sigaction(SIGTERM, &action, &old_term);
  int status = lua_pcall(L, narg, nres, base);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  running_state = NULL;
  lua_remove(L, base);
  return status;
}

int herd_lua_error(lua_State *L) {
  lua_pushstring(L, herd_errmsg());
  return lua_error(L);
}

void herd_lua_newclass(lua_State *L, const char *type_name, lua_CFunction gc,
                       const luaL_Reg *methods, const luaL_Reg *functions) {
  luaL_newmetatable(L, type_name);
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, gc);  // `local x <close>` frees at once; gc is idempotent
  lua_setfield(L, -2, "__close");
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_newtable(L);
  luaL_setfuncs(L, functions, 0);
  lua_rotate(L, -2, 1);
  lua_setfield(L, -2, "metatable");
}

int herd_report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *message = lua_tostring(L, -1);
    fprintf(stderr, "herd: %s\n", message ? message : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
  }
  return status;
}
