// Causal grouped-query attention with segment ids on the device (cuda_attention.h): the
// arithmetic of runtime/attention.c in tiles staged in shared memory; no (T,T) matrix exists.
//
// Kernels (256 threads each, seen as a 16 x 16 square: tx = threadIdx.x % 16 picks columns,
// ty = threadIdx.x / 16 rows; a thread owns rows ty, ty+16, ... and columns tx, tx+16, ... of
// every tile, and columns tx, tx+16, ... of the head dimension):
//
//   forward       one block per (query tile, head, batch row). Q is loaded once; the key
//                 tiles the queries may see are walked twice: first for each query's maximum
//                 score m, then for p = exp(s - m), l = sum p and O = sum p V, each sum taken
//                 key by key in ascending order. out = O / l, lse = m + log l.
//   delta         D = rowsum(dout * out) per (batch row, token, head), one warp per row.
//   dkdv          one block per (key tile, kv head, batch row). K, V are loaded once; for each
//                 query head of the group in order, for each query tile that may see the keys,
//                 in order: P = exp(S - lse), dP = dO V^T, dS = scale P (dP - D), then
//                 dV += P^T dO and dK += dS^T Q, query by query in ascending order.
//   dq            one block per (query tile, head, batch row): the same P, dP and dS over the
//                 forward's key tiles, then dQ += dS K key by key in ascending order.
//
// Two passes instead of an online softmax: the forward computes Q K^T twice (about 1.5 times
// the forward's arithmetic, 10% of forward plus backward), and in exchange no running sum is
// ever rescaled, so every output is one chain of additions over the visible keys (or queries)
// in ascending order. Keys of other samples, beyond the causal edge or beyond T add exact
// zeros to those chains, which is why a packed sample gives the same bits as the sample alone.
//
// Determinism: every output element is written by one thread, whose additions happen in an
// order fixed by the shapes; the only cross-thread sums are shuffle trees over the 16 lanes of
// a row (the maximum, exact in any order) and over a warp (delta). No atomics on floats.
// The accumulation into dq, dk and dv happens once, at the end: grad += (chain from 0).
//
// Tiles are chosen by DMAX, the head dimension rounded up to a multiple of 16 (columns from D
// to DMAX are zeros in shared memory, which add exact zeros): queries x keys of 64 x 64 up to
// DMAX 64, smaller beyond (Tiles below), all below 99 KiB of shared memory per block (the
// opt-in limit of sm_86/sm_89; sm_80 allows 163 KiB, sm_90 227 KiB). Rows of Q, K, V and dO in
// shared memory are DMAX + 1 floats apart and probability tiles have an odd row stride, so the
// threads of a warp read distinct banks.
//
// Skipped work: a query tile walks the key tiles from the one holding its first query's segment
// start up to its diagonal; a key tile walks the query tiles from its diagonal up to the end of
// its last key's segment. With segments given, a small kernel first finds each token's run of
// equal ids [start, end); a row whose ids are not contiguous runs (an id comes back after
// another) gets [0, T) for every token instead, and the masks (which compare ids) do the rest.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <type_traits>

#include "cuda.h"
#include "cuda_attention.h"
#include "cuda_internal.h"

