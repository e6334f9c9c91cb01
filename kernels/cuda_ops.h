// defines: herd_cuda_matmul, herd_cuda_linear_forward, herd_cuda_linear_backward,
//          herd_cuda_embedding_forward, herd_cuda_embedding_backward,
//          herd_cuda_rmsnorm_forward, herd_cuda_rmsnorm_backward,
//          herd_cuda_swiglu_forward, herd_cuda_swiglu_backward,
//          herd_cuda_softmax_forward, herd_cuda_softmax_backward, herd_cuda_weighted_nll,
//          herd_cuda_scalar_head_forward, herd_cuda_scalar_head_backward,
//          herd_cuda_add, herd_cuda_add_backward, herd_cuda_mul, herd_cuda_mul_backward,
//          herd_cuda_scale, herd_cuda_scale_backward, herd_cuda_global_norm, herd_cuda_sum,
//          herd_cuda_rope_forward, herd_cuda_rope_backward, HERD_CUDA_ROPE_MAX_HEAD_DIM,
//          herd_cuda_param_range, HERD_CUDA_ADAMW_MAX_RANGES, herd_cuda_adamw,
//          herd_cuda_f32_to_bf16, herd_cuda_bf16_to_f32, herd_cuda_matmul_bf16
//
// The CUDA kernels of the Llama transformer, usable from C. Each herd_cuda_X has exactly the
// semantics, argument order and shapes of herd_cpu_X in ops.h (and attention.h for rope), with
// every buffer in device memory (herd_cuda_malloc) and an int status returned: X_forward writes
// its outputs, X_backward ACCUMULATES (+=) into the gradients it is given, a NULL gradient is
// skipped. Ops are queued on herd's stream (cuda.h) and return before the GPU is done, except
// those that check indices (embedding_forward, weighted_nll, scalar_head_forward) and
// global_norm, which wait for their result.
//
// Numerics: f32 everywhere, reductions in double like the CPU kernels; matmuls run in cuBLASLt
// with CUBLAS_COMPUTE_32F (true f32, never TF32). Results agree with the CPU kernels to about
// 1e-6 relative (summation order and exp/sin differ), and are bit-identical from run to run:
// no floating-point atomics, every sum is taken in an order fixed by the shapes.
#ifndef HERD_KERNELS_CUDA_OPS_H
#define HERD_KERNELS_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {  // around the runtime's headers too: they have no guards of their own
#endif

#include "model.h"
#include "tensor.h"

// c(M,N) = alpha * op(a) @ op(b) + beta * c, op(a) (M,K), op(b) (K,N); a is stored (K,M) when
// transpose_a, b is stored (N,K) when transpose_b; row-major. beta = 0 ignores c (even NaN).
int herd_cuda_matmul(float *c, const float *a, const float *b, int m, int n, int k, int transpose_a,
                     int transpose_b, float alpha, float beta);

// out(N,OC) = inp(N,C) @ weight(OC,C)^T + bias(OC); bias may be NULL.
int herd_cuda_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                             int n, int c, int oc);
// dinp(N,C) += dout(N,OC) @ weight; dweight(OC,C) += dout^T @ inp; dbias(OC) += column sums.
int herd_cuda_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, int n, int c, int oc);

// out(N,C) = table(V,C)[tokens(N)]. HERD_EINVAL naming the position of a token outside [0,V)
// (checked on the device before anything is written; the call waits for the check).
int herd_cuda_embedding_forward(float *out, const int32_t *tokens, const float *table, int n,
                                int vocab, int c);
// dtable(V,C) += dout(N,C) scattered by tokens (rows accumulate in token order, as on the CPU).
int herd_cuda_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n,
                                 int c);

// RMSNorm: rstd(N) = 1/sqrt(mean(inp^2) + eps); out(N,C) = inp * rstd * weight(C).
int herd_cuda_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int n,
                              int c, float eps);
int herd_cuda_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                               const float *weight, const float *rstd, int n, int c);

// SwiGLU: out(N) = silu(gate) * up, silu(x) = x * sigmoid(x) (n elements).
int herd_cuda_swiglu_forward(float *out, const float *gate, const float *up, int64_t n);
int herd_cuda_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                              const float *up, int64_t n);

// Softmax over rows: out(N,C); out may equal inp.
int herd_cuda_softmax_forward(float *out, const float *inp, int n, int c);
int herd_cuda_softmax_backward(float *dinp, const float *dout, const float *out, int n, int c);

