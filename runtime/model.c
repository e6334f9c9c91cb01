// The Llama 2 model on the CPU kernels: one parameter buffer, one gradient buffer, AdamW moments
// with the same layout, and activations sized once for (max_batch, max_seq). Notation in shape
// comments: B batch rows, T tokens per row, N = B*T, C dim, H heads, KVH kv heads, D head dim,
// KVD = KVH*D, F hidden dim, V vocabulary, L layers.
#include "model.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "rng.h"
#include "threads.h"

// Returns the status of a backend call that failed.
#define TRY(expr)                \
  do {                           \
    int try_rc_ = (expr);        \
    if (try_rc_) return try_rc_; \
  } while (0)

// The activations of one forward pass, kept for the backward pass. Per-layer tensors are
// stacked with a stride of the allocated maximum (max N rows), not of the current batch.
typedef struct acts {
  float *resid;    // (L+1, N, C) input of each layer; resid[L] is the trunk's output
  float *mid;      // (L, N, C) residual after attention (input of the MLP norm)
  float *ln1;      // (L, N, C) attention-normed input
  float *rstd1;    // (L, N)
  float *q;        // (L, N, H, D) after rotary embedding
  float *k;        // (L, N, KVH, D) after rotary embedding
  float *v;        // (L, N, KVH, D)
  float *att;      // (L, N, H, D) attention output
  float *lse;      // (L, B, H, T)
  float *ln2;      // (L, N, C) MLP-normed residual
  float *rstd2;    // (L, N)
  float *gate;     // (L, N, F) gate projection (pre-activation)
  float *up;       // (L, N, F) up projection
  float *swi;      // (L, N, F) silu(gate) * up
  float *xf;       // (N, C) final-normed trunk output
  float *rstdf;    // (N)
  float *logits;   // (N, V)
  float *scores;   // (N) scalar head outputs (at most N per batch)
  float *losses;   // (N) weighted NLL per token
  float *weights;  // (N) loss weights when the batch gives none
  int32_t *pos;    // (N) default positions 0..T-1 per row
  // Scratch, shared by forward and backward.
  float *dresid;   // (N, C) gradient of the residual stream
  float *dxf;      // (N, C)
  float *dln;      // (N, C)
  float *datt;     // (N, C)
  float *dq;       // (N, C); forward: q before rotation
  float *dk;       // (N, KVD); forward: k before rotation
  float *dv;       // (N, KVD)
  float *dqpre;    // (N, C); forward: projection outputs before the residual add
  float *dkpre;    // (N, KVD)
  float *dgate;    // (N, F)
  float *dup;      // (N, F)
  float *dswi;     // (N, F)
  float *dlogits;  // (N, V)
} acts;

// One parameter tensor of the buffer: where it lives, whether it decays, which group it is in.
enum group { TRUNK, LM_HEAD, SCORE };
typedef struct tensor_info {
  size_t offset, size;
  int decay;
  enum group group;
} tensor_info;

enum { N_TENSORS = 13 };

struct herd_model {
  const herd_backend *be;  // the kernels forward, backward and step run on
  herd_model_config config;
  int max_batch, max_seq;
  size_t n_params;
  float *params, *grads, *m, *v;  // (n_params) each
  herd_model_params p, g;
  tensor_info tensors[N_TENSORS];
  int n_tensors;
  int train[3];  // by group
  int64_t steps;
  float *act_memory;
  size_t act_bytes;
  // The LM head's logits: the full (N, V) logits and their gradients (made on first use by
  // herd_model_forward or logprobs), and the chunk herd_model_forward_backward works in.
  float *full_logits;  // (2 N V): logits, then dlogits
  float *head_chunk;   // (2 head_rows V): a chunk's logits, then its gradients
  int head_rows;
  acts a;
  // Off the host: the batch's arrays are copied into `inputs` (device memory) before each pass;
  // `host_inputs` holds the defaults computed on the host (positions, loss weights) meanwhile.
  int32_t *inputs;      // (4 N) tokens, segments, targets, score positions
  float *input_floats;  // (N) dscores
  void *host_inputs;    // (N) int32 or float scratch
  int host;             // the backend works on host memory (the CPU)
  // Mixed precision (herd_model_set_precision): the matmuls read bf16 copies of the weights and
  // of their activation operands; master weights, gradients, moments and the rest stay f32.
  int bf16;
  uint16_t *params16;        // (n_params) the weights rounded, refreshed when stale
  int params16_stale;        // params may have changed since params16 was made
  uint16_t *in16, *dout16;   // (N x widest) matmul operands rounded for one call
  const float *in16_source;  // in16 holds this array rounded (count floats): q/k/v share ln1
  size_t in16_count;
  int fwd_b, fwd_t;  // shape of the last forward usable by backward (0: none)
  int fwd_targets;   // the last forward had targets
  int fwd_scores;    // and this many scores
  float fwd_scale;   // its effective loss scale
};

// ---------------------------------------------------------------- config

static int head_dim(const herd_model_config *c) {
  return c->dim / c->n_heads;
}

int herd_model_config_check(const herd_model_config *c) {
  if (!c) return herd_seterr(HERD_EINVAL, "config: NULL");
  struct {
    const char *name;
    int value;
  } sizes[] = {{"dim", c->dim},
               {"n_layers", c->n_layers},
               {"n_heads", c->n_heads},
               {"n_kv_heads", c->n_kv_heads},
               {"hidden_dim", c->hidden_dim},
               {"vocab_size", c->vocab_size},
               {"max_seq_len", c->max_seq_len}};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
    if (sizes[i].value < 1)
      return herd_seterr(HERD_EINVAL, "config: %s = %d must be >= 1", sizes[i].name,
                         sizes[i].value);
  if (c->dim % c->n_heads)
    return herd_seterr(HERD_EINVAL, "config: n_heads = %d does not divide dim = %d", c->n_heads,
                       c->dim);
  if (c->n_heads % c->n_kv_heads)
    return herd_seterr(HERD_EINVAL, "config: n_kv_heads = %d does not divide n_heads = %d",
                       c->n_kv_heads, c->n_heads);
  if (head_dim(c) % 2)
    return herd_seterr(HERD_EINVAL, "config: head_dim = dim / n_heads = %d must be even",
                       head_dim(c));
  if (!(c->norm_eps > 0) || !isfinite(c->norm_eps))
    return herd_seterr(HERD_EINVAL, "config: norm_eps = %g must be > 0", (double)c->norm_eps);
  if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
    return herd_seterr(HERD_EINVAL, "config: rope_theta = %g must be > 0", (double)c->rope_theta);
  struct {
    const char *name;
    int value;
  } flags[] = {{"tie_embeddings", c->tie_embeddings},
               {"lm_head", c->lm_head},
               {"scalar_head", c->scalar_head}};
  for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
    if (flags[i].value != 0 && flags[i].value != 1)
      return herd_seterr(HERD_EINVAL, "config: %s = %d must be 0 or 1", flags[i].name,
                         flags[i].value);
  if (c->tie_embeddings && !c->lm_head)
    return herd_seterr(HERD_EINVAL, "config: tie_embeddings = 1 needs lm_head = 1");
  if (!c->lm_head && !c->scalar_head)
    return herd_seterr(HERD_EINVAL, "config: lm_head and scalar_head are both 0 (no output)");
  return HERD_OK;
}

