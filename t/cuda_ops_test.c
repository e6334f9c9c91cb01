// The CUDA kernels of kernels/cuda_ops.h against the CPU kernels of ops.h and attention.h, and
// the CUDA runtime of kernels/cuda.h (allocator, copies, error reporting).
//
// Every kernel test makes random inputs (fixed seeds), runs herd_cpu_X on a host copy and
// herd_cuda_X on a device copy of the same values, and compares the outputs by norm-wise relative
// error ||gpu - cpu|| / ||cpu|| <= REL_TOL (1e-5): both sides compute in f32 with double
// reductions, so they differ only by summation order and by the last bits of exp/sin (the
// failure message names the worst element). The matmuls run in true f32 (CUBLAS_COMPUTE_32F,
// not TF32), so they meet the same tolerance; the bf16 matmul has its own, justified below.
// Backward tests pre-fill every gradient with random non-zero values, so they check that the
// kernels accumulate (+=), and repeat with NULL gradients. Scatters (embedding and scalar-head
// backward) and the global norm must also give the same bits when run twice.
//
// Shapes are not multiples of 16 (N=37, C=45, OC=29, V=53), and a second shape per kernel
// has rows longer than a block (256 threads) so the strided loops run more than once.
//
// Without a GPU (herd_cuda_device_count() == 0) every test skips itself (or fails, with
// HERD_EXPECT_GPU=1). On a GPU the tests set HERD_CUDA_SYNC=1 so that a kernel that fails is
// named by the op that launched it.
//   make t/cuda_ops_test && HERD_EXPECT_GPU=1 ./t/cuda_ops_test --verbose   (prints the errors)
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/cuda.h"
#include "../kernels/cuda_ops.h"
#include "attention.h"
#include "cuda_test_util.h"
#include "error.h"
#include "gradcheck.h"
#include "model.h"
#include "ops.h"
#include "tensor.h"

enum { N = 37, C = 45, OC = 29, V = 53 };

#define REL_TOL 1e-5

// ---------------------------------------------------------------- host and device twins

// The same values on the host (for the CPU kernel) and on the device (for the CUDA kernel).
typedef struct twin {
  float *cpu, *gpu;
  int64_t n;
} twin;

typedef struct itwin {
  int32_t *cpu, *gpu;
  int n;
} itwin;

static twin twin_of(const float *values, int64_t n) {
  twin t = {malloc((size_t)(n > 0 ? n : 1) * sizeof(float)),
            device_alloc((size_t)n * sizeof(float)), n};
  memcpy(t.cpu, values, (size_t)n * sizeof(float));
  CUDA_OK(herd_cuda_copy_to_device(t.gpu, t.cpu, (size_t)n * sizeof(float)));
  return t;
}

static twin twin_random(int64_t n, uint64_t seed, float lo, float hi) {
  float *values = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  gc_fill_uniform(values, n, seed, lo, hi);
  twin t = twin_of(values, n);
  free(values);
  return t;
}

static twin twin_fill(int64_t n, float value) {
  float *values = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  for (int64_t i = 0; i < n; i++) values[i] = value;
  twin t = twin_of(values, n);
  free(values);
  return t;
}

static void twin_free(twin t) {
  free(t.cpu);
  herd_cuda_free(t.gpu);
}

static itwin itwin_of(const int32_t *values, int n) {
  itwin t = {malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t)),
             device_alloc((size_t)n * sizeof(int32_t)), n};
  memcpy(t.cpu, values, (size_t)n * sizeof(int32_t));
  CUDA_OK(herd_cuda_copy_to_device(t.gpu, t.cpu, (size_t)n * sizeof(int32_t)));
  return t;
}

// n integers uniform in [lo, hi).
static itwin itwin_random(int n, uint64_t seed, int lo, int hi) {
  float *u = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  int32_t *values = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
  gc_fill_uniform(u, n, seed, 0, 1);
  for (int i = 0; i < n; i++) {
    int v = lo + (int)(u[i] * (float)(hi - lo));
    values[i] = v < hi ? v : hi - 1;
  }
  itwin t = itwin_of(values, n);
  free(u);
  free(values);
  return t;
}

static void itwin_set(itwin *t, int i, int32_t value) {
  t->cpu[i] = value;
  CUDA_OK(herd_cuda_copy_to_device(t->gpu + i, &value, sizeof value));
}

static void itwin_free(itwin t) {
  free(t.cpu);
  herd_cuda_free(t.gpu);
}

// ---------------------------------------------------------------- comparisons

// ||got - want|| / max(||want||, 1e-30) <= tol; the message names the worst element. A NaN in
// got (where want has none) makes the error NaN, which fails.
static void expect_close(const char *what, const float *got, const float *want, int64_t n,
                         double tol) {
  double diff2 = 0, want2 = 0, worst = -1;
  int64_t at = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)got[i] - (double)want[i];
    diff2 += d * d;
    want2 += (double)want[i] * want[i];
    if (!(fabs(d) <= worst)) worst = fabs(d), at = i;
  }
  double err = sqrt(diff2) / fmax(sqrt(want2), 1e-30);
  cr_log_info("%s: relative error %.3g", what, err);
  cr_expect(err <= tol, "%s: relative error %.3g > %.3g; worst [%lld]: gpu %.9g, cpu %.9g", what,
            err, tol, (long long)at, n > 0 ? (double)got[at] : 0.0, n > 0 ? (double)want[at] : 0.0);
}

// The GPU side of t against its CPU side.
static void expect_twin(const char *what, twin t, double tol) {
  float *got = download(t.gpu, t.n);
  expect_close(what, got, t.cpu, t.n, tol);
  free(got);
}

// Every element of the GPU side of t still equals `value` (an op that failed wrote nothing).
static void expect_untouched(const char *what, twin t, float value) {
  float *got = download(t.gpu, t.n);
  for (int64_t i = 0; i < t.n; i++)
    if (memcmp(&got[i], &value, sizeof value) != 0) {
      cr_expect(0, "%s: element %lld was written (%.9g)", what, (long long)i, (double)got[i]);
      break;
    }
  free(got);
}

// ---------------------------------------------------------------- allocator, copies, errors

Test(cuda_memory, allocator_buckets_reuse_and_stats) {
  require_gpu();
  herd_cuda_memory_stats before, now;
  herd_cuda_get_memory_stats(&before);
  void *p = NULL, *q = NULL;
  CUDA_OK(herd_cuda_malloc(&p, 1000));  // bucket: 1024 bytes
  herd_cuda_get_memory_stats(&now);
  cr_expect_eq(now.in_use, before.in_use + 1024, "in_use %zu, want %zu", now.in_use,
               before.in_use + 1024);
  cr_expect(now.peak >= now.in_use, "peak %zu < in_use %zu", now.peak, now.in_use);
  CUDA_OK(herd_cuda_free(p));
  herd_cuda_get_memory_stats(&now);
  cr_expect_eq(now.in_use, before.in_use);
  cr_expect_eq(now.cached, before.cached + 1024);
  CUDA_OK(herd_cuda_malloc(&q, 700));  // same bucket: the cached block comes back
  cr_expect_eq(q, p, "a freed block of the same bucket is reused");
  CUDA_OK(herd_cuda_free(q));

  // above 1 MiB: 8 buckets per power of two, 3 MiB + 1 byte -> 3 MiB + 256 KiB
  size_t big = ((size_t)3 << 20) + 1, bucket = ((size_t)3 << 20) + ((size_t)256 << 10);
  herd_cuda_get_memory_stats(&before);
  CUDA_OK(herd_cuda_malloc(&p, big));
  herd_cuda_get_memory_stats(&now);
  cr_expect_eq(now.in_use - before.in_use, bucket, "bucket of %zu bytes: %zu", big,
               now.in_use - before.in_use);
  cr_expect(now.peak >= before.in_use + bucket);
  CUDA_OK(herd_cuda_free(p));

  CUDA_OK(herd_cuda_empty_cache());
  herd_cuda_get_memory_stats(&now);
  cr_expect_eq(now.cached, 0, "empty_cache leaves %zu bytes cached", now.cached);

  CUDA_OK(herd_cuda_malloc(&p, 0));
  cr_expect_null(p, "0 bytes gives NULL");
  CUDA_OK(herd_cuda_free(NULL));
  int stack_value = 0;
  cr_expect_eq(herd_cuda_free(&stack_value), HERD_EINVAL, "freeing a foreign pointer");
  cr_expect(strstr(herd_errmsg(), "herd_cuda_free") != NULL, "message: %s", herd_errmsg());
}

