// Batched sampling with a KV cache. See generate.h.
//
// Every forward call processes a set of rows, each one token of one sequence at one position:
// a prefill chunk is the rows of a prompt (positions 0..n-1), a decoding step is one row per
// active sequence. Each layer first writes the rows' keys and values into the cache, then each
// row's query attends to the cached keys 0..position of its own sequence, which is causal
// within a chunk and sees everything earlier. The linear layers run over all rows at once, so
// decoding 16 sequences costs little more weight traffic than decoding one.
//
// The forward runs on the model's backend (runtime/backend.h): the CPU's kernels, or the GPU's
// with the cache and every activation in device memory. The cache is bf16 for a model in bf16
// precision (the matmuls then read bf16 operands as in training), else f32. Sampling runs on
// the host from the logits of the rows that need them, with the same code and Philox streams
// whatever the device: a seed gives the same draw on either.
#include "generate.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "rng.h"
#include "threads.h"
#include "vexp.h"

enum { PREFILL_ROWS = 256 };  // rows of one prefill chunk (a prompt may span several)

#define TRY(expr)                \
  do {                           \
    int try_rc_ = (expr);        \
    if (try_rc_) return try_rc_; \
  } while (0)

// ---------------------------------------------------------------- the cached forward

typedef struct kv_context {
  const herd_backend *be;
  herd_model_config cfg;
  herd_model_params p;  // in the backend's memory
  const float *lm_head;
  const uint16_t *params16;  // bf16 precision: the weights' bf16 copy (offsets as p's from embed)
  herd_dtype cache_dtype;
  size_t cache_elem;  // bytes per cached value
  int host;           // the backend reads host memory: no staging
  int n_seqs, max_len, max_rows;
  int head_dim, q_dim, kv_dim;
  void *k_cache, *v_cache;  // (L, n_seqs, max_len, KVH*D) of cache_dtype
  // backend scratch for up to max_rows rows
  float *x, *xn, *q, *k, *v, *att, *tmp, *gate, *up, *rstd, *logits_in, *logits;
  uint16_t *in16;        // a matmul input rounded to bf16 (bf16 precision)
  int32_t *inputs;       // off the host: the rows' tokens, sequences, positions and the rows
                         // whose logits are wanted, copied in at once (4 max_rows)
  int32_t *host_inputs;  // host memory: where they are gathered for that copy
} kv_context;

static void context_free(kv_context *ctx) {
  void *buffers[] = {ctx->k_cache,   ctx->v_cache, ctx->x,    ctx->xn,    ctx->q,  ctx->k,
                     ctx->v,         ctx->att,     ctx->tmp,  ctx->gate,  ctx->up, ctx->rstd,
                     ctx->logits_in, ctx->logits,  ctx->in16, ctx->inputs};
  for (size_t i = 0; ctx->be && i < sizeof buffers / sizeof *buffers; i++)
    if (buffers[i]) ctx->be->release(buffers[i]);
  free(ctx->host_inputs);
  memset(ctx, 0, sizeof *ctx);
}

