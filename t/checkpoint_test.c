// Tests of runtime/checkpoint: the committed Hugging Face fixtures (t/fixtures/make_hf_fixture.py)
// load and give transformers' logits within 1e-4 (f32 single file; bf16 shards with an index and
// tied embeddings); save -> load is bit-exact for parameters, AdamW moments, step and training
// state; saves replace an existing checkpoint atomically; each kind of bad input is a clear error.
// With HERD_KEEP_CHECKPOINT=DIR the round-trip test also leaves a checkpoint and herd's logits
// (DIR/herd_logits.json) for `make_hf_fixture.py --check-herd DIR`, and DIR-tied, DIR-scalar:
// a tied LlamaForCausalLM and a LlamaForSequenceClassification.
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "error.h"
#include "model.h"
#include "safetensors.h"

#define FIXTURE HERD_FIXTURES "/hf-tiny-llama"
#define FIXTURE_BF16 HERD_FIXTURES "/hf-tiny-llama-bf16-sharded"

static char test_dir[256];

static void make_test_dir(void) {
  snprintf(test_dir, sizeof test_dir, "%s/herd-checkpoint-XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  cr_assert_not_null(mkdtemp(test_dir));
}

static void remove_test_dir(void) {
  char command[400];
  snprintf(command, sizeof command, "rm -rf '%s'", test_dir);
  cr_assert_eq(system(command), 0);
}

TestSuite(checkpoint, .init = make_test_dir, .fini = remove_test_dir, .timeout = 120);

// ---------------------------------------------------------------- helpers

static const char *in_test_dir(const char *name) {
  static char path[4][512];
  static int next;
  char *p = path[next++ % 4];
  snprintf(p, 512, "%s/%s", test_dir, name);
  return p;
}

// A copy of a fixture directory in the test directory.
static const char *copy_fixture(const char *fixture, const char *name) {
  const char *dest = in_test_dir(name);
  char command[1200];
  snprintf(command, sizeof command, "cp -r '%s' '%s'", fixture, dest);
  cr_assert_eq(system(command), 0);
  return dest;
}

static json_t *load_json_file(const char *path) {
  json_error_t error;
  json_t *root = json_load_file(path, 0, &error);
  cr_assert_not_null(root, "%s: %s", path, error.text);
  return root;
}

static void save_json_file(const char *path, const json_t *root) {
  cr_assert_eq(json_dump_file(root, path, JSON_INDENT(2)), 0, "%s", path);
}

// Sets (value non-NULL, reference stolen) or deletes a field of DIR/config.json.
static void edit_config(const char *dir, const char *key, json_t *value) {
  char path[600];
  snprintf(path, sizeof path, "%s/config.json", dir);
  json_t *root = load_json_file(path);
  if (value)
    json_object_set_new(root, key, value);
  else
    json_object_del(root, key);
  save_json_file(path, root);
  json_decref(root);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "%s: %s", path, strerror(errno));
  fputs(text, f);
  fclose(f);
}

// Rewrites DIR/FILE with tensor `drop` left out and, when `extra` is set, a tensor of that name
// added (a copy of the first tensor).
static void rewrite_weights(const char *dir, const char *file_name, const char *drop,
                            const char *extra) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, file_name);
  herd_safetensors *file;
  cr_assert_eq(herd_safetensors_open(&file, path), 0, "%s", herd_errmsg());
  int n = herd_safetensors_count(file);
  const char **names = calloc((size_t)n + 1, sizeof *names);
  herd_tensor **tensors = calloc((size_t)n + 1, sizeof *tensors);
  int m = 0;
  for (int i = 0; i < n; i++) {
    if (drop && !strcmp(herd_safetensors_name(file, i), drop)) continue;
    cr_assert_eq(herd_safetensors_tensor(file, i, &tensors[m]), 0);
    names[m++] = herd_safetensors_name(file, i);
  }
  cr_assert_eq(m, drop ? n - 1 : n, "tensor %s not in %s", drop, path);
  if (extra) {
    cr_assert_eq(herd_safetensors_tensor(file, 0, &tensors[m]), 0);
    names[m++] = extra;
  }
  const char *key = "format", *value = "pt";
  cr_assert_eq(
      herd_safetensors_save(path, m, names, (const herd_tensor *const *)tensors, 1, &key, &value),
      0, "%s", herd_errmsg());
  for (int i = 0; i < m; i++) herd_tensor_free(tensors[i]);
  free(names);
  free(tensors);
  herd_safetensors_close(file);
}

// Loading `dir` fails, and the message holds `what` (and `what2` when non-NULL).
static void expect_load_error(const char *dir, const char *what, const char *what2) {
  herd_model *model = (herd_model *)1;
  int status = herd_checkpoint_load(dir, &model, 1, 4, NULL, NULL);
  cr_assert_lt(status, 0, "loading %s should fail (want: %s)", dir, what);
  cr_assert_null(model);
  const char *message = herd_errmsg();
  cr_assert_not_null(strstr(message, what), "message \"%s\" lacks \"%s\"", message, what);
  if (what2)
    cr_assert_not_null(strstr(message, what2), "message \"%s\" lacks \"%s\"", message, what2);
}

// The input ids and logits of DIR/expected_logits.json.
typedef struct expected_logits {
  int b, t, v;
  int32_t *ids;
  float *logits;
} expected_logits;

