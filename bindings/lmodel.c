// The `herd.model_core` module: Llama models as Lua userdata (lua/herd/model.lua adds the
// table-friendly layer: configs with defaults, batches from nested tables, generation options).
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "checkpoint.h"
#include "error.h"
#include "generate.h"
#include "host.h"
#include "model.h"
#include "tensor.h"

#define MODEL_TYPE "herd.Model"

typedef struct model_box {
  herd_model *model;
  int max_batch, max_seq;
} model_box;

static model_box *check_model(lua_State *L) {
  model_box *box = luaL_checkudata(L, 1, MODEL_TYPE);
  if (!box->model) luaL_error(L, "model is closed");
  return box;
}

static int model_gc(lua_State *L) {
  model_box *box = luaL_checkudata(L, 1, MODEL_TYPE);
  herd_model_free(box->model);
  box->model = NULL;
  return 0;
}

static model_box *push_model_box(lua_State *L, int max_batch, int max_seq) {
  model_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = (model_box){NULL, max_batch, max_seq};
  luaL_setmetatable(L, MODEL_TYPE);
  return box;
}

// Model memory is invisible to Lua's collector: tell it (see ltensor.c).
static void account(lua_State *L, herd_model *model) {
  size_t n;
  herd_model_param_buffer(model, &n);
  size_t kib = (4 * n * sizeof(float) + herd_model_activation_bytes(model)) / 1024;
  lua_gc(L, LUA_GCSTEP, (int)(kib > 1 << 20 ? 1 << 20 : kib));
}

// ---------------------------------------------------------------- configs

static int int_field(lua_State *L, int table, const char *name, int fallback, int required) {
  lua_getfield(L, table, name);
  int value = fallback;
  if (!lua_isnil(L, -1)) {
    int ok;
    value = (int)lua_tointegerx(L, -1, &ok);
    if (!ok) luaL_error(L, "config.%s must be an integer", name);
  } else if (required) {
    luaL_error(L, "config.%s is required", name);
  }
  lua_pop(L, 1);
  return value;
}

static float number_field(lua_State *L, int table, const char *name, float fallback) {
  lua_getfield(L, table, name);
  float value = fallback;
  if (!lua_isnil(L, -1)) {
    if (!lua_isnumber(L, -1)) luaL_error(L, "config.%s must be a number", name);
    value = (float)lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return value;
}

static int bool_field(lua_State *L, int table, const char *name, int fallback) {
  lua_getfield(L, table, name);
  int value = lua_isnil(L, -1) ? fallback : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return value;
}

// Unknown keys are errors: a typo must not silently fall back to a default.
static void check_known_fields(lua_State *L, int table, const char *const *known,
                               const char *what) {
  lua_pushnil(L);
  while (lua_next(L, table)) {
    lua_pop(L, 1);
    const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int found = 0;
    for (int i = 0; key && known[i] && !found; i++) found = strcmp(key, known[i]) == 0;
    if (!found) luaL_error(L, "unknown %s field '%s'", what, key ? key : luaL_typename(L, -1));
  }
}

static herd_model_config check_config(lua_State *L, int table) {
  static const char *const known[] = {"dim",        "n_layers",       "n_heads",     "n_kv_heads",
                                      "hidden_dim", "vocab_size",     "max_seq_len", "norm_eps",
                                      "rope_theta", "tie_embeddings", "lm_head",     "scalar_head",
                                      NULL};
  luaL_checktype(L, table, LUA_TTABLE);
  check_known_fields(L, table, known, "config");
  herd_model_config config = {0};
  config.dim = int_field(L, table, "dim", 0, 1);
  config.n_layers = int_field(L, table, "n_layers", 0, 1);
  config.n_heads = int_field(L, table, "n_heads", 0, 1);
  config.n_kv_heads = int_field(L, table, "n_kv_heads", config.n_heads, 0);
  config.hidden_dim = int_field(L, table, "hidden_dim", 0, 1);
  config.vocab_size = int_field(L, table, "vocab_size", 0, 1);
  config.max_seq_len = int_field(L, table, "max_seq_len", 0, 1);
  config.norm_eps = number_field(L, table, "norm_eps", 1e-5f);
  config.rope_theta = number_field(L, table, "rope_theta", 10000.0f);
  config.tie_embeddings = bool_field(L, table, "tie_embeddings", 0);
  config.lm_head = bool_field(L, table, "lm_head", 1);
  config.scalar_head = bool_field(L, table, "scalar_head", 0);
  return config;
}

static void push_config(lua_State *L, const herd_model_config *c) {
  lua_createtable(L, 0, 12);
  const struct {
    const char *name;
    int value;
  } ints[] = {{"dim", c->dim},
              {"n_layers", c->n_layers},
              {"n_heads", c->n_heads},
              {"n_kv_heads", c->n_kv_heads},
              {"hidden_dim", c->hidden_dim},
              {"vocab_size", c->vocab_size},
              {"max_seq_len", c->max_seq_len}};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    lua_pushinteger(L, ints[i].value);
    lua_setfield(L, -2, ints[i].name);
  }
  lua_pushnumber(L, c->norm_eps);
  lua_setfield(L, -2, "norm_eps");
  lua_pushnumber(L, c->rope_theta);
  lua_setfield(L, -2, "rope_theta");
  lua_pushboolean(L, c->tie_embeddings);
  lua_setfield(L, -2, "tie_embeddings");
  lua_pushboolean(L, c->lm_head);
  lua_setfield(L, -2, "lm_head");
  lua_pushboolean(L, c->scalar_head);
  lua_setfield(L, -2, "scalar_head");
}