static int context_init(kv_context *ctx, herd_model *model, int n_seqs, int max_len, int max_rows) {
  memset(ctx, 0, sizeof *ctx);
  ctx->be = herd_model_backend(model);
  ctx->host = herd_model_on_host(model);
  ctx->cfg = *herd_model_get_config(model);
  TRY(herd_model_weights_bf16(model, &ctx->params16));
  herd_model_param_slices(model, &ctx->p, NULL);
  const herd_model_config *c = &ctx->cfg;
  ctx->lm_head = c->tie_embeddings ? ctx->p.embed : ctx->p.lm_head;
  ctx->cache_dtype = ctx->params16 ? HERD_BF16 : HERD_F32;
  ctx->cache_elem = ctx->params16 ? sizeof(uint16_t) : sizeof(float);
  ctx->n_seqs = n_seqs, ctx->max_len = max_len, ctx->max_rows = max_rows;
  ctx->head_dim = c->dim / c->n_heads;
  ctx->q_dim = c->n_heads * ctx->head_dim;
  ctx->kv_dim = c->n_kv_heads * ctx->head_dim;
  const size_t cache = (size_t)c->n_layers * n_seqs * max_len * ctx->kv_dim * ctx->cache_elem;
  const size_t r = (size_t)max_rows, f = sizeof(float), i32 = sizeof(int32_t);
  size_t widest = (size_t)(c->hidden_dim > c->dim ? c->hidden_dim : c->dim);
  struct {
    void **ptr;
    size_t bytes;
  } buffers[] = {{&ctx->k_cache, cache},
                 {&ctx->v_cache, cache},
                 {(void **)&ctx->x, r * c->dim * f},
                 {(void **)&ctx->xn, r * c->dim * f},
                 {(void **)&ctx->tmp, r * c->dim * f},
                 {(void **)&ctx->q, r * ctx->q_dim * f},
                 {(void **)&ctx->att, r * ctx->q_dim * f},
                 {(void **)&ctx->k, r * ctx->kv_dim * f},
                 {(void **)&ctx->v, r * ctx->kv_dim * f},
                 {(void **)&ctx->gate, r * c->hidden_dim * f},
                 {(void **)&ctx->up, r * c->hidden_dim * f},
                 {(void **)&ctx->rstd, r * f},
                 {(void **)&ctx->logits_in, r * c->dim * f},
                 {(void **)&ctx->logits, r * c->vocab_size * f},
                 {(void **)&ctx->in16, ctx->params16 ? r * widest * sizeof(uint16_t) : 0},
                 {(void **)&ctx->inputs, ctx->host ? 0 : 4 * r * i32}};
  size_t total = 0;
  for (size_t i = 0; i < sizeof buffers / sizeof *buffers; i++) {
    total += buffers[i].bytes;
    if (buffers[i].bytes && ctx->be->alloc(buffers[i].ptr, buffers[i].bytes)) {
      context_free(ctx);
      return herd_seterr(HERD_ENOMEM,
                         "generate: cannot allocate the KV cache (%d sequences of %d "
                         "positions, %s) and buffers for %d rows on %s (%zu bytes so far)",
                         n_seqs, max_len, herd_dtype_name(ctx->cache_dtype), max_rows,
                         herd_model_device(model), total);
    }
  }
  if (!ctx->host && !(ctx->host_inputs = malloc(4 * r * i32))) {
    context_free(ctx);
    return herd_seterr(HERD_ENOMEM, "generate: out of host memory for %d rows", max_rows);
  }
  return HERD_OK;
}

// Copies positions [0, len) of sequence `from` to sequence `to`, in every layer.
static int cache_copy(kv_context *ctx, int from, int to, int len) {
  const size_t row = (size_t)ctx->kv_dim * ctx->cache_elem, bytes = (size_t)len * row;
  for (int l = 0; l < ctx->cfg.n_layers; l++) {
    const size_t layer = (size_t)l * ctx->n_seqs * ctx->max_len;
    const size_t src = (layer + (size_t)from * ctx->max_len) * row;
    const size_t dst = (layer + (size_t)to * ctx->max_len) * row;
    TRY(ctx->be->copy((char *)ctx->k_cache + dst, (char *)ctx->k_cache + src, bytes));
    TRY(ctx->be->copy((char *)ctx->v_cache + dst, (char *)ctx->v_cache + src, bytes));
  }
  return HERD_OK;
}

// Layer l's cache (k or v).
static void *layer_cache(const kv_context *ctx, void *cache, int l) {
  return (char *)cache + (size_t)l * ctx->n_seqs * ctx->max_len * ctx->kv_dim * ctx->cache_elem;
}