namespace {

constexpr int THREADS = 256;  // threads per block: a SIDE x SIDE square
constexpr int SIDE = 16;
constexpr int WARPS = THREADS / 32;
constexpr unsigned FULL_MASK = 0xffffffffu;

// The problem's shape and the floats between consecutive tokens of q (H*D) and of k, v (KVH*D).
struct Shape {
  int b, t, h, kvh, d, group;
  float scale;
  int64_t q_stride, kv_stride;
};

// Tile sizes (rows x columns of a score tile) by DMAX. 64 x 64 up to DMAX 64; above, tiles of
// 32 keys (and 32 queries in the backward) keep shared memory below 99 KiB per block.
template <int DMAX>
struct Tiles {
  static constexpr bool WIDE = DMAX > 64;
  static constexpr int FWD_Q = 64, FWD_K = WIDE ? 32 : 64;            // forward: queries x keys
  static constexpr int DQ_Q = WIDE ? 32 : 64, DQ_K = WIDE ? 32 : 64;  // dq: queries x keys
  static constexpr int KV_K = WIDE ? 32 : 64, KV_Q = 32;              // dkdv: keys x queries
};

// Shared memory of each kernel, in bytes (the carving in the kernels follows the same order).
template <int DMAX, int BQ, int BK>
constexpr size_t forward_smem() {  // Q [BQ][DP], K and V [BK][DP], P [BQ][BK+1], key ids [BK]
  return sizeof(float) *
             ((size_t)BQ * (DMAX + 1) + 2 * (size_t)BK * (DMAX + 1) + (size_t)BQ * (BK + 1)) +
         sizeof(int32_t) * BK;
}
template <int DMAX, int BQ, int BK>
constexpr size_t dq_smem() {  // Q, dO [BQ][DP], K, V [BK][DP], dS [BQ][BK+1], key ids [BK]
  return sizeof(float) *
             (2 * (size_t)BQ * (DMAX + 1) + 2 * (size_t)BK * (DMAX + 1) + (size_t)BQ * (BK + 1)) +
         sizeof(int32_t) * BK;
}
template <int DMAX, int BK, int BQ>
constexpr size_t dkdv_smem() {  // K, V [BK][DP], Q, dO [BQ][DP], P^T, dS^T [BK][BQ+1],
                                // lse, D [BQ], query ids [BQ]
  return sizeof(float) * (2 * (size_t)BK * (DMAX + 1) + 2 * (size_t)BQ * (DMAX + 1) +
                          2 * (size_t)BK * (BQ + 1) + 2 * (size_t)BQ) +
         sizeof(int32_t) * BQ;
}

// exp(x - shift) with x - shift clamped to [-87.3, 0], as herd_exp_shifted (vexp.h) and
// ops.cu; a NaN stays NaN.
__device__ __forceinline__ float exp_shifted(float x, float shift) {
  float z = x - shift;
  z = z < -87.3f ? -87.3f : z;
  z = z > 0 ? 0.0f : z;
  return expf(z);
}

// Whether query qi sees key kj: a real token (qi < t), causal, same segment id (ids are 0
// when there are no segments).
__device__ __forceinline__ bool visible(int qi, int kj, int t, int32_t id_q, int32_t id_k) {
  return qi < t && kj <= qi && id_q == id_k;
}

// dst[r][c] (rows DMAX + 1 floats apart) = token t0 + r, column c of src (token 0 of one head,
// tokens `stride` floats apart); 0 for tokens at or beyond t and for columns at or beyond d.
template <int DMAX, int ROWS>
__device__ void load_rows(float *dst, const float *__restrict__ src, int64_t stride, int t0, int t,
                          int d) {
  for (int e = threadIdx.x; e < ROWS * DMAX; e += THREADS) {
    const int r = e / DMAX, c = e % DMAX, token = t0 + r;
    dst[r * (DMAX + 1) + c] = token < t && c < d ? src[token * stride + c] : 0.0f;
  }
}

// dst[r] = the segment id of token t0 + r (0 without segments or beyond t).
template <int ROWS>
__device__ void load_ids(int32_t *dst, const int32_t *__restrict__ seg, int t0, int t) {
  for (int r = threadIdx.x; r < ROWS; r += THREADS) dst[r] = seg && t0 + r < t ? seg[t0 + r] : 0;
}

// acc[i][j] = rows[ty + 16 i] . cols[tx + 16 j] over DMAX columns (rows DMAX + 1 floats apart),
// summed in column order.
template <int DMAX, int RR, int RC>
__device__ __forceinline__ void tile_dots(float (&acc)[RR][RC], const float *rows,
                                          const float *cols) {
  const int tx = threadIdx.x % SIDE, ty = threadIdx.x / SIDE;
#pragma unroll
  for (int i = 0; i < RR; i++)
#pragma unroll
    for (int j = 0; j < RC; j++) acc[i][j] = 0.0f;
#pragma unroll 4
  for (int c = 0; c < DMAX; c++) {
    float a[RR], b[RC];
#pragma unroll
    for (int i = 0; i < RR; i++) a[i] = rows[(ty + SIDE * i) * (DMAX + 1) + c];
#pragma unroll
    for (int j = 0; j < RC; j++) b[j] = cols[(tx + SIDE * j) * (DMAX + 1) + c];
#pragma unroll
    for (int i = 0; i < RR; i++)
#pragma unroll
      for (int j = 0; j < RC; j++) acc[i][j] += a[i] * b[j];
  }
}

// ---------------------------------------------------------------- segment runs

// Per batch row (one block each): start[i], end[i] = the run of equal ids holding token i, or
// 0 and t for every token of a row whose ids are not contiguous runs. Each thread scans a chunk
// of the row; the runs crossing chunk borders are joined through shared memory.
__global__ void __launch_bounds__(THREADS, 2)
    segment_runs_kernel(int32_t *start, int32_t *end, const int32_t *segments, int t) {
  __shared__ int carry[THREADS];
  __shared__ int scattered;
  const int64_t row = blockIdx.x;
  const int32_t *seg = segments + row * t;
  int32_t *st = start + row * t, *en = end + row * t;
  const int chunk = (t + THREADS - 1) / THREADS;
  const int64_t first = (int64_t)threadIdx.x * chunk;
  const int lo = first < t ? (int)first : t, hi = lo + chunk < t ? lo + chunk : t;
  if (threadIdx.x == 0) scattered = 0;

  // starts: the last run start at or before i
  int found = -1;
  for (int i = lo; i < hi; i++)
    if (i == 0 || seg[i] != seg[i - 1]) found = i;
  carry[threadIdx.x] = found;
  __syncthreads();
  int current = -1;  // the last run start in an earlier chunk (token 0 starts one)
  for (int u = (int)threadIdx.x - 1; u >= 0 && current < 0; u--) current = carry[u];
  for (int i = lo; i < hi; i++) {
    if (i == 0 || seg[i] != seg[i - 1]) current = i;
    st[i] = current;
  }
  __syncthreads();  // carry is reused; st is complete (global writes are visible in the block)

  // ends: one past the first run end at or after i
  found = -1;
  for (int i = hi - 1; i >= lo; i--)
    if (i == t - 1 || seg[i + 1] != seg[i]) found = i + 1;
  carry[threadIdx.x] = found;
  __syncthreads();
  current = -1;  // the first run end in a later chunk (token t-1 ends one)
  for (int u = (int)threadIdx.x + 1; u < THREADS && current < 0; u++) current = carry[u];
  for (int i = hi - 1; i >= lo; i--) {
    if (i == t - 1 || seg[i + 1] != seg[i]) current = i + 1;
    en[i] = current;
  }

  // contiguous: no run has the id of an earlier run (walks back run by run: O(runs^2) in all)
  for (int i = lo; i < hi && !scattered; i++) {
    if (i == 0 || seg[i] == seg[i - 1]) continue;
    for (int r = st[i - 1];; r = st[r - 1]) {
      if (seg[r] == seg[i]) {
        atomicOr(&scattered, 1);  // an int flag: any order gives the same result
        break;
      }
      if (r == 0) break;
    }
  }
  __syncthreads();
  if (scattered)
    for (int i = lo; i < hi; i++) st[i] = 0, en[i] = t;
}

// ---------------------------------------------------------------- forward

template <int DMAX, int BQ, int BK>
__global__ void __launch_bounds__(THREADS, 2)
    forward_kernel(float *__restrict__ out, float *__restrict__ lse, const float *__restrict__ q,
                   const float *__restrict__ k, const float *__restrict__ v,
                   const int32_t *__restrict__ segments, const int32_t *__restrict__ run_start,
                   Shape s) {
  constexpr int DP = DMAX + 1, RQ = BQ / SIDE, RK = BK / SIDE, DC = DMAX / SIDE, PS = BK + 1;
  extern __shared__ float smem[];
  float *qs = smem;                                            // [BQ][DP]
  float *ks = qs + BQ * DP;                                    // [BK][DP]
  float *vs = ks + BK * DP;                                    // [BK][DP]
  float *ps = vs + BK * DP;                                    // [BQ][PS]
  int32_t *ids_k = reinterpret_cast<int32_t *>(ps + BQ * PS);  // [BK]
  const int tx = threadIdx.x % SIDE, ty = threadIdx.x / SIDE;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;  // the longest query tiles start first
  const int head = blockIdx.y, bi = blockIdx.z, t = s.t;
  const float *qb = q + (int64_t)bi * t * s.q_stride + (int64_t)head * s.d;
  const int64_t kv0 = (int64_t)bi * t * s.kv_stride + (int64_t)(head / s.group) * s.d;
  const float *kb = k + kv0, *vb = v + kv0;
  const int32_t *seg = segments ? segments + (int64_t)bi * t : nullptr;

  // key tiles [kt_lo, kt_hi): from the first query's segment start to the last query
  const int q_end = min(q0 + BQ, t);
  const int kt_lo = (seg ? run_start[(int64_t)bi * t + q0] : 0) / BK;
  const int kt_hi = (q_end + BK - 1) / BK;

  load_rows<DMAX, BQ>(qs, qb, s.q_stride, q0, t, s.d);
  int qi[RQ];
  int32_t id_q[RQ];
#pragma unroll
  for (int i = 0; i < RQ; i++) {
    qi[i] = q0 + ty + SIDE * i;
    id_q[i] = seg && qi[i] < t ? seg[qi[i]] : 0;
  }

  // pass 1: each query's largest visible score
  float m[RQ];
#pragma unroll
  for (int i = 0; i < RQ; i++) m[i] = -INFINITY;
  for (int kt = kt_lo; kt < kt_hi; kt++) {
    const int k0 = kt * BK;
    __syncthreads();  // the previous tile has been read
    load_rows<DMAX, BK>(ks, kb, s.kv_stride, k0, t, s.d);
    load_ids<BK>(ids_k, seg, k0, t);
    __syncthreads();
    float sc[RQ][RK];
    tile_dots<DMAX>(sc, qs, ks);
#pragma unroll
    for (int i = 0; i < RQ; i++)
#pragma unroll
      for (int j = 0; j < RK; j++) {
        const int c = tx + SIDE * j;
        const float score = sc[i][j] * s.scale;
        if (visible(qi[i], k0 + c, t, id_q[i], ids_k[c]) && score > m[i]) m[i] = score;
      }
  }
#pragma unroll
  for (int i = 0; i < RQ; i++)  // over the 16 lanes of the row (the maximum: any order)
    for (int offset = SIDE / 2; offset > 0; offset >>= 1) {
      const float other = __shfl_xor_sync(FULL_MASK, m[i], offset, SIDE);
      m[i] = other > m[i] ? other : m[i];
    }

  // pass 2: l = sum p and O = sum p V with p = exp(s - m), keys in ascending order
  float o[RQ][DC], l[RQ];
#pragma unroll
  for (int i = 0; i < RQ; i++) {
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < DC; c++) o[i][c] = 0.0f;
  }
  for (int kt = kt_lo; kt < kt_hi; kt++) {
    const int k0 = kt * BK;
    __syncthreads();  // the previous tile's K, V and P have been read
    load_rows<DMAX, BK>(ks, kb, s.kv_stride, k0, t, s.d);
    load_rows<DMAX, BK>(vs, vb, s.kv_stride, k0, t, s.d);
    load_ids<BK>(ids_k, seg, k0, t);
    __syncthreads();
    float sc[RQ][RK];
    tile_dots<DMAX>(sc, qs, ks);
#pragma unroll
    for (int i = 0; i < RQ; i++)
#pragma unroll
      for (int j = 0; j < RK; j++) {
        const int c = tx + SIDE * j;
        const bool seen = visible(qi[i], k0 + c, t, id_q[i], ids_k[c]);
        ps[(ty + SIDE * i) * PS + c] = seen ? exp_shifted(sc[i][j] * s.scale, m[i]) : 0.0f;
      }
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < BK; j++) {
      float vv[DC];
#pragma unroll
      for (int c = 0; c < DC; c++) vv[c] = vs[j * DP + tx + SIDE * c];
#pragma unroll
      for (int i = 0; i < RQ; i++) {
        const float p = ps[(ty + SIDE * i) * PS + j];
        l[i] += p;
#pragma unroll
        for (int c = 0; c < DC; c++) o[i][c] += p * vv[c];
      }
    }
  }

