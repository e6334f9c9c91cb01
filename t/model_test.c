// The Llama 2 model of model.h against a naive double-precision reference forward written here
// (HF LlamaForCausalLM semantics): the f32 logits and loss, then every gradient of the
// hand-written backward against central finite differences of the reference (LM loss with
// packed segments, restarting positions, signed loss weights and ignored targets, plus the
// scalar head through dscores), untied and tied. Then training semantics: overfitting a fixed
// batch, AdamW clipping/decay/freezing/NaN handling, the cosine schedule, bit-identical results
// for 1 and 2 threads, log-probabilities, and the error paths. Run with --verbose for errors.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "error.h"
#include "generate.h"
#include "gradcheck.h"
#include "model.h"
#include "threads.h"

#define FWD_TOL 1e-5   // scaled max error of the f32 forward against the double reference
#define GRAD_TOL 1e-4  // norm-wise relative error of each gradient against finite differences
#define FD_H 1e-5      // finite-difference step

enum { NT = 13, B = 2, T = 7, N = B * T, P = 3 };

static const char *tensor_names[NT] = {"embed",      "attn_norm", "wq",     "wk",   "wv",
                                       "wo",         "mlp_norm",  "w_gate", "w_up", "w_down",
                                       "final_norm", "lm_head",   "score"};
static const int is_norm[NT] = {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0};

static herd_model_config tiny_config(void) {
  return (herd_model_config){.dim = 16,
                             .n_layers = 2,
                             .n_heads = 4,
                             .n_kv_heads = 2,
                             .hidden_dim = 24,
                             .vocab_size = 19,
                             .max_seq_len = 32,
                             .norm_eps = 1e-5f,
                             .rope_theta = 500.0f,
                             .tie_embeddings = 0,
                             .lm_head = 1,
                             .scalar_head = 1};
}

// The fields of a params struct as an array, in buffer order.
static void fields(float *out[NT], const herd_model_params *s) {
  float *f[NT] = {s->embed,      s->attn_norm, s->wq,     s->wk,   s->wv,
                  s->wo,         s->mlp_norm,  s->w_gate, s->w_up, s->w_down,
                  s->final_norm, s->lm_head,   s->score};
  memcpy(out, f, sizeof f);
}

// Offsets (floats) and sizes of each tensor in the buffer; size 0 when absent or tied.
static void tensor_table(herd_model *m, size_t off[NT], size_t size[NT]) {
  size_t n;
  float *base = herd_model_param_buffer(m, &n);
  herd_model_params p;
  herd_model_param_slices(m, &p, NULL);
  float *f[NT];
  fields(f, &p);
  for (int i = 0; i < NT; i++) off[i] = f[i] ? (size_t)(f[i] - base) : n;
  if (herd_model_get_config(m)->tie_embeddings) off[11] = n;
  for (int i = 0; i < NT; i++) {
    size_t next = n;
    for (int j = 0; j < NT; j++)
      if (off[j] > off[i] && off[j] < next) next = off[j];
    size[i] = off[i] < n ? next - off[i] : 0;
  }
}

// Random parameters large enough to make every non-linearity matter.
static void random_params(herd_model *m, uint64_t seed) {
  size_t off[NT], size[NT];
  tensor_table(m, off, size);
  float *w = herd_model_param_buffer(m, NULL);
  for (int i = 0; i < NT; i++)
    if (size[i])
      gc_fill_uniform(w + off[i], (int64_t)size[i], seed + (uint64_t)i, is_norm[i] ? 0.5f : -0.4f,
                      is_norm[i] ? 1.5f : 0.4f);
}

// ---------------------------------------------------------------- the double reference

typedef struct ref {
  herd_model_config c;
  double *w;  // (n_params) the parameters in double
  size_t off[NT];
  const herd_batch *bt;
  double *logits;  // (N,V)
  double *scores;  // (P)
  // scratch
  double *x, *h, *q, *k, *v, *att, *gate, *up, *tmp, *xf;
} ref;

static void ref_rmsnorm(double *out, const double *x, const double *w, int n, int c, double eps) {
  for (int i = 0; i < n; i++) {
    double ss = 0;
    for (int j = 0; j < c; j++) ss += x[i * c + j] * x[i * c + j];
    double r = 1 / sqrt(ss / c + eps);
    for (int j = 0; j < c; j++) out[i * c + j] = x[i * c + j] * r * w[j];
  }
}

// 1: the reference rounds both operands of every matmul to bf16, as herd_model_set_precision
// with HERD_BF16 does (the sums stay in double).
static int ref_bf16;

static double ref_operand(double x) {
  return ref_bf16 ? (double)herd_bf16_to_f32(herd_f32_to_bf16((float)x)) : x;
}

// out(N,OC) = x(N,C) w(OC,C)^T
static void ref_linear(double *out, const double *x, const double *w, int n, int c, int oc) {
  for (int i = 0; i < n; i++)
    for (int o = 0; o < oc; o++) {
      double s = 0;
      for (int j = 0; j < c; j++) s += ref_operand(x[i * c + j]) * ref_operand(w[o * c + j]);
      out[i * oc + o] = s;
    }
}

// In place on x(N,heads,D), HF rotate_half.
static void ref_rope(double *x, const int32_t *pos, int n, int heads, int d, double theta) {
  for (int r = 0; r < n; r++)
    for (int hh = 0; hh < heads; hh++) {
      double *y = x + ((size_t)r * heads + hh) * d;
      for (int i = 0; i < d / 2; i++) {
        double angle = pos[r] * pow(theta, -2.0 * i / d), cs = cos(angle), sn = sin(angle);
        double a = y[i], b = y[i + d / 2];
        y[i] = a * cs - b * sn;
        y[i + d / 2] = b * cs + a * sn;
      }
    }
}

static void ref_attention(double *out, const double *q, const double *k, const double *v,
                          const int32_t *seg, int b, int t, int h, int kvh, int d) {
  double sc[64];
  for (int bb = 0; bb < b; bb++)
    for (int hh = 0; hh < h; hh++) {
      int kh = hh / (h / kvh);
      for (int i = 0; i < t; i++) {
        const double *qi = q + (((size_t)bb * t + i) * h + hh) * d;
        double mx = -INFINITY, sum = 0;
        for (int s = 0; s <= i; s++) {
          sc[s] = -INFINITY;
          if (seg && seg[bb * t + s] != seg[bb * t + i]) continue;
          const double *ks = k + (((size_t)bb * t + s) * kvh + kh) * d;
          double dot = 0;
          for (int j = 0; j < d; j++) dot += qi[j] * ks[j];
          sc[s] = dot / sqrt(d);
          mx = fmax(mx, sc[s]);
        }
        for (int s = 0; s <= i; s++)
          sum += sc[s] == -INFINITY ? (sc[s] = 0) : (sc[s] = exp(sc[s] - mx));
        double *o = out + (((size_t)bb * t + i) * h + hh) * d;
        for (int j = 0; j < d; j++) o[j] = 0;
        for (int s = 0; s <= i; s++) {
          const double *vs = v + (((size_t)bb * t + s) * kvh + kh) * d;
          for (int j = 0; j < d; j++) o[j] += sc[s] / sum * vs[j];
        }
      }
    }
}

static void ref_alloc(ref *r, herd_model *m, const herd_batch *bt) {
  memset(r, 0, sizeof *r);
  r->c = *herd_model_get_config(m);
  size_t n, size[NT];
  const float *w = herd_model_param_buffer(m, &n);
  tensor_table(m, r->off, size);
  if (r->c.tie_embeddings) r->off[11] = r->off[0];
  r->w = malloc(n * sizeof *r->w);
  gc_to_double(r->w, w, (int64_t)n);
  r->bt = bt;
  int nn = bt->b * bt->t, C = r->c.dim, F = r->c.hidden_dim, V = r->c.vocab_size;
  r->logits = calloc((size_t)nn * V, sizeof(double));
  r->scores = calloc((size_t)(bt->n_scores + 1), sizeof(double));
  double **bufs[] = {&r->x, &r->h, &r->q, &r->k, &r->v, &r->att, &r->tmp, &r->xf};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
    *bufs[i] = calloc((size_t)nn * C, sizeof(double));
  r->gate = calloc((size_t)nn * F, sizeof(double));
  r->up = calloc((size_t)nn * F, sizeof(double));
}