// The backend named by the string at `index` ("cpu" when absent).
static const herd_backend *check_backend(lua_State *L, int index) {
  const herd_backend *backend;
  if (herd_backend_find(luaL_optstring(L, index, "cpu"), &backend)) herd_lua_error(L);
  return backend;
}

// core.new(config, max_batch, max_seq, seed, device = "cpu")
static int core_new(lua_State *L) {
  herd_model_config config = check_config(L, 1);
  int max_batch = (int)luaL_checkinteger(L, 2), max_seq = (int)luaL_checkinteger(L, 3);
  lua_Integer seed = luaL_checkinteger(L, 4);
  const herd_backend *backend = check_backend(L, 5);
  model_box *box = push_model_box(L, max_batch, max_seq);
  HERD_LUA_CHECK(L, herd_model_new_on(&box->model, &config, max_batch, max_seq, backend));
  HERD_LUA_CHECK(L, herd_model_init(box->model, (uint64_t)seed));
  account(L, box->model);
  return 1;
}

// m:to(device) -> m, moved (parameters, gradients, moments, step count, frozen parts)
static int model_to(lua_State *L) {
  model_box *box = check_model(L);
  luaL_checkstring(L, 2);
  const herd_backend *backend = check_backend(L, 2);
  HERD_LUA_CHECK(L, herd_model_to(box->model, backend, 0, 0));
  lua_settop(L, 1);
  return 1;
}

// m:set_precision("bf16" | "f32") -> m (matmuls in bf16 with f32 master weights, or all f32)
static int model_set_precision(lua_State *L) {
  static const char *const names[] = {"f32", "bf16", NULL};
  model_box *box = check_model(L);
  int bf16 = luaL_checkoption(L, 2, NULL, names) == 1;
  HERD_LUA_CHECK(L, herd_model_set_precision(box->model, bf16 ? HERD_BF16 : HERD_F32));
  lua_settop(L, 1);
  return 1;
}

static int model_precision(lua_State *L) {
  lua_pushstring(L, herd_dtype_name(herd_model_precision(check_model(L)->model)));
  return 1;
}

static int model_device(lua_State *L) {
  lua_pushstring(L, herd_model_device(check_model(L)->model));
  return 1;
}

// core.load(dir, max_batch, max_seq, head = "lm" | "scalar", seed, score_scale = 1,
//           device = "cpu") -> model, train_state table
// or nil. "lm" keeps the heads the checkpoint names; "scalar" makes a reward model.
static int core_load(lua_State *L) {
  static const char *const heads[] = {"lm", "scalar", NULL};
  const char *dir = luaL_checkstring(L, 1);
  herd_checkpoint_load_options opts = {
      (int)luaL_checkinteger(L, 2), (int)luaL_checkinteger(L, 3),
      luaL_checkoption(L, 4, "lm", heads) == 1 ? HERD_HEAD_SCALAR : HERD_HEAD_AS_SAVED,
      (uint64_t)luaL_optinteger(L, 5, 0), (float)luaL_optnumber(L, 6, 1.0)};
  const herd_backend *backend = check_backend(L, 7);
  if (opts.max_seq <= 0) {  // default: the checkpoint's own max_position_embeddings
    herd_model_config config;
    HERD_LUA_CHECK(L, herd_checkpoint_read_config(dir, &config));
    opts.max_seq = config.max_seq_len;
  }
  int max_batch = opts.max_batch, max_seq = opts.max_seq;
  // For another device the checkpoint is read into host memory with the smallest activations,
  // then moved with the activations asked for.
  if (backend != &herd_cpu_backend) opts.max_batch = opts.max_seq = 1;
  model_box *box = push_model_box(L, max_batch, max_seq);
  herd_train_state state;
  int has_state = 0;
  HERD_LUA_CHECK(L, herd_checkpoint_load_opts(dir, &box->model, &opts, &state, &has_state));
  HERD_LUA_CHECK(L, herd_model_to(box->model, backend, max_batch, max_seq));
  account(L, box->model);
  if (!has_state) {
    lua_pushnil(L);
    return 2;
  }
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, state.step);
  lua_setfield(L, -2, "step");
  lua_pushinteger(L, (lua_Integer)state.rng_seed);
  lua_setfield(L, -2, "rng_seed");
  lua_pushinteger(L, (lua_Integer)state.rng_offset);
  lua_setfield(L, -2, "rng_offset");
  lua_pushinteger(L, state.data_position);
  lua_setfield(L, -2, "data_position");
  return 2;
}

