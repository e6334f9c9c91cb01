// herd's causal GQA attention kernel (kernels/attention.cu, f32) timed at the attention shapes
// of the 124m, 1b and 7b configs, forward and forward+backward, as TFLOP/s: the herd side of
// issue 8's "cuDNN's fused attention or a kernel of our own, measure both".
// t/bench/torch_attention.py times PyTorch's SDPA backends (cuDNN, flash) on the same shapes.
// Causal FLOPs: the forward is 2 matmuls of B*H*T*T*D/2 multiply-adds each (4 B H T^2 D / 2),
// the backward 5 (2.5x the forward). Without a GPU it says so and exits 0 (1 under
// HERD_EXPECT_GPU=1).
//
//   t/bench/cuda_attention_bench [--shape 124m|1b|7b|tiny] [--json]
//   (default: 124m, 1b and 7b; tiny is for checking the program in t/cuda_emu/run bench)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels/cuda.h"
#include "kernels/cuda_attention.h"
#include "t/bench/gpu_bench.h"

typedef struct shape {
  const char *name;
  int b, t, h, kvh, d;
} shape;

static const shape SHAPES[] = {
    {"124m", 16, 1024, 12, 12, 64},
    {"1b", 8, 1024, 32, 4, 64},
    {"7b", 1, 4096, 32, 32, 128},
    {"tiny", 2, 64, 4, 2, 16},
};
enum { N_SHAPES = sizeof SHAPES / sizeof *SHAPES };

static void die(const char *what) {
  bench_die("cuda_attention_bench", what);
}

static float *device_floats(size_t n) {
  void *p;
  if (herd_cuda_malloc(&p, n * sizeof(float))) die("device memory");
  float *host = malloc(n * sizeof(float));
  if (!host) die("host memory");
  for (size_t i = 0; i < n; i++) host[i] = (float)((int)(i % 17) - 8) / 16.0f;
  if (herd_cuda_copy_to_device(p, host, n * sizeof(float))) die("copy");
  free(host);
  return p;
}

// Seconds per call of forward (backward = 0) or forward + backward, after a warm-up.
static double time_attention(const shape *s, int backward, float *bufs[9]) {
  float *q = bufs[0], *k = bufs[1], *v = bufs[2], *out = bufs[3], *lse = bufs[4];
  float *dq = bufs[5], *dk = bufs[6], *dv = bufs[7], *dout = bufs[8];
  int reps = 0;
  double start = 0, elapsed = 0;
  for (int round = -2; elapsed < 0.5; round++) {
    if (round == 0) {
      if (herd_cuda_synchronize()) die("synchronize");
      start = bench_now();
    }
    if (herd_cuda_attention_forward(out, lse, q, k, v, NULL, s->b, s->t, s->h, s->kvh, s->d))
      die("attention forward");
    if (backward && herd_cuda_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, NULL, s->b,
                                                 s->t, s->h, s->kvh, s->d))
      die("attention backward");
    if (round >= 0) {
      reps++;
      if (herd_cuda_synchronize()) die("synchronize");
      elapsed = bench_now() - start;
    }
  }
  return elapsed / reps;
}

static void usage(void) {
  fprintf(stderr, "usage: cuda_attention_bench [--shape 124m|1b|7b|tiny] [--json]\n");
  exit(2);
}

int main(int argc, char **argv) {
  int json = 0;
  const char *only = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc)
      only = argv[++i];
    else
      usage();
  }
  int found = !only;
  for (int i = 0; only && i < N_SHAPES; i++) found |= strcmp(SHAPES[i].name, only) == 0;
  if (!found) usage();
  int no_gpu = bench_without_gpu("cuda_attention_bench");
  if (no_gpu >= 0) return no_gpu;
  printf("herd cuda_attention_bench: causal attention, f32, no segments\n");
  char line[1024];  // the JSON line, printed last
  int used = snprintf(line, sizeof line, "{\"impl\": \"herd\", \"shapes\": {");
  int printed = 0;
  for (int i = 0; i < N_SHAPES; i++) {
    const shape *s = &SHAPES[i];
    if (only ? strcmp(s->name, only) != 0 : strcmp(s->name, "tiny") == 0) continue;
    size_t nq = (size_t)s->b * s->t * s->h * s->d, nkv = (size_t)s->b * s->t * s->kvh * s->d;
    size_t sizes[9] = {nq, nkv, nkv, nq, (size_t)s->b * s->h * s->t, nq, nkv, nkv, nq};
    float *bufs[9];
    for (int j = 0; j < 9; j++) bufs[j] = device_floats(sizes[j]);
    double flops = 2.0 * s->b * s->h * (double)s->t * s->t * s->d;  // causal forward
    double forward = time_attention(s, 0, bufs), both = time_attention(s, 1, bufs);
    double tf_forward = flops / forward / 1e12, tf_both = 3.5 * flops / both / 1e12;
    printf(
        "%-5s B %d T %d H %d KVH %d D %d: forward %.3f ms (%.1f TFLOP/s), forward+backward %.3f "
        "ms (%.1f TFLOP/s)\n",
        s->name, s->b, s->t, s->h, s->kvh, s->d, forward * 1e3, tf_forward, both * 1e3, tf_both);
    used += snprintf(line + used, sizeof line - (size_t)used,
                     "%s\"%s\": {\"forward_ms\": %.4f, \"forward_backward_ms\": %.4f}",
                     printed++ ? ", " : "", s->name, forward * 1e3, both * 1e3);
    for (int j = 0; j < 9; j++) herd_cuda_free(bufs[j]);
  }
  if (json) printf("%s}}\n", line);
  return 0;
}