static expected_logits read_expected(const char *dir) {
  char path[600];
  snprintf(path, sizeof path, "%s/expected_logits.json", dir);
  json_t *root = load_json_file(path);
  json_t *ids = json_object_get(root, "input_ids"), *logits = json_object_get(root, "logits");
  expected_logits e = {0};
  e.b = (int)json_array_size(ids);
  e.t = (int)json_array_size(json_array_get(ids, 0));
  e.v = (int)json_array_size(json_array_get(json_array_get(logits, 0), 0));
  cr_assert(e.b > 0 && e.t > 0 && e.v > 0);
  e.ids = calloc((size_t)(e.b * e.t), sizeof *e.ids);
  e.logits = calloc((size_t)(e.b * e.t * e.v), sizeof *e.logits);
  for (int i = 0; i < e.b; i++)
    for (int j = 0; j < e.t; j++) {
      e.ids[i * e.t + j] = (int32_t)json_integer_value(json_array_get(json_array_get(ids, i), j));
      json_t *row = json_array_get(json_array_get(logits, i), j);
      cr_assert_eq((int)json_array_size(row), e.v);
      for (int k = 0; k < e.v; k++)
        e.logits[(i * e.t + j) * e.v + k] = (float)json_number_value(json_array_get(row, k));
    }
  json_decref(root);
  return e;
}

static void check_fixture_logits(const char *dir) {
  expected_logits e = read_expected(dir);
  herd_model *model;
  cr_assert_eq(herd_checkpoint_load(dir, &model, e.b, e.t, NULL, NULL), 0, "%s", herd_errmsg());
  herd_batch batch = {.b = e.b, .t = e.t, .tokens = e.ids};
  cr_assert_eq(herd_model_forward(model, &batch, NULL), 0, "%s", herd_errmsg());
  const float *logits = herd_model_logits(model);
  double worst = 0;
  for (int i = 0; i < e.b * e.t * e.v; i++) {
    double d = fabs((double)logits[i] - (double)e.logits[i]);
    if (!(d <= worst)) worst = d;  // NaN counts
  }
  cr_log_info("%s: max |herd - transformers| = %.3g", dir, worst);
  cr_assert(worst < 1e-4, "%s: logits differ from transformers' by %g", dir, worst);
  herd_model_free(model);
  free(e.ids);
  free(e.logits);
}

static herd_model_config tiny_config(int lm_head, int scalar_head, int tie) {
  herd_model_config c = {.dim = 48,
                         .n_layers = 3,
                         .n_heads = 6,
                         .n_kv_heads = 2,
                         .hidden_dim = 64,
                         .vocab_size = 80,
                         .max_seq_len = 32,
                         .norm_eps = 1e-5f,
                         .rope_theta = 20000.0f,
                         .tie_embeddings = tie,
                         .lm_head = lm_head,
                         .scalar_head = scalar_head};
  return c;
}

// A model with weights large enough to give sharp logits, norms away from 1, and moments that
// are not zero.
static herd_model *random_model(const herd_model_config *c, uint64_t seed) {
  herd_model *model;
  cr_assert_eq(herd_model_new(&model, c, 2, 8), 0, "%s", herd_errmsg());
  herd_model_init(model, seed);
  size_t n;
  float *w = herd_model_param_buffer(model, &n);
  for (size_t i = 0; i < n; i++) w[i] *= 10.0f;  // std 0.2
  herd_model_params p;
  herd_model_param_slices(model, &p, NULL);
  float *norms[3] = {p.attn_norm, p.mlp_norm, p.final_norm};
  size_t sizes[3] = {(size_t)(c->n_layers * c->dim), (size_t)(c->n_layers * c->dim),
                     (size_t)c->dim};
  for (int k = 0; k < 3; k++)
    for (size_t i = 0; i < sizes[k]; i++) norms[k][i] = 1.0f + 0.3f * sinf((float)(i * 7 + k));
  float *v;
  float *m = herd_model_adam_moments(model, &v);
  for (size_t i = 0; i < n; i++) {
    m[i] = 1e-3f * cosf((float)i);
    v[i] = 1e-6f * (float)(i % 97) + 1e-9f;
  }
  herd_model_set_step_count(model, 7);
  return model;
}

static void assert_same_config(const herd_model_config *a, const herd_model_config *b) {
  cr_assert_eq(a->dim, b->dim);
  cr_assert_eq(a->n_layers, b->n_layers);
  cr_assert_eq(a->n_heads, b->n_heads);
  cr_assert_eq(a->n_kv_heads, b->n_kv_heads);
  cr_assert_eq(a->hidden_dim, b->hidden_dim);
  cr_assert_eq(a->vocab_size, b->vocab_size);
  cr_assert_eq(a->max_seq_len, b->max_seq_len);
  cr_assert_eq(a->norm_eps, b->norm_eps);
  cr_assert_eq(a->rope_theta, b->rope_theta);
  cr_assert_eq(a->tie_embeddings, b->tie_embeddings);
  cr_assert_eq(a->lm_head, b->lm_head);
  cr_assert_eq(a->scalar_head, b->scalar_head);
}

static void assert_same_model(herd_model *a, herd_model *b, int with_moments) {
  assert_same_config(herd_model_get_config(a), herd_model_get_config(b));
  size_t na, nb;
  float *pa = herd_model_param_buffer(a, &na), *pb = herd_model_param_buffer(b, &nb);
  cr_assert_eq(na, nb);
  cr_assert_eq(memcmp(pa, pb, na * sizeof(float)), 0, "parameters differ");
  if (!with_moments) return;
  float *va, *vb;
  float *ma = herd_model_adam_moments(a, &va), *mb = herd_model_adam_moments(b, &vb);
  cr_assert_eq(memcmp(ma, mb, na * sizeof(float)), 0, "first moments differ");
  cr_assert_eq(memcmp(va, vb, na * sizeof(float)), 0, "second moments differ");
  cr_assert_eq(herd_model_step_count(a), herd_model_step_count(b));
}

