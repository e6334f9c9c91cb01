// CPU kernel benchmark at the reference model's shapes: dim 288, 6 layers, 6 heads (D=48,
// KVH=6), hidden 768, T=256, B=8, vocab 32000. Prints, per op, the median forward and backward
// time and the GFLOP/s they imply; each linear beside a bare cblas_sgemm of its shape (the
// ratio is bare time / op time: 100% means no overhead); and attention's fwd+bwd throughput as
// a fraction of this machine's square sgemm. `make bench` runs it; HERD_THREADS sets threads.
//
// FLOP counts (one multiply or add = 1 FLOP; exp, log, sin, cos, division = 1 FLOP):
//   linear  N=B*T rows, C in, OC out: forward 2*N*C*OC; backward 4*N*C*OC (dinp and dweight)
//   attention, causal: P = T(T+1)/2 (query, key) pairs per (b, h); each matmul-like product
//     costs 2*B*H*P*D. Forward: 2 products (Q K^T, P V) = 4*B*H*P*D. Backward: 4 products
//     (dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q) = 8*B*H*P*D; the recomputation of
//     Q K^T (a 5th product) is real work but not counted, as in model FLOPs.
//   rmsnorm (N,C): forward 4*N*C (square-add, scale by rstd, scale by weight);
//     backward 8*N*C (dweight, the row dot product, dinp)
//   rope (N,H,D): forward 3*N*H*D (4 mul + 2 add per pair); backward 4*N*H*D (+= too)
//   swiglu (n): forward 5 per element (exp, add, div, 2 mul); backward 10 per element
//   softmax (N,V): forward 5*N*V (max, sub, exp, sum, scale); backward 4*N*V (dot, sub, mul,
//     +=)
//   weighted_nll (N,V): "forward" = losses only, 4*N*V (max, sub, exp, sum);
//     "backward" = the fused call that also writes dlogits, 7*N*V
//   embedding (N,C): forward copies (0 FLOPs); backward N*C adds
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attention.h"
#include "ops.h"
#include "threads.h"

