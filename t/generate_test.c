// Sampling with a KV cache (runtime/generate.c) on a tiny random model with grouped-query
// attention: cached logits against a full recompute (herd_model_forward and a naive
// double-precision reference), seeds that regenerate a sample alone, batched against
// one-by-one sampling, greedy / top-k / top-p / stop tokens / max_new, log-probabilities, the
// sampler's distribution, and the errors.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "generate.h"
#include "model.h"
#include "rng.h"
#include "threads.h"

enum { DIM = 32, LAYERS = 2, HEADS = 4, KV_HEADS = 2, HIDDEN = 48, VOCAB = 37, MAX_SEQ = 64 };

static herd_model_config tiny_config(void) {
  return (herd_model_config){.dim = DIM,
                             .n_layers = LAYERS,
                             .n_heads = HEADS,
                             .n_kv_heads = KV_HEADS,
                             .hidden_dim = HIDDEN,
                             .vocab_size = VOCAB,
                             .max_seq_len = MAX_SEQ,
                             .norm_eps = 1e-5f,
                             .rope_theta = 500.0f,
                             .tie_embeddings = 0,
                             .lm_head = 1,
                             .scalar_head = 0};
}

static herd_model *tiny_model_with(herd_model_config cfg, uint64_t seed) {
  herd_model *model = NULL;
  cr_assert_eq(herd_model_new(&model, &cfg, 1, MAX_SEQ), 0, "%s", herd_errmsg());
  herd_model_init(model, seed);
  // larger weights than the init's 0.02 so the logits are far from uniform and the tests
  // below see distinct, well-separated tokens
  size_t n = 0;
  float *params = herd_model_param_buffer(model, &n);
  for (size_t i = 0; i < n; i++) params[i] *= 8;
  herd_model_params p;
  herd_model_param_slices(model, &p, NULL);
  for (int i = 0; i < LAYERS * DIM; i++) p.attn_norm[i] = p.mlp_norm[i] = 1;
  for (int i = 0; i < DIM; i++) p.final_norm[i] = 1;
  return model;
}

static herd_model *tiny_model(uint64_t seed) {
  return tiny_model_with(tiny_config(), seed);
}

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  cr_assert_not_null(p, "out of memory");
  return p;
}

static void random_tokens(int32_t *out, int n, uint64_t seed) {
  float u[MAX_SEQ];
  herd_rng_uniform(u, n, seed, 0);
  for (int i = 0; i < n; i++) out[i] = (int32_t)(u[i] * VOCAB) % VOCAB;
}

// ---------------------------------------------------------------- references