static void ref_free(ref *r) {
  double *bufs[] = {r->w, r->logits, r->scores, r->x,  r->h,    r->q, r->k,
                    r->v, r->att,    r->tmp,    r->xf, r->gate, r->up};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

// Forward in double; returns loss_scale * sum(w * nll) + sum(dscores * scores).
static double ref_loss(void *ctx) {
  ref *r = ctx;
  const herd_model_config *c = &r->c;
  const herd_batch *bt = r->bt;
  int n = bt->b * bt->t, C = c->dim, H = c->n_heads, KVH = c->n_kv_heads, D = C / H;
  int KVD = KVH * D, F = c->hidden_dim, V = c->vocab_size;
  const double *w = r->w;
  int32_t pos[256];
  for (int i = 0; i < n; i++) pos[i] = bt->positions ? bt->positions[i] : i % bt->t;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < C; j++) r->x[i * C + j] = w[r->off[0] + (size_t)bt->tokens[i] * C + j];
  for (int l = 0; l < c->n_layers; l++) {
    ref_rmsnorm(r->h, r->x, w + r->off[1] + l * C, n, C, c->norm_eps);
    ref_linear(r->q, r->h, w + r->off[2] + (size_t)l * C * C, n, C, C);
    ref_linear(r->k, r->h, w + r->off[3] + (size_t)l * KVD * C, n, C, KVD);
    ref_linear(r->v, r->h, w + r->off[4] + (size_t)l * KVD * C, n, C, KVD);
    ref_rope(r->q, pos, n, H, D, c->rope_theta);
    ref_rope(r->k, pos, n, KVH, D, c->rope_theta);
    ref_attention(r->att, r->q, r->k, r->v, bt->segments, bt->b, bt->t, H, KVH, D);
    ref_linear(r->tmp, r->att, w + r->off[5] + (size_t)l * C * C, n, C, C);
    for (int i = 0; i < n * C; i++) r->x[i] += r->tmp[i];
    ref_rmsnorm(r->h, r->x, w + r->off[6] + l * C, n, C, c->norm_eps);
    ref_linear(r->gate, r->h, w + r->off[7] + (size_t)l * F * C, n, C, F);
    ref_linear(r->up, r->h, w + r->off[8] + (size_t)l * F * C, n, C, F);
    for (int i = 0; i < n * F; i++) r->gate[i] = r->gate[i] / (1 + exp(-r->gate[i])) * r->up[i];
    ref_linear(r->tmp, r->gate, w + r->off[9] + (size_t)l * C * F, n, F, C);
    for (int i = 0; i < n * C; i++) r->x[i] += r->tmp[i];
  }
  ref_rmsnorm(r->xf, r->x, w + r->off[10], n, C, c->norm_eps);
  double loss = 0;
  if (c->lm_head) {
    ref_linear(r->logits, r->xf, w + r->off[11], n, C, V);
    if (bt->targets) {
      double scale = bt->loss_scale, sum = 0;
      int count = 0;
      for (int i = 0; i < n; i++) {
        if (bt->targets[i] < 0) continue;
        count++;
        const double *x = r->logits + (size_t)i * V;
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < V; j++) mx = fmax(mx, x[j]);
        for (int j = 0; j < V; j++) s += exp(x[j] - mx);
        double nll = mx + log(s) - x[bt->targets[i]];
        sum += (bt->weights ? bt->weights[i] : 1.0) * nll;
      }
      if (scale == 0) scale = count ? 1.0 / count : 0;
      loss += scale * sum;
    }
  }
  for (int p = 0; p < bt->n_scores; p++) {
    double s = 0;
    for (int j = 0; j < C; j++)
      s += r->xf[(size_t)bt->score_positions[p] * C + j] * w[r->off[12] + j];
    r->scores[p] = s;
    if (bt->dscores) loss += bt->dscores[p] * s;
  }
  return loss;
}

// ---------------------------------------------------------------- the test batch

static int32_t tokens[N], targets[N], positions[N] = {0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1};
static int32_t segments[N] = {0, 0, 0, 1, 1, 1, 1, 5, 5, 5, 5, 5, 6, 6};
static int32_t score_pos[P] = {2, 6, 12};
static float weights[N], dscores[P];

static herd_batch test_batch(int vocab) {
  float u[N];
  gc_fill_uniform(u, N, 11, 0, (float)vocab);
  for (int i = 0; i < N; i++) tokens[i] = (int32_t)u[i];
  gc_fill_uniform(u, N, 12, 0, (float)vocab);
  for (int i = 0; i < N; i++) targets[i] = (int32_t)u[i];
  targets[4] = -1;
  gc_fill_uniform(weights, N, 13, -1.0f, 1.5f);
  weights[9] = -0.7f;  // a negative weight for sure (PPO advantages)
  gc_fill_uniform(dscores, P, 14, -1.0f, 1.0f);
  return (herd_batch){.b = B,
                      .t = T,
                      .tokens = tokens,
                      .positions = positions,
                      .segments = segments,
                      .targets = targets,
                      .weights = weights,
                      .loss_scale = 0.37f,
                      .n_scores = P,
                      .score_positions = score_pos,
                      .dscores = dscores};
}

static double scaled_error(const float *got, const double *want, int64_t n) {
  double diff = 0, scale = 1e-30;
  for (int64_t i = 0; i < n; i++) {
    diff = fmax(diff, fabs(got[i] - want[i]));
    scale = fmax(scale, fabs(want[i]));
  }
  return diff / scale;
}

// ---------------------------------------------------------------- gradient check

static void check_whole_model(int tie) {
  herd_model_config cfg = tiny_config();
  cfg.tie_embeddings = tie;
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK, "%s", herd_errmsg());
  random_params(m, tie ? 200 : 100);
  herd_batch bt = test_batch(cfg.vocab_size);
  float loss;
  cr_assert_eq(herd_model_forward(m, &bt, &loss), HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(herd_model_backward(m, &bt), HERD_OK, "%s", herd_errmsg());

  ref r;
  ref_alloc(&r, m, &bt);
  double total = ref_loss(&r);
  double dot = 0;
  for (int p = 0; p < P; p++) dot += dscores[p] * r.scores[p];
  double lm_loss = total - dot;
  double err_logits = scaled_error(herd_model_logits(m), r.logits, (int64_t)N * cfg.vocab_size);
  double err_scores = scaled_error(herd_model_scores(m), r.scores, P);
  double err_loss = fabs(loss - lm_loss) / fmax(fabs(lm_loss), 1e-30);
  cr_log_info("tie=%d forward: logits %.2e, scores %.2e, loss %.2e (loss %.6f)", tie, err_logits,
              err_scores, err_loss, lm_loss);
  cr_expect(err_logits < FWD_TOL, "logits error %g", err_logits);
  cr_expect(err_scores < FWD_TOL, "scores error %g", err_scores);
  cr_expect(err_loss < FWD_TOL, "loss error %g", err_loss);

  size_t off[NT], size[NT];
  tensor_table(m, off, size);
  const float *grads = herd_model_grad_buffer(m, NULL);
  double worst = 0;
  for (int i = 0; i < NT; i++) {
    if (!size[i]) continue;
    double *numeric = malloc(size[i] * sizeof *numeric);
    gc_numeric_grad(numeric, r.w + off[i], (int64_t)size[i], ref_loss, &r, FD_H);
    double err = gc_rel_error(grads + off[i], numeric, (int64_t)size[i]);
    worst = fmax(worst, err);
    cr_log_info("tie=%d d%s (%zu): relative error %.2e", tie, tensor_names[i], size[i], err);
    cr_expect(err < GRAD_TOL, "tie=%d d%s: relative error %g >= %g", tie, tensor_names[i], err,
              GRAD_TOL);
    free(numeric);
  }
  cr_log_info("tie=%d: worst gradient error %.2e", tie, worst);
  ref_free(&r);
  herd_model_free(m);
}

Test(model, whole_model_gradients_match_finite_differences) {
  check_whole_model(0);
}

Test(model, tied_model_gradients_match_finite_differences) {
  check_whole_model(1);
}

// Default positions/segments/weights and loss_scale 0 against the reference.
Test(model, defaults_match_reference) {
  herd_model_config cfg = tiny_config();
  cfg.scalar_head = 0;
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  random_params(m, 7);
  herd_batch bt = test_batch(cfg.vocab_size);
  bt.positions = NULL, bt.segments = NULL, bt.weights = NULL, bt.loss_scale = 0;
  bt.n_scores = 0, bt.score_positions = NULL, bt.dscores = NULL;
  float loss;
  cr_assert_eq(herd_model_forward(m, &bt, &loss), HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(herd_model_backward(m, &bt), HERD_OK, "%s", herd_errmsg());
  ref r;
  ref_alloc(&r, m, &bt);
  double want = ref_loss(&r);
  cr_expect(fabs(loss - want) / want < FWD_TOL, "loss %g want %g", (double)loss, want);
  size_t off[NT], size[NT];
  tensor_table(m, off, size);
  const float *grads = herd_model_grad_buffer(m, NULL);
  for (int i = 0; i < NT; i++) {  // a few tensors suffice: the paths are shared
    if (!size[i] || (i != 0 && i != 2 && i != 3 && i != 11)) continue;
    double *numeric = malloc(size[i] * sizeof *numeric);
    gc_numeric_grad(numeric, r.w + off[i], (int64_t)size[i], ref_loss, &r, FD_H);
    double err = gc_rel_error(grads + off[i], numeric, (int64_t)size[i]);
    cr_expect(err < GRAD_TOL, "defaults d%s: relative error %g", tensor_names[i], err);
    free(numeric);
  }
  ref_free(&r);
  herd_model_free(m);
}

Test(model, backward_accumulates) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  random_params(m, 5);
  herd_batch bt = test_batch(cfg.vocab_size);
  size_t n;
  float *g = herd_model_grad_buffer(m, &n);
  cr_assert_eq(herd_model_forward(m, &bt, NULL), HERD_OK);
  cr_assert_eq(herd_model_backward(m, &bt), HERD_OK);
  float *once = malloc(n * sizeof *once);
  memcpy(once, g, n * sizeof *once);
  cr_assert_eq(herd_model_backward(m, &bt), HERD_OK);
  for (size_t i = 0; i < n; i++)
    cr_assert(fabsf(g[i] - 2 * once[i]) <= 1e-5f * fabsf(once[i]) + 1e-9f, "grad[%zu]", i);
  herd_model_zero_grad(m);
  for (size_t i = 0; i < n; i++) cr_assert_eq(g[i], 0.0f);
  free(once);
  herd_model_free(m);
}

// ---------------------------------------------------------------- training

static const herd_adamw adam = {.lr = 1e-2f,
                                .beta1 = 0.9f,
                                .beta2 = 0.99f,
                                .eps = 1e-8f,
                                .weight_decay = 0.0f,
                                .grad_clip = 1.0f};

Test(model, overfits_a_fixed_batch) {
  herd_model_config cfg = {.dim = 32,
                           .n_layers = 2,
                           .n_heads = 4,
                           .n_kv_heads = 2,
                           .hidden_dim = 64,
                           .vocab_size = 32,
                           .max_seq_len = 64,
                           .norm_eps = 1e-5f,
                           .rope_theta = 10000.0f,
                           .lm_head = 1};
  enum { BB = 2, TT = 16 };
  int32_t tok[BB * TT], tgt[BB * TT];
  float u[BB * TT];
  gc_fill_uniform(u, BB * TT, 3, 0, 32);
  for (int i = 0; i < BB * TT; i++) tok[i] = (int32_t)u[i];
  for (int i = 0; i < BB * TT; i++) tgt[i] = (i + 1) % TT ? tok[i + 1] : -1;
  herd_batch bt = {.b = BB, .t = TT, .tokens = tok, .targets = tgt};
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, BB, TT), HERD_OK);
  herd_model_init(m, 42);
  float loss = 0, first = 0, norm;
  int step;
  for (step = 0; step < 400; step++) {
    herd_model_zero_grad(m);
    cr_assert_eq(herd_model_forward(m, &bt, &loss), HERD_OK, "%s", herd_errmsg());
    if (step == 0) first = loss;
    if (loss < 0.05f) break;
    cr_assert_eq(herd_model_backward(m, &bt), HERD_OK);
    cr_assert_eq(herd_model_step(m, &adam, &norm), HERD_OK, "%s", herd_errmsg());
  }
  cr_log_info("overfit: loss %.4f -> %.4f after %d steps", (double)first, (double)loss, step);
  cr_expect(fabsf(first - logf(32)) < 0.1f, "initial loss %g, want ~ln 32", (double)first);
  cr_expect(loss < 0.05f, "loss %g after %d steps", (double)loss, step);
  cr_expect_eq(herd_model_step_count(m), step);
  herd_model_free(m);
}

