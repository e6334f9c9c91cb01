// The CPU backend: host memory and the kernels of ops.h and attention.h, adapted to the
// table's status-returning signatures. The AdamW sweep lives here (the GPU's is a kernel).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "backend.h"
#include "error.h"
#include "ops.h"
#include "tensor.h"
#include "threads.h"
#include "vexp.h"

#include <cblas.h>

static int cpu_alloc(void **ptr, size_t bytes) {
  *ptr = bytes ? calloc(1, bytes) : NULL;
  if (bytes && !*ptr) return herd_seterr(HERD_ENOMEM, "out of memory (%zu bytes)", bytes);
  return HERD_OK;
}

static void cpu_release(void *ptr) {
  free(ptr);
}

static int cpu_zero(void *ptr, size_t bytes) {
  if (bytes) memset(ptr, 0, bytes);
  return HERD_OK;
}

static int cpu_copy(void *dst, const void *src, size_t bytes) {
  if (bytes && dst != src) memmove(dst, src, bytes);
  return HERD_OK;
}

static int cpu_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n,
                                  int c) {
  herd_cpu_embedding_backward(dtable, dout, tokens, n, c);
  return HERD_OK;
}

static int cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                               int n, int c, float eps) {
  herd_cpu_rmsnorm_forward(out, rstd, inp, weight, n, c, eps);
  return HERD_OK;
}

static int cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                                const float *weight, const float *rstd, int n, int c) {
  herd_cpu_rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, n, c);
  return HERD_OK;
}

static int cpu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                              int n, int c, int oc) {
  herd_cpu_linear_forward(out, inp, weight, bias, n, c, oc);
  return HERD_OK;
}

static int cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, int n, int c, int oc) {
  herd_cpu_linear_backward(dinp, dweight, dbias, dout, inp, weight, n, c, oc);
  return HERD_OK;
}

// The CPU's bf16 matmuls widen the operands back to f32 (exactly) and run the f32 kernels: a
// reference for the GPU's bf16 path, not a fast path.
static int cpu_to_bf16(uint16_t *out, const float *in, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = herd_f32_to_bf16(in[i]);
  return HERD_OK;
}

// A malloc'd f32 copy of n bf16 values (NULL: out of memory, reported).
static float *widen(const uint16_t *in, size_t n) {
  float *out = malloc((n ? n : 1) * sizeof *out);
  if (!out) {
    herd_seterr(HERD_ENOMEM, "bf16 matmul: out of memory (%zu floats)", n);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) out[i] = herd_bf16_to_f32(in[i]);
  return out;
}

static int cpu_linear_forward_bf16(float *out, const uint16_t *inp, const uint16_t *weight, int n,
                                   int c, int oc) {
  float *x = widen(inp, (size_t)n * c), *w = x ? widen(weight, (size_t)oc * c) : NULL;
  if (w) herd_cpu_linear_forward(out, x, w, NULL, n, c, oc);
  free(x), free(w);
  return w ? HERD_OK : HERD_ENOMEM;
}

static int cpu_linear_backward_bf16(float *dinp, float *dweight, const uint16_t *dout,
                                    const uint16_t *inp, const uint16_t *weight, int n, int c,
                                    int oc) {
  float *d = widen(dout, (size_t)n * oc), *x = d ? widen(inp, (size_t)n * c) : NULL;
  float *w = x ? widen(weight, (size_t)oc * c) : NULL;
  if (w) herd_cpu_linear_backward(dinp, dweight, NULL, d, x, w, n, c, oc);
  free(d), free(x), free(w);
  return w ? HERD_OK : HERD_ENOMEM;
}

// ---------------------------------------------------------------- generation

static int cpu_copy_within(void *dst, const void *src, size_t bytes) {
  if (bytes) memcpy(dst, src, bytes);
  return HERD_OK;
}

static int cpu_kv_store(void *k_cache, void *v_cache, herd_dtype cache, const float *k,
                        const float *v, const int32_t *seqs, const int32_t *pos, int rows,
                        int max_len, int kv_dim) {
  for (int r = 0; r < rows; r++) {
    const int64_t at = ((int64_t)seqs[r] * max_len + pos[r]) * kv_dim;
    const float *kr = k + (int64_t)r * kv_dim, *vr = v + (int64_t)r * kv_dim;
    if (cache == HERD_BF16) {
      uint16_t *kc = (uint16_t *)k_cache + at, *vc = (uint16_t *)v_cache + at;
      for (int j = 0; j < kv_dim; j++)
        kc[j] = herd_f32_to_bf16(kr[j]), vc[j] = herd_f32_to_bf16(vr[j]);
    } else {
      memcpy((float *)k_cache + at, kr, (size_t)kv_dim * sizeof(float));
      memcpy((float *)v_cache + at, vr, (size_t)kv_dim * sizeof(float));
    }
  }
  return HERD_OK;
}

