// defines: herd_philox, herd_rng_uniform, herd_rng_normal, herd_rng_categorical
//
// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
// counter-based generator. Number i of stream (seed, offset) depends only on (seed, offset + i),
// never on thread count or on the device, so CPU and GPU draw the same numbers.
#ifndef HERD_RNG_H
#define HERD_RNG_H

#include <stdint.h>

// Four 32-bit random words for 128-bit counter `counter` (lo, hi) under 64-bit key `seed`.
void herd_philox(uint64_t seed, uint64_t counter_lo, uint64_t counter_hi, uint32_t out[4]);

// out[i] uniform in [0, 1) (24 random bits) for i < n; element i uses counter offset + i.
void herd_rng_uniform(float *out, int64_t n, uint64_t seed, uint64_t offset);
// out[i] standard normal (Box-Muller on two uniforms of counter offset + i).
void herd_rng_normal(float *out, int64_t n, uint64_t seed, uint64_t offset);
// For each of `rows` rows of `probs` (rows, classes) (non-negative, any scale), draws an index
// with probability proportional to its weight, using counter offset + row. HERD_EINVAL naming
// the row when a row has no positive weight or a negative/NaN one.
int herd_rng_categorical(int32_t *out, const float *probs, int rows, int classes, uint64_t seed,
                         uint64_t offset);

#endif