// Names in `dir`, sorted, joined by spaces.
static const char *list_dir(const char *dir) {
  static char out[2048];
  struct dirent **entries;
  int n = scandir(dir, &entries, NULL, alphasort);
  cr_assert_geq(n, 0, "%s: %s", dir, strerror(errno));
  out[0] = '\0';
  for (int i = 0; i < n; i++) {
    if (entries[i]->d_name[0] != '.') {
      if (out[0]) strncat(out, " ", sizeof out - strlen(out) - 1);
      strncat(out, entries[i]->d_name, sizeof out - strlen(out) - 1);
    }
    free(entries[i]);
  }
  free(entries);
  return out;
}

// ---------------------------------------------------------------- Hugging Face fixtures

Test(checkpoint, reads_the_fixture_config) {
  herd_model_config c;
  cr_assert_eq(herd_checkpoint_read_config(FIXTURE, &c), 0, "%s", herd_errmsg());
  cr_assert_eq(c.dim, 32);
  cr_assert_eq(c.n_layers, 2);
  cr_assert_eq(c.n_heads, 4);
  cr_assert_eq(c.n_kv_heads, 2);
  cr_assert_eq(c.hidden_dim, 48);
  cr_assert_eq(c.vocab_size, 64);
  cr_assert_eq(c.max_seq_len, 64);
  cr_assert_eq(c.norm_eps, 1e-6f);
  cr_assert_eq(c.rope_theta, 50000.0f);
  cr_assert_eq(c.tie_embeddings, 0);
  cr_assert_eq(c.lm_head, 1);
  cr_assert_eq(c.scalar_head, 0);
  cr_assert_eq(herd_checkpoint_read_config(FIXTURE_BF16, &c), 0, "%s", herd_errmsg());
  cr_assert_eq(c.tie_embeddings, 1);
}

// config.json of meta-llama/Llama-2-7b-hf, as published (transformers 4.31: rope_theta absent,
// rope_scaling null).
Test(checkpoint, reads_a_llama_2_7b_config) {
  const char *dir = in_test_dir("llama-2-7b");
  cr_assert_eq(mkdir(dir, 0755), 0);
  char path[600];
  snprintf(path, sizeof path, "%s/config.json", dir);
  write_text(path,
             "{\n"
             "  \"_name_or_path\": \"meta-llama/Llama-2-7b-hf\",\n"
             "  \"architectures\": [\"LlamaForCausalLM\"],\n"
             "  \"bos_token_id\": 1,\n"
             "  \"eos_token_id\": 2,\n"
             "  \"hidden_act\": \"silu\",\n"
             "  \"hidden_size\": 4096,\n"
             "  \"initializer_range\": 0.02,\n"
             "  \"intermediate_size\": 11008,\n"
             "  \"max_position_embeddings\": 4096,\n"
             "  \"model_type\": \"llama\",\n"
             "  \"num_attention_heads\": 32,\n"
             "  \"num_hidden_layers\": 32,\n"
             "  \"num_key_value_heads\": 32,\n"
             "  \"pretraining_tp\": 1,\n"
             "  \"rms_norm_eps\": 1e-05,\n"
             "  \"rope_scaling\": null,\n"
             "  \"tie_word_embeddings\": false,\n"
             "  \"torch_dtype\": \"float16\",\n"
             "  \"transformers_version\": \"4.31.0.dev0\",\n"
             "  \"use_cache\": true,\n"
             "  \"vocab_size\": 32000\n"
             "}\n");
  herd_model_config c;
  cr_assert_eq(herd_checkpoint_read_config(dir, &c), 0, "%s", herd_errmsg());
  cr_assert_eq(c.dim, 4096);
  cr_assert_eq(c.n_layers, 32);
  cr_assert_eq(c.n_heads, 32);
  cr_assert_eq(c.n_kv_heads, 32);
  cr_assert_eq(c.hidden_dim, 11008);
  cr_assert_eq(c.vocab_size, 32000);
  cr_assert_eq(c.max_seq_len, 4096);
  cr_assert_eq(c.norm_eps, 1e-5f);
  cr_assert_eq(c.rope_theta, 10000.0f);
  cr_assert_eq(c.lm_head, 1);
  cr_assert_eq(herd_model_param_count(&c), (size_t)6738415616);  // Llama-2-7b's 6.74B
}

Test(checkpoint, fixture_logits_match_transformers) {
  check_fixture_logits(FIXTURE);
}

Test(checkpoint, sharded_bf16_fixture_logits_match_transformers) {
  check_fixture_logits(FIXTURE_BF16);
}

// The bf16 shards load as exactly the bf16 values (every weight is a bf16 number).
Test(checkpoint, sharded_bf16_values_are_exact) {
  herd_model *model;
  cr_assert_eq(herd_checkpoint_load(FIXTURE_BF16, &model, 1, 4, NULL, NULL), 0, "%s",
               herd_errmsg());
  herd_model_params p;
  herd_model_param_slices(model, &p, NULL);
  cr_assert_eq(p.lm_head, p.embed, "tied embeddings");
  size_t n;
  float *w = herd_model_param_buffer(model, &n);
  for (size_t i = 0; i < n; i++)
    cr_assert_eq(herd_bf16_to_f32(herd_f32_to_bf16(w[i])), w[i], "weight %zu is not bf16", i);
  // ... and they are the file's bits: model.embed_tokens.weight[0][0..3] from the shard itself.
  herd_safetensors *file;
  cr_assert_eq(herd_safetensors_open(&file, FIXTURE_BF16 "/model-00001-of-00003.safetensors"), 0,
               "%s", herd_errmsg());
  int index = herd_safetensors_find(file, "model.embed_tokens.weight");
  cr_assert_geq(index, 0);
  herd_tensor *t;
  cr_assert_eq(herd_safetensors_tensor(file, index, &t), 0);
  cr_assert_eq(t->dtype, HERD_BF16);
  for (int64_t j = 0; j < 4; j++) {
    int64_t at[2] = {0, j};
    double value;
    cr_assert_eq(herd_tensor_get(t, at, &value), 0);
    cr_assert_eq((float)value, p.embed[j]);
  }
  herd_tensor_free(t);
  herd_safetensors_close(file);
  herd_model_free(model);
}