// The Llama forward in double, written out naively: logits (n, V) of one sequence.
static void reference_logits(herd_model *model, const int32_t *tok, int n, double *logits) {
  herd_model_params p;
  herd_model_param_slices(model, &p, NULL);
  const herd_model_config *c = herd_model_get_config(model);
  const int C = DIM, H = HEADS, KVH = KV_HEADS, D = DIM / HEADS, F = HIDDEN;
  double *x = xcalloc((size_t)n * C, 8), *xn = xcalloc((size_t)n * C, 8);
  double *q = xcalloc((size_t)n * H * D, 8), *k = xcalloc((size_t)n * KVH * D, 8);
  double *v = xcalloc((size_t)n * KVH * D, 8), *att = xcalloc((size_t)n * H * D, 8);
  double g[HIDDEN], sc[MAX_SEQ];
  for (int t = 0; t < n; t++)
    for (int i = 0; i < C; i++) x[t * C + i] = p.embed[tok[t] * C + i];
  for (int l = 0; l < LAYERS; l++) {
    for (int t = 0; t < n; t++) {
      double ss = 0;
      for (int i = 0; i < C; i++) ss += x[t * C + i] * x[t * C + i];
      const double r = 1 / sqrt(ss / C + c->norm_eps);
      for (int i = 0; i < C; i++) xn[t * C + i] = x[t * C + i] * r * p.attn_norm[l * C + i];
      for (int o = 0; o < H * D; o++) {
        double s = 0;
        for (int i = 0; i < C; i++) s += xn[t * C + i] * p.wq[(l * H * D + o) * C + i];
        q[t * H * D + o] = s;
      }
      for (int o = 0; o < KVH * D; o++) {
        double sk = 0, sv = 0;
        for (int i = 0; i < C; i++) {
          sk += xn[t * C + i] * p.wk[(l * KVH * D + o) * C + i];
          sv += xn[t * C + i] * p.wv[(l * KVH * D + o) * C + i];
        }
        k[t * KVH * D + o] = sk, v[t * KVH * D + o] = sv;
      }
      for (int pass = 0; pass < 2; pass++) {  // rotate_half rope on q, then k
        const int heads = pass ? KVH : H;
        double *z = pass ? k + t * KVH * D : q + t * H * D;
        for (int h = 0; h < heads; h++)
          for (int i = 0; i < D / 2; i++) {
            const double angle = t * pow(c->rope_theta, -2.0 * i / D);
            const double a = z[h * D + i], b = z[h * D + i + D / 2];
            z[h * D + i] = a * cos(angle) - b * sin(angle);
            z[h * D + i + D / 2] = b * cos(angle) + a * sin(angle);
          }
      }
    }
    for (int t = 0; t < n; t++)
      for (int h = 0; h < H; h++) {
        const int kh = h / (H / KVH);
        double max = -INFINITY, sum = 0;
        for (int s = 0; s <= t; s++) {
          double d = 0;
          for (int i = 0; i < D; i++) d += q[t * H * D + h * D + i] * k[s * KVH * D + kh * D + i];
          sc[s] = d / sqrt(D);
          max = fmax(max, sc[s]);
        }
        for (int s = 0; s <= t; s++) sum += (sc[s] = exp(sc[s] - max));
        for (int i = 0; i < D; i++) {
          double o = 0;
          for (int s = 0; s <= t; s++) o += sc[s] * v[s * KVH * D + kh * D + i];
          att[t * H * D + h * D + i] = o / sum;
        }
      }
    for (int t = 0; t < n; t++) {
      for (int o = 0; o < C; o++) {
        double s = 0;
        for (int i = 0; i < H * D; i++) s += att[t * H * D + i] * p.wo[(l * C + o) * H * D + i];
        x[t * C + o] += s;
      }
      double ss = 0;
      for (int i = 0; i < C; i++) ss += x[t * C + i] * x[t * C + i];
      const double r = 1 / sqrt(ss / C + c->norm_eps);
      for (int i = 0; i < C; i++) xn[t * C + i] = x[t * C + i] * r * p.mlp_norm[l * C + i];
      for (int f = 0; f < F; f++) {
        double a = 0, b = 0;
        for (int i = 0; i < C; i++) {
          a += xn[t * C + i] * p.w_gate[(l * F + f) * C + i];
          b += xn[t * C + i] * p.w_up[(l * F + f) * C + i];
        }
        g[f] = a / (1 + exp(-a)) * b;
      }
      for (int o = 0; o < C; o++) {
        double s = 0;
        for (int f = 0; f < F; f++) s += g[f] * p.w_down[(l * C + o) * F + f];
        x[t * C + o] += s;
      }
    }
  }
  const float *head = c->tie_embeddings ? p.embed : p.lm_head;
  for (int t = 0; t < n; t++) {
    double ss = 0;
    for (int i = 0; i < C; i++) ss += x[t * C + i] * x[t * C + i];
    const double r = 1 / sqrt(ss / C + c->norm_eps);
    for (int i = 0; i < C; i++) xn[t * C + i] = x[t * C + i] * r * p.final_norm[i];
    for (int o = 0; o < VOCAB; o++) {
      double s = 0;
      for (int i = 0; i < C; i++) s += xn[t * C + i] * head[o * C + i];
      logits[t * VOCAB + o] = s;
    }
  }
  free(x), free(xn), free(q), free(k), free(v), free(att);
}

