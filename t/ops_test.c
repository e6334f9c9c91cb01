// The CPU kernels of ops.h against naive double-precision references (ggml test-backend-ops
// style): every forward against its reference, every backward against central finite
// differences of the reference (loss = sum(out * random weights), so dout = weights), the +=
// semantics and NULL gradients, the error paths, and bit-identical results for 1, 2 and 3
// threads. Shapes are deliberately not multiples of 16 (N=37, C=45, OC=29, V=53) and the
// determinism cases are big enough to cross the kernels' column blocks (64) and to be split
// among threads. Run with --verbose to see the measured errors.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gradcheck.h"
#include "ops.h"
#include "threads.h"

enum { N = 37, C = 45, OC = 29, V = 53 };

#define FWD_TOL 1e-5   // max |f32 - f64| / max |f64| of a forward
#define GRAD_TOL 1e-4  // norm-wise relative error of a backward against finite differences
#define FD_H 1e-5      // finite-difference step (the references are double precision)

// ---------------------------------------------------------------- helpers

static float *uniform(int64_t n, uint64_t seed, float lo, float hi) {
  float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
  gc_fill_uniform(x, n, seed, lo, hi);
  return x;
}

static float *zeros(int64_t n) {
  return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

static float *copy(const float *x, int64_t n) {
  float *y = malloc((size_t)(n > 0 ? n : 1) * sizeof *y);
  memcpy(y, x, (size_t)n * sizeof *y);
  return y;
}

static double *to_double(const float *x, int64_t n) {
  double *y = malloc((size_t)(n > 0 ? n : 1) * sizeof *y);
  gc_to_double(y, x, n);
  return y;
}

// max |got - want| / max |want|: the error of a forward relative to the output's scale.
static double scaled_error(const float *got, const double *want, int64_t n) {
  double diff = 0, scale = 1e-30;
  for (int64_t i = 0; i < n; i++) {
    diff = fmax(diff, fabs(got[i] - want[i]));
    scale = fmax(scale, fabs(want[i]));
  }
  return diff / scale;
}

static void expect_forward(const char *what, const float *got, const double *want, int64_t n,
                           double tol) {
  double err = scaled_error(got, want, n);
  cr_log_info("%s forward: scaled max error %.3g", what, err);
  cr_expect(err < tol, "%s forward: scaled max error %g >= %g", what, err, tol);
}

// Norm-wise relative error of `analytic` against central differences of `loss` with respect
// to x(n): all elements when samples >= n, else `samples` indices spread over x.
static double fd_error(const float *analytic, double *x, int64_t n, int64_t samples,
                       gc_loss_fn loss, void *ctx) {
  if (samples >= n) {
    double *numeric = malloc((size_t)n * sizeof *numeric);
    gc_numeric_grad(numeric, x, n, loss, ctx, FD_H);
    double err = gc_rel_error(analytic, numeric, n);
    free(numeric);
    return err;
  }
  double *numeric = malloc((size_t)samples * sizeof *numeric);
  float *picked = malloc((size_t)samples * sizeof *picked);
  for (int64_t s = 0; s < samples; s++) {
    int64_t i = s * n / samples + (s * 7919) % (n / samples);
    picked[s] = analytic[i];
    gc_numeric_grad(&numeric[s], &x[i], 1, loss, ctx, FD_H);
  }
  double err = gc_rel_error(picked, numeric, samples);
  free(numeric);
  free(picked);
  return err;
}

static void expect_grad(const char *what, const float *analytic, double *x, int64_t n,
                        int64_t samples, gc_loss_fn loss, void *ctx) {
  double err = fd_error(analytic, x, n, samples, loss, ctx);
  cr_log_info("%s: relative error %.3g against finite differences", what, err);
  cr_expect(err < GRAD_TOL, "%s: relative error %g >= %g", what, err, GRAD_TOL);
}

// got = prefill + fresh (up to rounding): the kernel added to the gradient it was given.
static void expect_accumulated(const char *what, const float *got, const float *prefill,
                               const float *fresh, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    double want = (double)prefill[i] + fresh[i];
    double tol = 1e-6 * (fabs(prefill[i]) + fabs(fresh[i])) + 1e-30;
    cr_assert(fabs(got[i] - want) <= tol, "%s[%ld] = %.9g, want %.9g + %.9g", what, (long)i,
              (double)got[i], (double)prefill[i], (double)fresh[i]);
  }
}

static void expect_same(const char *what, const void *a, const void *b, size_t bytes) {
  cr_expect(memcmp(a, b, bytes) == 0, "%s: results differ", what);
}

// Runs fn (which fills out(count) from fixed inputs, forward and backward) with 1, 2 and 3
// threads and requires the bits to be equal.
static void expect_deterministic(const char *what, void (*fn)(float *out), int64_t count) {
  float *first = zeros(count), *again = zeros(count);
  cr_assert(herd_set_threads(1) == HERD_OK);
  fn(first);
  for (int threads = 2; threads <= 3; threads++) {
    cr_assert(herd_set_threads(threads) == HERD_OK);
    memset(again, 0xa5, (size_t)count * sizeof *again);
    fn(again);
    cr_expect(memcmp(first, again, (size_t)count * sizeof *first) == 0,
              "%s: 1 and %d threads give different bits", what, threads);
  }
  free(first);
  free(again);
}

// ---------------------------------------------------------------- matmul

static void matmul_reference(double *c, const float *a, const float *b, const float *c0, int m,
                             int n, int k, int ta, int tb, double alpha, double beta) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) {
      double sum = 0;
      for (int p = 0; p < k; p++)
        sum += (double)(ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = alpha * sum + beta * c0[i * n + j];
    }
}