enum { B = 8, T = 256, DIM = 288, HEADS = 6, KV_HEADS = 6, HEAD_DIM = 48, HIDDEN = 768 };
enum { VOCAB = 32000, N = B * T, WARMUP = 2, REPS = 15 };

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *x, int n) {
  qsort(x, n, sizeof(double), compare_double);
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

// ms = the median wall time of `stmt` over REPS runs after WARMUP runs
#define TIME_MS(ms, stmt)                           \
  do {                                              \
    double times_[REPS];                            \
    for (int rep_ = -WARMUP; rep_ < REPS; rep_++) { \
      double start_ = now();                        \
      stmt;                                         \
      if (rep_ >= 0) times_[rep_] = now() - start_; \
    }                                               \
    (ms) = 1e3 * median(times_, REPS);              \
  } while (0)

// n floats uniform in [-scale, scale) (a fixed LCG: the benchmark needs values, not quality)
static float *random_floats(int64_t n, float scale) {
  float *x = malloc(sizeof(float) * n);
  if (!x) {
    fprintf(stderr, "ops_bench: out of memory (%lld floats)\n", (long long)n);
    exit(1);
  }
  uint32_t state = 12345u + (uint32_t)n;
  for (int64_t i = 0; i < n; i++) {
    state = state * 1664525u + 1013904223u;
    x[i] = scale * ((float)(state >> 8) / 8388608.0f - 1.0f);
  }
  return x;
}

static float *zeros(int64_t n) {
  float *x = calloc((size_t)n, sizeof(float));
  if (!x) {
    fprintf(stderr, "ops_bench: out of memory (%lld floats)\n", (long long)n);
    exit(1);
  }
  return x;
}

static double gflops(double flops, double ms) {
  return ms > 0 ? flops / ms * 1e-6 : 0;
}

// One line of the table: an op's median times and FLOP counts (0 FLOPs prints "-").
typedef struct {
  char name[48];
  double fwd_ms, fwd_flops, bwd_ms, bwd_flops;
} row;

static void print_rule(void) {
  printf("------------------------------------------------------------------------------\n");
}

static void print_row(row r) {
  printf("%-28s %10.3f ", r.name, r.fwd_ms);
  if (r.fwd_flops > 0)
    printf("%10.1f", gflops(r.fwd_flops, r.fwd_ms));
  else
    printf("%10s", "-");
  printf(" %10.3f %10.1f\n", r.bwd_ms, gflops(r.bwd_flops, r.bwd_ms));
}

// The model's linear layers: n = B*T rows, c -> oc.
typedef struct {
  const char *name;
  int c, oc;
} linear_shape;

static const linear_shape linears[] = {
    {"linear qkv (288->864)", DIM, 3 * DIM}, {"linear out (288->288)", DIM, DIM},
    {"mlp up/gate (288->768)", DIM, HIDDEN}, {"mlp down (768->288)", HIDDEN, DIM},
    {"classifier (288->32000)", DIM, VOCAB},
};
enum { LINEARS = sizeof linears / sizeof linears[0] };

// A linear layer (forward out = inp @ W^T; backward dinp += dout @ W, dW += dout^T @ inp) as
// herd runs it, or (bare) as the same sgemm calls straight to OpenBLAS with its own threading
// at herd_threads() threads. herd holds OpenBLAS at one thread (threads.c) because it calls
// sgemm from OpenMP threads; the bare runs come last, after every herd kernel, so OpenBLAS's
// spinning workers do not steal the cores from OpenMP's.
static row bench_linear(linear_shape shape, int bare) {
  const int n = N, c = shape.c, oc = shape.oc;
  float *inp = random_floats((int64_t)n * c, 1), *weight = random_floats((int64_t)oc * c, 0.05f);
  float *out = random_floats((int64_t)n * oc, 1), *dout = random_floats((int64_t)n * oc, 1);
  float *dinp = zeros((int64_t)n * c), *dweight = zeros((int64_t)oc * c);
  row r = {.fwd_flops = 2.0 * n * c * oc, .bwd_flops = 4.0 * n * c * oc};
  if (!bare) {
    snprintf(r.name, sizeof r.name, "%s", shape.name);
    TIME_MS(r.fwd_ms, herd_cpu_linear_forward(out, inp, weight, NULL, n, c, oc));
    TIME_MS(r.bwd_ms, herd_cpu_linear_backward(dinp, dweight, NULL, dout, inp, weight, n, c, oc));
  } else {
    snprintf(r.name, sizeof r.name, "  bare sgemm %dx%dx%d", n, oc, c);
    TIME_MS(r.fwd_ms, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, oc, c, 1.0f, inp, c,
                                  weight, c, 0.0f, out, oc));
    TIME_MS(r.bwd_ms, {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, c, oc, 1.0f, dout, oc, weight, c,
                  1.0f, dinp, c);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, oc, c, n, 1.0f, dout, oc, inp, c, 1.0f,
                  dweight, c);
    });
  }
  free(inp), free(weight), free(out), free(dout), free(dinp), free(dweight);
  return r;
}

// GFLOP/s of one large square sgemm (the machine's matmul rate at this thread count)
static double square_sgemm_gflops(int n) {
  float *a = random_floats((int64_t)n * n, 1), *b = random_floats((int64_t)n * n, 1);
  float *c = zeros((int64_t)n * n);
  double ms;
  TIME_MS(ms, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n,
                          0.0f, c, n));
  free(a), free(b), free(c);
  return gflops(2.0 * n * n * n, ms);
}

static row bench_attention(void) {
  const int64_t nq = (int64_t)N * HEADS * HEAD_DIM, nkv = (int64_t)N * KV_HEADS * HEAD_DIM;
  float *q = random_floats(nq, 1), *k = random_floats(nkv, 1), *v = random_floats(nkv, 1);
  float *out = zeros(nq), *lse = zeros((int64_t)B * HEADS * T);
  float *dout = random_floats(nq, 1), *dq = zeros(nq);
  float *dk = zeros(nkv), *dv = zeros(nkv);
  const double pairs = (double)T * (T + 1) / 2;
  row r = {"attention", 0, 4.0 * B * HEADS * pairs * HEAD_DIM, 0,
           8.0 * B * HEADS * pairs * HEAD_DIM};
  TIME_MS(r.fwd_ms,
          herd_cpu_attention_forward(out, lse, q, k, v, NULL, B, T, HEADS, KV_HEADS, HEAD_DIM));
  TIME_MS(r.bwd_ms, herd_cpu_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, NULL, B, T,
                                                HEADS, KV_HEADS, HEAD_DIM));
  free(q), free(k), free(v), free(out), free(lse), free(dout), free(dq), free(dk), free(dv);
  return r;
}

