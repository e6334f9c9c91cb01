// The CUDA backend (runtime/backend.h): device memory from herd's caching allocator and the
// kernels of cuda_ops.h and cuda_attention.h, all queued on herd's stream.
#include "kernels/backend_cuda.h"

#include "error.h"
#include "kernels/cuda.h"
#include "kernels/cuda_attention.h"
#include "kernels/cuda_decode.h"
#include "kernels/cuda_ops.h"

static int cuda_alloc(void **ptr, size_t bytes) {
  int rc = herd_cuda_malloc(ptr, bytes);
  if (rc) return rc;
  rc = herd_cuda_zero(*ptr, bytes);
  if (rc) {
    herd_cuda_free(*ptr);
    *ptr = NULL;
  }
  return rc;
}

static void cuda_release(void *ptr) {
  herd_cuda_free(ptr);
}

static int cuda_adamw(float *params, const float *grads, float *m, float *v,
                      const herd_param_range *ranges, int n_ranges, const herd_adamw *opt,
                      int64_t step, float clip) {
  if (n_ranges > HERD_CUDA_ADAMW_MAX_RANGES)
    return herd_seterr(HERD_EINVAL, "adamw: %d parameter ranges (at most %d on the GPU)", n_ranges,
                       HERD_CUDA_ADAMW_MAX_RANGES);
  herd_cuda_param_range device_ranges[HERD_CUDA_ADAMW_MAX_RANGES];
  for (int i = 0; i < n_ranges; i++)
    device_ranges[i] = (herd_cuda_param_range){ranges[i].offset, ranges[i].size, ranges[i].decay};
  return herd_cuda_adamw(params, grads, m, v, device_ranges, n_ranges, opt, step, clip);
}

// The linear layer on bf16 operands (cuBLASLt, f32 accumulation), with the index mapping of
// herd_cuda_linear_forward/backward.
static int cuda_linear_forward_bf16(float *out, const uint16_t *inp, const uint16_t *weight, int n,
                                    int c, int oc) {
  return herd_cuda_matmul_bf16(out, HERD_F32, inp, weight, n, oc, c, 0, 1, 1.0f, 0.0f);
}

static int cuda_linear_backward_bf16(float *dinp, float *dweight, const uint16_t *dout,
                                     const uint16_t *inp, const uint16_t *weight, int n, int c,
                                     int oc) {
  int rc = HERD_OK;
  if (dinp) rc = herd_cuda_matmul_bf16(dinp, HERD_F32, dout, weight, n, c, oc, 0, 0, 1.0f, 1.0f);
  if (dweight && !rc)
    rc = herd_cuda_matmul_bf16(dweight, HERD_F32, dout, inp, oc, c, n, 1, 0, 1.0f, 1.0f);
  return rc;
}

static const herd_backend cuda_backend = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .release = cuda_release,
    .zero = herd_cuda_zero,
    .upload = herd_cuda_copy_to_device,
    .download = herd_cuda_copy_to_host,
    .embedding_forward = herd_cuda_embedding_forward,
    .embedding_backward = herd_cuda_embedding_backward,
    .rmsnorm_forward = herd_cuda_rmsnorm_forward,
    .rmsnorm_backward = herd_cuda_rmsnorm_backward,
    .linear_forward = herd_cuda_linear_forward,
    .linear_backward = herd_cuda_linear_backward,
    .rope_forward = herd_cuda_rope_forward,
    .rope_backward = herd_cuda_rope_backward,
    .attention_forward = herd_cuda_attention_forward,
    .attention_backward = herd_cuda_attention_backward,
    .add = herd_cuda_add,
    .swiglu_forward = herd_cuda_swiglu_forward,
    .swiglu_backward = herd_cuda_swiglu_backward,
    .weighted_nll = herd_cuda_weighted_nll,
    .scalar_head_forward = herd_cuda_scalar_head_forward,
    .scalar_head_backward = herd_cuda_scalar_head_backward,
    .sum = herd_cuda_sum,
    .global_norm = herd_cuda_global_norm,
    .to_bf16 = herd_cuda_f32_to_bf16,
    .linear_forward_bf16 = cuda_linear_forward_bf16,
    .linear_backward_bf16 = cuda_linear_backward_bf16,
    .copy = herd_cuda_copy_on_device,
    .kv_store = herd_cuda_kv_store,
    .cached_attention = herd_cuda_cached_attention,
    .gather_rows = herd_cuda_gather_rows,
    .adamw = cuda_adamw,
};

const herd_backend *herd_cuda_backend(void) {
  return &cuda_backend;
}
