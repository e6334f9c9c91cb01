// The decoding kernels of cuda_decode.h: the KV cache's stores, attention over it, row gathers.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "bf16.cuh"
#include "cuda.h"
#include "cuda_decode.h"
#include "cuda_internal.h"

namespace {

constexpr int THREADS = 256;     // kv_store and gather_rows: threads per row
constexpr int DECODE_WARPS = 4;  // cached_attention: warps per (row, head)
constexpr int PER_LANE = HERD_CUDA_DECODE_MAX_HEAD_DIM / 32;  // head values per lane

__device__ void store(float *cache, int64_t i, float value) {
  cache[i] = value;
}
__device__ void store(uint16_t *cache, int64_t i, float value) {
  cache[i] = herd_device_bf16_from_f32(value);
}
__device__ float load(const float *cache, int64_t i) {
  return cache[i];
}
__device__ float load(const uint16_t *cache, int64_t i) {
  return herd_device_f32_from_bf16(cache[i]);
}

// One block per row: k and v (rows, kv_dim) into the caches at (seqs[r], pos[r]).
template <typename T>
__global__ void kv_store_kernel(T *k_cache, T *v_cache, const float *k, const float *v,
                                const int32_t *seqs, const int32_t *pos, int max_len, int kv_dim) {
  const int64_t row = blockIdx.x;
  const int64_t at = ((int64_t)seqs[row] * max_len + pos[row]) * kv_dim;
  for (int j = threadIdx.x; j < kv_dim; j += blockDim.x) {
    store(k_cache, at + j, k[row * kv_dim + j]);
    store(v_cache, at + j, v[row * kv_dim + j]);
  }
}

__device__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset /= 2)
    value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// One block of DECODE_WARPS warps per (row, query head): warp w takes keys w, w + 4, ... with
// an online softmax (running max m, sum l, and the weighted values acc, a lane holding head
// values lane, lane + 32, ...); then the warps' (m, l, acc) are combined.
template <typename T>
__global__ void cached_attention_kernel(float *att, const float *q, const T *k_cache,
                                        const T *v_cache, const int32_t *seqs, const int32_t *pos,
                                        int max_len, int h, int kvh, int d, float scale) {
  __shared__ float warp_max[DECODE_WARPS], warp_sum_exp[DECODE_WARPS];
  __shared__ float warp_acc[DECODE_WARPS][HERD_CUDA_DECODE_MAX_HEAD_DIM];
  const int row = blockIdx.x / h, head = blockIdx.x % h, group = head / (h / kvh);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, kv_dim = kvh * d;
  const int n = pos[row] + 1;
  const int64_t base = (int64_t)seqs[row] * max_len * kv_dim + (int64_t)group * d;
  const float *qh = q + ((int64_t)row * h + head) * d;
  float qv[PER_LANE], acc[PER_LANE];
  for (int i = 0; i < PER_LANE; i++) {
    const int e = lane + 32 * i;
    qv[i] = e < d ? qh[e] : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int j = warp; j < n; j += DECODE_WARPS) {  // the same j for a whole warp
    const int64_t key = base + (int64_t)j * kv_dim;
    float s = 0.0f;
    for (int i = 0; i < PER_LANE; i++) {
      const int e = lane + 32 * i;
      if (e < d) s += qv[i] * load(k_cache, key + e);
    }
    s = warp_sum(s) * scale;
    const float m_new = fmaxf(m, s), correction = expf(m - m_new), p = expf(s - m_new);
    l = l * correction + p;
    for (int i = 0; i < PER_LANE; i++) {
      const int e = lane + 32 * i;
      if (e < d) acc[i] = acc[i] * correction + p * load(v_cache, key + e);
    }
    m = m_new;
  }
  if (lane == 0) warp_max[warp] = m, warp_sum_exp[warp] = l;
  for (int i = 0; i < PER_LANE; i++) {
    const int e = lane + 32 * i;
    if (e < d) warp_acc[warp][e] = acc[i];
  }
  __syncthreads();
  float top = -INFINITY;  // warp 0 always saw key 0, so this is finite
  for (int w = 0; w < DECODE_WARPS; w++) top = fmaxf(top, warp_max[w]);
  for (int e = threadIdx.x; e < d; e += blockDim.x) {
    float total = 0.0f, out = 0.0f;
    for (int w = 0; w < DECODE_WARPS; w++) {
      if (warp_sum_exp[w] == 0.0f) continue;  // a warp with no key (n < DECODE_WARPS)
      const float c = expf(warp_max[w] - top);
      total += warp_sum_exp[w] * c;
      out += warp_acc[w][e] * c;
    }
    att[((int64_t)row * h + head) * d + e] = out / total;
  }
}

