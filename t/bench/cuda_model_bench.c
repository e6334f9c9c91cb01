// herd's side of the GPU training benchmark (issue 8, acceptance 3): the configs of
// t/bench/torch_llama.py trained on the GPU through herd_model_new_on(..., herd_cuda_backend()),
// in bf16 mixed precision (herd_model_set_precision; --precision f32 for all-f32 matmuls), timed
// over steps after a warm-up one.
// Prints training tokens/s, TFLOP/s (FLOPs per token counted as t/bench/model_bench.c counts
// them), MFU against --peak (the bf16 TFLOP/s cuda_matmul_bench measured) and the device
// memory high-water mark against the analytic bytes of each part (f32 weights, their bf16
// copy, gradients, AdamW moments, activations, bf16 operand scratch);
// --json adds one JSON line. Without a GPU: "skipped" (exit 1 under HERD_EXPECT_GPU=1).
//
// --decode adds greedy decoding through herd_generate at batch 1 and 64 (32-token prompts, 128
// new tokens; bf16 precision means bf16 matmuls and a bf16 KV cache), as torch_llama.py decodes.
// --config 7b (Llama-2-7B's shapes, batch 1 x 512, one step) is the memory report of issue 8:
// the bytes of each part against the measured peak.
//
//   t/bench/cuda_model_bench [--config tiny|124m|1b|7b] [--steps N] [--batch N] [--seq N]
//                            [--peak TFLOPS] [--precision bf16|f32] [--decode] [--json]
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "generate.h"
#include "kernels/backend_cuda.h"
#include "kernels/cuda.h"
#include "model.h"
#include "t/bench/gpu_bench.h"

typedef struct bench_config {
  const char *name;
  herd_model_config model;
  int batch, seq;
} bench_config;

// The shapes of t/bench/torch_llama.py's CONFIGS (7b: see the memory report of issue 8).
static const bench_config CONFIGS[] = {
    {"tiny", {64, 2, 4, 2, 176, 512, 64, 1e-5f, 10000.0f, 0, 1, 0}, 4, 64},
    {"124m", {768, 12, 12, 12, 2048, 32000, 1024, 1e-5f, 10000.0f, 0, 1, 0}, 16, 1024},
    {"1b", {2048, 22, 32, 4, 5632, 32000, 1024, 1e-5f, 10000.0f, 0, 1, 0}, 8, 1024},
    {"7b", {4096, 32, 32, 32, 11008, 32000, 4096, 1e-5f, 10000.0f, 0, 1, 0}, 1, 512},
};
enum { N_CONFIGS = sizeof CONFIGS / sizeof *CONFIGS };

static void die(const char *what) {
  bench_die("cuda_model_bench", what);
}

static void usage(void) {
  fprintf(stderr,
          "usage: cuda_model_bench [--config tiny|124m|1b|7b] [--steps N] [--batch N] [--seq N] "
          "[--peak TFLOPS] [--precision bf16|f32] [--decode] [--json]\n");
  exit(2);
}

// The bf16 operand scratch of herd_model_set_precision: two of max rows x the widest operand.
static double bf16_operand_bytes(const herd_model_config *c, int batch, int seq, int bf16) {
  if (!bf16) return 0;
  int widest = c->dim > c->hidden_dim ? c->dim : c->hidden_dim;
  if (c->vocab_size > widest) widest = c->vocab_size;
  return 2.0 * 2.0 * batch * seq * widest;
}

static double gib(double bytes) {
  return bytes / 1073741824.0;
}