Test(cuda_memory, copies_round_trip) {
  require_gpu();
  enum { COUNT = 1001 };
  float host[COUNT], back[COUNT];
  gc_fill_uniform(host, COUNT, 1, -3, 3);
  float *a = device_alloc(sizeof host), *b = device_alloc(sizeof host);
  CUDA_OK(herd_cuda_copy_to_device(a, host, sizeof host));
  CUDA_OK(herd_cuda_copy_on_device(b, a, sizeof host));
  CUDA_OK(herd_cuda_copy_to_host(back, b, sizeof host));
  cr_expect(memcmp(host, back, sizeof host) == 0, "host -> device -> device -> host changed data");
  CUDA_OK(herd_cuda_copy_to_device(a, host, 0));  // nothing to copy
  CUDA_OK(herd_cuda_synchronize());
  herd_cuda_free(a);
  herd_cuda_free(b);
}

Test(cuda_memory, impossible_allocation_names_cudaMalloc) {
  require_gpu();
  size_t petabyte = (size_t)1 << 50;
  void *p = (void *)1;
  int rc = herd_cuda_malloc(&p, petabyte);
  cr_log_info("1 PiB: %d %s", rc, herd_errmsg());
  cr_expect_eq(rc, HERD_ENOMEM, "rc %d: %s", rc, herd_errmsg());
  cr_expect_null(p);
  cr_expect(strstr(herd_errmsg(), "cudaMalloc(1125899906842624 bytes)") != NULL, "message: %s",
            herd_errmsg());
  // the failure is not sticky: the device still works
  CUDA_OK(herd_cuda_malloc(&p, 4096));
  CUDA_OK(herd_cuda_free(p));
  CUDA_OK(herd_cuda_synchronize());
}

// A kernel writing through a pointer no allocation covers fails on the device, after the op
// returned; herd_cuda_synchronize reports it.
Test(cuda_runtime, failed_kernel_reported_by_synchronize) {
  require_gpu_async();
  float *nowhere = (float *)(uintptr_t)64;  // in the never-mapped first page
  cr_assert_eq(herd_cuda_scale(nowhere, nowhere, 2.0f, 1000), HERD_OK, "queued: %s", herd_errmsg());
  int rc = herd_cuda_synchronize();
  cr_log_info("synchronize: %d %s", rc, herd_errmsg());
  cr_expect_eq(rc, HERD_EDEVICE, "rc %d: %s", rc, herd_errmsg());
  cr_expect(strstr(herd_errmsg(), "cudaStreamSynchronize") != NULL, "message: %s", herd_errmsg());
}

Test(cuda_runtime, sync_mode_names_the_failing_kernel) {
  require_gpu();  // HERD_CUDA_SYNC=1
  float *nowhere = (float *)(uintptr_t)64;
  int rc = herd_cuda_scale(nowhere, nowhere, 2.0f, 1000);
  cr_log_info("scale: %d %s", rc, herd_errmsg());
  cr_expect_eq(rc, HERD_EDEVICE, "rc %d: %s", rc, herd_errmsg());
  cr_expect(strstr(herd_errmsg(), "kernel scale") != NULL, "message: %s", herd_errmsg());
}

// ---------------------------------------------------------------- matmul, linear

// All four transposes with alpha and beta, then beta = 0 over a NaN-filled c (not read).
static void check_matmul(int m, int n, int k, uint64_t seed) {
  twin a = twin_random((int64_t)m * k, seed, -1, 1),
       b = twin_random((int64_t)k * n, seed + 1, -1, 1);
  twin c0 = twin_random((int64_t)m * n, seed + 2, -1, 1);
  char what[128];
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      twin c = twin_of(c0.cpu, c0.n);
      herd_cpu_matmul(c.cpu, a.cpu, b.cpu, m, n, k, ta, tb, 0.7f, 0.3f);
      CUDA_OK(herd_cuda_matmul(c.gpu, a.gpu, b.gpu, m, n, k, ta, tb, 0.7f, 0.3f));
      snprintf(what, sizeof what, "matmul %dx%dx%d transpose_a=%d transpose_b=%d", m, n, k, ta, tb);
      expect_twin(what, c, REL_TOL);
      twin_free(c);
    }
  twin c = twin_fill((int64_t)m * n, NAN);
  herd_cpu_matmul(c.cpu, a.cpu, b.cpu, m, n, k, 0, 0, 1.0f, 0.0f);
  CUDA_OK(herd_cuda_matmul(c.gpu, a.gpu, b.gpu, m, n, k, 0, 0, 1.0f, 0.0f));
  snprintf(what, sizeof what, "matmul %dx%dx%d beta=0 over NaN", m, n, k);
  expect_twin(what, c, REL_TOL);
  twin_free(c), twin_free(a), twin_free(b), twin_free(c0);
}

Test(cuda_matmul, all_transposes_alpha_beta) {
  require_gpu();
  check_matmul(N, OC, C, 1);
  check_matmul(130, 67, 288, 4);
  check_matmul(1, 1, 1, 7);
}

Test(cuda_matmul, empty_inner_dimension_scales_c) {
  require_gpu();
  twin a = twin_fill(1, 0), b = twin_fill(1, 0), c = twin_random(6, 3, -1, 1);
  herd_cpu_matmul(c.cpu, a.cpu, b.cpu, 2, 3, 0, 0, 0, 1.0f, 0.5f);
  CUDA_OK(herd_cuda_matmul(c.gpu, a.gpu, b.gpu, 2, 3, 0, 0, 0, 1.0f, 0.5f));
  expect_twin("matmul k=0", c, REL_TOL);
  twin_free(a), twin_free(b), twin_free(c);
}