Test(model, init_is_deterministic_with_unit_norms) {
  herd_model_config cfg = tiny_config();
  herd_model *a, *b;
  cr_assert_eq(herd_model_new(&a, &cfg, 1, 4), HERD_OK);
  cr_assert_eq(herd_model_new(&b, &cfg, 1, 4), HERD_OK);
  herd_model_init(a, 9);
  herd_model_init(b, 9);
  size_t n, off[NT], size[NT];
  float *wa = herd_model_param_buffer(a, &n), *wb = herd_model_param_buffer(b, NULL);
  cr_expect(memcmp(wa, wb, n * sizeof *wa) == 0);
  cr_expect_eq(n, herd_model_param_count(&cfg));
  tensor_table(a, off, size);
  for (int i = 0; i < NT; i++) {
    double ss = 0;
    for (size_t j = 0; j < size[i]; j++) {
      if (is_norm[i]) cr_assert_eq(wa[off[i] + j], 1.0f, "%s", tensor_names[i]);
      ss += (double)wa[off[i] + j] * wa[off[i] + j];
    }
    if (!is_norm[i] && size[i] > 100) {
      double sd = sqrt(ss / size[i]);
      cr_expect(sd > 0.015 && sd < 0.025, "%s std %g", tensor_names[i], sd);
    }
  }
  cr_expect(wa[off[2]] != wa[off[3]], "tensors draw distinct streams");
  herd_model_init(b, 10);
  cr_expect(memcmp(wa, wb, n * sizeof *wa) != 0);
  herd_model_free(a);
  herd_model_free(b);
}

Test(model, layout_follows_params_order) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, 1, 4), HERD_OK);
  size_t n, off[NT], size[NT];
  herd_model_param_buffer(m, &n);
  tensor_table(m, off, size);
  size_t C = 16, L = 2, KVD = 8, F = 24, V = 19;
  size_t want[NT] = {V * C,     L * C,     L * C * C, L * KVD * C, L * KVD * C, L * C * C, L * C,
                     L * F * C, L * F * C, L * C * F, C,           V * C,       C};
  size_t at = 0;
  for (int i = 0; i < NT; i++) {
    cr_expect_eq(off[i], at, "%s offset", tensor_names[i]);
    cr_expect_eq(size[i], want[i], "%s size", tensor_names[i]);
    at += want[i];
  }
  cr_expect_eq(n, at);
  herd_model_params p, g;
  herd_model_param_slices(m, &p, &g);
  cr_expect_eq(g.embed, herd_model_grad_buffer(m, NULL));
  size_t small = herd_model_activation_bytes(m);
  herd_model_free(m);
  cr_assert_eq(herd_model_new(&m, &cfg, 2, 8), HERD_OK);
  cr_expect(small > 0 && herd_model_activation_bytes(m) > 3 * small);
  herd_model_free(m);
  cfg.tie_embeddings = 1, cfg.scalar_head = 0;
  cr_assert_eq(herd_model_new(&m, &cfg, 1, 4), HERD_OK);
  herd_model_param_slices(m, &p, NULL);
  cr_expect_eq(p.lm_head, p.embed);
  cr_expect_null(p.score);
  cr_expect_eq(herd_model_param_count(&cfg), at - V * C - C);
  herd_model_free(m);
}

// Gradients written by hand, then one step.
static herd_model *model_with_grads(float fill_grad) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, 1, 4), HERD_OK);
  herd_model_init(m, 3);
  size_t n;
  float *g = herd_model_grad_buffer(m, &n);
  if (fill_grad != 0) gc_fill_uniform(g, (int64_t)n, 21, -fill_grad, fill_grad);
  return m;
}

Test(model, clipping_reports_pre_clip_norm) {
  herd_model *m = model_with_grads(1.0f);
  size_t n;
  const float *g = herd_model_grad_buffer(m, &n);
  double ss = 0;
  for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
  float *g0 = malloc(n * sizeof *g0);
  memcpy(g0, g, n * sizeof *g0);
  herd_adamw opt = adam;
  opt.grad_clip = 0.5f;
  float norm;
  cr_assert_eq(herd_model_step(m, &opt, &norm), HERD_OK);
  cr_expect(fabs(norm - sqrt(ss)) < 1e-5 * sqrt(ss), "norm %g want %g", (double)norm, sqrt(ss));
  const float *m1 = herd_model_adam_moments(m, NULL);
  double scale = 0.5 / sqrt(ss);
  for (size_t i = 0; i < n; i++) {
    double want = (1 - 0.9) * g0[i] * scale;
    cr_assert(fabs(m1[i] - want) <= 1e-6 * fabs(want) + 1e-12, "m[%zu] = %g want %g", i,
              (double)m1[i], want);
  }
  cr_expect_eq(herd_model_step_count(m), 1);
  free(g0);
  herd_model_free(m);
}

Test(model, weight_decay_skips_norms) {
  herd_model *m = model_with_grads(0);
  size_t n, off[NT], size[NT];
  float *w = herd_model_param_buffer(m, &n);
  tensor_table(m, off, size);
  float *before = malloc(n * sizeof *before);
  memcpy(before, w, n * sizeof *before);
  herd_adamw opt = adam;
  opt.lr = 0.1f, opt.weight_decay = 0.5f;
  cr_assert_eq(herd_model_step(m, &opt, NULL), HERD_OK);
  for (int i = 0; i < NT; i++)
    for (size_t j = off[i]; j < off[i] + size[i]; j++) {
      float want = is_norm[i] ? before[j] : before[j] - 0.05f * before[j];
      cr_assert(fabsf(w[j] - want) <= 1e-7f * fabsf(want), "%s[%zu] = %g want %g", tensor_names[i],
                j - off[i], (double)w[j], (double)want);
    }
  free(before);
  herd_model_free(m);
}

Test(model, frozen_trunk_stays_bit_identical) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  herd_model_init(m, 4);
  herd_batch bt = test_batch(cfg.vocab_size);
  size_t n, off[NT], size[NT];
  float *w = herd_model_param_buffer(m, &n), *g = herd_model_grad_buffer(m, NULL);
  tensor_table(m, off, size);
  float *before = malloc(n * sizeof *before);
  memcpy(before, w, n * sizeof *before);
  herd_model_set_trainable(m, 0, 1, 1);
  for (int s = 0; s < 2; s++) {
    herd_model_zero_grad(m);
    cr_assert_eq(herd_model_forward(m, &bt, NULL), HERD_OK);
    cr_assert_eq(herd_model_backward(m, &bt), HERD_OK);
    for (size_t i = 0; i < off[11]; i++) cr_assert_eq(g[i], 0.0f, "trunk grad %zu", i);
    cr_assert_eq(herd_model_step(m, &adam, NULL), HERD_OK);
  }
  cr_expect(memcmp(w, before, off[11] * sizeof *w) == 0, "trunk changed");
  cr_expect(memcmp(w + off[11], before + off[11], size[11] * sizeof *w) != 0, "lm_head frozen");
  cr_expect(memcmp(w + off[12], before + off[12], size[12] * sizeof *w) != 0, "score frozen");
  // Now freeze the heads instead: they stay, the trunk moves.
  memcpy(before, w, n * sizeof *before);
  herd_model_set_trainable(m, 1, 0, 0);
  herd_model_zero_grad(m);
  cr_assert_eq(herd_model_forward(m, &bt, NULL), HERD_OK);
  cr_assert_eq(herd_model_backward(m, &bt), HERD_OK);
  cr_assert_eq(herd_model_step(m, &adam, NULL), HERD_OK);
  cr_expect(memcmp(w + off[11], before + off[11], (n - off[11]) * sizeof *w) == 0);
  cr_expect(memcmp(w, before, off[11] * sizeof *w) != 0);
  free(before);
  herd_model_free(m);
}

Test(model, nan_gradient_stops_the_step) {
  herd_model *m = model_with_grads(1.0f);
  cr_assert_eq(herd_model_step(m, &adam, NULL), HERD_OK);
  size_t n;
  float *w = herd_model_param_buffer(m, &n), *g = herd_model_grad_buffer(m, NULL), *m2;
  float *m1 = herd_model_adam_moments(m, &m2);
  float *saved = malloc(3 * n * sizeof *saved);
  memcpy(saved, w, n * sizeof *w);
  memcpy(saved + n, m1, n * sizeof *w);
  memcpy(saved + 2 * n, m2, n * sizeof *w);
  g[n / 2] = NAN;
  float norm = 0;
  cr_assert_eq(herd_model_step(m, &adam, &norm), HERD_EINVAL);
  cr_expect(isnan(norm));
  cr_expect(strstr(herd_errmsg(), "step 2: gradient norm is nan"), "%s", herd_errmsg());
  cr_expect(memcmp(saved, w, n * sizeof *w) == 0, "params changed");
  cr_expect(memcmp(saved + n, m1, n * sizeof *w) == 0, "first moment changed");
  cr_expect(memcmp(saved + 2 * n, m2, n * sizeof *w) == 0, "second moment changed");
  cr_expect_eq(herd_model_step_count(m), 1);
  g[n / 2] = INFINITY;
  cr_assert_eq(herd_model_step(m, &adam, NULL), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "inf"), "%s", herd_errmsg());
  free(saved);
  herd_model_free(m);
}

