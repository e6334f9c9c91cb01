// Rotary embeddings and causal grouped-query attention with segment ids (see attention.h).
//
// Attention is FlashAttention-2 (Dao 2023) in TILE x TILE tiles whose products are
// single-threaded OpenBLAS sgemm calls: the forward pass keeps a running max and sum per query
// row (online softmax) and saves the row's log-sum-exp; the backward pass recomputes each
// probability tile as exp(S - lse). No (T,T) matrix exists; scratch is a few tiles per thread.
//
// Determinism: every output element is written by one thread, in an order fixed by the shapes
// alone. The forward pass splits work over (b, h); the backward pass over (b, kv head) groups,
// so one thread owns the dk/dv rows of its kv head and the dq rows of the query heads that read
// it. Each sgemm runs on one thread (threads.c holds OpenBLAS at one), so its bits do not
// depend on HERD_THREADS; the element-wise sums below have fixed lanes.
//
// Segment isolation: the packed samples of a batch row (runs of equal segment ids) are cut
// into tiles from each sample's first token, and no tile reaches into another sample; a
// packed sample therefore computes exactly what the same sample computes alone, every tile
// the same sgemm on the same data (t/attention_test.c checks the bits). Ids that are not
// contiguous runs fall back to one region per batch row, masked by id.
#include "attention.h"

#include <cblas.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "threads.h"
#include "vexp.h"

// The element-wise tile work (exp, max, sums, masks) is compiled twice, for AVX2 and for the
// x86-64 baseline (SSE2), and the loader picks one (gcc function multiversioning). Both give
// the same bits: sums have fixed lanes, and -std=c11 contracts nothing into FMAs.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KERNEL __attribute__((target_clones("avx2", "default"), flatten))
#else
#define KERNEL
#endif

enum {
  LANES = 8,  // partial sums of dot and sum: two SSE registers or one AVX register
  TILE = 64,  // queries and keys per tile: 64x64 score tiles, 16 KiB each
};

// The LANES partial sums of dot and sum, added pairwise.
static inline float lanes_total(const float *lane) {
  return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

// sum_i a[i] * b[i] (n elements): LANES interleaved partial sums added pairwise, plus the
// n % LANES leftover products (summed on their own, so the lanes stay in registers).
static inline float dot(const float *restrict a, const float *restrict b, int n) {
  float lane[LANES] = {0}, tail = 0;
  int i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int j = 0; j < LANES; j++) lane[j] += a[i + j] * b[i + j];
  for (; i < n; i++) tail += a[i] * b[i];
  return lanes_total(lane) + tail;
}

// sum_i a[i] (n elements), in dot's order.
static inline float sum(const float *restrict a, int n) {
  float lane[LANES] = {0}, tail = 0;
  int i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int j = 0; j < LANES; j++) lane[j] += a[i + j];
  for (; i < n; i++) tail += a[i];
  return lanes_total(lane) + tail;
}

// ---------------------------------------------------------------- rotary embeddings

// theta^(-2i/D) for i < D/2, rounded to f32 as Hugging Face's LlamaRotaryEmbedding keeps it.
static void rope_inv_freq(float *inv_freq, int half, float theta) {
  for (int i = 0; i < half; i++) inv_freq[i] = (float)pow(theta, -(double)(2 * i) / (2 * half));
}

// cos and sin (D/2) of one row's angles, position * inv_freq in f32 as in Hugging Face.
static void rope_angles(float *restrict cosines, float *restrict sines,
                        const float *restrict inv_freq, int32_t position, int half) {
  for (int i = 0; i < half; i++) sincosf((float)position * inv_freq[i], &sines[i], &cosines[i]);
}