static void check_linear(int n, int c, int oc, int with_bias, uint64_t seed) {
  twin inp = twin_random((int64_t)n * c, seed, -1, 1);
  twin weight = twin_random((int64_t)oc * c, seed + 1, -0.5f, 0.5f);
  twin bias = twin_random(oc, seed + 2, -1, 1),
       dout = twin_random((int64_t)n * oc, seed + 3, -1, 1);
  twin out = twin_fill((int64_t)n * oc, 0);
  char what[128];
  herd_cpu_linear_forward(out.cpu, inp.cpu, weight.cpu, with_bias ? bias.cpu : NULL, n, c, oc);
  CUDA_OK(herd_cuda_linear_forward(out.gpu, inp.gpu, weight.gpu, with_bias ? bias.gpu : NULL, n, c,
                                   oc));
  snprintf(what, sizeof what, "linear %dx%dx%d bias=%d forward", n, c, oc, with_bias);
  expect_twin(what, out, REL_TOL);

  // pre-filled gradients: the kernels must add to them
  twin dinp = twin_random((int64_t)n * c, seed + 4, -1, 1);
  twin dweight = twin_random((int64_t)oc * c, seed + 5, -1, 1),
       dbias = twin_random(oc, seed + 6, -1, 1);
  herd_cpu_linear_backward(dinp.cpu, dweight.cpu, dbias.cpu, dout.cpu, inp.cpu, weight.cpu, n, c,
                           oc);
  CUDA_OK(herd_cuda_linear_backward(dinp.gpu, dweight.gpu, dbias.gpu, dout.gpu, inp.gpu, weight.gpu,
                                    n, c, oc));
  snprintf(what, sizeof what, "linear %dx%dx%d dinp (accumulated)", n, c, oc);
  expect_twin(what, dinp, REL_TOL);
  snprintf(what, sizeof what, "linear %dx%dx%d dweight (accumulated)", n, c, oc);
  expect_twin(what, dweight, REL_TOL);
  snprintf(what, sizeof what, "linear %dx%dx%d dbias (accumulated)", n, c, oc);
  expect_twin(what, dbias, REL_TOL);

  // NULL gradients are skipped: only dweight, a second time on top of the first
  herd_cpu_linear_backward(NULL, dweight.cpu, NULL, dout.cpu, inp.cpu, weight.cpu, n, c, oc);
  CUDA_OK(
      herd_cuda_linear_backward(NULL, dweight.gpu, NULL, dout.gpu, inp.gpu, weight.gpu, n, c, oc));
  snprintf(what, sizeof what, "linear %dx%dx%d dweight alone", n, c, oc);
  expect_twin(what, dweight, REL_TOL);
  twin_free(inp), twin_free(weight), twin_free(bias), twin_free(dout), twin_free(out);
  twin_free(dinp), twin_free(dweight), twin_free(dbias);
}

Test(cuda_linear, forward_backward) {
  require_gpu();
  check_linear(N, C, OC, 1, 10);
  check_linear(N, C, OC, 0, 20);
  check_linear(130, 288, 67, 1, 30);
}

// ---------------------------------------------------------------- embedding

static void check_embedding(int n, int vocab, int c, uint64_t seed) {
  itwin tokens = itwin_random(n, seed, 0, vocab);
  twin table = twin_random((int64_t)vocab * c, seed + 1, -1, 1), out = twin_fill((int64_t)n * c, 0);
  char what[128];
  cr_assert_eq(herd_cpu_embedding_forward(out.cpu, tokens.cpu, table.cpu, n, vocab, c), HERD_OK);
  CUDA_OK(herd_cuda_embedding_forward(out.gpu, tokens.gpu, table.gpu, n, vocab, c));
  snprintf(what, sizeof what, "embedding n=%d vocab=%d c=%d forward", n, vocab, c);
  expect_twin(what, out, REL_TOL);

  twin dout = twin_random((int64_t)n * c, seed + 2, -1, 1);
  twin dtable = twin_random((int64_t)vocab * c, seed + 3, -1, 1);
  float *prefill = download(dtable.gpu, dtable.n);
  herd_cpu_embedding_backward(dtable.cpu, dout.cpu, tokens.cpu, n, c);
  CUDA_OK(herd_cuda_embedding_backward(dtable.gpu, dout.gpu, tokens.gpu, n, c));
  snprintf(what, sizeof what, "embedding n=%d vocab=%d c=%d dtable (accumulated)", n, vocab, c);
  expect_twin(what, dtable, REL_TOL);
  float *first = download(dtable.gpu, dtable.n);
  cr_log_info(
      "%s: %s the CPU's bits", what,
      memcmp(first, dtable.cpu, (size_t)dtable.n * sizeof(float)) ? "differs from" : "equals");
  // deterministic: the same run again from the same gradient gives the same bits
  CUDA_OK(herd_cuda_copy_to_device(dtable.gpu, prefill, (size_t)dtable.n * sizeof(float)));
  CUDA_OK(herd_cuda_embedding_backward(dtable.gpu, dout.gpu, tokens.gpu, n, c));
  float *second = download(dtable.gpu, dtable.n);
  expect_same_bits(what, first, second, dtable.n);
  free(prefill), free(first), free(second);
  itwin_free(tokens), twin_free(table), twin_free(out), twin_free(dout), twin_free(dtable);
}

Test(cuda_embedding, forward_backward) {
  require_gpu();
  check_embedding(N, V, C, 40);
  check_embedding(2000, V, 300, 50);  // each token repeats ~38 times; rows longer than a block
}

Test(cuda_embedding, bad_token_names_position) {
  require_gpu();
  itwin tokens = itwin_random(N, 60, 0, V);
  itwin_set(&tokens, 5, V);
  itwin_set(&tokens, 9, -1);
  twin table = twin_random((int64_t)V * C, 61, -1, 1), out = twin_fill((int64_t)N * C, 7.0f);
  cr_assert_eq(herd_cpu_embedding_forward(out.cpu, tokens.cpu, table.cpu, N, V, C), HERD_EINVAL);
  char cpu_message[256];
  snprintf(cpu_message, sizeof cpu_message, "%s", herd_errmsg());
  herd_clearerr();
  int rc = herd_cuda_embedding_forward(out.gpu, tokens.gpu, table.gpu, N, V, C);
  cr_expect_eq(rc, HERD_EINVAL, "rc %d: %s", rc, herd_errmsg());
  cr_expect_str_eq(herd_errmsg(), cpu_message);
  expect_untouched("embedding output after a bad token", out, 7.0f);
  itwin_free(tokens), twin_free(table), twin_free(out);
}

// ---------------------------------------------------------------- RMSNorm

static void check_rmsnorm(int n, int c, uint64_t seed) {
  twin inp = twin_random((int64_t)n * c, seed, -2, 2),
       weight = twin_random(c, seed + 1, 0.5f, 1.5f);
  twin out = twin_fill((int64_t)n * c, 0), rstd = twin_fill(n, 0);
  char what[128];
  herd_cpu_rmsnorm_forward(out.cpu, rstd.cpu, inp.cpu, weight.cpu, n, c, 1e-5f);
  CUDA_OK(herd_cuda_rmsnorm_forward(out.gpu, rstd.gpu, inp.gpu, weight.gpu, n, c, 1e-5f));
  snprintf(what, sizeof what, "rmsnorm %dx%d out", n, c);
  expect_twin(what, out, REL_TOL);
  snprintf(what, sizeof what, "rmsnorm %dx%d rstd", n, c);
  expect_twin(what, rstd, REL_TOL);

  twin dout = twin_random((int64_t)n * c, seed + 2, -1, 1);
  twin dinp = twin_random((int64_t)n * c, seed + 3, -1, 1),
       dweight = twin_random(c, seed + 4, -1, 1);
  // both backward passes read the CPU's rstd, so they see the same input
  CUDA_OK(herd_cuda_copy_to_device(rstd.gpu, rstd.cpu, (size_t)n * sizeof(float)));
  herd_cpu_rmsnorm_backward(dinp.cpu, dweight.cpu, dout.cpu, inp.cpu, weight.cpu, rstd.cpu, n, c);
  CUDA_OK(herd_cuda_rmsnorm_backward(dinp.gpu, dweight.gpu, dout.gpu, inp.gpu, weight.gpu, rstd.gpu,
                                     n, c));
  snprintf(what, sizeof what, "rmsnorm %dx%d dinp (accumulated)", n, c);
  expect_twin(what, dinp, REL_TOL);
  snprintf(what, sizeof what, "rmsnorm %dx%d dweight (accumulated)", n, c);
  expect_twin(what, dweight, REL_TOL);

  herd_cpu_rmsnorm_backward(NULL, dweight.cpu, dout.cpu, inp.cpu, weight.cpu, rstd.cpu, n, c);
  CUDA_OK(
      herd_cuda_rmsnorm_backward(NULL, dweight.gpu, dout.gpu, inp.gpu, weight.gpu, rstd.gpu, n, c));
  snprintf(what, sizeof what, "rmsnorm %dx%d dweight alone", n, c);
  expect_twin(what, dweight, REL_TOL);
  twin_free(inp), twin_free(weight), twin_free(out), twin_free(rstd), twin_free(dout);
  twin_free(dinp), twin_free(dweight);
}