// Fills the tensor table in buffer order; returns the parameter count.
static size_t layout(const herd_model_config *c, tensor_info *t, int *count) {
  size_t C = (size_t)c->dim, L = (size_t)c->n_layers, V = (size_t)c->vocab_size;
  size_t KVD = (size_t)c->n_kv_heads * (size_t)head_dim(c), F = (size_t)c->hidden_dim;
  size_t sizes[N_TENSORS] = {V * C,
                             L * C,
                             L * C * C,
                             L * KVD * C,
                             L * KVD * C,
                             L * C * C,
                             L * C,
                             L * F * C,
                             L * F * C,
                             L * C * F,
                             C,
                             c->lm_head && !c->tie_embeddings ? V * C : 0,
                             c->scalar_head ? C : 0};
  static const int decay[N_TENSORS] = {1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1};
  size_t off = 0;
  for (int i = 0; i < N_TENSORS; i++) {
    t[i] = (tensor_info){off, sizes[i], decay[i], i == 11 ? LM_HEAD : i == 12 ? SCORE : TRUNK};
    off += sizes[i];
  }
  *count = N_TENSORS;
  return off;
}

size_t herd_model_param_count(const herd_model_config *config) {
  if (herd_model_config_check(config)) return 0;
  tensor_info t[N_TENSORS];
  int count;
  return layout(config, t, &count);
}

static void slice(herd_model_params *s, float *base, const herd_model *m) {
  float **fields[N_TENSORS] = {&s->embed,      &s->attn_norm, &s->wq,     &s->wk,   &s->wv,
                               &s->wo,         &s->mlp_norm,  &s->w_gate, &s->w_up, &s->w_down,
                               &s->final_norm, &s->lm_head,   &s->score};
  for (int i = 0; i < N_TENSORS; i++)
    *fields[i] = m->tensors[i].size ? base + m->tensors[i].offset : NULL;
  if (m->config.tie_embeddings) s->lm_head = s->embed;
}

// ---------------------------------------------------------------- lifetime

int herd_model_new(herd_model **out, const herd_model_config *config, int max_batch, int max_seq) {
  return herd_model_new_on(out, config, max_batch, max_seq, &herd_cpu_backend);
}

int herd_model_new_on(herd_model **out, const herd_model_config *config, int max_batch, int max_seq,
                      const herd_backend *backend) {
  *out = NULL;
  if (!backend) return herd_seterr(HERD_EINVAL, "model_new: no backend");
  int rc = herd_model_config_check(config);
  if (rc) return rc;
  if (max_batch < 1 || max_seq < 1 || (int64_t)max_batch * max_seq > INT_MAX / 4)
    return herd_seterr(HERD_EINVAL, "model_new: bad activation size max_batch=%d max_seq=%d",
                       max_batch, max_seq);
  herd_model *m = calloc(1, sizeof *m);
  if (!m) return herd_seterr(HERD_ENOMEM, "model_new: out of memory");
  m->be = backend;
  m->host = backend == &herd_cpu_backend;
  m->config = *config;
  m->max_batch = max_batch, m->max_seq = max_seq;
  m->n_params = layout(config, m->tensors, &m->n_tensors);
  m->train[TRUNK] = m->train[LM_HEAD] = m->train[SCORE] = 1;
  size_t np = m->n_params;
  int rc_alloc = HERD_OK;
  void **buffers[] = {(void **)&m->params, (void **)&m->grads, (void **)&m->m, (void **)&m->v};
  for (size_t i = 0; i < sizeof buffers / sizeof *buffers && !rc_alloc; i++)
    rc_alloc = backend->alloc(buffers[i], np * sizeof(float));

  size_t C = (size_t)config->dim, L = (size_t)config->n_layers, H = (size_t)config->n_heads;
  size_t KVD = (size_t)config->n_kv_heads * (size_t)head_dim(config);
  size_t F = (size_t)config->hidden_dim, V = (size_t)config->vocab_size;
  size_t N = (size_t)max_batch * (size_t)max_seq;
  // Sizes in floats, in the order of the acts struct (pos is int32_t, also 4 bytes).
  size_t sizes[] = {(L + 1) * N * C, L * N * C, L * N * C, L * N, L * N * C, L * N * KVD,
                    L * N * KVD, L * N * C, L * N * H, L * N * C, L * N, L * N * F, L * N * F,
                    L * N * F, N * C, N, N * V, N, N, N, N,
                    // scratch
                    N * C, N * C, N * C, N * C, N * C, N * KVD, N * KVD, N * C, N * KVD, N * F,
                    N * F, N * F, N * V};
  float **ptrs[] = {
      &m->a.resid,  &m->a.mid,   &m->a.ln1,    &m->a.rstd1,  &m->a.q,      &m->a.k,       &m->a.v,
      &m->a.att,    &m->a.lse,   &m->a.ln2,    &m->a.rstd2,  &m->a.gate,   &m->a.up,      &m->a.swi,
      &m->a.xf,     &m->a.rstdf, &m->a.logits, &m->a.scores, &m->a.losses, &m->a.weights, NULL,
      &m->a.dresid, &m->a.dxf,   &m->a.dln,    &m->a.datt,   &m->a.dq,     &m->a.dk,      &m->a.dv,
      &m->a.dqpre,  &m->a.dkpre, &m->a.dgate,  &m->a.dup,    &m->a.dswi,   &m->a.dlogits};
  enum { N_ACTS = sizeof sizes / sizeof *sizes };
  _Static_assert(sizeof ptrs / sizeof *ptrs == N_ACTS, "activation table");
  _Static_assert(sizeof(int32_t) == sizeof(float), "positions share the float arena");
  sizes[16] = sizes[N_ACTS - 1] = 0;  // logits: allocated on demand (ensure_full_logits)
  size_t total = 0;
  for (int i = 0; i < N_ACTS; i++) total += sizes[i];
  if (!rc_alloc) rc_alloc = backend->alloc((void **)&m->act_memory, total * sizeof(float));
  m->act_bytes = total * sizeof(float);
  if (!rc_alloc && !m->host) {
    rc_alloc = backend->alloc((void **)&m->inputs, 4 * N * sizeof(int32_t));
    if (!rc_alloc) rc_alloc = backend->alloc((void **)&m->input_floats, N * sizeof(float));
    m->host_inputs = malloc(N * sizeof(int32_t));
    if (!rc_alloc && !m->host_inputs) rc_alloc = HERD_ENOMEM;
  }
  if (!rc_alloc && config->lm_head) {
    // default chunk: about 16M logits (64 MiB), at most the whole batch
    size_t rows = ((size_t)1 << 24) / V;
    m->head_rows = (int)(rows < 1 ? 1 : rows > N ? N : rows);
    rc_alloc =
        backend->alloc((void **)&m->head_chunk, 2 * (size_t)m->head_rows * V * sizeof(float));
  }
  if (rc_alloc) {
    herd_model_free(m);
    return herd_seterr(HERD_ENOMEM,
                       "model_new: out of memory (%zu parameters, %zu activation "
                       "bytes)",
                       np, total * sizeof(float));
  }
  float *cursor = m->act_memory;
  for (int i = 0; i < N_ACTS; i++) {
    if (ptrs[i])
      *ptrs[i] = sizes[i] ? cursor : NULL;
    else
      m->a.pos = (int32_t *)(void *)cursor;
    cursor += sizes[i];
  }
  slice(&m->p, m->params, m);
  slice(&m->g, m->grads, m);
  *out = m;
  return HERD_OK;
}