// f16 weights convert too (the f32 fixture rewritten as f16).
Test(checkpoint, f16_weights_load) {
  const char *dir = copy_fixture(FIXTURE, "f16");
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  herd_safetensors *file;
  cr_assert_eq(herd_safetensors_open(&file, path), 0, "%s", herd_errmsg());
  int n = herd_safetensors_count(file);
  const char *names[64];
  herd_tensor *tensors[64];
  cr_assert_leq(n, 64);
  for (int i = 0; i < n; i++) {
    herd_tensor *t;
    cr_assert_eq(herd_safetensors_tensor(file, i, &t), 0);
    cr_assert_eq(herd_tensor_to(&tensors[i], t, HERD_F16), 0);
    herd_tensor_free(t);
    names[i] = herd_safetensors_name(file, i);
  }
  cr_assert_eq(
      herd_safetensors_save(path, n, names, (const herd_tensor *const *)tensors, 0, NULL, NULL), 0,
      "%s", herd_errmsg());
  for (int i = 0; i < n; i++) herd_tensor_free(tensors[i]);
  herd_safetensors_close(file);
  herd_model *f32, *f16;
  cr_assert_eq(herd_checkpoint_load(FIXTURE, &f32, 1, 4, NULL, NULL), 0, "%s", herd_errmsg());
  cr_assert_eq(herd_checkpoint_load(dir, &f16, 1, 4, NULL, NULL), 0, "%s", herd_errmsg());
  size_t count;
  float *a = herd_model_param_buffer(f32, &count), *b = herd_model_param_buffer(f16, NULL);
  for (size_t i = 0; i < count; i++)
    cr_assert_eq(herd_f16_to_f32(herd_f32_to_f16(a[i])), b[i], "weight %zu", i);
  herd_model_free(f32);
  herd_model_free(f16);
}

// ---------------------------------------------------------------- save and load

// Writes herd's logits (and scores at every position) for the --check-herd mode of the script.
static void write_herd_logits(const char *dir, herd_model *model, int b, int t,
                              const int32_t *ids) {
  const herd_model_config *c = herd_model_get_config(model);
  int32_t positions[64];
  for (int i = 0; i < b * t; i++) positions[i] = i;
  herd_batch batch = {.b = b, .t = t, .tokens = ids};
  if (c->scalar_head) {
    batch.n_scores = b * t;
    batch.score_positions = positions;
  }
  cr_assert_eq(herd_model_forward(model, &batch, NULL), 0, "%s", herd_errmsg());
  json_t *root = json_object(), *jids = json_array(), *jlogits = json_array(),
         *jscores = json_array();
  const float *logits = herd_model_logits(model), *scores = herd_model_scores(model);
  for (int i = 0; i < b; i++) {
    json_t *row = json_array(), *lrow = json_array(), *srow = json_array();
    for (int j = 0; j < t; j++) {
      json_array_append_new(row, json_integer(ids[i * t + j]));
      if (c->lm_head) {
        json_t *v = json_array();
        for (int k = 0; k < c->vocab_size; k++)
          json_array_append_new(v, json_real(logits[(size_t)(i * t + j) * c->vocab_size + k]));
        json_array_append_new(lrow, v);
      }
      if (c->scalar_head) json_array_append_new(srow, json_real(scores[i * t + j]));
    }
    json_array_append_new(jids, row);
    json_array_append_new(jlogits, lrow);
    json_array_append_new(jscores, srow);
  }
  json_object_set_new(root, "input_ids", jids);
  if (c->lm_head)
    json_object_set_new(root, "logits", jlogits);
  else
    json_decref(jlogits);
  if (c->scalar_head)
    json_object_set_new(root, "scores", jscores);
  else
    json_decref(jscores);
  char path[600];
  snprintf(path, sizeof path, "%s/herd_logits.json", dir);
  save_json_file(path, root);
  json_decref(root);
}