// m:save(dir, state) with state = nil (weights only) or {step=, rng_seed=, rng_offset=,
// data_position=} (training state too)
static int model_save(lua_State *L) {
  model_box *box = check_model(L);
  const char *dir = luaL_checkstring(L, 2);
  if (lua_isnoneornil(L, 3)) {
    HERD_LUA_CHECK(L, herd_checkpoint_save(dir, box->model, NULL));
    return 0;
  }
  luaL_checktype(L, 3, LUA_TTABLE);
  herd_train_state state = {herd_model_step_count(box->model), 0, 0, 0};
  state.rng_seed = (uint64_t)int_field(L, 3, "rng_seed", 0, 0);
  state.rng_offset = (uint64_t)int_field(L, 3, "rng_offset", 0, 0);
  state.data_position = int_field(L, 3, "data_position", 0, 0);
  HERD_LUA_CHECK(L, herd_checkpoint_save(dir, box->model, &state));
  return 0;
}

// ---------------------------------------------------------------- batches

// An (B,T) tensor field of the batch table with the given dtype, or NULL when absent.
static const void *batch_tensor(lua_State *L, int table, const char *field, herd_dtype dtype,
                                int *b, int *t) {
  lua_getfield(L, table, field);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  const herd_tensor *tensor = herd_lua_totensor(L, -1);
  if (!tensor) luaL_error(L, "batch.%s must be a tensor", field);
  if (tensor->dtype != dtype || !herd_tensor_is_contiguous(tensor))
    luaL_error(L, "batch.%s must be a contiguous %s tensor (got %s)", field, herd_dtype_name(dtype),
               herd_dtype_name(tensor->dtype));
  if (tensor->ndim != 2 && *b >= 0) luaL_error(L, "batch.%s must be (B,T)", field);
  if (*b < 0) {
    if (tensor->ndim != 2) luaL_error(L, "batch.%s must be (B,T)", field);
    *b = (int)tensor->shape[0], *t = (int)tensor->shape[1];
  } else if (tensor->shape[0] != *b || tensor->shape[1] != *t) {
    luaL_error(L, "batch.%s has shape (%d,%d), tokens are (%d,%d)", field, (int)tensor->shape[0],
               (int)tensor->shape[1], *b, *t);
  }
  lua_pop(L, 1);  // the batch table keeps the tensor alive
  return herd_tensor_data(tensor);
}

static const void *vector_tensor(lua_State *L, int table, const char *field, herd_dtype dtype,
                                 int *n) {
  lua_getfield(L, table, field);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  const herd_tensor *tensor = herd_lua_totensor(L, -1);
  if (!tensor || tensor->dtype != dtype || tensor->ndim != 1 || !herd_tensor_is_contiguous(tensor))
    luaL_error(L, "batch.%s must be a 1-dim %s tensor", field, herd_dtype_name(dtype));
  if (*n >= 0 && tensor->shape[0] != *n)
    luaL_error(L, "batch.%s has %d entries, expected %d", field, (int)tensor->shape[0], *n);
  *n = (int)tensor->shape[0];
  lua_pop(L, 1);
  return herd_tensor_data(tensor);
}

