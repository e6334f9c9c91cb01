// defines: herd_train_state, herd_checkpoint_read_config, herd_checkpoint_load,
//          herd_checkpoint_load_options, herd_checkpoint_load_opts, HERD_HEAD_*,
//          herd_checkpoint_save
//
// Checkpoints in the Hugging Face layout, so `transformers` reads what herd writes and herd
// reads a real Llama-2-7b-hf directory with no conversion step:
//   config.json              LlamaConfig field names (hidden_size, intermediate_size, ...)
//   model.safetensors        HF tensor names; or model-0000N-of-0000M.safetensors shards with
//                            model.safetensors.index.json; f32/bf16/f16 converted on load
//   training_state.safetensors + training_state.json   (optional) AdamW moments, step, RNG,
//                            data position: training resumes exactly
// Writes are atomic: each file goes to a temporary name, is fsynced, then renamed.
#ifndef HERD_CHECKPOINT_H
#define HERD_CHECKPOINT_H

#include <stdint.h>

#include "model.h"

typedef struct herd_train_state {
  int64_t step;       // optimizer steps taken
  uint64_t rng_seed;  // the trainer's Philox stream
  uint64_t rng_offset;
  int64_t data_position;  // where the trainer is in its data
} herd_train_state;

// config.json of `dir` into a herd config. Unknown or unsupported fields (e.g. rope_scaling,
// a model_type other than llama) are an error naming the field; fields herd ignores
// (torch_dtype, bos_token_id, ...) are listed in checkpoint.c.
int herd_checkpoint_read_config(const char *dir, herd_model_config *config);
// A model from `dir` with activations for (max_batch, max_seq). With `state` non-NULL and a
// training state present, the AdamW moments and step are restored and *state filled
// (*has_state set to 1; 0 when the directory has none).
int herd_checkpoint_load(const char *dir, herd_model **out, int max_batch, int max_seq,
                         herd_train_state *state, int *has_state);
enum {
  HERD_HEAD_AS_SAVED = 0,  // the heads config.json's architectures name
  HERD_HEAD_SCALAR = 1,    // a reward model (Llama 2 section 3.2.2): scalar head, no LM head
};

typedef struct herd_checkpoint_load_options {
  int max_batch, max_seq;  // activations for (max_batch, max_seq)
  int head;                // HERD_HEAD_AS_SAVED or HERD_HEAD_SCALAR
  uint64_t seed;           // Philox seed of a newly initialised score.weight
  float score_scale;       // its std times sqrt(dim): 1 gives first scores of unit scale, 0 zeros
} herd_checkpoint_load_options;

// herd_checkpoint_load with a choice of head. HERD_HEAD_SCALAR turns a causal LM into a reward
// model: lm_head.weight in the file is ignored (its shape is still checked), score.weight is
// read when the checkpoint has one (LlamaForSequenceClassification) and otherwise drawn from
// N(0, score_scale^2 / dim) with `seed` (score_scale 0: a zero head). A training state saved for
// other heads is not restored
// (*has_state stays 0): its moments belong to another buffer layout and another run.
int herd_checkpoint_load_opts(const char *dir, herd_model **out,
                              const herd_checkpoint_load_options *opts, herd_train_state *state,
                              int *has_state);
// Writes `dir` (created if missing; files replaced atomically). `state` NULL: weights only.
int herd_checkpoint_save(const char *dir, herd_model *model, const herd_train_state *state);

#endif