//   losses(N) = weights[i] * -log softmax(logits[i])[targets[i]]
//   dlogits(N,V) = dloss * weights[i] * (softmax(logits[i]) - onehot(targets[i]))   (written)
// dlogits may be NULL (forward only) or equal to logits (in place). A target of -1 gives loss 0
// and gradient 0. HERD_EINVAL naming the row of a target outside [-1,V) (checked on the device
// before anything is written; the call waits for the check).
int herd_cuda_weighted_nll(float *losses, float *dlogits, const float *logits,
                           const int32_t *targets, const float *weights, float dloss, int n, int v);

// out(P) = hidden(N,C)[positions[p]] . weight(C) + bias. HERD_EINVAL naming p for a position
// outside [0,N) (checked on the device; the call waits for the check).
int herd_cuda_scalar_head_forward(float *out, const float *hidden, const float *weight, float bias,
                                  const int32_t *positions, int p, int n, int c);
// dbias is a device pointer to one float.
int herd_cuda_scalar_head_backward(float *dhidden, float *dweight, float *dbias, const float *dout,
                                   const float *hidden, const float *weight,
                                   const int32_t *positions, int p, int c);

// Element-wise over n elements (out may equal a or b).
int herd_cuda_add(float *out, const float *a, const float *b, int64_t n);
int herd_cuda_add_backward(float *da, float *db, const float *dout, int64_t n);
int herd_cuda_mul(float *out, const float *a, const float *b, int64_t n);
int herd_cuda_mul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                           int64_t n);
int herd_cuda_scale(float *out, const float *a, float s, int64_t n);
int herd_cuda_scale_backward(float *da, const float *dout, float s, int64_t n);

// *norm = sqrt(sum of squares) over `count` device arrays whose pointers and lengths are in
// host memory. Squares are summed in double over blocks fixed by each length, the block sums
// added in order: the same bits on every run. Waits for the result.
int herd_cuda_global_norm(double *norm, const float *const *arrays, const int64_t *lengths,
                          int count);
// *out = the sum of a(n) in double, as herd_cpu_sum takes it (but over other blocks: the last
// bits may differ from the CPU), the same on every run. Waits for the result.
int herd_cuda_sum(double *out, const float *a, int64_t n);

// Rotary embedding (attention.h): x(N,H,D), positions(N) on the device; out may equal inp.
// HERD_EINVAL for head_dim above HERD_CUDA_ROPE_MAX_HEAD_DIM.
#define HERD_CUDA_ROPE_MAX_HEAD_DIM 512
int herd_cuda_rope_forward(float *out, const float *inp, const int32_t *positions, int n, int heads,
                           int head_dim, float theta);
int herd_cuda_rope_backward(float *dinp, const float *dout, const int32_t *positions, int n,
                            int heads, int head_dim, float theta);

// One AdamW step over parts of one flat parameter buffer, as herd_model_step does it once the
// gradient norm is known: for each range (offsets and sizes in floats, the same in params,
// grads, m and v), with g = grads * clip,
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   params -= lr * weight_decay * params   (only where decay: not RMSNorm weights)
//   params -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
// step counts from 1 (the step being taken); clip is the gradient scale from global-norm
// clipping (1: none). Elements outside the ranges (frozen parts) are not touched.
// opt->grad_clip is not read: the caller computes clip from herd_cuda_global_norm.
#define HERD_CUDA_ADAMW_MAX_RANGES 16
typedef struct herd_cuda_param_range {
  int64_t offset, size;  // in floats
  int decay;             // 1: decoupled weight decay applies
} herd_cuda_param_range;
int herd_cuda_adamw(float *params, const float *grads, float *m, float *v,
                    const herd_cuda_param_range *ranges, int n_ranges, const herd_adamw *opt,
                    int64_t step, float clip);

// bf16 (raw uint16_t bits) conversions over n elements: round to nearest even, NaN stays a
// quiet NaN, exactly as herd_f32_to_bf16 / herd_bf16_to_f32.
int herd_cuda_f32_to_bf16(uint16_t *out, const float *in, int64_t n);
int herd_cuda_bf16_to_f32(float *out, const uint16_t *in, int64_t n);

// herd_cuda_matmul with bf16 a and b, products accumulated in f32 (CUBLAS_COMPUTE_32F), and c
// of c_dtype HERD_F32 or HERD_BF16 (then read and written as bf16: the f32 result
// alpha * op(a) op(b) + beta * c is rounded once).
int herd_cuda_matmul_bf16(void *c, herd_dtype c_dtype, const uint16_t *a, const uint16_t *b, int m,
                          int n, int k, int transpose_a, int transpose_b, float alpha, float beta);

#ifdef __cplusplus
}
#endif
#endif
