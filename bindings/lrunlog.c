// The `herd.core` module: run history handles, JSON, sha256 and build facts for lua/herd/*.lua.
//
// Userdata follow liolib's pattern: allocated empty with their metatable first, then the C
// resource is opened into them, so an error at any point leaks nothing; __gc and __close are one
// idempotent function.
#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "host.h"
#include "runlog.h"
#include "sha256.h"
#ifdef HERD_HAVE_CUDA
#include "../kernels/device.h"
#endif

#define RUNLOG_TYPE "herd.Runlog"
#define RUN_TYPE "herd.RunHandle"

typedef struct runlog_box {
  herd_runlog *db;
} runlog_box;

typedef struct run_box {
  herd_run *run;
} run_box;

// ---------------------------------------------------------------- JSON <-> Lua

// Lua values are written as JSON text directly (not through a jansson tree) so that numbers
// get their shortest exact form (0.2, not 0.20000000000000001) and floats stay floats (1.0).
// Object keys are sorted: the same table always gives the same text.

typedef struct text_buffer {
  char *data;
  size_t length, capacity;
} text_buffer;

static int text_buffer_gc(lua_State *L) {
  text_buffer *buffer = lua_touserdata(L, 1);
  free(buffer->data);
  buffer->data = NULL;
  return 0;
}

