// Hugging Face checkpoints: config.json (LlamaConfig), model.safetensors or shards named by
// model.safetensors.index.json, and herd's training state beside them. See checkpoint.h and
// doc/checkpoints.md.
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "fileio.h"
#include "rng.h"
#include "safetensors.h"
#include "tensor.h"

#define CONFIG_FILE "config.json"
#define WEIGHTS_FILE "model.safetensors"
#define INDEX_FILE "model.safetensors.index.json"
#define STATE_TENSORS_FILE "training_state.safetensors"
#define STATE_JSON_FILE "training_state.json"
#define STATE_FORMAT "herd-training-state-1"

// ---------------------------------------------------------------- small helpers

static char *join_path(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *path = malloc(n);
  if (path) snprintf(path, n, "%s/%s", dir, name);
  return path;
}

static int file_exists(const char *dir, const char *name) {
  char *path = join_path(dir, name);
  if (!path) return 0;
  struct stat st;
  int exists = stat(path, &st) == 0;
  free(path);
  return exists;
}

// Reads a JSON file; errors name the file, line and column.
static int load_json(const char *dir, const char *name, json_t **out) {
  *out = NULL;
  char *path = join_path(dir, name);
  if (!path) return herd_seterr(HERD_ENOMEM, "%s: out of memory", name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    int err = errno;
    int status = herd_seterr(err == ENOENT ? HERD_ENOTFOUND : HERD_EIO, "%s: cannot open: %s", path,
                             strerror(err));
    free(path);
    return status;
  }
  json_error_t error;
  json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &error);
  fclose(f);
  if (!root) {
    int status = herd_seterr(HERD_ECORRUPT, "%s: not valid JSON: %s (line %d, column %d)", path,
                             error.text, error.line, error.column);
    free(path);
    return status;
  }
  free(path);
  if (!json_is_object(root)) {
    json_decref(root);
    return herd_seterr(HERD_ECORRUPT, "%s: the top level is not a JSON object", name);
  }
  *out = root;
  return 0;
}

// fsync of a directory, so that renames inside it are durable.
static int sync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return herd_seterr(HERD_EIO, "%s: cannot open directory: %s", dir, strerror(errno));
  int status = 0;
  if (fsync(fd) && errno != EINVAL && errno != ENOTSUP)
    status = herd_seterr(HERD_EIO, "%s: syncing the directory: %s", dir, strerror(errno));
  close(fd);
  return status;
}

// Writes `root` to dir/name atomically (fileio.h).
static int save_json(const char *dir, const char *name, const json_t *root) {
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
  char *path = join_path(dir, name);
  int status = text && path ? herd_write_text_atomic(path, text)
                            : herd_seterr(HERD_ENOMEM, "%s: out of memory", name);
  free(path);
  free(text);
  return status;
}

// mkdir -p
static int make_dirs(const char *dir) {
  char *path = strdup(dir);
  if (!path) return herd_seterr(HERD_ENOMEM, "%s: out of memory", dir);
  int status = 0;
  for (char *p = path + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char saved = *p;
    *p = '\0';
    if (mkdir(path, 0755) && errno != EEXIST) {
      status =
          herd_seterr(HERD_EIO, "%s: cannot create directory %s: %s", dir, path, strerror(errno));
      break;
    }
    *p = saved;
    if (saved == '\0') break;
  }
  if (!status) {
    struct stat st;
    if (stat(path, &st) || !S_ISDIR(st.st_mode))
      status = herd_seterr(HERD_EIO, "%s: not a directory", dir);
  }
  free(path);
  return status;
}

// The shortest decimal that reads back as the same float (1e-06, not 9.99999997e-07).
static json_t *float_json(float value) {
  char buf[32];
  for (int digits = 1; digits <= 9; digits++) {
    snprintf(buf, sizeof buf, "%.*g", digits, (double)value);
    if (strtof(buf, NULL) == value) break;
  }
  return json_real(strtod(buf, NULL));
}

// ---------------------------------------------------------------- config.json