// out(rows, OC) = inp(rows, C) @ weight^T, in the model's precision.
static int linear(kv_context *ctx, float *out, const float *inp, const float *weight, int rows,
                  int c, int oc) {
  if (!ctx->params16) return ctx->be->linear_forward(out, inp, weight, NULL, rows, c, oc);
  TRY(ctx->be->to_bf16(ctx->in16, inp, (int64_t)rows * c));
  return ctx->be->linear_forward_bf16(out, ctx->in16, ctx->params16 + (weight - ctx->p.embed), rows,
                                      c, oc);
}

// The rows' inputs where the backend reads them: *d = {tokens, seqs, pos, out_rows}, the
// arrays themselves on the host, else one copy of all four (one wait for the device a pass).
static int stage_rows(kv_context *ctx, const int32_t *d[4], const int32_t *tokens, const int *seqs,
                      const int *pos, int rows, const int *out_rows, int n_out) {
  const int32_t *host[4] = {tokens, (const int32_t *)seqs, (const int32_t *)pos,
                            (const int32_t *)out_rows};
  const int counts[4] = {rows, rows, rows, n_out};
  size_t at = 0;
  for (int i = 0; i < 4; i++) {
    if (ctx->host) {
      d[i] = host[i];
      continue;
    }
    if (counts[i]) memcpy(ctx->host_inputs + at, host[i], (size_t)counts[i] * sizeof(int32_t));
    d[i] = ctx->inputs + at;
    at += (size_t)counts[i];
  }
  return ctx->host ? HERD_OK : ctx->be->upload(ctx->inputs, ctx->host_inputs, at * sizeof(int32_t));
}

// One layer over the rows: attention through the cache, then the MLP, in place on ctx->x.
static int layer_rows(kv_context *ctx, int l, int rows, const int32_t *seqs, const int32_t *pos) {
  const herd_backend *be = ctx->be;
  const herd_model_config *c = &ctx->cfg;
  const herd_model_params *p = &ctx->p;
  const int C = c->dim, F = c->hidden_dim, D = ctx->head_dim;
  const int qd = ctx->q_dim, kvd = ctx->kv_dim;
  TRY(be->rmsnorm_forward(ctx->xn, ctx->rstd, ctx->x, p->attn_norm + (int64_t)l * C, rows, C,
                          c->norm_eps));
  TRY(linear(ctx, ctx->q, ctx->xn, p->wq + (int64_t)l * qd * C, rows, C, qd));
  TRY(linear(ctx, ctx->k, ctx->xn, p->wk + (int64_t)l * kvd * C, rows, C, kvd));
  TRY(linear(ctx, ctx->v, ctx->xn, p->wv + (int64_t)l * kvd * C, rows, C, kvd));
  TRY(be->rope_forward(ctx->q, ctx->q, pos, rows, c->n_heads, D, c->rope_theta));
  TRY(be->rope_forward(ctx->k, ctx->k, pos, rows, c->n_kv_heads, D, c->rope_theta));
  void *kc = layer_cache(ctx, ctx->k_cache, l), *vc = layer_cache(ctx, ctx->v_cache, l);
  TRY(be->kv_store(kc, vc, ctx->cache_dtype, ctx->k, ctx->v, seqs, pos, rows, ctx->max_len, kvd));
  TRY(be->cached_attention(ctx->att, ctx->q, kc, vc, ctx->cache_dtype, seqs, pos, rows,
                           ctx->max_len, c->n_heads, c->n_kv_heads, D));
  TRY(linear(ctx, ctx->tmp, ctx->att, p->wo + (int64_t)l * C * qd, rows, qd, C));
  TRY(be->add(ctx->x, ctx->x, ctx->tmp, (int64_t)rows * C));
  TRY(be->rmsnorm_forward(ctx->xn, ctx->rstd, ctx->x, p->mlp_norm + (int64_t)l * C, rows, C,
                          c->norm_eps));
  TRY(linear(ctx, ctx->gate, ctx->xn, p->w_gate + (int64_t)l * F * C, rows, C, F));
  TRY(linear(ctx, ctx->up, ctx->xn, p->w_up + (int64_t)l * F * C, rows, C, F));
  TRY(be->swiglu_forward(ctx->gate, ctx->gate, ctx->up, (int64_t)rows * F));
  TRY(linear(ctx, ctx->tmp, ctx->gate, p->w_down + (int64_t)l * C * F, rows, F, C));
  return be->add(ctx->x, ctx->x, ctx->tmp, (int64_t)rows * C);
}