Test(checkpoint, save_load_round_trip_is_bit_exact) {
  herd_model_config c = tiny_config(1, 1, 0);
  herd_model *model = random_model(&c, 42);
  herd_train_state state = {.step = 7,
                            .rng_seed = UINT64_C(0x8000000000000005),  // > 2^53: a string
                            .rng_offset = (UINT64_C(1) << 40) + 3,
                            .data_position = 12345};
  const char *dir = in_test_dir("a/b/ckpt");  // parents are created
  cr_assert_eq(herd_checkpoint_save(dir, model, &state), 0, "%s", herd_errmsg());
  cr_assert_str_eq(list_dir(dir),
                   "config.json model.safetensors training_state.json "
                   "training_state.safetensors");

  herd_model *again;
  herd_train_state loaded;
  int has_state = -1;
  cr_assert_eq(herd_checkpoint_load(dir, &again, 2, 8, &loaded, &has_state), 0, "%s",
               herd_errmsg());
  cr_assert_eq(has_state, 1);
  cr_assert_eq(loaded.step, state.step);
  cr_assert_eq(loaded.rng_seed, state.rng_seed);
  cr_assert_eq(loaded.rng_offset, state.rng_offset);
  cr_assert_eq(loaded.data_position, state.data_position);
  assert_same_model(model, again, 1);

  // Without `state`, the moments are not read.
  herd_model *weights_only;
  cr_assert_eq(herd_checkpoint_load(dir, &weights_only, 1, 4, NULL, NULL), 0, "%s", herd_errmsg());
  assert_same_model(model, weights_only, 0);
  herd_model_free(weights_only);

  // The same logits and scores from the loaded model; HERD_KEEP_CHECKPOINT keeps a copy.
  int32_t ids[2 * 8] = {1, 5, 9, 77, 3, 3, 60, 12, 1, 44, 2, 18, 79, 0, 31, 8};
  write_herd_logits(dir, model, 2, 8, ids);
  const char *keep = getenv("HERD_KEEP_CHECKPOINT");
  if (keep && keep[0]) {
    cr_assert_eq(herd_checkpoint_save(keep, model, &state), 0, "%s", herd_errmsg());
    write_herd_logits(keep, model, 2, 8, ids);
    cr_log_info("kept a checkpoint in %s", keep);
  }
  herd_batch batch = {.b = 2, .t = 8, .tokens = ids};
  cr_assert_eq(herd_model_forward(again, &batch, NULL), 0, "%s", herd_errmsg());
  cr_assert_eq(herd_model_forward(model, &batch, NULL), 0, "%s", herd_errmsg());
  cr_assert_eq(memcmp(herd_model_logits(model), herd_model_logits(again),
                      2 * 8 * (size_t)c.vocab_size * sizeof(float)),
               0);

  // The config herd wrote is one transformers reads: LlamaConfig names, HF tensor names.
  char path[600];
  snprintf(path, sizeof path, "%s/config.json", dir);
  json_t *config = load_json_file(path);
  cr_assert_str_eq(json_string_value(json_object_get(config, "model_type")), "llama");
  cr_assert_str_eq(json_string_value(json_object_get(config, "torch_dtype")), "float32");
  cr_assert_eq(json_integer_value(json_object_get(config, "num_key_value_heads")), 2);
  cr_assert_eq(json_real_value(json_object_get(config, "rms_norm_eps")), 1e-5);
  json_t *arch = json_object_get(config, "architectures");
  cr_assert_str_eq(json_string_value(json_array_get(arch, 0)), "LlamaForCausalLM");
  cr_assert_str_eq(json_string_value(json_array_get(arch, 1)), "LlamaForSequenceClassification");
  json_decref(config);
  snprintf(path, sizeof path, "%s/training_state.json", dir);
  json_t *js = load_json_file(path);
  cr_assert_str_eq(json_string_value(json_object_get(js, "rng_seed")), "9223372036854775813");
  cr_assert_eq(json_integer_value(json_object_get(js, "rng_offset")), (1LL << 40) + 3);
  json_decref(js);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  herd_safetensors *file;
  cr_assert_eq(herd_safetensors_open(&file, path), 0, "%s", herd_errmsg());
  cr_assert_eq(herd_safetensors_count(file), 1 + 9 * 3 + 1 + 2);
  cr_assert_geq(herd_safetensors_find(file, "model.layers.2.self_attn.k_proj.weight"), 0);
  cr_assert_geq(herd_safetensors_find(file, "score.weight"), 0);
  cr_assert_str_eq(herd_safetensors_metadata(file, "format"), "pt");
  herd_safetensors_close(file);

  herd_model_free(again);
  herd_model_free(model);
}

Test(checkpoint, tied_and_scalar_only_round_trips) {
  for (int k = 0; k < 2; k++) {
    herd_model_config c = k ? tiny_config(0, 1, 0) : tiny_config(1, 0, 1);
    herd_model *model = random_model(&c, 7 + (uint64_t)k);
    const char *dir = in_test_dir(k ? "scalar" : "tied");
    cr_assert_eq(herd_checkpoint_save(dir, model, NULL), 0, "%s", herd_errmsg());
    cr_assert_str_eq(list_dir(dir), "config.json model.safetensors");
    herd_model *again;
    herd_train_state state;
    int has_state = -1;
    cr_assert_eq(herd_checkpoint_load(dir, &again, 1, 4, &state, &has_state), 0, "%s",
                 herd_errmsg());
    cr_assert_eq(has_state, 0);
    assert_same_model(model, again, 0);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    herd_safetensors *file;
    cr_assert_eq(herd_safetensors_open(&file, path), 0, "%s", herd_errmsg());
    cr_assert_lt(herd_safetensors_find(file, "lm_head.weight"), 0, "tied or absent");
    cr_assert_eq(herd_safetensors_find(file, "score.weight") >= 0, k);
    herd_safetensors_close(file);
    const char *keep = getenv("HERD_KEEP_CHECKPOINT");
    if (keep && keep[0]) {  // KEEP-tied, KEEP-scalar for --check-herd
      char kept[600];
      snprintf(kept, sizeof kept, "%s-%s", keep, k ? "scalar" : "tied");
      int32_t ids[2 * 8] = {1, 5, 9, 77, 3, 3, 60, 12, 1, 44, 2, 18, 79, 0, 31, 8};
      cr_assert_eq(herd_checkpoint_save(kept, model, NULL), 0, "%s", herd_errmsg());
      write_herd_logits(kept, model, 2, 8, ids);
      cr_log_info("kept a checkpoint in %s", kept);
    }
    herd_model_free(again);
    herd_model_free(model);
  }
}