static herd_batch check_batch(lua_State *L, int table) {
  static const char *const known[] = {"tokens",          "positions", "segments",
                                      "targets",         "weights",   "loss_scale",
                                      "score_positions", "dscores",   NULL};
  luaL_checktype(L, table, LUA_TTABLE);
  check_known_fields(L, table, known, "batch");
  herd_batch batch = {0};
  int b = -1, t = -1;
  batch.tokens = batch_tensor(L, table, "tokens", HERD_I32, &b, &t);
  if (!batch.tokens) luaL_error(L, "batch.tokens is required");
  batch.b = b, batch.t = t;
  batch.positions = batch_tensor(L, table, "positions", HERD_I32, &b, &t);
  batch.segments = batch_tensor(L, table, "segments", HERD_I32, &b, &t);
  batch.targets = batch_tensor(L, table, "targets", HERD_I32, &b, &t);
  batch.weights = batch_tensor(L, table, "weights", HERD_F32, &b, &t);
  batch.loss_scale = number_field(L, table, "loss_scale", 0);
  int n = -1;
  batch.score_positions = vector_tensor(L, table, "score_positions", HERD_I32, &n);
  batch.n_scores = n < 0 ? 0 : n;
  if (batch.score_positions) batch.dscores = vector_tensor(L, table, "dscores", HERD_F32, &n);
  return batch;
}

// ---------------------------------------------------------------- training

// Runs `pass` (herd_model_forward or herd_model_forward_backward) over the batch at index 2 and
// pushes its loss (nil without targets).
static int push_loss_of(lua_State *L, int (*pass)(herd_model *, const herd_batch *, float *)) {
  model_box *box = check_model(L);
  herd_batch batch = check_batch(L, 2);
  float loss = 0;
  HERD_LUA_CHECK(L, pass(box->model, &batch, &loss));
  if (batch.targets)
    lua_pushnumber(L, loss);
  else
    lua_pushnil(L);
  return 1;
}

// m:forward(batch) -> loss (nil without targets)
static int model_forward(lua_State *L) {
  return push_loss_of(L, herd_model_forward);
}

// m:forward_backward(batch) -> loss: herd_model_forward_backward (gradients accumulate)
static int model_forward_backward(lua_State *L) {
  return push_loss_of(L, herd_model_forward_backward);
}

static int model_backward(lua_State *L) {
  model_box *box = check_model(L);
  herd_batch batch = check_batch(L, 2);
  HERD_LUA_CHECK(L, herd_model_backward(box->model, &batch));
  return 0;
}

static int model_zero_grad(lua_State *L) {
  herd_model_zero_grad(check_model(L)->model);
  return 0;
}

static herd_adamw check_adamw(lua_State *L, int table) {
  static const char *const known[] = {"lr",           "beta1",     "beta2", "eps",
                                      "weight_decay", "grad_clip", NULL};
  luaL_checktype(L, table, LUA_TTABLE);
  check_known_fields(L, table, known, "optimizer");
  herd_adamw opt;
  lua_getfield(L, table, "lr");
  if (!lua_isnumber(L, -1)) luaL_error(L, "optimizer lr is required (a number)");
  lua_pop(L, 1);
  opt.lr = number_field(L, table, "lr", 0);
  opt.beta1 = number_field(L, table, "beta1", 0.9f);
  opt.beta2 = number_field(L, table, "beta2", 0.95f);  // Llama 2 (section 2.2)
  opt.eps = number_field(L, table, "eps", 1e-5f);
  opt.weight_decay = number_field(L, table, "weight_decay", 0.1f);
  opt.grad_clip = number_field(L, table, "grad_clip", 1.0f);
  return opt;
}

// m:update{lr=, ...} -> grad norm (before clipping)
static int model_update(lua_State *L) {
  model_box *box = check_model(L);
  herd_adamw opt = check_adamw(L, 2);
  float grad_norm = 0;
  HERD_LUA_CHECK(L, herd_model_step(box->model, &opt, &grad_norm));
  lua_pushnumber(L, grad_norm);
  return 1;
}

static int model_logprobs(lua_State *L) {
  model_box *box = check_model(L);
  herd_batch batch = check_batch(L, 2);
  if (!batch.targets) return luaL_error(L, "logprobs needs batch.targets");
  herd_tensor **out = herd_lua_newtensor(L);
  int64_t shape[2] = {batch.b, batch.t};
  HERD_LUA_CHECK(L, herd_tensor_new(out, HERD_F32, HERD_CPU, 2, shape));
  HERD_LUA_CHECK(L, herd_model_logprobs(box->model, &batch, herd_tensor_data(*out)));
  return 1;
}

