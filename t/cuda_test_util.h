// defines: CUDA_OK, skip_without_gpu, require_gpu, require_gpu_async, device_alloc, download,
//          expect_same_bits
//
// Helpers shared by the CUDA tests (t/cuda_ops_test.c, t/cuda_attention_test.c): skipping
// without a GPU (or failing, with HERD_EXPECT_GPU=1), device memory that fails the test when it
// cannot be had, and bit-for-bit comparisons.
#ifndef HERD_T_CUDA_TEST_UTIL_H
#define HERD_T_CUDA_TEST_UTIL_H

#include <criterion/criterion.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

// Fails the test (naming the call, its status and herd's message) unless `call` returns HERD_OK.
#define CUDA_OK(call)                                                                           \
  do {                                                                                          \
    int cuda_ok_rc_ = (call);                                                                   \
    cr_assert(cuda_ok_rc_ == HERD_OK, "%s returned %d: %s", #call, cuda_ok_rc_, herd_errmsg()); \
  } while (0)

// Skips the test without a GPU, unless HERD_EXPECT_GPU=1 says there must be one (a driver too
// old for the CUDA runtime herd was built with also gives 0 devices): then it fails with CUDA's
// reason.
void skip_without_gpu(void);
// skip_without_gpu, with HERD_CUDA_SYNC=1: every op waits for its kernels, so a failing kernel
// is named by its op.
void require_gpu(void);
// skip_without_gpu for the tests of asynchronous failures: kernels are not waited for.
void require_gpu_async(void);

// bytes of device memory (at least 1 byte, so never NULL).
void *device_alloc(size_t bytes);
// A malloc'd host copy of n floats of device memory.
float *download(const float *gpu, int64_t n);

// a and b (n floats) are the same bits; the message names the first difference.
void expect_same_bits(const char *what, const float *a, const float *b, int64_t n);

#endif
