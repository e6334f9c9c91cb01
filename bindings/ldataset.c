// The `herd.data_core` module: JSONL datasets as Lua userdata (lua/herd/data.lua adds option
// tables). Records live in C storage; `ds[i]` (1-based) builds a Lua table for one record on
// demand, so a million records never become a million Lua tables.
#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "error.h"
#include "host.h"
#include "tensor.h"

#define DATASET_TYPE "herd.Dataset"
#define PACKED_TYPE "herd.Packed"

typedef struct dataset_box {
  herd_dataset *ds;
} dataset_box;

static herd_dataset *check_dataset(lua_State *L, int index) {
  dataset_box *box = luaL_checkudata(L, index, DATASET_TYPE);
  if (!box->ds) luaL_error(L, "dataset is closed");
  return box->ds;
}

static int dataset_gc(lua_State *L) {
  dataset_box *box = luaL_checkudata(L, 1, DATASET_TYPE);
  herd_dataset_free(box->ds);
  box->ds = NULL;
  return 0;
}

static dataset_box *push_box(lua_State *L) {
  dataset_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->ds = NULL;
  luaL_setmetatable(L, DATASET_TYPE);
  return box;
}

// A malloc'd buffer or a json_t owned by a userdata on the stack (released on any error).
typedef struct guard_box {
  void *data;
  json_t *json;
} guard_box;

static int guard_gc(lua_State *L) {
  guard_box *box = lua_touserdata(L, 1);
  free(box->data);
  json_decref(box->json);
  box->data = NULL;
  box->json = NULL;
  return 0;
}

static guard_box *push_guard(lua_State *L) {
  guard_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->data = NULL;
  box->json = NULL;
  if (luaL_newmetatable(L, "herd.DatasetGuard")) {
    lua_pushcfunction(L, guard_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return box;
}

static void *guarded_malloc(lua_State *L, size_t bytes) {
  guard_box *guard = push_guard(L);
  guard->data = malloc(bytes ? bytes : 1);
  if (!guard->data) luaL_error(L, "out of memory");
  return guard->data;
}

static int schema_of(lua_State *L, int index) {
  static const char *const names[] = {"none", "preference", NULL};
  if (lua_isnoneornil(L, index)) return HERD_SCHEMA_NONE;
  return luaL_checkoption(L, index, NULL, names);
}

// core.load(path, schema) -> dataset
static int core_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int schema = schema_of(L, 2);
  dataset_box *box = push_box(L);
  HERD_LUA_CHECK(L, herd_dataset_load_jsonl(&box->ds, path, schema));
  return 1;
}

// core.from_lines({json text, ...}, origin, schema) -> dataset
static int core_from_lines(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *origin = luaL_optstring(L, 2, "(lines)");
  int schema = schema_of(L, 3);
  size_t n = (size_t)luaL_len(L, 1);
  const char **lines = guarded_malloc(L, n * sizeof *lines);
  size_t *lens = guarded_malloc(L, n * sizeof *lens);
  for (size_t i = 0; i < n; i++) {
    lua_geti(L, 1, (lua_Integer)i + 1);
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "lines[%d] must be a string", (int)i + 1);
    lines[i] = lua_tolstring(L, -1, &lens[i]);  // the table keeps it alive
    lua_pop(L, 1);
  }
  dataset_box *box = push_box(L);
  HERD_LUA_CHECK(L, herd_dataset_from_lines(&box->ds, lines, lens, n, origin, schema));
  return 1;
}

// Pushes record `i` (0-based) as a table.
static void push_record(lua_State *L, const herd_dataset *ds, size_t i) {
  const char *text;
  size_t len;
  if (herd_dataset_record(ds, i, &text, &len)) herd_lua_error(L);
  guard_box *guard = push_guard(L);
  json_error_t err;
  guard->json = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
  if (!guard->json) luaL_error(L, "dataset: record %d: %s", (int)i + 1, err.text);
  herd_lua_pushjson(L, guard->json);
  lua_remove(L, -2);
  json_decref(guard->json);  // the guard was removed from the stack; free now, not at GC
  guard->json = NULL;
}

static int position(lua_State *L, const herd_dataset *ds, lua_Integer i, size_t *out) {
  if (i < 1 || (lua_Unsigned)i > herd_dataset_size(ds)) return 0;
  *out = (size_t)(i - 1);
  (void)L;
  return 1;
}