// Saving over an existing checkpoint replaces every file and leaves no temporary behind; a
// weights-only save removes the old training state; a save over a sharded copy removes the shards.
Test(checkpoint, save_over_existing_is_atomic) {
  herd_model_config c = tiny_config(1, 0, 0);
  herd_model *first = random_model(&c, 1), *second = random_model(&c, 2);
  herd_train_state state = {.step = 3, .rng_seed = 9, .rng_offset = 10, .data_position = 11};
  const char *dir = in_test_dir("ckpt");
  cr_assert_eq(herd_checkpoint_save(dir, first, &state), 0, "%s", herd_errmsg());
  state.step = herd_model_step_count(second);  // 7
  cr_assert_eq(herd_checkpoint_save(dir, second, &state), 0, "%s", herd_errmsg());
  cr_assert_str_eq(list_dir(dir),
                   "config.json model.safetensors training_state.json "
                   "training_state.safetensors");
  herd_model *loaded;
  herd_train_state got;
  int has_state;
  cr_assert_eq(herd_checkpoint_load(dir, &loaded, 1, 4, &got, &has_state), 0, "%s", herd_errmsg());
  cr_assert_eq(got.step, 7);
  assert_same_model(second, loaded, 1);
  herd_model_free(loaded);

  cr_assert_eq(herd_checkpoint_save(dir, first, NULL), 0, "%s", herd_errmsg());
  cr_assert_str_eq(list_dir(dir), "config.json model.safetensors");
  cr_assert_eq(herd_checkpoint_load(dir, &loaded, 1, 4, &got, &has_state), 0, "%s", herd_errmsg());
  cr_assert_eq(has_state, 0);
  assert_same_model(first, loaded, 0);
  herd_model_free(loaded);

  const char *sharded = copy_fixture(FIXTURE_BF16, "sharded");
  cr_assert_eq(herd_checkpoint_load(sharded, &loaded, 1, 4, NULL, NULL), 0, "%s", herd_errmsg());
  cr_assert_eq(herd_checkpoint_save(sharded, loaded, NULL), 0, "%s", herd_errmsg());
  cr_assert_str_eq(list_dir(sharded),
                   "config.json expected_logits.json generation_config.json model.safetensors");
  herd_model *again;
  cr_assert_eq(herd_checkpoint_load(sharded, &again, 1, 4, NULL, NULL), 0, "%s", herd_errmsg());
  assert_same_model(loaded, again, 0);
  herd_model_free(again);
  herd_model_free(loaded);
  herd_model_free(first);
  herd_model_free(second);
}

Test(checkpoint, save_into_an_unwritable_place_fails_cleanly) {
  herd_model_config c = tiny_config(1, 0, 0);
  herd_model *model = random_model(&c, 1);
  const char *file = in_test_dir("plain-file");
  write_text(file, "x");
  char dir[600];
  snprintf(dir, sizeof dir, "%s/sub", file);
  cr_assert_lt(herd_checkpoint_save(dir, model, NULL), 0);
  cr_assert_not_null(strstr(herd_errmsg(), "cannot create directory"), "%s", herd_errmsg());
  herd_model_free(model);
}

// ---------------------------------------------------------------- bad input

Test(checkpoint, truncated_weights) {
  const char *dir = copy_fixture(FIXTURE, "truncated");
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  struct stat st;
  cr_assert_eq(stat(path, &st), 0);
  cr_assert_eq(truncate(path, st.st_size / 2), 0);
  expect_load_error(dir, "model.safetensors", "tensor");
  cr_log_info("truncated: %s", herd_errmsg());
}

Test(checkpoint, missing_tensor) {
  const char *dir = copy_fixture(FIXTURE, "missing");
  rewrite_weights(dir, "model.safetensors", "model.layers.1.mlp.up_proj.weight", NULL);
  expect_load_error(dir, "missing tensor 'model.layers.1.mlp.up_proj.weight' (shape [48, 32])",
                    "model.safetensors");
}

Test(checkpoint, missing_tensor_in_a_shard) {
  const char *dir = copy_fixture(FIXTURE_BF16, "missing-shard-tensor");
  rewrite_weights(dir, "model-00001-of-00003.safetensors", "model.embed_tokens.weight", NULL);
  expect_load_error(dir, "missing tensor 'model.embed_tokens.weight'",
                    "model-00001-of-00003.safetensors");
}

Test(checkpoint, missing_shard) {
  const char *dir = copy_fixture(FIXTURE_BF16, "missing-shard");
  char path[600];
  snprintf(path, sizeof path, "%s/model-00002-of-00003.safetensors", dir);
  cr_assert_eq(unlink(path), 0);
  expect_load_error(dir, "model-00002-of-00003.safetensors", "cannot open");
}

Test(checkpoint, unexpected_tensor) {
  const char *dir = copy_fixture(FIXTURE, "extra");
  rewrite_weights(dir, "model.safetensors", NULL, "model.layers.0.self_attn.q_proj.bias");
  expect_load_error(dir, "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'", NULL);
}

Test(checkpoint, shape_mismatch_with_config) {
  const char *dir = copy_fixture(FIXTURE, "shape");
  edit_config(dir, "intermediate_size", json_integer(40));
  expect_load_error(dir,
                    "tensor 'model.layers.0.mlp.down_proj.weight' has shape [32, 48], "
                    "config.json says [32, 40]",
                    "model.safetensors");
}

Test(checkpoint, unknown_config_field) {
  const char *dir = copy_fixture(FIXTURE, "unknown");
  edit_config(dir, "sliding_window", json_integer(4096));
  expect_load_error(dir, "unknown field 'sliding_window'", "config.json");
}

Test(checkpoint, unsupported_model_type) {
  const char *dir = copy_fixture(FIXTURE, "mistral");
  edit_config(dir, "model_type", json_string("mistral"));
  expect_load_error(dir, "model_type is \"mistral\"", "llama");
  edit_config(dir, "model_type", NULL);
  expect_load_error(dir, "missing field 'model_type'", NULL);
}

