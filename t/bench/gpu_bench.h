// defines: bench_now, bench_die, bench_without_gpu
//
// What the GPU benchmarks (cuda_matmul_bench.c, cuda_model_bench.c) share: a monotonic clock,
// dying with herd's message, and what to do on a machine without a GPU.
#ifndef HERD_T_BENCH_GPU_BENCH_H
#define HERD_T_BENCH_GPU_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "kernels/cuda.h"

static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline void bench_die(const char *bench, const char *what) {
  fprintf(stderr, "%s: %s: %s\n", bench, what, herd_errmsg());
  exit(1);
}

// -1 when there is a GPU; otherwise says so and gives the exit status: 0 (skipped), or 1 under
// HERD_EXPECT_GPU=1 (t/gpu/check, where a missing GPU is a failure).
static inline int bench_without_gpu(const char *bench) {
  if (herd_cuda_device_count() > 0) return -1;
  const char *expect = getenv("HERD_EXPECT_GPU");
  int expected = expect && strcmp(expect, "1") == 0;
  printf("%s: no GPU here; %s\n", bench, expected ? "HERD_EXPECT_GPU=1: failing" : "skipped");
  return expected;
}

#endif