void herd_model_free(herd_model *model) {
  if (!model) return;
  void *buffers[] = {
      model->params,      model->grads,        model->m,        model->v,    model->act_memory,
      model->inputs,      model->input_floats, model->params16, model->in16, model->dout16,
      model->full_logits, model->head_chunk};
  for (size_t i = 0; i < sizeof buffers / sizeof *buffers; i++)
    if (buffers[i]) model->be->release(buffers[i]);
  free(model->host_inputs);
  free(model);
}

// The initial values of the parameter buffer, written to host memory `w`.
static void initial_values(const herd_model *model, float *params, uint64_t seed) {
  for (int i = 0; i < model->n_tensors; i++) {
    const tensor_info *t = &model->tensors[i];
    float *w = params + t->offset;
    if (!t->decay) {  // RMSNorm weights
      for (size_t j = 0; j < t->size; j++) w[j] = 1.0f;
      continue;
    }
    // Counters = buffer offsets: every element draws from its own Philox counter.
    herd_rng_normal(w, (int64_t)t->size, seed, t->offset);
    for (size_t j = 0; j < t->size; j++) w[j] *= 0.02f;
  }
}

int herd_model_init(herd_model *model, uint64_t seed) {
  const herd_backend *be = model->be;
  size_t bytes = model->n_params * sizeof(float);
  model->steps = 0;
  model->fwd_b = 0;
  model->params16_stale = 1;
  if (model->host) {
    initial_values(model, model->params, seed);
  } else {  // drawn on the host (the same Philox streams), then copied
    float *values = malloc(bytes);
    if (!values) return herd_seterr(HERD_ENOMEM, "model_init: out of memory (%zu bytes)", bytes);
    initial_values(model, values, seed);
    int rc = be->upload(model->params, values, bytes);
    free(values);
    if (rc) return rc;
  }
  TRY(be->zero(model->grads, bytes));
  TRY(be->zero(model->m, bytes));
  TRY(be->zero(model->v, bytes));
  return HERD_OK;
}

// ---------------------------------------------------------------- accessors

const herd_model_config *herd_model_get_config(const herd_model *model) {
  return &model->config;
}

float *herd_model_param_buffer(herd_model *model, size_t *n) {
  if (n) *n = model->n_params;
  model->params16_stale = 1;  // the caller may write through the pointer
  return model->params;
}

float *herd_model_grad_buffer(herd_model *model, size_t *n) {
  if (n) *n = model->n_params;
  return model->grads;
}

void herd_model_param_slices(herd_model *model, herd_model_params *params,
                             herd_model_params *grads) {
  if (params) model->params16_stale = 1;
  if (params) *params = model->p;
  if (grads) *grads = model->g;
}

const char *herd_model_device(const herd_model *model) {
  return model->be->name;
}

int herd_model_on_host(const herd_model *model) {
  return model->host;
}

// Where `which` lives and how many floats it holds now.
static float *buffer_of(const herd_model *m, herd_model_buffer which, size_t *count) {
  switch (which) {
    case HERD_MODEL_PARAMS:
      *count = m->n_params;
      return m->params;
    case HERD_MODEL_GRADS:
      *count = m->n_params;
      return m->grads;
    case HERD_MODEL_LOGITS:
      *count =
          m->fwd_b && m->config.lm_head ? (size_t)m->fwd_b * m->fwd_t * m->config.vocab_size : 0;
      return m->a.logits;
    case HERD_MODEL_SCORES:
      *count = m->fwd_b ? (size_t)m->fwd_scores : 0;
      return m->a.scores;
    case HERD_MODEL_ADAM_M:
      *count = m->n_params;
      return m->m;
    case HERD_MODEL_ADAM_V:
      *count = m->n_params;
      return m->v;
  }
  *count = 0;
  return NULL;
}

static const char *const BUFFER_NAMES[] = {"parameters", "gradients",     "logits",
                                           "scores",     "AdamW moments", "AdamW moments"};

int herd_model_read(const herd_model *model, herd_model_buffer which, float *host, size_t count) {
  if ((unsigned)which > HERD_MODEL_ADAM_V)
    return herd_seterr(HERD_EINVAL, "model_read: unknown buffer %d", (int)which);
  size_t have;
  float *src = buffer_of(model, which, &have);
  if (count > have)
    return herd_seterr(HERD_EINVAL, "model_read: %zu %s asked for, the model holds %zu", count,
                       BUFFER_NAMES[which], have);
  return model->be->download(host, src, count * sizeof(float));
}

int herd_model_write(herd_model *model, herd_model_buffer which, const float *host, size_t count) {
  if (which == HERD_MODEL_LOGITS || which == HERD_MODEL_SCORES ||
      (unsigned)which > HERD_MODEL_ADAM_V)
    return herd_seterr(HERD_EINVAL,
                       "model_write: only parameters, gradients and moments can be written");
  size_t have;
  float *dst = buffer_of(model, which, &have);
  if (count != have)
    return herd_seterr(HERD_EINVAL, "model_write: %zu %s given, the model holds %zu", count,
                       BUFFER_NAMES[which], have);
  if (which == HERD_MODEL_PARAMS) model->params16_stale = 1;
  return model->be->upload(dst, host, count * sizeof(float));
}