__global__ void gather_rows_kernel(float *dst, const float *src, const int32_t *index, int c) {
  const int64_t row = blockIdx.x, from = index[row];
  for (int j = threadIdx.x; j < c; j += blockDim.x) dst[row * c + j] = src[from * c + j];
}

}  // namespace

extern "C" int herd_cuda_kv_store(void *k_cache, void *v_cache, herd_dtype cache, const float *k,
                                  const float *v, const int32_t *seqs, const int32_t *pos, int rows,
                                  int max_len, int kv_dim) {
  if (cache != HERD_F32 && cache != HERD_BF16)
    return herd_seterr(HERD_EINVAL, "kv_store: a %s cache (f32 or bf16)", herd_dtype_name(cache));
  if (rows <= 0 || kv_dim <= 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  if (cache == HERD_BF16)
    kv_store_kernel<<<rows, THREADS, 0, stream>>>(static_cast<uint16_t *>(k_cache),
                                                  static_cast<uint16_t *>(v_cache), k, v, seqs, pos,
                                                  max_len, kv_dim);
  else
    kv_store_kernel<<<rows, THREADS, 0, stream>>>(static_cast<float *>(k_cache),
                                                  static_cast<float *>(v_cache), k, v, seqs, pos,
                                                  max_len, kv_dim);
  return herd_cuda_launched("kv_store");
}

extern "C" int herd_cuda_cached_attention(float *att, const float *q, const void *k_cache,
                                          const void *v_cache, herd_dtype cache,
                                          const int32_t *seqs, const int32_t *pos, int rows,
                                          int max_len, int h, int kvh, int d) {
  if (cache != HERD_F32 && cache != HERD_BF16)
    return herd_seterr(HERD_EINVAL, "cached_attention: a %s cache (f32 or bf16)",
                       herd_dtype_name(cache));
  if (h <= 0 || kvh <= 0 || h % kvh)
    return herd_seterr(HERD_EINVAL, "cached_attention: %d heads, %d kv heads", h, kvh);
  if (d > HERD_CUDA_DECODE_MAX_HEAD_DIM)
    return herd_seterr(HERD_EINVAL, "cached_attention: head_dim %d is above %d", d,
                       HERD_CUDA_DECODE_MAX_HEAD_DIM);
  if (rows <= 0 || d <= 0) return HERD_OK;
  if ((int64_t)rows * h > INT32_MAX)
    return herd_seterr(HERD_EINVAL, "cached_attention: %d rows x %d heads", rows, h);
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  const float scale = 1.0f / sqrtf((float)d);
  const int blocks = rows * h;
  if (cache == HERD_BF16)
    cached_attention_kernel<<<blocks, 32 * DECODE_WARPS, 0, stream>>>(
        att, q, static_cast<const uint16_t *>(k_cache), static_cast<const uint16_t *>(v_cache),
        seqs, pos, max_len, h, kvh, d, scale);
  else
    cached_attention_kernel<<<blocks, 32 * DECODE_WARPS, 0, stream>>>(
        att, q, static_cast<const float *>(k_cache), static_cast<const float *>(v_cache), seqs, pos,
        max_len, h, kvh, d, scale);
  return herd_cuda_launched("cached_attention");
}

extern "C" int herd_cuda_gather_rows(float *dst, const float *src, const int32_t *index, int n,
                                     int c) {
  if (n <= 0 || c <= 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  gather_rows_kernel<<<n, THREADS, 0, stream>>>(dst, src, index, c);
  return herd_cuda_launched("gather_rows");
}