#pragma unroll
  for (int i = 0; i < RQ; i++) {
    if (qi[i] >= t) continue;  // every real query sees itself: l >= 1
    const float inv_sum = 1.0f / l[i];
    float *orow = out + ((int64_t)bi * t + qi[i]) * s.q_stride + (int64_t)head * s.d;
#pragma unroll
    for (int c = 0; c < DC; c++) {
      const int col = tx + SIDE * c;
      if (col < s.d) orow[col] = o[i][c] * inv_sum;
    }
    if (tx == 0) lse[((int64_t)bi * s.h + head) * t + qi[i]] = m[i] + logf(l[i]);
  }
}

// ---------------------------------------------------------------- backward

// delta(B,H,T) = sum_c dout * out over each (b, t, h) row of D floats: one warp per row, lanes
// over strided columns, then a shuffle tree.
__global__ void __launch_bounds__(THREADS, 2)
    delta_kernel(float *__restrict__ delta, const float *__restrict__ dout,
                 const float *__restrict__ out, int64_t rows, int t, int h, int d) {
  const int lane = threadIdx.x % 32;
  for (int64_t row = (int64_t)blockIdx.x * WARPS + threadIdx.x / 32; row < rows;
       row += (int64_t)gridDim.x * WARPS) {  // row = (b * T + token) * H + head
    const float *g = dout + row * d, *o = out + row * d;
    float acc = 0.0f;
    for (int c = lane; c < d; c += 32) acc += g[c] * o[c];
    for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, offset);
    if (lane == 0) {
      const int64_t bt = row / h;
      const int head = (int)(row % h), token = (int)(bt % t);
      delta[((bt / t) * h + head) * t + token] = acc;
    }
  }
}