// The analytic bytes of each part, and the allocator's peak.
static void print_memory_parts(size_t n_params, const herd_model *model, const herd_model_config *c,
                               int batch, int seq, int bf16, const herd_cuda_memory_stats *memory) {
  double weights = 4.0 * n_params, copy = bf16 ? 2.0 * n_params : 0, grads = 4.0 * n_params;
  double adam = 8.0 * n_params, acts = (double)herd_model_activation_bytes(model);
  double operands = bf16_operand_bytes(c, batch, seq, bf16);
  double total = weights + copy + grads + adam + acts + operands;
  printf(
      "memory by part: weights f32 %.2f GiB, bf16 copy %.2f, gradients %.2f, AdamW moments %.2f, "
      "activations %.2f, bf16 operands %.2f = %.2f GiB analytic; allocator peak %.2f GiB "
      "(%+.1f%%)\n",
      gib(weights), gib(copy), gib(grads), gib(adam), gib(acts), gib(operands), gib(total),
      gib((double)memory->peak), 100.0 * ((double)memory->peak / total - 1));
}

// Greedy decoding of `width` 32-token prompts for 128 new tokens: new tokens per second.
static double decode_rate(herd_model *model, int width) {
  enum { PROMPT = 32, NEW = 128 };
  const herd_model_config *c = herd_model_get_config(model);
  int32_t prompt[PROMPT];
  for (int i = 0; i < PROMPT; i++) prompt[i] = (int32_t)((i * 97 + 3) % c->vocab_size);
  const int32_t **prompts = malloc(sizeof *prompts * width);
  int *lengths = malloc(sizeof *lengths * width);
  uint64_t *seeds = malloc(sizeof *seeds * width);
  if (!prompts || !lengths || !seeds) die("host memory");
  for (int i = 0; i < width; i++) prompts[i] = prompt, lengths[i] = PROMPT, seeds[i] = (uint64_t)i;
  herd_sampling greedy = {0, 1, 0, NEW, NULL, 0};
  herd_generation g;
  greedy.max_new = 4;  // warm-up
  if (herd_generate(model, width, prompts, lengths, 1, &greedy, seeds, &g)) die("decode");
  herd_generation_free(&g);
  greedy.max_new = NEW;
  double start = bench_now();
  if (herd_generate(model, width, prompts, lengths, 1, &greedy, seeds, &g)) die("decode");
  double elapsed = bench_now() - start;
  herd_generation_free(&g);
  free(prompts), free(lengths), free(seeds);
  return (double)width * NEW / elapsed;
}

