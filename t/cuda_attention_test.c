// The CUDA attention (kernels/cuda_attention.h) against the CPU attention (runtime/attention.h),
// which t/attention_test.c checks against a double-precision reference.
//
// Every comparison runs both on the same random inputs and takes the norm-wise relative error
// ||gpu - cpu|| / ||cpu|| <= REL_TOL (1e-5): both compute in f32 and differ only by summation
// order and the last bits of exp/log (about 1e-7 expected). A failure names the case (B, T, H,
// KVH, D, packed or not, which gradients were NULL), the tensor, and its worst element as batch
// row, token (with its segment id and offset in the segment), head and column, with both values;
// it also counts NaNs (outputs start as NaN on the device, so an element never written shows).
//
//   matches_cpu            T = 13, 80, 150, 300 x D = 12, 48, 64, 128 (one test each), each
//                          with GQA ratios 1, 2, 4 (H = 4) and with and without packed segments
//                          (3 per row, uneven, different per row: a segment of one token, and
//                          in the second row a boundary on a tile edge). B = 2. Forward out and
//                          lse; backward dq, dk, dv from the CPU's out and lse, with non-zero
//                          initial gradients (so accumulation is tested; about a third the size
//                          of the gradients, so an error in the increment still shows), then
//                          again with dq NULL, with dk and dv NULL, and with only dv.
//   scattered_segment_ids  ids that come back after another id (the CPU then masks by id over
//                          the whole row), and rows of many short segments (1, 2, 3 tokens).
//   deterministic          two runs give the same bits (forward and backward).
//   packed_equals_alone    every sample of a packed batch against the same sample alone: the
//                          same bits for out, lse, dq, dk, dv (and within PACK_TOL = 1e-6).
//   bad_shapes             head_dim 129 and 256 give HERD_EINVAL naming the head_dim; H not a
//                          multiple of KVH gives HERD_EINVAL; a zero dimension does nothing.
//
// Without a GPU every test skips itself (or fails, with HERD_EXPECT_GPU=1). On a GPU the tests
// set HERD_CUDA_SYNC=1 so that a kernel that fails is named by the op that launched it.
//   make t/cuda_attention_test && HERD_EXPECT_GPU=1 ./t/cuda_attention_test --verbose
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/cuda.h"
#include "../kernels/cuda_attention.h"
#include "attention.h"
#include "cuda_test_util.h"
#include "error.h"
#include "gradcheck.h"

#define REL_TOL 1e-5   // CUDA against CPU
#define PACK_TOL 1e-6  // a packed sample against the sample alone (expected: the same bits)

// ---------------------------------------------------------------- problems

typedef struct {
  int b, t, h, kvh, d;
} shape;

static void *xmalloc(int64_t n, size_t size) {
  void *p = malloc((size_t)(n > 0 ? n : 1) * size);
  cr_assert_not_null(p, "out of host memory");
  return p;
}

static float *copy_of(const float *x, int64_t n) {
  float *y = xmalloc(n, sizeof(float));
  memcpy(y, x, (size_t)n * sizeof(float));
  return y;
}

static float *upload(const float *host, int64_t n) {
  float *gpu = device_alloc((size_t)n * sizeof(float));
  CUDA_OK(herd_cuda_copy_to_device(gpu, host, (size_t)n * sizeof(float)));
  return gpu;
}

static int32_t *upload_ids(const int32_t *host, int64_t n) {
  if (!host) return NULL;
  int32_t *gpu = device_alloc((size_t)n * sizeof(int32_t));
  CUDA_OK(herd_cuda_copy_to_device(gpu, host, (size_t)n * sizeof(int32_t)));
  return gpu;
}

// n device floats, all `value` (NaN for outputs: an element the kernel never writes shows).
static float *device_fill(int64_t n, float value) {
  float *host = xmalloc(n, sizeof(float));
  for (int64_t i = 0; i < n; i++) host[i] = value;
  float *gpu = upload(host, n);
  free(host);
  return gpu;
}

// One attention problem on the host and on the device: q, k in [-2, 2] (scores spread over
// several units: peaked softmaxes), v and the upstream gradient dout in [-1, 1].
typedef struct {
  shape s;
  int64_t nq, nkv, nlse;
  float *q, *k, *v, *dout;
  int32_t *segments;  // (B,T) or NULL
  float *q_d, *k_d, *v_d, *dout_d;
  int32_t *segments_d;
} problem;