Test(cuda_rmsnorm, forward_backward) {
  require_gpu();
  check_rmsnorm(N, C, 70);
  check_rmsnorm(5, 1000, 80);
}

// ---------------------------------------------------------------- SwiGLU

Test(cuda_swiglu, forward_backward) {
  require_gpu();
  const int64_t n = (int64_t)N * C;
  twin gate = twin_random(n, 90, -6, 6), up = twin_random(n, 91, -2, 2), out = twin_fill(n, 0);
  herd_cpu_swiglu_forward(out.cpu, gate.cpu, up.cpu, n);
  CUDA_OK(herd_cuda_swiglu_forward(out.gpu, gate.gpu, up.gpu, n));
  expect_twin("swiglu forward", out, REL_TOL);

  twin dout = twin_random(n, 92, -1, 1);
  twin dgate = twin_random(n, 93, -1, 1), dup = twin_random(n, 94, -1, 1);
  herd_cpu_swiglu_backward(dgate.cpu, dup.cpu, dout.cpu, gate.cpu, up.cpu, n);
  CUDA_OK(herd_cuda_swiglu_backward(dgate.gpu, dup.gpu, dout.gpu, gate.gpu, up.gpu, n));
  expect_twin("swiglu dgate (accumulated)", dgate, REL_TOL);
  expect_twin("swiglu dup (accumulated)", dup, REL_TOL);
  herd_cpu_swiglu_backward(NULL, dup.cpu, dout.cpu, gate.cpu, up.cpu, n);
  CUDA_OK(herd_cuda_swiglu_backward(NULL, dup.gpu, dout.gpu, gate.gpu, up.gpu, n));
  expect_twin("swiglu dup alone", dup, REL_TOL);
  twin_free(gate), twin_free(up), twin_free(out), twin_free(dout), twin_free(dgate), twin_free(dup);
}

// ---------------------------------------------------------------- softmax

static void check_softmax(int n, int c, uint64_t seed) {
  twin inp = twin_random((int64_t)n * c, seed, -8, 8), out = twin_fill((int64_t)n * c, 0);
  char what[128];
  herd_cpu_softmax_forward(out.cpu, inp.cpu, n, c);
  CUDA_OK(herd_cuda_softmax_forward(out.gpu, inp.gpu, n, c));
  snprintf(what, sizeof what, "softmax %dx%d forward", n, c);
  expect_twin(what, out, REL_TOL);

  twin in_place = twin_of(inp.cpu, inp.n);
  herd_cpu_softmax_forward(in_place.cpu, in_place.cpu, n, c);
  CUDA_OK(herd_cuda_softmax_forward(in_place.gpu, in_place.gpu, n, c));
  snprintf(what, sizeof what, "softmax %dx%d forward in place", n, c);
  expect_twin(what, in_place, REL_TOL);

  twin dout = twin_random((int64_t)n * c, seed + 1, -1, 1),
       dinp = twin_random((int64_t)n * c, seed + 2, -1, 1);
  CUDA_OK(herd_cuda_copy_to_device(out.gpu, out.cpu, (size_t)out.n * sizeof(float)));
  herd_cpu_softmax_backward(dinp.cpu, dout.cpu, out.cpu, n, c);
  CUDA_OK(herd_cuda_softmax_backward(dinp.gpu, dout.gpu, out.gpu, n, c));
  snprintf(what, sizeof what, "softmax %dx%d dinp (accumulated)", n, c);
  expect_twin(what, dinp, REL_TOL);
  twin_free(inp), twin_free(out), twin_free(in_place), twin_free(dout), twin_free(dinp);
}

Test(cuda_softmax, forward_backward) {
  require_gpu();
  check_softmax(N, V, 100);
  check_softmax(3, 3001, 110);
}

// ---------------------------------------------------------------- weighted NLL

// Targets in [0, v) with every 7th row ignored (-1); weights in [-1, 2) (PPO advantages).
static void check_weighted_nll(int n, int v, uint64_t seed) {
  twin logits = twin_random((int64_t)n * v, seed, -5, 5), weights = twin_random(n, seed + 1, -1, 2);
  itwin targets = itwin_random(n, seed + 2, 0, v);
  for (int i = 0; i < n; i += 7) itwin_set(&targets, i, -1);
  const float dloss = 0.37f;
  char what[128];

  twin losses = twin_fill(n, 0);
  cr_assert_eq(
      herd_cpu_weighted_nll(losses.cpu, NULL, logits.cpu, targets.cpu, weights.cpu, dloss, n, v),
      HERD_OK);
  CUDA_OK(
      herd_cuda_weighted_nll(losses.gpu, NULL, logits.gpu, targets.gpu, weights.gpu, dloss, n, v));
  snprintf(what, sizeof what, "weighted_nll %dx%d losses (forward only)", n, v);
  expect_twin(what, losses, REL_TOL);

  twin losses2 = twin_fill(n, 0), dlogits = twin_fill((int64_t)n * v, 5.0f);  // written, not added
  cr_assert_eq(herd_cpu_weighted_nll(losses2.cpu, dlogits.cpu, logits.cpu, targets.cpu, weights.cpu,
                                     dloss, n, v),
               HERD_OK);
  CUDA_OK(herd_cuda_weighted_nll(losses2.gpu, dlogits.gpu, logits.gpu, targets.gpu, weights.gpu,
                                 dloss, n, v));
  snprintf(what, sizeof what, "weighted_nll %dx%d losses", n, v);
  expect_twin(what, losses2, REL_TOL);
  snprintf(what, sizeof what, "weighted_nll %dx%d dlogits", n, v);
  expect_twin(what, dlogits, REL_TOL);

  twin in_place = twin_of(logits.cpu, logits.n), losses3 = twin_fill(n, 0);
  cr_assert_eq(herd_cpu_weighted_nll(losses3.cpu, in_place.cpu, in_place.cpu, targets.cpu,
                                     weights.cpu, dloss, n, v),
               HERD_OK);
  CUDA_OK(herd_cuda_weighted_nll(losses3.gpu, in_place.gpu, in_place.gpu, targets.gpu, weights.gpu,
                                 dloss, n, v));
  snprintf(what, sizeof what, "weighted_nll %dx%d losses (in place)", n, v);
  expect_twin(what, losses3, REL_TOL);
  snprintf(what, sizeof what, "weighted_nll %dx%d dlogits (in place)", n, v);
  expect_twin(what, in_place, REL_TOL);
  twin_free(logits), twin_free(weights), itwin_free(targets), twin_free(losses);
  twin_free(losses2), twin_free(dlogits), twin_free(in_place), twin_free(losses3);
}