// A buffer owned by a userdata on the stack, so an error while encoding frees it.
static text_buffer *push_text_buffer(lua_State *L) {
  text_buffer *buffer = lua_newuserdatauv(L, sizeof *buffer, 0);
  *buffer = (text_buffer){0};
  if (luaL_newmetatable(L, "herd.TextBuffer")) {
    lua_pushcfunction(L, text_buffer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return buffer;
}

static void append(lua_State *L, text_buffer *buffer, const char *text, size_t len) {
  if (buffer->length + len + 1 > buffer->capacity) {
    size_t capacity = buffer->capacity ? buffer->capacity : 256;
    while (capacity < buffer->length + len + 1) capacity *= 2;
    char *grown = realloc(buffer->data, capacity);
    if (!grown) luaL_error(L, "out of memory while encoding JSON");
    buffer->data = grown, buffer->capacity = capacity;
  }
  memcpy(buffer->data + buffer->length, text, len);
  buffer->length += len;
  buffer->data[buffer->length] = '\0';
}

static void append_text(lua_State *L, text_buffer *buffer, const char *text) {
  append(L, buffer, text, strlen(text));
}

// Length of the UTF-8 sequence starting at s, 0 when it is malformed or cut short.
static size_t utf8_sequence_length(const unsigned char *s, size_t left) {
  size_t length = s[0] < 0x80             ? 1
                  : (s[0] & 0xe0) == 0xc0 ? 2
                  : (s[0] & 0xf0) == 0xe0 ? 3
                  : (s[0] & 0xf8) == 0xf0 ? 4
                                          : 0;
  if (length == 0 || length > left) return 0;
  for (size_t i = 1; i < length; i++)
    if ((s[i] & 0xc0) != 0x80) return 0;
  return length;
}

static void append_json_string(lua_State *L, text_buffer *buffer, const char *text, size_t len,
                               const char *path) {
  append(L, buffer, "\"", 1);
  const unsigned char *s = (const unsigned char *)text;
  for (size_t i = 0; i < len;) {
    size_t n = utf8_sequence_length(s + i, len - i);
    if (n == 0) luaL_error(L, "%s: string is not valid UTF-8 (byte %d)", path, (int)i + 1);
    char escape[8] = {0};
    if (s[i] == '"' || s[i] == '\\')
      escape[0] = '\\', escape[1] = (char)s[i];
    else if (s[i] == '\n')
      strcpy(escape, "\\n");
    else if (s[i] < 0x20)
      snprintf(escape, sizeof escape, "\\u%04x", s[i]);
    if (escape[0])
      append_text(L, buffer, escape);
    else
      append(L, buffer, (const char *)s + i, n);
    i += n;
  }
  append(L, buffer, "\"", 1);
}

static void append_json_number(lua_State *L, text_buffer *buffer, int index, const char *path) {
  char text[64];
  if (lua_isinteger(L, index)) {
    snprintf(text, sizeof text, LUA_INTEGER_FMT, lua_tointeger(L, index));
    append_text(L, buffer, text);
    return;
  }
  double value = lua_tonumber(L, index);
  if (!isfinite(value)) luaL_error(L, "%s: %f cannot be stored in JSON", path, value);
  for (int digits = 15; digits <= 17; digits++) {  // the shortest form that reads back exactly
    snprintf(text, sizeof text, "%.*g", digits, value);
    if (strtod(text, NULL) == value) break;
  }
  if (!strpbrk(text, ".eE")) strcat(text, ".0");  // 1.0 stays a float when read back
  append_text(L, buffer, text);
}

static void encode_value(lua_State *L, text_buffer *buffer, int index, const char *path, int depth);

static int is_sequence(lua_State *L, int index, size_t *length) {
  size_t n = 0, count = 0;
  lua_pushnil(L);
  while (lua_next(L, index)) {
    lua_pop(L, 1);
    count++;
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
      lua_pop(L, 1);
      return 0;
    }
    if ((size_t)lua_tointeger(L, -1) > n) n = (size_t)lua_tointeger(L, -1);
  }
  *length = n;
  return count > 0 && count == n;
}

static int compare_keys(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void encode_array(lua_State *L, text_buffer *buffer, int index, size_t length,
                         const char *path, int depth) {
  append(L, buffer, "[", 1);
  for (size_t i = 1; i <= length; i++) {
    if (i > 1) append(L, buffer, ",", 1);
    lua_geti(L, index, (lua_Integer)i);
    char child[256];
    snprintf(child, sizeof child, "%s[%zu]", path, i);
    encode_value(L, buffer, lua_gettop(L), child, depth + 1);
    lua_pop(L, 1);
  }
  append(L, buffer, "]", 1);
}

static void encode_object(lua_State *L, text_buffer *buffer, int index, const char *path,
                          int depth) {
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, index)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "%s: keys must be strings or 1..n (got a %s key)", path, luaL_typename(L, -1));
    count++;
  }
  // Key pointers stay valid: the table holds the strings. The array is GC-managed memory.
  const char **keys = lua_newuserdatauv(L, (count ? count : 1) * sizeof *keys, 0);
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, index)) {
    lua_pop(L, 1);
    keys[n++] = lua_tostring(L, -1);
  }
  qsort(keys, count, sizeof *keys, compare_keys);
  append(L, buffer, "{", 1);
  for (size_t i = 0; i < count; i++) {
    if (i > 0) append(L, buffer, ",", 1);
    append_json_string(L, buffer, keys[i], strlen(keys[i]), path);
    append(L, buffer, ":", 1);
    lua_getfield(L, index, keys[i]);
    char child[256];
    snprintf(child, sizeof child, "%s.%s", path, keys[i]);
    encode_value(L, buffer, lua_gettop(L), child, depth + 1);
    lua_pop(L, 1);
  }
  append(L, buffer, "}", 1);
  lua_pop(L, 1);  // keys
}