static problem problem_new(shape s, const int32_t *segments, uint64_t seed) {
  problem p = {.s = s};
  p.nq = (int64_t)s.b * s.t * s.h * s.d;
  p.nkv = (int64_t)s.b * s.t * s.kvh * s.d;
  p.nlse = (int64_t)s.b * s.h * s.t;
  p.q = xmalloc(p.nq, sizeof(float));
  p.k = xmalloc(p.nkv, sizeof(float));
  p.v = xmalloc(p.nkv, sizeof(float));
  p.dout = xmalloc(p.nq, sizeof(float));
  gc_fill_uniform(p.q, p.nq, seed, -2, 2);
  gc_fill_uniform(p.k, p.nkv, seed + 1, -2, 2);
  gc_fill_uniform(p.v, p.nkv, seed + 2, -1, 1);
  gc_fill_uniform(p.dout, p.nq, seed + 3, -1, 1);
  if (segments) {
    p.segments = xmalloc((int64_t)s.b * s.t, sizeof(int32_t));
    memcpy(p.segments, segments, (size_t)s.b * s.t * sizeof(int32_t));
  }
  p.q_d = upload(p.q, p.nq);
  p.k_d = upload(p.k, p.nkv);
  p.v_d = upload(p.v, p.nkv);
  p.dout_d = upload(p.dout, p.nq);
  p.segments_d = upload_ids(p.segments, (int64_t)s.b * s.t);
  return p;
}

static void problem_free(problem *p) {
  free(p->q), free(p->k), free(p->v), free(p->dout), free(p->segments);
  herd_cuda_free(p->q_d), herd_cuda_free(p->k_d), herd_cuda_free(p->v_d);
  herd_cuda_free(p->dout_d), herd_cuda_free(p->segments_d);
}

// segments(B,T): row i holds `count` packed samples of lengths[i*count + j] tokens, with ids
// 10 i + 3 + j (neither 0-based nor shared across rows), as t/attention_test.c packs them.
static void pack(int32_t *segments, int b, int t, const int *lengths, int count) {
  for (int bi = 0; bi < b; bi++) {
    int s = 0;
    for (int j = 0; j < count; j++)
      for (int n = 0; n < lengths[bi * count + j]; n++, s++) segments[bi * t + s] = 10 * bi + 3 + j;
    cr_assert_eq(s, t, "segment lengths of row %d add up to %d, not T=%d", bi, s, t);
  }
}

// Three uneven samples per row, laid out differently in the two rows: row 0 about 1/5, 1/2
// and the rest of T; row 1 a sample of one token after the first, which ends on a tile edge
// (64) when T allows it.
static void three_samples(int lengths[6], int t) {
  lengths[0] = t / 5 + 1, lengths[1] = t / 2, lengths[2] = t - lengths[0] - lengths[1];
  lengths[3] = t >= 66 ? 64 : t / 2 + 1, lengths[4] = 1, lengths[5] = t - lengths[3] - 1;
}

// ---------------------------------------------------------------- comparisons

// Where a flat index of a compared tensor points.
typedef enum {
  Q_LAYOUT,    // (B,T,H,D): q, out, dq
  KV_LAYOUT,   // (B,T,KVH,D): k, v, dk, dv
  LSE_LAYOUT,  // (B,H,T)
} layout;

// "b=1 t=77 (segment id 14, token 12 of it) head=2 c=5"
static void name_element(char *buf, size_t size, layout l, shape s, const int32_t *segments,
                         int64_t i) {
  int b, t, head, c = -1;
  if (l == LSE_LAYOUT) {
    t = (int)(i % s.t), i /= s.t;
    head = (int)(i % s.h), b = (int)(i / s.h);
  } else {
    const int heads = l == Q_LAYOUT ? s.h : s.kvh;
    c = (int)(i % s.d), i /= s.d;
    head = (int)(i % heads), i /= heads;
    t = (int)(i % s.t), b = (int)(i / s.t);
  }
  char where[80] = "";
  if (segments) {
    const int32_t *row = segments + (int64_t)b * s.t;
    int start = t;
    while (start > 0 && row[start - 1] == row[t]) start--;
    snprintf(where, sizeof where, " (segment id %d, token %d of its run)", row[t], t - start);
  }
  int n = snprintf(buf, size, "b=%d t=%d%s %s=%d", b, t, where, l == KV_LAYOUT ? "kv_head" : "head",
                   head);
  if (c >= 0 && n > 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, " c=%d", c);
}