// herd_model_forward over one sequence: logits (n, V).
static void model_logits(herd_model *model, const int32_t *tokens, int n, float *out) {
  herd_batch batch = {.b = 1, .t = n, .tokens = tokens};
  cr_assert_eq(herd_model_forward(model, &batch, NULL), 0, "%s", herd_errmsg());
  memcpy(out, herd_model_logits(model), (size_t)n * VOCAB * sizeof *out);
}

static double log_softmax(const float *logits, int token) {
  double max = logits[0], sum = 0;
  for (int i = 1; i < VOCAB; i++) max = fmax(max, logits[i]);
  for (int i = 0; i < VOCAB; i++) sum += exp(logits[i] - max);
  return logits[token] - max - log(sum);
}

static int argmax(const float *logits) {
  int best = 0;
  for (int i = 1; i < VOCAB; i++)
    if (logits[i] > logits[best]) best = i;
  return best;
}

// ---------------------------------------------------------------- cached vs recomputed

static void check_cached_logits(herd_model *model) {
  enum { N = 4 };
  const int lengths[N] = {20, 9, 33, 64}, n_prefill[N] = {5, 9, 1, 17};
  int32_t tokens[N][MAX_SEQ];
  const int32_t *seqs[N];
  float *cached[N];
  for (int i = 0; i < N; i++) {
    random_tokens(tokens[i], lengths[i], 100 + i);
    seqs[i] = tokens[i];
    cached[i] = xcalloc((size_t)lengths[i] * VOCAB, sizeof(float));
  }
  cr_assert_eq(herd_generate_logits(model, N, seqs, lengths, n_prefill, cached), 0, "%s",
               herd_errmsg());
  float *full = xcalloc((size_t)MAX_SEQ * VOCAB, sizeof(float));
  double *ref = xcalloc((size_t)MAX_SEQ * VOCAB, sizeof(double));
  double max_logit = 0;
  for (int i = 0; i < N; i++) {
    model_logits(model, tokens[i], lengths[i], full);
    reference_logits(model, tokens[i], lengths[i], ref);
    for (int t = 0; t < lengths[i]; t++)
      for (int j = 0; j < VOCAB; j++) {
        const float got = cached[i][t * VOCAB + j];
        max_logit = fmax(max_logit, fabs(ref[t * VOCAB + j]));
        cr_assert(fabs(got - full[t * VOCAB + j]) <= 1e-5,
                  "seq %d pos %d token %d: %g vs forward %g", i, t, j, got, full[t * VOCAB + j]);
        cr_assert(fabs(got - ref[t * VOCAB + j]) <= 1e-5,
                  "seq %d pos %d token %d: %g vs reference %g", i, t, j, got, ref[t * VOCAB + j]);
      }
    free(cached[i]);
  }
  cr_assert(max_logit > 0.5, "logits too small to test anything (%g)", max_logit);
  free(full), free(ref);
}

Test(generate, cached_logits_equal_full_recompute) {
  herd_model *model = tiny_model(11);
  check_cached_logits(model);
  herd_model_free(model);
}

Test(generate, cached_logits_with_tied_embeddings) {
  herd_model_config cfg = tiny_config();
  cfg.tie_embeddings = 1;
  herd_model *model = tiny_model_with(cfg, 21);
  check_cached_logits(model);
  herd_model_free(model);
}

// ---------------------------------------------------------------- sampling

enum { PROMPTS = 3, K = 3, MAX_NEW = 16 };
static const int prompt_lengths[PROMPTS] = {3, 7, 12};

typedef struct prompt_set {
  int32_t tokens[PROMPTS][MAX_SEQ];
  const int32_t *ptr[PROMPTS];
  uint64_t seeds[PROMPTS * K];
} prompt_set;