Test(model, nan_loss_is_an_error) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  herd_model_init(m, 4);
  herd_model_params p;
  herd_model_param_slices(m, &p, NULL);
  p.final_norm[3] = NAN;
  herd_batch bt = test_batch(cfg.vocab_size);
  float loss;
  cr_expect_eq(herd_model_forward(m, &bt, &loss), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "loss is nan"), "%s", herd_errmsg());
  cr_expect_eq(herd_model_backward(m, &bt), HERD_ESTATE);
  herd_model_free(m);
}

Test(model, cosine_schedule) {
  cr_expect_float_eq(herd_lr_cosine(1, 1.0f, 10, 110, 0.1f), 0.1f, 1e-7);
  cr_expect_float_eq(herd_lr_cosine(5, 1.0f, 10, 110, 0.1f), 0.5f, 1e-7);
  cr_expect_float_eq(herd_lr_cosine(10, 1.0f, 10, 110, 0.1f), 1.0f, 1e-7);
  cr_expect_float_eq(herd_lr_cosine(60, 1.0f, 10, 110, 0.1f), 0.55f, 1e-6);
  double at35 = 0.1 + 0.9 * 0.5 * (1 + cos(3.14159265358979 * 0.25));
  cr_expect_float_eq(herd_lr_cosine(35, 1.0f, 10, 110, 0.1f), (float)at35, 1e-6);
  cr_expect_float_eq(herd_lr_cosine(110, 1.0f, 10, 110, 0.1f), 0.1f, 1e-7);
  cr_expect_float_eq(herd_lr_cosine(500, 2.0f, 10, 110, 0.1f), 0.2f, 1e-7);
  cr_expect_float_eq(herd_lr_cosine(0, 3e-4f, 0, 100, 0.0f), 3e-4f, 1e-9);
  cr_expect_float_eq(herd_lr_cosine(100, 3e-4f, 0, 100, 0.0f), 0.0f, 1e-9);
}

// ---------------------------------------------------------------- determinism

static void train3(float *out, size_t n) {
  herd_model_config cfg = {.dim = 64,
                           .n_layers = 2,
                           .n_heads = 4,
                           .n_kv_heads = 2,
                           .hidden_dim = 160,
                           .vocab_size = 512,
                           .max_seq_len = 64,
                           .norm_eps = 1e-5f,
                           .rope_theta = 10000.0f,
                           .lm_head = 1,
                           .scalar_head = 1};
  enum { BB = 2, TT = 48 };
  static int32_t tok[BB * TT], tgt[BB * TT], seg[BB * TT], pos[BB * TT];
  float u[BB * TT], ds[4] = {0.5f, -1.0f, 2.0f, 0.25f};
  int32_t sp[4] = {10, 47, 60, 95};
  gc_fill_uniform(u, BB * TT, 31, 0, 512);
  for (int i = 0; i < BB * TT; i++) {
    tok[i] = (int32_t)u[i], tgt[i] = (int32_t)u[(i + 1) % (BB * TT)];
    seg[i] = (i % TT) < 20 ? 0 : 1, pos[i] = (i % TT) < 20 ? i % TT : i % TT - 20;
  }
  herd_batch bt = {.b = BB,
                   .t = TT,
                   .tokens = tok,
                   .positions = pos,
                   .segments = seg,
                   .targets = tgt,
                   .n_scores = 4,
                   .score_positions = sp,
                   .dscores = ds};
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, BB, TT), HERD_OK);
  cr_assert_eq(herd_model_param_count(&cfg), n);
  herd_model_init(m, 77);
  for (int s = 0; s < 3; s++) {
    herd_model_zero_grad(m);
    cr_assert_eq(herd_model_forward(m, &bt, NULL), HERD_OK);
    cr_assert_eq(herd_model_backward(m, &bt), HERD_OK);
    cr_assert_eq(herd_model_step(m, &adam, NULL), HERD_OK);
  }
  memcpy(out, herd_model_param_buffer(m, NULL), n * sizeof *out);
  float *m2, *m1 = herd_model_adam_moments(m, &m2);
  memcpy(out + n, m1, n * sizeof *out);
  memcpy(out + 2 * n, m2, n * sizeof *out);
  herd_model_free(m);
}

Test(model, one_and_two_threads_give_identical_bits) {
  herd_model_config cfg = {.dim = 64,
                           .n_layers = 2,
                           .n_heads = 4,
                           .n_kv_heads = 2,
                           .hidden_dim = 160,
                           .vocab_size = 512,
                           .max_seq_len = 64,
                           .norm_eps = 1e-5f,
                           .rope_theta = 10000.0f,
                           .lm_head = 1,
                           .scalar_head = 1};
  size_t n = herd_model_param_count(&cfg);
  float *one = malloc(3 * n * sizeof *one), *two = malloc(3 * n * sizeof *two);
  cr_assert_eq(herd_set_threads(1), HERD_OK);
  train3(one, n);
  cr_assert_eq(herd_set_threads(2), HERD_OK);
  train3(two, n);
  cr_expect(memcmp(one, two, 3 * n * sizeof *one) == 0, "1 and 2 threads differ");
  free(one);
  free(two);
}

// ---------------------------------------------------------------- log-probabilities

Test(model, logprobs_equal_minus_nll) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  random_params(m, 8);
  herd_batch bt = test_batch(cfg.vocab_size);
  bt.weights = NULL, bt.loss_scale = 1.0f;
  float loss, lp[N], logits[N * 19];
  cr_assert_eq(herd_model_forward(m, &bt, &loss), HERD_OK);
  memcpy(logits, herd_model_logits(m), sizeof logits);
  cr_assert_eq(herd_model_logprobs(m, &bt, lp), HERD_OK, "%s", herd_errmsg());
  cr_expect(memcmp(logits, herd_model_logits(m), sizeof logits) == 0, "same logits");
  double sum = 0;
  for (int i = 0; i < N; i++) {
    sum += lp[i];
    if (targets[i] < 0) {
      cr_expect_eq(lp[i], 0.0f);
      continue;
    }
    double mx = -INFINITY, s = 0;
    for (int j = 0; j < 19; j++) mx = fmax(mx, logits[i * 19 + j]);
    for (int j = 0; j < 19; j++) s += exp(logits[i * 19 + j] - mx);
    double want = logits[i * 19 + targets[i]] - mx - log(s);
    cr_expect(fabs(lp[i] - want) < 1e-5, "lp[%d] = %g want %g", i, (double)lp[i], want);
    cr_expect(lp[i] <= 0);
  }
  cr_expect(fabs(-sum - loss) < 1e-5 * fabs(loss), "sum %g loss %g", -sum, (double)loss);
  bt.targets = NULL;
  cr_expect_eq(herd_model_logprobs(m, &bt, lp), HERD_EINVAL);
  herd_model_free(m);
}

Test(model, read_and_write_copy_the_buffers) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  cr_expect_str_eq(herd_model_device(m), "cpu");
  random_params(m, 5);
  size_t n;
  const float *params = herd_model_param_buffer(m, &n);
  float *copy = malloc(n * sizeof(float));
  cr_assert_eq(herd_model_read(m, HERD_MODEL_PARAMS, copy, n), HERD_OK);
  cr_expect(memcmp(copy, params, n * sizeof(float)) == 0, "read gives the buffer");
  float one;
  cr_expect_eq(herd_model_read(m, HERD_MODEL_LOGITS, &one, 1), HERD_EINVAL, "no forward yet");
  cr_expect(strstr(herd_errmsg(), "1 logits asked for, the model holds 0"), "%s", herd_errmsg());
  herd_batch bt = test_batch(cfg.vocab_size);
  float loss, logits[N * 19];
  cr_assert_eq(herd_model_forward(m, &bt, &loss), HERD_OK);
  cr_assert_eq(herd_model_read(m, HERD_MODEL_LOGITS, logits, N * 19), HERD_OK);
  cr_expect(memcmp(logits, herd_model_logits(m), sizeof logits) == 0, "read gives the logits");
  for (size_t i = 0; i < n; i++) copy[i] = (float)i * 1e-3f;
  cr_assert_eq(herd_model_write(m, HERD_MODEL_PARAMS, copy, n), HERD_OK);
  cr_expect(memcmp(copy, params, n * sizeof(float)) == 0, "write sets the buffer");
  cr_expect_eq(herd_model_write(m, HERD_MODEL_PARAMS, copy, n - 1), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "parameters given"), "%s", herd_errmsg());
  cr_expect_eq(herd_model_write(m, HERD_MODEL_LOGITS, copy, 1), HERD_EINVAL);
  free(copy);
  herd_model_free(m);
}

// ---------------------------------------------------------------- backends

// "staged": the CPU's kernels behind a table of their own, so the model treats its memory as a
// device's (batches staged into device slots, results downloaded, herd_model_to copying) while
// the arithmetic, and so every bit, stays the CPU's. Kernels that read batch arrays check that
// each one lies in memory this backend allocated: a host array passed through unstaged fails.
enum { MAX_STAGED_BLOCKS = 64 };
static struct {
  const char *ptr;
  size_t bytes;
} staged_blocks[MAX_STAGED_BLOCKS];
static int staged_allocs_left = -1;  // >= 0: allocations that succeed before one fails

static int staged_alloc(void **ptr, size_t bytes) {
  *ptr = NULL;
  if (staged_allocs_left == 0) return herd_seterr(HERD_ENOMEM, "staged: out of device memory");
  if (staged_allocs_left > 0) staged_allocs_left--;
  int rc = herd_cpu_backend.alloc(ptr, bytes);
  for (int i = 0; !rc && *ptr && i < MAX_STAGED_BLOCKS; i++)
    if (!staged_blocks[i].ptr) {
      staged_blocks[i].ptr = *ptr, staged_blocks[i].bytes = bytes;
      return HERD_OK;
    }
  return rc;
}

static void staged_release(void *ptr) {
  for (int i = 0; i < MAX_STAGED_BLOCKS; i++)
    if (staged_blocks[i].ptr == ptr) staged_blocks[i].ptr = NULL;
  herd_cpu_backend.release(ptr);
}

static void expect_on_device(const void *p, const char *what) {
  if (!p) return;
  for (int i = 0; i < MAX_STAGED_BLOCKS; i++)
    if (staged_blocks[i].ptr && (const char *)p >= staged_blocks[i].ptr &&
        (const char *)p < staged_blocks[i].ptr + staged_blocks[i].bytes)
      return;
  cr_expect(0, "%s (%p) is host memory, not the backend's", what, p);
}