void herd_cpu_rope_forward(float *out, const float *inp, const int32_t *positions, int n, int heads,
                           int head_dim, float theta) {
  const int half = head_dim / 2;
  if (n <= 0 || heads <= 0 || half <= 0) return;
  float inv_freq[half];
  rope_inv_freq(inv_freq, half, theta);
#pragma omp parallel for schedule(static) num_threads(herd_threads())
  for (int r = 0; r < n; r++) {
    float cosines[half], sines[half];
    rope_angles(cosines, sines, inv_freq, positions[r], half);
    for (int hd = 0; hd < heads; hd++) {
      const float *x = inp + ((int64_t)r * heads + hd) * head_dim;  // (D)
      float *y = out + ((int64_t)r * heads + hd) * head_dim;        // (D)
      // q * cos + rotate_half(q) * sin, rotate_half(x) = cat(-x[D/2:], x[:D/2])
#pragma omp simd
      for (int i = 0; i < half; i++) {
        float x1 = x[i], x2 = x[i + half];
        y[i] = x1 * cosines[i] - x2 * sines[i];
        y[i + half] = x2 * cosines[i] + x1 * sines[i];
      }
    }
  }
}

void herd_cpu_rope_backward(float *dinp, const float *dout, const int32_t *positions, int n,
                            int heads, int head_dim, float theta) {
  const int half = head_dim / 2;
  if (n <= 0 || heads <= 0 || half <= 0) return;
  float inv_freq[half];
  rope_inv_freq(inv_freq, half, theta);
#pragma omp parallel for schedule(static) num_threads(herd_threads())
  for (int r = 0; r < n; r++) {
    float cosines[half], sines[half];
    rope_angles(cosines, sines, inv_freq, positions[r], half);
    for (int hd = 0; hd < heads; hd++) {
      const float *dy = dout + ((int64_t)r * heads + hd) * head_dim;  // (D)
      float *dx = dinp + ((int64_t)r * heads + hd) * head_dim;        // (D)
      // the transpose of the rotation is the rotation by -angle
#pragma omp simd
      for (int i = 0; i < half; i++) {
        float dy1 = dy[i], dy2 = dy[i + half];
        dx[i] += dy1 * cosines[i] + dy2 * sines[i];
        dx[i + half] += dy2 * cosines[i] - dy1 * sines[i];
      }
    }
  }
}

// ---------------------------------------------------------------- attention

// Whether every segment id of a batch row forms one contiguous run (packed samples do).
static int ids_contiguous(const int32_t *seg, int t) {
  for (int r = 1; r < t; r++)
    if (seg[r] != seg[r - 1])
      for (int s = 0; s < r - 1; s++)
        if (seg[s] == seg[r]) return 0;
  return 1;
}

// The end of the region starting at `start`: the end of its run of equal ids, or of the row
// when there are no ids or when ids are masked one by one (by_id).
static int region_end(const int32_t *seg, int t, int start, int by_id) {
  if (!seg || by_id) return t;
  int end = start + 1;
  while (end < t && seg[end] == seg[start]) end++;
  return end;
}

// Scores s(m, nk) (row stride TILE) of queries r0.. against keys c0.. of one region: those a
// query may not see (a later key, or another id when ids != NULL) become -inf.
static inline void mask_tile(float *s, int m, int nk, int r0, int c0, const int32_t *ids) {
  if (!ids && c0 + nk - 1 <= r0) return;  // a tile below the diagonal sees everything
  for (int i = 0; i < m; i++)
    for (int j = 0; j < nk; j++)
      if (c0 + j > r0 + i || (ids && ids[c0 + j] != ids[r0 + i])) s[i * TILE + j] = -INFINITY;
}

// p(nk) = exp(s(nk) - shift), 0 where s is -inf (masked).
static inline void masked_exp(float *restrict p, const float *restrict s, float shift, int nk) {
  herd_exp_shifted(p, s, shift, nk);
#pragma omp simd
  for (int j = 0; j < nk; j++) p[j] = s[j] == -INFINITY ? 0 : p[j];
}