static void make_prompts(prompt_set *s) {
  for (int i = 0; i < PROMPTS; i++) {
    random_tokens(s->tokens[i], prompt_lengths[i], 7 + i);
    s->ptr[i] = s->tokens[i];
  }
  for (int i = 0; i < PROMPTS * K; i++) s->seeds[i] = 0x5eed0000ull + 977 * (uint64_t)i;
}

static void generate_ok(herd_model *model, int n, const int32_t *const *prompts, const int *lengths,
                        int k, const herd_sampling *sampling, const uint64_t *seeds,
                        herd_generation *out) {
  cr_assert_eq(herd_generate(model, n, prompts, lengths, k, sampling, seeds, out), 0, "%s",
               herd_errmsg());
  cr_assert_eq(out->n, n * k);
  cr_assert_eq(out->max_new, sampling->max_new);
}

// Sequence a of x against sequence b of y: the same tokens, lengths and log-probabilities.
static void assert_same_sequence(const herd_generation *x, int a, const herd_generation *y, int b) {
  cr_assert_eq(x->lengths[a], y->lengths[b], "seq %d/%d lengths %d vs %d", a, b, x->lengths[a],
               y->lengths[b]);
  for (int t = 0; t < x->max_new; t++) {
    cr_assert_eq(x->tokens[a * x->max_new + t], y->tokens[b * y->max_new + t], "seq %d/%d step %d",
                 a, b, t);
    cr_assert(fabsf(x->logprobs[a * x->max_new + t] - y->logprobs[b * y->max_new + t]) <= 1e-5,
              "seq %d/%d step %d logprob", a, b, t);
  }
}

static const herd_sampling nucleus = {
    .temperature = 0.9f, .top_p = 0.9f, .top_k = 20, .max_new = MAX_NEW};

Test(generate, same_seed_regenerates_a_sample_alone) {
  herd_model *model = tiny_model(12);
  prompt_set s;
  make_prompts(&s);
  herd_generation all, one;
  generate_ok(model, PROMPTS, s.ptr, prompt_lengths, K, &nucleus, s.seeds, &all);
  // the samples of one prompt differ (different seeds) ...
  int differ = 0;
  for (int t = 0; t < MAX_NEW; t++) differ |= all.tokens[t] != all.tokens[MAX_NEW + t];
  cr_assert(differ, "two samples of prompt 0 with different seeds are identical");
  // ... and each one comes back exactly when generated alone with its seed
  for (int i = 0; i < PROMPTS * K; i++) {
    generate_ok(model, 1, &s.ptr[i / K], &prompt_lengths[i / K], 1, &nucleus, &s.seeds[i], &one);
    assert_same_sequence(&all, i, &one, 0);
    herd_generation_free(&one);
  }
  herd_generation_free(&all);
  herd_model_free(model);
}

Test(generate, batched_equals_one_prompt_at_a_time) {
  herd_model *model = tiny_model(13);
  prompt_set s;
  make_prompts(&s);
  const herd_sampling plain = {.temperature = 1.0f, .top_p = 1.0f, .max_new = MAX_NEW};
  const herd_sampling *modes[] = {&plain, &nucleus};
  for (int m = 0; m < 2; m++) {
    herd_generation all, one;
    generate_ok(model, PROMPTS, s.ptr, prompt_lengths, K, modes[m], s.seeds, &all);
    for (int p = 0; p < PROMPTS; p++) {
      generate_ok(model, 1, &s.ptr[p], &prompt_lengths[p], K, modes[m], &s.seeds[p * K], &one);
      for (int j = 0; j < K; j++) assert_same_sequence(&all, p * K + j, &one, j);
      herd_generation_free(&one);
    }
    herd_generation_free(&all);
  }
  herd_model_free(model);
}