static int staged_embedding_forward(float *out, const int32_t *tok, const float *table, int n,
                                    int vocab, int c) {
  expect_on_device(tok, "embedding tokens");
  return herd_cpu_backend.embedding_forward(out, tok, table, n, vocab, c);
}
static int staged_embedding_backward(float *dtable, const float *dout, const int32_t *tok, int n,
                                     int c) {
  expect_on_device(tok, "embedding_backward tokens");
  return herd_cpu_backend.embedding_backward(dtable, dout, tok, n, c);
}
static int staged_rope_forward(float *out, const float *inp, const int32_t *pos, int n, int heads,
                               int head_dim, float theta) {
  expect_on_device(pos, "rope positions");
  return herd_cpu_backend.rope_forward(out, inp, pos, n, heads, head_dim, theta);
}
static int staged_rope_backward(float *dinp, const float *dout, const int32_t *pos, int n,
                                int heads, int head_dim, float theta) {
  expect_on_device(pos, "rope_backward positions");
  return herd_cpu_backend.rope_backward(dinp, dout, pos, n, heads, head_dim, theta);
}
static int staged_attention_forward(float *out, float *lse, const float *q, const float *k,
                                    const float *v, const int32_t *seg, int b, int t, int h,
                                    int kvh, int d) {
  expect_on_device(seg, "attention segments");
  return herd_cpu_backend.attention_forward(out, lse, q, k, v, seg, b, t, h, kvh, d);
}
static int staged_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                     const float *q, const float *k, const float *v,
                                     const float *out, const float *lse, const int32_t *seg, int b,
                                     int t, int h, int kvh, int d) {
  expect_on_device(seg, "attention_backward segments");
  return herd_cpu_backend.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, seg, b, t, h, kvh,
                                             d);
}
static int staged_weighted_nll(float *losses, float *dlogits, const float *logits,
                               const int32_t *tgt, const float *w, float dloss, int n, int v) {
  expect_on_device(tgt, "nll targets");
  expect_on_device(w, "nll weights");
  return herd_cpu_backend.weighted_nll(losses, dlogits, logits, tgt, w, dloss, n, v);
}
static int staged_scalar_head_forward(float *out, const float *hidden, const float *weight,
                                      float bias, const int32_t *pos, int p, int n, int c) {
  expect_on_device(pos, "score positions");
  return herd_cpu_backend.scalar_head_forward(out, hidden, weight, bias, pos, p, n, c);
}
static int staged_scalar_head_backward(float *dhidden, float *dweight, float *dbias,
                                       const float *dout, const float *hidden, const float *weight,
                                       const int32_t *pos, int p, int c) {
  expect_on_device(pos, "score_backward positions");
  expect_on_device(dout, "dscores");
  return herd_cpu_backend.scalar_head_backward(dhidden, dweight, dbias, dout, hidden, weight, pos,
                                               p, c);
}

static int staged_kv_store(void *k_cache, void *v_cache, herd_dtype cache, const float *k,
                           const float *v, const int32_t *seq, const int32_t *pos, int rows,
                           int max_len, int kv_dim) {
  expect_on_device(seq, "kv_store sequences");
  expect_on_device(pos, "kv_store positions");
  return herd_cpu_backend.kv_store(k_cache, v_cache, cache, k, v, seq, pos, rows, max_len, kv_dim);
}
static int staged_cached_attention(float *att, const float *q, const void *k_cache,
                                   const void *v_cache, herd_dtype cache, const int32_t *seq,
                                   const int32_t *pos, int rows, int max_len, int h, int kvh,
                                   int d) {
  expect_on_device(seq, "cached_attention sequences");
  expect_on_device(pos, "cached_attention positions");
  return herd_cpu_backend.cached_attention(att, q, k_cache, v_cache, cache, seq, pos, rows, max_len,
                                           h, kvh, d);
}
static int staged_gather_rows(float *dst, const float *src, const int32_t *index, int n, int c) {
  expect_on_device(index, "gather_rows index");
  return herd_cpu_backend.gather_rows(dst, src, index, n, c);
}

static herd_backend staged_backend(void) {
  herd_backend be = herd_cpu_backend;
  be.name = "staged";
  be.alloc = staged_alloc;
  be.release = staged_release;
  be.embedding_forward = staged_embedding_forward;
  be.embedding_backward = staged_embedding_backward;
  be.rope_forward = staged_rope_forward;
  be.rope_backward = staged_rope_backward;
  be.attention_forward = staged_attention_forward;
  be.attention_backward = staged_attention_backward;
  be.weighted_nll = staged_weighted_nll;
  be.scalar_head_forward = staged_scalar_head_forward;
  be.scalar_head_backward = staged_scalar_head_backward;
  be.kv_store = staged_kv_store;
  be.cached_attention = staged_cached_attention;
  be.gather_rows = staged_gather_rows;
  return be;
}

// Parameters (or moments) of a model on any backend, as a malloc'd host copy.
static float *read_all(const herd_model *m, herd_model_buffer which) {
  size_t n = herd_model_param_count(herd_model_get_config(m));
  float *host = malloc(n * sizeof(float));
  cr_assert_eq(herd_model_read(m, which, host, n), HERD_OK, "%s", herd_errmsg());
  return host;
}

static void expect_same_buffers(const herd_model *a, const herd_model *b, const char *when) {
  size_t n = herd_model_param_count(herd_model_get_config(a));
  herd_model_buffer which[4] = {HERD_MODEL_PARAMS, HERD_MODEL_GRADS, HERD_MODEL_ADAM_M,
                                HERD_MODEL_ADAM_V};
  for (int i = 0; i < 4; i++) {
    float *x = read_all(a, which[i]), *y = read_all(b, which[i]);
    cr_expect(memcmp(x, y, n * sizeof(float)) == 0, "%s: buffer %d differs", when, i);
    free(x), free(y);
  }
  cr_expect_eq(herd_model_step_count(a), herd_model_step_count(b), "%s: step count", when);
}

// forward + backward + step on a model; the loss, and the logits and scores as read back.
static float train_once(herd_model *m, const herd_batch *bt, float *logits, float *scores) {
  float loss = 0;
  herd_model_zero_grad(m);
  cr_assert_eq(herd_model_forward(m, bt, &loss), HERD_OK, "%s", herd_errmsg());
  int v = herd_model_get_config(m)->vocab_size;
  cr_assert_eq(herd_model_read(m, HERD_MODEL_LOGITS, logits, (size_t)bt->b * bt->t * v), HERD_OK);
  cr_assert_eq(herd_model_read(m, HERD_MODEL_SCORES, scores, (size_t)bt->n_scores), HERD_OK);
  cr_assert_eq(herd_model_backward(m, bt), HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(herd_model_step(m, &adam, NULL), HERD_OK, "%s", herd_errmsg());
  return loss;
}

Test(model, a_staged_backend_trains_bit_for_bit_like_the_cpu) {
  herd_model_config cfg = tiny_config();
  herd_backend staged = staged_backend();
  herd_model *cpu, *dev;
  cr_assert_eq(herd_model_new(&cpu, &cfg, B, 8), HERD_OK);
  cr_assert_eq(herd_model_new_on(&dev, &cfg, B, 8, &staged), HERD_OK);
  cr_expect_str_eq(herd_model_device(dev), "staged");
  cr_expect_not(herd_model_on_host(dev));
  cr_assert_eq(herd_model_init(cpu, 21), HERD_OK);
  cr_assert_eq(herd_model_init(dev, 21), HERD_OK);
  expect_same_buffers(cpu, dev, "after init");
  herd_batch full = test_batch(cfg.vocab_size), plain = full;
  plain.positions = plain.segments = NULL, plain.weights = NULL, plain.loss_scale = 0;
  const herd_batch *batches[2] = {&full, &plain};  // given arrays, then the defaults
  float logits[2][N * 19], scores[2][P];
  for (int step = 0; step < 4; step++) {
    const herd_batch *bt = batches[step % 2];
    float a = train_once(cpu, bt, logits[0], scores[0]);
    float b = train_once(dev, bt, logits[1], scores[1]);
    cr_expect_eq(a, b, "step %d: loss %.9g vs %.9g", step, (double)a, (double)b);
    cr_expect(memcmp(logits[0], logits[1], sizeof logits[0]) == 0, "step %d: logits", step);
    cr_expect(memcmp(scores[0], scores[1], sizeof scores[0]) == 0, "step %d: scores", step);
  }
  expect_same_buffers(cpu, dev, "after 4 steps");
  float lp[2][N];
  cr_assert_eq(herd_model_logprobs(cpu, &full, lp[0]), HERD_OK);
  cr_assert_eq(herd_model_logprobs(dev, &full, lp[1]), HERD_OK, "%s", herd_errmsg());
  cr_expect(memcmp(lp[0], lp[1], sizeof lp[0]) == 0, "logprobs");
  herd_model_free(cpu);
  herd_model_free(dev);
}

Test(model, to_moves_weights_moments_steps_and_frozen_parts) {
  herd_model_config cfg = tiny_config();
  herd_backend staged = staged_backend();
  herd_model *m, *twin;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  cr_assert_eq(herd_model_new(&twin, &cfg, B, 8), HERD_OK);
  herd_model_init(m, 3);
  herd_model_init(twin, 3);
  herd_batch bt = test_batch(cfg.vocab_size);
  float logits[N * 19], scores[P];
  herd_model_set_trainable(m, 1, 0, 1);  // the LM head frozen, on both
  herd_model_set_trainable(twin, 1, 0, 1);
  train_once(m, &bt, logits, scores);
  train_once(twin, &bt, logits, scores);
  cr_assert_eq(herd_model_to(m, &staged, 0, 0), HERD_OK, "%s", herd_errmsg());
  cr_expect_str_eq(herd_model_device(m), "staged");
  expect_same_buffers(m, twin, "after the move");
  for (int step = 0; step < 2; step++) {  // training goes on where it was, frozen head included
    float a = train_once(m, &bt, logits, scores), b = train_once(twin, &bt, logits, scores);
    cr_expect_eq(a, b, "step %d after the move", step);
  }
  expect_same_buffers(m, twin, "trained on the staged backend");
  // Back to the host with room for bigger batches; a backward needs a new forward first.
  cr_assert_eq(herd_model_to(m, &herd_cpu_backend, B + 1, 12), HERD_OK);
  cr_expect(herd_model_on_host(m));
  cr_expect_eq(herd_model_backward(m, &bt), HERD_ESTATE, "the activations did not move");
  expect_same_buffers(m, twin, "back on the cpu");
  herd_batch wide = {.b = B + 1, .t = 12, .tokens = (int32_t[36]){0}};
  cr_expect_eq(herd_model_forward(m, &wide, NULL), HERD_OK, "%s", herd_errmsg());
  herd_model_free(m);
  herd_model_free(twin);
}

Test(model, a_failed_move_leaves_the_model_where_it_was) {
  herd_model_config cfg = tiny_config();
  herd_backend staged = staged_backend();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  herd_model_init(m, 4);
  float *before = read_all(m, HERD_MODEL_PARAMS);
  for (int allowed = 0; allowed < 4; allowed++) {  // out of memory at each of the buffers
    staged_allocs_left = allowed;
    cr_expect_eq(herd_model_to(m, &staged, 0, 0), HERD_ENOMEM, "fails after %d", allowed);
    staged_allocs_left = -1;
    cr_expect(strstr(herd_errmsg(), "out of memory"), "%s", herd_errmsg());
    cr_expect_str_eq(herd_model_device(m), "cpu");
  }
  for (int i = 0; i < MAX_STAGED_BLOCKS; i++) cr_expect_null(staged_blocks[i].ptr, "leaked");
  float *after = read_all(m, HERD_MODEL_PARAMS);
  size_t n = herd_model_param_count(&cfg);
  cr_expect(memcmp(before, after, n * sizeof(float)) == 0);
  herd_batch bt = test_batch(cfg.vocab_size);
  cr_expect_eq(herd_model_forward(m, &bt, NULL), HERD_OK);
  free(before), free(after);
  herd_model_free(m);
}

// The bytes of a file, malloc'd.
static char *slurp(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "%s", path);
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  char *bytes = malloc(*size + 1);
  cr_assert_eq(fread(bytes, 1, *size, f), *size);
  fclose(f);
  return bytes;
}