static row bench_rmsnorm(void) {
  float *inp = random_floats((int64_t)N * DIM, 1), *weight = random_floats(DIM, 1);
  float *out = zeros((int64_t)N * DIM), *rstd = zeros(N), *dout = random_floats(N * DIM, 1);
  float *dinp = zeros((int64_t)N * DIM), *dweight = zeros(DIM);
  double fwd, bwd;
  TIME_MS(fwd, herd_cpu_rmsnorm_forward(out, rstd, inp, weight, N, DIM, 1e-5f));
  TIME_MS(bwd, herd_cpu_rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, DIM));
  free(inp), free(weight), free(out), free(rstd), free(dout), free(dinp), free(dweight);
  return (row){"rmsnorm", fwd, 4.0 * N * DIM, bwd, 8.0 * N * DIM};
}

static row bench_rope(void) {
  const int64_t n = (int64_t)N * HEADS * HEAD_DIM;
  float *x = random_floats(n, 1), *y = zeros(n), *dx = zeros(n);
  int32_t *positions = malloc(sizeof(int32_t) * N);
  for (int i = 0; i < N; i++) positions[i] = i % T;
  double fwd, bwd;
  TIME_MS(fwd, herd_cpu_rope_forward(y, x, positions, N, HEADS, HEAD_DIM, 10000.0f));
  TIME_MS(bwd, herd_cpu_rope_backward(dx, y, positions, N, HEADS, HEAD_DIM, 10000.0f));
  free(x), free(y), free(dx), free(positions);
  return (row){"rope (q: N,H,D)", fwd, 3.0 * n, bwd, 4.0 * n};
}

static row bench_swiglu(void) {
  const int64_t n = (int64_t)N * HIDDEN;
  float *gate = random_floats(n, 2), *up = random_floats(n, 2), *out = zeros(n);
  float *dout = random_floats(n, 1), *dgate = zeros(n), *dup = zeros(n);
  double fwd, bwd;
  TIME_MS(fwd, herd_cpu_swiglu_forward(out, gate, up, n));
  TIME_MS(bwd, herd_cpu_swiglu_backward(dgate, dup, dout, gate, up, n));
  free(gate), free(up), free(out), free(dout), free(dgate), free(dup);
  return (row){"swiglu", fwd, 5.0 * n, bwd, 10.0 * n};
}

// softmax and weighted_nll over the classifier's logits (N, VOCAB)
static void bench_vocab_ops(row *softmax, row *nll) {
  const int64_t n = (int64_t)N * VOCAB;
  float *logits = random_floats(n, 4), *probs = zeros(n), *dout = random_floats(n, 1);
  float *dlogits = zeros(n), *losses = zeros(N), *weights = random_floats(N, 1);
  int32_t *targets = malloc(sizeof(int32_t) * N);
  for (int i = 0; i < N; i++) targets[i] = (i * 7919) % VOCAB;
  double fwd, bwd;
  TIME_MS(fwd, herd_cpu_softmax_forward(probs, logits, N, VOCAB));
  TIME_MS(bwd, herd_cpu_softmax_backward(dlogits, dout, probs, N, VOCAB));
  *softmax = (row){"softmax (N,V)", fwd, 5.0 * n, bwd, 4.0 * n};
  TIME_MS(fwd, herd_cpu_weighted_nll(losses, NULL, logits, targets, weights, 1.0f, N, VOCAB));
  TIME_MS(bwd, herd_cpu_weighted_nll(losses, dlogits, logits, targets, weights, 1.0f, N, VOCAB));
  *nll = (row){"weighted_nll (N,V) [fused]", fwd, 4.0 * n, bwd, 7.0 * n};
  free(logits), free(probs), free(dout), free(dlogits), free(losses), free(weights), free(targets);
}