// Prompts whose tokens together exceed one prefill chunk (256 rows), split mid-prompt.
Test(generate, prefill_split_across_chunks) {
  herd_model *model = tiny_model(23);
  enum { N = 9 };
  int32_t tokens[N][MAX_SEQ];
  const int32_t *ptr[N];
  int lengths[N];
  uint64_t seeds[N];
  for (int i = 0; i < N; i++) {
    lengths[i] = 30 + 3 * i;  // 30..54: 378 tokens
    random_tokens(tokens[i], lengths[i], 50 + i);
    ptr[i] = tokens[i], seeds[i] = 77 + i;
  }
  const herd_sampling sampling = {.temperature = 0.8f, .top_p = 1, .max_new = 8};
  herd_generation all, one;
  generate_ok(model, N, ptr, lengths, 1, &sampling, seeds, &all);
  for (int i = 0; i < N; i++) {
    generate_ok(model, 1, &ptr[i], &lengths[i], 1, &sampling, &seeds[i], &one);
    assert_same_sequence(&all, i, &one, 0);
    herd_generation_free(&one);
  }
  herd_generation_free(&all);
  herd_model_free(model);
}

// Each generated token of sequence i against the full forward of its prefix: logprobs are the
// raw log-softmax at the chosen token; with greedy, the token is the argmax.
static void check_against_forward(herd_model *model, const prompt_set *s, const herd_generation *g,
                                  int greedy) {
  float *full = xcalloc((size_t)MAX_SEQ * VOCAB, sizeof(float));
  for (int i = 0; i < g->n; i++) {
    const int p = i / (g->n / PROMPTS), len = prompt_lengths[p];
    int32_t seq[MAX_SEQ];
    memcpy(seq, s->tokens[p], (size_t)len * sizeof *seq);
    for (int t = 0; t < g->lengths[i]; t++) seq[len + t] = g->tokens[i * g->max_new + t];
    model_logits(model, seq, len + g->lengths[i], full);
    for (int t = 0; t < g->lengths[i]; t++) {
      const float *row = full + (size_t)(len + t - 1) * VOCAB;
      const int32_t token = g->tokens[i * g->max_new + t];
      if (greedy) cr_assert_eq(token, argmax(row), "seq %d step %d not the argmax", i, t);
      cr_assert(fabs(g->logprobs[i * g->max_new + t] - log_softmax(row, token)) <= 1e-5,
                "seq %d step %d: logprob %g vs %g", i, t, g->logprobs[i * g->max_new + t],
                log_softmax(row, token));
    }
    for (int t = g->lengths[i]; t < g->max_new; t++) {
      cr_assert_eq(g->tokens[i * g->max_new + t], -1);
      cr_assert_eq(g->logprobs[i * g->max_new + t], 0.0f);
    }
  }
  free(full);
}

Test(generate, same_bits_for_any_thread_count) {
  herd_model *model = tiny_model(22);
  prompt_set s;
  make_prompts(&s);
  herd_generation g[2];
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(herd_set_threads(i ? 3 : 1), 0);
    generate_ok(model, PROMPTS, s.ptr, prompt_lengths, K, &nucleus, s.seeds, &g[i]);
  }
  cr_assert_eq(memcmp(g[0].tokens, g[1].tokens, sizeof(int32_t) * g[0].n * MAX_NEW), 0);
  cr_assert_eq(memcmp(g[0].logprobs, g[1].logprobs, sizeof(float) * g[0].n * MAX_NEW), 0);
  cr_assert_eq(memcmp(g[0].lengths, g[1].lengths, sizeof(int) * g[0].n), 0);
  herd_generation_free(&g[0]), herd_generation_free(&g[1]);
  herd_model_free(model);
}

Test(generate, greedy_is_argmax_of_full_forward) {
  herd_model *model = tiny_model(14);
  prompt_set s;
  make_prompts(&s);
  const herd_sampling greedy = {.temperature = 0, .top_p = 1, .max_new = MAX_NEW};
  herd_generation g;
  generate_ok(model, PROMPTS, s.ptr, prompt_lengths, 2, &greedy, s.seeds, &g);
  for (int i = 0; i < g.n; i++) cr_assert_eq(g.lengths[i], MAX_NEW, "max_new caps the length");
  check_against_forward(model, &s, &g, 1);
  for (int i = 0; i < g.n; i += 2) assert_same_sequence(&g, i, &g, i + 1);  // seeds don't matter
  herd_generation_free(&g);
  herd_model_free(model);
}