Test(model, checkpoints_save_from_device_memory) {
  herd_model_config cfg = tiny_config();
  herd_backend staged = staged_backend();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  herd_model_init(m, 8);
  herd_batch bt = test_batch(cfg.vocab_size);
  float logits[N * 19], scores[P];
  train_once(m, &bt, logits, scores);
  char dir[] = "/tmp/herd-model-test-XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char host_dir[64], device_dir[64];
  snprintf(host_dir, sizeof host_dir, "%s/host", dir);
  snprintf(device_dir, sizeof device_dir, "%s/device", dir);
  herd_train_state state = {herd_model_step_count(m), 5, 6, 7};
  cr_assert_eq(herd_checkpoint_save(host_dir, m, &state), HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(herd_model_to(m, &staged, 0, 0), HERD_OK);
  cr_assert_eq(herd_checkpoint_save(device_dir, m, &state), HERD_OK, "%s", herd_errmsg());
  const char *files[] = {"model.safetensors", "config.json", "training_state.safetensors",
                         "training_state.json"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char a_path[128], b_path[128];
    snprintf(a_path, sizeof a_path, "%s/%s", host_dir, files[i]);
    snprintf(b_path, sizeof b_path, "%s/%s", device_dir, files[i]);
    size_t a_size, b_size;
    char *a = slurp(a_path, &a_size), *b = slurp(b_path, &b_size);
    cr_expect(a_size == b_size && memcmp(a, b, a_size) == 0, "%s differs", files[i]);
    free(a), free(b);
    remove(a_path), remove(b_path);
  }
  rmdir(host_dir), rmdir(device_dir), rmdir(dir);
  herd_model_free(m);
}

// ---------------------------------------------------------------- mixed precision

// The CPU's bf16 linear layer against a double loop over the rounded operands: the products of
// two bf16 values are exact in f32, so only the f32 summation differs (1e-5).
Test(model, bf16_linear_matches_a_loop_over_rounded_operands) {
  enum { LN = 5, LC = 24, LOC = 7 };
  float x[LN * LC], w[LOC * LC], d[LN * LOC], out[LN * LOC], dx[LN * LC] = {0}, dw[LOC * LC] = {0};
  uint16_t x16[LN * LC], w16[LOC * LC], d16[LN * LOC];
  gc_fill_uniform(x, LN * LC, 51, -3, 3);
  gc_fill_uniform(w, LOC * LC, 52, -1, 1);
  gc_fill_uniform(d, LN * LOC, 53, -2, 2);
  cr_assert_eq(herd_cpu_backend.to_bf16(x16, x, LN * LC), HERD_OK);
  cr_assert_eq(herd_cpu_backend.to_bf16(w16, w, LOC * LC), HERD_OK);
  cr_assert_eq(herd_cpu_backend.to_bf16(d16, d, LN * LOC), HERD_OK);
  for (int i = 0; i < LN * LC; i++) cr_assert_eq(x16[i], herd_f32_to_bf16(x[i]));
  cr_assert_eq(herd_cpu_backend.linear_forward_bf16(out, x16, w16, LN, LC, LOC), HERD_OK);
  cr_assert_eq(herd_cpu_backend.linear_backward_bf16(dx, dw, d16, x16, w16, LN, LC, LOC), HERD_OK);
  double want_out[LN * LOC], want_dx[LN * LC] = {0}, want_dw[LOC * LC] = {0};
  for (int i = 0; i < LN; i++)
    for (int o = 0; o < LOC; o++) {
      double s = 0, g = herd_bf16_to_f32(d16[i * LOC + o]);
      for (int j = 0; j < LC; j++) {
        double xv = herd_bf16_to_f32(x16[i * LC + j]), wv = herd_bf16_to_f32(w16[o * LC + j]);
        s += xv * wv;
        want_dx[i * LC + j] += g * wv;
        want_dw[o * LC + j] += g * xv;
      }
      want_out[i * LOC + o] = s;
    }
  cr_expect(scaled_error(out, want_out, LN * LOC) < 1e-5, "out %g",
            scaled_error(out, want_out, LN * LOC));
  cr_expect(scaled_error(dx, want_dx, LN * LC) < 1e-5, "dinp %g",
            scaled_error(dx, want_dx, LN * LC));
  cr_expect(scaled_error(dw, want_dw, LOC * LC) < 1e-5, "dweight %g",
            scaled_error(dw, want_dw, LOC * LC));
}

// The whole bf16 forward against the double reference with its matmul operands rounded the same
// way. They differ only where an f32 activation and its double counterpart round to different
// bf16 values (one bf16 step, 2^-8 relative, for a rare element): 2e-3 scaled. The same model
// in f32 is further from that reference than this, so the test tells the precisions apart.
Test(model, bf16_forward_matches_a_rounded_reference) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  random_params(m, 61);
  cr_assert_eq(herd_model_set_precision(m, HERD_BF16), HERD_OK);
  cr_expect_eq(herd_model_precision(m), HERD_BF16);
  herd_batch bt = test_batch(cfg.vocab_size);
  float loss;
  cr_assert_eq(herd_model_forward(m, &bt, &loss), HERD_OK, "%s", herd_errmsg());
  float *logits16 = malloc((size_t)N * cfg.vocab_size * sizeof(float));
  memcpy(logits16, herd_model_logits(m), (size_t)N * cfg.vocab_size * sizeof(float));
  cr_assert_eq(herd_model_set_precision(m, HERD_F32), HERD_OK);
  cr_assert_eq(herd_model_forward(m, &bt, NULL), HERD_OK);
  ref r;
  ref_alloc(&r, m, &bt);
  ref_bf16 = 1;
  ref_loss(&r);
  ref_bf16 = 0;
  double err16 = scaled_error(logits16, r.logits, (int64_t)N * cfg.vocab_size);
  double err32 = scaled_error(herd_model_logits(m), r.logits, (int64_t)N * cfg.vocab_size);
  cr_log_info("bf16 logits against the rounded reference: %.2e (the f32 model: %.2e)", err16,
              err32);
  cr_expect(err16 < 2e-3, "bf16 logits error %g", err16);
  cr_expect(err32 > 4 * err16, "the f32 model (%g) is as close as the bf16 one (%g)", err32, err16);
  ref_free(&r);
  free(logits16);
  herd_model_free(m);
}

// Gradients in bf16 against the f32 model's: every matmul operand carries a relative error of
// up to 2^-9, so each gradient is within a few percent norm-wise (3e-2), and not equal.
Test(model, bf16_gradients_stay_close_to_f32) {
  herd_model_config cfg = tiny_config();
  herd_model *a, *b;
  cr_assert_eq(herd_model_new(&a, &cfg, B, 8), HERD_OK);
  cr_assert_eq(herd_model_new(&b, &cfg, B, 8), HERD_OK);
  random_params(a, 62);
  random_params(b, 62);
  cr_assert_eq(herd_model_set_precision(b, HERD_BF16), HERD_OK);
  herd_batch bt = test_batch(cfg.vocab_size);
  float la, lb;
  cr_assert_eq(herd_model_forward(a, &bt, &la), HERD_OK);
  cr_assert_eq(herd_model_backward(a, &bt), HERD_OK);
  cr_assert_eq(herd_model_forward(b, &bt, &lb), HERD_OK);
  cr_assert_eq(herd_model_backward(b, &bt), HERD_OK);
  cr_log_info("loss f32 %.7f bf16 %.7f", (double)la, (double)lb);
  cr_expect(fabs(la - lb) < 1e-2 * fabs(la) && la != lb, "losses %g %g", (double)la, (double)lb);
  size_t off[NT], size[NT];
  tensor_table(a, off, size);
  const float *ga = herd_model_grad_buffer(a, NULL), *gb = herd_model_grad_buffer(b, NULL);
  for (int i = 0; i < NT; i++) {
    if (!size[i]) continue;
    double *want = malloc(size[i] * sizeof *want);
    for (size_t j = 0; j < size[i]; j++) want[j] = ga[off[i] + j];
    double err = gc_rel_error(gb + off[i], want, (int64_t)size[i]);
    cr_log_info("bf16 d%s: relative difference %.2e", tensor_names[i], err);
    cr_expect(err < 3e-2 && err > 0, "d%s: relative difference %g", tensor_names[i], err);
    free(want);
  }
  herd_model_free(a);
  herd_model_free(b);
}