// One query head of one batch row: q, out point at its query 0 (q_stride apart), k, v at key 0
// of its kv head (kv_stride apart); lse(T) is its row of lse(B,H,T).
static KERNEL void forward_head(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int32_t *seg, int t, int d, int64_t q_stride,
                                int64_t kv_stride, float scale) {
  const int by_id = seg && !ids_contiguous(seg, t);
  float s[TILE * TILE], p[TILE * TILE];  // scores and probabilities of one tile
  float row_max[TILE], row_sum[TILE];    // online softmax state of the query tile
  for (int a = 0, e; a < t; a = e) {     // region [a, e)
    e = region_end(seg, t, a, by_id);
    const int32_t *ids = by_id ? seg : NULL;
    for (int r0 = 0; r0 < e - a; r0 += TILE) {  // queries a+r0 .. a+r0+m-1
      const int m = e - a - r0 < TILE ? e - a - r0 : TILE;
      const float *qt = q + (a + r0) * q_stride;
      float *ot = out + (a + r0) * q_stride;
      for (int c0 = 0; c0 < r0 + m; c0 += TILE) {  // keys a+c0 .. a+c0+nk-1, up to the diagonal
        const int nk = r0 + m - c0 < TILE ? r0 + m - c0 : TILE;
        const float *kt = k + (a + c0) * kv_stride, *vt = v + (a + c0) * kv_stride;
        // s = scale * Q K^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nk, d, scale, qt, q_stride, kt,
                    kv_stride, 0.0f, s, TILE);
        mask_tile(s, m, nk, r0, c0, ids ? ids + a : NULL);
        for (int i = 0; i < m; i++) {
          float max = c0 == 0 ? -INFINITY : row_max[i];
          const float old_max = max;
#pragma omp simd reduction(max : max)  // any order: the max is the max (NaNs: out is NaN anyway)
          for (int j = 0; j < nk; j++) max = s[i * TILE + j] > max ? s[i * TILE + j] : max;
          const float shift = max == -INFINITY ? 0 : max;  // a row with nothing visible yet
          masked_exp(p + i * TILE, s + i * TILE, shift, nk);
          if (c0 == 0) {
            row_sum[i] = sum(p + i * TILE, nk);
          } else {  // rescale what the earlier key tiles summed to the new max
            float correction;
            herd_exp_shifted(&correction, &old_max, shift, 1);
            row_sum[i] = row_sum[i] * correction + sum(p + i * TILE, nk);
            for (int c = 0; c < d; c++) ot[i * q_stride + c] *= correction;
          }
          row_max[i] = max;
        }
        // out (+)= P V
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, d, nk, 1.0f, p, TILE, vt,
                    kv_stride, c0 == 0 ? 0.0f : 1.0f, ot, q_stride);
      }
      for (int i = 0; i < m; i++) {
        const float inv_sum = 1.0f / row_sum[i];
        for (int c = 0; c < d; c++) ot[i * q_stride + c] *= inv_sum;
        lse[a + r0 + i] = row_max[i] + logf(row_sum[i]);
      }
    }
  }
}

void herd_cpu_attention_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int32_t *segments, int b, int t, int h,
                                int kvh, int d) {
  if (b <= 0 || t <= 0 || h <= 0 || kvh <= 0 || d <= 0) return;
  const int group = h / kvh;  // query heads per kv head
  const int64_t q_stride = (int64_t)h * d, kv_stride = (int64_t)kvh * d;
  const float scale = 1.0f / sqrtf((float)d);
#pragma omp parallel for schedule(dynamic, 1) num_threads(herd_threads())
  for (int64_t bh = 0; bh < (int64_t)b * h; bh++) {
    const int bi = (int)(bh / h), hi = (int)(bh % h);
    const int64_t q0 = ((int64_t)bi * t * h + hi) * d;             // query 0 of head hi
    const int64_t kv0 = ((int64_t)bi * t * kvh + hi / group) * d;  // key 0 of its kv head
    forward_head(out + q0, lse + bh * t, q + q0, k + kv0, v + kv0,
                 segments ? segments + (int64_t)bi * t : NULL, t, d, q_stride, kv_stride, scale);
  }
}

