// Philox 4x32-10. See rng.h.
#include "rng.h"

#include <math.h>

#include "error.h"
#include "threads.h"

enum { PHILOX_ROUNDS = 10 };

static void multiply_hi_lo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
  uint64_t product = (uint64_t)a * b;
  *hi = (uint32_t)(product >> 32);
  *lo = (uint32_t)product;
}

void herd_philox(uint64_t seed, uint64_t counter_lo, uint64_t counter_hi, uint32_t out[4]) {
  uint32_t c0 = (uint32_t)counter_lo, c1 = (uint32_t)(counter_lo >> 32);
  uint32_t c2 = (uint32_t)counter_hi, c3 = (uint32_t)(counter_hi >> 32);
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int round = 0; round < PHILOX_ROUNDS; round++) {
    uint32_t hi0, lo0, hi1, lo1;
    multiply_hi_lo(0xD2511F53u, c0, &hi0, &lo0);
    multiply_hi_lo(0xCD9E8D57u, c2, &hi1, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0, c1 = lo1, c2 = n2, c3 = lo0;
    k0 += 0x9E3779B9u;  // the Weyl sequence bumps the key between rounds
    k1 += 0xBB67AE85u;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

// 24 random bits in [0, 1): every value is exactly representable in a float.
static float unit_float(uint32_t word) {
  return (float)(word >> 8) * 0x1p-24f;
}

void herd_rng_uniform(float *out, int64_t n, uint64_t seed, uint64_t offset) {
#pragma omp parallel for schedule(static) num_threads(herd_threads())
  for (int64_t i = 0; i < n; i++) {
    uint32_t words[4];
    herd_philox(seed, offset + (uint64_t)i, 0, words);
    out[i] = unit_float(words[0]);
  }
}

void herd_rng_normal(float *out, int64_t n, uint64_t seed, uint64_t offset) {
#pragma omp parallel for schedule(static) num_threads(herd_threads())
  for (int64_t i = 0; i < n; i++) {
    uint32_t words[4];
    herd_philox(seed, offset + (uint64_t)i, 0, words);
    double radius_u = ((words[0] >> 8) + 1.0) * 0x1p-24;  // (0, 1]: log never sees 0
    double angle_u = (words[1] >> 8) * 0x1p-24;
    out[i] = (float)(sqrt(-2.0 * log(radius_u)) * cos(2.0 * M_PI * angle_u));
  }
}

static int check_row_weights(const float *row, int classes, int index, double *total) {
  double sum = 0;
  for (int c = 0; c < classes; c++) {
    if (!(row[c] >= 0))  // also catches NaN
      return herd_seterr(HERD_EINVAL, "categorical: row %d has weight %g at class %d", index,
                         (double)row[c], c);
    sum += row[c];
  }
  if (!(sum > 0) || isinf(sum))
    return herd_seterr(HERD_EINVAL, "categorical: row %d has no positive finite total weight",
                       index);
  *total = sum;
  return HERD_OK;
}

int herd_rng_categorical(int32_t *out, const float *probs, int rows, int classes, uint64_t seed,
                         uint64_t offset) {
  if (classes < 1) return herd_seterr(HERD_EINVAL, "categorical: needs at least one class");
  for (int r = 0; r < rows; r++) {
    const float *row = probs + (int64_t)r * classes;
    double total = 0;
    int status = check_row_weights(row, classes, r, &total);
    if (status) return status;
    uint32_t words[4];
    herd_philox(seed, offset + (uint64_t)r, 0, words);
    // 53 random bits: fine enough that no class with a float weight is unreachable.
    double target = (((uint64_t)words[0] << 21) | (words[1] >> 11)) * 0x1p-53 * total;
    double cumulative = 0;
    int chosen = classes - 1;
    for (int c = 0; c < classes; c++) {
      cumulative += row[c];
      if (target < cumulative && row[c] > 0) {
        chosen = c;
        break;
      }
    }
    while (row[chosen] <= 0) chosen--;  // rounding at the top end: last positive class
    out[r] = chosen;
  }
  return HERD_OK;
}