// ||got - want|| / max(||want||, 1e-30) <= tol. The message names the worst element, the NaNs
// in got and how many elements are off by more than 1e-4 of the largest |want|.
static int expect_close(const char *tag, const char *what, const float *got, const float *want,
                        int64_t n, double tol, layout l, shape s, const int32_t *segments) {
  double diff2 = 0, want2 = 0, worst = -1, largest = 0;
  int64_t at = 0, nans = 0, off = 0;
  for (int64_t i = 0; i < n; i++) {
    const double d = (double)got[i] - (double)want[i];
    diff2 += d * d;
    want2 += (double)want[i] * want[i];
    largest = fmax(largest, fabs((double)want[i]));
    if (isnan(got[i])) nans++;
    if (!(fabs(d) <= worst)) worst = fabs(d), at = i;
  }
  for (int64_t i = 0; i < n; i++)
    if (!(fabs((double)got[i] - (double)want[i]) <= 1e-4 * largest)) off++;
  const double err = sqrt(diff2) / fmax(sqrt(want2), 1e-30);
  cr_log_info("%s: %s: relative error %.3g", tag, what, err);
  if (err <= tol) return 1;
  char element[160];
  name_element(element, sizeof element, l, s, segments, at);
  cr_expect(0,
            "%s: %s: relative error %.3g > %.3g; worst at %s: gpu %.9g, cpu %.9g; %lld NaN; "
            "%lld of %lld elements off by more than 1e-4 x max|cpu| (%.3g)",
            tag, what, err, tol, element, (double)got[at], (double)want[at], (long long)nans,
            (long long)off, (long long)n, largest);
  return 0;
}

// The same bits; else the message names the first difference.
static int expect_bits(const char *tag, const char *what, const float *got, const float *want,
                       int64_t n, layout l, shape s, const int32_t *segments) {
  for (int64_t i = 0; i < n; i++)
    if (memcmp(&got[i], &want[i], sizeof *got) != 0) {
      char element[160];
      name_element(element, sizeof element, l, s, segments, i);
      cr_expect(0, "%s: %s: not the same bits; first at %s: %.9g vs %.9g", tag, what, element,
                (double)got[i], (double)want[i]);
      return 0;
    }
  return 1;
}

// The device tensor against host values.
static int expect_device_close(const char *tag, const char *what, const float *gpu,
                               const float *want, int64_t n, double tol, layout l, shape s,
                               const int32_t *segments) {
  float *got = download(gpu, n);
  int ok = expect_close(tag, what, got, want, n, tol, l, s, segments);
  free(got);
  return ok;
}

static double rms(const float *x, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; i++) sum += (double)x[i] * x[i];
  return n > 0 ? sqrt(sum / n) : 0;
}

// ---------------------------------------------------------------- CUDA against CPU