// ds[i] -> record table (nil out of range); ds.name -> method
static int dataset_index(lua_State *L) {
  herd_dataset *ds = check_dataset(L, 1);
  if (lua_type(L, 2) == LUA_TNUMBER) {
    int is_int;
    lua_Integer i = lua_tointegerx(L, 2, &is_int);
    size_t pos;
    if (!is_int || !position(L, ds, i, &pos)) return 0;
    push_record(L, ds, pos);
    return 1;
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int dataset_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)herd_dataset_size(check_dataset(L, 1)));
  return 1;
}

static int dataset_tostring(lua_State *L) {
  dataset_box *box = luaL_checkudata(L, 1, DATASET_TYPE);
  if (!box->ds)
    lua_pushstring(L, "herd.Dataset (closed)");
  else
    lua_pushfstring(L, "herd.Dataset (%I record%s)", (lua_Integer)herd_dataset_size(box->ds),
                    herd_dataset_size(box->ds) == 1 ? "" : "s");
  return 1;
}

// ds:json(i) -> the record's JSON text as stored
static int dataset_json(lua_State *L) {
  herd_dataset *ds = check_dataset(L, 1);
  size_t pos;
  if (!position(L, ds, luaL_checkinteger(L, 2), &pos))
    return luaL_error(L, "dataset: record %d out of range (%d records)", (int)lua_tointeger(L, 2),
                      (int)herd_dataset_size(ds));
  const char *text;
  size_t len;
  HERD_LUA_CHECK(L, herd_dataset_record(ds, pos, &text, &len));
  lua_pushlstring(L, text, len);
  return 1;
}

// ds:origin(i) -> file, line
static int dataset_origin(lua_State *L) {
  herd_dataset *ds = check_dataset(L, 1);
  size_t pos;
  if (!position(L, ds, luaL_checkinteger(L, 2), &pos))
    return luaL_error(L, "dataset: record %d out of range (%d records)", (int)lua_tointeger(L, 2),
                      (int)herd_dataset_size(ds));
  const char *file;
  int64_t line;
  HERD_LUA_CHECK(L, herd_dataset_origin(ds, pos, &file, &line));
  lua_pushstring(L, file);
  lua_pushinteger(L, (lua_Integer)line);
  return 2;
}

// ds:select({i, ...}) -> view of those records (1-based, repeats allowed)
static int dataset_select(lua_State *L) {
  herd_dataset *ds = check_dataset(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t n = (size_t)luaL_len(L, 2);
  size_t *idx = guarded_malloc(L, n * sizeof *idx);
  for (size_t k = 0; k < n; k++) {
    lua_geti(L, 2, (lua_Integer)k + 1);
    int is_int;
    lua_Integer i = lua_tointegerx(L, -1, &is_int);
    if (!is_int || !position(L, ds, i, &idx[k]))
      return luaL_error(L, "select: index %s out of range (%d records)",
                        luaL_tolstring(L, -1, NULL), (int)herd_dataset_size(ds));
    lua_pop(L, 1);
  }
  dataset_box *box = push_box(L);
  HERD_LUA_CHECK(L, herd_dataset_select(&box->ds, ds, idx, n));
  return 1;
}

// ds:_filter_fn(fn) -> view of the records for which fn(record, i) is true
static int dataset_filter_fn(lua_State *L) {
  herd_dataset *ds = check_dataset(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  size_t n = herd_dataset_size(ds), kept = 0;
  size_t *idx = guarded_malloc(L, n * sizeof *idx);
  for (size_t i = 0; i < n; i++) {
    lua_pushvalue(L, 2);
    push_record(L, ds, i);
    lua_pushinteger(L, (lua_Integer)i + 1);
    lua_call(L, 2, 1);
    if (lua_toboolean(L, -1)) idx[kept++] = i;
    lua_pop(L, 1);
  }
  dataset_box *box = push_box(L);
  HERD_LUA_CHECK(L, herd_dataset_select(&box->ds, ds, idx, kept));
  return 1;
}

// ds:_filter_eq{field = value, ...} (strings, numbers, booleans)
static int dataset_filter_eq(lua_State *L) {
  herd_dataset *ds = check_dataset(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, 2)) n++, lua_pop(L, 1);
  const char **fields = guarded_malloc(L, n * sizeof *fields);
  const char **values = guarded_malloc(L, n * sizeof *values);
  lua_newtable(L);  // keeps the JSON texts alive
  int texts = lua_gettop(L);
  size_t k = 0;
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    if (lua_type(L, -2) != LUA_TSTRING) return luaL_error(L, "filter: field names must be strings");
    const char *field = lua_tostring(L, -2);
    json_t *value = NULL;
    switch (lua_type(L, -1)) {
      case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        value = json_stringn_nocheck(s, len);
        break;
      }
      case LUA_TNUMBER:
        value = lua_isinteger(L, -1) ? json_integer((json_int_t)lua_tointeger(L, -1))
                                     : json_real(lua_tonumber(L, -1));
        break;
      case LUA_TBOOLEAN:
        value = json_boolean(lua_toboolean(L, -1));
        break;
      default:
        return luaL_error(L, "filter: field '%s': compare with a string, number or boolean, not %s",
                          field, luaL_typename(L, -1));
    }
    char *text = value ? json_dumps(value, JSON_ENCODE_ANY) : NULL;
    json_decref(value);
    if (!text) return luaL_error(L, "filter: field '%s': cannot encode the value", field);
    lua_pushstring(L, text);
    free(text);
    values[k] = lua_tostring(L, -1);
    lua_rawseti(L, texts, (lua_Integer)k + 1);
    fields[k++] = field;  // the key stays in the filter table
    lua_pop(L, 1);
  }
  dataset_box *box = push_box(L);
  HERD_LUA_CHECK(L, herd_dataset_filter_eq(&box->ds, ds, fields, values, k));
  return 1;
}