static void check_matmul(int m, int n, int k) {
  float *a = uniform(m * k, 1, -1, 1), *b = uniform(k * n, 2, -1, 1);
  float *c0 = uniform(m * n, 3, -1, 1), *c = zeros(m * n);
  double *want = malloc((size_t)m * n * sizeof *want);
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      memcpy(c, c0, (size_t)m * n * sizeof *c);
      herd_cpu_matmul(c, a, b, m, n, k, ta, tb, 0.7f, 0.3f);
      matmul_reference(want, a, b, c0, m, n, k, ta, tb, 0.7f, 0.3f);
      char what[64];
      snprintf(what, sizeof what, "matmul %dx%dx%d ta=%d tb=%d", m, n, k, ta, tb);
      expect_forward(what, c, want, m * n, FWD_TOL);
    }
  // beta = 0 ignores c, even NaN (sgemm semantics)
  for (int i = 0; i < m * n; i++) c[i] = NAN;
  herd_cpu_matmul(c, a, b, m, n, k, 0, 0, 1.0f, 0.0f);
  for (int i = 0; i < m * n; i++) c0[i] = 0;
  matmul_reference(want, a, b, c0, m, n, k, 0, 0, 1, 0);
  expect_forward("matmul beta=0", c, want, m * n, FWD_TOL);
  free(a), free(b), free(c0), free(c), free(want);
}

Test(matmul, forward_all_transposes) {
  check_matmul(N, OC, C);
  check_matmul(130, 67, 288);
}

Test(matmul, empty_inner_dimension_scales_c) {
  float c[6] = {1, 2, 3, 4, 5, 6}, a[1] = {0}, b[1] = {0};
  herd_cpu_matmul(c, a, b, 2, 3, 0, 0, 0, 1.0f, 0.5f);
  for (int i = 0; i < 6; i++) cr_expect(c[i] == 0.5f * (i + 1), "c[%d] = %g", i, (double)c[i]);
}

// OpenBLAS 0.3.21's own threading does change bits (thousands of elements of a 515x389x300
// sgemm differ between 1 and 2 OpenBLAS threads, any transposes, even for k = 16), which this
// test caught; herd_cpu_matmul therefore tiles c itself, one single-threaded sgemm per fixed
// tile, and this pins that for all four transpose combinations and several tiles each way.
static void matmul_run(float *out) {
  enum { M = 515, NN = 1031, K = 300 };
  float *a = uniform(M * K, 4, -1, 1), *b = uniform(K * NN, 5, -1, 1);
  for (int t = 0; t < 4; t++) {
    float *c = out + t * M * NN;
    gc_fill_uniform(c, M * NN, 6, -1, 1);
    herd_cpu_matmul(c, a, b, M, NN, K, t & 1, t >> 1, 1.0f, 0.5f);
  }
  free(a), free(b);
}

Test(matmul, deterministic) {
  expect_deterministic("matmul", matmul_run, 4 * 515 * 1031);
}

// ---------------------------------------------------------------- linear

struct linear_ctx {
  int n, c, oc;
  double *inp, *weight, *bias, *out;  // bias may be NULL
  const float *dout;
};

static double linear_loss(void *p) {
  struct linear_ctx *x = p;
  for (int i = 0; i < x->n; i++)
    for (int o = 0; o < x->oc; o++) {
      double sum = x->bias ? x->bias[o] : 0;
      for (int j = 0; j < x->c; j++) sum += x->inp[i * x->c + j] * x->weight[o * x->c + j];
      x->out[i * x->oc + o] = sum;
    }
  return gc_dot_weights(x->out, x->dout, (int64_t)x->n * x->oc);
}

// Forward and backward of linear at (n, c, oc) against the reference; `samples` limits the
// finite differences of inp and weight in the bigger case.
static void check_linear(int n, int c, int oc, int with_bias, int64_t samples) {
  float *inp = uniform(n * c, 10, -1, 1), *weight = uniform(oc * c, 11, -0.5f, 0.5f);
  float *bias = uniform(oc, 12, -1, 1), *dout = uniform(n * oc, 13, -1, 1);
  float *out = zeros(n * oc), *dinp = zeros(n * c), *dweight = zeros(oc * c), *dbias = zeros(oc);
  struct linear_ctx x = {n,
                         c,
                         oc,
                         to_double(inp, n * c),
                         to_double(weight, oc * c),
                         with_bias ? to_double(bias, oc) : NULL,
                         malloc(sizeof(double) * n * oc),
                         dout};
  herd_cpu_linear_forward(out, inp, weight, with_bias ? bias : NULL, n, c, oc);
  linear_loss(&x);
  char what[96];
  snprintf(what, sizeof what, "linear %dx%dx%d bias=%d", n, c, oc, with_bias);
  expect_forward(what, out, x.out, n * oc, FWD_TOL);

  herd_cpu_linear_backward(dinp, dweight, with_bias ? dbias : NULL, dout, inp, weight, n, c, oc);
  snprintf(what, sizeof what, "linear %dx%dx%d dinp", n, c, oc);
  expect_grad(what, dinp, x.inp, n * c, samples, linear_loss, &x);
  snprintf(what, sizeof what, "linear %dx%dx%d dweight", n, c, oc);
  expect_grad(what, dweight, x.weight, oc * c, samples, linear_loss, &x);
  if (with_bias) {
    snprintf(what, sizeof what, "linear %dx%dx%d dbias", n, c, oc);
    expect_grad(what, dbias, x.bias, oc, oc, linear_loss, &x);
  } else {
    for (int o = 0; o < oc; o++) cr_expect(dbias[o] == 0);
  }
  free(inp), free(weight), free(bias), free(dout), free(out), free(dinp), free(dweight);
  free(dbias), free(x.inp), free(x.weight), free(x.bias), free(x.out);
}

Test(linear, forward_backward) {
  check_linear(N, C, OC, 1, 1 << 30);
  check_linear(N, C, OC, 0, 1 << 30);
}

Test(linear, bigger_sampled) {
  check_linear(130, 288, 67, 1, 40);
}