// Runs `rows` rows (tokens[r] of sequence seqs[r] at position pos[r]) through the model,
// filling the cache; logits(n_out, V), in host memory, for rows out_rows[0..n_out).
static int forward_rows(kv_context *ctx, int rows, const int32_t *tokens, const int *seqs,
                        const int *pos, int n_out, const int *out_rows, float *logits) {
  const herd_backend *be = ctx->be;
  const herd_model_config *c = &ctx->cfg;
  const int C = c->dim, V = c->vocab_size;
  const int32_t *d[4];  // tokens, seqs, pos, out_rows
  TRY(stage_rows(ctx, d, tokens, seqs, pos, rows, out_rows, n_out > 0 ? n_out : 0));
  TRY(be->embedding_forward(ctx->x, d[0], ctx->p.embed, rows, V, C));  // checked already
  for (int l = 0; l < c->n_layers; l++) TRY(layer_rows(ctx, l, rows, d[1], d[2]));
  if (n_out <= 0) return HERD_OK;
  TRY(be->gather_rows(ctx->logits_in, ctx->x, d[3], n_out, C));
  TRY(be->rmsnorm_forward(ctx->xn, ctx->rstd, ctx->logits_in, ctx->p.final_norm, n_out, C,
                          c->norm_eps));
  if (ctx->host) return linear(ctx, logits, ctx->xn, ctx->lm_head, n_out, C, V);
  TRY(linear(ctx, ctx->logits, ctx->xn, ctx->lm_head, n_out, C, V));
  return be->download(logits, ctx->logits, (size_t)n_out * V * sizeof(float));
}

static float *falloc(int64_t n) {  // host memory
  return malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
}

// ---------------------------------------------------------------- sampling

static int argmax_first(const float *logits, int v) {
  int best = 0;
  for (int i = 1; i < v; i++)
    if (logits[i] > logits[best]) best = i;
  return best;
}

// The uniform of draw `step` of a sequence: as herd_rng_uniform(&u, 1, seed, step).
static double draw_uniform(uint64_t seed, int step) {
  uint32_t words[4];
  herd_philox(seed, (uint64_t)step, 0, words);
  return (double)(words[0] >> 8) * 0x1p-24;
}

typedef struct ranked {
  float logit;
  int id;
} ranked;

// Larger logit first, then lower id.
static int by_logit_desc(const void *a, const void *b) {
  const ranked *x = a, *y = b;
  if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
  return (x->id > y->id) - (x->id < y->id);
}

// Scratch of one sampler: probs, scaled, order and keep of (V) each.
typedef struct sampler_scratch {
  float *probs, *scaled;
  ranked *order;
  unsigned char *keep;
} sampler_scratch;