// Copies `bytes` from `src` in one backend's memory to `dst` in another's: directly where one
// side is the host, else through host memory a slice at a time (two devices of different kinds).
static int copy_across(const herd_backend *to, void *dst, const herd_backend *from, const void *src,
                       size_t bytes) {
  if (from == &herd_cpu_backend) return to->upload(dst, src, bytes);
  if (to == &herd_cpu_backend) return from->download(dst, src, bytes);
  const size_t slice_bytes = (size_t)64 << 20;
  void *staging = malloc(bytes < slice_bytes ? bytes : slice_bytes);
  if (!staging && bytes) return herd_seterr(HERD_ENOMEM, "model_to: out of host memory");
  int rc = HERD_OK;
  for (size_t done = 0; done < bytes && !rc; done += slice_bytes) {
    size_t n = bytes - done < slice_bytes ? bytes - done : slice_bytes;
    rc = from->download(staging, (const char *)src + done, n);
    if (!rc) rc = to->upload((char *)dst + done, staging, n);
  }
  free(staging);
  return rc;
}

int herd_model_to(herd_model *model, const herd_backend *backend, int max_batch, int max_seq) {
  if (!model || !backend) return herd_seterr(HERD_EINVAL, "model_to: NULL argument");
  if (max_batch <= 0) max_batch = model->max_batch;
  if (max_seq <= 0) max_seq = model->max_seq;
  if (backend == model->be && max_batch == model->max_batch && max_seq == model->max_seq)
    return HERD_OK;
  herd_model *moved;
  TRY(herd_model_new_on(&moved, &model->config, max_batch, max_seq, backend));
  float *from[4] = {model->params, model->grads, model->m, model->v};
  float *to[4] = {moved->params, moved->grads, moved->m, moved->v};
  int rc = HERD_OK;
  for (int i = 0; i < 4 && !rc; i++)
    rc = copy_across(backend, to[i], model->be, from[i], model->n_params * sizeof(float));
  if (rc) {
    herd_model_free(moved);
    return rc;
  }
  if (!rc && model->bf16) rc = herd_model_set_precision(moved, HERD_BF16);
  if (rc) {
    herd_model_free(moved);
    return rc;
  }
  moved->steps = model->steps;
  memcpy(moved->train, model->train, sizeof model->train);
  // Swap the contents, so the caller's pointer now holds the moved model, and free the old.
  herd_model old = *model;
  *model = *moved;
  *moved = old;
  herd_model_free(moved);
  return HERD_OK;
}

// The widest matmul operand, in elements per row: inputs (C or F), output gradients (C, KVD, F
// or V).
static size_t widest_operand(const herd_model_config *c) {
  size_t widest = (size_t)c->dim > (size_t)c->hidden_dim ? (size_t)c->dim : (size_t)c->hidden_dim;
  if (c->lm_head && (size_t)c->vocab_size > widest) widest = (size_t)c->vocab_size;
  return widest;
}

// The full (N, V) logits and their gradients, for herd_model_forward and logprobs.
static int ensure_full_logits(herd_model *m) {
  if (m->full_logits || !m->config.lm_head) return HERD_OK;
  size_t nv = (size_t)m->max_batch * m->max_seq * m->config.vocab_size;
  if (m->be->alloc((void **)&m->full_logits, 2 * nv * sizeof(float)))
    return herd_seterr(HERD_ENOMEM,
                       "model: out of memory for the full logits (2 x %zu floats; "
                       "herd_model_forward_backward trains without them)",
                       nv);
  m->a.logits = m->full_logits, m->a.dlogits = m->full_logits + nv;
  return HERD_OK;
}

int herd_model_set_head_rows(herd_model *model, int rows) {
  if (!model->config.lm_head) return HERD_OK;
  size_t n = (size_t)model->max_batch * model->max_seq, v = (size_t)model->config.vocab_size;
  if (rows < 1 || (size_t)rows > n)
    return herd_seterr(HERD_EINVAL, "model_set_head_rows: %d rows (1 to %zu)", rows, n);
  float *chunk;
  TRY(model->be->alloc((void **)&chunk, 2 * (size_t)rows * v * sizeof(float)));
  model->be->release(model->head_chunk);
  model->head_chunk = chunk, model->head_rows = rows;
  return HERD_OK;
}

int herd_model_set_precision(herd_model *model, herd_dtype compute) {
  if (compute != HERD_F32 && compute != HERD_BF16)
    return herd_seterr(HERD_EINVAL,
                       "model_set_precision: %s is not a compute precision (f32, bf16)",
                       herd_dtype_name(compute));
  int want = compute == HERD_BF16;
  if (want == model->bf16) return HERD_OK;
  const herd_backend *be = model->be;
  if (!want) {
    be->release(model->params16), be->release(model->in16), be->release(model->dout16);
    model->params16 = model->in16 = model->dout16 = NULL;
    model->bf16 = 0;
    return HERD_OK;
  }
  size_t rows = (size_t)model->max_batch * model->max_seq;
  size_t operand = rows * widest_operand(&model->config) * sizeof(uint16_t);
  uint16_t *params16 = NULL, *in16 = NULL, *dout16 = NULL;
  int rc = be->alloc((void **)&params16, model->n_params * sizeof(uint16_t));
  if (!rc) rc = be->alloc((void **)&in16, operand);
  if (!rc) rc = be->alloc((void **)&dout16, operand);
  if (rc) {
    if (params16) be->release(params16);
    if (in16) be->release(in16);
    return herd_seterr(HERD_ENOMEM,
                       "model_set_precision: out of memory for bf16 copies (%zu bytes)",
                       model->n_params * sizeof(uint16_t) + 2 * operand);
  }
  model->params16 = params16, model->in16 = in16, model->dout16 = dout16;
  model->bf16 = 1;
  model->params16_stale = 1;
  model->fwd_b = 0;  // a backward must follow a forward in the same precision
  return HERD_OK;
}

const herd_backend *herd_model_backend(const herd_model *model) {
  return model->be;
}

static int prepare_precision(herd_model *m);

int herd_model_weights_bf16(herd_model *model, const uint16_t **params16) {
  *params16 = NULL;
  if (!model->bf16) return HERD_OK;
  TRY(prepare_precision(model));
  *params16 = model->params16;
  return HERD_OK;
}

herd_dtype herd_model_precision(const herd_model *model) {
  return model->bf16 ? HERD_BF16 : HERD_F32;
}

size_t herd_model_activation_bytes(const herd_model *model) {
  size_t v = (size_t)model->config.vocab_size, n = (size_t)model->max_batch * model->max_seq;
  size_t head = 2 * (size_t)model->head_rows * v + (model->full_logits ? 2 * n * v : 0);
  return model->act_bytes + head * sizeof(float);
}

void herd_model_set_trainable(herd_model *model, int trunk, int lm_head, int scalar_head) {
  int want[3] = {trunk != 0, lm_head != 0, scalar_head != 0};
  for (int i = 0; i < model->n_tensors; i++) {
    const tensor_info *t = &model->tensors[i];
    if (!want[t->group]) model->be->zero(model->grads + t->offset, t->size * sizeof(float));
  }
  memcpy(model->train, want, sizeof want);
}

