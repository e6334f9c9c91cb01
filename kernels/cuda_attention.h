// defines: herd_cuda_attention_forward, herd_cuda_attention_backward,
//          HERD_CUDA_ATTENTION_MAX_HEAD_DIM
//
// Causal grouped-query attention with segment ids on the device, usable from C: exactly the
// arguments, shapes and semantics of herd_cpu_attention_forward/backward (runtime/attention.h),
// with every buffer in device memory (herd_cuda_malloc) and an int status returned:
//   q(B,T,H,D), k(B,T,KVH,D), v(B,T,KVH,D) -> out(B,T,H,D), lse(B,H,T); scores scaled by
//   1/sqrt(D); query head h reads kv head h / (H/KVH); token t attends to the tokens s <= t of
//   its own segment (segments(B,T) equal), segments NULL meaning one segment per batch row.
// The backward pass ACCUMULATES (+=) into dq, dk and dv and skips the NULL ones; it recomputes
// the probabilities from q, k and lse. Both are queued on herd's stream (cuda.h) and return
// before the GPU is done. Shapes with a zero dimension do nothing.
//
// HERD_EINVAL (nothing queued) for a negative dimension, H not a multiple of KVH, more than
// 65535 batch rows or heads, or a head_dim D above HERD_CUDA_ATTENTION_MAX_HEAD_DIM (the
// message names D).
//
// Segments: the kernels skip key tiles that no query of a tile can see. For that they take
// each batch row's segment ids to be contiguous runs (how packing lays samples out), which they
// check on the device: a row where an id comes back after another id is handled, as on the CPU,
// by comparing ids over the whole row (correct, only slower).
//
// Numerics: f32 throughout (scores, exp, sums). Results agree with the CPU kernels to about
// 1e-6 relative (summation order, expf/logf ulps) and are bit-identical from run to run (no
// floating-point atomics). A sample packed with others gives bit-for-bit the out, lse, dq, dk
// and dv it gives alone, as on the CPU: every sum runs over the keys (or queries) in ascending
// order, and tokens of other samples only add exact zeros to it.
#ifndef HERD_KERNELS_CUDA_ATTENTION_H
#define HERD_KERNELS_CUDA_ATTENTION_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HERD_CUDA_ATTENTION_MAX_HEAD_DIM 128

int herd_cuda_attention_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int32_t *segments, int b, int t, int h,
                                int kvh, int d);

int herd_cuda_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                 const float *k, const float *v, const float *out, const float *lse,
                                 const int32_t *segments, int b, int t, int h, int kvh, int d);

#ifdef __cplusplus
}
#endif
#endif