// Draws the token of step `step` from raw logits(V), and its log-probability log softmax(logits)
// (T = 1, nothing filtered). Temperature 0 is argmax (the first max); otherwise softmax(logits /
// T), restricted to the top_k largest, then to the nucleus (the smallest set, in order of
// decreasing probability and then increasing id, whose mass reaches top_p), sampled by the
// inverse CDF of the kept set in id order at the Philox uniform of (seed, step).
static int sample_token(const float *logits, int v, const herd_sampling *s, uint64_t seed, int step,
                        sampler_scratch *w, float *logprob) {
  float max = logits[0];
  for (int i = 1; i < v; i++) max = logits[i] > max ? logits[i] : max;
  herd_exp_shifted(w->probs, logits, max, v);  // the T = 1 softmax, unnormalised
  double total = 0;
  for (int i = 0; i < v; i++) total += w->probs[i];
  const double log_z = (double)max + log(total);
  int token;
  if (s->temperature == 0) {
    token = argmax_first(logits, v);
  } else {
    token = -1;
    if (s->temperature != 1) {  // exp(logits / T - max / T)
      const float inv_t = 1.0f / s->temperature;
      for (int i = 0; i < v; i++) w->scaled[i] = logits[i] * inv_t;
      herd_exp_shifted(w->probs, w->scaled, max * inv_t, v);
      total = 0;
      for (int i = 0; i < v; i++) total += w->probs[i];
    }
    const int top_k = s->top_k > 0 && s->top_k < v ? s->top_k : 0;
    if (top_k || s->top_p < 1) {
      for (int i = 0; i < v; i++) w->order[i] = (ranked){logits[i], i};
      qsort(w->order, (size_t)v, sizeof *w->order, by_logit_desc);
      int kept = top_k ? top_k : v;
      double mass = 0;
      for (int i = 0; i < kept; i++) mass += w->probs[w->order[i].id];
      if (s->top_p < 1) {
        const double need = (double)s->top_p * mass;
        double cum = 0;
        int i = 0;
        while (i < kept) {
          cum += w->probs[w->order[i++].id];
          if (cum >= need) break;
        }
        kept = i, mass = cum;
      }
      for (int i = 0; i < v; i++) w->keep[i] = 0;
      for (int i = 0; i < kept; i++) w->keep[w->order[i].id] = 1;
      total = mass;
    } else {
      for (int i = 0; i < v; i++) w->keep[i] = 1;
    }
    const double target = draw_uniform(seed, step) * total;
    double cum = 0;
    for (int i = 0; i < v; i++) {
      if (!w->keep[i]) continue;
      token = i;  // if rounding leaves the target at the very top: the last kept token
      cum += w->probs[i];
      if (cum > target) break;
    }
  }
  *logprob = (float)((double)logits[token] - log_z);
  return token;
}

// ---------------------------------------------------------------- checks

static int check_sampling(const herd_sampling *s, int vocab) {
  if (!s) return herd_seterr(HERD_EINVAL, "generate: sampling is NULL");
  if (!(s->temperature >= 0) || isinf(s->temperature))
    return herd_seterr(HERD_EINVAL, "generate: temperature %g must be finite and >= 0",
                       (double)s->temperature);
  if (!(s->top_p > 0 && s->top_p <= 1))
    return herd_seterr(HERD_EINVAL, "generate: top_p %g must be in (0, 1]", (double)s->top_p);
  if (s->top_k < 0) return herd_seterr(HERD_EINVAL, "generate: top_k %d must be >= 0", s->top_k);
  if (s->max_new < 1)
    return herd_seterr(HERD_EINVAL, "generate: max_new %d must be >= 1", s->max_new);
  if (s->n_stop < 0 || (s->n_stop > 0 && !s->stop_tokens))
    return herd_seterr(HERD_EINVAL, "generate: n_stop %d without stop_tokens", s->n_stop);
  for (int i = 0; i < s->n_stop; i++)
    if (s->stop_tokens[i] < 0 || s->stop_tokens[i] >= vocab)
      return herd_seterr(HERD_EINVAL, "generate: stop_tokens[%d] = %d is outside [0, %d)", i,
                         (int)s->stop_tokens[i], vocab);
  return HERD_OK;
}

// A prompt of `len` tokens that must leave room for `extra` more positions.
static int check_prompt(const herd_model_config *c, int index, const int32_t *tokens, int len,
                        int extra) {
  if (len < 1 || !tokens) return herd_seterr(HERD_EINVAL, "generate: prompt %d is empty", index);
  if ((int64_t)len + extra > c->max_seq_len)
    return herd_seterr(HERD_EINVAL,
                       "generate: prompt %d has %d tokens; with max_new %d that exceeds the "
                       "model's max_seq_len %d",
                       index, len, extra, c->max_seq_len);
  for (int i = 0; i < len; i++)
    if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
      return herd_seterr(HERD_EINVAL,
                         "generate: prompt %d has token %d at position %d, outside "
                         "[0, %d)",
                         index, (int)tokens[i], i, c->vocab_size);
  return HERD_OK;
}