Test(cuda_weighted_nll, forward_backward) {
  require_gpu();
  check_weighted_nll(N, V, 120);
  check_weighted_nll(7, 3001, 130);
}

Test(cuda_weighted_nll, bad_target_names_row) {
  require_gpu();
  twin logits = twin_random((int64_t)N * V, 140, -5, 5), weights = twin_fill(N, 1.0f);
  itwin targets = itwin_random(N, 141, 0, V);
  itwin_set(&targets, 3, V);
  itwin_set(&targets, 8, -2);
  twin losses = twin_fill(N, 7.0f);
  float *logits_before = download(logits.gpu, logits.n);
  cr_assert_eq(herd_cpu_weighted_nll(losses.cpu, logits.cpu, logits.cpu, targets.cpu, weights.cpu,
                                     1.0f, N, V),
               HERD_EINVAL);
  char cpu_message[256];
  snprintf(cpu_message, sizeof cpu_message, "%s", herd_errmsg());
  herd_clearerr();
  int rc = herd_cuda_weighted_nll(losses.gpu, logits.gpu, logits.gpu, targets.gpu, weights.gpu,
                                  1.0f, N, V);
  cr_expect_eq(rc, HERD_EINVAL, "rc %d: %s", rc, herd_errmsg());
  cr_expect_str_eq(herd_errmsg(), cpu_message);
  expect_untouched("weighted_nll losses after a bad target", losses, 7.0f);
  float *logits_after = download(logits.gpu, logits.n);
  cr_expect(memcmp(logits_before, logits_after, (size_t)logits.n * sizeof(float)) == 0,
            "in-place logits were written before the target check");
  free(logits_before), free(logits_after);
  twin_free(logits), twin_free(weights), itwin_free(targets), twin_free(losses);
}

// ---------------------------------------------------------------- scalar head

enum { P = 11 };

Test(cuda_scalar_head, forward_backward) {
  require_gpu();
  twin hidden = twin_random((int64_t)N * C, 150, -1, 1), weight = twin_random(C, 151, -1, 1);
  itwin positions = itwin_random(P, 152, 0, N);
  itwin_set(&positions, 4, positions.cpu[2]);  // positions may repeat
  itwin_set(&positions, 9, positions.cpu[2]);
  twin out = twin_fill(P, 0);
  cr_assert_eq(
      herd_cpu_scalar_head_forward(out.cpu, hidden.cpu, weight.cpu, 0.25f, positions.cpu, P, N, C),
      HERD_OK);
  CUDA_OK(herd_cuda_scalar_head_forward(out.gpu, hidden.gpu, weight.gpu, 0.25f, positions.gpu, P, N,
                                        C));
  expect_twin("scalar_head forward", out, REL_TOL);

  twin dout = twin_random(P, 153, -1, 1), dhidden = twin_random((int64_t)N * C, 154, -1, 1);
  twin dweight = twin_random(C, 155, -1, 1), dbias = twin_fill(1, 0.5f);
  float *prefill = download(dhidden.gpu, dhidden.n);
  herd_cpu_scalar_head_backward(dhidden.cpu, dweight.cpu, dbias.cpu, dout.cpu, hidden.cpu,
                                weight.cpu, positions.cpu, P, C);
  CUDA_OK(herd_cuda_scalar_head_backward(dhidden.gpu, dweight.gpu, dbias.gpu, dout.gpu, hidden.gpu,
                                         weight.gpu, positions.gpu, P, C));
  expect_twin("scalar_head dhidden (accumulated)", dhidden, REL_TOL);
  expect_twin("scalar_head dweight (accumulated)", dweight, REL_TOL);
  expect_twin("scalar_head dbias (accumulated)", dbias, REL_TOL);

  float *first = download(dhidden.gpu, dhidden.n);
  CUDA_OK(herd_cuda_copy_to_device(dhidden.gpu, prefill, (size_t)dhidden.n * sizeof(float)));
  CUDA_OK(herd_cuda_scalar_head_backward(dhidden.gpu, NULL, NULL, dout.gpu, hidden.gpu, weight.gpu,
                                         positions.gpu, P, C));
  float *second = download(dhidden.gpu, dhidden.n);
  expect_same_bits("scalar_head dhidden", first, second, dhidden.n);
  free(prefill), free(first), free(second);
  twin_free(hidden), twin_free(weight), itwin_free(positions), twin_free(out), twin_free(dout);
  twin_free(dhidden), twin_free(dweight), twin_free(dbias);
}

Test(cuda_scalar_head, bad_position_names_index) {
  require_gpu();
  twin hidden = twin_random((int64_t)N * C, 160, -1, 1), weight = twin_random(C, 161, -1, 1);
  itwin positions = itwin_random(P, 162, 0, N);
  itwin_set(&positions, 4, N);
  twin out = twin_fill(P, 7.0f);
  cr_assert_eq(
      herd_cpu_scalar_head_forward(out.cpu, hidden.cpu, weight.cpu, 0, positions.cpu, P, N, C),
      HERD_EINVAL);
  char cpu_message[256];
  snprintf(cpu_message, sizeof cpu_message, "%s", herd_errmsg());
  herd_clearerr();
  int rc =
      herd_cuda_scalar_head_forward(out.gpu, hidden.gpu, weight.gpu, 0, positions.gpu, P, N, C);
  cr_expect_eq(rc, HERD_EINVAL, "rc %d: %s", rc, herd_errmsg());
  cr_expect_str_eq(herd_errmsg(), cpu_message);
  expect_untouched("scalar_head output after a bad position", out, 7.0f);
  twin_free(hidden), twin_free(weight), itwin_free(positions), twin_free(out);
}

// ---------------------------------------------------------------- element-wise

Test(cuda_eltwise, forward_backward) {
  require_gpu();
  const int64_t n = 100003;  // several blocks and a partial one
  twin a = twin_random(n, 170, -2, 2), b = twin_random(n, 171, -2, 2),
       dout = twin_random(n, 172, -1, 1);
  twin out = twin_fill(n, 0);
  herd_cpu_add(out.cpu, a.cpu, b.cpu, n);
  CUDA_OK(herd_cuda_add(out.gpu, a.gpu, b.gpu, n));
  expect_twin("add", out, REL_TOL);
  herd_cpu_mul(out.cpu, a.cpu, b.cpu, n);
  CUDA_OK(herd_cuda_mul(out.gpu, a.gpu, b.gpu, n));
  expect_twin("mul", out, REL_TOL);
  herd_cpu_scale(out.cpu, a.cpu, -1.7f, n);
  CUDA_OK(herd_cuda_scale(out.gpu, a.gpu, -1.7f, n));
  expect_twin("scale", out, REL_TOL);
  herd_cpu_scale(out.cpu, out.cpu, 0.3f, n);  // in place
  CUDA_OK(herd_cuda_scale(out.gpu, out.gpu, 0.3f, n));
  expect_twin("scale in place", out, REL_TOL);

  twin da = twin_random(n, 173, -1, 1), db = twin_random(n, 174, -1, 1);
  herd_cpu_add_backward(da.cpu, db.cpu, dout.cpu, n);
  CUDA_OK(herd_cuda_add_backward(da.gpu, db.gpu, dout.gpu, n));
  expect_twin("add_backward da (accumulated)", da, REL_TOL);
  expect_twin("add_backward db (accumulated)", db, REL_TOL);
  herd_cpu_mul_backward(da.cpu, db.cpu, dout.cpu, a.cpu, b.cpu, n);
  CUDA_OK(herd_cuda_mul_backward(da.gpu, db.gpu, dout.gpu, a.gpu, b.gpu, n));
  expect_twin("mul_backward da (accumulated)", da, REL_TOL);
  expect_twin("mul_backward db (accumulated)", db, REL_TOL);
  herd_cpu_mul_backward(da.cpu, NULL, dout.cpu, a.cpu, b.cpu, n);
  CUDA_OK(herd_cuda_mul_backward(da.gpu, NULL, dout.gpu, a.gpu, b.gpu, n));
  expect_twin("mul_backward da alone", da, REL_TOL);
  herd_cpu_add_backward(NULL, db.cpu, dout.cpu, n);
  CUDA_OK(herd_cuda_add_backward(NULL, db.gpu, dout.gpu, n));
  expect_twin("add_backward db alone", db, REL_TOL);
  herd_cpu_scale_backward(da.cpu, dout.cpu, -1.7f, n);
  CUDA_OK(herd_cuda_scale_backward(da.gpu, dout.gpu, -1.7f, n));
  expect_twin("scale_backward da (accumulated)", da, REL_TOL);
  twin_free(a), twin_free(b), twin_free(dout), twin_free(out), twin_free(da), twin_free(db);
}

