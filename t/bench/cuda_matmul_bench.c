// The GPU's measured bf16 matmul peak: the denominator of model FLOP utilisation on the GPU
// (issue 8: "MFU against the GPU's measured bf16 matmul peak"). Square and Llama-shaped
// products through herd_cuda_matmul_bf16 (cuBLASLt, bf16 inputs, f32 accumulation); each shape
// is timed over enough repetitions to run ~0.5 s after a warm-up, and the best shape is the
// peak. Also the f32 rate (herd_cuda_matmul) for comparison. `make bench` runs it in a CUDA
// build; without a GPU it says so and exits 0 (1 under HERD_EXPECT_GPU=1).
//
//   t/bench/cuda_matmul_bench [--json]     --json: one line {"bf16_peak_tflops": ..., ...} last
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels/cuda.h"
#include "kernels/cuda_ops.h"
#include "t/bench/gpu_bench.h"

typedef struct shape {
  const char *name;
  int m, n, k;
} shape;

// (tokens, out features, in features) of a training step's big products, and squares.
static const shape SHAPES[] = {
    {"square 4096", 4096, 4096, 4096},
    {"square 8192", 8192, 8192, 8192},
    {"124M mlp (8k tokens x 768 -> 2048)", 8192, 2048, 768},
    {"1B mlp (8k tokens x 2048 -> 5632)", 8192, 5632, 2048},
    {"7B mlp (8k tokens x 4096 -> 11008)", 8192, 11008, 4096},
};
enum { N_SHAPES = sizeof SHAPES / sizeof *SHAPES };

static void die(const char *what) {
  bench_die("cuda_matmul_bench", what);
}

// Fills device memory with small values (bf16 of (i % 13 - 6) / 16, or f32 of the same).
static void fill(void *device, size_t count, int bf16) {
  size_t bytes = count * (bf16 ? 2 : 4);
  void *host = malloc(bytes);
  if (!host) die("host memory");
  for (size_t i = 0; i < count; i++) {
    float x = (float)((int)(i % 13) - 6) / 16.0f;
    if (bf16) {
      uint32_t bits;
      memcpy(&bits, &x, 4);
      ((uint16_t *)host)[i] = (uint16_t)(bits >> 16);  // exact: x has few mantissa bits
    } else {
      ((float *)host)[i] = x;
    }
  }
  if (herd_cuda_copy_to_device(device, host, bytes)) die("copy");
  free(host);
}

// TFLOP/s of c(m,n) = a(m,k) @ b(n,k)^T, as a linear layer computes it.
static double rate(const shape *s, int bf16) {
  size_t elem = bf16 ? 2 : 4;
  void *a, *b, *c;
  if (herd_cuda_malloc(&a, (size_t)s->m * s->k * elem) ||
      herd_cuda_malloc(&b, (size_t)s->n * s->k * elem) ||
      herd_cuda_malloc(&c, (size_t)s->m * s->n * elem))
    die("device memory");
  fill(a, (size_t)s->m * s->k, bf16);
  fill(b, (size_t)s->n * s->k, bf16);
  double flops = 2.0 * s->m * s->n * s->k;
  int reps = 1;
  double elapsed = 0;
  for (;;) {
    if (herd_cuda_synchronize()) die("synchronize");
    double start = bench_now();
    for (int r = 0; r < reps; r++) {
      int rc = bf16 ? herd_cuda_matmul_bf16(c, HERD_BF16, a, b, s->m, s->n, s->k, 0, 1, 1, 0)
                    : herd_cuda_matmul(c, a, b, s->m, s->n, s->k, 0, 1, 1, 0);
      if (rc) die(s->name);
    }
    if (herd_cuda_synchronize()) die("synchronize");
    elapsed = bench_now() - start;
    if (elapsed > 0.5 || reps >= 1 << 16) break;
    reps *= 2;  // the first rounds warm up cuBLASLt's heuristics and the clocks
  }
  herd_cuda_free(a), herd_cuda_free(b), herd_cuda_free(c);
  return flops * reps / elapsed / 1e12;
}

int main(int argc, char **argv) {
  int json = argc > 1 && strcmp(argv[1], "--json") == 0;
  int no_gpu = bench_without_gpu("cuda_matmul_bench");
  if (no_gpu >= 0) return no_gpu;
  double best = 0, best_f32 = 0;
  for (int i = 0; i < N_SHAPES; i++) {
    double bf16 = rate(&SHAPES[i], 1), f32 = rate(&SHAPES[i], 0);
    printf("%-40s bf16 %7.1f TFLOP/s   f32 %6.1f TFLOP/s\n", SHAPES[i].name, bf16, f32);
    if (bf16 > best) best = bf16;
    if (f32 > best_f32) best_f32 = f32;
  }
  printf("measured peak: bf16 %.1f TFLOP/s, f32 %.1f TFLOP/s\n", best, best_f32);
  if (json) printf("{\"bf16_peak_tflops\": %.2f, \"f32_peak_tflops\": %.2f}\n", best, best_f32);
  herd_cuda_empty_cache();
  return 0;
}