Test(linear, accumulates_and_skips_null) {
  float *inp = uniform(N * C, 20, -1, 1), *weight = uniform(OC * C, 21, -1, 1);
  float *dout = uniform(N * OC, 22, -1, 1);
  float *fresh[3] = {zeros(N * C), zeros(OC * C), zeros(OC)};
  float *prefill[3] = {uniform(N * C, 23, 1, 2), uniform(OC * C, 24, 1, 2), uniform(OC, 25, 1, 2)};
  int64_t sizes[3] = {N * C, OC * C, OC};
  herd_cpu_linear_backward(fresh[0], fresh[1], fresh[2], dout, inp, weight, N, C, OC);
  float *got[3];
  for (int g = 0; g < 3; g++) got[g] = copy(prefill[g], sizes[g]);
  herd_cpu_linear_backward(got[0], got[1], got[2], dout, inp, weight, N, C, OC);
  expect_accumulated("dinp", got[0], prefill[0], fresh[0], sizes[0]);
  expect_accumulated("dweight", got[1], prefill[1], fresh[1], sizes[1]);
  expect_accumulated("dbias", got[2], prefill[2], fresh[2], sizes[2]);
  // each gradient alone gives the same bits as all three together
  for (int g = 0; g < 3; g++) {
    float *alone = zeros(sizes[g]);
    herd_cpu_linear_backward(g == 0 ? alone : NULL, g == 1 ? alone : NULL, g == 2 ? alone : NULL,
                             dout, inp, weight, N, C, OC);
    expect_same("linear gradient alone", alone, fresh[g], sizes[g] * sizeof(float));
    free(alone);
  }
  herd_cpu_linear_backward(NULL, NULL, NULL, dout, inp, weight, N, C, OC);  // nothing to do
  for (int g = 0; g < 3; g++) free(fresh[g]), free(prefill[g]), free(got[g]);
  free(inp), free(weight), free(dout);
}

static void linear_run(float *out) {
  enum { NN = 301, CC = 517, OO = 389 };
  float *inp = uniform(NN * CC, 30, -1, 1), *weight = uniform(OO * CC, 31, -1, 1);
  float *bias = uniform(OO, 32, -1, 1), *dout = uniform(NN * OO, 33, -1, 1);
  float *y = out, *dinp = y + NN * OO, *dweight = dinp + NN * CC, *dbias = dweight + OO * CC;
  herd_cpu_linear_forward(y, inp, weight, bias, NN, CC, OO);
  gc_fill_uniform(dinp, NN * CC + OO * CC + OO, 34, -1, 1);  // accumulate onto these
  herd_cpu_linear_backward(dinp, dweight, dbias, dout, inp, weight, NN, CC, OO);
  free(inp), free(weight), free(bias), free(dout);
}

Test(linear, deterministic) {
  expect_deterministic("linear", linear_run, 301 * 389 + 301 * 517 + 389 * 517 + 389);
}

// ---------------------------------------------------------------- embedding

struct embedding_ctx {
  const int32_t *tokens;
  double *table, *out;
  const float *dout;
};

static double embedding_loss(void *p) {
  struct embedding_ctx *x = p;
  for (int i = 0; i < N; i++)
    for (int j = 0; j < C; j++) x->out[i * C + j] = x->table[x->tokens[i] * C + j];
  return gc_dot_weights(x->out, x->dout, N * C);
}

static void random_tokens(int32_t *tokens, int n, int vocab, uint64_t seed) {
  float *u = uniform(n, seed, 0, 1);
  for (int i = 0; i < n; i++) tokens[i] = (int32_t)(u[i] * vocab);
  free(u);
}

Test(embedding, forward_backward) {
  int32_t tokens[N];
  random_tokens(tokens, N, V, 40);
  tokens[3] = tokens[17] = tokens[30] = 7;  // repeated rows accumulate
  tokens[0] = 0, tokens[1] = V - 1;
  float *table = uniform(V * C, 41, -1, 1), *dout = uniform(N * C, 42, -1, 1);
  float *out = zeros(N * C), *dtable = zeros(V * C);
  struct embedding_ctx x = {tokens, to_double(table, V * C), malloc(sizeof(double) * N * C), dout};
  cr_assert(herd_cpu_embedding_forward(out, tokens, table, N, V, C) == HERD_OK);
  embedding_loss(&x);
  expect_forward("embedding", out, x.out, N * C, 1e-30);  // a copy: exact
  herd_cpu_embedding_backward(dtable, dout, tokens, N, C);
  expect_grad("embedding dtable", dtable, x.table, V * C, V * C, embedding_loss, &x);
  float *prefill = uniform(V * C, 43, 1, 2), *got = copy(prefill, V * C);
  herd_cpu_embedding_backward(got, dout, tokens, N, C);
  expect_accumulated("dtable", got, prefill, dtable, V * C);
  free(table), free(dout), free(out), free(dtable), free(x.table), free(x.out), free(prefill);
  free(got);
}

Test(embedding, bad_token_names_position) {
  int32_t tokens[N];
  random_tokens(tokens, N, V, 44);
  float *table = uniform(V * C, 45, -1, 1), *out = zeros(N * C);
  tokens[5] = V;
  cr_expect(herd_cpu_embedding_forward(out, tokens, table, N, V, C) == HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "position 5") != NULL, "message: %s", herd_errmsg());
  tokens[5] = 1, tokens[0] = -1;
  cr_expect(herd_cpu_embedding_forward(out, tokens, table, N, V, C) == HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "position 0") != NULL, "message: %s", herd_errmsg());
  for (int i = 0; i < N * C; i++) cr_assert(out[i] == 0, "out written before the check");
  tokens[0] = 2;
  cr_expect(herd_cpu_embedding_forward(out, tokens, table, N, V, C) == HERD_OK);
  free(table), free(out);
}

static void embedding_run(float *out) {
  enum { NN = 1000, VV = 97, CC = 517 };
  int32_t tokens[NN];
  random_tokens(tokens, NN, VV, 46);  // ~10 repeats of every token
  float *table = uniform(VV * CC, 47, -1, 1), *dout = uniform(NN * CC, 48, -1, 1);
  herd_cpu_embedding_forward(out, tokens, table, NN, VV, CC);
  float *dtable = out + NN * CC;
  gc_fill_uniform(dtable, VV * CC, 49, -1, 1);
  herd_cpu_embedding_backward(dtable, dout, tokens, NN, CC);
  free(table), free(dout);
}

Test(embedding, deterministic) {
  expect_deterministic("embedding", embedding_run, 1000 * 517 + 97 * 517);
}

// ---------------------------------------------------------------- RMSNorm

#define EPS 1e-5f

struct rmsnorm_ctx {
  double *inp, *weight, *out, *rstd;
  const float *dout;
};