// (n, d) f32 from kv head g of positions 0..n of a bf16 cache row block (stride kv_dim).
static void widen_head(float *out, const uint16_t *cache, int n, int d, int kv_dim) {
  for (int j = 0; j < n; j++)
    for (int i = 0; i < d; i++)
      out[(int64_t)j * d + i] = herd_bf16_to_f32(cache[(int64_t)j * kv_dim + i]);
}

// One (row, kv head) at a time: its group of query heads shares the keys and values, so
// S = scale Q K^T and O = softmax(S) V are two small sgemms (over f32 copies of a bf16 cache).
static int cpu_cached_attention(float *att, const float *q, const void *k_cache,
                                const void *v_cache, herd_dtype cache, const int32_t *seqs,
                                const int32_t *pos, int rows, int max_len, int h, int kvh, int d) {
  const int group = h / kvh, kv_dim = kvh * d, q_dim = h * d, nt = herd_threads();
  const int bf16 = cache == HERD_BF16;
  const float scale = 1.0f / sqrtf((float)d);
  // per thread: scores and probabilities (group, max_len), and for bf16 f32 keys and values
  const size_t per_thread = (size_t)2 * group * max_len + (bf16 ? (size_t)2 * max_len * d : 0);
  float *scratch = malloc((size_t)nt * per_thread * sizeof(float));
  if (!scratch) return herd_seterr(HERD_ENOMEM, "cached_attention: out of memory");
  int64_t work = 0;
  for (int r = 0; r < rows; r++) work += (int64_t)(pos[r] + 1) * h * d;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (work >= 65536)
  for (int64_t rg = 0; rg < (int64_t)rows * kvh; rg++) {
    const int r = (int)(rg / kvh), g = (int)(rg % kvh), n = pos[r] + 1;
    const int64_t base = (int64_t)seqs[r] * max_len * kv_dim + (int64_t)g * d;
    const float *qr = q + (int64_t)r * q_dim + (int64_t)g * group * d;  // (group, D)
    float *out = att + (int64_t)r * q_dim + (int64_t)g * group * d;     // (group, D)
    float *s = scratch + (size_t)herd_thread_id() * per_thread;         // (group, n)
    float *prob = s + (int64_t)group * max_len;                         // (group, n)
    const float *keys, *vals;
    int ld;
    if (bf16) {
      float *kw = prob + (int64_t)group * max_len, *vw = kw + (int64_t)max_len * d;
      widen_head(kw, (const uint16_t *)k_cache + base, n, d, kv_dim);
      widen_head(vw, (const uint16_t *)v_cache + base, n, d, kv_dim);
      keys = kw, vals = vw, ld = d;
    } else {
      keys = (const float *)k_cache + base, vals = (const float *)v_cache + base, ld = kv_dim;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, group, n, d, scale, qr, d, keys, ld, 0.0f,
                s, n);
    for (int i = 0; i < group; i++) {
      const float *si = s + (int64_t)i * n;
      float *pi = prob + (int64_t)i * n;
      float max = si[0];
      for (int j = 1; j < n; j++) max = si[j] > max ? si[j] : max;
      herd_exp_shifted(pi, si, max, n);
      double sum = 0;
      for (int j = 0; j < n; j++) sum += pi[j];
      const float inv = (float)(1.0 / sum);
      for (int j = 0; j < n; j++) pi[j] *= inv;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, group, d, n, 1.0f, prob, n, vals, ld,
                0.0f, out, d);
  }
  free(scratch);
  return HERD_OK;
}

static int cpu_gather_rows(float *dst, const float *src, const int32_t *index, int n, int c) {
  for (int i = 0; i < n; i++)
    memcpy(dst + (int64_t)i * c, src + (int64_t)index[i] * c, (size_t)c * sizeof(float));
  return HERD_OK;
}

static int cpu_rope_forward(float *out, const float *inp, const int32_t *positions, int n,
                            int heads, int head_dim, float theta) {
  herd_cpu_rope_forward(out, inp, positions, n, heads, head_dim, theta);
  return HERD_OK;
}

