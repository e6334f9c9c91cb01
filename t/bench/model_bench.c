// Model benchmark at the reference config (dim 288, 6 layers, 6 heads, 2 kv heads, hidden 768,
// vocab 4096, seq 256, batch 8): training tokens/s and model FLOP utilisation against this
// machine's sgemm rate measured in the same run; decode tokens/s at batch 1 and the aggregate
// at batch 16; peak resident memory against the analytic estimate. `make bench` runs it.
//
// Training FLOPs per token (the usual model-FLOPs count, recomputation not counted):
//   6 * (parameters other than the input embedding)   matmuls, forward 2 + backward 4
//   + 6 * n_layers * seq * dim                         causal attention: Q K^T and P V over
//                                                      seq/2 keys on average, forward 2*2,
//                                                      backward twice that
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "error.h"
#include "generate.h"
#include "model.h"
#include "threads.h"

enum { BATCH = 8, SEQ = 256, TRAIN_STEPS = 5, PROMPT = 32, NEW_TOKENS = 128, WIDE = 16 };

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_bytes(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss * 1024.0;  // Linux reports KiB
}

static void die(const char *what) {
  fprintf(stderr, "model_bench: %s: %s\n", what, herd_errmsg());
  exit(1);
}

static double sgemm_gflops(int n) {
  float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n);
  float *c = calloc((size_t)n * n, sizeof(float));
  for (int i = 0; i < n * n; i++) a[i] = (float)(i % 7) * 0.1f, b[i] = (float)(i % 5) * 0.1f;
  openblas_set_num_threads(herd_threads());  // OpenBLAS's own threading: the machine's rate
  double best = 1e30;
  for (int rep = 0; rep < 5; rep++) {
    double start = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double elapsed = now() - start;
    if (elapsed < best) best = elapsed;
  }
  openblas_set_num_threads(1);  // herd's kernels run OpenBLAS on one thread (threads.c)
  free(a), free(b), free(c);
  return 2.0 * n * n * n / best / 1e9;
}

static double train(herd_model *model, const herd_model_config *config, double *flops_per_token) {
  int32_t *tokens = malloc(sizeof(int32_t) * BATCH * SEQ);
  int32_t *targets = malloc(sizeof(int32_t) * BATCH * SEQ);
  for (int i = 0; i < BATCH * SEQ; i++) {
    tokens[i] = (int32_t)((i * 2654435761u) % (unsigned)config->vocab_size);
    targets[i] = (int32_t)((i * 40503u + 7) % (unsigned)config->vocab_size);
  }
  herd_batch batch = {.b = BATCH, .t = SEQ, .tokens = tokens, .targets = targets};
  herd_adamw opt = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
  double start = 0;
  for (int step = -1; step < TRAIN_STEPS; step++) {  // step -1 warms up
    if (step == 0) start = now();
    float loss, grad_norm;
    herd_model_zero_grad(model);
    if (herd_model_forward(model, &batch, &loss) || herd_model_backward(model, &batch) ||
        herd_model_step(model, &opt, &grad_norm))
      die("training step");
  }
  double elapsed = now() - start;
  size_t n_params;
  herd_model_param_buffer(model, &n_params);
  double matmul_params = (double)n_params - (double)config->vocab_size * config->dim;
  *flops_per_token = 6 * matmul_params + 6.0 * config->n_layers * SEQ * config->dim;
  free(tokens), free(targets);
  return (double)BATCH * SEQ * TRAIN_STEPS / elapsed;
}

// Aggregate new tokens per second decoding `width` sequences of PROMPT + NEW_TOKENS.
static double decode(herd_model *model, const herd_model_config *config, int width) {
  int32_t *prompt = malloc(sizeof(int32_t) * PROMPT);
  for (int i = 0; i < PROMPT; i++) prompt[i] = (int32_t)((i * 97 + 3) % config->vocab_size);
  const int32_t *prompts[1] = {prompt};
  int lengths[1] = {PROMPT};
  uint64_t *seeds = malloc(sizeof(uint64_t) * width);
  for (int i = 0; i < width; i++) seeds[i] = 1000 + (uint64_t)i;
  herd_sampling sampling = {1.0f, 1.0f, 0, NEW_TOKENS, NULL, 0};
  herd_generation generation;
  double start = now();
  if (herd_generate(model, 1, prompts, lengths, width, &sampling, seeds, &generation))
    die("generation");
  double elapsed = now() - start;
  long produced = 0;
  for (int i = 0; i < generation.n; i++) produced += generation.lengths[i];
  herd_generation_free(&generation);
  free(prompt), free(seeds);
  return produced / elapsed;
}

int main(void) {
  herd_set_threads(herd_threads());
  herd_model_config config = {.dim = 288,
                              .n_layers = 6,
                              .n_heads = 6,
                              .n_kv_heads = 2,
                              .hidden_dim = 768,
                              .vocab_size = 4096,
                              .max_seq_len = SEQ,
                              .norm_eps = 1e-5f,
                              .rope_theta = 10000,
                              .lm_head = 1};
  herd_model *model;
  if (herd_model_new(&model, &config, BATCH, SEQ)) die("model");
  herd_model_init(model, 1);
  size_t n_params;
  herd_model_param_buffer(model, &n_params);
  double analytic = 4.0 * sizeof(float) * n_params + herd_model_activation_bytes(model);
  double flops_per_token;
  double train_rate = train(model, &config, &flops_per_token);
  double rss = peak_rss_bytes();  // before decoding allocates its caches
  double decode_1 = decode(model, &config, 1), decode_wide = decode(model, &config, WIDE);
  double peak = sgemm_gflops(1024);
  double achieved = train_rate * flops_per_token / 1e9;
  printf(
      "herd model_bench: dim %d, %d layers, %d heads, %d kv heads, hidden %d, vocab %d, "
      "seq %d, batch %d, %d threads; %.2fM params\n",
      config.dim, config.n_layers, config.n_heads, config.n_kv_heads, config.hidden_dim,
      config.vocab_size, SEQ, BATCH, herd_threads(), n_params / 1e6);
  printf("training: %.0f tokens/s, %.1f GFLOP/s = %.0f%% of sgemm %.1f GFLOP/s (target >= 40%%)\n",
         train_rate, achieved, 100 * achieved / peak, peak);
  printf(
      "decode: %.0f tokens/s at batch 1, %.0f tokens/s aggregate at batch %d = %.1fx "
      "(target >= 6x)\n",
      decode_1, decode_wide, WIDE, decode_wide / decode_1);
  printf(
      "memory: peak RSS %.1f MiB, analytic %.1f MiB (params + grads + Adam moments %.1f, "
      "activations %.1f) = %.2fx (target <= 1.3x)\n",
      rss / 1048576, analytic / 1048576, 16.0 * n_params / 1048576,
      herd_model_activation_bytes(model) / 1048576.0, rss / analytic);
  herd_model_free(model);
  return 0;
}