template <int DMAX, int BK, int BQ>
__global__ void __launch_bounds__(THREADS, 2)
    dkdv_kernel(float *__restrict__ dk, float *__restrict__ dv, const float *__restrict__ dout,
                const float *__restrict__ q, const float *__restrict__ k,
                const float *__restrict__ v, const float *__restrict__ lse,
                const float *__restrict__ delta, const int32_t *__restrict__ segments,
                const int32_t *__restrict__ run_end, Shape s) {
  constexpr int DP = DMAX + 1, RK = BK / SIDE, RQ = BQ / SIDE, DC = DMAX / SIDE, PS = BQ + 1;
  extern __shared__ float smem[];
  float *ks = smem;                                            // [BK][DP]
  float *vs = ks + BK * DP;                                    // [BK][DP]
  float *qs = vs + BK * DP;                                    // [BQ][DP]
  float *dos = qs + BQ * DP;                                   // [BQ][DP]
  float *pt = dos + BQ * DP;                                   // P^T [BK][PS]
  float *dst = pt + BK * PS;                                   // dS^T [BK][PS]
  float *lse_q = dst + BK * PS;                                // [BQ]
  float *delta_q = lse_q + BQ;                                 // [BQ]
  int32_t *ids_q = reinterpret_cast<int32_t *>(delta_q + BQ);  // [BQ]
  const int tx = threadIdx.x % SIDE, ty = threadIdx.x / SIDE;
  const int k0 = blockIdx.x * BK;  // the first key tiles (the most queries) start first
  const int g = blockIdx.y, bi = blockIdx.z, t = s.t;
  const int64_t kv0 = (int64_t)bi * t * s.kv_stride + (int64_t)g * s.d;
  const int32_t *seg = segments ? segments + (int64_t)bi * t : nullptr;

  // query tiles [qt_lo, qt_hi): from the first key to the end of the last key's segment
  const int k_end = min(k0 + BK, t);
  const int q_hi = seg ? run_end[(int64_t)bi * t + k_end - 1] : t;
  const int qt_lo = k0 / BQ, qt_hi = (q_hi + BQ - 1) / BQ;

  load_rows<DMAX, BK>(ks, k + kv0, s.kv_stride, k0, t, s.d);
  load_rows<DMAX, BK>(vs, v + kv0, s.kv_stride, k0, t, s.d);
  int kj[RK];
  int32_t id_k[RK];
#pragma unroll
  for (int i = 0; i < RK; i++) {
    kj[i] = k0 + ty + SIDE * i;
    id_k[i] = seg && kj[i] < t ? seg[kj[i]] : 0;
  }

  float acc_dk[RK][DC], acc_dv[RK][DC];
#pragma unroll
  for (int i = 0; i < RK; i++)
#pragma unroll
    for (int c = 0; c < DC; c++) acc_dk[i][c] = acc_dv[i][c] = 0.0f;

  for (int hh = 0; hh < s.group; hh++) {
    const int head = g * s.group + hh;
    const int64_t q0_head = (int64_t)bi * t * s.q_stride + (int64_t)head * s.d;
    const float *lse_row = lse + ((int64_t)bi * s.h + head) * t;
    const float *delta_row = delta + ((int64_t)bi * s.h + head) * t;
    for (int qt = qt_lo; qt < qt_hi; qt++) {
      const int q0 = qt * BQ;
      __syncthreads();  // the previous tile's Q, dO, P^T, dS^T have been read
      load_rows<DMAX, BQ>(qs, q + q0_head, s.q_stride, q0, t, s.d);
      load_rows<DMAX, BQ>(dos, dout + q0_head, s.q_stride, q0, t, s.d);
      for (int r = threadIdx.x; r < BQ; r += THREADS) {
        const bool real = q0 + r < t;
        lse_q[r] = real ? lse_row[q0 + r] : 0.0f;
        delta_q[r] = real ? delta_row[q0 + r] : 0.0f;
      }
      load_ids<BQ>(ids_q, seg, q0, t);
      __syncthreads();
      float sc[RK][RQ], dp[RK][RQ];
      tile_dots<DMAX>(sc, ks, qs);   // S^T: keys x queries
      tile_dots<DMAX>(dp, vs, dos);  // dP^T = V dO^T
#pragma unroll
      for (int i = 0; i < RK; i++)
#pragma unroll
        for (int j = 0; j < RQ; j++) {
          const int r = tx + SIDE * j;
          float p = 0.0f, ds = 0.0f;
          if (visible(q0 + r, kj[i], t, ids_q[r], id_k[i])) {
            p = exp_shifted(sc[i][j] * s.scale, lse_q[r]);
            ds = s.scale * (p * (dp[i][j] - delta_q[r]));
          }
          pt[(ty + SIDE * i) * PS + r] = p;
          dst[(ty + SIDE * i) * PS + r] = ds;
        }
      __syncthreads();
#pragma unroll 4
      for (int r = 0; r < BQ; r++) {  // queries in ascending order
        float qv[DC], gv[DC];
#pragma unroll
        for (int c = 0; c < DC; c++) {
          qv[c] = qs[r * DP + tx + SIDE * c];
          gv[c] = dos[r * DP + tx + SIDE * c];
        }
#pragma unroll
        for (int i = 0; i < RK; i++) {
          const float p = pt[(ty + SIDE * i) * PS + r], ds = dst[(ty + SIDE * i) * PS + r];
#pragma unroll
          for (int c = 0; c < DC; c++) {
            acc_dv[i][c] += p * gv[c];
            acc_dk[i][c] += ds * qv[c];
          }
        }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < RK; i++) {
    if (kj[i] >= t) continue;
    const int64_t at = kv0 + (int64_t)kj[i] * s.kv_stride;
#pragma unroll
    for (int c = 0; c < DC; c++) {
      const int col = tx + SIDE * c;
      if (col >= s.d) continue;
      if (dk) dk[at + col] += acc_dk[i][c];
      if (dv) dv[at + col] += acc_dv[i][c];
    }
  }
}

template <int DMAX, int BQ, int BK>
__global__ void __launch_bounds__(THREADS, 2)
    dq_kernel(float *__restrict__ dq, const float *__restrict__ dout, const float *__restrict__ q,
              const float *__restrict__ k, const float *__restrict__ v,
              const float *__restrict__ lse, const float *__restrict__ delta,
              const int32_t *__restrict__ segments, const int32_t *__restrict__ run_start,
              Shape s) {
  constexpr int DP = DMAX + 1, RQ = BQ / SIDE, RK = BK / SIDE, DC = DMAX / SIDE, PS = BK + 1;
  extern __shared__ float smem[];
  float *qs = smem;                                             // [BQ][DP]
  float *dos = qs + BQ * DP;                                    // [BQ][DP]
  float *ks = dos + BQ * DP;                                    // [BK][DP]
  float *vs = ks + BK * DP;                                     // [BK][DP]
  float *dss = vs + BK * DP;                                    // dS [BQ][PS]
  int32_t *ids_k = reinterpret_cast<int32_t *>(dss + BQ * PS);  // [BK]
  const int tx = threadIdx.x % SIDE, ty = threadIdx.x / SIDE;
  const int q0 = (gridDim.x - 1 - blockIdx.x) * BQ;  // the longest query tiles start first
  const int head = blockIdx.y, bi = blockIdx.z, t = s.t;
  const int64_t q0_head = (int64_t)bi * t * s.q_stride + (int64_t)head * s.d;
  const int64_t kv0 = (int64_t)bi * t * s.kv_stride + (int64_t)(head / s.group) * s.d;
  const int32_t *seg = segments ? segments + (int64_t)bi * t : nullptr;

  const int q_end = min(q0 + BQ, t);
  const int kt_lo = (seg ? run_start[(int64_t)bi * t + q0] : 0) / BK;
  const int kt_hi = (q_end + BK - 1) / BK;

  load_rows<DMAX, BQ>(qs, q + q0_head, s.q_stride, q0, t, s.d);
  load_rows<DMAX, BQ>(dos, dout + q0_head, s.q_stride, q0, t, s.d);
  int qi[RQ];
  int32_t id_q[RQ];
  float lse_i[RQ], delta_i[RQ];
#pragma unroll
  for (int i = 0; i < RQ; i++) {
    qi[i] = q0 + ty + SIDE * i;
    const bool real = qi[i] < t;
    id_q[i] = seg && real ? seg[qi[i]] : 0;
    lse_i[i] = real ? lse[((int64_t)bi * s.h + head) * t + qi[i]] : 0.0f;
    delta_i[i] = real ? delta[((int64_t)bi * s.h + head) * t + qi[i]] : 0.0f;
  }

  float acc[RQ][DC];
#pragma unroll
  for (int i = 0; i < RQ; i++)
#pragma unroll
    for (int c = 0; c < DC; c++) acc[i][c] = 0.0f;

  for (int kt = kt_lo; kt < kt_hi; kt++) {
    const int k0 = kt * BK;
    __syncthreads();  // the previous tile's K, V and dS have been read
    load_rows<DMAX, BK>(ks, k + kv0, s.kv_stride, k0, t, s.d);
    load_rows<DMAX, BK>(vs, v + kv0, s.kv_stride, k0, t, s.d);
    load_ids<BK>(ids_k, seg, k0, t);
    __syncthreads();
    float sc[RQ][RK], dp[RQ][RK];
    tile_dots<DMAX>(sc, qs, ks);   // S: queries x keys
    tile_dots<DMAX>(dp, dos, vs);  // dP = dO V^T
#pragma unroll
    for (int i = 0; i < RQ; i++)
#pragma unroll
      for (int j = 0; j < RK; j++) {
        const int c = tx + SIDE * j;
        float ds = 0.0f;
        if (visible(qi[i], k0 + c, t, id_q[i], ids_k[c])) {
          const float p = exp_shifted(sc[i][j] * s.scale, lse_i[i]);
          ds = s.scale * (p * (dp[i][j] - delta_i[i]));
        }
        dss[(ty + SIDE * i) * PS + c] = ds;
      }
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < BK; j++) {  // keys in ascending order
      float kv[DC];
#pragma unroll
      for (int c = 0; c < DC; c++) kv[c] = ks[j * DP + tx + SIDE * c];
#pragma unroll
      for (int i = 0; i < RQ; i++) {
        const float ds = dss[(ty + SIDE * i) * PS + j];
#pragma unroll
        for (int c = 0; c < DC; c++) acc[i][c] += ds * kv[c];
      }
    }
  }

#pragma unroll
  for (int i = 0; i < RQ; i++) {
    if (qi[i] >= t) continue;
    float *grow = dq + q0_head + (int64_t)qi[i] * s.q_stride;
#pragma unroll
    for (int c = 0; c < DC; c++) {
      const int col = tx + SIDE * c;
      if (col < s.d) grow[col] += acc[i][c];
    }
  }
}

// ---------------------------------------------------------------- host side

// Kernels whose blocks take more than 48 KiB of shared memory must say so first.
template <typename Kernel>
int allow_shared(Kernel *kernel, size_t bytes, const char *name, int dmax) {
  HERD_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes),
      "cudaFuncSetAttribute(%s<head_dim %d>, %zu bytes of shared memory)", name, dmax, bytes);
  return HERD_OK;
}