Test(checkpoint, unsupported_architecture) {
  const char *dir = copy_fixture(FIXTURE, "arch");
  edit_config(dir, "architectures", json_pack("[s]", "MistralForCausalLM"));
  expect_load_error(dir, "architecture 'MistralForCausalLM' is not supported", NULL);
  // A classifier with two labels: herd's scalar head has one.
  edit_config(dir, "architectures", json_pack("[s]", "LlamaForSequenceClassification"));
  edit_config(dir, "num_labels", json_integer(2));
  expect_load_error(dir, "LlamaForSequenceClassification with 2 labels", NULL);
  // One label: the weights are those of a causal LM (lm_head.weight, no score.weight).
  edit_config(dir, "num_labels", json_integer(1));
  expect_load_error(dir, "unexpected tensor 'lm_head.weight'", NULL);
}

Test(checkpoint, rope_scaling_is_refused) {
  const char *dir = copy_fixture(FIXTURE, "rope");
  edit_config(dir, "rope_scaling", json_pack("{s:s,s:f}", "rope_type", "linear", "factor", 2.0));
  expect_load_error(dir, "rope_scaling", NULL);
  edit_config(dir, "rope_scaling", NULL);
  edit_config(dir, "rope_parameters",
              json_pack("{s:s,s:f,s:f}", "rope_type", "llama3", "rope_theta", 5e5, "factor", 8.0));
  expect_load_error(dir, "rope_parameters.rope_type", NULL);
}

Test(checkpoint, unsupported_variants) {
  const char *dir = copy_fixture(FIXTURE, "variants");
  edit_config(dir, "hidden_act", json_string("gelu"));
  expect_load_error(dir, "field 'hidden_act' is \"gelu\"", NULL);
  edit_config(dir, "hidden_act", json_string("silu"));
  edit_config(dir, "attention_bias", json_true());
  expect_load_error(dir, "'attention_bias' must be false", NULL);
  edit_config(dir, "attention_bias", json_false());
  edit_config(dir, "head_dim", json_integer(16));
  expect_load_error(dir, "'head_dim' must equal", NULL);
  edit_config(dir, "head_dim", json_integer(8));
  edit_config(dir, "pretraining_tp", json_integer(2));
  expect_load_error(dir, "'pretraining_tp' must be 1", NULL);
  edit_config(dir, "pretraining_tp", json_integer(1));
  edit_config(dir, "num_hidden_layers", json_string("2"));
  expect_load_error(dir, "'num_hidden_layers' is not an integer", NULL);
  edit_config(dir, "num_hidden_layers", NULL);
  expect_load_error(dir, "missing field 'num_hidden_layers'", NULL);
}

Test(checkpoint, malformed_json) {
  const char *dir = copy_fixture(FIXTURE, "malformed");
  char path[600];
  snprintf(path, sizeof path, "%s/config.json", dir);
  write_text(path, "{\"model_type\": \"llama\",\n \"hidden_size\": 32,,\n}\n");
  expect_load_error(dir, "config.json: not valid JSON", "line 2");
  write_text(path, "[1, 2]");
  expect_load_error(dir, "not a JSON object", NULL);
  const char *sharded = copy_fixture(FIXTURE_BF16, "malformed-index");
  snprintf(path, sizeof path, "%s/model.safetensors.index.json", sharded);
  write_text(path, "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}");
  expect_load_error(sharded, "not a file in the checkpoint directory", NULL);
}

Test(checkpoint, missing_files) {
  expect_load_error(in_test_dir("nowhere"), "config.json: cannot open", NULL);
  const char *dir = copy_fixture(FIXTURE, "no-weights");
  char path[600];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  cr_assert_eq(unlink(path), 0);
  expect_load_error(dir, "no model.safetensors or model.safetensors.index.json", NULL);
}

Test(checkpoint, broken_training_state) {
  herd_model_config c = tiny_config(1, 0, 0);
  herd_model *model = random_model(&c, 1);
  herd_train_state state = {.step = 3, .rng_seed = 9, .rng_offset = 10, .data_position = 11};
  const char *dir = in_test_dir("state");
  cr_assert_eq(herd_checkpoint_save(dir, model, &state), 0, "%s", herd_errmsg());
  char path[600];
  snprintf(path, sizeof path, "%s/training_state.json", dir);
  write_text(path,
             "{\"format\": \"herd-training-state-1\", \"step\": -4, \"rng_seed\": 1, "
             "\"rng_offset\": 0, \"data_position\": 0}");
  herd_model *loaded = NULL;
  herd_train_state got;
  int has_state;
  cr_assert_lt(herd_checkpoint_load(dir, &loaded, 1, 4, &got, &has_state), 0);
  cr_assert_not_null(strstr(herd_errmsg(), "'step'"), "%s", herd_errmsg());
  cr_assert_eq(unlink(path), 0);
  cr_assert_lt(herd_checkpoint_load(dir, &loaded, 1, 4, &got, &has_state), 0);
  cr_assert_not_null(strstr(herd_errmsg(), "training_state.safetensors is present without"), "%s",
                     herd_errmsg());
  // A checkpoint of another model's size: the moments do not fit.
  herd_model_config other = tiny_config(1, 1, 0);
  herd_model *bigger = random_model(&other, 2);
  cr_assert_eq(herd_checkpoint_save(dir, bigger, &state), 0, "%s", herd_errmsg());
  herd_model_free(bigger);
  edit_config(dir, "architectures", json_pack("[s]", "LlamaForCausalLM"));
  rewrite_weights(dir, "model.safetensors", "score.weight", NULL);
  cr_assert_lt(herd_checkpoint_load(dir, &loaded, 1, 4, &got, &has_state), 0);
  cr_assert_not_null(strstr(herd_errmsg(), "tensor 'adam.m'"), "%s", herd_errmsg());
  herd_model_free(model);
}

// ---------------------------------------------------------------- a reward model from a chat model

static herd_model *load_head(const char *dir, int head, uint64_t seed) {
  herd_checkpoint_load_options opts = {1, 8, head, seed, 1.0f};
  herd_model *model;
  cr_assert_eq(herd_checkpoint_load_opts(dir, &model, &opts, NULL, NULL), 0, "%s", herd_errmsg());
  return model;
}