const float *herd_model_logits(const herd_model *model) {
  return model->a.logits;
}

const float *herd_model_scores(const herd_model *model) {
  return model->a.scores;
}

int64_t herd_model_step_count(const herd_model *model) {
  return model->steps;
}

float *herd_model_adam_moments(herd_model *model, float **second) {
  if (second) *second = model->v;
  return model->m;
}

void herd_model_set_step_count(herd_model *model, int64_t steps) {
  model->steps = steps;
}

void herd_model_zero_grad(herd_model *model) {
  model->be->zero(model->grads, model->n_params * sizeof(float));
}

// ---------------------------------------------------------------- forward

static int check_batch(const herd_model *m, const herd_batch *bt) {
  const herd_model_config *c = &m->config;
  if (!bt || !bt->tokens) return herd_seterr(HERD_EINVAL, "batch: no tokens");
  if (bt->b < 1 || bt->t < 1 || bt->b > m->max_batch || bt->t > m->max_seq)
    return herd_seterr(HERD_EINVAL,
                       "batch: shape b=%d t=%d outside the allocated max_batch=%d max_seq=%d",
                       bt->b, bt->t, m->max_batch, m->max_seq);
  int n = bt->b * bt->t;
  for (int i = 0; i < n; i++)
    if (bt->tokens[i] < 0 || bt->tokens[i] >= c->vocab_size)
      return herd_seterr(HERD_EINVAL, "batch: tokens[%d] = %d is outside [0, vocab_size = %d)", i,
                         (int)bt->tokens[i], c->vocab_size);
  if (bt->positions)
    for (int i = 0; i < n; i++)
      if (bt->positions[i] < 0 || bt->positions[i] >= c->max_seq_len)
        return herd_seterr(HERD_EINVAL,
                           "batch: positions[%d] = %d is outside [0, max_seq_len = %d)", i,
                           (int)bt->positions[i], c->max_seq_len);
  if (!bt->positions && bt->t > c->max_seq_len)
    return herd_seterr(HERD_EINVAL, "batch: t = %d exceeds max_seq_len = %d", bt->t,
                       c->max_seq_len);
  if (bt->targets) {
    if (!c->lm_head) return herd_seterr(HERD_EINVAL, "batch: targets given but no lm_head");
    for (int i = 0; i < n; i++)
      if (bt->targets[i] < -1 || bt->targets[i] >= c->vocab_size)
        return herd_seterr(HERD_EINVAL, "batch: targets[%d] = %d is outside [-1, vocab_size = %d)",
                           i, (int)bt->targets[i], c->vocab_size);
  }
  if (bt->n_scores < 0 || bt->n_scores > n)
    return herd_seterr(HERD_EINVAL, "batch: n_scores = %d outside [0, b*t = %d]", bt->n_scores, n);
  if (bt->n_scores) {
    if (!c->scalar_head)
      return herd_seterr(HERD_EINVAL, "batch: n_scores = %d but no scalar_head", bt->n_scores);
    if (!bt->score_positions) return herd_seterr(HERD_EINVAL, "batch: no score_positions");
    for (int i = 0; i < bt->n_scores; i++)
      if (bt->score_positions[i] < 0 || bt->score_positions[i] >= n)
        return herd_seterr(HERD_EINVAL, "batch: score_positions[%d] = %d is outside [0, %d)", i,
                           (int)bt->score_positions[i], n);
  }
  if (!isfinite(bt->loss_scale)) return herd_seterr(HERD_EINVAL, "batch: loss_scale is not finite");
  return HERD_OK;
}

// `src` (host memory) as the backend reads it: itself on the host; elsewhere copied into `slot`
// (the backend's memory). After a failure (*rc set) nothing more is copied.
static const void *place(const herd_model *m, const void *src, void *slot, size_t bytes, int *rc) {
  if (m->host || *rc) return src;
  *rc = m->be->upload(slot, src, bytes);
  return slot;
}

// The batch as the backend reads it, with the default positions (0..T-1 in each row) and loss
// weights (1 where target >= 0; every weight -1 for logprob_weights: log p = -nll) computed on
// the host: in the activation arena on the CPU, in host scratch elsewhere (then copied).
static int stage_batch(herd_model *m, const herd_batch *bt, int logprob_weights, herd_batch *out) {
  acts *a = &m->a;
  int n = bt->b * bt->t, rc = HERD_OK;
  size_t NM = (size_t)m->max_batch * m->max_seq, ints = (size_t)n * sizeof(int32_t);
  *out = *bt;
  out->tokens = place(m, bt->tokens, m->inputs, ints, &rc);
  const int32_t *positions = bt->positions;
  if (!positions) {
    int32_t *pos = m->host ? a->pos : m->host_inputs;
    for (int i = 0; i < n; i++) pos[i] = i % bt->t;
    positions = pos;
  }
  out->positions = place(m, positions, a->pos, ints, &rc);
  if (bt->segments) out->segments = place(m, bt->segments, m->inputs + NM, ints, &rc);
  if (bt->targets) {
    out->targets = place(m, bt->targets, m->inputs + 2 * NM, ints, &rc);
    const float *weights = bt->weights;
    if (logprob_weights || !weights) {
      float *w = m->host ? a->weights : m->host_inputs;  // the positions were copied already
      for (int i = 0; i < n; i++)
        w[i] = logprob_weights ? -1.0f : bt->targets[i] >= 0 ? 1.0f : 0.0f;
      weights = w;
    }
    out->weights = place(m, weights, a->weights, (size_t)n * sizeof(float), &rc);
  }
  if (bt->n_scores) {
    size_t p = (size_t)bt->n_scores;
    out->score_positions =
        place(m, bt->score_positions, m->inputs + 3 * NM, p * sizeof(int32_t), &rc);
    if (bt->dscores) out->dscores = place(m, bt->dscores, m->input_floats, p * sizeof(float), &rc);
  }
  return rc;
}

// ---------------------------------------------------------------- matmuls in either precision

// The bf16 copy of `weight` (a slice of the parameter buffer).
static const uint16_t *weight16(const herd_model *m, const float *weight) {
  return m->params16 + (weight - m->params);
}

// in16 = `inp` (count floats) rounded, unless it holds that already.
static int round_input(herd_model *m, const float *inp, size_t count) {
  if (m->in16_source == inp && m->in16_count == count) return HERD_OK;
  m->in16_source = NULL;
  TRY(m->be->to_bf16(m->in16, inp, (int64_t)count));
  m->in16_source = inp, m->in16_count = count;
  return HERD_OK;
}

// Before a pass: the weights' bf16 copy made again if they may have changed; in16 forgotten
// (activations are rewritten in place by each pass).
static int prepare_precision(herd_model *m) {
  m->in16_source = NULL;
  if (!m->bf16 || !m->params16_stale) return HERD_OK;
  TRY(m->be->to_bf16(m->params16, m->params, (int64_t)m->n_params));
  m->params16_stale = 0;
  return HERD_OK;
}