// m:logits(b, t) -> a copy of the last forward's logits as a (B,T,V) tensor
static int model_logits(lua_State *L) {
  model_box *box = check_model(L);
  int b = (int)luaL_checkinteger(L, 2), t = (int)luaL_checkinteger(L, 3);
  if (b < 1 || t < 1 || b > box->max_batch || t > box->max_seq)
    return luaL_error(L, "logits: (%d,%d) is outside the model's (%d,%d)", b, t, box->max_batch,
                      box->max_seq);
  const herd_model_config *config = herd_model_get_config(box->model);
  herd_tensor **out = herd_lua_newtensor(L);
  int64_t shape[3] = {b, t, config->vocab_size};
  HERD_LUA_CHECK(L, herd_tensor_new(out, HERD_F32, HERD_CPU, 3, shape));
  HERD_LUA_CHECK(L, herd_model_read(box->model, HERD_MODEL_LOGITS, herd_tensor_data(*out),
                                    (size_t)b * t * config->vocab_size));
  return 1;
}

// m:_scores(n) -> the last forward's n scores as a table
static int model_scores(lua_State *L) {
  model_box *box = check_model(L);
  int n = (int)luaL_checkinteger(L, 2);
  if (n < 0) return luaL_error(L, "scores: n = %d", n);
  float *scores = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof(float), 0);  // collected
  HERD_LUA_CHECK(L, herd_model_read(box->model, HERD_MODEL_SCORES, scores, (size_t)n));
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushnumber(L, scores[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int model_set_trainable(lua_State *L) {
  model_box *box = check_model(L);
  herd_model_set_trainable(box->model, lua_toboolean(L, 2), lua_toboolean(L, 3),
                           lua_toboolean(L, 4));
  return 0;
}

static int model_config(lua_State *L) {
  push_config(L, herd_model_get_config(check_model(L)->model));
  return 1;
}

// core.lr_cosine(step, max_lr, warmup, total, floor)
static int core_lr_cosine(lua_State *L) {
  lua_pushnumber(L, herd_lr_cosine(luaL_checkinteger(L, 1), (float)luaL_checknumber(L, 2),
                                   luaL_checkinteger(L, 3), luaL_checkinteger(L, 4),
                                   (float)luaL_checknumber(L, 5)));
  return 1;
}

// m:capacity() -> max rows, max tokens per row of one forward (what the model was made for)
static int model_capacity(lua_State *L) {
  model_box *box = check_model(L);
  lua_pushinteger(L, box->max_batch);
  lua_pushinteger(L, box->max_seq);
  return 2;
}

// m:params() -> count, bytes (parameters only), activation bytes
static int model_params(lua_State *L) {
  model_box *box = check_model(L);
  size_t n;
  herd_model_param_buffer(box->model, &n);
  lua_pushinteger(L, (lua_Integer)n);
  lua_pushinteger(L, (lua_Integer)(n * sizeof(float)));
  lua_pushinteger(L, (lua_Integer)herd_model_activation_bytes(box->model));
  return 3;
}

static int model_step_count(lua_State *L) {
  lua_pushinteger(L, herd_model_step_count(check_model(L)->model));
  return 1;
}

// ---------------------------------------------------------------- generation

typedef struct generation_box {
  herd_generation generation;
  int32_t **prompts;
  int *lengths;
  uint64_t *seeds;
  int32_t *stop;
  int n_prompts;
} generation_box;

// Everything a generation call allocates hangs off one userdata, so a Lua error at any point
// (a bad prompt, out of memory) frees it at the next collection; success frees it at once.
static void free_generation_box(generation_box *box) {
  herd_generation_free(&box->generation);
  for (int i = 0; box->prompts && i < box->n_prompts; i++) free(box->prompts[i]);
  free(box->prompts), free(box->lengths), free(box->seeds), free(box->stop);
  memset(box, 0, sizeof *box);
}

static int generation_gc(lua_State *L) {
  free_generation_box(lua_touserdata(L, 1));
  return 0;
}

static int32_t *int_array(lua_State *L, int index, int *n, const char *what) {
  luaL_checktype(L, index, LUA_TTABLE);
  *n = (int)luaL_len(L, index);
  int32_t *values = malloc(sizeof *values * (*n ? *n : 1));
  if (!values) luaL_error(L, "out of memory");
  for (int i = 0; i < *n; i++) {
    lua_geti(L, index, i + 1);
    int ok;
    values[i] = (int32_t)lua_tointegerx(L, -1, &ok);
    lua_pop(L, 1);
    if (!ok) {
      free(values);
      luaL_error(L, "%s[%d] must be an integer", what, i + 1);
    }
  }
  return values;
}

// core generate: m:_generate(prompts, k, temperature, top_p, top_k, max_new, seeds, stop)
// -> {{tokens = {...}, logprobs = {...}}, ...} in prompt-major order
static int model_generate(lua_State *L) {
  model_box *model = check_model(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  int k = (int)luaL_checkinteger(L, 3);
  herd_sampling sampling = {(float)luaL_checknumber(L, 4),
                            (float)luaL_checknumber(L, 5),
                            (int)luaL_checkinteger(L, 6),
                            (int)luaL_checkinteger(L, 7),
                            NULL,
                            0};
  generation_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  memset(box, 0, sizeof *box);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, generation_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  int n_prompts = (int)luaL_len(L, 2);
  box->prompts = calloc(n_prompts ? n_prompts : 1, sizeof *box->prompts);
  box->lengths = calloc(n_prompts ? n_prompts : 1, sizeof *box->lengths);
  if (!box->prompts || !box->lengths) return luaL_error(L, "out of memory");
  for (int p = 0; p < n_prompts; p++) {
    lua_geti(L, 2, p + 1);
    box->prompts[p] = int_array(L, lua_gettop(L), &box->lengths[p], "prompt");
    box->n_prompts = p + 1;
    lua_pop(L, 1);
  }
  luaL_checktype(L, 8, LUA_TTABLE);
  int n_sequences = n_prompts * k;
  if ((int)luaL_len(L, 8) != n_sequences)
    return luaL_error(L, "%d seeds for %d sequences", (int)luaL_len(L, 8), n_sequences);
  box->seeds = malloc(sizeof *box->seeds * (size_t)(n_sequences ? n_sequences : 1));
  if (!box->seeds) return luaL_error(L, "out of memory");
  for (int i = 0; i < n_sequences; i++) {
    lua_geti(L, 8, i + 1);
    int ok;
    box->seeds[i] = (uint64_t)lua_tointegerx(L, -1, &ok);
    lua_pop(L, 1);
    if (!ok) return luaL_error(L, "seeds[%d] must be an integer", i + 1);
  }
  if (!lua_isnoneornil(L, 9)) {
    box->stop = int_array(L, 9, &sampling.n_stop, "stop");
    sampling.stop_tokens = box->stop;
  }
  HERD_LUA_CHECK(L, herd_generate(model->model, n_prompts, (const int32_t *const *)box->prompts,
                                  box->lengths, k, &sampling, box->seeds, &box->generation));
  const herd_generation *g = &box->generation;
  lua_createtable(L, g->n, 0);
  for (int s = 0; s < g->n; s++) {
    lua_createtable(L, 0, 2);
    lua_createtable(L, g->lengths[s], 0);
    lua_createtable(L, g->lengths[s], 0);
    for (int i = 0; i < g->lengths[s]; i++) {
      lua_pushinteger(L, g->tokens[(size_t)s * g->max_new + i]);
      lua_rawseti(L, -3, i + 1);
      lua_pushnumber(L, g->logprobs[(size_t)s * g->max_new + i]);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -3, "logprobs");
    lua_setfield(L, -2, "tokens");
    lua_rawseti(L, -2, s + 1);
  }
  free_generation_box(box);
  return 1;
}

// ---------------------------------------------------------------- module

int luaopen_herd_model_core(lua_State *L) {
  static const luaL_Reg methods[] = {{"save", model_save},
                                     {"forward", model_forward},
                                     {"backward", model_backward},
                                     {"forward_backward", model_forward_backward},
                                     {"zero_grad", model_zero_grad},
                                     {"update", model_update},
                                     {"logprobs", model_logprobs},
                                     {"_logits", model_logits},
                                     {"_scores", model_scores},
                                     {"_set_trainable", model_set_trainable},
                                     {"config", model_config},
                                     {"params", model_params},
                                     {"capacity", model_capacity},
                                     {"step_count", model_step_count},
                                     {"_generate", model_generate},
                                     {"to", model_to},
                                     {"device", model_device},
                                     {"set_precision", model_set_precision},
                                     {"precision", model_precision},
                                     {"close", model_gc},
                                     {NULL, NULL}};
  static const luaL_Reg functions[] = {
      {"new", core_new}, {"load", core_load}, {"lr_cosine", core_lr_cosine}, {NULL, NULL}};
  herd_lua_newclass(L, MODEL_TYPE, model_gc, methods, functions);
  return 1;
}