static uint64_t check_seed(lua_State *L, int index) {
  return (uint64_t)luaL_checkinteger(L, index);
}

static int dataset_shuffle(lua_State *L) {
  herd_dataset *ds = check_dataset(L, 1);
  uint64_t seed = check_seed(L, 2);
  dataset_box *box = push_box(L);
  HERD_LUA_CHECK(L, herd_dataset_shuffle(&box->ds, ds, seed));
  return 1;
}

static int dataset_sample(lua_State *L) {
  herd_dataset *ds = check_dataset(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  uint64_t seed = check_seed(L, 3);
  if (n < 0) return luaL_error(L, "sample: n must be >= 0");
  dataset_box *box = push_box(L);
  HERD_LUA_CHECK(L, herd_dataset_sample(&box->ds, ds, (size_t)n, seed));
  return 1;
}

// ds:split(fraction, seed) -> first, second (seed nil: cut in order)
static int dataset_split(lua_State *L) {
  herd_dataset *ds = check_dataset(L, 1);
  double fraction = luaL_checknumber(L, 2);
  int shuffle = !lua_isnoneornil(L, 3);
  uint64_t seed = shuffle ? check_seed(L, 3) : 0;
  dataset_box *first = push_box(L), *second = push_box(L);
  HERD_LUA_CHECK(L, herd_dataset_split(&first->ds, &second->ds, ds, fraction, seed, shuffle));
  return 2;
}

static int dataset_concat(lua_State *L) {
  herd_dataset *a = check_dataset(L, 1), *b = check_dataset(L, 2);
  dataset_box *box = push_box(L);
  HERD_LUA_CHECK(L, herd_dataset_concat(&box->ds, a, b));
  return 1;
}

static int dataset_write(lua_State *L) {
  HERD_LUA_CHECK(L, herd_dataset_write_jsonl(check_dataset(L, 1), luaL_checkstring(L, 2)));
  return 0;
}

static int dataset_validate(lua_State *L) {
  herd_dataset *ds = check_dataset(L, 1);
  HERD_LUA_CHECK(L, herd_dataset_validate(ds, schema_of(L, 2)));
  lua_settop(L, 1);
  return 1;
}

static int dataset_bytes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)herd_dataset_bytes(check_dataset(L, 1)));
  return 1;
}

static void push_lengths(lua_State *L, const herd_dataset_lengths *lengths) {
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)lengths->n);
  lua_setfield(L, -2, "n");
  if (lengths->n) {
    lua_pushnumber(L, lengths->mean);
    lua_setfield(L, -2, "mean");
    lua_pushinteger(L, lengths->min);
    lua_setfield(L, -2, "min");
    lua_pushinteger(L, lengths->max);
    lua_setfield(L, -2, "max");
    lua_pushinteger(L, lengths->median);
    lua_setfield(L, -2, "median");
    lua_pushinteger(L, lengths->total);
    lua_setfield(L, -2, "total");
  }
}