int launched(const char *name, int dmax) {
  char what[96];
  snprintf(what, sizeof what, "%s<head_dim %d>", name, dmax);
  return herd_cuda_launched(what);
}

// Calls f(std::integral_constant<int, DMAX>) for d's DMAX (d rounded up to a multiple of 16;
// 1 <= d <= 128 checked by the caller).
template <typename F>
int with_head_dim(int d, F &&f) {
  switch ((d + SIDE - 1) / SIDE) {
    case 1:
      return f(std::integral_constant<int, 16>{});
    case 2:
      return f(std::integral_constant<int, 32>{});
    case 3:
      return f(std::integral_constant<int, 48>{});
    case 4:
      return f(std::integral_constant<int, 64>{});
    case 5:
      return f(std::integral_constant<int, 80>{});
    case 6:
      return f(std::integral_constant<int, 96>{});
    case 7:
      return f(std::integral_constant<int, 112>{});
    default:
      return f(std::integral_constant<int, 128>{});
  }
}

// HERD_EINVAL for shapes the kernels do not take; *empty when there is nothing to do.
int check_shape(const char *op, int b, int t, int h, int kvh, int d, bool *empty) {
  *empty = false;
  if (b < 0 || t < 0 || h < 0 || kvh < 0 || d < 0)
    return herd_seterr(HERD_EINVAL, "%s: bad shape b=%d t=%d h=%d kvh=%d d=%d", op, b, t, h, kvh,
                       d);
  if (b == 0 || t == 0 || h == 0 || kvh == 0 || d == 0) {
    *empty = true;
    return HERD_OK;
  }
  if (d > HERD_CUDA_ATTENTION_MAX_HEAD_DIM)
    return herd_seterr(HERD_EINVAL, "%s: head_dim %d is not supported (1 to %d)", op, d,
                       HERD_CUDA_ATTENTION_MAX_HEAD_DIM);
  if (h % kvh != 0)
    return herd_seterr(HERD_EINVAL, "%s: %d query heads are not a multiple of %d kv heads", op, h,
                       kvh);
  if (b > 65535 || h > 65535)
    return herd_seterr(HERD_EINVAL, "%s: b=%d or h=%d is above 65535", op, b, h);
  return HERD_OK;
}