static void encode_value(lua_State *L, text_buffer *buffer, int index, const char *path,
                         int depth) {
  if (depth > 64) luaL_error(L, "%s: nested too deeply (a cycle?)", path);
  luaL_checkstack(L, 6, "JSON nested too deeply");
  switch (lua_type(L, index)) {
    case LUA_TNIL:
      append_text(L, buffer, "null");
      break;
    case LUA_TBOOLEAN:
      append_text(L, buffer, lua_toboolean(L, index) ? "true" : "false");
      break;
    case LUA_TNUMBER:
      append_json_number(L, buffer, index, path);
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *text = lua_tolstring(L, index, &len);
      append_json_string(L, buffer, text, len, path);
      break;
    }
    case LUA_TTABLE: {
      size_t length;
      if (is_sequence(L, index, &length))
        encode_array(L, buffer, index, length, path, depth);
      else
        encode_object(L, buffer, index, path, depth);
      break;
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, index) == NULL) {  // core.null
        append_text(L, buffer, "null");
        break;
      }
      /* fall through */
    default:
      luaL_error(L, "%s: cannot store a %s", path, luaL_typename(L, index));
  }
}

// A JSON value as a Lua value (objects and arrays as tables, null as herd.json.null).
void herd_lua_pushjson(lua_State *L, json_t *value) {
  luaL_checkstack(L, 4, "JSON nested too deeply");
  switch (json_typeof(value)) {
    case JSON_OBJECT: {
      lua_createtable(L, 0, (int)json_object_size(value));
      const char *key;
      json_t *child;
      json_object_foreach(value, key, child) {
        herd_lua_pushjson(L, child);
        lua_setfield(L, -2, key);
      }
      break;
    }
    case JSON_ARRAY: {
      lua_createtable(L, (int)json_array_size(value), 0);
      for (size_t i = 0; i < json_array_size(value); i++) {
        herd_lua_pushjson(L, json_array_get(value, i));
        lua_seti(L, -2, (lua_Integer)i + 1);
      }
      break;
    }
    case JSON_STRING:
      lua_pushlstring(L, json_string_value(value), json_string_length(value));
      break;
    case JSON_INTEGER:
      lua_pushinteger(L, (lua_Integer)json_integer_value(value));
      break;
    case JSON_REAL:
      lua_pushnumber(L, json_real_value(value));
      break;
    case JSON_TRUE:
      lua_pushboolean(L, 1);
      break;
    case JSON_FALSE:
      lua_pushboolean(L, 0);
      break;
    case JSON_NULL:
      lua_pushlightuserdata(L, NULL);
      break;  // core.null
  }
}

// core.json_encode(value) -> compact JSON text with sorted keys.
static int core_json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  text_buffer *buffer = push_text_buffer(L);
  encode_value(L, buffer, 1, "value", 0);
  lua_pushlstring(L, buffer->data, buffer->length);
  return 1;
}

static int core_json_decode(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  json_error_t error;
  json_t *value = json_loadb(text, len, JSON_DECODE_ANY, &error);
  if (!value)
    return luaL_error(L, "invalid JSON at line %d, column %d: %s", error.line, error.column,
                      error.text);
  herd_lua_pushjson(L, value);
  json_decref(value);
  return 1;
}

// ---------------------------------------------------------------- Runlog

static runlog_box *check_runlog(lua_State *L) {
  runlog_box *box = luaL_checkudata(L, 1, RUNLOG_TYPE);
  if (!box->db) luaL_error(L, "run history is closed");
  return box;
}

static int runlog_gc(lua_State *L) {
  runlog_box *box = luaL_checkudata(L, 1, RUNLOG_TYPE);
  herd_runlog_close(box->db);
  box->db = NULL;
  return 0;
}

static int core_runlog_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int create = lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2);
  runlog_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->db = NULL;
  luaL_setmetatable(L, RUNLOG_TYPE);
  HERD_LUA_CHECK(L, herd_runlog_open(&box->db, path, create ? HERD_RUNLOG_CREATE : 0));
  return 1;
}

static const char *opt_field_string(lua_State *L, int table, const char *field) {
  lua_getfield(L, table, field);
  const char *value = lua_isnil(L, -1) ? NULL : lua_tostring(L, -1);
  if (!value && !lua_isnil(L, -1)) luaL_error(L, "run field '%s' must be a string", field);
  lua_pop(L, 1);  // the string stays alive: it is referenced by the table
  return value;
}