typedef struct stats_box {
  herd_dataset_stats stats;
} stats_box;

static int stats_gc(lua_State *L) {
  stats_box *box = lua_touserdata(L, 1);
  herd_dataset_stats_free(&box->stats);
  return 0;
}

// ds:_describe() -> { n, source = {value = count}, rating, domain, safety_bin, batch = {[b] =
// count}, prompt/chosen/rejected = {n, mean, min, max, median, total}, dialogs, mean_turns }
static int dataset_describe(lua_State *L) {
  static const char *const names[HERD_DS_NCATEGORIES] = {"source", "rating", "domain",
                                                         "safety_bin"};
  herd_dataset *ds = check_dataset(L, 1);
  stats_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  memset(&box->stats, 0, sizeof box->stats);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, stats_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  HERD_LUA_CHECK(L, herd_dataset_describe(ds, &box->stats));
  const herd_dataset_stats *st = &box->stats;
  lua_createtable(L, 0, 12);
  lua_pushinteger(L, (lua_Integer)st->n);
  lua_setfield(L, -2, "n");
  for (int c = 0; c < HERD_DS_NCATEGORIES; c++) {
    lua_createtable(L, 0, (int)st->n_counts[c]);
    for (size_t i = 0; i < st->n_counts[c]; i++) {
      lua_pushinteger(L, (lua_Integer)st->counts[c][i].count);
      lua_setfield(L, -2, st->counts[c][i].value);
    }
    lua_setfield(L, -2, names[c]);
  }
  lua_createtable(L, 0, (int)st->n_batches);
  for (size_t i = 0; i < st->n_batches; i++) {
    lua_pushinteger(L, (lua_Integer)st->batches[i].count);
    lua_rawseti(L, -2, (lua_Integer)st->batches[i].batch);
  }
  lua_setfield(L, -2, "batch");
  push_lengths(L, &st->prompt);
  lua_setfield(L, -2, "prompt");
  push_lengths(L, &st->chosen);
  lua_setfield(L, -2, "chosen");
  push_lengths(L, &st->rejected);
  lua_setfield(L, -2, "rejected");
  lua_pushinteger(L, (lua_Integer)st->n_dialogs);
  lua_setfield(L, -2, "dialogs");
  lua_pushnumber(L, st->mean_turns);
  lua_setfield(L, -2, "mean_turns");
  lua_pushstring(L, "characters");
  lua_setfield(L, -2, "unit");
  return 1;
}

// ---------------------------------------------------------------- packing for SFT

typedef struct packed_box {
  herd_packed packed;
} packed_box;

static herd_packed *check_packed(lua_State *L, int index) {
  packed_box *box = luaL_checkudata(L, index, PACKED_TYPE);
  if (!box->packed.seq) luaL_error(L, "packed rows are closed");
  return &box->packed;
}

static int packed_gc(lua_State *L) {
  herd_packed_free(&((packed_box *)luaL_checkudata(L, 1, PACKED_TYPE))->packed);
  return 0;
}

// The list field `name` of sample i (at the top of the stack) and its length.
static size_t sample_list(lua_State *L, lua_Integer i, const char *name) {
  if (lua_getfield(L, -1, name) != LUA_TTABLE)
    luaL_error(L, "pack: sample %d: field '%s' must be a list, not %s", (int)i, name,
               luaL_typename(L, -1));
  size_t n = (size_t)luaL_len(L, -1);
  lua_pop(L, 1);
  return n;
}

// Checks sample i (at the top of the stack) and returns its length.
static size_t sample_length(lua_State *L, lua_Integer i) {
  if (lua_type(L, -1) != LUA_TTABLE)
    luaL_error(L, "pack: sample %d is a %s, not a table { ids =, mask = }", (int)i,
               luaL_typename(L, -1));
  size_t n_ids = sample_list(L, i, "ids"), n_mask = sample_list(L, i, "mask");
  if (n_ids != n_mask)
    luaL_error(L, "pack: sample %d: ids has %d entries but mask has %d", (int)i, (int)n_ids,
               (int)n_mask);
  if (n_ids > INT32_MAX) luaL_error(L, "pack: sample %d is too long", (int)i);
  return n_ids;
}