static double rmsnorm_loss(void *p) {
  struct rmsnorm_ctx *x = p;
  for (int i = 0; i < N; i++) {
    double ss = 0;
    for (int j = 0; j < C; j++) ss += x->inp[i * C + j] * x->inp[i * C + j];
    x->rstd[i] = 1 / sqrt(ss / C + EPS);
    for (int j = 0; j < C; j++) x->out[i * C + j] = x->inp[i * C + j] * x->rstd[i] * x->weight[j];
  }
  return gc_dot_weights(x->out, x->dout, N * C);
}

Test(rmsnorm, forward_backward) {
  float *inp = uniform(N * C, 50, -2, 2), *weight = uniform(C, 51, 0.5f, 1.5f);
  float *dout = uniform(N * C, 52, -1, 1);
  // row 4 is small (mean square 3e-6 < eps: eps must sit inside the sqrt), row 9 is zero
  for (int j = 0; j < C; j++) inp[4 * C + j] *= 1e-3f, inp[9 * C + j] = 0;
  float *out = zeros(N * C), *rstd = zeros(N), *dinp = zeros(N * C), *dweight = zeros(C);
  struct rmsnorm_ctx x = {to_double(inp, N * C), to_double(weight, C),
                          malloc(sizeof(double) * N * C), malloc(sizeof(double) * N), dout};
  herd_cpu_rmsnorm_forward(out, rstd, inp, weight, N, C, EPS);
  rmsnorm_loss(&x);
  expect_forward("rmsnorm out", out, x.out, N * C, FWD_TOL);
  expect_forward("rmsnorm rstd", rstd, x.rstd, N, FWD_TOL);
  cr_expect(fabs(rstd[9] - 1 / sqrt(EPS)) < 1e-3, "rstd of a zero row: %g", (double)rstd[9]);
  cr_expect(fabs(rstd[4] - x.rstd[4]) < 1e-6 * x.rstd[4], "small row: %g vs %g", (double)rstd[4],
            x.rstd[4]);
  herd_cpu_rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C);
  expect_grad("rmsnorm dinp", dinp, x.inp, N * C, N * C, rmsnorm_loss, &x);
  expect_grad("rmsnorm dweight", dweight, x.weight, C, C, rmsnorm_loss, &x);

  float *p_inp = uniform(N * C, 53, 1, 2), *p_w = uniform(C, 54, 1, 2);
  float *g_inp = copy(p_inp, N * C), *g_w = copy(p_w, C);
  herd_cpu_rmsnorm_backward(g_inp, g_w, dout, inp, weight, rstd, N, C);
  expect_accumulated("rmsnorm dinp", g_inp, p_inp, dinp, N * C);
  expect_accumulated("rmsnorm dweight", g_w, p_w, dweight, C);
  float *alone_inp = zeros(N * C), *alone_w = zeros(C);
  herd_cpu_rmsnorm_backward(alone_inp, NULL, dout, inp, weight, rstd, N, C);
  herd_cpu_rmsnorm_backward(NULL, alone_w, dout, inp, weight, rstd, N, C);
  expect_same("rmsnorm dinp alone", alone_inp, dinp, sizeof(float) * N * C);
  expect_same("rmsnorm dweight alone", alone_w, dweight, sizeof(float) * C);
  free(inp), free(weight), free(dout), free(out), free(rstd), free(dinp), free(dweight);
  free(x.inp), free(x.weight), free(x.out), free(x.rstd), free(p_inp), free(p_w), free(g_inp);
  free(g_w), free(alone_inp), free(alone_w);
}

static void rmsnorm_run(float *out) {
  enum { NN = 301, CC = 517 };
  float *inp = uniform(NN * CC, 55, -2, 2), *weight = uniform(CC, 56, 0.5f, 1.5f);
  float *dout = uniform(NN * CC, 57, -1, 1);
  float *y = out, *rstd = y + NN * CC, *dinp = rstd + NN, *dweight = dinp + NN * CC;
  herd_cpu_rmsnorm_forward(y, rstd, inp, weight, NN, CC, EPS);
  gc_fill_uniform(dinp, NN * CC + CC, 58, -1, 1);
  herd_cpu_rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, NN, CC);
  free(inp), free(weight), free(dout);
}

Test(rmsnorm, deterministic) {
  expect_deterministic("rmsnorm", rmsnorm_run, 301 * 517 * 2 + 301 + 517);
}

// ---------------------------------------------------------------- SwiGLU

enum { SN = 1001 };

struct swiglu_ctx {
  double *gate, *up, *out;
  const float *dout;
};

static double swiglu_loss(void *p) {
  struct swiglu_ctx *x = p;
  for (int i = 0; i < SN; i++) x->out[i] = x->gate[i] / (1 + exp(-x->gate[i])) * x->up[i];
  return gc_dot_weights(x->out, x->dout, SN);
}

Test(swiglu, forward_backward) {
  float *gate = uniform(SN, 60, -6, 6), *up = uniform(SN, 61, -2, 2);
  gate[0] = -100, gate[1] = 100;  // sigmoid saturates without NaN
  float *dout = uniform(SN, 62, -1, 1), *out = zeros(SN), *dgate = zeros(SN), *dup = zeros(SN);
  struct swiglu_ctx x = {to_double(gate, SN), to_double(up, SN), malloc(sizeof(double) * SN), dout};
  herd_cpu_swiglu_forward(out, gate, up, SN);
  swiglu_loss(&x);
  expect_forward("swiglu", out, x.out, SN, FWD_TOL);
  herd_cpu_swiglu_backward(dgate, dup, dout, gate, up, SN);
  expect_grad("swiglu dgate", dgate, x.gate, SN, SN, swiglu_loss, &x);
  expect_grad("swiglu dup", dup, x.up, SN, SN, swiglu_loss, &x);
  float *p_g = uniform(SN, 63, 1, 2), *p_u = uniform(SN, 64, 1, 2);
  float *g_g = copy(p_g, SN), *g_u = copy(p_u, SN);
  herd_cpu_swiglu_backward(g_g, g_u, dout, gate, up, SN);
  expect_accumulated("swiglu dgate", g_g, p_g, dgate, SN);
  expect_accumulated("swiglu dup", g_u, p_u, dup, SN);
  float *alone = zeros(SN);
  herd_cpu_swiglu_backward(NULL, alone, dout, gate, up, SN);
  expect_same("swiglu dup alone", alone, dup, sizeof(float) * SN);
  memset(alone, 0, sizeof(float) * SN);
  herd_cpu_swiglu_backward(alone, NULL, dout, gate, up, SN);
  expect_same("swiglu dgate alone", alone, dgate, sizeof(float) * SN);
  free(gate), free(up), free(dout), free(out), free(dgate), free(dup), free(x.gate), free(x.up);
  free(x.out), free(p_g), free(p_u), free(g_g), free(g_u), free(alone);
}