// Forward, then backward with every gradient and with some NULL, against the CPU.
static void check_against_cpu(shape s, const int32_t *segments, const char *label, uint64_t seed) {
  char tag[200];
  snprintf(tag, sizeof tag, "B=%d T=%d H=%d KVH=%d D=%d %s", s.b, s.t, s.h, s.kvh, s.d, label);
  problem p = problem_new(s, segments, seed);
  const int32_t *ids = p.segments;

  // forward
  float *out = xmalloc(p.nq, sizeof(float)), *lse = xmalloc(p.nlse, sizeof(float));
  herd_cpu_attention_forward(out, lse, p.q, p.k, p.v, ids, s.b, s.t, s.h, s.kvh, s.d);
  float *out_d = device_fill(p.nq, NAN), *lse_d = device_fill(p.nlse, NAN);
  CUDA_OK(herd_cuda_attention_forward(out_d, lse_d, p.q_d, p.k_d, p.v_d, p.segments_d, s.b, s.t,
                                      s.h, s.kvh, s.d));
  expect_device_close(tag, "out", out_d, out, p.nq, REL_TOL, Q_LAYOUT, s, ids);
  expect_device_close(tag, "lse", lse_d, lse, p.nlse, REL_TOL, LSE_LAYOUT, s, ids);

  // The backward's inputs are the CPU's out and lse: its errors are its own.
  CUDA_OK(herd_cuda_copy_to_device(out_d, out, (size_t)p.nq * sizeof(float)));
  CUDA_OK(herd_cuda_copy_to_device(lse_d, lse, (size_t)p.nlse * sizeof(float)));

  // Initial gradients of about a third of the gradients' size (the CPU's, from zero).
  float *dq0 = calloc((size_t)p.nq, sizeof(float)), *dk0 = calloc((size_t)p.nkv, sizeof(float));
  float *dv0 = calloc((size_t)p.nkv, sizeof(float));
  cr_assert(dq0 && dk0 && dv0, "out of host memory");
  herd_cpu_attention_backward(dq0, dk0, dv0, p.dout, p.q, p.k, p.v, out, lse, ids, s.b, s.t, s.h,
                              s.kvh, s.d);
  float *init[3] = {xmalloc(p.nq, sizeof(float)), xmalloc(p.nkv, sizeof(float)),
                    xmalloc(p.nkv, sizeof(float))};
  const float *grad0[3] = {dq0, dk0, dv0};
  const int64_t count[3] = {p.nq, p.nkv, p.nkv};
  for (int g = 0; g < 3; g++) {
    gc_fill_uniform(init[g], count[g], seed + 10 + g, -1, 1);
    const float size = (float)(0.5 * rms(grad0[g], count[g]));  // uniform(-1,1) has rms 0.58
    for (int64_t i = 0; i < count[g]; i++) init[g][i] *= size;
  }
  float *want[3] = {copy_of(init[0], p.nq), copy_of(init[1], p.nkv), copy_of(init[2], p.nkv)};
  herd_cpu_attention_backward(want[0], want[1], want[2], p.dout, p.q, p.k, p.v, out, lse, ids, s.b,
                              s.t, s.h, s.kvh, s.d);

  // every gradient, then dq NULL, dk and dv NULL, only dv
  static const char *const names[3] = {"dq", "dk", "dv"};
  static const layout layouts[3] = {Q_LAYOUT, KV_LAYOUT, KV_LAYOUT};
  static const int given[4][3] = {{1, 1, 1}, {0, 1, 1}, {1, 0, 0}, {0, 0, 1}};
  static const char *const variant[4] = {"all gradients", "dq NULL", "dk, dv NULL", "dq, dk NULL"};
  for (int c = 0; c < 4; c++) {
    float *grad_d[3] = {NULL, NULL, NULL};
    for (int g = 0; g < 3; g++)
      if (given[c][g]) grad_d[g] = upload(init[g], count[g]);
    CUDA_OK(herd_cuda_attention_backward(grad_d[0], grad_d[1], grad_d[2], p.dout_d, p.q_d, p.k_d,
                                         p.v_d, out_d, lse_d, p.segments_d, s.b, s.t, s.h, s.kvh,
                                         s.d));
    for (int g = 0; g < 3; g++) {
      if (!grad_d[g]) continue;
      char what[64];
      snprintf(what, sizeof what, "%s, accumulated (backward with %s)", names[g], variant[c]);
      expect_device_close(tag, what, grad_d[g], want[g], count[g], REL_TOL, layouts[g], s, ids);
      herd_cuda_free(grad_d[g]);
    }
  }

  for (int g = 0; g < 3; g++) free(init[g]), free(want[g]);
  free(dq0), free(dk0), free(dv0), free(out), free(lse);
  herd_cuda_free(out_d), herd_cuda_free(lse_d);
  problem_free(&p);
}

typedef struct {
  int t, d;
} t_and_d;

ParameterizedTestParameters(cuda_attention, matches_cpu) {
  static t_and_d params[] = {{13, 12},  {13, 48},  {13, 64},  {13, 128},   //
                             {80, 12},  {80, 48},  {80, 64},  {80, 128},   //
                             {150, 12}, {150, 48}, {150, 64}, {150, 128},  //
                             {300, 12}, {300, 48}, {300, 64}, {300, 128}};
  return cr_make_param_array(t_and_d, params, sizeof params / sizeof params[0]);
}