static int opt_field_integer(lua_State *L, int table, const char *field, lua_Integer *out) {
  lua_getfield(L, table, field);
  int present = !lua_isnil(L, -1);
  if (present) {
    int ok;
    *out = lua_tointegerx(L, -1, &ok);
    if (!ok) luaL_error(L, "run field '%s' must be an integer", field);
  }
  lua_pop(L, 1);
  return present;
}

static int runlog_start(lua_State *L) {
  runlog_box *box = check_runlog(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  herd_run_info info = {.git_dirty = -1};
  info.name = opt_field_string(L, 2, "name");
  info.script = opt_field_string(L, 2, "script");
  info.script_sha256 = opt_field_string(L, 2, "script_sha256");
  info.args_json = opt_field_string(L, 2, "args_json");
  info.git_rev = opt_field_string(L, 2, "git_rev");
  info.config_json = opt_field_string(L, 2, "config_json");
  lua_Integer number;
  if (opt_field_integer(L, 2, "parent", &number)) info.parent_id = number;
  if (opt_field_integer(L, 2, "seed", &number)) info.has_seed = 1, info.seed = number;
  lua_getfield(L, 2, "git_dirty");
  if (!lua_isnil(L, -1)) info.git_dirty = lua_toboolean(L, -1);
  lua_pop(L, 1);
  run_box *run = lua_newuserdatauv(L, sizeof *run, 1);
  run->run = NULL;
  luaL_setmetatable(L, RUN_TYPE);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);  // a run keeps its database open
  HERD_LUA_CHECK(L, herd_run_start(box->db, &info, &run->run));
  return 1;
}

static int runlog_gc_runs(lua_State *L) {
  runlog_box *box = check_runlog(L);
  int marked;
  HERD_LUA_CHECK(L, herd_runlog_gc(box->db, &marked));
  lua_pushinteger(L, marked);
  return 1;
}

static void push_column(lua_State *L, sqlite3_stmt *stmt, int column) {
  switch (sqlite3_column_type(stmt, column)) {
    case SQLITE_INTEGER:
      lua_pushinteger(L, sqlite3_column_int64(stmt, column));
      break;
    case SQLITE_FLOAT:
      lua_pushnumber(L, sqlite3_column_double(stmt, column));
      break;
    case SQLITE_NULL:
      lua_pushnil(L);
      break;
    default:
      lua_pushlstring(L, (const char *)sqlite3_column_text(stmt, column),
                      (size_t)sqlite3_column_bytes(stmt, column));
  }
}

static void bind_argument(lua_State *L, sqlite3_stmt *stmt, int index, int arg) {
  switch (lua_type(L, arg)) {
    case LUA_TNIL:
      sqlite3_bind_null(stmt, index);
      break;
    case LUA_TBOOLEAN:
      sqlite3_bind_int(stmt, index, lua_toboolean(L, arg));
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, arg))
        sqlite3_bind_int64(stmt, index, lua_tointeger(L, arg));
      else
        sqlite3_bind_double(stmt, index, lua_tonumber(L, arg));
      break;
    default: {
      size_t len;
      const char *text = luaL_checklstring(L, arg, &len);
      sqlite3_bind_text(stmt, index, text, (int)len, SQLITE_TRANSIENT);
    }
  }
}

// stmt anchored in a userdata so that a Lua error (memory, bad argument) still finalizes it.
static int stmt_anchor_gc(lua_State *L) {
  sqlite3_stmt **slot = lua_touserdata(L, 1);
  sqlite3_finalize(*slot);
  *slot = NULL;
  return 0;
}

