// defines: herd_backend, herd_param_range, herd_cpu_backend, herd_backend_find
//
// The kernels a model runs on, as a table: the model's forward, backward and optimizer step
// (model.c) are written once against it, and each device provides one. Every entry has exactly
// the semantics of the CPU kernel of the same name in ops.h and attention.h (shapes, X_forward
// writes, X_backward ACCUMULATES, NULL gradients skipped), takes buffers in the backend's own
// memory, and returns a herd status. The CPU table is herd_cpu_backend; kernels/cuda_ops.h has
// the same signatures for the GPU.
#ifndef HERD_BACKEND_H
#define HERD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "tensor.h"

// A part of the flat parameter buffer for the AdamW sweep (offsets and sizes in floats).
typedef struct herd_param_range {
  int64_t offset, size;
  int decay;  // 1: decoupled weight decay applies (not to RMSNorm weights)
} herd_param_range;

typedef struct herd_backend {
  const char *name;  // "cpu", "cuda"

  // Memory: zeroed on allocation; copies between host memory and the backend's.
  int (*alloc)(void **ptr, size_t bytes);
  void (*release)(void *ptr);
  int (*zero)(void *ptr, size_t bytes);
  int (*upload)(void *dst, const void *host_src, size_t bytes);
  int (*download)(void *host_dst, const void *src, size_t bytes);

  int (*embedding_forward)(float *out, const int32_t *tokens, const float *table, int n, int vocab,
                           int c);
  int (*embedding_backward)(float *dtable, const float *dout, const int32_t *tokens, int n, int c);
  int (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *weight, int n,
                         int c, float eps);
  int (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout, const float *inp,
                          const float *weight, const float *rstd, int n, int c);
  int (*linear_forward)(float *out, const float *inp, const float *weight, const float *bias, int n,
                        int c, int oc);
  int (*linear_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int n, int c, int oc);
  int (*rope_forward)(float *out, const float *inp, const int32_t *positions, int n, int heads,
                      int head_dim, float theta);
  int (*rope_backward)(float *dinp, const float *dout, const int32_t *positions, int n, int heads,
                       int head_dim, float theta);
  int (*attention_forward)(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int32_t *segments, int b, int t, int h, int kvh, int d);
  int (*attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const float *out, const float *lse,
                            const int32_t *segments, int b, int t, int h, int kvh, int d);
  int (*add)(float *out, const float *a, const float *b, int64_t n);
  int (*swiglu_forward)(float *out, const float *gate, const float *up, int64_t n);
  int (*swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, int64_t n);
  int (*weighted_nll)(float *losses, float *dlogits, const float *logits, const int32_t *targets,
                      const float *weights, float dloss, int n, int v);
  int (*scalar_head_forward)(float *out, const float *hidden, const float *weight, float bias,
                             const int32_t *positions, int p, int n, int c);
  int (*scalar_head_backward)(float *dhidden, float *dweight, float *dbias, const float *dout,
                              const float *hidden, const float *weight, const int32_t *positions,
                              int p, int c);
  // *out = the sum of a(n), in double (the loss).
  int (*sum)(double *out, const float *a, int64_t n);
  // *norm = sqrt(sum of squares) over `count` arrays (global-norm clipping).
  int (*global_norm)(double *norm, const float *const *arrays, const int64_t *lengths, int count);
  // Mixed precision (herd_model_set_precision with HERD_BF16): matmuls read bf16 copies of
  // their operands (raw uint16_t bits) and accumulate products in f32; everything else stays
  // f32. to_bf16 rounds to nearest even (herd_f32_to_bf16). A product of two bf16 values is
  // exact in f32, so devices differ only in the order of the f32 sums.
  int (*to_bf16)(uint16_t *out, const float *in, int64_t n);
  // out(N,OC) = inp(N,C) @ weight(OC,C)^T.
  int (*linear_forward_bf16)(float *out, const uint16_t *inp, const uint16_t *weight, int n, int c,
                             int oc);
  // dinp(N,C) += dout(N,OC) @ weight; dweight(OC,C) += dout^T @ inp (NULL skips; f32 results).
  int (*linear_backward_bf16)(float *dinp, float *dweight, const uint16_t *dout,
                              const uint16_t *inp, const uint16_t *weight, int n, int c, int oc);
  // Generation (generate.c) with a KV cache per layer of (n_seqs, max_len, KVH*D) elements of
  // `cache` dtype, HERD_F32 or HERD_BF16 (rounded to nearest even as it is stored).
  // copy: `bytes` from src to dst, both in the backend's memory (not overlapping).
  int (*copy)(void *dst, const void *src, size_t bytes);
  // The rows' keys and values k, v (rows, KVH*D) into the caches at (seqs[r], pos[r]).
  int (*kv_store)(void *k_cache, void *v_cache, herd_dtype cache, const float *k, const float *v,
                  const int32_t *seqs, const int32_t *pos, int rows, int max_len, int kv_dim);
  // att(rows, H*D): the H query heads q(rows, H*D) of row r attend to the cached keys and values
  // 0..pos[r] of sequence seqs[r] (head i reads kv head i / (H/KVH); scale 1/sqrt(D)).
  int (*cached_attention)(float *att, const float *q, const void *k_cache, const void *v_cache,
                          herd_dtype cache, const int32_t *seqs, const int32_t *pos, int rows,
                          int max_len, int h, int kvh, int d);
  // dst(n, c) = the rows index[0..n) of src(., c).
  int (*gather_rows)(float *dst, const float *src, const int32_t *index, int n, int c);
  // One AdamW update of the ranges of the flat buffers, gradients scaled by clip; step counts
  // from 1 (the step being taken). herd_model_step checks the settings and computes clip.
  int (*adamw)(float *params, const float *grads, float *m, float *v,
               const herd_param_range *ranges, int n_ranges, const herd_adamw *opt, int64_t step,
               float clip);
} herd_backend;

extern const herd_backend herd_cpu_backend;

// For runtime code that runs a model's weights through its backend (generate.c): the backend,
// and in bf16 precision the weights' bf16 copy (made again first if stale; NULL in f32).
const herd_backend *herd_model_backend(const herd_model *model);
int herd_model_weights_bf16(herd_model *model, const uint16_t **params16);

// The backend named "cpu" or "cuda". HERD_EDEVICE when herd was built without CUDA or no GPU is
// visible, HERD_EINVAL for any other name; the message says which.
int herd_backend_find(const char *name, const herd_backend **out);

#endif