Shape shape_of(int b, int t, int h, int kvh, int d) {
  return Shape{b, t, h, kvh, d, h / kvh, 1.0f / sqrtf((float)d), (int64_t)h * d, (int64_t)kvh * d};
}

// With segments: runs(2, B, T) = each token's run start, then run end (segment_runs_kernel).
int segment_runs(DeviceBuffer<int32_t> &runs, const int32_t *segments, int b, int t,
                 cudaStream_t stream) {
  if (!segments) return HERD_OK;
  HERD_TRY(runs.allocate((size_t)2 * b * t));
  segment_runs_kernel<<<b, THREADS, 0, stream>>>(runs.ptr, runs.ptr + (int64_t)b * t, segments, t);
  return herd_cuda_launched("attention_segment_runs");
}

}  // namespace

extern "C" int herd_cuda_attention_forward(float *out, float *lse, const float *q, const float *k,
                                           const float *v, const int32_t *segments, int b, int t,
                                           int h, int kvh, int d) {
  bool empty;
  HERD_TRY(check_shape("attention_forward", b, t, h, kvh, d, &empty));
  if (empty) return HERD_OK;
  const Shape s = shape_of(b, t, h, kvh, d);
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  DeviceBuffer<int32_t> runs;
  HERD_TRY(segment_runs(runs, segments, b, t, stream));
  return with_head_dim(d, [&](auto dmax) -> int {
    constexpr int DMAX = decltype(dmax)::value, BQ = Tiles<DMAX>::FWD_Q, BK = Tiles<DMAX>::FWD_K;
    constexpr size_t smem = forward_smem<DMAX, BQ, BK>();
    auto kernel = forward_kernel<DMAX, BQ, BK>;
    HERD_TRY(allow_shared(kernel, smem, "attention_forward", DMAX));
    dim3 grid((t + BQ - 1) / BQ, h, b);
    kernel<<<grid, THREADS, smem, stream>>>(out, lse, q, k, v, segments, runs.ptr, s);
    return launched("attention_forward", DMAX);
  });
}

