// defines: herd_open_libraries, herd_docall, herd_report,
//          herd_interrupted, herd_repl_run, herd_lua_error, HERD_LUA_CHECK, herd_lua_pushjson,
//          herd_lua_newclass, herd_lua_totensor,
//          herd_lua_newtensor, luaopen_herd_core, luaopen_herd_tensor_core,
//          luaopen_herd_model_core, luaopen_herd_tokenizer_core, luaopen_herd_data_core,
//          herd_lua_dir
//
// The host program's shared pieces: bindings/herd.c (main, argument handling), bindings/repl.c
// (the interactive loop), bindings/lhost.c (calling Lua safely, Ctrl-C), bindings/lrunlog.c
// (the `herd.core` module: run history, JSON, sha256).
#ifndef HERD_HOST_H
#define HERD_HOST_H

#include <lauxlib.h>
#include <lua.h>

// Opens the standard libraries and makes `require "herd"` work from any directory: the Lua
// library directory (in-tree or installed) goes first on package.path and the C module
// `herd.core` is preloaded.
void herd_open_libraries(lua_State *L);
// The directory holding lua/herd/*.lua for this herd binary (in-tree source or installed).
const char *herd_lua_dir(void);

// lua_pcall with a traceback message handler and Ctrl-C turned into the error "interrupted!".
int herd_docall(lua_State *L, int narg, int nres);
// Prints the error on top of the stack as "herd: <message>" to stderr when status != LUA_OK,
// pops it, and returns status.
int herd_report(lua_State *L, int status);
// True once Ctrl-C (SIGINT) or SIGTERM interrupted the running code; cleared by the next call.
int herd_interrupted(void);

// The REPL: reads lines (libedit when stdin is a terminal), runs them, prints results.
// Returns 0 at end of input.
int herd_repl_run(lua_State *L);

// Raises the runtime's last error message (herd_errmsg) as a Lua error, without a position
// prefix: runtime messages already name their file, run, field or index.
int herd_lua_error(lua_State *L);
#define HERD_LUA_CHECK(L, call)                \
  do {                                         \
    if ((call) != 0) return herd_lua_error(L); \
  } while (0)

// Pushes a jansson value as Lua (objects/arrays as tables, null as herd.json.null);
// bindings/lrunlog.c.
struct json_t;
void herd_lua_pushjson(lua_State *L, struct json_t *value);

// Registers a userdata class (metatable `type_name` with __gc and __close = gc, __index =
// methods) and pushes a module table of `functions` whose `metatable` field is that metatable.
void herd_lua_newclass(lua_State *L, const char *type_name, lua_CFunction gc,
                       const luaL_Reg *methods, const luaL_Reg *functions);

// Tensors across bindings (bindings/ltensor.c owns the userdata).
struct herd_tensor;
// The tensor at `index`, or NULL when the value is not an open tensor.
struct herd_tensor *herd_lua_totensor(lua_State *L, int index);
// Pushes an empty tensor userdata; the caller stores the new tensor in the returned slot.
struct herd_tensor **herd_lua_newtensor(lua_State *L);

int luaopen_herd_core(lua_State *L);
int luaopen_herd_tensor_core(lua_State *L);
int luaopen_herd_model_core(lua_State *L);
int luaopen_herd_tokenizer_core(lua_State *L);
int luaopen_herd_data_core(lua_State *L);

#endif