// With P = softmax(S), S = scale * Q K^T and O = P V (FlashAttention-2, algorithm 2):
//   dV += P^T dO;  dP = dO V^T;  dS = P * (dP - D), D_t = dO_t . O_t;
//   dQ += scale dS K;  dK += scale dS^T Q.
// For each region, query head of the group, query tile and key tile in that order; every
// dq/dk/dv tile takes its += from one sgemm (beta = 1) at a time.
static KERNEL void backward_group(float *dq, float *dk, float *dv, const float *dout,
                                  const float *q, const float *k, const float *v, const float *out,
                                  const float *lse, const int32_t *seg, int t, int d, int heads,
                                  int64_t q_stride, int64_t kv_stride, float scale) {
  // q, out, dout, dq: query 0 of the group's first head (the next head d floats further);
  // k, v, dk, dv: key 0 of the kv head; lse: (heads, T) rows of the group's heads.
  const int by_id = seg && !ids_contiguous(seg, t);
  float s[TILE * TILE], p[TILE * TILE], ds[TILE * TILE];  // scores, P, dP then dS
  float delta[TILE];                                      // D of the query tile
  for (int a = 0, e; a < t; a = e) {
    e = region_end(seg, t, a, by_id);
    const int32_t *ids = by_id ? seg : NULL;
    for (int hi = 0; hi < heads; hi++) {
      const int64_t qh = hi * d;  // head hi's offset within a query row
      for (int r0 = 0; r0 < e - a; r0 += TILE) {
        const int m = e - a - r0 < TILE ? e - a - r0 : TILE;
        const int64_t qr = qh + (a + r0) * q_stride;  // query a+r0 of head hi
        for (int i = 0; i < m; i++)
          delta[i] = dot(dout + qr + i * q_stride, out + qr + i * q_stride, d);
        for (int c0 = 0; c0 < r0 + m; c0 += TILE) {
          const int nk = r0 + m - c0 < TILE ? r0 + m - c0 : TILE;
          const int64_t kc = (a + c0) * kv_stride;  // key a+c0
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nk, d, scale, q + qr, q_stride,
                      k + kc, kv_stride, 0.0f, s, TILE);
          mask_tile(s, m, nk, r0, c0, ids ? ids + a : NULL);
          for (int i = 0; i < m; i++)
            masked_exp(p + i * TILE, s + i * TILE, lse[hi * t + a + r0 + i], nk);
          if (dv)  // dV += P^T dO
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, d, m, 1.0f, p, TILE, dout + qr,
                        q_stride, 1.0f, dv + kc, kv_stride);
          if (!dq && !dk) continue;
          // dP = dO V^T, then dS = scale * P * (dP - D) in place
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nk, d, 1.0f, dout + qr, q_stride,
                      v + kc, kv_stride, 0.0f, ds, TILE);
          for (int i = 0; i < m; i++) {
#pragma omp simd
            for (int j = 0; j < nk; j++)
              ds[i * TILE + j] = scale * (p[i * TILE + j] * (ds[i * TILE + j] - delta[i]));
          }
          if (dk)  // dK += dS^T Q
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, d, m, 1.0f, ds, TILE, q + qr,
                        q_stride, 1.0f, dk + kc, kv_stride);
          if (dq)  // dQ += dS K
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, d, nk, 1.0f, ds, TILE, k + kc,
                        kv_stride, 1.0f, dq + qr, q_stride);
        }
      }
    }
  }
}

void herd_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                 const float *k, const float *v, const float *out, const float *lse,
                                 const int32_t *segments, int b, int t, int h, int kvh, int d) {
  if (b <= 0 || t <= 0 || h <= 0 || kvh <= 0 || d <= 0) return;
  const int group = h / kvh;
  const int64_t q_stride = (int64_t)h * d, kv_stride = (int64_t)kvh * d;
  const float scale = 1.0f / sqrtf((float)d);
#pragma omp parallel for schedule(dynamic, 1) num_threads(herd_threads())
  for (int64_t bg = 0; bg < (int64_t)b * kvh; bg++) {  // (b, kv head): the unit one thread owns
    const int bi = (int)(bg / kvh), g = (int)(bg % kvh);
    const int64_t q0 = ((int64_t)bi * t * h + (int64_t)g * group) * d;  // query 0, first head
    const int64_t kv0 = ((int64_t)bi * t * kvh + g) * d;                // key 0 of kv head g
    backward_group(
        dq ? dq + q0 : NULL, dk ? dk + kv0 : NULL, dv ? dv + kv0 : NULL, dout + q0, q + q0, k + kv0,
        v + kv0, out + q0, lse + ((int64_t)bi * h + (int64_t)g * group) * t,
        segments ? segments + (int64_t)bi * t : NULL, t, d, group, q_stride, kv_stride, scale);
  }
}