static void swiglu_run(float *out) {
  enum { NN = 200003 };
  float *gate = uniform(NN, 65, -6, 6), *up = uniform(NN, 66, -2, 2);
  float *dout = uniform(NN, 67, -1, 1);
  herd_cpu_swiglu_forward(out, gate, up, NN);
  gc_fill_uniform(out + NN, 2 * NN, 68, -1, 1);
  herd_cpu_swiglu_backward(out + NN, out + 2 * NN, dout, gate, up, NN);
  free(gate), free(up), free(dout);
}

Test(swiglu, deterministic) {
  expect_deterministic("swiglu", swiglu_run, 3 * 200003);
}

// ---------------------------------------------------------------- softmax

struct softmax_ctx {
  double *inp, *out;
  const float *dout;
};

static void softmax_reference(double *out, const double *inp, int n, int c) {
  for (int i = 0; i < n; i++) {
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < c; j++) m = fmax(m, inp[i * c + j]);
    for (int j = 0; j < c; j++) sum += out[i * c + j] = exp(inp[i * c + j] - m);
    for (int j = 0; j < c; j++) out[i * c + j] /= sum;
  }
}

static double softmax_loss(void *p) {
  struct softmax_ctx *x = p;
  softmax_reference(x->out, x->inp, N, V);
  return gc_dot_weights(x->out, x->dout, N * V);
}

Test(softmax, forward_backward) {
  float *inp = uniform(N * V, 70, -4, 4), *dout = uniform(N * V, 71, -1, 1);
  for (int j = 0; j < V; j++) inp[2 * V + j] += 1000;  // exp overflows without the max
  float *out = zeros(N * V), *dinp = zeros(N * V);
  struct softmax_ctx x = {to_double(inp, N * V), malloc(sizeof(double) * N * V), dout};
  herd_cpu_softmax_forward(out, inp, N, V);
  softmax_loss(&x);
  expect_forward("softmax", out, x.out, N * V, FWD_TOL);
  herd_cpu_softmax_backward(dinp, dout, out, N, V);
  expect_grad("softmax dinp", dinp, x.inp, N * V, N * V, softmax_loss, &x);
  float *prefill = uniform(N * V, 72, 1, 2), *got = copy(prefill, N * V);
  herd_cpu_softmax_backward(got, dout, out, N, V);
  expect_accumulated("softmax dinp", got, prefill, dinp, N * V);
  float *in_place = copy(inp, N * V);
  herd_cpu_softmax_forward(in_place, in_place, N, V);
  expect_same("softmax in place", in_place, out, sizeof(float) * N * V);
  free(inp), free(dout), free(out), free(dinp), free(x.inp), free(x.out), free(prefill);
  free(got), free(in_place);
}

static void softmax_run(float *out) {
  enum { NN = 301, CC = 517 };
  float *inp = uniform(NN * CC, 73, -8, 8), *dout = uniform(NN * CC, 74, -1, 1);
  herd_cpu_softmax_forward(out, inp, NN, CC);
  gc_fill_uniform(out + NN * CC, NN * CC, 75, -1, 1);
  herd_cpu_softmax_backward(out + NN * CC, dout, out, NN, CC);
  free(inp), free(dout);
}

Test(softmax, deterministic) {
  expect_deterministic("softmax", softmax_run, 2 * 301 * 517);
}

// ---------------------------------------------------------------- weighted NLL

struct nll_ctx {
  double *logits, *losses;
  const int32_t *targets;
  const float *weights;
  double dloss;
};

static double nll_loss(void *p) {  // dloss * sum of the losses
  struct nll_ctx *x = p;
  double total = 0;
  for (int i = 0; i < N; i++) {
    const double *row = x->logits + i * V;
    int t = x->targets[i];
    if (t < 0) {
      x->losses[i] = 0;
      continue;
    }
    double m = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++) m = fmax(m, row[j]);
    for (int j = 0; j < V; j++) sum += exp(row[j] - m);
    x->losses[i] = x->weights[i] * (m + log(sum) - row[t]);
    total += x->losses[i];
  }
  return x->dloss * total;
}

// Targets with -1 rows, weights 0/1, negative and other reals, and a row of huge logits.
static void nll_inputs(float **logits, int32_t *targets, float **weights) {
  *logits = uniform(N * V, 80, -5, 5);
  for (int j = 0; j < V; j++) (*logits)[6 * V + j] = (*logits)[6 * V + j] * 100 + 5000;
  random_tokens(targets, N, V, 81);
  targets[1] = targets[12] = targets[20] = -1;
  targets[2] = 0, targets[3] = V - 1;
  *weights = uniform(N, 82, -1.5f, 2.5f);
  (*weights)[0] = (*weights)[5] = 0;
  (*weights)[1] = (*weights)[2] = (*weights)[6] = (*weights)[7] = 1;
  (*weights)[8] = -0.75f;
}