static row bench_embedding(void) {
  float *table = random_floats((int64_t)VOCAB * DIM, 1), *out = zeros((int64_t)N * DIM);
  float *dtable = zeros((int64_t)VOCAB * DIM), *dout = random_floats((int64_t)N * DIM, 1);
  int32_t *tokens = malloc(sizeof(int32_t) * N);
  for (int i = 0; i < N; i++) tokens[i] = (i * 7919) % VOCAB;
  double fwd, bwd;
  TIME_MS(fwd, herd_cpu_embedding_forward(out, tokens, table, N, VOCAB, DIM));
  TIME_MS(bwd, herd_cpu_embedding_backward(dtable, dout, tokens, N, DIM));
  free(table), free(out), free(dtable), free(dout), free(tokens);
  return (row){"embedding", fwd, 0, bwd, 1.0 * N * DIM};
}

int main(void) {
  herd_set_threads(herd_threads());  // OpenMP threads; OpenBLAS at one (threads.c)
  const int threads = herd_threads();
  // OpenBLAS's worker threads, started when the library loads, spin (sched_yield) for about
  // 0.1 s before they sleep; measured from the start, the first op ran 3-4x slow. Let them settle.
  nanosleep(&(struct timespec){.tv_sec = 0, .tv_nsec = 300000000}, NULL);
  row herd[LINEARS], bare[LINEARS], ops[8];
  for (int i = 0; i < LINEARS; i++) herd[i] = bench_linear(linears[i], 0);
  int nops = 0;
  ops[nops++] = bench_rmsnorm();
  ops[nops++] = bench_rope();
  const int attention = nops;
  ops[nops++] = bench_attention();
  ops[nops++] = bench_swiglu();
  bench_vocab_ops(&ops[nops], &ops[nops + 1]);
  nops += 2;
  ops[nops++] = bench_embedding();
  openblas_set_num_threads(threads);  // bare sgemm: OpenBLAS's own threading
  for (int i = 0; i < LINEARS; i++) bare[i] = bench_linear(linears[i], 1);
  const double peak = square_sgemm_gflops(1024);
  openblas_set_num_threads(1);

  printf(
      "herd ops_bench: B=%d T=%d dim=%d heads=%d kv_heads=%d head_dim=%d hidden=%d vocab=%d,"
      " %d threads, median of %d runs\n",
      B, T, DIM, HEADS, KV_HEADS, HEAD_DIM, HIDDEN, VOCAB, threads, REPS);
  print_rule();
  printf("%-28s %10s %10s %10s %10s\n", "op", "fwd ms", "fwd GF/s", "bwd ms", "bwd GF/s");
  print_rule();
  double worst = INFINITY;
  for (int i = 0; i < LINEARS; i++) {
    const double ratio_fwd = bare[i].fwd_ms / herd[i].fwd_ms;
    const double ratio_bwd = bare[i].bwd_ms / herd[i].bwd_ms;
    print_row(herd[i]);
    print_row(bare[i]);
    printf("  linear/bare (throughput)   %9.0f%% %10s %9.0f%%\n", 100 * ratio_fwd, "",
           100 * ratio_bwd);
    worst = fmin(worst, fmin(ratio_fwd, ratio_bwd));
  }
  print_rule();
  for (int i = 0; i < nops; i++) print_row(ops[i]);
  print_rule();
  const row a = ops[attention];
  const double attention_gflops = gflops(a.fwd_flops + a.bwd_flops, a.fwd_ms + a.bwd_ms);
  printf("linear/bare sgemm, worst of fwd and bwd: %.0f%% (target >= 90%%)\n", 100 * worst);
  printf("square sgemm 1024^3 (OpenBLAS, %d threads): %.1f GFLOP/s\n", threads, peak);
  printf("attention fwd+bwd: %.1f GFLOP/s = %.0f%% of sgemm (target >= 25%%)\n", attention_gflops,
         100 * attention_gflops / peak);
  return 0;
}
