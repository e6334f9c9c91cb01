// defines: herd_cpu_rope_forward, herd_cpu_rope_backward,
//          herd_cpu_attention_forward, herd_cpu_attention_backward
//
// Rotary position embeddings and causal grouped-query attention with segment ids, CPU f32.
// Conventions as in ops.h: contiguous row-major buffers, backward ACCUMULATES (+=), NULL
// gradients are skipped, results are bit-identical for any HERD_THREADS.
#ifndef HERD_ATTENTION_H
#define HERD_ATTENTION_H

#include <stdint.h>

// Rotary embedding in the Hugging Face `rotate_half` layout, for x(N,H,D) where N = B*T rows
// and positions(N) give each row's position (packed segments restart at 0). For i < D/2:
//   angle = positions[r] * theta^(-2i/D)
//   out[i] = x[i] cos - x[i+D/2] sin;  out[i+D/2] = x[i+D/2] cos + x[i] sin
void herd_cpu_rope_forward(float *out, const float *inp, const int32_t *positions, int n, int heads,
                           int head_dim, float theta);
// dinp += the inverse rotation of dout.
void herd_cpu_rope_backward(float *dinp, const float *dout, const int32_t *positions, int n,
                            int heads, int head_dim, float theta);

// Causal attention, scores scaled by 1/sqrt(D):
//   q(B,T,H,D), k(B,T,KVH,D), v(B,T,KVH,D) -> out(B,T,H,D); query head h reads kv head
//   h / (H/KVH) (KVH divides H). Token t attends to tokens s <= t of its own segment
//   (segments(B,T) equal); segments NULL means one segment per batch row.
//   lse(B,H,T): log-sum-exp of each query's scaled scores, kept for the backward pass.
void herd_cpu_attention_forward(float *out, float *lse, const float *q, const float *k,
                                const float *v, const int32_t *segments, int b, int t, int h,
                                int kvh, int d);
// dq, dk, dv accumulate; the scores are recomputed from q, k and lse (no (T,T) buffer kept).
void herd_cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                 const float *k, const float *v, const float *out, const float *lse,
                                 const int32_t *segments, int b, int t, int h, int kvh, int d);

#endif