// Fields herd reads (with their meaning) or checks, then fields it ignores because they do not
// change the computation herd does (ids of special tokens, dtype on disk, caching, versions...).
static const char *const known_fields[] = {
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "rms_norm_eps", "rope_theta", "vocab_size", "max_position_embeddings",
    "tie_word_embeddings", "architectures", "model_type",
    // checked: must have the value Llama 2 has
    "hidden_act", "pretraining_tp", "attention_bias", "mlp_bias", "head_dim", "rope_scaling",
    "rope_parameters", "attention_dropout", "num_labels", "id2label", "label2id",
    // ignored
    "torch_dtype", "dtype", "bos_token_id", "eos_token_id", "pad_token_id", "transformers_version",
    "initializer_range", "use_cache", "_name_or_path", "problem_type", "tokenizer_class",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", NULL};

typedef struct config_reader {
  const char *origin;  // "DIR/config.json"
  json_t *root;
} config_reader;

static int field_int(const config_reader *r, const char *key, int required, int fallback,
                     int *out) {
  json_t *v = json_object_get(r->root, key);
  if (!v || json_is_null(v)) {
    if (required) return herd_seterr(HERD_ECORRUPT, "%s: missing field '%s'", r->origin, key);
    *out = fallback;
    return 0;
  }
  if (!json_is_integer(v))
    return herd_seterr(HERD_ECORRUPT, "%s: field '%s' is not an integer", r->origin, key);
  json_int_t i = json_integer_value(v);
  if (i <= 0 || i > INT_MAX)
    return herd_seterr(HERD_ECORRUPT, "%s: field '%s' is %lld; it must be in [1, %d]", r->origin,
                       key, (long long)i, INT_MAX);
  *out = (int)i;
  return 0;
}

static int field_float(const config_reader *r, const char *key, double fallback, float *out) {
  json_t *v = json_object_get(r->root, key);
  if (!v || json_is_null(v)) {
    *out = (float)fallback;
    return 0;
  }
  if (!json_is_number(v))
    return herd_seterr(HERD_ECORRUPT, "%s: field '%s' is not a number", r->origin, key);
  double d = json_number_value(v);
  if (!(d > 0) || d > 1e30)
    return herd_seterr(HERD_ECORRUPT, "%s: field '%s' is %g; it must be positive", r->origin, key,
                       d);
  *out = (float)d;
  return 0;
}

static int field_bool(const config_reader *r, const char *key, int fallback, int *out) {
  json_t *v = json_object_get(r->root, key);
  if (!v || json_is_null(v)) {
    *out = fallback;
    return 0;
  }
  if (!json_is_boolean(v))
    return herd_seterr(HERD_ECORRUPT, "%s: field '%s' is not true or false", r->origin, key);
  *out = json_is_true(v);
  return 0;
}

// A field that, when present, must hold a given value (herd implements only that variant).
static int expect_string(const config_reader *r, const char *key, const char *want,
                         const char *why) {
  json_t *v = json_object_get(r->root, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0) {
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    int status = herd_seterr(HERD_EINVAL, "%s: field '%s' is %.60s; herd supports only \"%s\" (%s)",
                             r->origin, key, text ? text : "?", want, why);
    free(text);
    return status;
  }
  return 0;
}

static int expect_false(const config_reader *r, const char *key, const char *why) {
  json_t *v = json_object_get(r->root, key);
  if (!v || json_is_null(v) || json_is_false(v)) return 0;
  return herd_seterr(HERD_EINVAL, "%s: field '%s' must be false: %s", r->origin, key, why);
}

static int expect_number(const config_reader *r, const char *key, double want, const char *why) {
  json_t *v = json_object_get(r->root, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_number(v) || json_number_value(v) != want)
    return herd_seterr(HERD_EINVAL, "%s: field '%s' must be %g: %s", r->origin, key, want, why);
  return 0;
}

static int read_architectures(const config_reader *r, herd_model_config *c) {
  json_t *v = json_object_get(r->root, "architectures");
  c->lm_head = 0;
  c->scalar_head = 0;
  if (!v || json_is_null(v)) {  // transformers' AutoModelForCausalLM does not need it either
    c->lm_head = 1;
    return 0;
  }
  if (!json_is_array(v) || json_array_size(v) == 0)
    return herd_seterr(HERD_ECORRUPT, "%s: field 'architectures' is not a non-empty array",
                       r->origin);
  size_t i;
  json_t *item;
  json_array_foreach(v, i, item) {
    const char *name = json_string_value(item);
    if (!name)
      return herd_seterr(HERD_ECORRUPT, "%s: architectures[%zu] is not a string", r->origin, i);
    if (!strcmp(name, "LlamaForCausalLM"))
      c->lm_head = 1;
    else if (!strcmp(name, "LlamaForSequenceClassification"))
      c->scalar_head = 1;
    else
      return herd_seterr(HERD_EINVAL,
                         "%s: architecture '%.80s' is not supported (herd reads LlamaForCausalLM "
                         "and LlamaForSequenceClassification)",
                         r->origin, name);
  }
  if (c->scalar_head) {
    int labels = 1;
    json_t *id2label = json_object_get(r->root, "id2label");
    if (json_is_object(id2label)) labels = (int)json_object_size(id2label);
    json_t *n = json_object_get(r->root, "num_labels");
    if (json_is_integer(n)) labels = (int)json_integer_value(n);
    if (labels != 1)
      return herd_seterr(HERD_EINVAL,
                         "%s: LlamaForSequenceClassification with %d labels; herd's scalar head "
                         "has 1 (num_labels / id2label)",
                         r->origin, labels);
  }
  return 0;
}

static int read_rope(const config_reader *r, herd_model_config *c) {
  json_t *scaling = json_object_get(r->root, "rope_scaling");
  if (scaling && !json_is_null(scaling))
    return herd_seterr(HERD_EINVAL,
                       "%s: field 'rope_scaling' is set; herd implements only unscaled rotary "
                       "embeddings (rope_scaling: null)",
                       r->origin);
  int status = field_float(r, "rope_theta", 10000.0, &c->rope_theta);
  json_t *params = json_object_get(r->root, "rope_parameters");  // transformers >= 5
  if (status || !params || json_is_null(params)) return status;
  if (!json_is_object(params))
    return herd_seterr(HERD_ECORRUPT, "%s: field 'rope_parameters' is not an object", r->origin);
  const char *key;
  json_t *v;
  json_object_foreach(params, key, v) {
    if (!strcmp(key, "rope_type")) {
      if (!json_is_string(v) || strcmp(json_string_value(v), "default") != 0)
        return herd_seterr(HERD_EINVAL,
                           "%s: rope_parameters.rope_type is not \"default\"; herd implements "
                           "only unscaled rotary embeddings",
                           r->origin);
    } else if (!strcmp(key, "rope_theta")) {
      if (!json_is_number(v) || !(json_number_value(v) > 0))
        return herd_seterr(HERD_ECORRUPT, "%s: rope_parameters.rope_theta is not positive",
                           r->origin);
      c->rope_theta = (float)json_number_value(v);
    } else {
      return herd_seterr(HERD_EINVAL, "%s: unknown field 'rope_parameters.%.80s'", r->origin, key);
    }
  }
  return 0;
}

static int parse_config(const char *origin, json_t *root, herd_model_config *c) {
  config_reader r = {origin, root};
  memset(c, 0, sizeof *c);
  const char *key;
  json_t *value;
  json_object_foreach(root, key, value) {
    int known = 0;
    for (int i = 0; known_fields[i] && !known; i++) known = !strcmp(key, known_fields[i]);
    if (!known)
      return herd_seterr(HERD_EINVAL,
                         "%s: unknown field '%.80s' (herd reads LlamaConfig fields and refuses "
                         "what it does not implement)",
                         origin, key);
  }
  json_t *type = json_object_get(root, "model_type");
  if (!type) return herd_seterr(HERD_ECORRUPT, "%s: missing field 'model_type'", origin);
  if (!json_is_string(type) || strcmp(json_string_value(type), "llama") != 0) {
    char *text = json_dumps(type, JSON_ENCODE_ANY | JSON_COMPACT);
    int status = herd_seterr(HERD_EINVAL, "%s: model_type is %.60s; herd reads only \"llama\"",
                             origin, text ? text : "?");
    free(text);
    return status;
  }
  int status = 0;
  if (!status) status = field_int(&r, "hidden_size", 1, 0, &c->dim);
  if (!status) status = field_int(&r, "intermediate_size", 1, 0, &c->hidden_dim);
  if (!status) status = field_int(&r, "num_hidden_layers", 1, 0, &c->n_layers);
  if (!status) status = field_int(&r, "num_attention_heads", 1, 0, &c->n_heads);
  if (!status) status = field_int(&r, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads);
  if (!status) status = field_int(&r, "vocab_size", 1, 0, &c->vocab_size);
  if (!status) status = field_int(&r, "max_position_embeddings", 0, 2048, &c->max_seq_len);
  if (!status) status = field_float(&r, "rms_norm_eps", 1e-6, &c->norm_eps);
  if (!status) status = field_bool(&r, "tie_word_embeddings", 0, &c->tie_embeddings);
  if (!status) status = read_rope(&r, c);
  if (!status) status = read_architectures(&r, c);
  if (!status) status = expect_string(&r, "hidden_act", "silu", "SwiGLU uses SiLU");
  if (!status)
    status = expect_number(&r, "pretraining_tp", 1, "herd does not slice the projections");
  if (!status) status = expect_false(&r, "attention_bias", "herd's projections have no bias");
  if (!status) status = expect_false(&r, "mlp_bias", "herd's MLP has no bias");
  if (!status) status = expect_number(&r, "attention_dropout", 0, "herd has no dropout");
  if (status) return status;
  if (c->dim % c->n_heads)
    return herd_seterr(HERD_EINVAL,
                       "%s: hidden_size %d is not a multiple of num_attention_heads %d", origin,
                       c->dim, c->n_heads);
  if (c->n_heads % c->n_kv_heads)
    return herd_seterr(HERD_EINVAL,
                       "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                       origin, c->n_heads, c->n_kv_heads);
  json_t *head_dim = json_object_get(root, "head_dim");
  if (head_dim && !json_is_null(head_dim) &&
      (!json_is_integer(head_dim) || json_integer_value(head_dim) != c->dim / c->n_heads))
    return herd_seterr(HERD_EINVAL,
                       "%s: field 'head_dim' must equal hidden_size / num_attention_heads = %d",
                       origin, c->dim / c->n_heads);
  if (c->tie_embeddings && !c->lm_head) c->tie_embeddings = 0;  // nothing to tie to
  return 0;
}

int herd_checkpoint_read_config(const char *dir, herd_model_config *config) {
  if (!dir || !config) return herd_seterr(HERD_EINVAL, "checkpoint_read_config: NULL argument");
  json_t *root;
  int status = load_json(dir, CONFIG_FILE, &root);
  if (status) return status;
  char *origin = join_path(dir, CONFIG_FILE);
  if (!origin)
    status = herd_seterr(HERD_ENOMEM, "%s: out of memory", CONFIG_FILE);
  else
    status = parse_config(origin, root, config);
  free(origin);
  json_decref(root);
  return status;
}

// ---------------------------------------------------------------- the tensors a config implies

typedef struct expected {
  char name[96];
  float *data;  // into the parameter buffer
  int ndim;
  int64_t shape[2];
  int seen;      // found in a file
  int optional;  // lm_head.weight of a tied model: shape checked if present, values ignored
                 // (the embedding wins, as in transformers)
} expected;

static void add_expected(expected *e, int *n, const char *name, float *data, int ndim, int64_t d0,
                         int64_t d1) {
  expected *x = &e[(*n)++];
  memset(x, 0, sizeof *x);
  snprintf(x->name, sizeof x->name, "%s", name);
  x->data = data;
  x->ndim = ndim;
  x->shape[0] = d0;
  x->shape[1] = d1;
}

// Layer l's slice of a stacked (L, d0, d1) parameter (d1 == 0: a vector of d0).
static void layer_tensor(expected *e, int *n, int l, const char *suffix, float *stacked, int64_t d0,
                         int64_t d1) {
  char name[96];
  snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);
  size_t size = (size_t)(d1 ? d0 * d1 : d0);
  add_expected(e, n, name, stacked + (size_t)l * size, d1 ? 2 : 1, d0, d1);
}

// The HF names of every parameter, in buffer order; `*out` has room for 9 L + 5 entries.
static int expected_tensors(herd_model *model, expected **out, int *count) {
  const herd_model_config *c = herd_model_get_config(model);
  herd_model_params p;
  herd_model_param_slices(model, &p, NULL);
  int64_t C = c->dim, H = c->n_heads, KVH = c->n_kv_heads, D = c->dim / c->n_heads,
          F = c->hidden_dim, V = c->vocab_size;
  expected *e = calloc((size_t)c->n_layers * 9 + 5, sizeof *e);
  if (!e) return herd_seterr(HERD_ENOMEM, "checkpoint: out of memory");
  int n = 0;
  add_expected(e, &n, "model.embed_tokens.weight", p.embed, 2, V, C);
  for (int l = 0; l < c->n_layers; l++) {
    layer_tensor(e, &n, l, "input_layernorm.weight", p.attn_norm, C, 0);
    layer_tensor(e, &n, l, "self_attn.q_proj.weight", p.wq, H * D, C);
    layer_tensor(e, &n, l, "self_attn.k_proj.weight", p.wk, KVH * D, C);
    layer_tensor(e, &n, l, "self_attn.v_proj.weight", p.wv, KVH * D, C);
    layer_tensor(e, &n, l, "self_attn.o_proj.weight", p.wo, C, H * D);
    layer_tensor(e, &n, l, "post_attention_layernorm.weight", p.mlp_norm, C, 0);
    layer_tensor(e, &n, l, "mlp.gate_proj.weight", p.w_gate, F, C);
    layer_tensor(e, &n, l, "mlp.up_proj.weight", p.w_up, F, C);
    layer_tensor(e, &n, l, "mlp.down_proj.weight", p.w_down, C, F);
  }
  add_expected(e, &n, "model.norm.weight", p.final_norm, 1, C, 0);
  if (c->lm_head && p.lm_head) {
    add_expected(e, &n, "lm_head.weight", p.lm_head, 2, V, C);
    if (c->tie_embeddings) e[n - 1].optional = 1;
  }
  if (c->scalar_head && p.score) add_expected(e, &n, "score.weight", p.score, 2, 1, C);
  *out = e;
  *count = n;
  return 0;
}

// The 1-D slices above were given (d0, 0): fix their element count.
static int64_t expected_numel(const expected *x) {
  return x->ndim == 1 ? x->shape[0] : x->shape[0] * x->shape[1];
}

static const char *shape_text(char *buf, size_t size, int ndim, const int64_t *shape) {
  size_t used = (size_t)snprintf(buf, size, "[");
  for (int i = 0; i < ndim && used < size; i++)
    used += (size_t)snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (used < size) snprintf(buf + used, size - used, "]");
  return buf;
}

// Copies tensor `index` of `file` (named `origin` in errors) into x, converting to f32.
static int read_tensor(const herd_safetensors *file, int index, const char *origin, expected *x) {
  herd_tensor *t;
  int status = herd_safetensors_tensor(file, index, &t);
  if (status) return status;
  int same = t->ndim == x->ndim;
  for (int i = 0; same && i < t->ndim; i++) same = t->shape[i] == x->shape[i];
  if (!same) {
    char got[64], want[64];
    status = herd_seterr(HERD_ECORRUPT, "%s: tensor '%s' has shape %s, config.json says %s", origin,
                         x->name, shape_text(got, sizeof got, t->ndim, t->shape),
                         shape_text(want, sizeof want, x->ndim, x->shape));
  } else if (t->dtype != HERD_F32 && t->dtype != HERD_BF16 && t->dtype != HERD_F16) {
    status = herd_seterr(HERD_ECORRUPT, "%s: tensor '%s' is %s; herd reads f32, bf16 and f16",
                         origin, x->name, herd_dtype_name(t->dtype));
  } else if (!x->optional) {
    int64_t n = expected_numel(x);
    const uint8_t *src = herd_tensor_data(t);
    if (t->dtype == HERD_F32) {
      memcpy(x->data, src, (size_t)n * sizeof(float));
    } else {
      int bf16 = t->dtype == HERD_BF16;
#pragma omp parallel for schedule(static) if (n > (1 << 20))
      for (int64_t i = 0; i < n; i++) {
        uint16_t bits;
        memcpy(&bits, src + 2 * i, 2);  // offsets in a file need not be aligned
        x->data[i] = bf16 ? herd_bf16_to_f32(bits) : herd_f16_to_f32(bits);
      }
    }
  }
  herd_tensor_free(t);
  return status;
}

// Rotary inverse frequencies that older transformers versions saved as buffers: derived from
// rope_theta, not parameters.
static int is_derived_buffer(const char *name) {
  const char *suffix = ".self_attn.rotary_emb.inv_freq";
  size_t n = strlen(name), s = strlen(suffix);
  return n > s && !strncmp(name, "model.layers.", 13) && !strcmp(name + n - s, suffix);
}

static expected *find_expected(expected *e, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (!strcmp(e[i].name, name)) return &e[i];
  return NULL;
}

// Reads every tensor of one safetensors file into the expected slots.
static int read_weights_file(const char *dir, const char *file_name, expected *e, int n) {
  char *path = join_path(dir, file_name);
  if (!path) return herd_seterr(HERD_ENOMEM, "%s: out of memory", file_name);
  herd_safetensors *file;
  int status = herd_safetensors_open(&file, path);
  if (status) {
    free(path);
    return status;
  }
  for (int i = 0; i < herd_safetensors_count(file) && !status; i++) {
    const char *name = herd_safetensors_name(file, i);
    expected *x = find_expected(e, n, name);
    if (!x) {
      if (is_derived_buffer(name)) continue;
      status = herd_seterr(HERD_ECORRUPT,
                           "%s: unexpected tensor '%.80s' (not a parameter of the model "
                           "config.json describes)",
                           path, name);
    } else if (x->seen) {
      status =
          herd_seterr(HERD_ECORRUPT, "%s: tensor '%s' appears in more than one file", path, name);
    } else {
      x->seen = 1;
      status = read_tensor(file, i, path, x);
    }
  }
  herd_safetensors_close(file);
  free(path);
  return status;
}

// A shard name from the index: a plain file name inside the directory.
static int check_shard_name(const char *origin, const char *tensor, const char *shard) {
  if (!shard)
    return herd_seterr(HERD_ECORRUPT, "%s: weight_map['%.80s'] is not a string", origin, tensor);
  if (!shard[0] || strchr(shard, '/') || !strcmp(shard, ".") || !strcmp(shard, ".."))
    return herd_seterr(HERD_ECORRUPT,
                       "%s: weight_map['%.80s'] names '%.80s', not a file in the "
                       "checkpoint directory",
                       origin, tensor, shard);
  return 0;
}

static int read_sharded(const char *dir, expected *e, int n) {
  json_t *index;
  int status = load_json(dir, INDEX_FILE, &index);
  if (status) return status;
  char *origin = join_path(dir, INDEX_FILE);
  json_t *map = json_object_get(index, "weight_map");
  json_t *shards = json_array();
  if (!origin || !shards) {
    status = herd_seterr(HERD_ENOMEM, "%s: out of memory", INDEX_FILE);
  } else if (!json_is_object(map)) {
    status = herd_seterr(HERD_ECORRUPT, "%s: missing object 'weight_map'", origin);
  } else {
    const char *tensor;
    json_t *v;
    json_object_foreach(map, tensor, v) {
      const char *shard = json_string_value(v);
      status = check_shard_name(origin, tensor, shard);
      if (status) break;
      if (!find_expected(e, n, tensor) && !is_derived_buffer(tensor)) {
        status = herd_seterr(HERD_ECORRUPT,
                             "%s: unexpected tensor '%.80s' (not a parameter of the model "
                             "config.json describes)",
                             origin, tensor);
        break;
      }
      int listed = 0;
      for (size_t i = 0; i < json_array_size(shards) && !listed; i++)
        listed = !strcmp(json_string_value(json_array_get(shards, i)), shard);
      if (!listed) json_array_append_new(shards, json_string(shard));
    }
    for (size_t i = 0; i < json_array_size(shards) && !status; i++)
      status = read_weights_file(dir, json_string_value(json_array_get(shards, i)), e, n);
    // Everything the index promised must have come from the shard it names.
    for (int i = 0; i < n && !status; i++) {
      json_t *where = json_object_get(map, e[i].name);
      if (e[i].seen && !where)
        status = herd_seterr(HERD_ECORRUPT, "%s: tensor '%s' is in a shard but not in weight_map",
                             origin, e[i].name);
      else if (!e[i].seen && where)
        status = herd_seterr(HERD_ECORRUPT, "%s/%s: missing tensor '%s' (weight_map puts it there)",
                             dir, json_string_value(where), e[i].name);
    }
  }
  json_decref(shards);
  free(origin);
  json_decref(index);
  return status;
}

// How the file's heads map onto the model's when a load converts heads (herd_checkpoint_load_opts).
typedef struct head_plan {
  int skip_lm_head;  // the file has lm_head.weight the model lacks: shape checked, values ignored
  int new_score;     // the model has a score.weight the file lacks: initialised, not looked for
} head_plan;

static int read_weights(const char *dir, herd_model *model, head_plan plan) {
  expected *e;
  int n, status = expected_tensors(model, &e, &n);
  if (status) return status;
  const herd_model_config *c = herd_model_get_config(model);
  if (plan.new_score) n--;  // score.weight is always the last entry
  if (plan.skip_lm_head) {  // expected_tensors leaves room: the model has no lm_head of its own
    add_expected(e, &n, "lm_head.weight", NULL, 2, c->vocab_size, c->dim);
    e[n - 1].optional = 1;
  }
  const char *source;
  if (file_exists(dir, WEIGHTS_FILE)) {
    source = WEIGHTS_FILE;
    status = read_weights_file(dir, WEIGHTS_FILE, e, n);
  } else if (file_exists(dir, INDEX_FILE)) {
    source = INDEX_FILE;
    status = read_sharded(dir, e, n);
  } else {
    source = NULL;
    status = herd_seterr(HERD_ENOTFOUND, "%s: no %s or %s (herd reads safetensors weights only)",
                         dir, WEIGHTS_FILE, INDEX_FILE);
  }
  for (int i = 0; i < n && !status; i++)
    if (!e[i].seen && !e[i].optional)
      status = herd_seterr(HERD_ECORRUPT, "%s/%s: missing tensor '%s' (shape %s)", dir, source,
                           e[i].name, shape_text((char[64]){0}, 64, e[i].ndim, e[i].shape));
  free(e);
  return status;
}

// ---------------------------------------------------------------- training state

// A uint64 as a JSON integer when doubles (Python's json, JavaScript) hold it exactly, else as
// a decimal string.
static json_t *u64_json(uint64_t v) {
  if (v <= (UINT64_C(1) << 53)) return json_integer((json_int_t)v);
  char buf[32];
  snprintf(buf, sizeof buf, "%" PRIu64, v);
  return json_string(buf);
}

static int json_u64(const char *origin, json_t *root, const char *key, uint64_t max,
                    uint64_t *out) {
  json_t *v = json_object_get(root, key);
  if (!v) return herd_seterr(HERD_ECORRUPT, "%s: missing field '%s'", origin, key);
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    *out = (uint64_t)json_integer_value(v);
  } else if (json_is_string(v)) {
    const char *s = json_string_value(v);
    char *end;
    errno = 0;
    unsigned long long u = strtoull(s, &end, 10);
    if (!s[0] || *end || errno || s[0] == '-' || s[0] == ' ')
      return herd_seterr(HERD_ECORRUPT, "%s: field '%s' (\"%.40s\") is not an unsigned integer",
                         origin, key, s);
    *out = u;
  } else {
    return herd_seterr(HERD_ECORRUPT, "%s: field '%s' is not an unsigned integer", origin, key);
  }
  if (*out > max) return herd_seterr(HERD_ECORRUPT, "%s: field '%s' is out of range", origin, key);
  return 0;
}