// db:query(sql, ...) -> rows, columns. Each row is a table keyed by column name; `columns`
// lists the names in order. Meant for reading; the statement runs in autocommit mode.
static int runlog_query(lua_State *L) {
  runlog_box *box = check_runlog(L);
  const char *sql = luaL_checkstring(L, 2);
  int n_args = lua_gettop(L) - 2;
  sqlite3 *conn = herd_runlog_sqlite(box->db);
  sqlite3_stmt **slot = lua_newuserdatauv(L, sizeof *slot, 0);
  *slot = NULL;
  if (luaL_newmetatable(L, "herd.StmtAnchor")) {
    lua_pushcfunction(L, stmt_anchor_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (sqlite3_prepare_v2(conn, sql, -1, slot, NULL) != SQLITE_OK)
    return luaL_error(L, "query failed: %s", sqlite3_errmsg(conn));
  for (int i = 1; i <= n_args; i++) bind_argument(L, *slot, i, 2 + i);
  int n_columns = sqlite3_column_count(*slot);
  lua_createtable(L, n_columns, 0);
  for (int c = 0; c < n_columns; c++) {
    lua_pushstring(L, sqlite3_column_name(*slot, c));
    lua_seti(L, -2, c + 1);
  }
  lua_newtable(L);
  int rc;
  for (lua_Integer row = 1; (rc = sqlite3_step(*slot)) == SQLITE_ROW; row++) {
    lua_createtable(L, 0, n_columns);
    for (int c = 0; c < n_columns; c++) {
      push_column(L, *slot, c);
      lua_setfield(L, -2, sqlite3_column_name(*slot, c));
    }
    lua_seti(L, -2, row);
  }
  if (rc != SQLITE_DONE) return luaL_error(L, "query failed: %s", sqlite3_errmsg(conn));
  sqlite3_finalize(*slot);  // now rather than at the next collection
  *slot = NULL;
  lua_rotate(L, -2, 1);  // columns, rows -> rows, columns
  return 2;
}

static int runlog_path(lua_State *L) {
  lua_pushstring(L, herd_runlog_path(check_runlog(L)->db));
  return 1;
}

static int runlog_schema_version(lua_State *L) {
  int version;
  HERD_LUA_CHECK(L, herd_runlog_schema_version(check_runlog(L)->db, &version));
  lua_pushinteger(L, version);
  return 1;
}

static int runlog_set_heartbeat(lua_State *L) {
  HERD_LUA_CHECK(L, herd_runlog_set_heartbeat(check_runlog(L)->db, luaL_checknumber(L, 2)));
  return 0;
}

static int runlog_tostring(lua_State *L) {
  runlog_box *box = luaL_checkudata(L, 1, RUNLOG_TYPE);
  lua_pushfstring(L, "run history (%s)", box->db ? herd_runlog_path(box->db) : "closed");
  return 1;
}

// ---------------------------------------------------------------- RunHandle

static herd_run *check_run(lua_State *L) {
  run_box *box = luaL_checkudata(L, 1, RUN_TYPE);
  if (!box->run) luaL_error(L, "run handle is closed");
  return box->run;
}

static int run_gc(lua_State *L) {
  run_box *box = luaL_checkudata(L, 1, RUN_TYPE);
  herd_run_free(box->run);  // an open run is finished as failed: the Lua side finishes first
  box->run = NULL;
  return 0;
}

static int run_id(lua_State *L) {
  lua_pushinteger(L, herd_run_id(check_run(L)));
  return 1;
}

static int run_uuid(lua_State *L) {
  lua_pushstring(L, herd_run_uuid(check_run(L)));
  return 1;
}

static int run_is_open(lua_State *L) {
  lua_pushboolean(L, herd_run_is_open(check_run(L)));
  return 1;
}

static int run_set_name(lua_State *L) {
  HERD_LUA_CHECK(L, herd_run_set_name(check_run(L), luaL_checkstring(L, 2)));
  return 0;
}

static int run_set_parent(lua_State *L) {
  HERD_LUA_CHECK(L, herd_run_set_parent(check_run(L), luaL_optinteger(L, 2, 0)));
  return 0;
}

static int run_set_seed(lua_State *L) {
  HERD_LUA_CHECK(L, herd_run_set_seed(check_run(L), luaL_checkinteger(L, 2)));
  return 0;
}

static int run_set_script(lua_State *L) {
  HERD_LUA_CHECK(L, herd_run_set_script(check_run(L), luaL_checkstring(L, 2),
                                        luaL_optstring(L, 3, NULL), luaL_optstring(L, 4, NULL)));
  return 0;
}

static int run_set_config(lua_State *L) {
  HERD_LUA_CHECK(L, herd_run_set_config(check_run(L), luaL_checkstring(L, 2)));
  return 0;
}

static int run_add_tag(lua_State *L) {
  HERD_LUA_CHECK(L, herd_run_add_tag(check_run(L), luaL_checkstring(L, 2)));
  return 0;
}

static int run_param(lua_State *L) {
  HERD_LUA_CHECK(L, herd_run_param(check_run(L), luaL_checkstring(L, 2), luaL_checkstring(L, 3)));
  return 0;
}

static double check_metric(lua_State *L, int index, const char *key) {
  if (lua_type(L, index) == LUA_TBOOLEAN) return lua_toboolean(L, index) ? 1.0 : 0.0;
  if (lua_type(L, index) != LUA_TNUMBER)
    luaL_error(L, "metric '%s' must be a number (got %s)", key, luaL_typename(L, index));
  return lua_tonumber(L, index);
}

// handle:log(step, key, value) or handle:log(step, {key = value, ...})
static int run_log(lua_State *L) {
  herd_run *run = check_run(L);
  lua_Integer step = luaL_checkinteger(L, 2);
  if (lua_type(L, 3) == LUA_TSTRING) {
    const char *key = lua_tostring(L, 3);
    HERD_LUA_CHECK(L, herd_run_log(run, key, step, check_metric(L, 4, key)));
    return 0;
  }
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      return luaL_error(L, "metric names must be strings (got a %s)", luaL_typename(L, -2));
    const char *key = lua_tostring(L, -2);
    HERD_LUA_CHECK(L, herd_run_log(run, key, step, check_metric(L, -1, key)));
    lua_pop(L, 1);
  }
  return 0;
}

static int run_flush(lua_State *L) {
  HERD_LUA_CHECK(L, herd_run_flush(check_run(L)));
  return 0;
}

static int run_pending(lua_State *L) {
  lua_pushinteger(L, herd_run_pending(check_run(L)));
  return 1;
}

static int run_artifact(lua_State *L) {
  herd_run *run = check_run(L);
  HERD_LUA_CHECK(L, herd_run_artifact(run, luaL_checkstring(L, 2), luaL_checkstring(L, 3),
                                      luaL_optstring(L, 4, "file")));
  return 0;
}

static int run_finish(lua_State *L) {
  herd_run *run = check_run(L);
  static const char *const names[] = {"finished", "failed", "killed", NULL};
  static const herd_run_status statuses[] = {HERD_RUN_FINISHED, HERD_RUN_FAILED, HERD_RUN_KILLED};
  int which = luaL_checkoption(L, 2, "finished", names);
  HERD_LUA_CHECK(L, herd_run_finish(run, statuses[which], luaL_optstring(L, 3, NULL)));
  return 0;
}

static int run_tostring(lua_State *L) {
  run_box *box = luaL_checkudata(L, 1, RUN_TYPE);
  if (box->run)
    lua_pushfstring(L, "run handle %I", (lua_Integer)herd_run_id(box->run));
  else
    lua_pushliteral(L, "run handle (closed)");
  return 1;
}

// ---------------------------------------------------------------- module

static int core_sha256(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  char hex[65];
  herd_sha256_hex(data, len, hex);
  lua_pushstring(L, hex);
  return 1;
}

static int core_sha256_file(lua_State *L) {
  char hex[65];
  uint64_t bytes;
  HERD_LUA_CHECK(L, herd_sha256_file(luaL_checkstring(L, 1), hex, &bytes));
  lua_pushstring(L, hex);
  lua_pushinteger(L, (lua_Integer)bytes);
  return 2;
}

static int core_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec * 1e-9);
  return 1;
}