Test(generate, sampled_logprobs_are_raw_log_softmax) {
  herd_model *model = tiny_model(15);
  prompt_set s;
  make_prompts(&s);
  const herd_sampling hot = {.temperature = 1.7f, .top_p = 0.8f, .top_k = 9, .max_new = MAX_NEW};
  herd_generation g;
  generate_ok(model, PROMPTS, s.ptr, prompt_lengths, K, &hot, s.seeds, &g);
  check_against_forward(model, &s, &g, 0);
  herd_generation_free(&g);
  herd_model_free(model);
}

Test(generate, top_k_one_and_tiny_top_p_are_greedy) {
  herd_model *model = tiny_model(16);
  prompt_set s;
  make_prompts(&s);
  const herd_sampling greedy = {.temperature = 0, .top_p = 1, .max_new = MAX_NEW};
  const herd_sampling top1 = {.temperature = 1.3f, .top_p = 1, .top_k = 1, .max_new = MAX_NEW};
  const herd_sampling tiny_p = {.temperature = 2.0f, .top_p = 1e-6f, .max_new = MAX_NEW};
  herd_generation g, a, b;
  generate_ok(model, PROMPTS, s.ptr, prompt_lengths, K, &greedy, s.seeds, &g);
  generate_ok(model, PROMPTS, s.ptr, prompt_lengths, K, &top1, s.seeds, &a);
  generate_ok(model, PROMPTS, s.ptr, prompt_lengths, K, &tiny_p, s.seeds, &b);
  for (int i = 0; i < g.n; i++)
    assert_same_sequence(&g, i, &a, i), assert_same_sequence(&g, i, &b, i);
  herd_generation_free(&g), herd_generation_free(&a), herd_generation_free(&b);
  herd_model_free(model);
}

Test(generate, stop_tokens_end_a_sequence) {
  herd_model *model = tiny_model(17);
  prompt_set s;
  make_prompts(&s);
  herd_sampling sampling = {.temperature = 1.0f, .top_p = 1, .max_new = MAX_NEW};
  herd_generation free_run, stopped;
  generate_ok(model, PROMPTS, s.ptr, prompt_lengths, K, &sampling, s.seeds, &free_run);
  // stop at the token each free run produced at step 4 (and at whatever else: 2 stop tokens)
  const int32_t stops[2] = {free_run.tokens[4], free_run.tokens[MAX_NEW + 9]};
  sampling.stop_tokens = stops, sampling.n_stop = 2;
  generate_ok(model, PROMPTS, s.ptr, prompt_lengths, K, &sampling, s.seeds, &stopped);
  int shorter = 0;
  for (int i = 0; i < free_run.n; i++) {
    int expect = MAX_NEW;  // the first stop token of the free run ends the sequence, kept
    for (int t = 0; t < MAX_NEW && expect == MAX_NEW; t++) {
      const int32_t tok = free_run.tokens[i * MAX_NEW + t];
      if (tok == stops[0] || tok == stops[1]) expect = t + 1;
    }
    shorter += expect < MAX_NEW;
    cr_assert_eq(stopped.lengths[i], expect, "seq %d: length %d, expected %d", i,
                 stopped.lengths[i], expect);
    for (int t = 0; t < MAX_NEW; t++) {
      const int32_t want = t < expect ? free_run.tokens[i * MAX_NEW + t] : -1;
      cr_assert_eq(stopped.tokens[i * MAX_NEW + t], want, "seq %d step %d", i, t);
      if (t < expect)  // fewer rows in later batches: equal up to rounding
        cr_assert(fabsf(stopped.logprobs[i * MAX_NEW + t] - free_run.logprobs[i * MAX_NEW + t]) <=
                  1e-5);
      else
        cr_assert_eq(stopped.logprobs[i * MAX_NEW + t], 0.0f);
    }
  }
  cr_assert(shorter >= 2, "the stop tokens stopped only %d sequences", shorter);
  herd_generation_free(&free_run), herd_generation_free(&stopped);
  herd_model_free(model);
}