Test(weighted_nll, forward_backward) {
  float *logits, *weights;
  int32_t targets[N];
  nll_inputs(&logits, targets, &weights);
  const float dloss = 0.37f;
  float *losses = zeros(N), *dlogits = uniform(N * V, 83, 5, 6);  // written, not accumulated
  struct nll_ctx x = {to_double(logits, N * V), malloc(sizeof(double) * N), targets, weights,
                      dloss};
  cr_assert(herd_cpu_weighted_nll(losses, dlogits, logits, targets, weights, dloss, N, V) ==
            HERD_OK);
  nll_loss(&x);
  expect_forward("weighted_nll", losses, x.losses, N, FWD_TOL);
  for (int i = 0; i < N; i++) cr_assert(isfinite(losses[i]), "loss %d: %g", i, (double)losses[i]);
  cr_expect(losses[1] == 0 && losses[0] == 0 && losses[5] == 0);
  cr_expect(losses[8] < 0, "a negative weight gives a negative loss");
  for (int j = 0; j < V; j++)
    cr_assert(dlogits[1 * V + j] == 0 && dlogits[0 * V + j] == 0, "ignored rows get 0");
  expect_grad("weighted_nll dlogits", dlogits, x.logits, N * V, N * V, nll_loss, &x);

  // in place: the same bits as into a separate buffer
  float *in_place = copy(logits, N * V), *losses2 = zeros(N);
  cr_assert(herd_cpu_weighted_nll(losses2, in_place, in_place, targets, weights, dloss, N, V) ==
            HERD_OK);
  expect_same("weighted_nll in place dlogits", in_place, dlogits, sizeof(float) * N * V);
  expect_same("weighted_nll in place losses", losses2, losses, sizeof(float) * N);
  // forward only
  cr_assert(herd_cpu_weighted_nll(losses2, NULL, logits, targets, weights, dloss, N, V) == HERD_OK);
  expect_same("weighted_nll forward only", losses2, losses, sizeof(float) * N);
  free(logits), free(weights), free(losses), free(dlogits), free(x.logits), free(x.losses);
  free(in_place), free(losses2);
}

Test(weighted_nll, bad_target_names_row) {
  float *logits, *weights;
  int32_t targets[N];
  nll_inputs(&logits, targets, &weights);
  float *losses = zeros(N), *dlogits = copy(logits, N * V);
  targets[3] = V;
  cr_expect(herd_cpu_weighted_nll(losses, dlogits, dlogits, targets, weights, 1, N, V) ==
            HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "row 3") != NULL, "message: %s", herd_errmsg());
  expect_same("logits untouched by a failed in-place call", dlogits, logits, sizeof(float) * N * V);
  targets[3] = 0, targets[30] = -2;
  cr_expect(herd_cpu_weighted_nll(losses, NULL, logits, targets, weights, 1, N, V) == HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "row 30") != NULL, "message: %s", herd_errmsg());
  free(logits), free(weights), free(losses), free(dlogits);
}

static void nll_run(float *out) {
  enum { NN = 301, VV = 1031 };
  float *logits = uniform(NN * VV, 84, -8, 8), *weights = uniform(NN, 85, -1, 2);
  int32_t targets[NN];
  random_tokens(targets, NN, VV, 86);
  for (int i = 0; i < NN; i += 7) targets[i] = -1;
  herd_cpu_weighted_nll(out, out + NN, logits, targets, weights, 0.25f, NN, VV);
  free(logits), free(weights);
}

Test(weighted_nll, deterministic) {
  expect_deterministic("weighted_nll", nll_run, 301 + 301 * 1031);
}

// ---------------------------------------------------------------- scalar head

enum { P = 11 };

struct head_ctx {
  double *hidden, *weight, bias, *out;
  const int32_t *positions;
  const float *dout;
};

static double head_loss(void *p) {
  struct head_ctx *x = p;
  for (int k = 0; k < P; k++) {
    double sum = x->bias;
    for (int j = 0; j < C; j++) sum += x->hidden[x->positions[k] * C + j] * x->weight[j];
    x->out[k] = sum;
  }
  return gc_dot_weights(x->out, x->dout, P);
}

Test(scalar_head, forward_backward) {
  int32_t positions[P] = {36, 0, 12, 12, 5, 30, 12, 1, 35, 20, 36};  // repeats accumulate
  float *hidden = uniform(N * C, 90, -1, 1), *weight = uniform(C, 91, -1, 1);
  float *dout = uniform(P, 92, -1, 1), bias = 0.3f;
  float *out = zeros(P), *dhidden = zeros(N * C), *dweight = zeros(C), dbias = 0;
  struct head_ctx x = {to_double(hidden, N * C),
                       to_double(weight, C),
                       bias,
                       malloc(sizeof(double) * P),
                       positions,
                       dout};
  cr_assert(herd_cpu_scalar_head_forward(out, hidden, weight, bias, positions, P, N, C) == HERD_OK);
  head_loss(&x);
  expect_forward("scalar_head", out, x.out, P, FWD_TOL);
  herd_cpu_scalar_head_backward(dhidden, dweight, &dbias, dout, hidden, weight, positions, P, C);
  expect_grad("scalar_head dhidden", dhidden, x.hidden, N * C, N * C, head_loss, &x);
  expect_grad("scalar_head dweight", dweight, x.weight, C, C, head_loss, &x);
  expect_grad("scalar_head dbias", &dbias, &x.bias, 1, 1, head_loss, &x);

  float *p_h = uniform(N * C, 93, 1, 2), *p_w = uniform(C, 94, 1, 2), p_b = 1.5f;
  float *g_h = copy(p_h, N * C), *g_w = copy(p_w, C), g_b = p_b;
  herd_cpu_scalar_head_backward(g_h, g_w, &g_b, dout, hidden, weight, positions, P, C);
  expect_accumulated("scalar_head dhidden", g_h, p_h, dhidden, N * C);
  expect_accumulated("scalar_head dweight", g_w, p_w, dweight, C);
  expect_accumulated("scalar_head dbias", &g_b, &p_b, &dbias, 1);
  float *alone = zeros(N * C), alone_b = 0;
  herd_cpu_scalar_head_backward(alone, NULL, NULL, dout, hidden, weight, positions, P, C);
  expect_same("scalar_head dhidden alone", alone, dhidden, sizeof(float) * N * C);
  memset(alone, 0, sizeof(float) * C);
  herd_cpu_scalar_head_backward(NULL, alone, &alone_b, dout, hidden, weight, positions, P, C);
  expect_same("scalar_head dweight alone", alone, dweight, sizeof(float) * C);
  cr_expect(alone_b == dbias);
  free(hidden), free(weight), free(dout), free(out), free(dhidden), free(dweight), free(x.hidden);
  free(x.weight), free(x.out), free(p_h), free(p_w), free(g_h), free(g_w), free(alone);
}

