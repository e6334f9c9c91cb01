// Rotary embeddings and causal grouped-query attention with segment ids (runtime/attention.c)
// against naive double-precision references: the forward with an explicit (T,T) score matrix,
// the backward with central finite differences of that reference; then the properties the
// trainers rely on: a packed sample computes the same bits as the sample alone, results do not
// depend on the thread count, and gradients accumulate.
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "gradcheck.h"
#include "threads.h"

// ---------------------------------------------------------------- helpers

static void *xcalloc(int64_t n, size_t size) {
  void *p = calloc((size_t)n, size);
  cr_assert_not_null(p, "out of memory");
  return p;
}

// max |a - ref| / max |ref|: the forward's error relative to the output's scale.
static double max_rel_error(const float *a, const double *ref, int64_t n) {
  double diff = 0, scale = 1e-30;
  for (int64_t i = 0; i < n; i++) {
    diff = fmax(diff, fabs((double)a[i] - ref[i]));
    scale = fmax(scale, fabs(ref[i]));
  }
  return diff / scale;
}

// segments(B,T): row i holds `count` packed samples of lengths[i*count + j] tokens, with ids
// that are neither 0-based nor shared across rows. positions(B*T) restart at 0 per sample.
static void pack(int32_t *segments, int32_t *positions, int b, int t, const int *lengths,
                 int count) {
  for (int bi = 0; bi < b; bi++) {
    int s = 0;
    for (int j = 0; j < count; j++)
      for (int p = 0; p < lengths[bi * count + j]; p++, s++) {
        if (segments) segments[bi * t + s] = 10 * bi + 3 + j;
        if (positions) positions[bi * t + s] = p;
      }
    cr_assert_eq(s, t, "segment lengths of row %d add up to %d, not T=%d", bi, s, t);
  }
}

// ---------------------------------------------------------------- double references

typedef struct {
  int b, t, h, kvh, d;
} attn_shape;

// Causal GQA attention with an explicit (T,T) score matrix, mask and softmax per (b, h):
// out(B,T,H,D), lse(B,H,T) from q(B,T,H,D), k(B,T,KVH,D), v(B,T,KVH,D), segments(B,T) or NULL.
static void ref_attention(double *out, double *lse, const double *q, const double *k,
                          const double *v, const int32_t *segments, attn_shape s) {
  const int group = s.h / s.kvh, t = s.t, d = s.d;
  double *score = malloc(sizeof(double) * t * t);  // (T,T)
  for (int b = 0; b < s.b; b++)
    for (int h = 0; h < s.h; h++) {
      const int g = h / group;
      for (int i = 0; i < t; i++)
        for (int j = 0; j < t; j++) {
          const int visible = j <= i && (!segments || segments[b * t + j] == segments[b * t + i]);
          double dotp = 0;
          for (int c = 0; c < d; c++)
            dotp += q[((b * t + i) * s.h + h) * d + c] * k[((b * t + j) * s.kvh + g) * d + c];
          score[i * t + j] = visible ? dotp / sqrt(d) : -INFINITY;
        }
      for (int i = 0; i < t; i++) {  // softmax of row i in place, then out = P V
        double max = -INFINITY, sum = 0;
        for (int j = 0; j < t; j++) max = fmax(max, score[i * t + j]);
        for (int j = 0; j < t; j++) sum += exp(score[i * t + j] - max);
        if (lse) lse[(b * s.h + h) * t + i] = max + log(sum);
        for (int j = 0; j < t; j++) score[i * t + j] = exp(score[i * t + j] - max) / sum;
        for (int c = 0; c < d; c++) {
          double acc = 0;
          for (int j = 0; j < t; j++)
            acc += score[i * t + j] * v[((b * t + j) * s.kvh + g) * d + c];
          out[((b * t + i) * s.h + h) * d + c] = acc;
        }
      }
    }
  free(score);
}