static int read_state_json(const char *dir, herd_train_state *state) {
  json_t *root;
  int status = load_json(dir, STATE_JSON_FILE, &root);
  if (status) return status;
  char *origin = join_path(dir, STATE_JSON_FILE);
  if (!origin) {
    json_decref(root);
    return herd_seterr(HERD_ENOMEM, "%s: out of memory", STATE_JSON_FILE);
  }
  json_t *format = json_object_get(root, "format");
  if (!json_is_string(format) || strcmp(json_string_value(format), STATE_FORMAT) != 0)
    status = herd_seterr(HERD_ECORRUPT, "%s: field 'format' is not \"%s\"", origin, STATE_FORMAT);
  uint64_t step = 0, position = 0;
  if (!status) status = json_u64(origin, root, "step", INT64_MAX, &step);
  if (!status) status = json_u64(origin, root, "rng_seed", UINT64_MAX, &state->rng_seed);
  if (!status) status = json_u64(origin, root, "rng_offset", UINT64_MAX, &state->rng_offset);
  if (!status) status = json_u64(origin, root, "data_position", INT64_MAX, &position);
  state->step = (int64_t)step;
  state->data_position = (int64_t)position;
  free(origin);
  json_decref(root);
  return status;
}

static int read_state_tensors(const char *dir, herd_model *model) {
  char *path = join_path(dir, STATE_TENSORS_FILE);
  if (!path) return herd_seterr(HERD_ENOMEM, "%s: out of memory", STATE_TENSORS_FILE);
  herd_safetensors *file;
  int status = herd_safetensors_open(&file, path);
  if (status) {
    free(path);
    return status;
  }
  size_t n;
  herd_model_param_buffer(model, &n);
  float *v;
  float *m = herd_model_adam_moments(model, &v);
  const char *names[2] = {"adam.m", "adam.v"};
  float *dest[2] = {m, v};
  if (herd_safetensors_count(file) != 2)
    status = herd_seterr(HERD_ECORRUPT, "%s: holds %d tensors; expected adam.m and adam.v", path,
                         herd_safetensors_count(file));
  for (int k = 0; k < 2 && !status; k++) {
    int index = herd_safetensors_find(file, names[k]);
    herd_tensor *t = NULL;
    if (index < 0) {
      status = herd_seterr(HERD_ECORRUPT, "%s: missing tensor '%s'", path, names[k]);
    } else if (!(status = herd_safetensors_tensor(file, index, &t))) {
      if (t->dtype != HERD_F32 || t->ndim != 1 || (size_t)t->shape[0] != n)
        status = herd_seterr(
            HERD_ECORRUPT, "%s: tensor '%s' is %s of shape [%lld]; the model needs f32 [%zu]", path,
            names[k], herd_dtype_name(t->dtype), (long long)(t->ndim ? t->shape[0] : 0), n);
      else
        memcpy(dest[k], herd_tensor_data(t), n * sizeof(float));
    }
    herd_tensor_free(t);
  }
  herd_safetensors_close(file);
  free(path);
  return status;
}