// Scores at every position of one row of 8 tokens.
static void scores_of(herd_model *model, float *out) {
  int32_t ids[8] = {1, 5, 9, 33, 3, 3, 60, 12}, positions[8];
  for (int i = 0; i < 8; i++) positions[i] = i;
  herd_batch batch = {.b = 1, .t = 8, .tokens = ids, .n_scores = 8, .score_positions = positions};
  cr_assert_eq(herd_model_forward(model, &batch, NULL), 0, "%s", herd_errmsg());
  memcpy(out, herd_model_scores(model), 8 * sizeof(float));
}

Test(checkpoint, causal_lm_loads_as_reward_model) {
  herd_model *lm = load_head(FIXTURE, HERD_HEAD_AS_SAVED, 0);
  herd_model *rm = load_head(FIXTURE, HERD_HEAD_SCALAR, 5);
  const herd_model_config *c = herd_model_get_config(rm);
  cr_assert(!c->lm_head && c->scalar_head);
  herd_model_params lp, rp;
  herd_model_param_slices(lm, &lp, NULL);
  herd_model_param_slices(rm, &rp, NULL);
  cr_assert_null(rp.lm_head);
  // The trunk (everything before the heads) is the LM's, byte for byte.
  size_t trunk = (size_t)(lp.lm_head - lp.embed);
  cr_assert_eq(memcmp(lp.embed, rp.embed, trunk * sizeof(float)), 0);
  double sq = 0;
  for (int i = 0; i < c->dim; i++) sq += rp.score[i] * rp.score[i];
  cr_assert(sq > 0, "score.weight is initialised, not zero");
  cr_assert_lt(fabs(sq / c->dim - 1.0 / c->dim), 0.7 / c->dim, "variance about 1/dim");
  // With score.weight = lm_head row k, the score is logit k: same hidden state, same dot product.
  const int k = 17, V = c->vocab_size;
  memcpy(rp.score, lp.lm_head + (size_t)k * c->dim, (size_t)c->dim * sizeof(float));
  float scores[8];
  scores_of(rm, scores);
  int32_t ids[8] = {1, 5, 9, 33, 3, 3, 60, 12};
  herd_batch batch = {.b = 1, .t = 8, .tokens = ids};
  cr_assert_eq(herd_model_forward(lm, &batch, NULL), 0, "%s", herd_errmsg());
  const float *logits = herd_model_logits(lm);
  for (int t = 0; t < 8; t++)
    cr_assert_float_eq(scores[t], logits[t * V + k], 1e-5, "position %d", t);
  herd_model_free(lm);
  herd_model_free(rm);
}

Test(checkpoint, reward_model_round_trip_and_seed) {
  herd_model *a = load_head(FIXTURE, HERD_HEAD_SCALAR, 5);
  herd_model *b = load_head(FIXTURE, HERD_HEAD_SCALAR, 5);
  herd_model *other = load_head(FIXTURE, HERD_HEAD_SCALAR, 6);
  float sa[8], sb[8], so[8];
  scores_of(a, sa);
  scores_of(b, sb);
  scores_of(other, so);
  cr_assert_eq(memcmp(sa, sb, sizeof sa), 0, "same seed, same head");
  cr_assert_neq(memcmp(sa, so, sizeof sa), 0, "another seed, another head");
  const char *dir = in_test_dir("rm");
  cr_assert_eq(herd_checkpoint_save(dir, a, NULL), 0, "%s", herd_errmsg());
  herd_model_config saved;
  cr_assert_eq(herd_checkpoint_read_config(dir, &saved), 0, "%s", herd_errmsg());
  cr_assert(!saved.lm_head && saved.scalar_head, "LlamaForSequenceClassification only");
  for (int head = 0; head < 2; head++) {  // as saved, and as a scalar head again: kept, not redrawn
    herd_model *again = load_head(dir, head ? HERD_HEAD_SCALAR : HERD_HEAD_AS_SAVED, 99);
    float s[8];
    scores_of(again, s);
    cr_assert_eq(memcmp(sa, s, sizeof sa), 0, "head %d: identical scores", head);
    herd_model_free(again);
  }
  herd_checkpoint_load_options bad = {1, 8, 7, 0, 1.0f};
  herd_model *none;
  cr_assert_eq(herd_checkpoint_load_opts(dir, &none, &bad, NULL, NULL), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "head = 7"), "%s", herd_errmsg());
  herd_model_free(a);
  herd_model_free(b);
  herd_model_free(other);
}

Test(checkpoint, converting_heads_drops_the_training_state) {
  herd_model_config c = tiny_config(1, 0, 1);  // a tied LM: no lm_head.weight in the file
  herd_model *model = random_model(&c, 3);
  const char *dir = in_test_dir("tied-lm");
  herd_train_state state = {4, 1, 2, 3}, got;
  cr_assert_eq(herd_checkpoint_save(dir, model, &state), 0, "%s", herd_errmsg());
  herd_checkpoint_load_options opts = {1, 8, HERD_HEAD_SCALAR, 1, 1.0f};
  herd_model *rm;
  int has_state = -1;
  cr_assert_eq(herd_checkpoint_load_opts(dir, &rm, &opts, &got, &has_state), 0, "%s",
               herd_errmsg());
  cr_assert_eq(has_state, 0, "moments of the LM do not fit the reward model");
  herd_model_params mp, rp;
  herd_model_param_slices(model, &mp, NULL);
  herd_model_param_slices(rm, &rp, NULL);
  cr_assert_eq(memcmp(mp.embed, rp.embed, (size_t)(rp.score - rp.embed) * sizeof(float)), 0);
  herd_model_free(rm);
  herd_model_free(model);
}