static int core_sleep(lua_State *L) {
  double seconds = luaL_checknumber(L, 1);
  struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
  nanosleep(&ts, NULL);
  return 0;
}

static int core_pid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int core_hostname(lua_State *L) {
  char host[256] = "unknown";
  gethostname(host, sizeof host - 1);
  lua_pushstring(L, host);
  return 1;
}

static int core_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static int core_interrupted(lua_State *L) {
  lua_pushboolean(L, herd_interrupted());
  return 1;
}

static int core_cuda_device_count(lua_State *L) {
#ifdef HERD_HAVE_CUDA
  lua_pushinteger(L, herd_cuda_device_count());
#else
  lua_pushinteger(L, 0);
#endif
  return 1;
}

static void push_build_info(lua_State *L) {
  lua_createtable(L, 0, 6);
  lua_pushstring(L, PACKAGE_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, LUA_RELEASE);
  lua_setfield(L, -2, "lua");
  lua_pushstring(L, sqlite3_libversion());
  lua_setfield(L, -2, "sqlite");
  lua_pushstring(L, JANSSON_VERSION);
  lua_setfield(L, -2, "jansson");
#ifdef HERD_HAVE_CUDA
  lua_pushboolean(L, 1);
#else
  lua_pushboolean(L, 0);
#endif
  lua_setfield(L, -2, "cuda");
  lua_pushstring(L, herd_lua_dir());
  lua_setfield(L, -2, "lua_dir");
}

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                      lua_CFunction tostring) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, gc);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}

