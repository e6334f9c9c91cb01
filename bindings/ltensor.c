// The `herd.tensor_core` module: tensors as Lua userdata (lua/herd/tensor.lua adds the Lua-side
// methods: printing, nested tables, safetensors files).
//
// Indices are 1-based in Lua, as everywhere in Lua; dims too (t:narrow(1, 2, 3) narrows the
// first dim from its second element). A userdata is created empty with its metatable before the
// C tensor is made, so an error at any point leaks nothing.
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "host.h"
#include "ops.h"
#include "rng.h"
#include "safetensors.h"
#include "tensor.h"

#define TENSOR_TYPE "herd.Tensor"

typedef struct tensor_box {
  herd_tensor *t;
} tensor_box;

static tensor_box *push_empty(lua_State *L) {
  tensor_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->t = NULL;
  luaL_setmetatable(L, TENSOR_TYPE);
  return box;
}

herd_tensor *herd_lua_totensor(lua_State *L, int index) {
  tensor_box *box = luaL_testudata(L, index, TENSOR_TYPE);
  return box ? box->t : NULL;
}

herd_tensor **herd_lua_newtensor(lua_State *L) {
  return &push_empty(L)->t;
}

static herd_tensor *check_tensor(lua_State *L, int index) {
  tensor_box *box = luaL_checkudata(L, index, TENSOR_TYPE);
  if (!box->t) luaL_error(L, "tensor is closed");
  return box->t;
}

// Tensor memory is invisible to Lua's collector: nudge it by the size of what was allocated,
// so dropped tensors are freed in long REPL sessions (Torch7 did the same).
static void account(lua_State *L, const herd_tensor *t) {
  size_t kib = herd_tensor_nbytes(t) / 1024;
  if (kib > 64) lua_gc(L, LUA_GCSTEP, (int)(kib > 1 << 20 ? 1 << 20 : kib));
}

static int tensor_gc(lua_State *L) {
  tensor_box *box = luaL_checkudata(L, 1, TENSOR_TYPE);
  herd_tensor_free(box->t);
  box->t = NULL;
  return 0;
}

static int check_shape(lua_State *L, int index, int64_t *shape) {
  luaL_checktype(L, index, LUA_TTABLE);
  int ndim = (int)luaL_len(L, index);
  if (ndim > HERD_MAX_DIMS) luaL_error(L, "a tensor has at most %d dims", HERD_MAX_DIMS);
  for (int i = 0; i < ndim; i++) {
    lua_geti(L, index, i + 1);
    int ok;
    shape[i] = lua_tointegerx(L, -1, &ok);
    if (!ok || shape[i] < 0) luaL_error(L, "shape[%d] must be a non-negative integer", i + 1);
    lua_pop(L, 1);
  }
  return ndim;
}

static herd_dtype check_dtype(lua_State *L, int index, const char *fallback) {
  herd_dtype dtype;
  if (herd_dtype_parse(luaL_optstring(L, index, fallback), &dtype) != 0) herd_lua_error(L);
  return dtype;
}

// core.new(shape, dtype = "f32", fill = 0)
static int core_new(lua_State *L) {
  int64_t shape[HERD_MAX_DIMS];
  int ndim = check_shape(L, 1, shape);
  herd_dtype dtype = check_dtype(L, 2, "f32");
  double fill = luaL_optnumber(L, 3, 0);
  tensor_box *box = push_empty(L);
  HERD_LUA_CHECK(L, herd_tensor_new(&box->t, dtype, HERD_CPU, ndim, shape));
  if (fill != 0) HERD_LUA_CHECK(L, herd_tensor_fill(box->t, fill));
  account(L, box->t);
  return 1;
}

// core.random(shape, "uniform"|"normal", seed, offset)
static int core_random(lua_State *L) {
  int64_t shape[HERD_MAX_DIMS];
  int ndim = check_shape(L, 1, shape);
  static const char *const kinds[] = {"uniform", "normal", NULL};
  int kind = luaL_checkoption(L, 2, NULL, kinds);
  uint64_t seed = (uint64_t)luaL_checkinteger(L, 3);
  uint64_t offset = (uint64_t)luaL_optinteger(L, 4, 0);
  tensor_box *box = push_empty(L);
  HERD_LUA_CHECK(L, herd_tensor_new(&box->t, HERD_F32, HERD_CPU, ndim, shape));
  float *data = herd_tensor_data(box->t);
  int64_t n = herd_tensor_numel(box->t);
  if (kind == 0)
    herd_rng_uniform(data, n, seed, offset);
  else
    herd_rng_normal(data, n, seed, offset);
  account(L, box->t);
  return 1;
}