// ---------------------------------------------------------------- global norm

Test(cuda_global_norm, matches_cpu_and_repeats) {
  require_gpu();
  enum { COUNT = 4 };
  const int64_t lengths[COUNT] = {1000003, 45, 0, 4097};
  twin arrays[COUNT];
  const float *cpu[COUNT], *gpu[COUNT];
  for (int i = 0; i < COUNT; i++) {
    arrays[i] = twin_random(lengths[i], 180 + (uint64_t)i, -1, 1);
    cpu[i] = arrays[i].cpu;
    gpu[i] = arrays[i].gpu;
  }
  double want = herd_cpu_global_norm(cpu, lengths, COUNT), got = -1, again = -1;
  CUDA_OK(herd_cuda_global_norm(&got, gpu, lengths, COUNT));
  CUDA_OK(herd_cuda_global_norm(&again, gpu, lengths, COUNT));
  // both sum exact f32 squares in double: only the order of additions differs
  double err = fabs(got - want) / want;
  cr_log_info("global_norm: gpu %.17g cpu %.17g, relative error %.3g", got, want, err);
  cr_expect(err <= 1e-12, "global_norm: gpu %.17g, cpu %.17g (relative error %.3g)", got, want,
            err);
  cr_expect(memcmp(&got, &again, sizeof got) == 0, "global_norm: %.17g then %.17g", got, again);
  for (int i = 0; i < COUNT; i++) twin_free(arrays[i]);
}

Test(cuda_sum, matches_cpu_and_repeats) {
  require_gpu();
  const int64_t lengths[] = {1, 45, 4097, 1000003};
  for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++) {
    twin a = twin_random(lengths[i], 190 + (uint64_t)i, -1, 1);
    double want = herd_cpu_sum(a.cpu, lengths[i]), got = -1, again = -1;
    CUDA_OK(herd_cuda_sum(&got, a.gpu, lengths[i]));
    CUDA_OK(herd_cuda_sum(&again, a.gpu, lengths[i]));
    // exact f32 values summed in double: only the order of additions differs; the scale is the
    // sum of magnitudes (the sum itself can be near 0)
    double magnitude = 0;
    for (int64_t j = 0; j < lengths[i]; j++) magnitude += fabs(a.cpu[j]);
    cr_expect(fabs(got - want) <= 1e-12 * magnitude, "sum of %lld: gpu %.17g, cpu %.17g",
              (long long)lengths[i], got, want);
    cr_expect(memcmp(&got, &again, sizeof got) == 0, "sum: %.17g then %.17g", got, again);
    twin_free(a);
  }
  double zero = -1;
  CUDA_OK(herd_cuda_sum(&zero, NULL, 0));
  cr_expect_eq(zero, 0.0);
}

// ---------------------------------------------------------------- rope

static void check_rope(int n, int heads, int head_dim, uint64_t seed) {
  const int64_t count = (int64_t)n * heads * head_dim;
  twin inp = twin_random(count, seed, -1, 1), out = twin_fill(count, 0);
  itwin positions = itwin_random(n, seed + 1, 0, 4096);
  char what[128];
  herd_cpu_rope_forward(out.cpu, inp.cpu, positions.cpu, n, heads, head_dim, 10000.0f);
  CUDA_OK(herd_cuda_rope_forward(out.gpu, inp.gpu, positions.gpu, n, heads, head_dim, 10000.0f));
  snprintf(what, sizeof what, "rope n=%d heads=%d head_dim=%d forward", n, heads, head_dim);
  expect_twin(what, out, REL_TOL);

  twin in_place = twin_of(inp.cpu, count);
  herd_cpu_rope_forward(in_place.cpu, in_place.cpu, positions.cpu, n, heads, head_dim, 10000.0f);
  CUDA_OK(herd_cuda_rope_forward(in_place.gpu, in_place.gpu, positions.gpu, n, heads, head_dim,
                                 10000.0f));
  snprintf(what, sizeof what, "rope n=%d heads=%d head_dim=%d forward in place", n, heads,
           head_dim);
  expect_twin(what, in_place, REL_TOL);

  twin dout = twin_random(count, seed + 2, -1, 1), dinp = twin_random(count, seed + 3, -1, 1);
  herd_cpu_rope_backward(dinp.cpu, dout.cpu, positions.cpu, n, heads, head_dim, 10000.0f);
  CUDA_OK(herd_cuda_rope_backward(dinp.gpu, dout.gpu, positions.gpu, n, heads, head_dim, 10000.0f));
  snprintf(what, sizeof what, "rope n=%d heads=%d head_dim=%d dinp (accumulated)", n, heads,
           head_dim);
  expect_twin(what, dinp, REL_TOL);
  twin_free(inp), twin_free(out), itwin_free(positions), twin_free(in_place), twin_free(dout);
  twin_free(dinp);
}

Test(cuda_rope, forward_backward) {
  require_gpu();
  check_rope(N, 3, 18, 190);
  check_rope(9, 5, 128, 200);  // Llama's head_dim; 5 * 64 pairs per row: more than a block
}

Test(cuda_rope, head_dim_too_large) {
  require_gpu();
  int rc =
      herd_cuda_rope_forward(NULL, NULL, NULL, 1, 1, HERD_CUDA_ROPE_MAX_HEAD_DIM + 2, 10000.0f);
  cr_expect_eq(rc, HERD_EINVAL, "rc %d: %s", rc, herd_errmsg());
}

// ---------------------------------------------------------------- AdamW

// A tiny model whose every part exists (untied LM head, scalar head).
static herd_model *tiny_model(void) {
  herd_model_config config = {.dim = 12,
                              .n_layers = 2,
                              .n_heads = 2,
                              .n_kv_heads = 1,
                              .hidden_dim = 20,
                              .vocab_size = 17,
                              .max_seq_len = 8,
                              .norm_eps = 1e-5f,
                              .rope_theta = 10000.0f,
                              .tie_embeddings = 0,
                              .lm_head = 1,
                              .scalar_head = 1};
  herd_model *model = NULL;
  cr_assert_eq(herd_model_new(&model, &config, 1, 8), HERD_OK, "%s", herd_errmsg());
  herd_model_init(model, 7);
  return model;
}

enum { TENSORS = 13, FIRST_HEAD = 11 };