// out(N,OC) = inp(N,C) @ weight^T, in the model's precision.
static int linear(herd_model *m, float *out, const float *inp, const float *weight, int n, int c,
                  int oc) {
  if (!m->bf16) return m->be->linear_forward(out, inp, weight, NULL, n, c, oc);
  TRY(round_input(m, inp, (size_t)n * c));
  return m->be->linear_forward_bf16(out, m->in16, weight16(m, weight), n, c, oc);
}

// dinp += dout @ weight, dweight += dout^T @ inp, in the model's precision.
static int linear_back(herd_model *m, float *dinp, float *dweight, const float *dout,
                       const float *inp, const float *weight, int n, int c, int oc) {
  if (!m->bf16) return m->be->linear_backward(dinp, dweight, NULL, dout, inp, weight, n, c, oc);
  if (!dinp && !dweight) return HERD_OK;
  TRY(m->be->to_bf16(m->dout16, dout, (int64_t)n * oc));
  if (dweight) TRY(round_input(m, inp, (size_t)n * c));
  return m->be->linear_backward_bf16(dinp, dweight, m->dout16, m->in16, weight16(m, weight), n, c,
                                     oc);
}

// Runs the trunk, the final norm, the scalar head and, with lm_logits, the LM head over every
// row (into the full logits).
static int forward_pass(herd_model *m, const herd_batch *bt, int lm_logits) {
  const herd_backend *be = m->be;
  const herd_model_config *c = &m->config;
  acts *a = &m->a;
  const herd_model_params *p = &m->p;
  int B = bt->b, T = bt->t, N = B * T, C = c->dim, L = c->n_layers, H = c->n_heads;
  int KVH = c->n_kv_heads, D = head_dim(c), KVD = KVH * D, F = c->hidden_dim;
  size_t NM = (size_t)m->max_batch * m->max_seq;  // per-layer stride in rows
  const int32_t *pos = bt->positions;             // staged: never NULL
  TRY(prepare_precision(m));
  TRY(be->embedding_forward(a->resid, bt->tokens, p->embed, N, c->vocab_size, C));  // (N,C)
  for (int l = 0; l < L; l++) {
    const float *x = a->resid + l * NM * C;  // (N,C)
    float *ln1 = a->ln1 + l * NM * C, *rstd1 = a->rstd1 + l * NM;
    float *q = a->q + l * NM * C, *k = a->k + l * NM * KVD, *v = a->v + l * NM * KVD;
    float *att = a->att + l * NM * C, *lse = a->lse + l * NM * H;
    float *mid = a->mid + l * NM * C, *ln2 = a->ln2 + l * NM * C, *rstd2 = a->rstd2 + l * NM;
    float *gate = a->gate + l * NM * F, *up = a->up + l * NM * F, *swi = a->swi + l * NM * F;
    float *next = a->resid + (l + 1) * NM * C;
    TRY(be->rmsnorm_forward(ln1, rstd1, x, p->attn_norm + (size_t)l * C, N, C, c->norm_eps));
    TRY(linear(m, a->dq, ln1, p->wq + (size_t)l * C * C, N, C, C));
    TRY(linear(m, a->dk, ln1, p->wk + (size_t)l * KVD * C, N, C, KVD));
    TRY(linear(m, v, ln1, p->wv + (size_t)l * KVD * C, N, C, KVD));
    TRY(be->rope_forward(q, a->dq, pos, N, H, D, c->rope_theta));
    TRY(be->rope_forward(k, a->dk, pos, N, KVH, D, c->rope_theta));
    TRY(be->attention_forward(att, lse, q, k, v, bt->segments, B, T, H, KVH, D));
    TRY(linear(m, a->dqpre, att, p->wo + (size_t)l * C * C, N, C, C));
    TRY(be->add(mid, x, a->dqpre, (int64_t)N * C));
    TRY(be->rmsnorm_forward(ln2, rstd2, mid, p->mlp_norm + (size_t)l * C, N, C, c->norm_eps));
    TRY(linear(m, gate, ln2, p->w_gate + (size_t)l * F * C, N, C, F));
    TRY(linear(m, up, ln2, p->w_up + (size_t)l * F * C, N, C, F));
    TRY(be->swiglu_forward(swi, gate, up, (int64_t)N * F));
    TRY(linear(m, a->dqpre, swi, p->w_down + (size_t)l * C * F, N, F, C));
    TRY(be->add(next, mid, a->dqpre, (int64_t)N * C));
  }
  TRY(be->rmsnorm_forward(a->xf, a->rstdf, a->resid + L * NM * C, p->final_norm, N, C,
                          c->norm_eps));
  if (c->lm_head && lm_logits) TRY(linear(m, a->logits, a->xf, p->lm_head, N, C, c->vocab_size));
  if (bt->n_scores)
    TRY(be->scalar_head_forward(a->scores, a->xf, p->score, 0.0f, bt->score_positions, bt->n_scores,
                                N, C));
  return HERD_OK;
}

// The batch's loss scale: loss_scale, or 1 / (the targets >= 0) when 0.
static float loss_scale_of(const herd_batch *bt) {
  if (bt->loss_scale != 0) return bt->loss_scale;
  int n = bt->b * bt->t, count = 0;
  for (int i = 0; i < n; i++) count += bt->targets[i] >= 0;
  return count ? 1.0f / (float)count : 0.0f;
}

int herd_model_forward(herd_model *model, const herd_batch *batch, float *loss) {
  model->fwd_b = 0;
  int rc = check_batch(model, batch);
  if (rc) return rc;
  const herd_backend *be = model->be;
  TRY(ensure_full_logits(model));
  herd_batch staged;
  TRY(stage_batch(model, batch, 0, &staged));
  TRY(forward_pass(model, &staged, 1));
  int n = batch->b * batch->t;
  float result = 0;
  if (batch->targets) {
    float scale = loss_scale_of(batch);
    TRY(be->weighted_nll(model->a.losses, NULL, model->a.logits, staged.targets, staged.weights,
                         1.0f, n, model->config.vocab_size));
    double sum;
    TRY(be->sum(&sum, model->a.losses, n));
    result = (float)(scale * sum);
    model->fwd_scale = scale;
  }
  if (loss) *loss = result;
  if (!isfinite(result))
    return herd_seterr(HERD_EINVAL, "step %lld: loss is %s", (long long)model->steps + 1,
                       isnan(result) ? "nan" : "inf");
  model->fwd_b = batch->b, model->fwd_t = batch->t;
  model->fwd_targets = batch->targets != NULL;
  model->fwd_scores = batch->n_scores;
  return HERD_OK;
}

// ---------------------------------------------------------------- backward