Test(scalar_head, bad_position_names_index) {
  int32_t positions[P] = {36, 0, 37, 12, 5, 30, 12, 1, 35, 20, 36};
  float *hidden = uniform(N * C, 95, -1, 1), *weight = uniform(C, 96, -1, 1), out[P];
  cr_expect(herd_cpu_scalar_head_forward(out, hidden, weight, 0, positions, P, N, C) ==
            HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "positions[2]") != NULL, "message: %s", herd_errmsg());
  positions[2] = 2, positions[9] = -1;
  cr_expect(herd_cpu_scalar_head_forward(out, hidden, weight, 0, positions, P, N, C) ==
            HERD_EINVAL);
  cr_expect(strstr(herd_errmsg(), "positions[9]") != NULL, "message: %s", herd_errmsg());
  free(hidden), free(weight);
}

static void head_run(float *out) {
  enum { NN = 1000, CC = 517 };  // a value head: every position, in a shuffled order
  int32_t positions[NN];
  random_tokens(positions, NN, NN, 97);
  float *hidden = uniform(NN * CC, 98, -1, 1), *weight = uniform(CC, 99, -1, 1);
  float *dout = uniform(NN, 100, -1, 1);
  herd_cpu_scalar_head_forward(out, hidden, weight, 0.1f, positions, NN, NN, CC);
  float *dhidden = out + NN, *dweight = dhidden + NN * CC, *dbias = dweight + CC;
  gc_fill_uniform(dhidden, NN * CC + CC + 1, 101, -1, 1);
  herd_cpu_scalar_head_backward(dhidden, dweight, dbias, dout, hidden, weight, positions, NN, CC);
  free(hidden), free(weight), free(dout);
}

Test(scalar_head, deterministic) {
  expect_deterministic("scalar_head", head_run, 1000 + 1000 * 517 + 517 + 1);
}

// ---------------------------------------------------------------- element-wise

enum { EN = 1001 };

struct eltwise_ctx {
  int op;  // 0 add, 1 mul, 2 scale
  double *a, *b, s, *out;
  const float *dout;
};

static double eltwise_loss(void *p) {
  struct eltwise_ctx *x = p;
  for (int i = 0; i < EN; i++)
    x->out[i] = x->op == 0 ? x->a[i] + x->b[i] : x->op == 1 ? x->a[i] * x->b[i] : x->a[i] * x->s;
  return gc_dot_weights(x->out, x->dout, EN);
}

Test(eltwise, forward_backward) {
  float *a = uniform(EN, 110, -2, 2), *b = uniform(EN, 111, -2, 2), *dout = uniform(EN, 112, -1, 1);
  float *out = zeros(EN), *da = zeros(EN), *db = zeros(EN), s = -0.37f;
  struct eltwise_ctx x = {0,   to_double(a, EN), to_double(b, EN), s, malloc(sizeof(double) * EN),
                          dout};
  const char *names[3] = {"add", "mul", "scale"};
  for (int op = 0; op < 3; op++) {
    x.op = op;
    memset(da, 0, sizeof(float) * EN), memset(db, 0, sizeof(float) * EN);
    if (op == 0) herd_cpu_add(out, a, b, EN), herd_cpu_add_backward(da, db, dout, EN);
    if (op == 1) herd_cpu_mul(out, a, b, EN), herd_cpu_mul_backward(da, db, dout, a, b, EN);
    if (op == 2) herd_cpu_scale(out, a, s, EN), herd_cpu_scale_backward(da, dout, s, EN);
    eltwise_loss(&x);
    char what[32];
    snprintf(what, sizeof what, "%s", names[op]);
    expect_forward(what, out, x.out, EN, 1e-7);
    snprintf(what, sizeof what, "%s da", names[op]);
    expect_grad(what, da, x.a, EN, EN, eltwise_loss, &x);
    if (op < 2) {
      snprintf(what, sizeof what, "%s db", names[op]);
      expect_grad(what, db, x.b, EN, EN, eltwise_loss, &x);
    }
    // += onto prefilled gradients, and db alone
    float *pa = uniform(EN, 113, 1, 2), *pb = uniform(EN, 114, 1, 2);
    float *ga = copy(pa, EN), *gb = copy(pb, EN), *alone = zeros(EN);
    if (op == 0)
      herd_cpu_add_backward(ga, gb, dout, EN), herd_cpu_add_backward(NULL, alone, dout, EN);
    if (op == 1) {
      herd_cpu_mul_backward(ga, gb, dout, a, b, EN);
      herd_cpu_mul_backward(NULL, alone, dout, a, b, EN);
    }
    if (op == 2) herd_cpu_scale_backward(ga, dout, s, EN);
    expect_accumulated(names[op], ga, pa, da, EN);
    if (op < 2) {
      expect_accumulated(names[op], gb, pb, db, EN);
      expect_same("db alone", alone, db, sizeof(float) * EN);
    }
    free(pa), free(pb), free(ga), free(gb), free(alone);
  }
  // in place: out may be an input
  float *inplace = copy(a, EN);
  herd_cpu_add(inplace, inplace, b, EN);
  herd_cpu_add(out, a, b, EN);
  expect_same("add in place", inplace, out, sizeof(float) * EN);
  free(a), free(b), free(dout), free(out), free(da), free(db), free(x.a), free(x.b), free(x.out);
  free(inplace);
}

static void eltwise_run(float *out) {
  enum { NN = 200003 };
  float *a = uniform(NN, 115, -2, 2), *b = uniform(NN, 116, -2, 2), *dout = uniform(NN, 117, -1, 1);
  herd_cpu_add(out, a, b, NN);
  herd_cpu_mul(out + NN, a, b, NN);
  herd_cpu_scale(out + 2 * NN, a, 0.3f, NN);
  float *grads = out + 3 * NN;
  gc_fill_uniform(grads, 5 * NN, 118, -1, 1);
  herd_cpu_add_backward(grads, grads + NN, dout, NN);
  herd_cpu_mul_backward(grads + 2 * NN, grads + 3 * NN, dout, a, b, NN);
  herd_cpu_scale_backward(grads + 4 * NN, dout, 0.3f, NN);
  free(a), free(b), free(dout);
}