// The bf16 copy of the weights follows every change: a step, a write, the pointer handed out.
Test(model, bf16_weights_follow_every_change) {
  herd_model_config cfg = tiny_config();
  herd_model *m, *fresh;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  cr_assert_eq(herd_model_new(&fresh, &cfg, B, 8), HERD_OK);
  herd_model_init(m, 70);
  cr_assert_eq(herd_model_set_precision(m, HERD_BF16), HERD_OK);
  cr_assert_eq(herd_model_set_precision(fresh, HERD_BF16), HERD_OK);
  herd_batch bt = test_batch(cfg.vocab_size);
  float logits[N * 19], scores[P], loss_m, loss_fresh;
  train_once(m, &bt, logits, scores);  // a step: the copy is stale
  size_t n = herd_model_param_count(&cfg);
  float *w = read_all(m, HERD_MODEL_PARAMS);
  cr_assert_eq(herd_model_write(fresh, HERD_MODEL_PARAMS, w, n), HERD_OK);
  cr_assert_eq(herd_model_forward(m, &bt, &loss_m), HERD_OK);
  cr_assert_eq(herd_model_forward(fresh, &bt, &loss_fresh), HERD_OK);
  cr_expect_eq(loss_m, loss_fresh, "after a step and a write: %g vs %g", (double)loss_m,
               (double)loss_fresh);
  herd_model_param_buffer(fresh, NULL)[0] += 0.5f;  // through the pointer (checkpoint loads do)
  cr_assert_eq(herd_model_forward(fresh, &bt, &loss_fresh), HERD_OK);
  cr_expect_neq(loss_m, loss_fresh, "a write through the pointer is seen");
  free(w);
  herd_model_free(m);
  herd_model_free(fresh);
}

Test(model, bf16_trains_and_moves_like_the_cpu_on_a_staged_backend) {
  herd_model_config cfg = tiny_config();
  herd_backend staged = staged_backend();
  herd_model *cpu, *dev;
  cr_assert_eq(herd_model_new(&cpu, &cfg, B, 8), HERD_OK);
  cr_assert_eq(herd_model_new(&dev, &cfg, B, 8), HERD_OK);
  herd_model_init(cpu, 80);
  herd_model_init(dev, 80);
  cr_assert_eq(herd_model_set_precision(cpu, HERD_BF16), HERD_OK);
  cr_assert_eq(herd_model_set_precision(dev, HERD_BF16), HERD_OK);
  cr_assert_eq(herd_model_to(dev, &staged, 0, 0), HERD_OK);
  cr_expect_eq(herd_model_precision(dev), HERD_BF16, "the precision moves along");
  herd_batch bt = test_batch(cfg.vocab_size);
  float logits[2][N * 19], scores[2][P];
  for (int step = 0; step < 3; step++) {
    float a = train_once(cpu, &bt, logits[0], scores[0]);
    float b = train_once(dev, &bt, logits[1], scores[1]);
    cr_expect_eq(a, b, "step %d", step);
    cr_expect(memcmp(logits[0], logits[1], sizeof logits[0]) == 0, "step %d: logits", step);
  }
  expect_same_buffers(cpu, dev, "bf16 on the staged backend");
  herd_model_free(cpu);
  herd_model_free(dev);
}

Test(model, bf16_overfits_a_fixed_batch) {
  herd_model_config cfg = tiny_config();
  cfg.scalar_head = 0;
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  herd_model_init(m, 90);
  cr_assert_eq(herd_model_set_precision(m, HERD_BF16), HERD_OK);
  herd_batch bt = test_batch(cfg.vocab_size);
  bt.n_scores = 0, bt.score_positions = NULL, bt.dscores = NULL, bt.weights = NULL;
  bt.loss_scale = 0;
  float first = 0, loss = 0;
  for (int step = 0; step < 150; step++) {
    herd_model_zero_grad(m);
    cr_assert_eq(herd_model_forward(m, &bt, &loss), HERD_OK);
    if (step == 0) first = loss;
    cr_assert_eq(herd_model_backward(m, &bt), HERD_OK);
    cr_assert_eq(herd_model_step(m, &adam, NULL), HERD_OK);
  }
  cr_log_info("bf16 overfit: %.4f -> %.4f", (double)first, (double)loss);
  cr_expect(loss < 0.1f * first, "loss %g from %g", (double)loss, (double)first);
  cr_expect_eq(herd_model_set_precision(m, HERD_I32), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "i32 is not a compute precision"), "%s", herd_errmsg());
  herd_model_free(m);
}

// Generation through a backend: the staged backend's tokens, log-probabilities and lengths are
// the CPU's bits, in f32 and in bf16 (bf16 matmuls and a bf16 KV cache).
static void expect_same_generation(int bf16) {
  herd_model_config cfg = tiny_config();
  cfg.scalar_head = 0;
  herd_backend staged = staged_backend();
  herd_model *cpu, *dev;
  cr_assert_eq(herd_model_new(&cpu, &cfg, 1, 8), HERD_OK);
  cr_assert_eq(herd_model_new(&dev, &cfg, 1, 8), HERD_OK);
  herd_model_init(cpu, 31);
  herd_model_init(dev, 31);
  if (bf16) {
    cr_assert_eq(herd_model_set_precision(cpu, HERD_BF16), HERD_OK);
    cr_assert_eq(herd_model_set_precision(dev, HERD_BF16), HERD_OK);
  }
  cr_assert_eq(herd_model_to(dev, &staged, 0, 0), HERD_OK);
  const int32_t a[] = {1, 5, 9, 2}, b[] = {7, 3};
  const int32_t *prompts[] = {a, b};
  const int lengths[] = {4, 2};
  const uint64_t seeds[] = {11, 12, 13, 14};
  herd_sampling sampling = {.temperature = 0.8f, .top_p = 0.95f, .top_k = 0, .max_new = 9};
  herd_generation g[2];
  cr_assert_eq(herd_generate(cpu, 2, prompts, lengths, 2, &sampling, seeds, &g[0]), HERD_OK, "%s",
               herd_errmsg());
  cr_assert_eq(herd_generate(dev, 2, prompts, lengths, 2, &sampling, seeds, &g[1]), HERD_OK, "%s",
               herd_errmsg());
  cr_expect(memcmp(g[0].tokens, g[1].tokens, sizeof(int32_t) * 4 * 9) == 0, "tokens");
  cr_expect(memcmp(g[0].logprobs, g[1].logprobs, sizeof(float) * 4 * 9) == 0, "logprobs");
  cr_expect(memcmp(g[0].lengths, g[1].lengths, sizeof(int) * 4) == 0, "lengths");
  herd_generation_free(&g[0]), herd_generation_free(&g[1]);
  herd_model_free(cpu), herd_model_free(dev);
}

Test(model, a_staged_backend_generates_the_cpu_bits) {
  expect_same_generation(0);
  expect_same_generation(1);
}

// In bf16 precision, generation reads a bf16 KV cache where the training forward's attention
// reads f32 keys and values: the cached logits differ from the forward's by about what rounding
// K and V to bf16 moves them (2^-9 relative per value), and not at all in f32.
Test(model, bf16_generation_logits_stay_near_the_forward) {
  herd_model_config cfg = tiny_config();
  cfg.scalar_head = 0;
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, 1, 12), HERD_OK);
  random_params(m, 33);
  int32_t seq[12] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8};
  const int32_t *seqs[] = {seq};
  const int lengths[] = {12}, prefill[] = {5};
  float cached[12 * 19];
  float *outs[] = {cached};
  herd_batch bt = {.b = 1, .t = 12, .tokens = seq};
  double err[2];
  for (int bf16 = 0; bf16 < 2; bf16++) {
    cr_assert_eq(herd_model_set_precision(m, bf16 ? HERD_BF16 : HERD_F32), HERD_OK);
    cr_assert_eq(herd_generate_logits(m, 1, seqs, lengths, prefill, outs), HERD_OK, "%s",
                 herd_errmsg());
    cr_assert_eq(herd_model_forward(m, &bt, NULL), HERD_OK);
    double want[12 * 19];
    for (int i = 0; i < 12 * 19; i++) want[i] = herd_model_logits(m)[i];
    err[bf16] = scaled_error(cached, want, 12 * 19);
  }
  cr_log_info("cached logits against the forward: f32 %.2e, bf16 %.2e", err[0], err[1]);
  cr_expect(err[0] < 1e-5, "f32 %g", err[0]);
  cr_expect(err[1] < 2e-2 && err[1] > 1e-5, "bf16 %g", err[1]);
  herd_model_free(m);
}

// ---------------------------------------------------------------- forward_backward

