// defines: herd_model_config, herd_model_params, herd_model, herd_batch, herd_adamw,
//          herd_model_config_check, herd_model_param_count, herd_model_new, herd_model_free,
//          herd_model_init, herd_model_get_config, herd_model_param_buffer,
//          herd_model_grad_buffer, herd_model_param_slices, herd_model_activation_bytes,
//          herd_model_set_trainable, herd_model_forward, herd_model_logits, herd_model_scores,
//          herd_model_backward, herd_model_zero_grad, herd_model_step, herd_model_step_count,
//          herd_model_adam_moments, herd_model_set_step_count, herd_model_logprobs,
//          herd_lr_cosine, herd_model_to, herd_model_on_host, herd_model_set_precision,
//          herd_model_precision, herd_model_forward_backward, herd_model_set_head_rows
//
// The Llama 2 transformer (Touvron et al. 2023, section 2.2): pre-normalisation with RMSNorm,
// SwiGLU MLP, rotary embeddings, grouped-query attention. llm.c style: every parameter lives in
// one f32 buffer and every gradient in another with the same layout (one optimizer sweep, one
// all-reduce, one checkpoint write); activations are sized once for (max_batch, max_seq);
// forward and backward are written by hand from the kernels of ops.h and attention.h.
#ifndef HERD_MODEL_H
#define HERD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

typedef struct herd_model_config {
  int dim;             // C, hidden size
  int n_layers;        // L
  int n_heads;         // H (head_dim D = dim / n_heads)
  int n_kv_heads;      // KVH, divides H
  int hidden_dim;      // F, SwiGLU inner size
  int vocab_size;      // V
  int max_seq_len;     // longest position (HF max_position_embeddings)
  float norm_eps;      // RMSNorm epsilon (Llama 2: 1e-5)
  float rope_theta;    // 10000 for Llama 2
  int tie_embeddings;  // lm_head shares embed's weights (Llama 2: 0)
  int lm_head;         // 1: a language-model head (V, C)
  int scalar_head;     // 1: a scalar head (1, C), as HF LlamaForSequenceClassification's score
} herd_model_config;

// Pointers into the parameter (or gradient) buffer, in buffer order. Per-layer tensors are
// stacked over layers: wq is (L, H*D, C), layer l's slice starts at wq + l*H*D*C.
typedef struct herd_model_params {
  float *embed;       // (V, C)          model.embed_tokens.weight
  float *attn_norm;   // (L, C)          model.layers.l.input_layernorm.weight
  float *wq;          // (L, H*D, C)     model.layers.l.self_attn.q_proj.weight
  float *wk;          // (L, KVH*D, C)   ...k_proj.weight
  float *wv;          // (L, KVH*D, C)   ...v_proj.weight
  float *wo;          // (L, C, H*D)     ...o_proj.weight
  float *mlp_norm;    // (L, C)          model.layers.l.post_attention_layernorm.weight
  float *w_gate;      // (L, F, C)       model.layers.l.mlp.gate_proj.weight
  float *w_up;        // (L, F, C)       ...up_proj.weight
  float *w_down;      // (L, C, F)       ...down_proj.weight
  float *final_norm;  // (C)             model.norm.weight
  float *lm_head;     // (V, C)          lm_head.weight (== embed when tied; NULL without LM head)
  float *score;       // (1, C)          score.weight (NULL without scalar head)
} herd_model_params;

typedef struct herd_model herd_model;

// A batch of B rows of T tokens; rows may pack several samples (segment ids).
typedef struct herd_batch {
  int b, t;
  const int32_t *tokens;           // (B,T) input ids
  const int32_t *positions;        // (B,T) rotary positions, restarting per sample; NULL: 0..T-1
  const int32_t *segments;         // (B,T) sample ids; NULL: one sample per row
  const int32_t *targets;          // (B,T) token to predict at each position, -1 for none; NULL: no
                                   // LM loss
  const float *weights;            // (B,T) per-token loss weight (SFT mask 0/1, PPO advantage...);
                                   // NULL: 1 where target >= 0
  float loss_scale;                // loss = loss_scale * sum(weight * nll); 0: 1 / #(targets >= 0)
  int n_scores;                    // scalar head read at these flat (b*T + t) positions
  const int32_t *score_positions;  // (n_scores), e.g. each response's last token
  const float *dscores;            // (n_scores) upstream gradient of the scores, for backward
} herd_batch;

typedef struct herd_adamw {
  float lr, beta1, beta2, eps;
  float weight_decay;  // decoupled; not applied to RMSNorm weights
  float grad_clip;     // global L2 norm clip; 0: none
} herd_adamw;

int herd_model_config_check(const herd_model_config *config);  // errors name the field
size_t herd_model_param_count(const herd_model_config *config);

// Allocates parameters (zero), gradients, AdamW moments and activations for batches of up to
// max_batch rows of max_seq tokens, on the CPU.
int herd_model_new(herd_model **out, const herd_model_config *config, int max_batch, int max_seq);
// The same on another backend (runtime/backend.h; the GPU's: kernels/backend_cuda.h). Its
// buffers, and the pointers the accessors below return, are in that backend's memory; batches
// stay in host memory (they are copied for each pass), and herd_model_read/write move
// parameters, gradients, logits and scores to and from host memory on any backend.
typedef struct herd_backend herd_backend;
int herd_model_new_on(herd_model **out, const herd_model_config *config, int max_batch, int max_seq,
                      const herd_backend *backend);