// Copies sample i's ids and mask (sample table at the top of the stack) into the arrays.
static void sample_copy(lua_State *L, lua_Integer i, int32_t *ids, float *mask, size_t n) {
  lua_getfield(L, -1, "ids");
  lua_getfield(L, -2, "mask");
  for (size_t t = 0; t < n; t++) {
    int is_int;
    lua_geti(L, -2, (lua_Integer)t + 1);
    lua_Integer id = lua_tointegerx(L, -1, &is_int);
    if (!is_int || id < INT32_MIN || id > INT32_MAX)
      luaL_error(L, "pack: sample %d: ids[%d] is not a token id", (int)i, (int)t + 1);
    lua_geti(L, -2, (lua_Integer)t + 1);
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "pack: sample %d: mask[%d] is a %s, not 0 or 1", (int)i, (int)t + 1,
                 luaL_typename(L, -1));
    ids[t] = (int32_t)id;
    mask[t] = (float)lua_tonumber(L, -1);
    lua_pop(L, 2);
  }
  lua_pop(L, 2);
}

// core.pack({ { ids =, mask = }, ... }, seq, pad, overlong) -> packed rows
static int core_pack(lua_State *L) {
  static const char *const policies[] = {"truncate", "error", NULL};
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer seq = luaL_checkinteger(L, 2), pad = luaL_checkinteger(L, 3);
  if (seq < 2 || seq > INT32_MAX)
    return luaL_error(L, "pack: seq = %I; it must be at least 2", seq);
  if (pad < 0 || pad > INT32_MAX) return luaL_error(L, "pack: pad = %I is not a token id", pad);
  herd_pack_options opts = {(int)seq, (int32_t)pad, luaL_checkoption(L, 4, "truncate", policies),
                            1};
  size_t n = (size_t)luaL_len(L, 1), total = 0;
  herd_pack_sample *samples = guarded_malloc(L, n * sizeof *samples);
  for (size_t i = 0; i < n; i++) {
    lua_geti(L, 1, (lua_Integer)i + 1);
    samples[i].len = (int)sample_length(L, (lua_Integer)i + 1);
    total += (size_t)samples[i].len;
    lua_pop(L, 1);
  }
  int32_t *ids = guarded_malloc(L, total * sizeof *ids);  // one arena for all samples
  float *mask = guarded_malloc(L, total * sizeof *mask);
  for (size_t i = 0, at = 0; i < n; at += (size_t)samples[i++].len) {
    samples[i].ids = ids + at;
    samples[i].mask = mask + at;
    lua_geti(L, 1, (lua_Integer)i + 1);
    sample_copy(L, (lua_Integer)i + 1, ids + at, mask + at, (size_t)samples[i].len);
    lua_pop(L, 1);
  }
  packed_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  memset(box, 0, sizeof *box);
  luaL_setmetatable(L, PACKED_TYPE);
  HERD_LUA_CHECK(L, herd_pack(&box->packed, samples, n, &opts));
  return 1;
}

static int packed_len(lua_State *L) {
  lua_pushinteger(L, check_packed(L, 1)->rows);
  return 1;
}

// Sets field `name` of the table on top to a (rows, seq) tensor copied from `src`.
static void push_rows(lua_State *L, const char *name, herd_dtype dtype, const void *src, int rows,
                      int seq) {
  herd_tensor **out = herd_lua_newtensor(L);
  int64_t shape[2] = {rows, seq};
  if (herd_tensor_new(out, dtype, HERD_CPU, 2, shape)) herd_lua_error(L);
  memcpy(herd_tensor_data(*out), src, herd_tensor_nbytes(*out));
  lua_setfield(L, -2, name);
}

// packed:batch(first_row = 1, n_rows = the rest) -> { tokens, targets, weights, segments,
// positions } as (n_rows, seq) tensors, and loss_scale
static int packed_batch(lua_State *L) {
  herd_packed *p = check_packed(L, 1);
  lua_Integer first = luaL_optinteger(L, 2, 1);
  lua_Integer count = luaL_optinteger(L, 3, p->rows - first + 1);
  if (first < 1 || count < 1 || first > p->rows || count > p->rows - first + 1)
    return luaL_error(L, "batch: rows %d..%d are outside 1..%d", (int)first,
                      (int)(first + count - 1), p->rows);
  size_t at = (size_t)(first - 1) * (size_t)p->seq;
  int rows = (int)count;
  lua_createtable(L, 0, 5);
  push_rows(L, "tokens", HERD_I32, p->tokens + at, rows, p->seq);
  push_rows(L, "targets", HERD_I32, p->targets + at, rows, p->seq);
  push_rows(L, "weights", HERD_F32, p->weights + at, rows, p->seq);
  push_rows(L, "segments", HERD_I32, p->segments + at, rows, p->seq);
  push_rows(L, "positions", HERD_I32, p->positions + at, rows, p->seq);
  // The model's default scale counts every target, prompt tokens included; SFT's loss is the
  // mean over the answer tokens, so the batch carries 1 / (its trained targets).
  double trained = 0;
  for (size_t i = 0; i < (size_t)rows * (size_t)p->seq; i++) trained += p->weights[at + i];
  lua_pushnumber(L, trained > 0 ? 1.0 / trained : 0.0);
  lua_setfield(L, -2, "loss_scale");
  return 1;
}