static int cpu_rope_backward(float *dinp, const float *dout, const int32_t *positions, int n,
                             int heads, int head_dim, float theta) {
  herd_cpu_rope_backward(dinp, dout, positions, n, heads, head_dim, theta);
  return HERD_OK;
}

static int cpu_attention_forward(float *out, float *lse, const float *q, const float *k,
                                 const float *v, const int32_t *segments, int b, int t, int h,
                                 int kvh, int d) {
  herd_cpu_attention_forward(out, lse, q, k, v, segments, b, t, h, kvh, d);
  return HERD_OK;
}

static int cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                  const float *q, const float *k, const float *v, const float *out,
                                  const float *lse, const int32_t *segments, int b, int t, int h,
                                  int kvh, int d) {
  herd_cpu_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, segments, b, t, h, kvh, d);
  return HERD_OK;
}

static int cpu_add(float *out, const float *a, const float *b, int64_t n) {
  herd_cpu_add(out, a, b, n);
  return HERD_OK;
}

static int cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
  herd_cpu_swiglu_forward(out, gate, up, n);
  return HERD_OK;
}

static int cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                               const float *up, int64_t n) {
  herd_cpu_swiglu_backward(dgate, dup, dout, gate, up, n);
  return HERD_OK;
}

static int cpu_scalar_head_backward(float *dhidden, float *dweight, float *dbias, const float *dout,
                                    const float *hidden, const float *weight,
                                    const int32_t *positions, int p, int c) {
  herd_cpu_scalar_head_backward(dhidden, dweight, dbias, dout, hidden, weight, positions, p, c);
  return HERD_OK;
}

static int cpu_sum(double *out, const float *a, int64_t n) {
  *out = herd_cpu_sum(a, n);
  return HERD_OK;
}

static int cpu_global_norm(double *norm, const float *const *arrays, const int64_t *lengths,
                           int count) {
  *norm = herd_cpu_global_norm(arrays, lengths, count);
  return HERD_OK;
}

static int cpu_adamw(float *params, const float *grads, float *m, float *v,
                     const herd_param_range *ranges, int n_ranges, const herd_adamw *opt,
                     int64_t step, float clip) {
  float b1 = opt->beta1, b2 = opt->beta2, lr = opt->lr, eps = opt->eps;
  float bc1 = (float)(1 - pow(b1, (double)step));
  float bc2 = (float)(1 - pow(b2, (double)step));
  int nt = herd_threads();
  for (int i = 0; i < n_ranges; i++) {
    float decay = ranges[i].decay ? lr * opt->weight_decay : 0.0f;
    float *w = params + ranges[i].offset, *m1 = m + ranges[i].offset, *m2 = v + ranges[i].offset;
    const float *gr = grads + ranges[i].offset;
    int64_t n = ranges[i].size;
#pragma omp parallel for schedule(static) num_threads(nt) if (n >= 32768)
    for (int64_t j = 0; j < n; j++) {
      float gj = gr[j] * clip;
      m1[j] = b1 * m1[j] + (1 - b1) * gj;
      m2[j] = b2 * m2[j] + (1 - b2) * gj * gj;
      float mhat = m1[j] / bc1, vhat = m2[j] / bc2;
      w[j] -= decay * w[j];  // decoupled weight decay (PyTorch AdamW order)
      w[j] -= lr * mhat / (sqrtf(vhat) + eps);
    }
  }
  return HERD_OK;
}

const herd_backend herd_cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .release = cpu_release,
    .zero = cpu_zero,
    .upload = cpu_copy,
    .download = cpu_copy,
    .embedding_forward = herd_cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .rope_forward = cpu_rope_forward,
    .rope_backward = cpu_rope_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .add = cpu_add,
    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,
    .weighted_nll = herd_cpu_weighted_nll,
    .scalar_head_forward = herd_cpu_scalar_head_forward,
    .scalar_head_backward = cpu_scalar_head_backward,
    .sum = cpu_sum,
    .global_norm = cpu_global_norm,
    .to_bf16 = cpu_to_bf16,
    .linear_forward_bf16 = cpu_linear_forward_bf16,
    .linear_backward_bf16 = cpu_linear_backward_bf16,
    .copy = cpu_copy_within,
    .kv_store = cpu_kv_store,
    .cached_attention = cpu_cached_attention,
    .gather_rows = cpu_gather_rows,
    .adamw = cpu_adamw,
};