void herd_model_free(herd_model *model);
// Llama-style initialisation from a Philox seed: normal(0, 0.02) matrices, norms at 1 (each
// element uses Philox counter = its buffer offset). Also clears gradients, moments and steps.
// The values are drawn on the host whatever the backend, so every device starts from the same
// bits. Fails only off the host (host memory for the draw, the copy).
int herd_model_init(herd_model *model, uint64_t seed);
// The backend's name ("cpu", "cuda").
const char *herd_model_device(const herd_model *model);
// 1 for a model in host memory (the CPU backend), else 0.
int herd_model_on_host(const herd_model *model);

// Copies between host memory and the model's buffers on any backend: parameters, gradients,
// AdamW moments (n_params floats each; all of these can be written too), the last forward's
// logits (b*t*vocab floats) or scores (n_scores).
typedef enum herd_model_buffer {
  HERD_MODEL_PARAMS,
  HERD_MODEL_GRADS,
  HERD_MODEL_LOGITS,
  HERD_MODEL_SCORES,
  HERD_MODEL_ADAM_M,
  HERD_MODEL_ADAM_V
} herd_model_buffer;
int herd_model_read(const herd_model *model, herd_model_buffer which, float *host, size_t count);
int herd_model_write(herd_model *model, herd_model_buffer which, const float *host, size_t count);

// Moves the model to `backend` with room for batches of max_batch x max_seq (0: as now):
// parameters, gradients, AdamW moments, the step count and the frozen parts go along;
// activations are allocated anew, so a backward needs a forward on the new backend first.
// Nothing changes when it fails (out of device memory, say): the model stays where it was.
int herd_model_to(herd_model *model, const herd_backend *backend, int max_batch, int max_seq);

// Mixed precision. HERD_BF16: every matmul (the projections, the MLP, the LM head) reads bf16
// copies of its weight and its activation operand and accumulates in f32 (cuBLASLt's bf16
// tensor-core path on the GPU); master weights, gradients, AdamW moments, norms, attention, the
// loss and every other activation stay f32. The weights' bf16 copy (2 bytes per parameter) is
// made again before a pass whenever they may have changed. HERD_F32 (the default): f32 matmuls.
// Carried along by herd_model_to.
int herd_model_set_precision(herd_model *model, herd_dtype compute);
herd_dtype herd_model_precision(const herd_model *model);

const herd_model_config *herd_model_get_config(const herd_model *model);
// The parameter and gradient buffers (n floats each) and their slices.
float *herd_model_param_buffer(herd_model *model, size_t *n);
float *herd_model_grad_buffer(herd_model *model, size_t *n);
void herd_model_param_slices(herd_model *model, herd_model_params *params,
                             herd_model_params *grads);
size_t herd_model_activation_bytes(const herd_model *model);

// Freezing: a frozen part gets no gradient and no update (trunk = everything but the heads).
// A tied LM head is the embedding table and follows the trunk's flag. Freezing zeroes the
// part's gradients.
void herd_model_set_trainable(herd_model *model, int trunk, int lm_head, int scalar_head);

// Forward over a batch; with targets, *loss (may be NULL) gets the weighted NLL. Logits (B,T,V)
// and scores (n_scores) stay readable until the next forward.
int herd_model_forward(herd_model *model, const herd_batch *batch, float *loss);
const float *herd_model_logits(const herd_model *model);
const float *herd_model_scores(const herd_model *model);
// Backward of the last forward (same batch): accumulates into the gradient buffer from the LM
// loss (if targets) and from dscores (if given).
int herd_model_backward(herd_model *model, const herd_batch *batch);
void herd_model_zero_grad(herd_model *model);
// Forward and backward in one call, for training: the loss and gradients of
// herd_model_forward then herd_model_backward (dscores must come with the batch), but the LM
// head runs in chunks of rows (herd_model_set_head_rows) whose logits become gradients at once,
// so no (B*T, V) logits array is ever made: the model never allocates one unless
// herd_model_forward or herd_model_logprobs is called. Logits and scores are not readable
// afterwards. A non-finite loss is an error naming the step; the gradients are then partial.
int herd_model_forward_backward(herd_model *model, const herd_batch *batch, float *loss);
// Rows per LM-head chunk of herd_model_forward_backward (default: about 16M logits, 64 MiB,
// at most max_batch x max_seq); its memory is 2 x rows x vocab floats.
int herd_model_set_head_rows(herd_model *model, int rows);
// One AdamW update (step numbers from 1), after global-norm clipping. A non-finite gradient
// norm stops the step with HERD_EINVAL naming the step; weights and moments stay untouched.
int herd_model_step(herd_model *model, const herd_adamw *opt, float *grad_norm);
int64_t herd_model_step_count(const herd_model *model);
// AdamW moments (n floats each) for checkpoints; the step count can be set on resume.
float *herd_model_adam_moments(herd_model *model, float **second);
void herd_model_set_step_count(herd_model *model, int64_t steps);

// log p(targets) at every (B,T) position (0 where target is -1), no gradients.
int herd_model_logprobs(herd_model *model, const herd_batch *batch, float *out);

// Cosine schedule: linear warm-up to max_lr over warmup steps, then cosine down to
// floor * max_lr at total steps (and flat after). Steps count from 1 as herd_model_step numbers
// them: step s <= warmup gets max_lr * s / warmup, so step `warmup` is the first at max_lr.
float herd_lr_cosine(int64_t step, float max_lr, int64_t warmup, int64_t total, float floor);

#endif
