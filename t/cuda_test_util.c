// Helpers shared by the CUDA tests (see cuda_test_util.h).
#include "cuda_test_util.h"

#include <stdlib.h>
#include <string.h>

#include "../kernels/cuda.h"

void skip_without_gpu(void) {
  if (herd_cuda_device_count() > 0) return;
  const char *expect = getenv("HERD_EXPECT_GPU");
  if (expect && strcmp(expect, "1") == 0) {
    int rc = herd_cuda_synchronize();  // creates the stream: CUDA says what is missing
    cr_assert_fail("HERD_EXPECT_GPU=1 but herd sees no CUDA device (%d: %s)", rc, herd_errmsg());
  }
  cr_skip_test("no CUDA device");
}

void require_gpu(void) {
  setenv("HERD_CUDA_SYNC", "1", 1);
  skip_without_gpu();
}

void require_gpu_async(void) {
  unsetenv("HERD_CUDA_SYNC");
  skip_without_gpu();
}

void *device_alloc(size_t bytes) {
  void *p = NULL;
  CUDA_OK(herd_cuda_malloc(&p, bytes > 0 ? bytes : 1));
  return p;
}

float *download(const float *gpu, int64_t n) {
  float *host = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  cr_assert_not_null(host, "out of host memory");
  CUDA_OK(herd_cuda_copy_to_host(host, gpu, (size_t)n * sizeof(float)));
  return host;
}

void expect_same_bits(const char *what, const float *a, const float *b, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (memcmp(&a[i], &b[i], sizeof *a) != 0) {
      cr_expect(0, "%s: run 1 and run 2 differ at [%lld]: %.9g vs %.9g", what, (long long)i,
                (double)a[i], (double)b[i]);
      return;
    }
}