// The trunk's backward from dxf (N,C), the gradient of the final norm's output: every layer
// down to the embedding. `batch` is staged.
static int trunk_backward(herd_model *model, const herd_batch *batch) {
  const herd_backend *be = model->be;
  const herd_model_config *c = &model->config;
  acts *a = &model->a;
  const herd_model_params *p = &model->p;
  const herd_model_params *g = &model->g;
  int B = batch->b, T = batch->t, N = B * T, C = c->dim, L = c->n_layers, H = c->n_heads;
  int KVH = c->n_kv_heads, D = head_dim(c), KVD = KVH * D, F = c->hidden_dim;
  size_t NM = (size_t)model->max_batch * model->max_seq;
  const int32_t *pos = batch->positions;
  float *dres = a->dresid;  // (N,C) gradient of the residual stream, walking down the layers
  TRY(be->zero(dres, (size_t)N * C * sizeof(float)));
  TRY(be->rmsnorm_backward(dres, g->final_norm, a->dxf, a->resid + L * NM * C, p->final_norm,
                           a->rstdf, N, C));
  for (int l = L - 1; l >= 0; l--) {
    const float *x = a->resid + l * NM * C;
    const float *ln1 = a->ln1 + l * NM * C, *rstd1 = a->rstd1 + l * NM;
    const float *q = a->q + l * NM * C, *k = a->k + l * NM * KVD, *v = a->v + l * NM * KVD;
    const float *att = a->att + l * NM * C, *lse = a->lse + l * NM * H;
    const float *mid = a->mid + l * NM * C, *ln2 = a->ln2 + l * NM * C;
    const float *rstd2 = a->rstd2 + l * NM;
    const float *gate = a->gate + l * NM * F, *up = a->up + l * NM * F;
    const float *swi = a->swi + l * NM * F;
    size_t lc = (size_t)l * C, lcc = lc * C, lkc = (size_t)l * KVD * C, lfc = (size_t)l * F * C;

    // MLP: next = mid + (silu(ln2 Wg^T) * (ln2 Wu^T)) Wd^T; dres holds d(next).
    TRY(be->zero(a->dswi, (size_t)N * F * sizeof(float)));
    TRY(linear_back(model, a->dswi, g->w_down + lfc, dres, swi, p->w_down + lfc, N, F, C));
    TRY(be->zero(a->dgate, (size_t)N * F * sizeof(float)));
    TRY(be->zero(a->dup, (size_t)N * F * sizeof(float)));
    TRY(be->swiglu_backward(a->dgate, a->dup, a->dswi, gate, up, (int64_t)N * F));
    TRY(be->zero(a->dln, (size_t)N * C * sizeof(float)));
    TRY(linear_back(model, a->dln, g->w_gate + lfc, a->dgate, ln2, p->w_gate + lfc, N, C, F));
    TRY(linear_back(model, a->dln, g->w_up + lfc, a->dup, ln2, p->w_up + lfc, N, C, F));
    TRY(be->rmsnorm_backward(dres, g->mlp_norm + lc, a->dln, mid, p->mlp_norm + lc, rstd2, N,
                             C));  // dres now holds d(mid)

    // Attention: mid = x + attention(rope(ln1 Wq^T), rope(ln1 Wk^T), ln1 Wv^T) Wo^T.
    TRY(be->zero(a->datt, (size_t)N * C * sizeof(float)));
    TRY(linear_back(model, a->datt, g->wo + lcc, dres, att, p->wo + lcc, N, C, C));
    TRY(be->zero(a->dq, (size_t)N * C * sizeof(float)));
    TRY(be->zero(a->dk, (size_t)N * KVD * sizeof(float)));
    TRY(be->zero(a->dv, (size_t)N * KVD * sizeof(float)));
    TRY(be->attention_backward(a->dq, a->dk, a->dv, a->datt, q, k, v, att, lse, batch->segments, B,
                               T, H, KVH, D));
    TRY(be->zero(a->dqpre, (size_t)N * C * sizeof(float)));
    TRY(be->zero(a->dkpre, (size_t)N * KVD * sizeof(float)));
    TRY(be->rope_backward(a->dqpre, a->dq, pos, N, H, D, c->rope_theta));
    TRY(be->rope_backward(a->dkpre, a->dk, pos, N, KVH, D, c->rope_theta));
    TRY(be->zero(a->dln, (size_t)N * C * sizeof(float)));
    TRY(linear_back(model, a->dln, g->wq + lcc, a->dqpre, ln1, p->wq + lcc, N, C, C));
    TRY(linear_back(model, a->dln, g->wk + lkc, a->dkpre, ln1, p->wk + lkc, N, C, KVD));
    TRY(linear_back(model, a->dln, g->wv + lkc, a->dv, ln1, p->wv + lkc, N, C, KVD));
    TRY(be->rmsnorm_backward(dres, g->attn_norm + lc, a->dln, x, p->attn_norm + lc, rstd1, N,
                             C));  // dres now holds d(x)
  }
  TRY(be->embedding_backward(g->embed, dres, batch->tokens, N, C));
  return HERD_OK;
}

// The gradients the heads send into the trunk and their own, for a staged batch. `lm` is how
// the LM head goes: 0 none, 1 from the full logits of the last forward, 2 in chunks of
// head_rows rows whose logits are made here (forward_backward; *losses gets the per-token
// losses). dxf (N,C) is set.
static int heads_backward(herd_model *model, const herd_batch *batch, int lm, float scale) {
  const herd_backend *be = model->be;
  const herd_model_config *c = &model->config;
  acts *a = &model->a;
  const herd_model_params *p = &model->p, *g = &model->g;
  int N = batch->b * batch->t, C = c->dim, V = c->vocab_size;
  int trunk = model->train[TRUNK];
  // The tied LM head is the embedding table: a trunk parameter.
  float *dlm =
      c->tie_embeddings ? (trunk ? g->embed : NULL) : (model->train[LM_HEAD] ? g->lm_head : NULL);
  float *dxf = trunk ? a->dxf : NULL;
  TRY(be->zero(a->dxf, (size_t)N * C * sizeof(float)));
  if (lm == 1) {
    TRY(be->weighted_nll(a->losses, a->dlogits, a->logits, batch->targets, batch->weights, scale, N,
                         V));
    TRY(linear_back(model, dxf, dlm, a->dlogits, a->xf, p->lm_head, N, C, V));
  }
  for (int r0 = 0; lm == 2 && r0 < N; r0 += model->head_rows) {
    int rows = N - r0 < model->head_rows ? N - r0 : model->head_rows;
    float *logits = model->head_chunk, *dlogits = logits + (size_t)model->head_rows * V;
    const float *xf = a->xf + (size_t)r0 * C;
    TRY(linear(model, logits, xf, p->lm_head, rows, C, V));
    TRY(be->weighted_nll(a->losses + r0, dlogits, logits, batch->targets + r0, batch->weights + r0,
                         scale, rows, V));
    TRY(linear_back(model, dxf ? dxf + (size_t)r0 * C : NULL, dlm, dlogits, xf, p->lm_head, rows, C,
                    V));
  }
  if (batch->n_scores)
    TRY(be->scalar_head_backward(dxf, model->train[SCORE] ? g->score : NULL, NULL, batch->dscores,
                                 a->xf, p->score, batch->score_positions, batch->n_scores, C));
  return HERD_OK;
}