// packed:stats() -> { samples, truncated, skipped, rows, tokens, trained, padding, seq }
static int packed_stats(lua_State *L) {
  herd_packed *p = check_packed(L, 1);
  const struct {
    const char *name;
    size_t value;
  } fields[] = {{"samples", p->stats.samples}, {"truncated", p->stats.truncated},
                {"skipped", p->stats.skipped}, {"rows", p->stats.rows},
                {"tokens", p->stats.tokens},   {"trained", p->stats.trained},
                {"padding", p->stats.padding}, {"seq", (size_t)p->seq}};
  lua_createtable(L, 0, 8);
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    lua_pushinteger(L, (lua_Integer)fields[i].value);
    lua_setfield(L, -2, fields[i].name);
  }
  return 1;
}

// packed:placement(i) -> row, first column, length (1-based), or nil when sample i was skipped
static int packed_placement(lua_State *L) {
  herd_packed *p = check_packed(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 1 || (lua_Unsigned)i > p->n_samples)
    return luaL_error(L, "placement: sample %d is outside 1..%d", (int)i, (int)p->n_samples);
  if (p->sample_row[i - 1] < 0) return 0;
  lua_pushinteger(L, p->sample_row[i - 1] + 1);
  lua_pushinteger(L, p->sample_start[i - 1] + 1);
  lua_pushinteger(L, p->sample_len[i - 1]);
  return 3;
}

static int packed_tostring(lua_State *L) {
  packed_box *box = luaL_checkudata(L, 1, PACKED_TYPE);
  if (!box->packed.seq)
    lua_pushstring(L, "herd.Packed (closed)");
  else
    lua_pushfstring(L, "herd.Packed (%d rows of %d tokens, %I samples)", box->packed.rows,
                    box->packed.seq, (lua_Integer)box->packed.stats.samples);
  return 1;
}

static void register_packed(lua_State *L) {
  static const luaL_Reg methods[] = {{"batch", packed_batch},
                                     {"stats", packed_stats},
                                     {"placement", packed_placement},
                                     {"close", packed_gc},
                                     {NULL, NULL}};
  luaL_newmetatable(L, PACKED_TYPE);
  lua_pushcfunction(L, packed_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, packed_gc);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, packed_len);
  lua_setfield(L, -2, "__len");
  lua_pushcfunction(L, packed_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int luaopen_herd_data_core(lua_State *L) {
  static const luaL_Reg methods[] = {{"json", dataset_json},
                                     {"origin", dataset_origin},
                                     {"select", dataset_select},
                                     {"_filter_fn", dataset_filter_fn},
                                     {"_filter_eq", dataset_filter_eq},
                                     {"shuffle", dataset_shuffle},
                                     {"sample", dataset_sample},
                                     {"split", dataset_split},
                                     {"concat", dataset_concat},
                                     {"write", dataset_write},
                                     {"validate", dataset_validate},
                                     {"bytes", dataset_bytes},
                                     {"_describe", dataset_describe},
                                     {"close", dataset_gc},
                                     {NULL, NULL}};
  static const luaL_Reg functions[] = {
      {"load", core_load}, {"from_lines", core_from_lines}, {"pack", core_pack}, {NULL, NULL}};
  register_packed(L);
  luaL_newmetatable(L, DATASET_TYPE);
  lua_pushcfunction(L, dataset_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, dataset_gc);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, dataset_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, dataset_len);
  lua_setfield(L, -2, "__len");
  lua_pushcfunction(L, dataset_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, dataset_concat);
  lua_setfield(L, -2, "__concat");
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "methods");
  lua_newtable(L);
  luaL_setfuncs(L, functions, 0);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "metatable");
  return 1;
}