static int check_model(herd_model *model) {
  if (!model) return herd_seterr(HERD_EINVAL, "generate: model is NULL");
  const herd_model_config *c = herd_model_get_config(model);
  if (!c->lm_head)
    return herd_seterr(HERD_EINVAL, "generate: the model has no language-model head");
  return HERD_OK;
}

// Prefills prompts[i] (lengths[i] tokens, i < n) into sequences seqs[i], in chunks of at most
// ctx->max_rows rows; logits(n, V) of each prompt's last token.
static int prefill(kv_context *ctx, int n, const int32_t *const *prompts, const int *lengths,
                   const int *seqs, float *logits, int32_t *tokens, int *row_seq, int *row_pos,
                   int *out_rows) {
  const int v = ctx->cfg.vocab_size;
  int rows = 0, n_out = 0, first_out = 0;  // the chunk being gathered
  for (int i = 0; i < n; i++) {
    for (int t = 0; t < lengths[i]; t++) {
      tokens[rows] = prompts[i][t], row_seq[rows] = seqs[i], row_pos[rows] = t;
      if (t == lengths[i] - 1) out_rows[n_out++] = rows;
      rows++;
      if (rows == ctx->max_rows || (i == n - 1 && t == lengths[i] - 1)) {
        TRY(forward_rows(ctx, rows, tokens, row_seq, row_pos, n_out, out_rows,
                         logits + (int64_t)first_out * v));
        first_out += n_out;
        rows = 0, n_out = 0;
      }
    }
  }
  return HERD_OK;
}

// ---------------------------------------------------------------- generate

void herd_generation_free(herd_generation *generation) {
  if (!generation) return;
  free(generation->tokens), free(generation->logprobs), free(generation->lengths);
  memset(generation, 0, sizeof *generation);
}