int main(int argc, char **argv) {
  const bench_config *bench = &CONFIGS[1];
  int steps = 0, batch = 0, seq = 0, json = 0, bf16 = 1, decode = 0;
  double peak = 0;
  for (int i = 1; i < argc; i++) {
    int has_value = i + 1 < argc;
    if (strcmp(argv[i], "--json") == 0) {
      json = 1;
    } else if (strcmp(argv[i], "--decode") == 0) {
      decode = 1;
    } else if (strcmp(argv[i], "--config") == 0 && has_value) {
      const char *name = argv[++i];
      bench = NULL;
      for (int c = 0; c < N_CONFIGS; c++)
        if (strcmp(CONFIGS[c].name, name) == 0) bench = &CONFIGS[c];
      if (!bench) {
        fprintf(stderr, "cuda_model_bench: unknown config '%s'\n", name);
        usage();
      }
    } else if (strcmp(argv[i], "--steps") == 0 && has_value) {
      steps = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--batch") == 0 && has_value) {
      batch = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--seq") == 0 && has_value) {
      seq = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--precision") == 0 && has_value) {
      const char *name = argv[++i];
      if (strcmp(name, "bf16") != 0 && strcmp(name, "f32") != 0) usage();
      bf16 = strcmp(name, "bf16") == 0;
    } else if (strcmp(argv[i], "--peak") == 0 && has_value) {
      peak = atof(argv[++i]);
    } else {
      usage();
    }
  }
  if (steps == 0) steps = strcmp(bench->name, "7b") == 0 ? 1 : 10;
  if (steps < 1) usage();
  int no_gpu = bench_without_gpu("cuda_model_bench");
  if (no_gpu >= 0) return no_gpu;
  herd_model_config config = bench->model;
  int B = batch > 0 ? batch : bench->batch, T = seq > 0 ? seq : bench->seq;
  if (T > config.max_seq_len) config.max_seq_len = T;
  if (decode && config.max_seq_len < 160) config.max_seq_len = 160;  // 32 + 128 positions

  herd_model *model;
  if (herd_model_new_on(&model, &config, B, T, herd_cuda_backend())) die("model");
  if (herd_model_init(model, 1)) die("init");
  if (bf16 && herd_model_set_precision(model, HERD_BF16)) die("bf16 precision");
  const char *precision = bf16 ? "bf16" : "f32";
  size_t n_params;
  herd_model_param_buffer(model, &n_params);

  int32_t *tokens = malloc(sizeof(int32_t) * B * T), *targets = malloc(sizeof(int32_t) * B * T);
  if (!tokens || !targets) die("host memory");
  for (int i = 0; i < B * T; i++) {
    tokens[i] = (int32_t)((i * 2654435761u) % (unsigned)config.vocab_size);
    targets[i] = (int32_t)((i * 40503u + 7) % (unsigned)config.vocab_size);
  }
  herd_batch b = {.b = B, .t = T, .tokens = tokens, .targets = targets};
  herd_adamw opt = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
  float first_loss = 0, loss = 0, grad_norm;
  double start = 0;
  for (int step = -1; step < steps; step++) {  // step -1 warms up (allocator, cuBLASLt)
    if (step == 0) {
      if (herd_cuda_synchronize()) die("synchronize");
      start = bench_now();
    }
    herd_model_zero_grad(model);
    if (herd_model_forward_backward(model, &b, &loss) || herd_model_step(model, &opt, &grad_norm))
      die("training step");
    if (step == -1) first_loss = loss;
  }
  if (herd_cuda_synchronize()) die("synchronize");
  double elapsed = bench_now() - start;
  double rate = (double)B * T * steps / elapsed;
  double matmul_params = (double)n_params - (double)config.vocab_size * config.dim;
  double flops_per_token = 6 * matmul_params + 6.0 * config.n_layers * T * config.dim;
  double tflops = rate * flops_per_token / 1e12;
  herd_cuda_memory_stats memory;
  herd_cuda_get_memory_stats(&memory);
  printf(
      "herd cuda_model_bench: %s: dim %d, %d layers, %d heads, %d kv heads, hidden %d, vocab %d, "
      "seq %d, batch %d; %.1fM params; %s\n",
      bench->name, config.dim, config.n_layers, config.n_heads, config.n_kv_heads,
      config.hidden_dim, config.vocab_size, T, B, n_params / 1e6, precision);
  printf("training: %.0f tokens/s, %.1f TFLOP/s", rate, tflops);
  if (peak > 0) printf(" = %.1f%% of the bf16 matmul peak %.1f TFLOP/s", 100 * tflops / peak, peak);
  printf("; loss %.3f -> %.3f\n", (double)first_loss, (double)loss);
  print_memory_parts(n_params, model, &config, B, T, bf16, &memory);
  double decode_1 = 0, decode_64 = 0;
  if (decode) {
    decode_1 = decode_rate(model, 1);
    decode_64 = decode_rate(model, 64);
    printf("decode: %.0f tokens/s at batch 1, %.0f tokens/s at batch 64 (%s)\n", decode_1,
           decode_64, bf16 ? "bf16 matmuls, bf16 KV cache" : "f32");
  }
  if (json)
    printf(
        "{\"impl\": \"herd\", \"config\": \"%s\", \"precision\": \"%s\", \"batch\": %d, "
        "\"seq\": %d, \"params\": %zu, \"train_tokens_per_s\": %.1f, \"tflops\": %.2f, "
        "\"mfu\": %.4f, \"peak_memory_bytes\": %zu, \"decode_tokens_per_s\": {\"1\": %.1f, "
        "\"64\": %.1f}}\n",
        bench->name, precision, B, T, n_params, rate, tflops, peak > 0 ? tflops / peak : 0.0,
        memory.peak, decode_1, decode_64);
  free(tokens), free(targets);
  herd_model_free(model);
  return 0;
}