int herd_model_backward(herd_model *model, const herd_batch *batch) {
  if (!batch || model->fwd_b != batch->b || model->fwd_t != batch->t ||
      model->fwd_targets != (batch->targets != NULL))
    return herd_seterr(HERD_ESTATE, "backward: no successful forward of this batch");
  if (batch->n_scores && !batch->dscores)
    return herd_seterr(HERD_EINVAL, "backward: n_scores = %d but no dscores", batch->n_scores);
  if (!batch->targets && !batch->n_scores) return HERD_OK;
  herd_batch staged;
  TRY(stage_batch(model, batch, 0, &staged));  // from here on, arrays in the backend's memory
  model->in16_source = NULL;
  TRY(heads_backward(model, &staged, staged.targets ? 1 : 0, model->fwd_scale));
  return model->train[TRUNK] ? trunk_backward(model, &staged) : HERD_OK;
}

int herd_model_forward_backward(herd_model *model, const herd_batch *batch, float *loss) {
  model->fwd_b = 0;
  TRY(check_batch(model, batch));
  if (batch->n_scores && !batch->dscores)
    return herd_seterr(HERD_EINVAL, "forward_backward: n_scores = %d but no dscores",
                       batch->n_scores);
  herd_batch staged;
  TRY(stage_batch(model, batch, 0, &staged));
  TRY(forward_pass(model, &staged, 0));
  float result = 0, scale = batch->targets ? loss_scale_of(batch) : 0;
  if (batch->targets || batch->n_scores)
    TRY(heads_backward(model, &staged, batch->targets ? 2 : 0, scale));
  if (batch->targets) {
    double sum;
    TRY(model->be->sum(&sum, model->a.losses, batch->b * batch->t));
    result = (float)(scale * sum);
  }
  if (loss) *loss = result;
  if (!isfinite(result))
    return herd_seterr(HERD_EINVAL, "step %lld: loss is %s", (long long)model->steps + 1,
                       isnan(result) ? "nan" : "inf");
  if (!model->train[TRUNK] || (!batch->targets && !batch->n_scores)) return HERD_OK;
  model->in16_source = NULL;
  return trunk_backward(model, &staged);
}

// ---------------------------------------------------------------- optimizer

int herd_model_step(herd_model *model, const herd_adamw *opt, float *grad_norm) {
  long long step = (long long)model->steps + 1;
  if (!opt) return herd_seterr(HERD_EINVAL, "step %lld: no optimizer settings", step);
  struct {
    const char *name;
    float value;
    int ok;
  } checks[] = {{"lr", opt->lr, opt->lr >= 0},
                {"beta1", opt->beta1, opt->beta1 >= 0 && opt->beta1 < 1},
                {"beta2", opt->beta2, opt->beta2 >= 0 && opt->beta2 < 1},
                {"eps", opt->eps, opt->eps > 0},
                {"weight_decay", opt->weight_decay, opt->weight_decay >= 0},
                {"grad_clip", opt->grad_clip, opt->grad_clip >= 0}};
  for (size_t i = 0; i < sizeof checks / sizeof *checks; i++)
    if (!checks[i].ok || !isfinite(checks[i].value))
      return herd_seterr(HERD_EINVAL, "step %lld: adamw %s = %g is out of range", step,
                         checks[i].name, (double)checks[i].value);

  // Global norm over the trainable tensors, before clipping.
  const float *arrays[N_TENSORS];
  int64_t lengths[N_TENSORS];
  herd_param_range ranges[N_TENSORS];
  int count = 0;
  for (int i = 0; i < model->n_tensors; i++) {
    const tensor_info *t = &model->tensors[i];
    if (!model->train[t->group] || !t->size) continue;
    arrays[count] = model->grads + t->offset;
    lengths[count] = (int64_t)t->size;
    ranges[count++] = (herd_param_range){(int64_t)t->offset, (int64_t)t->size, t->decay};
  }
  double norm;
  TRY(model->be->global_norm(&norm, arrays, lengths, count));
  if (grad_norm) *grad_norm = (float)norm;
  if (!isfinite(norm))
    return herd_seterr(HERD_EINVAL, "step %lld: gradient norm is %s", step,
                       isnan(norm) ? "nan" : "inf");
  float clip = opt->grad_clip > 0 && norm > opt->grad_clip ? (float)(opt->grad_clip / norm) : 1;
  TRY(model->be->adamw(model->params, model->grads, model->m, model->v, ranges, count, opt,
                       model->steps + 1, clip));
  model->params16_stale = 1;
  model->steps++;
  return HERD_OK;
}

float herd_lr_cosine(int64_t step, float max_lr, int64_t warmup, int64_t total, float floor) {
  float min_lr = floor * max_lr;
  if (warmup > 0 && step < warmup) return max_lr * (float)(step > 0 ? step : 0) / (float)warmup;
  if (step >= total) return total > warmup ? min_lr : max_lr;
  const double pi = 3.14159265358979323846;
  double progress = (double)(step - warmup) / (double)(total - warmup);
  return (float)(min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(pi * progress)));
}

// ---------------------------------------------------------------- log-probabilities

int herd_model_logprobs(herd_model *model, const herd_batch *batch, float *out) {
  model->fwd_b = 0;
  int rc = check_batch(model, batch);
  if (rc) return rc;
  if (!batch->targets) return herd_seterr(HERD_EINVAL, "logprobs: batch has no targets");
  herd_batch lm = *batch;
  lm.n_scores = 0;  // the scalar head is not needed
  herd_batch staged;
  // log p = -nll: the fused kernel's stable log-softmax with weight -1.
  TRY(ensure_full_logits(model));
  TRY(stage_batch(model, &lm, 1, &staged));
  TRY(forward_pass(model, &staged, 1));
  int n = batch->b * batch->t;
  if (!model->host) {  // computed on the device, then copied to the caller's host array
    TRY(model->be->weighted_nll(model->a.losses, NULL, model->a.logits, staged.targets,
                                staged.weights, 1.0f, n, model->config.vocab_size));
    return model->be->download(out, model->a.losses, (size_t)n * sizeof(float));
  }
  return model->be->weighted_nll(out, NULL, model->a.logits, staged.targets, staged.weights, 1.0f,
                                 n, model->config.vocab_size);
}
