// defines: herd_sampling, herd_generation, herd_generate, herd_generation_free,
//          herd_generate_logits
//
// Sampling from a herd_model with a KV cache: many prompts of different lengths decoded as one
// batch, K samples per prompt sharing the prompt's prefill, temperature / top-k / top-p, stop
// tokens, and a seed per sequence (Philox: a sample can be regenerated alone, exactly).
#ifndef HERD_GENERATE_H
#define HERD_GENERATE_H

#include <stdint.h>

#include "model.h"

typedef struct herd_sampling {
  float temperature;           // 0: greedy (argmax)
  float top_p;                 // nucleus mass in (0, 1]; 1: off
  int top_k;                   // keep the k most likely tokens; 0: off
  int max_new;                 // new tokens per sequence, >= 1
  const int32_t *stop_tokens;  // generation of a sequence ends after one of these (kept in output)
  int n_stop;
} herd_sampling;

typedef struct herd_generation {
  int n;  // sequences: n_prompts * k, prompt-major (prompt p, sample j at p*k + j)
  int max_new;
  int32_t *tokens;  // (n, max_new) generated ids, -1 after the end
  float *logprobs;  // (n, max_new) log p of each generated token under the model (T = 1,
                    // before temperature/top-k/top-p), 0 after the end
  int *lengths;     // (n) tokens generated, stop token included
} herd_generation;

// seeds: (n_prompts * k) per-sequence seeds. The model's config must have an LM head.
int herd_generate(herd_model *model, int n_prompts, const int32_t *const *prompts,
                  const int *prompt_lengths, int k, const herd_sampling *sampling,
                  const uint64_t *seeds, herd_generation *out);
void herd_generation_free(herd_generation *generation);

// For tests: the logits of every position of n_seqs given sequences through the KV-cache path.
// Sequence i (lengths[i] tokens) has its first n_prefill[i] tokens run as one prefill chunk; the
// rest are then decoded one token per step, all unfinished sequences of a step as one batch.
// out[i] gets (lengths[i], V).
int herd_generate_logits(herd_model *model, int n_seqs, const int32_t *const *tokens,
                         const int *lengths, const int *n_prefill, float *const *out);

#endif