// The model's tensors as ranges of its flat buffer, in buffer order; RMSNorm weights do not
// decay (model.h: herd_adamw.weight_decay).
static void model_ranges(herd_model *model, herd_cuda_param_range *ranges) {
  herd_model_params p;
  herd_model_param_slices(model, &p, NULL);
  size_t count;
  const float *base = herd_model_param_buffer(model, &count);
  const float *starts[TENSORS] = {p.embed,      p.attn_norm, p.wq,     p.wk,   p.wv,
                                  p.wo,         p.mlp_norm,  p.w_gate, p.w_up, p.w_down,
                                  p.final_norm, p.lm_head,   p.score};
  static const int decays[TENSORS] = {1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1};
  for (int i = 0; i < TENSORS; i++) {
    const float *end = i + 1 < TENSORS ? starts[i + 1] : base + count;
    ranges[i] = (herd_cuda_param_range){starts[i] - base, end - starts[i], decays[i]};
  }
}

typedef struct adam_state {
  twin params, grads, m, v;
} adam_state;

static adam_state adam_state_of(herd_model *model) {
  size_t count;
  float *second;
  float *first = herd_model_adam_moments(model, &second);
  const float *params = herd_model_param_buffer(model, &count);
  adam_state s = {twin_of(params, (int64_t)count),
                  twin_of(herd_model_grad_buffer(model, NULL), (int64_t)count),
                  twin_of(first, (int64_t)count), twin_of(second, (int64_t)count)};
  return s;
}

static void adam_state_free(adam_state s) {
  twin_free(s.params), twin_free(s.grads), twin_free(s.m), twin_free(s.v);
}

// One herd_model_step on the CPU against global norm + clip + herd_cuda_adamw on the device,
// over ranges[first..TENSORS) (the trainable ones), from the model's current state and new
// random gradients. Compares the update (params after - before), m, v and the norm.
static void check_adamw_step(herd_model *model, const herd_cuda_param_range *ranges, int first,
                             int64_t step, uint64_t seed) {
  size_t count;
  float *grads = herd_model_grad_buffer(model, &count);
  gc_fill_uniform(grads, (int64_t)count, seed, -1, 1);
  for (int i = 0; i < first; i++)  // frozen parts keep a zero gradient (set_trainable)
    memset(grads + ranges[i].offset, 0, (size_t)ranges[i].size * sizeof(float));
  adam_state s = adam_state_of(model);
  float *before = malloc(count * sizeof(float));
  memcpy(before, s.params.cpu, count * sizeof(float));
  const herd_adamw opt = {.lr = 0.05f,
                          .beta1 = 0.9f,
                          .beta2 = 0.95f,
                          .eps = 1e-8f,
                          .weight_decay = 0.1f,
                          .grad_clip = 1.0f};

  float cpu_norm = 0;
  cr_assert_eq(herd_model_step(model, &opt, &cpu_norm), HERD_OK, "%s", herd_errmsg());
  const float *arrays[TENSORS];
  int64_t lengths[TENSORS];
  for (int i = first; i < TENSORS; i++) {
    arrays[i - first] = s.grads.gpu + ranges[i].offset;
    lengths[i - first] = ranges[i].size;
  }
  double norm = 0;
  CUDA_OK(herd_cuda_global_norm(&norm, arrays, lengths, TENSORS - first));
  cr_expect(fabs((float)norm - cpu_norm) <= 1e-6 * cpu_norm,
            "step %lld: gradient norm %.9g, cpu %.9g", (long long)step, norm, (double)cpu_norm);
  // herd_model_step's clipping rule (clipping is active here: the norm is far above 1)
  float clip = opt.grad_clip > 0 && norm > opt.grad_clip ? (float)(opt.grad_clip / norm) : 1;
  CUDA_OK(herd_cuda_adamw(s.params.gpu, s.grads.gpu, s.m.gpu, s.v.gpu, ranges + first,
                          TENSORS - first, &opt, step, clip));

  float *got = download(s.params.gpu, (int64_t)count), *second;
  float *want = herd_model_param_buffer(model, NULL);
  float *got_delta = malloc(count * sizeof(float)), *want_delta = malloc(count * sizeof(float));
  for (size_t i = 0; i < count; i++) {
    // updates are ~lr = 0.05 and weights at most ~1: the subtraction's rounding is < 1e-6
    got_delta[i] = got[i] - before[i];
    want_delta[i] = want[i] - before[i];
  }
  char what[96];
  snprintf(what, sizeof what, "adamw step %lld (trainable from tensor %d): update", (long long)step,
           first);
  expect_close(what, got_delta, want_delta, (int64_t)count, REL_TOL);
  float *first_moment = herd_model_adam_moments(model, &second);
  float *m = download(s.m.gpu, (int64_t)count), *v = download(s.v.gpu, (int64_t)count);
  snprintf(what, sizeof what, "adamw step %lld (trainable from tensor %d): m", (long long)step,
           first);
  expect_close(what, m, first_moment, (int64_t)count, REL_TOL);
  snprintf(what, sizeof what, "adamw step %lld (trainable from tensor %d): v", (long long)step,
           first);
  expect_close(what, v, second, (int64_t)count, REL_TOL);
  // the model moves on from the GPU's state, so the next step compares like with like
  memcpy(herd_model_param_buffer(model, NULL), got, count * sizeof(float));
  memcpy(first_moment, m, count * sizeof(float));
  memcpy(second, v, count * sizeof(float));
  free(before), free(got), free(got_delta), free(want_delta), free(m), free(v);
  adam_state_free(s);
}

Test(cuda_adamw, matches_model_step) {
  require_gpu();
  herd_model *model = tiny_model();
  herd_cuda_param_range ranges[TENSORS];
  model_ranges(model, ranges);
  check_adamw_step(model, ranges, 0, 1, 210);  // bias corrections of step 1
  check_adamw_step(model, ranges, 0, 2, 211);  // moments carried over, step 2 corrections
  herd_model_set_trainable(model, 0, 1, 1);    // trunk frozen: the heads alone move
  check_adamw_step(model, ranges, FIRST_HEAD, 3, 212);
  herd_model_free(model);
}

// ---------------------------------------------------------------- bf16

static uint32_t xorshift32(uint32_t *state) {
  uint32_t x = *state;
  x ^= x << 13, x ^= x >> 17, x ^= x << 5;
  return *state = x;
}