ParameterizedTest(t_and_d *param, cuda_attention, matches_cpu) {
  require_gpu();
  const int t = param->t, d = param->d;
  int lengths[6];
  three_samples(lengths, t);
  int32_t *segments = xmalloc(2 * t, sizeof(int32_t));
  pack(segments, 2, t, lengths, 3);
  static const int ratios[3] = {1, 2, 4};
  for (int r = 0; r < 3; r++) {
    const shape s = {2, t, 4, 4 / ratios[r], d};
    const uint64_t seed = 1000 + 16 * (uint64_t)(t * 3 + r) + (uint64_t)d;
    check_against_cpu(s, NULL, "one segment per row", seed);
    char label[96];
    snprintf(label, sizeof label, "packed %d+%d+%d / %d+%d+%d", lengths[0], lengths[1], lengths[2],
             lengths[3], lengths[4], lengths[5]);
    check_against_cpu(s, segments, label, seed + 7);
  }
  free(segments);
}

// Ids that are not contiguous runs: the CPU masks by id over the whole row (an id that comes
// back sees its earlier tokens); the kernels must do the same. Then short segments, about as
// many runs as tokens.
Test(cuda_attention, scattered_segment_ids) {
  require_gpu();
  const shape s = {2, 150, 4, 2, 48};
  int32_t ids[2 * 150];
  for (int i = 0; i < 150; i++) {
    ids[i] = i < 40 ? 1 : i < 80 ? 2 : i < 120 ? 1 : 3;            // id 1 comes back at 80
    ids[150 + i] = i < 64 ? 13 : i < 65 ? 14 : i < 100 ? 15 : 13;  // id 13 comes back at 100
  }
  check_against_cpu(s, ids, "scattered ids 1,2,1,3 / 13,14,15,13", 5000);
  // runs of 1, 2, 3, 1, 2, 3, ... tokens (a token alone has dq = dk = 0: exact cancellation,
  // which leaves only rounding noise, so the runs are mostly longer than one)
  const shape many = {2, 80, 4, 1, 64};
  int32_t runs[2 * 80];
  for (int i = 0, id = 0, left = 1, n = 1; i < 2 * 80; i++) {
    runs[i] = id;
    if (--left == 0) id++, n = n % 3 + 1, left = n;
  }
  check_against_cpu(many, runs, "runs of 1, 2, 3 tokens", 5100);
}

// ---------------------------------------------------------------- determinism

static void check_repeatable(shape s, int packed, uint64_t seed) {
  char tag[160];
  snprintf(tag, sizeof tag, "B=%d T=%d H=%d KVH=%d D=%d %s", s.b, s.t, s.h, s.kvh, s.d,
           packed ? "packed" : "one segment per row");
  int lengths[6];
  three_samples(lengths, s.t);
  int32_t *segments = xmalloc((int64_t)s.b * s.t, sizeof(int32_t));
  pack(segments, s.b, s.t, lengths, 3);
  problem p = problem_new(s, packed ? segments : NULL, seed);
  const int64_t count[5] = {p.nq, p.nlse, p.nq, p.nkv, p.nkv};
  static const char *const names[5] = {"out", "lse", "dq", "dk", "dv"};
  static const layout layouts[5] = {Q_LAYOUT, LSE_LAYOUT, Q_LAYOUT, KV_LAYOUT, KV_LAYOUT};
  float *run[2][5];
  for (int r = 0; r < 2; r++) {
    float *dev[5];
    dev[0] = device_fill(p.nq, NAN), dev[1] = device_fill(p.nlse, NAN);
    for (int g = 2; g < 5; g++) dev[g] = device_fill(count[g], 0.25f);
    CUDA_OK(herd_cuda_attention_forward(dev[0], dev[1], p.q_d, p.k_d, p.v_d, p.segments_d, s.b, s.t,
                                        s.h, s.kvh, s.d));
    CUDA_OK(herd_cuda_attention_backward(dev[2], dev[3], dev[4], p.dout_d, p.q_d, p.k_d, p.v_d,
                                         dev[0], dev[1], p.segments_d, s.b, s.t, s.h, s.kvh, s.d));
    for (int g = 0; g < 5; g++) run[r][g] = download(dev[g], count[g]), herd_cuda_free(dev[g]);
  }
  for (int g = 0; g < 5; g++) {
    char what[64];
    snprintf(what, sizeof what, "%s, run 2 against run 1", names[g]);
    expect_bits(tag, what, run[1][g], run[0][g], count[g], layouts[g], s, p.segments);
    free(run[0][g]), free(run[1][g]);
  }
  free(segments);
  problem_free(&p);
}