// ---------------------------------------------------------------- load

// A new scalar head: N(0, (scale/sqrt(dim))^2), so that scale 1 gives first scores of about unit
// scale whatever the width (the final-normed hidden state has RMS about 1), and scale 0 a zero
// head whose first scores are all 0 (a reward model then learns its offset from data only).
// Philox counters are the buffer offsets, as in herd_model_init.
static void init_score(herd_model *model, uint64_t seed, float score_scale) {
  herd_model_params p;
  herd_model_param_slices(model, &p, NULL);
  int dim = herd_model_get_config(model)->dim;
  float *base = herd_model_param_buffer(model, NULL);
  herd_rng_normal(p.score, dim, seed, (uint64_t)(p.score - base));
  float scale = score_scale / sqrtf((float)dim);
  for (int i = 0; i < dim; i++) p.score[i] *= scale;
}

// The model config a load builds from the file's: with a scalar head asked for, the LM head
// goes (a reward model predicts no tokens) and the scalar head comes.
static int load_config(const char *dir, int head, herd_model_config *file,
                       herd_model_config *config, head_plan *plan) {
  int status = herd_checkpoint_read_config(dir, file);
  if (status) return status;
  *config = *file;
  memset(plan, 0, sizeof *plan);
  if (head == HERD_HEAD_AS_SAVED) return 0;
  if (head != HERD_HEAD_SCALAR)
    return herd_seterr(HERD_EINVAL, "checkpoint_load: head = %d is not a known head", head);
  config->lm_head = 0;
  config->scalar_head = 1;
  config->tie_embeddings = 0;
  plan->skip_lm_head = file->lm_head;  // optional: a tied LM may have saved none
  plan->new_score = !file->scalar_head;
  return 0;
}

