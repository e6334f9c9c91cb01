// defines: herd_cpu_matmul, herd_cpu_linear_forward, herd_cpu_linear_backward,
//          herd_cpu_embedding_forward, herd_cpu_embedding_backward,
//          herd_cpu_rmsnorm_forward, herd_cpu_rmsnorm_backward,
//          herd_cpu_swiglu_forward, herd_cpu_swiglu_backward,
//          herd_cpu_softmax_forward, herd_cpu_softmax_backward, herd_cpu_weighted_nll,
//          herd_cpu_scalar_head_forward, herd_cpu_scalar_head_backward,
//          herd_cpu_add, herd_cpu_add_backward, herd_cpu_mul, herd_cpu_mul_backward,
//          herd_cpu_scale, herd_cpu_scale_backward, herd_cpu_sum, herd_cpu_mean, herd_cpu_max,
//          herd_cpu_sum_backward, herd_cpu_mean_backward, herd_cpu_max_backward,
//          herd_cpu_global_norm
//
// The CPU kernels of the Llama transformer (attention and rotary embeddings: attention.h).
// Conventions (llm.c): contiguous row-major f32 buffers whose shapes are given in comments;
// X_forward writes its outputs; X_backward ACCUMULATES (+=) into the gradients it is given, and
// any gradient pointer may be NULL when that gradient is not wanted. Work is split over rows
// with OpenMP; every output element is computed by one thread in a fixed order, so results are
// bit-identical for any HERD_THREADS.
#ifndef HERD_OPS_H
#define HERD_OPS_H

#include <stdint.h>

// c(M,N) = alpha * op(a) @ op(b) + beta * c, op(a) (M,K), op(b) (K,N); a is stored (K,M) when
// transpose_a, b is stored (N,K) when transpose_b. OpenBLAS sgemm.
void herd_cpu_matmul(float *c, const float *a, const float *b, int m, int n, int k, int transpose_a,
                     int transpose_b, float alpha, float beta);

// nn.Linear: out(N,OC) = inp(N,C) @ weight(OC,C)^T + bias(OC); bias may be NULL.
void herd_cpu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                             int n, int c, int oc);
// dinp(N,C) += dout(N,OC) @ weight; dweight(OC,C) += dout^T @ inp; dbias(OC) += column sums.
void herd_cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, int n, int c, int oc);

// out(N,C) = table(V,C)[tokens(N)]. HERD_EINVAL naming the position of a token outside [0,V).
int herd_cpu_embedding_forward(float *out, const int32_t *tokens, const float *table, int n,
                               int vocab, int c);
// dtable(V,C) += dout(N,C) scattered by tokens (rows accumulate in token order).
void herd_cpu_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n,
                                 int c);

// RMSNorm: rstd(N) = 1/sqrt(mean(inp^2) + eps); out(N,C) = inp * rstd * weight(C).
void herd_cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int n,
                              int c, float eps);
void herd_cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                               const float *weight, const float *rstd, int n, int c);

// SwiGLU: out(N) = silu(gate) * up, silu(x) = x * sigmoid(x) (n elements).
void herd_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n);
void herd_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                              const float *up, int64_t n);

// Softmax over rows: out(N,C).
void herd_cpu_softmax_forward(float *out, const float *inp, int n, int c);
void herd_cpu_softmax_backward(float *dinp, const float *dout, const float *out, int n, int c);

// Per-token-weighted negative log-likelihood fused with log-softmax (one kernel serves SFT
// masks (0/1), GAtt masking, rejection-sampling fine-tuning and PPO advantages (any real)):
//   losses(N) = weights[i] * -log softmax(logits[i])[targets[i]]
//   dlogits(N,V) = dloss * weights[i] * (softmax(logits[i]) - onehot(targets[i]))   (written)
// dlogits may be NULL (forward only) or equal to logits (in place). A target of -1 gives loss 0
// and gradient 0. HERD_EINVAL naming the row of a target outside [-1,V).
int herd_cpu_weighted_nll(float *losses, float *dlogits, const float *logits,
                          const int32_t *targets, const float *weights, float dloss, int n, int v);

// Scalar head (reward/value models): out(P) = hidden(N,C)[positions[p]] . weight(C) + bias.
// HERD_EINVAL naming p for a position outside [0,N).
int herd_cpu_scalar_head_forward(float *out, const float *hidden, const float *weight, float bias,
                                 const int32_t *positions, int p, int n, int c);
void herd_cpu_scalar_head_backward(float *dhidden, float *dweight, float *dbias, const float *dout,
                                   const float *hidden, const float *weight,
                                   const int32_t *positions, int p, int c);

// Element-wise over n elements.
void herd_cpu_add(float *out, const float *a, const float *b, int64_t n);
void herd_cpu_add_backward(float *da, float *db, const float *dout, int64_t n);
void herd_cpu_mul(float *out, const float *a, const float *b, int64_t n);
void herd_cpu_mul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                           int64_t n);
void herd_cpu_scale(float *out, const float *a, float s, int64_t n);
void herd_cpu_scale_backward(float *da, const float *dout, float s, int64_t n);

// Reductions in double, over fixed blocks combined in a fixed order (thread-count independent).
double herd_cpu_sum(const float *a, int64_t n);
double herd_cpu_mean(const float *a, int64_t n);
// Largest element and (first) index of it; NaN wins (it propagates). n >= 1.
float herd_cpu_max(const float *a, int64_t n, int64_t *argmax);
void herd_cpu_sum_backward(float *da, float dout, int64_t n);
void herd_cpu_mean_backward(float *da, float dout, int64_t n);
void herd_cpu_max_backward(float *da, float dout, int64_t argmax);

// sqrt(sum of squares) over `count` arrays (grad-norm clipping over all parameters).
double herd_cpu_global_norm(const float *const *arrays, const int64_t *lengths, int count);

#endif