int herd_generate(herd_model *model, int n_prompts, const int32_t *const *prompts,
                  const int *prompt_lengths, int k, const herd_sampling *sampling,
                  const uint64_t *seeds, herd_generation *out) {
  if (!out) return herd_seterr(HERD_EINVAL, "generate: out is NULL");
  memset(out, 0, sizeof *out);
  int status = check_model(model);
  if (status) return status;
  const herd_model_config *c = herd_model_get_config(model);
  const int v = c->vocab_size;
  if ((status = check_sampling(sampling, v))) return status;
  if (n_prompts < 1)
    return herd_seterr(HERD_EINVAL, "generate: n_prompts %d must be >= 1", n_prompts);
  if (!prompts || !prompt_lengths)
    return herd_seterr(HERD_EINVAL, "generate: prompts or prompt_lengths is NULL");
  if (k < 1) return herd_seterr(HERD_EINVAL, "generate: k %d must be >= 1", k);
  if ((int64_t)n_prompts * k > INT_MAX / 2)
    return herd_seterr(HERD_EINVAL, "generate: %d prompts x k %d is too many", n_prompts, k);
  if (!seeds) return herd_seterr(HERD_EINVAL, "generate: seeds is NULL");
  const int max_new = sampling->max_new;
  int max_prompt = 0;
  for (int i = 0; i < n_prompts; i++) {
    if ((status = check_prompt(c, i, prompts[i], prompt_lengths[i], max_new))) return status;
    max_prompt = prompt_lengths[i] > max_prompt ? prompt_lengths[i] : max_prompt;
  }
  const int n = n_prompts * k;
  const int max_rows = n > PREFILL_ROWS ? n : PREFILL_ROWS;
  const int cache_len = max_prompt + max_new;  // >= every position fed

  out->n = n, out->max_new = max_new;
  out->tokens = malloc((size_t)n * max_new * sizeof *out->tokens);
  out->logprobs = malloc((size_t)n * max_new * sizeof *out->logprobs);
  out->lengths = calloc((size_t)n, sizeof *out->lengths);
  kv_context ctx;
  float *logits = falloc((int64_t)(n > n_prompts ? n : n_prompts) * v);
  int32_t *tokens = malloc((size_t)max_rows * sizeof *tokens);
  int *row_seq = malloc((size_t)max_rows * sizeof *row_seq);
  int *row_pos = malloc((size_t)max_rows * sizeof *row_pos);
  int *out_rows = malloc((size_t)max_rows * sizeof *out_rows);
  int *active = malloc((size_t)n * sizeof *active);        // active sequences, in order
  int *logit_row = malloc((size_t)n * sizeof *logit_row);  // their rows of logits
  int *prompt_seq = malloc((size_t)n_prompts * sizeof *prompt_seq);
  const int nt = herd_threads();
  sampler_scratch *scratch = calloc((size_t)nt, sizeof *scratch);
  int ok = out->tokens && out->logprobs && out->lengths && logits && tokens && row_seq && row_pos &&
           out_rows && active && logit_row && prompt_seq && scratch;
  for (int t = 0; ok && t < nt; t++) {
    scratch[t].probs = malloc((size_t)v * sizeof(float));
    scratch[t].scaled = malloc((size_t)v * sizeof(float));
    scratch[t].order = malloc((size_t)v * sizeof(ranked));
    scratch[t].keep = malloc((size_t)v);
    ok = scratch[t].probs && scratch[t].scaled && scratch[t].order && scratch[t].keep;
  }
  if (!ok) {
    status = herd_seterr(HERD_ENOMEM, "generate: out of memory for %d sequences", n);
  } else {
    status = context_init(&ctx, model, n, cache_len, max_rows);
  }
  if (!status) {
    for (int64_t i = 0; i < (int64_t)n * max_new; i++) out->tokens[i] = -1, out->logprobs[i] = 0;
    // one prefill per prompt, into its first sample's cache, shared by copying
    for (int i = 0; i < n_prompts; i++) prompt_seq[i] = i * k;
    status = prefill(&ctx, n_prompts, prompts, prompt_lengths, prompt_seq, logits, tokens, row_seq,
                     row_pos, out_rows);
    for (int i = 0; i < n_prompts && !status; i++)
      for (int j = 1; j < k && !status; j++)
        status = cache_copy(&ctx, i * k, i * k + j, prompt_lengths[i]);
    int n_active = status ? 0 : n;
    for (int s = 0; s < n; s++) active[s] = s, logit_row[s] = s / k;
    for (int step = 0; step < max_new && n_active > 0; step++) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (n_active > 1)
      for (int a = 0; a < n_active; a++) {
        sampler_scratch *w = &scratch[herd_thread_id()];
        const int s = active[a];
        const float *row = logits + (int64_t)logit_row[a] * v;
        float logprob;
        const int token = sample_token(row, v, sampling, seeds[s], step, w, &logprob);
        out->tokens[(int64_t)s * max_new + step] = token;
        out->logprobs[(int64_t)s * max_new + step] = logprob;
        out->lengths[s] = step + 1;
      }
      // sequences that stopped drop out; the rest feed their new token
      int rows = 0;
      for (int a = 0; a < n_active; a++) {
        const int s = active[a];
        const int32_t token = out->tokens[(int64_t)s * max_new + step];
        int stop = step == max_new - 1;
        for (int i = 0; !stop && i < sampling->n_stop; i++)
          stop = token == sampling->stop_tokens[i];
        if (stop) continue;
        active[rows] = s, logit_row[rows] = rows;
        tokens[rows] = token, row_seq[rows] = s;
        row_pos[rows] = prompt_lengths[s / k] + step, out_rows[rows] = rows;
        rows++;
      }
      n_active = rows;
      if (n_active > 0)
        status = forward_rows(&ctx, rows, tokens, row_seq, row_pos, rows, out_rows, logits);
      if (status) n_active = 0;
    }
    context_free(&ctx);
  }
  for (int t = 0; scratch && t < nt; t++)
    free(scratch[t].probs), free(scratch[t].scaled), free(scratch[t].order), free(scratch[t].keep);
  free(scratch), free(logits), free(tokens), free(row_seq), free(row_pos), free(out_rows);
  free(active), free(logit_row), free(prompt_seq);
  if (status) herd_generation_free(out);
  return status;
}