Test(generate, max_new_and_prompt_at_the_length_limit) {
  herd_model *model = tiny_model(18);
  int32_t prompt[MAX_SEQ];
  random_tokens(prompt, MAX_SEQ - 1, 3);
  const int32_t *ptr = prompt;
  const int len = MAX_SEQ - 1;
  const uint64_t seed = 5;
  const herd_sampling one = {.temperature = 1, .top_p = 1, .max_new = 1};
  herd_generation g;
  generate_ok(model, 1, &ptr, &len, 1, &one, &seed, &g);
  cr_assert_eq(g.lengths[0], 1);
  cr_assert(g.tokens[0] >= 0 && g.tokens[0] < VOCAB);
  herd_generation_free(&g);
  herd_model_free(model);
}

// With T = 1 and nothing filtered, the first token's frequency over many seeds follows
// softmax(logits); top-k and top-p draw only from their sets.
Test(generate, sampler_distribution) {
  herd_model *model = tiny_model(19);
  enum { DRAWS = 4000 };
  int32_t prompt[4] = {1, 2, 3, 4};
  const int32_t *ptr = prompt;
  const int len = 4;
  uint64_t *seeds = xcalloc(DRAWS, sizeof *seeds);
  for (int i = 0; i < DRAWS; i++) seeds[i] = 1000 + (uint64_t)i;
  float full[4 * VOCAB];
  model_logits(model, prompt, len, full);
  const float *row = full + 3 * VOCAB;
  // the tokens by probability, descending
  int order[VOCAB];
  for (int i = 0; i < VOCAB; i++) order[i] = i;
  for (int i = 0; i < VOCAB; i++)
    for (int j = i + 1; j < VOCAB; j++)
      if (row[order[j]] > row[order[i]]) {
        int tmp = order[i];
        order[i] = order[j], order[j] = tmp;
      }
  herd_sampling sampling = {.temperature = 1, .top_p = 1, .max_new = 1};
  herd_generation g;
  generate_ok(model, 1, &ptr, &len, DRAWS, &sampling, seeds, &g);
  int counts[VOCAB] = {0};
  for (int i = 0; i < DRAWS; i++) counts[g.tokens[i]]++;
  for (int j = 0; j < VOCAB; j++) {
    const double p = exp(log_softmax(row, j)), sd = sqrt(p * (1 - p) / DRAWS);
    cr_assert(fabs(counts[j] / (double)DRAWS - p) <= 5 * sd + 1e-3, "token %d: %d draws, p %g", j,
              counts[j], p);
  }
  herd_generation_free(&g);
  sampling.top_k = 3;
  generate_ok(model, 1, &ptr, &len, DRAWS, &sampling, seeds, &g);
  memset(counts, 0, sizeof counts);
  for (int i = 0; i < DRAWS; i++) counts[g.tokens[i]]++;
  for (int j = 3; j < VOCAB; j++) cr_assert_eq(counts[order[j]], 0, "top_k 3 drew rank %d", j);
  for (int j = 0; j < 3; j++) cr_assert(counts[order[j]] > 0, "top_k 3 never drew rank %d", j);
  herd_generation_free(&g);
  // top_p: the smallest prefix of the ranking with mass >= top_p
  sampling.top_k = 0, sampling.top_p = 0.7f;
  double cum = 0;
  int nucleus_size = 0;
  while (cum < 0.7) cum += exp(log_softmax(row, order[nucleus_size++]));
  generate_ok(model, 1, &ptr, &len, DRAWS, &sampling, seeds, &g);
  memset(counts, 0, sizeof counts);
  for (int i = 0; i < DRAWS; i++) counts[g.tokens[i]]++;
  for (int j = nucleus_size; j < VOCAB; j++)
    cr_assert_eq(counts[order[j]], 0, "top_p drew rank %d (nucleus %d)", j, nucleus_size);
  cr_assert(counts[order[nucleus_size - 1]] > 0, "top_p never drew the nucleus' last token");
  herd_generation_free(&g);
  free(seeds);
  herd_model_free(model);
}