// The training state beside the weights, when there is one (both files or neither).
static int restore_state(const char *dir, herd_model *model, herd_train_state *state,
                         int *has_state) {
  int json = file_exists(dir, STATE_JSON_FILE), tensors = file_exists(dir, STATE_TENSORS_FILE);
  if (json != tensors)
    return herd_seterr(HERD_ECORRUPT, "%s: %s is present without %s", dir,
                       json ? STATE_JSON_FILE : STATE_TENSORS_FILE,
                       json ? STATE_TENSORS_FILE : STATE_JSON_FILE);
  if (!json) return 0;
  herd_train_state s;
  int status = read_state_json(dir, &s);
  if (!status) status = read_state_tensors(dir, model);
  if (status) return status;
  herd_model_set_step_count(model, s.step);
  *state = s;
  if (has_state) *has_state = 1;
  return 0;
}

int herd_checkpoint_load(const char *dir, herd_model **out, int max_batch, int max_seq,
                         herd_train_state *state, int *has_state) {
  herd_checkpoint_load_options opts = {max_batch, max_seq, HERD_HEAD_AS_SAVED, 0, 1.0f};
  return herd_checkpoint_load_opts(dir, out, &opts, state, has_state);
}

int herd_checkpoint_load_opts(const char *dir, herd_model **out,
                              const herd_checkpoint_load_options *opts, herd_train_state *state,
                              int *has_state) {
  if (!dir || !out || !opts) return herd_seterr(HERD_EINVAL, "checkpoint_load: NULL argument");
  *out = NULL;
  if (has_state) *has_state = 0;
  herd_model_config file, config;
  head_plan plan;
  int status = load_config(dir, opts->head, &file, &config, &plan);
  if (status) return status;
  herd_model *model;
  status = herd_model_new(&model, &config, opts->max_batch, opts->max_seq);
  if (status) return status;
  status = read_weights(dir, model, plan);
  if (!status && plan.new_score) init_score(model, opts->seed, opts->score_scale);
  // Moments saved for other heads do not fit this buffer, and belong to another training run.
  int same_heads = config.lm_head == file.lm_head && config.scalar_head == file.scalar_head;
  if (!status && state && same_heads) status = restore_state(dir, model, state, has_state);
  if (status) {
    herd_model_free(model);
    return status;
  }
  *out = model;
  return 0;
}

