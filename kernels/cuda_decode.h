// defines: herd_cuda_kv_store, herd_cuda_cached_attention, herd_cuda_gather_rows,
//          HERD_CUDA_DECODE_MAX_HEAD_DIM
//
// The decoding kernels of generation (runtime/generate.c through the backend table), with the
// semantics of the CPU backend's kv_store, cached_attention and gather_rows
// (runtime/backend.h): a KV cache per layer of (n_seqs, max_len, KVH*D) values, f32 or bf16
// (raw uint16_t bits, rounded to nearest even as stored); every buffer in device memory; queued
// on herd's stream (cuda.h).
//
// cached_attention: one block per (row, query head); each warp walks a quarter of the cached
// keys with an online softmax (running max and sum, f32), and the warps' partial results are
// combined at the end. Agrees with the CPU's (sgemm, then softmax with the sum in double) to
// about 1e-6 relative. HERD_EINVAL for D above HERD_CUDA_DECODE_MAX_HEAD_DIM or H not a
// multiple of KVH.
#ifndef HERD_KERNELS_CUDA_DECODE_H
#define HERD_KERNELS_CUDA_DECODE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "tensor.h"  // C without extern "C" guards of its own

#define HERD_CUDA_DECODE_MAX_HEAD_DIM 256

int herd_cuda_kv_store(void *k_cache, void *v_cache, herd_dtype cache, const float *k,
                       const float *v, const int32_t *seqs, const int32_t *pos, int rows,
                       int max_len, int kv_dim);
int herd_cuda_cached_attention(float *att, const float *q, const void *k_cache, const void *v_cache,
                               herd_dtype cache, const int32_t *seqs, const int32_t *pos, int rows,
                               int max_len, int h, int kvh, int d);
int herd_cuda_gather_rows(float *dst, const float *src, const int32_t *index, int n, int c);

#ifdef __cplusplus
}
#endif
#endif