// ---------------------------------------------------------------- errors

static void expect_einval(herd_model *model, int n, const int32_t *const *prompts,
                          const int *lengths, int k, const herd_sampling *sampling,
                          const uint64_t *seeds, const char *words) {
  herd_generation g;
  memset(&g, 0x5a, sizeof g);
  cr_assert_eq(herd_generate(model, n, prompts, lengths, k, sampling, seeds, &g), HERD_EINVAL,
               "expected HERD_EINVAL mentioning '%s'", words);
  cr_assert(strstr(herd_errmsg(), words), "message '%s' lacks '%s'", herd_errmsg(), words);
  cr_assert_null(g.tokens);
  cr_assert_null(g.logprobs);
  cr_assert_null(g.lengths);
  herd_generation_free(&g);
}

Test(generate, errors_name_the_prompt_or_field) {
  herd_model *model = tiny_model(20);
  int32_t a[4] = {1, 2, 3, 4}, bad[3] = {1, VOCAB, 2}, neg[2] = {0, -1};
  const int32_t *two[2] = {a, a}, *with_bad[2] = {a, bad}, *with_neg[2] = {a, neg};
  int lens[2] = {4, 4};
  const uint64_t seeds[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const herd_sampling ok = {.temperature = 1, .top_p = 1, .max_new = 4};
  herd_sampling s = ok;

  lens[1] = 0;
  expect_einval(model, 2, two, lens, 1, &ok, seeds, "prompt 1 is empty");
  lens[1] = MAX_SEQ - 3;
  expect_einval(model, 2, two, lens, 1, &ok, seeds, "prompt 1");  // 61 + 4 > 64
  lens[1] = 3;
  expect_einval(model, 2, with_bad, lens, 1, &ok, seeds, "prompt 1 has token 37 at position 1");
  lens[1] = 2;
  expect_einval(model, 2, with_neg, lens, 1, &ok, seeds, "prompt 1 has token -1 at position 1");
  lens[1] = 4;
  expect_einval(model, 2, two, lens, 0, &ok, seeds, "k");
  expect_einval(model, 0, two, lens, 1, &ok, seeds, "n_prompts");
  expect_einval(model, 2, two, lens, 1, &ok, NULL, "seeds");
  s.temperature = -1;
  expect_einval(model, 2, two, lens, 1, &s, seeds, "temperature");
  s.temperature = NAN;
  expect_einval(model, 2, two, lens, 1, &s, seeds, "temperature");
  s = ok, s.top_p = 0;
  expect_einval(model, 2, two, lens, 1, &s, seeds, "top_p");
  s.top_p = 1.5f;
  expect_einval(model, 2, two, lens, 1, &s, seeds, "top_p");
  s = ok, s.top_k = -2;
  expect_einval(model, 2, two, lens, 1, &s, seeds, "top_k");
  s = ok, s.max_new = 0;
  expect_einval(model, 2, two, lens, 1, &s, seeds, "max_new");
  const int32_t stop = VOCAB;
  s = ok, s.stop_tokens = &stop, s.n_stop = 1;
  expect_einval(model, 2, two, lens, 1, &s, seeds, "stop_tokens[0]");
  // the boundary itself is fine: 60 + 4 == 64
  lens[1] = MAX_SEQ - 4;
  int32_t long_prompt[MAX_SEQ] = {0};
  const int32_t *fits[2] = {a, long_prompt};
  herd_generation g;
  generate_ok(model, 2, fits, lens, 2, &ok, seeds, &g);
  herd_generation_free(&g);
  herd_model_free(model);
}