Test(cuda_attention, deterministic) {
  require_gpu();
  check_repeatable((shape){2, 300, 4, 2, 64}, 1, 6000);
  check_repeatable((shape){2, 150, 4, 1, 128}, 0, 6100);
  check_repeatable((shape){2, 80, 4, 4, 12}, 1, 6200);
}

// ---------------------------------------------------------------- packing

// The rows [t0, t0 + n) of x (B,T,heads,D), batch row b, as a (1,n,heads,D) tensor.
static float *rows_of(const float *x, shape s, int heads, int b, int t0, int n) {
  const int64_t row = (int64_t)heads * s.d;
  float *y = xmalloc(n * row, sizeof(float));
  memcpy(y, x + ((int64_t)b * s.t + t0) * row, (size_t)(n * row) * sizeof(float));
  return y;
}

// lse(B,H,T) columns [t0, t0 + n) of batch row b, as (1,H,n).
static float *lse_of(const float *lse, shape s, int b, int t0, int n) {
  float *y = xmalloc((int64_t)s.h * n, sizeof(float));
  for (int head = 0; head < s.h; head++)
    memcpy(y + (int64_t)head * n, lse + ((int64_t)b * s.h + head) * s.t + t0,
           (size_t)n * sizeof(float));
  return y;
}

// Each sample of a packed batch against the same sample alone (B=1, T=its length, no
// segments): forward, and backward from zero gradients with the packed run's out and lse.
static void check_packing(shape s, const int *lengths, uint64_t seed) {
  int32_t *segments = xmalloc((int64_t)s.b * s.t, sizeof(int32_t));
  pack(segments, s.b, s.t, lengths, 3);
  problem p = problem_new(s, segments, seed);
  float *dev[5];  // out, lse, dq, dk, dv of the packed batch
  const int64_t count[5] = {p.nq, p.nlse, p.nq, p.nkv, p.nkv};
  dev[0] = device_fill(p.nq, NAN), dev[1] = device_fill(p.nlse, NAN);
  for (int g = 2; g < 5; g++) dev[g] = device_fill(count[g], 0);
  CUDA_OK(herd_cuda_attention_forward(dev[0], dev[1], p.q_d, p.k_d, p.v_d, p.segments_d, s.b, s.t,
                                      s.h, s.kvh, s.d));
  CUDA_OK(herd_cuda_attention_backward(dev[2], dev[3], dev[4], p.dout_d, p.q_d, p.k_d, p.v_d,
                                       dev[0], dev[1], p.segments_d, s.b, s.t, s.h, s.kvh, s.d));
  float *packed[5];
  for (int g = 0; g < 5; g++) packed[g] = download(dev[g], count[g]);

  for (int b = 0; b < s.b; b++)
    for (int j = 0, t0 = 0; j < 3; t0 += lengths[b * 3 + j], j++) {
      const int n = lengths[b * 3 + j];
      const shape alone = {1, n, s.h, s.kvh, s.d};
      char tag[160];
      snprintf(tag, sizeof tag, "B=%d T=%d H=%d KVH=%d D=%d: sample %d of row %d (tokens %d..%d)",
               s.b, s.t, s.h, s.kvh, s.d, j, b, t0, t0 + n - 1);
      // the sample alone: its inputs, and the packed run's out and lse for its backward
      float *q = rows_of(p.q, s, s.h, b, t0, n), *k = rows_of(p.k, s, s.kvh, b, t0, n);
      float *v = rows_of(p.v, s, s.kvh, b, t0, n), *dout = rows_of(p.dout, s, s.h, b, t0, n);
      float *want[5] = {rows_of(packed[0], s, s.h, b, t0, n), lse_of(packed[1], s, b, t0, n),
                        rows_of(packed[2], s, s.h, b, t0, n),
                        rows_of(packed[3], s, s.kvh, b, t0, n),
                        rows_of(packed[4], s, s.kvh, b, t0, n)};
      const int64_t nq = (int64_t)n * s.h * s.d, nkv = (int64_t)n * s.kvh * s.d;
      const int64_t acount[5] = {nq, (int64_t)s.h * n, nq, nkv, nkv};
      float *q_d = upload(q, nq), *k_d = upload(k, nkv), *v_d = upload(v, nkv);
      float *dout_d = upload(dout, nq);
      float *adev[5];
      adev[0] = device_fill(nq, NAN), adev[1] = device_fill(acount[1], NAN);
      for (int g = 2; g < 5; g++) adev[g] = device_fill(acount[g], 0);
      CUDA_OK(herd_cuda_attention_forward(adev[0], adev[1], q_d, k_d, v_d, NULL, 1, n, s.h, s.kvh,
                                          s.d));
      float *packed_out = upload(want[0], nq), *packed_lse = upload(want[1], acount[1]);
      CUDA_OK(herd_cuda_attention_backward(adev[2], adev[3], adev[4], dout_d, q_d, k_d, v_d,
                                           packed_out, packed_lse, NULL, 1, n, s.h, s.kvh, s.d));
      static const char *const names[5] = {"out", "lse", "dq", "dk", "dv"};
      static const layout layouts[5] = {Q_LAYOUT, LSE_LAYOUT, Q_LAYOUT, KV_LAYOUT, KV_LAYOUT};
      for (int g = 0; g < 5; g++) {
        float *got = download(adev[g], acount[g]);
        char what[64];
        snprintf(what, sizeof what, "%s alone against %s packed", names[g], names[g]);
        expect_close(tag, what, got, want[g], acount[g], PACK_TOL, layouts[g], alone, NULL);
        expect_bits(tag, what, got, want[g], acount[g], layouts[g], alone, NULL);
        free(got), free(want[g]), herd_cuda_free(adev[g]);
      }
      free(q), free(k), free(v), free(dout);
      herd_cuda_free(q_d), herd_cuda_free(k_d), herd_cuda_free(v_d), herd_cuda_free(dout_d);
      herd_cuda_free(packed_out), herd_cuda_free(packed_lse);
    }
  for (int g = 0; g < 5; g++) free(packed[g]), herd_cuda_free(dev[g]);
  free(segments);
  problem_free(&p);
}