int herd_generate_logits(herd_model *model, int n_seqs, const int32_t *const *tokens,
                         const int *lengths, const int *n_prefill, float *const *out) {
  int status = check_model(model);
  if (status) return status;
  const herd_model_config *c = herd_model_get_config(model);
  const int v = c->vocab_size;
  if (n_seqs < 1 || !tokens || !lengths || !n_prefill || !out)
    return herd_seterr(HERD_EINVAL, "generate_logits: bad arguments (n_seqs %d)", n_seqs);
  int max_len = 0, max_prefill = 0;
  for (int i = 0; i < n_seqs; i++) {
    if ((status = check_prompt(c, i, tokens[i], lengths[i], 0))) return status;
    if (n_prefill[i] < 1 || n_prefill[i] > lengths[i])
      return herd_seterr(HERD_EINVAL, "generate_logits: n_prefill[%d] = %d outside [1, %d]", i,
                         n_prefill[i], lengths[i]);
    max_len = lengths[i] > max_len ? lengths[i] : max_len;
    max_prefill = n_prefill[i] > max_prefill ? n_prefill[i] : max_prefill;
  }
  const int max_rows = max_prefill > n_seqs ? max_prefill : n_seqs;
  kv_context ctx;
  if ((status = context_init(&ctx, model, n_seqs, max_len, max_rows))) return status;
  int32_t *row_tok = malloc((size_t)max_rows * sizeof *row_tok);
  int *row_seq = malloc((size_t)max_rows * sizeof *row_seq);
  int *row_pos = malloc((size_t)max_rows * sizeof *row_pos);
  int *out_rows = malloc((size_t)max_rows * sizeof *out_rows);
  float *logits = falloc((int64_t)max_rows * v);
  if (!row_tok || !row_seq || !row_pos || !out_rows || !logits) {
    status = herd_seterr(HERD_ENOMEM, "generate_logits: out of memory");
  } else {
    // each sequence's prefill chunk alone, with logits at every row
    for (int i = 0; i < n_seqs; i++) {
      for (int t = 0; t < n_prefill[i]; t++)
        row_tok[t] = tokens[i][t], row_seq[t] = i, row_pos[t] = t, out_rows[t] = t;
      status = forward_rows(&ctx, n_prefill[i], row_tok, row_seq, row_pos, n_prefill[i], out_rows,
                            out[i]);
      if (status) break;
    }
    // then the rest decoded together, one token per unfinished sequence per step
    for (int step = 0; !status; step++) {
      int rows = 0;
      for (int i = 0; i < n_seqs; i++) {
        const int t = n_prefill[i] + step;
        if (t >= lengths[i]) continue;
        row_tok[rows] = tokens[i][t], row_seq[rows] = i, row_pos[rows] = t;
        out_rows[rows] = rows;
        rows++;
      }
      if (!rows) break;
      if ((status = forward_rows(&ctx, rows, row_tok, row_seq, row_pos, rows, out_rows, logits)))
        break;
      for (int i = 0, r = 0; i < n_seqs; i++) {
        const int t = n_prefill[i] + step;
        if (t >= lengths[i]) continue;
        memcpy(out[i] + (int64_t)t * v, logits + (int64_t)r++ * v, (size_t)v * sizeof(float));
      }
    }
  }
  free(row_tok), free(row_seq), free(row_pos), free(out_rows), free(logits);
  context_free(&ctx);
  return status;
}
