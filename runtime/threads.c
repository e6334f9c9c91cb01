#include "threads.h"

#include <omp.h>
#include <stdlib.h>
#include <unistd.h>

#include "error.h"

void openblas_set_num_threads(int num_threads);  // cblas.h declares it; avoid the header here

static int thread_count;  // 0 until first use; the one piece of global state besides errors

int herd_set_threads(int n) {
  if (n < 1) return herd_seterr(HERD_EINVAL, "thread count must be >= 1 (got %d)", n);
  thread_count = n;
  omp_set_num_threads(n);
  // OpenBLAS's own threading changes the bits of sgemm with the thread count; herd_cpu_matmul
  // splits the output into fixed tiles over OpenMP instead, each tile a one-thread sgemm.
  openblas_set_num_threads(1);
  return HERD_OK;
}

int herd_threads(void) {
  if (thread_count == 0) {
    const char *env = getenv("HERD_THREADS");
    long n = env ? strtol(env, NULL, 10) : 0;
    if (n < 1) n = sysconf(_SC_NPROCESSORS_ONLN);
    herd_set_threads(n < 1 ? 1 : (int)n);
  }
  return thread_count;
}

int herd_thread_id(void) {
  return omp_get_thread_num();
}