Test(cuda_attention, packed_equals_alone) {
  require_gpu();
  // samples starting mid-tile, on a tile edge (64), and one of a single token
  static const int lengths[6] = {37, 101, 62, 64, 1, 135};
  check_packing((shape){2, 200, 4, 2, 64}, lengths, 7000);
  check_packing((shape){2, 200, 4, 2, 128}, lengths, 7100);
  check_packing((shape){2, 200, 4, 4, 12}, lengths, 7200);
}

// ---------------------------------------------------------------- shapes

Test(cuda_attention, bad_shapes) {
  require_gpu();
  static const int dims[2] = {129, 256};
  for (int i = 0; i < 2; i++) {
    const int d = dims[i];
    char name[16];
    snprintf(name, sizeof name, "%d", d);
    int rc = herd_cuda_attention_forward(NULL, NULL, NULL, NULL, NULL, NULL, 2, 16, 4, 2, d);
    cr_expect_eq(rc, HERD_EINVAL, "forward with head_dim %d: rc %d: %s", d, rc, herd_errmsg());
    cr_expect(strstr(herd_errmsg(), name) != NULL, "forward's message names head_dim %d: %s", d,
              herd_errmsg());
    rc = herd_cuda_attention_backward(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 2,
                                      16, 4, 2, d);
    cr_expect_eq(rc, HERD_EINVAL, "backward with head_dim %d: rc %d: %s", d, rc, herd_errmsg());
    cr_expect(strstr(herd_errmsg(), name) != NULL, "backward's message names head_dim %d: %s", d,
              herd_errmsg());
  }
  int rc = herd_cuda_attention_forward(NULL, NULL, NULL, NULL, NULL, NULL, 2, 16, 6, 4, 64);
  cr_expect_eq(rc, HERD_EINVAL, "6 query heads over 4 kv heads: rc %d: %s", rc, herd_errmsg());
  rc = herd_cuda_attention_forward(NULL, NULL, NULL, NULL, NULL, NULL, 2, -1, 4, 2, 64);
  cr_expect_eq(rc, HERD_EINVAL, "T = -1: rc %d: %s", rc, herd_errmsg());
  rc = herd_cuda_attention_forward(NULL, NULL, NULL, NULL, NULL, NULL, 2, 0, 4, 2, 64);
  cr_expect_eq(rc, HERD_OK, "T = 0 does nothing: rc %d: %s", rc, herd_errmsg());
  rc = herd_cuda_attention_backward(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0,
                                    16, 4, 2, 64);
  cr_expect_eq(rc, HERD_OK, "B = 0 does nothing: rc %d: %s", rc, herd_errmsg());
}