// Rotary angles in double: cosines/sines(N, D/2) of position * theta^(-2i/D).
static void ref_rope_angles(double *cosines, double *sines, const int32_t *positions, int n, int d,
                            double theta) {
  for (int r = 0; r < n; r++)
    for (int i = 0; i < d / 2; i++) {
      const double angle = positions[r] * pow(theta, -2.0 * i / d);
      cosines[r * (d / 2) + i] = cos(angle);
      sines[r * (d / 2) + i] = sin(angle);
    }
}

// Rotary embedding in the rotate_half layout: out = x * cos + cat(-x[D/2:], x[:D/2]) * sin.
static void ref_rope(double *out, const double *x, const double *cosines, const double *sines,
                     int n, int heads, int d) {
  const int half = d / 2;
  for (int r = 0; r < n; r++)
    for (int h = 0; h < heads; h++) {
      const double *xr = x + ((int64_t)r * heads + h) * d, *c = cosines + r * half;
      const double *sn = sines + r * half;
      double *yr = out + ((int64_t)r * heads + h) * d;
      for (int i = 0; i < half; i++) {
        yr[i] = xr[i] * c[i] - xr[i + half] * sn[i];
        yr[i + half] = xr[i + half] * c[i] + xr[i] * sn[i];
      }
    }
}

// ---------------------------------------------------------------- attention problems

// One attention problem: f32 inputs, a random upstream gradient (the weights of the test loss
// sum(out * dout)) and double copies for the reference.
typedef struct {
  attn_shape s;
  int64_t nq, nkv;  // elements of q/out and of k/v
  float *q, *k, *v, *dout;
  int32_t *segments;  // (B,T) or NULL
  double *qd, *kd, *vd, *outd;
} problem;

static problem problem_new(attn_shape s, const int *lengths, int count, uint64_t seed) {
  problem p = {.s = s};
  p.nq = (int64_t)s.b * s.t * s.h * s.d;
  p.nkv = (int64_t)s.b * s.t * s.kvh * s.d;
  p.q = xcalloc(p.nq, sizeof(float));
  p.k = xcalloc(p.nkv, sizeof(float));
  p.v = xcalloc(p.nkv, sizeof(float));
  p.dout = xcalloc(p.nq, sizeof(float));
  // |q|, |k| up to 2 make the scores spread over several units: peaked, not uniform, softmaxes
  gc_fill_uniform(p.q, p.nq, seed, -2, 2);
  gc_fill_uniform(p.k, p.nkv, seed + 1, -2, 2);
  gc_fill_uniform(p.v, p.nkv, seed + 2, -1, 1);
  gc_fill_uniform(p.dout, p.nq, seed + 3, -1, 1);
  if (lengths) {
    p.segments = xcalloc((int64_t)s.b * s.t, sizeof(int32_t));
    pack(p.segments, NULL, s.b, s.t, lengths, count);
  }
  p.qd = xcalloc(p.nq, sizeof(double));
  p.kd = xcalloc(p.nkv, sizeof(double));
  p.vd = xcalloc(p.nkv, sizeof(double));
  p.outd = xcalloc(p.nq, sizeof(double));
  gc_to_double(p.qd, p.q, p.nq);
  gc_to_double(p.kd, p.k, p.nkv);
  gc_to_double(p.vd, p.v, p.nkv);
  return p;
}

static void problem_free(problem *p) {
  free(p->q), free(p->k), free(p->v), free(p->dout), free(p->segments);
  free(p->qd), free(p->kd), free(p->vd), free(p->outd);
}

// The outputs of one run of the kernels.
typedef struct {
  float *out, *lse, *dq, *dk, *dv;
} result;

static result result_new(const problem *p) {
  const attn_shape s = p->s;
  return (result){xcalloc(p->nq, sizeof(float)), xcalloc((int64_t)s.b * s.h * s.t, sizeof(float)),
                  xcalloc(p->nq, sizeof(float)), xcalloc(p->nkv, sizeof(float)),
                  xcalloc(p->nkv, sizeof(float))};
}