// ---------------------------------------------------------------- save

static json_t *config_json(const herd_model_config *c) {
  json_t *root = json_object();
  json_t *arch = json_array();
  if (c->lm_head) json_array_append_new(arch, json_string("LlamaForCausalLM"));
  if (c->scalar_head) json_array_append_new(arch, json_string("LlamaForSequenceClassification"));
  json_object_set_new(root, "architectures", arch);
  json_object_set_new(root, "model_type", json_string("llama"));
  json_object_set_new(root, "hidden_size", json_integer(c->dim));
  json_object_set_new(root, "intermediate_size", json_integer(c->hidden_dim));
  json_object_set_new(root, "num_hidden_layers", json_integer(c->n_layers));
  json_object_set_new(root, "num_attention_heads", json_integer(c->n_heads));
  json_object_set_new(root, "num_key_value_heads", json_integer(c->n_kv_heads));
  json_object_set_new(root, "head_dim", json_integer(c->dim / c->n_heads));
  json_object_set_new(root, "vocab_size", json_integer(c->vocab_size));
  json_object_set_new(root, "max_position_embeddings", json_integer(c->max_seq_len));
  json_object_set_new(root, "rms_norm_eps", float_json(c->norm_eps));
  json_object_set_new(root, "rope_theta", float_json(c->rope_theta));
  json_object_set_new(root, "rope_scaling", json_null());
  json_object_set_new(root, "tie_word_embeddings", json_boolean(c->tie_embeddings));
  json_object_set_new(root, "hidden_act", json_string("silu"));
  json_object_set_new(root, "attention_bias", json_false());
  json_object_set_new(root, "attention_dropout", json_real(0.0));
  json_object_set_new(root, "mlp_bias", json_false());
  json_object_set_new(root, "pretraining_tp", json_integer(1));
  json_object_set_new(root, "torch_dtype", json_string("float32"));
  json_object_set_new(root, "use_cache", json_true());
  if (c->scalar_head) {
    json_object_set_new(root, "num_labels", json_integer(1));
    json_object_set_new(root, "id2label", json_pack("{s:s}", "0", "LABEL_0"));
    json_object_set_new(root, "label2id", json_pack("{s:i}", "LABEL_0", 0));
  }
  return root;
}