extern "C" int herd_cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                            const float *q, const float *k, const float *v,
                                            const float *out, const float *lse,
                                            const int32_t *segments, int b, int t, int h, int kvh,
                                            int d) {
  bool empty;
  HERD_TRY(check_shape("attention_backward", b, t, h, kvh, d, &empty));
  if (empty || (!dq && !dk && !dv)) return HERD_OK;
  const Shape s = shape_of(b, t, h, kvh, d);
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  DeviceBuffer<int32_t> runs;
  HERD_TRY(segment_runs(runs, segments, b, t, stream));
  const int32_t *run_start = runs.ptr, *run_end = runs.ptr ? runs.ptr + (int64_t)b * t : nullptr;

  DeviceBuffer<float> delta;  // (B,H,T)
  const int64_t rows = (int64_t)b * t * h;
  HERD_TRY(delta.allocate((size_t)rows));
  const int64_t delta_blocks = (rows + WARPS - 1) / WARPS;
  delta_kernel<<<(int)(delta_blocks < (1 << 20) ? delta_blocks : (1 << 20)), THREADS, 0, stream>>>(
      delta.ptr, dout, out, rows, t, h, d);
  HERD_TRY(herd_cuda_launched("attention_delta"));

  return with_head_dim(d, [&](auto dmax) -> int {
    constexpr int DMAX = decltype(dmax)::value;
    if (dk || dv) {
      constexpr int BK = Tiles<DMAX>::KV_K, BQ = Tiles<DMAX>::KV_Q;
      constexpr size_t smem = dkdv_smem<DMAX, BK, BQ>();
      auto kernel = dkdv_kernel<DMAX, BK, BQ>;
      HERD_TRY(allow_shared(kernel, smem, "attention_dkdv", DMAX));
      dim3 grid((t + BK - 1) / BK, kvh, b);
      kernel<<<grid, THREADS, smem, stream>>>(dk, dv, dout, q, k, v, lse, delta.ptr, segments,
                                              run_end, s);
      HERD_TRY(launched("attention_dkdv", DMAX));
    }
    if (dq) {
      constexpr int BQ = Tiles<DMAX>::DQ_Q, BK = Tiles<DMAX>::DQ_K;
      constexpr size_t smem = dq_smem<DMAX, BQ, BK>();
      auto kernel = dq_kernel<DMAX, BQ, BK>;
      HERD_TRY(allow_shared(kernel, smem, "attention_dq", DMAX));
      dim3 grid((t + BQ - 1) / BQ, h, b);
      kernel<<<grid, THREADS, smem, stream>>>(dq, dout, q, k, v, lse, delta.ptr, segments,
                                              run_start, s);
      HERD_TRY(launched("attention_dq", DMAX));
    }
    return HERD_OK;
  });
}