// ---------------------------------------------------------------- shape and elements

static int tensor_shape(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  lua_createtable(L, t->ndim, 0);
  for (int i = 0; i < t->ndim; i++) {
    lua_pushinteger(L, t->shape[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int tensor_dtype(lua_State *L) {
  lua_pushstring(L, herd_dtype_name(check_tensor(L, 1)->dtype));
  return 1;
}

static int tensor_numel(lua_State *L) {
  lua_pushinteger(L, herd_tensor_numel(check_tensor(L, 1)));
  return 1;
}

static int tensor_dim(lua_State *L) {
  lua_pushinteger(L, check_tensor(L, 1)->ndim);
  return 1;
}

static int tensor_is_contiguous(lua_State *L) {
  lua_pushboolean(L, herd_tensor_is_contiguous(check_tensor(L, 1)));
  return 1;
}

// Lua's 1-based indices from arguments first..first+ndim-1, converted to 0-based.
static void check_index(lua_State *L, const herd_tensor *t, int first, int64_t *index) {
  int given = lua_gettop(L) - first + 1;
  if (given < t->ndim)
    luaL_error(L, "a %d-dim tensor needs %d indices (got %d)", t->ndim, t->ndim, given);
  for (int i = 0; i < t->ndim; i++) index[i] = luaL_checkinteger(L, first + i) - 1;
}

static int tensor_get(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  int64_t index[HERD_MAX_DIMS];
  check_index(L, t, 2, index);
  double value;
  HERD_LUA_CHECK(L, herd_tensor_get(t, index, &value));
  if (t->dtype == HERD_I32 || t->dtype == HERD_U8)
    lua_pushinteger(L, (lua_Integer)value);
  else
    lua_pushnumber(L, value);
  return 1;
}

// t:set(i, j, value)
static int tensor_set(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  int64_t index[HERD_MAX_DIMS];
  int top = lua_gettop(L);
  if (top != t->ndim + 2)
    return luaL_error(L, "t:set takes %d indices and a value (got %d arguments)", t->ndim, top - 1);
  double value = luaL_checknumber(L, top);
  lua_settop(L, top - 1);
  check_index(L, t, 2, index);
  HERD_LUA_CHECK(L, herd_tensor_set(t, index, value));
  lua_settop(L, 1);
  return 1;
}

// All elements in row-major order as a flat Lua array (for printing and totable).
static int tensor_flat(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  herd_tensor *f32 = NULL;
  HERD_LUA_CHECK(L, herd_tensor_to(&f32, t, HERD_F32));
  int64_t n = herd_tensor_numel(f32);
  const float *data = herd_tensor_data(f32);
  int integral = t->dtype == HERD_I32 || t->dtype == HERD_U8;
  lua_createtable(L, (int)n, 0);
  for (int64_t i = 0; i < n; i++) {
    if (integral)
      lua_pushinteger(L, (lua_Integer)data[i]);
    else
      lua_pushnumber(L, data[i]);
    lua_rawseti(L, -2, i + 1);
  }
  herd_tensor_free(f32);
  return 1;
}

// t:_set_flat{...}: fills a contiguous tensor from a flat array of numbers.
static int tensor_set_flat(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int64_t n = herd_tensor_numel(t);
  if ((int64_t)luaL_len(L, 2) != n)
    return luaL_error(L, "expected %d values, got %d", (int)n, (int)luaL_len(L, 2));
  if (!herd_tensor_is_contiguous(t)) return luaL_error(L, "_set_flat needs a contiguous tensor");
  for (int64_t i = 0; i < n; i++) {
    lua_geti(L, 2, i + 1);
    int ok;
    double value = lua_tonumberx(L, -1, &ok);
    if (!ok)
      return luaL_error(L, "element %d is a %s, not a number", (int)i + 1, luaL_typename(L, -1));
    int64_t index[HERD_MAX_DIMS], rest = i;
    for (int d = t->ndim - 1; d >= 0; d--) index[d] = rest % t->shape[d], rest /= t->shape[d];
    herd_tensor_set(t, index, value);
    lua_pop(L, 1);
  }
  return 0;
}

// ---------------------------------------------------------------- views and copies

static int check_dim_arg(lua_State *L, const herd_tensor *t, int arg) {
  lua_Integer dim = luaL_checkinteger(L, arg);
  if (dim < 1 || dim > t->ndim)
    luaL_error(L, "dim %d out of range for a %d-dim tensor", (int)dim, t->ndim);
  return (int)dim - 1;
}

static int tensor_select(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  int dim = check_dim_arg(L, t, 2);
  int64_t index = luaL_checkinteger(L, 3) - 1;
  tensor_box *box = push_empty(L);
  HERD_LUA_CHECK(L, herd_tensor_select(&box->t, t, dim, index));
  return 1;
}

static int tensor_narrow(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  int dim = check_dim_arg(L, t, 2);
  int64_t start = luaL_checkinteger(L, 3) - 1, length = luaL_checkinteger(L, 4);
  tensor_box *box = push_empty(L);
  HERD_LUA_CHECK(L, herd_tensor_narrow(&box->t, t, dim, start, length));
  return 1;
}

static int tensor_transpose(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  int dim0 = check_dim_arg(L, t, 2), dim1 = check_dim_arg(L, t, 3);
  tensor_box *box = push_empty(L);
  HERD_LUA_CHECK(L, herd_tensor_transpose(&box->t, t, dim0, dim1));
  return 1;
}

// t:reshape{2, -1} or t:reshape(2, -1)
static int tensor_reshape(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  if (!lua_istable(L, 2)) {
    int n = lua_gettop(L) - 1;
    lua_createtable(L, n, 0);
    for (int i = 1; i <= n; i++) {
      lua_pushvalue(L, i + 1);
      lua_rawseti(L, -2, i);
    }
    lua_replace(L, 2);
    lua_settop(L, 2);
  }
  int64_t shape[HERD_MAX_DIMS];
  int ndim = (int)luaL_len(L, 2);
  if (ndim > HERD_MAX_DIMS) return luaL_error(L, "a tensor has at most %d dims", HERD_MAX_DIMS);
  for (int i = 0; i < ndim; i++) {
    lua_geti(L, 2, i + 1);
    shape[i] = luaL_checkinteger(L, -1);
    lua_pop(L, 1);
  }
  tensor_box *box = push_empty(L);
  HERD_LUA_CHECK(L, herd_tensor_reshape(&box->t, t, ndim, shape));
  return 1;
}

static int tensor_contiguous(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  tensor_box *box = push_empty(L);
  HERD_LUA_CHECK(L, herd_tensor_contiguous(&box->t, t));
  return 1;
}

static int tensor_to(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  herd_dtype dtype = check_dtype(L, 2, NULL);
  tensor_box *box = push_empty(L);
  HERD_LUA_CHECK(L, herd_tensor_to(&box->t, t, dtype));
  account(L, box->t);
  return 1;
}

static int tensor_clone(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  tensor_box *box = push_empty(L);
  HERD_LUA_CHECK(L, herd_tensor_to(&box->t, t, t->dtype));
  account(L, box->t);
  return 1;
}

static int tensor_fill(lua_State *L) {
  HERD_LUA_CHECK(L, herd_tensor_fill(check_tensor(L, 1), luaL_checknumber(L, 2)));
  lua_settop(L, 1);
  return 1;
}

// ---------------------------------------------------------------- arithmetic

// A contiguous f32 copy of a tensor argument, pushed as a userdata (freed by the GC on error).
static herd_tensor *push_f32(lua_State *L, herd_tensor *t) {
  tensor_box *box = push_empty(L);
  if (herd_tensor_to(&box->t, t, HERD_F32) != 0) herd_lua_error(L);
  return box->t;
}

typedef enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV } arith_op;

static void apply_scalar(float *out, const float *a, float s, int64_t n, arith_op op, int swap) {
  for (int64_t i = 0; i < n; i++) {
    float x = swap ? s : a[i], y = swap ? a[i] : s;
    out[i] = op == OP_ADD ? x + y : op == OP_SUB ? x - y : op == OP_MUL ? x * y : x / y;
  }
}

static int arith_with_scalar(lua_State *L, arith_op op, int tensor_arg, double scalar) {
  herd_tensor *a = push_f32(L, check_tensor(L, tensor_arg));
  float *data = herd_tensor_data(a);
  int64_t n = herd_tensor_numel(a);
  if (op == OP_MUL)
    herd_cpu_scale(data, data, (float)scalar, n);
  else
    apply_scalar(data, data, (float)scalar, n, op, tensor_arg == 2);
  return 1;
}

static int same_shape(const herd_tensor *a, const herd_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

static int arith(lua_State *L, arith_op op) {
  if (lua_isnumber(L, 2)) return arith_with_scalar(L, op, 1, lua_tonumber(L, 2));
  if (lua_isnumber(L, 1)) return arith_with_scalar(L, op, 2, lua_tonumber(L, 1));
  herd_tensor *a = check_tensor(L, 1), *b = check_tensor(L, 2);
  if (!same_shape(a, b)) {
    char sa[64], sb[64];
    return luaL_error(L, "shapes %s and %s differ", herd_tensor_shape_string(a, sa, sizeof sa),
                      herd_tensor_shape_string(b, sb, sizeof sb));
  }
  herd_tensor *out = push_f32(L, a);
  herd_tensor *right = push_f32(L, b);
  float *x = herd_tensor_data(out);
  const float *y = herd_tensor_data(right);
  int64_t n = herd_tensor_numel(out);
  if (op == OP_ADD)
    herd_cpu_add(x, x, y, n);
  else if (op == OP_MUL)
    herd_cpu_mul(x, x, y, n);
  else
    for (int64_t i = 0; i < n; i++) x[i] = op == OP_SUB ? x[i] - y[i] : x[i] / y[i];
  lua_pop(L, 1);  // `right`; `out` is the result
  return 1;
}

static int tensor_add(lua_State *L) {
  return arith(L, OP_ADD);
}
static int tensor_sub(lua_State *L) {
  return arith(L, OP_SUB);
}
static int tensor_mul(lua_State *L) {
  return arith(L, OP_MUL);
}
static int tensor_div(lua_State *L) {
  return arith(L, OP_DIV);
}
static int tensor_unm(lua_State *L) {
  return arith_with_scalar(L, OP_MUL, 1, -1.0);
}

// ---------------------------------------------------------------- reductions

static int tensor_sum(lua_State *L) {
  herd_tensor *a = push_f32(L, check_tensor(L, 1));
  lua_pushnumber(L, herd_cpu_sum(herd_tensor_data(a), herd_tensor_numel(a)));
  return 1;
}

static int tensor_mean(lua_State *L) {
  herd_tensor *a = push_f32(L, check_tensor(L, 1));
  if (herd_tensor_numel(a) == 0) return luaL_error(L, "mean of an empty tensor");
  lua_pushnumber(L, herd_cpu_mean(herd_tensor_data(a), herd_tensor_numel(a)));
  return 1;
}

// max and argmax over all elements; argmax is the 1-based flat (row-major) index.
static int push_max(lua_State *L, int want_index) {
  herd_tensor *a = push_f32(L, check_tensor(L, 1));
  if (herd_tensor_numel(a) == 0) return luaL_error(L, "max of an empty tensor");
  int64_t argmax = 0;
  float max = herd_cpu_max(herd_tensor_data(a), herd_tensor_numel(a), &argmax);
  if (want_index)
    lua_pushinteger(L, argmax + 1);
  else
    lua_pushnumber(L, max);
  return 1;
}

static int tensor_max(lua_State *L) {
  return push_max(L, 0);
}
static int tensor_argmax(lua_State *L) {
  return push_max(L, 1);
}

// ---------------------------------------------------------------- safetensors

// core.save(path, names, tensors)
static int core_save(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  int count = (int)luaL_len(L, 2);
  const char **names = lua_newuserdatauv(L, sizeof *names * (count ? count : 1), 0);
  const herd_tensor **tensors = lua_newuserdatauv(L, sizeof *tensors * (count ? count : 1), 0);
  for (int i = 0; i < count; i++) {
    lua_geti(L, 2, i + 1);
    names[i] = luaL_checkstring(L, -1);  // kept alive by the names table
    lua_pop(L, 1);
    lua_geti(L, 3, i + 1);
    tensors[i] = check_tensor(L, lua_gettop(L));
    lua_pop(L, 1);
  }
  HERD_LUA_CHECK(L, herd_safetensors_save(path, count, names, tensors, 0, NULL, NULL));
  return 0;
}

// core.load(path) -> {name = tensor, ...}, {metadata}
static int file_anchor_gc(lua_State *L) {
  herd_safetensors **slot = lua_touserdata(L, 1);
  herd_safetensors_close(*slot);
  *slot = NULL;
  return 0;
}

static int core_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  herd_safetensors **slot = lua_newuserdatauv(L, sizeof *slot, 0);
  *slot = NULL;
  if (luaL_newmetatable(L, "herd.SafetensorsAnchor")) {
    lua_pushcfunction(L, file_anchor_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  HERD_LUA_CHECK(L, herd_safetensors_open(slot, path));
  int count = herd_safetensors_count(*slot);
  lua_createtable(L, 0, count);
  for (int i = 0; i < count; i++) {
    tensor_box *box = push_empty(L);
    HERD_LUA_CHECK(L, herd_safetensors_tensor(*slot, i, &box->t));
    lua_setfield(L, -2, herd_safetensors_name(*slot, i));
  }
  herd_safetensors_close(*slot);  // the tensors keep the file's mapping alive
  *slot = NULL;
  return 1;
}

// ---------------------------------------------------------------- module

static int tensor_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TNUMBER && lua_isinteger(L, 2)) {
    herd_tensor *t = check_tensor(L, 1);
    if (t->ndim == 0) return luaL_error(L, "cannot index a 0-dim tensor");
    int64_t index = lua_tointeger(L, 2) - 1;
    if (t->ndim == 1) {
      double value;
      HERD_LUA_CHECK(L, herd_tensor_get(t, &index, &value));
      if (t->dtype == HERD_I32 || t->dtype == HERD_U8)
        lua_pushinteger(L, (lua_Integer)value);
      else
        lua_pushnumber(L, value);
      return 1;
    }
    tensor_box *box = push_empty(L);
    HERD_LUA_CHECK(L, herd_tensor_select(&box->t, t, 0, index));
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

static int tensor_len(lua_State *L) {
  herd_tensor *t = check_tensor(L, 1);
  lua_pushinteger(L, t->ndim ? t->shape[0] : 0);
  return 1;
}

static int tensor_close(lua_State *L) {
  return tensor_gc(L);
}

int luaopen_herd_tensor_core(lua_State *L) {
  static const luaL_Reg methods[] = {{"shape", tensor_shape},
                                     {"dtype", tensor_dtype},
                                     {"numel", tensor_numel},
                                     {"dim", tensor_dim},
                                     {"is_contiguous", tensor_is_contiguous},
                                     {"get", tensor_get},
                                     {"set", tensor_set},
                                     {"flat", tensor_flat},
                                     {"_set_flat", tensor_set_flat},
                                     {"select", tensor_select},
                                     {"narrow", tensor_narrow},
                                     {"transpose", tensor_transpose},
                                     {"reshape", tensor_reshape},
                                     {"contiguous", tensor_contiguous},
                                     {"to", tensor_to},
                                     {"clone", tensor_clone},
                                     {"fill", tensor_fill},
                                     {"sum", tensor_sum},
                                     {"mean", tensor_mean},
                                     {"max", tensor_max},
                                     {"argmax", tensor_argmax},
                                     {"close", tensor_close},
                                     {NULL, NULL}};
  static const luaL_Reg metamethods[] = {
      {"__gc", tensor_gc},   {"__close", tensor_gc}, {"__len", tensor_len},
      {"__add", tensor_add}, {"__sub", tensor_sub},  {"__mul", tensor_mul},
      {"__div", tensor_div}, {"__unm", tensor_unm},  {NULL, NULL}};
  static const luaL_Reg functions[] = {{"new", core_new},
                                       {"random", core_random},
                                       {"save", core_save},
                                       {"load", core_load},
                                       {NULL, NULL}};
  luaL_newmetatable(L, TENSOR_TYPE);
  luaL_setfuncs(L, metamethods, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "methods");  // metatable.methods: Lua adds tostring, totable, ...
  lua_pushcclosure(L, tensor_index, 1);
  lua_setfield(L, -2, "__index");
  lua_newtable(L);
  luaL_setfuncs(L, functions, 0);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "metatable");
  return 1;
}