// A tensor over the parameter buffer (`storage`, starting at `base`) from `data`: no copy.
static int wrap_floats(herd_tensor **out, herd_storage *storage, const float *base,
                       const float *data, int ndim, const int64_t *shape) {
  return herd_tensor_wrap(out, storage, (size_t)(data - base), HERD_F32, ndim, shape);
}

// For a model off the host (a GPU's): *copy = a malloc'd host copy of `which` (n floats).
// On the host: *copy = NULL, and the caller uses the model's own buffer.
static int host_floats(const herd_model *model, herd_model_buffer which, size_t n, float **copy) {
  *copy = NULL;
  if (herd_model_on_host(model)) return HERD_OK;
  *copy = malloc(n ? n * sizeof(float) : 1);
  if (!*copy)
    return herd_seterr(HERD_ENOMEM, "checkpoint_save: out of host memory (%zu floats)", n);
  int status = herd_model_read(model, which, *copy, n);
  if (status) {
    free(*copy);
    *copy = NULL;
  }
  return status;
}

static int save_weights(const char *dir, herd_model *model) {
  expected *e;
  int n, status = expected_tensors(model, &e, &n);
  if (status) return status;
  size_t count;
  float *buffer = herd_model_param_buffer(model, &count);  // the model's memory, maybe a GPU's
  float *host_copy = NULL;
  herd_storage *storage = NULL;
  herd_tensor **tensors = calloc((size_t)n, sizeof *tensors);
  const char **names = calloc((size_t)n, sizeof *names);
  char *path = join_path(dir, WEIGHTS_FILE);
  int m = 0;
  if (!tensors || !names || !path)
    status = herd_seterr(HERD_ENOMEM, "%s: out of memory", WEIGHTS_FILE);
  else
    status = host_floats(model, HERD_MODEL_PARAMS, count, &host_copy);
  if (!status)
    status = herd_storage_wrap(&storage, host_copy ? host_copy : buffer, count * sizeof(float),
                               HERD_CPU, NULL, NULL);
  for (int i = 0; i < n && !status; i++) {
    if (e[i].optional) continue;  // a tied lm_head: HF saves the embedding only
    int64_t shape[2] = {e[i].shape[0], e[i].shape[1]};
    // offsets from the model's buffer, the same in the host copy
    status = wrap_floats(&tensors[m], storage, buffer, e[i].data, e[i].ndim, shape);
    names[m++] = e[i].name;
  }
  const char *keys[1] = {"format"}, *values[1] = {"pt"};  // transformers checks it
  if (!status)
    status =
        herd_safetensors_save(path, m, names, (const herd_tensor *const *)tensors, 1, keys, values);
  for (int i = 0; i < m; i++) herd_tensor_free(tensors[i]);
  if (storage) herd_storage_release(storage);
  free(host_copy);
  free(path);
  free(names);
  free(tensors);
  free(e);
  return status;
}