Test(cuda_bf16, conversions_match_cpu_bits) {
  require_gpu();
  enum { RANDOM = 200000, SPECIAL = 12 };
  const uint32_t special[SPECIAL] = {
      0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u,  // zeros, infinities
      0x7fc00001u, 0x7f800001u, 0xffa12345u,               // NaNs (quiet, signalling)
      0x3f808000u, 0x3f818000u,                            // ties: to even down, to even up
      0x7f7fffffu, 0x00000001u, 0x807fffffu};              // largest, subnormals
  const int64_t n = RANDOM + SPECIAL;
  float *in = malloc((size_t)n * sizeof(float));
  uint32_t state = 12345;
  for (int64_t i = 0; i < n; i++) {
    uint32_t bits = i < SPECIAL ? special[i] : xorshift32(&state);
    memcpy(&in[i], &bits, sizeof bits);
  }
  twin f32 = twin_of(in, n);
  uint16_t *bf16_gpu = device_alloc((size_t)n * sizeof(uint16_t));
  uint16_t *got = malloc((size_t)n * sizeof(uint16_t));
  CUDA_OK(herd_cuda_f32_to_bf16(bf16_gpu, f32.gpu, n));
  CUDA_OK(herd_cuda_copy_to_host(got, bf16_gpu, (size_t)n * sizeof(uint16_t)));
  for (int64_t i = 0; i < n; i++) {
    uint16_t want = herd_f32_to_bf16(in[i]);
    if (got[i] != want) {
      uint32_t bits;
      memcpy(&bits, &in[i], sizeof bits);
      cr_expect(0, "f32_to_bf16(0x%08x) = 0x%04x, cpu 0x%04x", bits, got[i], want);
      break;
    }
  }

  // every bf16 value back to f32
  enum { ALL = 65536 };
  uint16_t *all = malloc(ALL * sizeof(uint16_t));
  for (int i = 0; i < ALL; i++) all[i] = (uint16_t)i;
  uint16_t *all_gpu = device_alloc(ALL * sizeof(uint16_t));
  float *back_gpu = device_alloc(ALL * sizeof(float)), *back = malloc(ALL * sizeof(float));
  CUDA_OK(herd_cuda_copy_to_device(all_gpu, all, ALL * sizeof(uint16_t)));
  CUDA_OK(herd_cuda_bf16_to_f32(back_gpu, all_gpu, ALL));
  CUDA_OK(herd_cuda_copy_to_host(back, back_gpu, ALL * sizeof(float)));
  for (int i = 0; i < ALL; i++) {
    float want = herd_bf16_to_f32((uint16_t)i);
    if (memcmp(&back[i], &want, sizeof want) != 0) {
      cr_expect(0, "bf16_to_f32(0x%04x) = %.9g, cpu %.9g", i, (double)back[i], (double)want);
      break;
    }
  }
  free(in), free(got), free(all), free(back);
  twin_free(f32);
  herd_cuda_free(bf16_gpu), herd_cuda_free(all_gpu), herd_cuda_free(back_gpu);
}

// Values rounded to bf16, on the host as f32 and on the device as bf16 bits.
typedef struct bf16_twin {
  float *cpu;
  uint16_t *gpu;
  int64_t n;
} bf16_twin;

static bf16_twin bf16_random(int64_t n, uint64_t seed) {
  bf16_twin t = {malloc((size_t)n * sizeof(float)), device_alloc((size_t)n * sizeof(uint16_t)), n};
  uint16_t *bits = malloc((size_t)n * sizeof(uint16_t));
  gc_fill_uniform(t.cpu, n, seed, -1, 1);
  for (int64_t i = 0; i < n; i++) {
    bits[i] = herd_f32_to_bf16(t.cpu[i]);
    t.cpu[i] = herd_bf16_to_f32(bits[i]);
  }
  CUDA_OK(herd_cuda_copy_to_device(t.gpu, bits, (size_t)n * sizeof(uint16_t)));
  free(bits);
  return t;
}

static void bf16_free(bf16_twin t) {
  free(t.cpu);
  herd_cuda_free(t.gpu);
}

// Tolerances of the bf16 matmul against herd_cpu_matmul over the same (bf16-rounded) values.
// Products of two bf16 values (8 significant bits each) are exact in f32, and cuBLASLt sums them
// in f32 (CUBLAS_COMPUTE_32F), so with an f32 c the result differs from the CPU's f32 sgemm only
// by summation order (~sqrt(k) * 2^-24 relative, 1e-6 here) and by the tensor cores' f32 adders,
// which truncate instead of rounding (Fasi et al. 2021): at most k * 2^-23 of the largest term,
// about 2e-5 of ||c|| for k <= 288 with inputs in [-1, 1]. BF16_F32_TOL = 1e-4 covers that
// with a margin while any layout or transpose mistake gives errors of order 1.
// With a bf16 c the result is rounded once more to 8 significant bits: at most half a bf16 ulp,
// under 2^-8 of each element, so the norm-wise error stays below 2^-8 = 3.9e-3 plus the f32
// error above: BF16_BF16_TOL = 4e-3.
#define BF16_F32_TOL 1e-4
#define BF16_BF16_TOL 4e-3

static void check_matmul_bf16(int m, int n, int k, uint64_t seed) {
  bf16_twin a = bf16_random((int64_t)m * k, seed), b = bf16_random((int64_t)k * n, seed + 1);
  bf16_twin c0 = bf16_random((int64_t)m * n, seed + 2);  // bf16 values: exact in either c dtype
  float *want = malloc((size_t)m * n * sizeof(float)), *got = malloc((size_t)m * n * sizeof(float));
  float *c_f32 = device_alloc((size_t)m * n * sizeof(float));
  uint16_t *c_bf16 = device_alloc((size_t)m * n * sizeof(uint16_t));
  char what[160];
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      memcpy(want, c0.cpu, (size_t)m * n * sizeof(float));
      herd_cpu_matmul(want, a.cpu, b.cpu, m, n, k, ta, tb, 0.7f, 0.3f);

      CUDA_OK(herd_cuda_copy_to_device(c_f32, c0.cpu, (size_t)m * n * sizeof(float)));
      CUDA_OK(herd_cuda_matmul_bf16(c_f32, HERD_F32, a.gpu, b.gpu, m, n, k, ta, tb, 0.7f, 0.3f));
      CUDA_OK(herd_cuda_copy_to_host(got, c_f32, (size_t)m * n * sizeof(float)));
      snprintf(what, sizeof what, "matmul_bf16 %dx%dx%d transpose_a=%d transpose_b=%d, f32 c", m, n,
               k, ta, tb);
      expect_close(what, got, want, (int64_t)m * n, BF16_F32_TOL);

      CUDA_OK(herd_cuda_copy_on_device(c_bf16, c0.gpu, (size_t)m * n * sizeof(uint16_t)));
      CUDA_OK(herd_cuda_matmul_bf16(c_bf16, HERD_BF16, a.gpu, b.gpu, m, n, k, ta, tb, 0.7f, 0.3f));
      CUDA_OK(herd_cuda_bf16_to_f32(c_f32, c_bf16, (int64_t)m * n));
      CUDA_OK(herd_cuda_copy_to_host(got, c_f32, (size_t)m * n * sizeof(float)));
      snprintf(what, sizeof what, "matmul_bf16 %dx%dx%d transpose_a=%d transpose_b=%d, bf16 c", m,
               n, k, ta, tb);
      expect_close(what, got, want, (int64_t)m * n, BF16_BF16_TOL);
    }
  free(want), free(got);
  herd_cuda_free(c_f32), herd_cuda_free(c_bf16);
  bf16_free(a), bf16_free(b), bf16_free(c0);
}

// Leading dimensions that are multiples of 8 elements (16 bytes): tensor-core friendly.
Test(cuda_matmul_bf16, aligned_shapes) {
  require_gpu();
  check_matmul_bf16(64, 48, 40, 220);
  check_matmul_bf16(128, 96, 288, 230);
}

// Odd leading dimensions: cuBLASLt must pick kernels that accept them.
Test(cuda_matmul_bf16, odd_shapes) {
  require_gpu();
  check_matmul_bf16(N, OC, C, 240);
  check_matmul_bf16(130, 67, 288, 250);
}

Test(cuda_matmul_bf16, rejects_other_c_dtypes) {
  require_gpu();
  int rc = herd_cuda_matmul_bf16(NULL, HERD_I32, NULL, NULL, 2, 2, 2, 0, 0, 1.0f, 0.0f);
  cr_expect_eq(rc, HERD_EINVAL, "rc %d: %s", rc, herd_errmsg());
}