Test(eltwise, deterministic) {
  expect_deterministic("eltwise", eltwise_run, 8 * 200003);
}

// ---------------------------------------------------------------- reductions

enum { RN = 1300007 };  // more than one round of 256 blocks of 4096

static double naive_sum(const float *a, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; i++) sum += a[i];
  return sum;
}

Test(reduce, sum_mean) {
  float *a = uniform(RN, 120, -1, 1);
  double abs_sum = 0;
  for (int64_t i = 0; i < RN; i++) abs_sum += fabs(a[i]);
  int64_t sizes[] = {1, 7, 4096, 4097, RN};
  for (int s = 0; s < 5; s++) {
    double got = herd_cpu_sum(a, sizes[s]), want = naive_sum(a, sizes[s]);
    cr_expect(fabs(got - want) <= 1e-12 * abs_sum, "sum of %ld: %.17g vs %.17g", (long)sizes[s],
              got, want);
    cr_expect(fabs(herd_cpu_mean(a, sizes[s]) - want / sizes[s]) <= 1e-12 * abs_sum / sizes[s]);
  }
  cr_log_info("sum of %d: error %.3g of sum |a|", RN,
              fabs(herd_cpu_sum(a, RN) - naive_sum(a, RN)) / abs_sum);
  cr_expect(herd_cpu_sum(a, 0) == 0);
  free(a);
}

Test(reduce, max_first_index_and_nan) {
  float *a = uniform(RN, 121, -1, 0);
  int64_t at = -1;
  cr_expect(herd_cpu_max(a, 1, &at) == a[0] && at == 0);
  // ties: the first index wins, within a block, across blocks and across rounds
  a[5000] = a[5001] = a[900000] = a[1200000] = 3;
  cr_expect(herd_cpu_max(a, RN, &at) == 3 && at == 5000, "argmax %ld", (long)at);
  a[1250000] = 4;  // in the second round
  cr_expect(herd_cpu_max(a, RN, &at) == 4 && at == 1250000, "argmax %ld", (long)at);
  cr_expect(herd_cpu_max(a, RN, NULL) == 4);
  a[1100000] = a[1100001] = a[1290000] = NAN;  // the first NaN wins
  cr_expect(isnan(herd_cpu_max(a, RN, &at)) && at == 1100000, "NaN at %ld", (long)at);
  a[3] = NAN;
  cr_expect(isnan(herd_cpu_max(a, RN, &at)) && at == 3, "NaN at %ld", (long)at);
  a[0] = NAN;
  cr_expect(isnan(herd_cpu_max(a, RN, &at)) && at == 0, "NaN at %ld", (long)at);
  free(a);
}

struct reduce_ctx {
  double *a;
  int op;  // 0 sum, 1 mean, 2 max
  double weight;
};

static double reduce_loss(void *p) {
  struct reduce_ctx *x = p;
  double r = x->op == 2 ? -INFINITY : 0;
  for (int i = 0; i < EN; i++) r = x->op == 2 ? fmax(r, x->a[i]) : r + x->a[i];
  return x->weight * (x->op == 1 ? r / EN : r);
}

Test(reduce, backward) {
  float *a = uniform(EN, 122, -1, 1);
  struct reduce_ctx x = {to_double(a, EN), 0, -1.7};
  const char *names[3] = {"sum", "mean", "max"};
  for (int op = 0; op < 3; op++) {
    float *da = zeros(EN), *prefill = uniform(EN, 123, 1, 2), *got = copy(prefill, EN);
    x.op = op;
    int64_t at = 0;
    if (op == 2) herd_cpu_max(a, EN, &at);
    if (op == 0) herd_cpu_sum_backward(da, (float)x.weight, EN);
    if (op == 1) herd_cpu_mean_backward(da, (float)x.weight, EN);
    if (op == 2) herd_cpu_max_backward(da, (float)x.weight, at);
    char what[32];
    snprintf(what, sizeof what, "%s da", names[op]);
    expect_grad(what, da, x.a, EN, EN, reduce_loss, &x);
    if (op == 0) herd_cpu_sum_backward(got, (float)x.weight, EN);
    if (op == 1) herd_cpu_mean_backward(got, (float)x.weight, EN);
    if (op == 2) herd_cpu_max_backward(got, (float)x.weight, at);
    expect_accumulated(what, got, prefill, da, EN);
    free(da), free(prefill), free(got);
  }
  free(a), free(x.a);
}

Test(reduce, global_norm) {
  int64_t lengths[4] = {37, 0, 4097 * 3 + 5, RN};
  float *arrays[4];
  double want = 0;
  for (int k = 0; k < 4; k++) {
    arrays[k] = uniform(lengths[k], 124 + k, -1, 1);
    for (int64_t i = 0; i < lengths[k]; i++) want += (double)arrays[k][i] * arrays[k][i];
  }
  want = sqrt(want);
  double got = herd_cpu_global_norm((const float *const *)arrays, lengths, 4);
  cr_log_info("global_norm: relative error %.3g", fabs(got - want) / want);
  cr_expect(fabs(got - want) <= 1e-12 * want, "%.17g vs %.17g", got, want);
  cr_expect(herd_cpu_global_norm((const float *const *)arrays, lengths, 1) > 0);
  cr_expect(herd_cpu_global_norm(NULL, NULL, 0) == 0);
  for (int k = 0; k < 4; k++) free(arrays[k]);
}

static void reduce_run(float *out) {
  float *a = uniform(RN, 125, -1, 1);
  double results[4];
  int64_t at, lengths[2] = {RN, RN / 3};
  const float *arrays[2] = {a, a + 17};
  results[0] = herd_cpu_sum(a, RN);
  results[1] = herd_cpu_mean(a, RN);
  results[2] = herd_cpu_global_norm(arrays, lengths, 2);
  results[3] = herd_cpu_max(a, RN, &at);
  memcpy(out, results, sizeof results);
  memcpy(out + 8, &at, sizeof at);
  free(a);
}

Test(reduce, deterministic) {
  expect_deterministic("reductions", reduce_run, 10);
}