static void result_free(result *r) {
  free(r->out), free(r->lse), free(r->dq), free(r->dk), free(r->dv);
}

// forward, then backward into the (zeroed or prefilled) gradients of r
static void run_kernels(result *r, const problem *p) {
  const attn_shape s = p->s;
  herd_cpu_attention_forward(r->out, r->lse, p->q, p->k, p->v, p->segments, s.b, s.t, s.h, s.kvh,
                             s.d);
  herd_cpu_attention_backward(r->dq, r->dk, r->dv, p->dout, p->q, p->k, p->v, r->out, r->lse,
                              p->segments, s.b, s.t, s.h, s.kvh, s.d);
}

// the scalar loss sum(out * dout) of the double reference, for gc_numeric_grad
static double problem_loss(void *ctx) {
  problem *p = ctx;
  ref_attention(p->outd, NULL, p->qd, p->kd, p->vd, p->segments, p->s);
  return gc_dot_weights(p->outd, p->dout, p->nq);
}

// Packed rows for B=2, three samples each, of uneven lengths. Attention works in tiles of 64
// queries and keys: at T=13 and 37 a sample is one tile; at T=80, 150 and 200 samples span two
// or three tiles (66, 70, 71, 100, 130), one is exactly a tile (64), others are short.
static const int *lengths_for(int t) {
  static const int l13[] = {4, 6, 3, 7, 2, 4}, l37[] = {11, 17, 9, 20, 5, 12};
  static const int l80[] = {66, 9, 5, 12, 64, 4}, l150[] = {70, 9, 71, 20, 100, 30};
  static const int l200[] = {70, 100, 30, 130, 64, 6};
  switch (t) {
    case 13:
      return l13;
    case 37:
      return l37;
    case 80:
      return l80;
    case 150:
      return l150;
    case 200:
      return l200;
  }
  cr_assert_fail("no segment lengths for T=%d", t);
  return NULL;
}

typedef struct {
  int t, h, kvh, d, segmented;
} attn_case;

static const char *seg_name(int segmented) {
  return segmented ? "3 segments" : "no segments";
}

// ---------------------------------------------------------------- (1) forward vs reference

ParameterizedTestParameters(attention, forward_matches_reference) {
  static attn_case cases[2 * 2 * 6];  // T x segments x shapes
  static const int shapes[][3] = {{4, 4, 12}, {4, 2, 12}, {4, 1, 12},
                                  {6, 3, 48}, {6, 2, 48}, {6, 6, 48}};
  static const int ts[] = {37, 150};
  int n = 0;
  for (int ti = 0; ti < 2; ti++)
    for (int seg = 0; seg < 2; seg++)
      for (int i = 0; i < 6; i++)
        cases[n++] = (attn_case){ts[ti], shapes[i][0], shapes[i][1], shapes[i][2], seg};
  return cr_make_param_array(attn_case, cases, n);
}

ParameterizedTest(attn_case *c, attention, forward_matches_reference) {
  const attn_shape s = {2, c->t, c->h, c->kvh, c->d};
  problem p = problem_new(s, c->segmented ? lengths_for(c->t) : NULL, 3, 11);
  result r = result_new(&p);
  herd_cpu_attention_forward(r.out, r.lse, p.q, p.k, p.v, p.segments, s.b, s.t, s.h, s.kvh, s.d);
  double *lse = xcalloc((int64_t)s.b * s.h * s.t, sizeof(double));
  ref_attention(p.outd, lse, p.qd, p.kd, p.vd, p.segments, s);
  const double err_out = max_rel_error(r.out, p.outd, p.nq);
  const double err_lse = max_rel_error(r.lse, lse, (int64_t)s.b * s.h * s.t);
  cr_log_info("forward T=%d H=%d KVH=%d D=%d %s: out %.2e, lse %.2e", s.t, s.h, s.kvh, s.d,
              seg_name(c->segmented), err_out, err_lse);
  cr_expect_lt(err_out, 1e-5, "out: T=%d H=%d KVH=%d D=%d %s: %g", s.t, s.h, s.kvh, s.d,
               seg_name(c->segmented), err_out);
  cr_expect_lt(err_lse, 1e-6, "lse: T=%d H=%d KVH=%d D=%d %s: %g", s.t, s.h, s.kvh, s.d,
               seg_name(c->segmented), err_lse);
  free(lse);
  result_free(&r);
  problem_free(&p);
}