// herd_model_forward_backward against herd_model_forward then herd_model_backward: the LM head in
// chunks of 3 rows (14 rows: 3+3+3+3+2) gives the same loss and gradients up to the order of
// the f32 sums of dW (1e-6 norm-wise), with a scalar head, tied or untied, the LM head frozen,
// in f32 and bf16.
static void check_forward_backward(int tie, int freeze_lm, int bf16) {
  herd_model_config cfg = tiny_config();
  cfg.tie_embeddings = tie;
  herd_model *a, *b;
  cr_assert_eq(herd_model_new(&a, &cfg, B, 8), HERD_OK);
  cr_assert_eq(herd_model_new(&b, &cfg, B, 8), HERD_OK);
  random_params(a, 40 + tie), random_params(b, 40 + tie);
  herd_model_set_trainable(a, 1, !freeze_lm, 1), herd_model_set_trainable(b, 1, !freeze_lm, 1);
  if (bf16) {
    cr_assert_eq(herd_model_set_precision(a, HERD_BF16), HERD_OK);
    cr_assert_eq(herd_model_set_precision(b, HERD_BF16), HERD_OK);
  }
  cr_assert_eq(herd_model_set_head_rows(b, 3), HERD_OK);
  herd_batch bt = test_batch(cfg.vocab_size);
  float la, lb;
  cr_assert_eq(herd_model_forward(a, &bt, &la), HERD_OK);
  cr_assert_eq(herd_model_backward(a, &bt), HERD_OK);
  cr_assert_eq(herd_model_forward_backward(b, &bt, &lb), HERD_OK, "%s", herd_errmsg());
  cr_expect(fabsf(la - lb) <= 1e-6f * fabsf(la), "tie %d freeze %d bf16 %d: loss %.9g vs %.9g", tie,
            freeze_lm, bf16, (double)la, (double)lb);
  size_t n = herd_model_param_count(&cfg);
  const float *ga = herd_model_grad_buffer(a, NULL), *gb = herd_model_grad_buffer(b, NULL);
  double *want = malloc(n * sizeof *want);
  for (size_t i = 0; i < n; i++) want[i] = ga[i];
  double err = gc_rel_error(gb, want, (int64_t)n);
  cr_expect(err < 1e-6, "tie %d freeze %d bf16 %d: gradients differ by %g", tie, freeze_lm, bf16,
            err);
  free(want);
  herd_model_free(a), herd_model_free(b);
}

Test(model, forward_backward_equals_forward_then_backward) {
  check_forward_backward(0, 0, 0);
  check_forward_backward(1, 0, 0);
  check_forward_backward(0, 1, 0);
  check_forward_backward(0, 0, 1);
}

// Training through forward_backward alone never makes the (N, V) logits: the activation bytes
// stay those of the chunk; a forward makes them (2 N V floats more).
Test(model, forward_backward_never_makes_the_full_logits) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  herd_model_init(m, 44);
  cr_assert_eq(herd_model_set_head_rows(m, 4), HERD_OK);
  size_t before = herd_model_activation_bytes(m);
  herd_batch bt = test_batch(cfg.vocab_size);
  float loss;
  for (int step = 0; step < 3; step++) {
    herd_model_zero_grad(m);
    cr_assert_eq(herd_model_forward_backward(m, &bt, &loss), HERD_OK);
    cr_assert_eq(herd_model_step(m, &adam, NULL), HERD_OK);
  }
  cr_expect_eq(herd_model_activation_bytes(m), before);
  float one;
  cr_expect_eq(herd_model_read(m, HERD_MODEL_LOGITS, &one, 1), HERD_EINVAL, "no logits kept");
  cr_expect_eq(herd_model_backward(m, &bt), HERD_ESTATE, "no forward to go back through");
  cr_assert_eq(herd_model_forward(m, &bt, NULL), HERD_OK);
  size_t full = 2 * (size_t)B * 8 * cfg.vocab_size * sizeof(float);
  cr_expect_eq(herd_model_activation_bytes(m), before + full);
  cr_expect_eq(herd_model_set_head_rows(m, 0), HERD_EINVAL);
  cr_expect_eq(herd_model_set_head_rows(m, B * 8 + 1), HERD_EINVAL);
  herd_model_free(m);
}

Test(model, forward_backward_on_a_staged_backend_gives_the_cpu_bits) {
  herd_model_config cfg = tiny_config();
  herd_backend staged = staged_backend();
  herd_model *cpu, *dev;
  cr_assert_eq(herd_model_new(&cpu, &cfg, B, 8), HERD_OK);
  cr_assert_eq(herd_model_new_on(&dev, &cfg, B, 8, &staged), HERD_OK);
  herd_model_init(cpu, 45), herd_model_init(dev, 45);
  cr_assert_eq(herd_model_set_head_rows(cpu, 5), HERD_OK);
  cr_assert_eq(herd_model_set_head_rows(dev, 5), HERD_OK);
  herd_batch bt = test_batch(cfg.vocab_size);
  for (int step = 0; step < 2; step++) {
    float a, b;
    herd_model_zero_grad(cpu), herd_model_zero_grad(dev);
    cr_assert_eq(herd_model_forward_backward(cpu, &bt, &a), HERD_OK);
    cr_assert_eq(herd_model_forward_backward(dev, &bt, &b), HERD_OK, "%s", herd_errmsg());
    cr_expect_eq(a, b, "step %d", step);
    cr_assert_eq(herd_model_step(cpu, &adam, NULL), HERD_OK);
    cr_assert_eq(herd_model_step(dev, &adam, NULL), HERD_OK);
  }
  expect_same_buffers(cpu, dev, "forward_backward on the staged backend");
  herd_model_free(cpu), herd_model_free(dev);
}

Test(model, forward_backward_names_a_nan_loss_and_missing_dscores) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, 8), HERD_OK);
  herd_model_init(m, 46);
  herd_batch bt = test_batch(cfg.vocab_size);
  bt.dscores = NULL;
  cr_expect_eq(herd_model_forward_backward(m, &bt, NULL), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "n_scores = 3 but no dscores"), "%s", herd_errmsg());
  bt = test_batch(cfg.vocab_size);
  herd_model_param_buffer(m, NULL)[0] = NAN;  // embed[0][0]: token 0's row
  tokens[0] = 0;
  float loss;
  cr_expect_eq(herd_model_forward_backward(m, &bt, &loss), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "step 1: loss is nan"), "%s", herd_errmsg());
  herd_model_free(m);
}

// ---------------------------------------------------------------- errors

static void expect_config_error(herd_model_config cfg, const char *field) {
  herd_model *m = (herd_model *)1;
  cr_expect_eq(herd_model_config_check(&cfg), HERD_EINVAL, "%s accepted", field);
  cr_expect(strstr(herd_errmsg(), field), "message '%s' does not name %s", herd_errmsg(), field);
  cr_expect_eq(herd_model_new(&m, &cfg, 1, 4), HERD_EINVAL);
  cr_expect_null(m);
  cr_expect_eq(herd_model_param_count(&cfg), 0);
}

Test(model, bad_config_fields_are_named) {
  herd_model_config c = tiny_config();
  cr_expect_eq(herd_model_config_check(&c), HERD_OK);
  c.n_heads = 3;  // does not divide 16
  expect_config_error(c, "n_heads");
  c = tiny_config(), c.n_kv_heads = 3;
  expect_config_error(c, "n_kv_heads");
  c = tiny_config(), c.dim = 12, c.n_heads = 4, c.n_kv_heads = 1;  // head_dim 3
  expect_config_error(c, "head_dim");
  const char *names[] = {"dim",        "n_layers",   "n_heads",    "n_kv_heads",
                         "hidden_dim", "vocab_size", "max_seq_len"};
  for (int i = 0; i < 7; i++) {
    c = tiny_config();
    int *f[] = {&c.dim,        &c.n_layers,   &c.n_heads,    &c.n_kv_heads,
                &c.hidden_dim, &c.vocab_size, &c.max_seq_len};
    *f[i] = 0;
    expect_config_error(c, names[i]);
  }
  c = tiny_config(), c.norm_eps = 0;
  expect_config_error(c, "norm_eps");
  c = tiny_config(), c.rope_theta = -1;
  expect_config_error(c, "rope_theta");
  c = tiny_config(), c.lm_head = 0, c.tie_embeddings = 1;
  expect_config_error(c, "tie_embeddings");
  c = tiny_config(), c.lm_head = 0, c.scalar_head = 0;
  expect_config_error(c, "lm_head");
}

Test(model, bad_batches_are_rejected) {
  herd_model_config cfg = tiny_config();
  herd_model *m;
  cr_assert_eq(herd_model_new(&m, &cfg, B, T), HERD_OK);
  herd_model_init(m, 1);
  herd_batch bt = test_batch(cfg.vocab_size);
  cr_expect_eq(herd_model_backward(m, &bt), HERD_ESTATE, "backward before forward");
  bt.b = B + 1;
  cr_expect_eq(herd_model_forward(m, &bt, NULL), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "max_batch"), "%s", herd_errmsg());
  bt.b = B, bt.t = T + 1;
  cr_expect_eq(herd_model_forward(m, &bt, NULL), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "max_seq"), "%s", herd_errmsg());
  bt.t = T;
  tokens[5] = 19;
  cr_expect_eq(herd_model_forward(m, &bt, NULL), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "tokens[5] = 19"), "%s", herd_errmsg());
  tokens[5] = -2;
  cr_expect_eq(herd_model_forward(m, &bt, NULL), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "tokens[5] = -2"), "%s", herd_errmsg());
  tokens[5] = 0;
  targets[3] = 19;
  cr_expect_eq(herd_model_forward(m, &bt, NULL), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "targets[3]"), "%s", herd_errmsg());
  targets[3] = 0;
  score_pos[1] = N;
  cr_expect_eq(herd_model_forward(m, &bt, NULL), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "score_positions[1]"), "%s", herd_errmsg());
  score_pos[1] = 6;
  positions[2] = 32;  // max_seq_len
  cr_expect_eq(herd_model_forward(m, &bt, NULL), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "positions[2]"), "%s", herd_errmsg());
  positions[2] = 2;
  cr_expect_eq(herd_model_forward(m, &bt, NULL), HERD_OK, "%s", herd_errmsg());
  herd_batch other = bt;
  other.t = T - 1;
  cr_expect_eq(herd_model_backward(m, &other), HERD_ESTATE, "backward of another shape");
  other = bt, other.dscores = NULL;
  cr_expect_eq(herd_model_backward(m, &other), HERD_EINVAL, "scores without dscores");
  herd_adamw opt = adam;
  opt.beta2 = 1.0f;
  cr_expect_eq(herd_model_step(m, &opt, NULL), HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "beta2"), "%s", herd_errmsg());
  herd_model_free(m);
  cfg.scalar_head = 0;
  cr_assert_eq(herd_model_new(&m, &cfg, B, T), HERD_OK);
  cr_expect_eq(herd_model_forward(m, &bt, NULL), HERD_EINVAL, "scores without a scalar head");
  cr_expect(strstr(herd_errmsg(), "scalar_head"), "%s", herd_errmsg());
  herd_model_free(m);
  cr_expect_eq(herd_model_new(&m, &cfg, 0, T), HERD_EINVAL);
}