int luaopen_herd_core(lua_State *L) {
  static const luaL_Reg runlog_methods[] = {{"start", runlog_start},
                                            {"gc", runlog_gc_runs},
                                            {"query", runlog_query},
                                            {"path", runlog_path},
                                            {"schema_version", runlog_schema_version},
                                            {"set_heartbeat", runlog_set_heartbeat},
                                            {"close", runlog_gc},
                                            {NULL, NULL}};
  static const luaL_Reg run_methods[] = {{"id", run_id},
                                         {"uuid", run_uuid},
                                         {"is_open", run_is_open},
                                         {"set_name", run_set_name},
                                         {"set_parent", run_set_parent},
                                         {"set_seed", run_set_seed},
                                         {"set_script", run_set_script},
                                         {"set_config", run_set_config},
                                         {"add_tag", run_add_tag},
                                         {"param", run_param},
                                         {"log", run_log},
                                         {"flush", run_flush},
                                         {"pending", run_pending},
                                         {"artifact", run_artifact},
                                         {"finish", run_finish},
                                         {"close", run_gc},
                                         {NULL, NULL}};
  static const luaL_Reg functions[] = {{"runlog_open", core_runlog_open},
                                       {"json_encode", core_json_encode},
                                       {"json_decode", core_json_decode},
                                       {"sha256", core_sha256},
                                       {"sha256_file", core_sha256_file},
                                       {"now", core_now},
                                       {"sleep", core_sleep},
                                       {"pid", core_pid},
                                       {"hostname", core_hostname},
                                       {"isatty", core_isatty},
                                       {"interrupted", core_interrupted},
                                       {"cuda_device_count", core_cuda_device_count},
                                       {NULL, NULL}};
  new_class(L, RUNLOG_TYPE, runlog_methods, runlog_gc, runlog_tostring);
  new_class(L, RUN_TYPE, run_methods, run_gc, run_tostring);
  luaL_newlib(L, functions);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  push_build_info(L);
  lua_setfield(L, -2, "build");
  lua_pushinteger(L, HERD_RUNLOG_SCHEMA_VERSION);
  lua_setfield(L, -2, "schema_version");
  return 1;
}