// Segment ids compare for equality, not for contiguity: a token also sees earlier tokens of its
// id beyond a gap. Interleaved ids (i*7 % 3) make three strided samples; at T=150 the ids
// 5..7 first appear at token 70, so their queries see nothing in the first key tile, and
// ids 0 and 1 come back at token 130 after a gap of 60.
static int32_t odd_id(int i, int t) {
  if (t <= 13) return (i * 7) % 3;
  if (t == 80) return i < 66 ? i % 2 : 5;
  return i < 70 ? i % 2 : i < 130 ? i % 3 + 5 : i % 2;
}

ParameterizedTestParameters(attention, non_contiguous_segment_ids_follow_equality) {
  static attn_case cases[] = {{13, 4, 2, 12, 1}, {80, 2, 1, 4, 1}, {150, 6, 3, 48, 1}};
  return cr_make_param_array(attn_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(attn_case *c, attention, non_contiguous_segment_ids_follow_equality) {
  const attn_shape s = {2, c->t, c->h, c->kvh, c->d};
  problem p = problem_new(s, NULL, 0, 21);
  p.segments = xcalloc(s.b * s.t, sizeof(int32_t));
  for (int i = 0; i < s.b * s.t; i++) p.segments[i] = odd_id(i % s.t, s.t) + 10 * (i / s.t);
  result r = result_new(&p);
  run_kernels(&r, &p);
  double *lse = xcalloc((int64_t)s.b * s.h * s.t, sizeof(double));
  ref_attention(p.outd, lse, p.qd, p.kd, p.vd, p.segments, s);
  const double err_out = max_rel_error(r.out, p.outd, p.nq);
  cr_expect_lt(err_out, 1e-5, "T=%d: %g", s.t, err_out);
  cr_expect_lt(max_rel_error(r.lse, lse, (int64_t)s.b * s.h * s.t), 1e-6);
  if (s.t <= 80) {  // finite differences at modest sizes only
    double *num = xcalloc(p.nq, sizeof(double));
    gc_numeric_grad(num, p.qd, p.nq, problem_loss, &p, 1e-4);
    const double err_q = gc_rel_error(r.dq, num, p.nq);
    gc_numeric_grad(num, p.kd, p.nkv, problem_loss, &p, 1e-4);
    const double err_k = gc_rel_error(r.dk, num, p.nkv);
    gc_numeric_grad(num, p.vd, p.nkv, problem_loss, &p, 1e-4);
    const double err_v = gc_rel_error(r.dv, num, p.nkv);
    cr_log_info("non-contiguous ids T=%d: out %.2e, dq %.2e, dk %.2e, dv %.2e", s.t, err_out, err_q,
                err_k, err_v);
    cr_expect_lt(err_q, 1e-4, "dq: %g", err_q);
    cr_expect_lt(err_k, 1e-4, "dk: %g", err_k);
    cr_expect_lt(err_v, 1e-4, "dv: %g", err_v);
    free(num);
  }
  free(lse);
  result_free(&r);
  problem_free(&p);
}

// ---------------------------------------------------------------- (2) backward vs differences

// GQA ratios 1, 2 and 4 at T=13 (one tile), and ratio 2 at T=80 (two query and key tiles:
// online softmax rescaling, off-diagonal tiles), each without and with packed samples.
ParameterizedTestParameters(attention, backward_matches_finite_differences) {
  static attn_case cases[] = {
      {13, 4, 4, 12, 0}, {13, 4, 2, 12, 0}, {13, 4, 1, 12, 0}, {80, 2, 1, 4, 0},
      {13, 4, 4, 12, 1}, {13, 4, 2, 12, 1}, {13, 4, 1, 12, 1}, {80, 2, 1, 4, 1},
  };
  return cr_make_param_array(attn_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(attn_case *c, attention, backward_matches_finite_differences) {
  const attn_shape s = {2, c->t, c->h, c->kvh, c->d};
  problem p = problem_new(s, c->segmented ? lengths_for(c->t) : NULL, 3, 31);
  result r = result_new(&p);
  run_kernels(&r, &p);
  double *num = xcalloc(p.nq, sizeof(double));
  gc_numeric_grad(num, p.qd, p.nq, problem_loss, &p, 1e-4);
  const double err_q = gc_rel_error(r.dq, num, p.nq);
  gc_numeric_grad(num, p.kd, p.nkv, problem_loss, &p, 1e-4);
  const double err_k = gc_rel_error(r.dk, num, p.nkv);
  gc_numeric_grad(num, p.vd, p.nkv, problem_loss, &p, 1e-4);
  const double err_v = gc_rel_error(r.dv, num, p.nkv);
  cr_log_info("backward T=%d H=%d KVH=%d D=%d %s: dq %.2e, dk %.2e, dv %.2e", s.t, s.h, s.kvh, s.d,
              seg_name(c->segmented), err_q, err_k, err_v);
  cr_expect_lt(err_q, 1e-4, "dq: T=%d H=%d KVH=%d %s: %g", s.t, s.h, s.kvh, seg_name(c->segmented),
               err_q);
  cr_expect_lt(err_k, 1e-4, "dk: T=%d H=%d KVH=%d %s: %g", s.t, s.h, s.kvh, seg_name(c->segmented),
               err_k);
  cr_expect_lt(err_v, 1e-4, "dv: T=%d H=%d KVH=%d %s: %g", s.t, s.h, s.kvh, seg_name(c->segmented),
               err_v);
  free(num);
  result_free(&r);
  problem_free(&p);
}

// ---------------------------------------------------------------- (3) segment isolation

// Copies the rows [start, start+len) of batch row bi of x(B,T,heads,D) into y(1,len,heads,D),
// or back when `back`.
static void copy_rows(float *packed, float *alone, int bi, int t, int start, int len, int heads,
                      int d, int back) {
  const int64_t row = (int64_t)heads * d;
  float *at = packed + ((int64_t)bi * t + start) * row;
  if (back)
    memcpy(at, alone, sizeof(float) * len * row);
  else
    memcpy(alone, at, sizeof(float) * len * row);
}

// Every packed sample, run alone at its own length T=len without segment ids, gives exactly
// the bits it got packed: out, lse, dq, dk and dv are all exact (tiles start at each sample's
// first token and never reach into another sample, so every sgemm and every element-wise step
// sees the same numbers in the same order, packed or alone). T=200 holds samples of 1 to 3
// tiles.
ParameterizedTestParameters(attention, packed_samples_equal_samples_alone) {
  static attn_case cases[] = {
      {37, 6, 2, 48, 1}, {200, 6, 2, 48, 1}, {200, 4, 4, 12, 1}, {200, 4, 1, 20, 1}};
  return cr_make_param_array(attn_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(attn_case *c, attention, packed_samples_equal_samples_alone) {
  const attn_shape s = {2, c->t, c->h, c->kvh, c->d};
  const int *lengths = lengths_for(c->t);
  problem packed = problem_new(s, lengths, 3, 41);
  result rp = result_new(&packed);
  run_kernels(&rp, &packed);

  for (int bi = 0; bi < s.b; bi++)
    for (int j = 0, start = 0; j < 3; start += lengths[bi * 3 + j], j++) {
      const int len = lengths[bi * 3 + j];
      const attn_shape one = {1, len, s.h, s.kvh, s.d};
      problem alone = problem_new(one, NULL, 0, 0);
      copy_rows(packed.q, alone.q, bi, s.t, start, len, s.h, s.d, 0);
      copy_rows(packed.k, alone.k, bi, s.t, start, len, s.kvh, s.d, 0);
      copy_rows(packed.v, alone.v, bi, s.t, start, len, s.kvh, s.d, 0);
      copy_rows(packed.dout, alone.dout, bi, s.t, start, len, s.h, s.d, 0);
      result ra = result_new(&alone);
      run_kernels(&ra, &alone);

      // the packed run's slice of each output, gathered into the alone layout
      float *slice = xcalloc(alone.nq, sizeof(float));
      copy_rows(rp.out, slice, bi, s.t, start, len, s.h, s.d, 0);
      cr_expect_arr_eq(slice, ra.out, sizeof(float) * alone.nq, "out of row %d sample %d", bi, j);
      copy_rows(rp.dq, slice, bi, s.t, start, len, s.h, s.d, 0);
      cr_expect_arr_eq(slice, ra.dq, sizeof(float) * alone.nq, "dq of row %d sample %d", bi, j);
      copy_rows(rp.dk, slice, bi, s.t, start, len, s.kvh, s.d, 0);
      cr_expect_arr_eq(slice, ra.dk, sizeof(float) * alone.nkv, "dk of row %d sample %d", bi, j);
      copy_rows(rp.dv, slice, bi, s.t, start, len, s.kvh, s.d, 0);
      cr_expect_arr_eq(slice, ra.dv, sizeof(float) * alone.nkv, "dv of row %d sample %d", bi, j);
      for (int h = 0; h < s.h; h++)  // lse(B,H,T): one contiguous run of len per head
        cr_expect_arr_eq(rp.lse + ((int64_t)bi * s.h + h) * s.t + start, ra.lse + (int64_t)h * len,
                         sizeof(float) * len, "lse of row %d sample %d head %d", bi, j, h);
      free(slice);
      result_free(&ra);
      problem_free(&alone);
    }
  result_free(&rp);
  problem_free(&packed);
}

// ---------------------------------------------------------------- (5) determinism

// T=200: several tiles per sample and per row, work split over (b, h) and (b, kv head) units.
ParameterizedTestParameters(attention, one_and_two_threads_give_identical_bits) {
  static attn_case cases[] = {{200, 6, 2, 48, 1}, {200, 6, 2, 48, 0}, {37, 4, 1, 12, 1}};
  return cr_make_param_array(attn_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(attn_case *c, attention, one_and_two_threads_give_identical_bits) {
  const attn_shape s = {2, c->t, c->h, c->kvh, c->d};
  problem p = problem_new(s, c->segmented ? lengths_for(c->t) : NULL, 3, 51);
  result r1 = result_new(&p), r2 = result_new(&p);
  cr_assert_eq(herd_set_threads(1), 0);
  run_kernels(&r1, &p);
  cr_assert_eq(herd_set_threads(2), 0);
  run_kernels(&r2, &p);
  cr_expect_arr_eq(r1.out, r2.out, sizeof(float) * p.nq);
  cr_expect_arr_eq(r1.lse, r2.lse, sizeof(float) * s.b * s.h * s.t);
  cr_expect_arr_eq(r1.dq, r2.dq, sizeof(float) * p.nq);
  cr_expect_arr_eq(r1.dk, r2.dk, sizeof(float) * p.nkv);
  cr_expect_arr_eq(r1.dv, r2.dv, sizeof(float) * p.nkv);
  result_free(&r1), result_free(&r2);
  problem_free(&p);
}

// ---------------------------------------------------------------- (6) accumulation

// Prefilled gradients receive +=; NULL gradients are skipped and change nothing else.
Test(attention, backward_accumulates_and_skips_null) {
  const attn_shape s = {2, 150, 4, 2, 12};
  problem p = problem_new(s, lengths_for(150), 3, 61);
  result fresh = result_new(&p), acc = result_new(&p);
  run_kernels(&fresh, &p);
  float *prefill = xcalloc(p.nq, sizeof(float));
  gc_fill_uniform(prefill, p.nq, 62, -1, 1);
  memcpy(acc.dq, prefill, sizeof(float) * p.nq);
  memcpy(acc.dk, prefill, sizeof(float) * p.nkv);
  memcpy(acc.dv, prefill, sizeof(float) * p.nkv);
  run_kernels(&acc, &p);
  double *expect = xcalloc(p.nq, sizeof(double));
  float *grads[3][2] = {{fresh.dq, acc.dq}, {fresh.dk, acc.dk}, {fresh.dv, acc.dv}};
  const int64_t sizes[3] = {p.nq, p.nkv, p.nkv};
  for (int g = 0; g < 3; g++) {
    for (int64_t i = 0; i < sizes[g]; i++) expect[i] = (double)prefill[i] + grads[g][0][i];
    cr_expect_lt(max_rel_error(grads[g][1], expect, sizes[g]), 1e-6, "gradient %d", g);
  }

  // only dv wanted: the same bits as dv of the full run
  float *dv = xcalloc(p.nkv, sizeof(float));
  herd_cpu_attention_backward(NULL, NULL, dv, p.dout, p.q, p.k, p.v, fresh.out, fresh.lse,
                              p.segments, s.b, s.t, s.h, s.kvh, s.d);
  cr_expect_arr_eq(dv, fresh.dv, sizeof(float) * p.nkv);
  float *dq = xcalloc(p.nq, sizeof(float));
  herd_cpu_attention_backward(dq, NULL, NULL, p.dout, p.q, p.k, p.v, fresh.out, fresh.lse,
                              p.segments, s.b, s.t, s.h, s.kvh, s.d);
  cr_expect_arr_eq(dq, fresh.dq, sizeof(float) * p.nq);
  free(dv), free(dq), free(expect), free(prefill);
  result_free(&fresh), result_free(&acc);
  problem_free(&p);
}

// ---------------------------------------------------------------- (4) rotary embeddings

typedef struct {
  int n, heads, d;
  const float *w;           // loss weights (N,heads,D)
  double *xd, *yd;          // reference input and output (N,heads,D)
  double *cosines, *sines;  // (N, D/2)
} rope_problem;

static double rope_loss(void *ctx) {
  rope_problem *p = ctx;
  ref_rope(p->yd, p->xd, p->cosines, p->sines, p->n, p->heads, p->d);
  return gc_dot_weights(p->yd, p->w, (int64_t)p->n * p->heads * p->d);
}

typedef struct {
  float theta;
  int d;
} rope_case;

ParameterizedTestParameters(rope, matches_reference_with_positions_per_segment) {
  static rope_case cases[] = {{10000.0f, 12}, {10000.0f, 48}, {500000.0f, 12}, {500000.0f, 48}};
  return cr_make_param_array(rope_case, cases, sizeof cases / sizeof cases[0]);
}

// forward vs the double reference, positions restarting per packed sample; backward vs central
// differences; backward(forward(x)) = x (the rotation is orthogonal).
ParameterizedTest(rope_case *c, rope, matches_reference_with_positions_per_segment) {
  const int b = 2, t = 37, heads = 3, d = c->d, n = b * t;
  const int64_t size = (int64_t)n * heads * d;
  int32_t *positions = xcalloc(n, sizeof(int32_t));
  pack(NULL, positions, b, t, lengths_for(t), 3);
  float *x = xcalloc(size, sizeof(float)), *y = xcalloc(size, sizeof(float));
  float *w = xcalloc(size, sizeof(float)), *dx = xcalloc(size, sizeof(float));
  gc_fill_uniform(x, size, 71, -1, 1);
  gc_fill_uniform(w, size, 72, -1, 1);
  double *xd = xcalloc(size, sizeof(double)), *yd = xcalloc(size, sizeof(double));
  gc_to_double(xd, x, size);
  double *cosines = xcalloc(n * d / 2, sizeof(double)), *sines = xcalloc(n * d / 2, sizeof(double));
  ref_rope_angles(cosines, sines, positions, n, d, c->theta);

  herd_cpu_rope_forward(y, x, positions, n, heads, d, c->theta);
  ref_rope(yd, xd, cosines, sines, n, heads, d);
  const double err_fwd = max_rel_error(y, yd, size);
  // position 0 (each sample's first token) is the identity, exactly
  for (int r = 0; r < n; r++)
    if (positions[r] == 0)
      cr_expect_arr_eq(y + (int64_t)r * heads * d, x + (int64_t)r * heads * d,
                       sizeof(float) * heads * d, "row %d", r);

  herd_cpu_rope_backward(dx, w, positions, n, heads, d, c->theta);
  rope_problem rp = {n, heads, d, w, xd, yd, cosines, sines};
  double *num = xcalloc(size, sizeof(double));
  gc_numeric_grad(num, xd, size, rope_loss, &rp, 1e-4);
  const double err_bwd = gc_rel_error(dx, num, size);

  memset(dx, 0, sizeof(float) * size);
  herd_cpu_rope_backward(dx, y, positions, n, heads, d, c->theta);
  const double err_inv = max_rel_error(dx, xd, size);
  cr_log_info("rope theta=%g D=%d: forward %.2e, backward %.2e, inverse %.2e", c->theta, d, err_fwd,
              err_bwd, err_inv);
  cr_expect_lt(err_fwd, 1e-5, "forward: %g", err_fwd);
  cr_expect_lt(err_bwd, 1e-4, "backward: %g", err_bwd);
  cr_expect_lt(err_inv, 1e-6, "backward(forward(x)) != x: %g", err_inv);
  free(positions), free(x), free(y), free(w), free(dx), free(xd), free(yd), free(num);
  free(cosines), free(sines);
}

// rope backward accumulates, and gives the same bits on one and two threads
Test(rope, accumulates_and_is_thread_count_independent) {
  const int n = 74, heads = 6, d = 48;
  const int64_t size = (int64_t)n * heads * d;
  int32_t *positions = xcalloc(n, sizeof(int32_t));
  pack(NULL, positions, 2, 37, lengths_for(37), 3);
  float *x = xcalloc(size, sizeof(float)), *y1 = xcalloc(size, sizeof(float));
  float *y2 = xcalloc(size, sizeof(float)), *dx = xcalloc(size, sizeof(float));
  gc_fill_uniform(x, size, 81, -1, 1);
  cr_assert_eq(herd_set_threads(1), 0);
  herd_cpu_rope_forward(y1, x, positions, n, heads, d, 10000.0f);
  cr_assert_eq(herd_set_threads(2), 0);
  herd_cpu_rope_forward(y2, x, positions, n, heads, d, 10000.0f);
  cr_expect_arr_eq(y1, y2, sizeof(float) * size);

  herd_cpu_rope_backward(dx, y1, positions, n, heads, d, 10000.0f);  // dx = x (approximately)
  memcpy(y2, dx, sizeof(float) * size);
  herd_cpu_rope_backward(dx, y1, positions, n, heads, d, 10000.0f);  // dx = 2x
  double *expect = xcalloc(size, sizeof(double));
  for (int64_t i = 0; i < size; i++) expect[i] = 2.0 * y2[i];
  cr_expect_lt(max_rel_error(dx, expect, size), 1e-7);
  free(positions), free(x), free(y1), free(y2), free(dx), free(expect);
}