static int save_state(const char *dir, herd_model *model, const herd_train_state *state) {
  size_t n;
  herd_model_param_buffer(model, &n);
  float *v;
  float *m = herd_model_adam_moments(model, &v);
  float *host_m = NULL, *host_v = NULL;
  herd_storage *sm = NULL, *sv = NULL;
  herd_tensor *tm = NULL, *tv = NULL;
  int64_t shape[1] = {(int64_t)n};
  char *path = join_path(dir, STATE_TENSORS_FILE);
  int status = path ? 0 : herd_seterr(HERD_ENOMEM, "%s: out of memory", STATE_TENSORS_FILE);
  if (!status) status = host_floats(model, HERD_MODEL_ADAM_M, n, &host_m);
  if (!status) status = host_floats(model, HERD_MODEL_ADAM_V, n, &host_v);
  if (host_m) m = host_m, v = host_v;
  if (!status) status = herd_storage_wrap(&sm, m, n * sizeof(float), HERD_CPU, NULL, NULL);
  if (!status) status = herd_storage_wrap(&sv, v, n * sizeof(float), HERD_CPU, NULL, NULL);
  if (!status) status = herd_tensor_wrap(&tm, sm, 0, HERD_F32, 1, shape);
  if (!status) status = herd_tensor_wrap(&tv, sv, 0, HERD_F32, 1, shape);
  if (!status) {
    const char *names[2] = {"adam.m", "adam.v"};
    const herd_tensor *tensors[2] = {tm, tv};
    const char *keys[1] = {"format"}, *values[1] = {STATE_FORMAT};
    status = herd_safetensors_save(path, 2, names, tensors, 1, keys, values);
  }
  herd_tensor_free(tm);
  herd_tensor_free(tv);
  if (sm) herd_storage_release(sm);
  if (sv) herd_storage_release(sv);
  free(host_m);
  free(host_v);
  free(path);
  if (status) return status;
  json_t *root = json_object();
  json_object_set_new(root, "format", json_string(STATE_FORMAT));
  json_object_set_new(root, "step", u64_json((uint64_t)state->step));
  json_object_set_new(root, "rng_seed", u64_json(state->rng_seed));
  json_object_set_new(root, "rng_offset", u64_json(state->rng_offset));
  json_object_set_new(root, "data_position", u64_json((uint64_t)state->data_position));
  status = save_json(dir, STATE_JSON_FILE, root);
  json_decref(root);
  return status;
}

static int remove_file(const char *dir, const char *name) {
  char *path = join_path(dir, name);
  if (!path) return herd_seterr(HERD_ENOMEM, "%s: out of memory", name);
  int status = 0;
  if (unlink(path) && errno != ENOENT)
    status = herd_seterr(HERD_EIO, "%s: cannot remove: %s", path, strerror(errno));
  free(path);
  return status;
}

// After model.safetensors is in place, an older sharded copy would only mislead: remove the
// index and the shards it names.
static int remove_old_shards(const char *dir) {
  if (!file_exists(dir, INDEX_FILE)) return 0;
  json_t *index;
  int status = load_json(dir, INDEX_FILE, &index);
  if (status) return remove_file(dir, INDEX_FILE);
  status = remove_file(dir, INDEX_FILE);
  json_t *map = json_object_get(index, "weight_map"), *v;
  const char *tensor;
  if (json_is_object(map)) json_object_foreach(map, tensor, v) {
      const char *shard = json_string_value(v);
      if (!status && shard && shard[0] && !strchr(shard, '/') && strcmp(shard, WEIGHTS_FILE) &&
          strcmp(shard, "..") && strcmp(shard, "."))
        status = remove_file(dir, shard);
    }
  json_decref(index);
  return status;
}

int herd_checkpoint_save(const char *dir, herd_model *model, const herd_train_state *state) {
  if (!dir || !dir[0] || !model) return herd_seterr(HERD_EINVAL, "checkpoint_save: NULL argument");
  if (state && (state->step < 0 || state->data_position < 0))
    return herd_seterr(HERD_EINVAL, "%s: negative step or data position in the training state",
                       dir);
  int status = make_dirs(dir);
  // Order: a stale training state goes first, so no crash leaves new weights beside old
  // moments; config.json last of the model files (a reader checks it against the tensors).
  if (!status) status = remove_file(dir, STATE_JSON_FILE);
  if (!status) status = remove_file(dir, STATE_TENSORS_FILE);
  if (!status) status = save_weights(dir, model);
  if (!status) status = remove_old_shards(dir);
  if (!status) {
    json_t *root = config_json(herd_model_get_config(model));
    status = root ? save_json(dir, CONFIG_FILE, root)
                  : herd_seterr(HERD_ENOMEM, "%s: out of memory", CONFIG_FILE);
    json_decref(root);
  }
  if (!status && state) status = save_state(dir, model, state);
  if (!status) status = sync_dir(dir);
  return status;
}
