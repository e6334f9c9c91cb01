// Philox 4x32-10 and the distributions drawn from it.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "rng.h"
#include "threads.h"

// Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32 with 10 rounds).
Test(rng, philox_known_answers) {
  uint32_t out[4];
  herd_philox(0, 0, 0, out);
  cr_assert(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du && out[2] == 0xbc57ac4cu &&
                out[3] == 0x9b00dbd8u,
            "zeros: %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
  herd_philox(0xffffffffffffffffull, 0xffffffffffffffffull, 0xffffffffffffffffull, out);
  cr_assert(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u &&
                out[3] == 0x6d5451fdu,
            "ones: %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
  // counter (0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), key (0xa4093822, 0x299f31d0)
  herd_philox(0x299f31d0a4093822ull, 0x85a308d3243f6a88ull, 0x0370734413198a2eull, out);
  cr_assert(out[0] == 0xd16cfe09u && out[1] == 0x94fdccebu && out[2] == 0x5001e420u &&
                out[3] == 0x24126ea1u,
            "pi: %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
}

enum { N = 1000000 };

Test(rng, uniform_moments_and_range) {
  float *x = malloc(N * sizeof *x);
  herd_rng_uniform(x, N, 42, 0);
  double sum = 0, sum_sq = 0;
  for (int i = 0; i < N; i++) {
    cr_assert(x[i] >= 0.0f && x[i] < 1.0f, "x[%d] = %g", i, (double)x[i]);
    sum += x[i], sum_sq += (double)x[i] * x[i];
  }
  double mean = sum / N, variance = sum_sq / N - mean * mean;
  cr_assert(fabs(mean - 0.5) < 0.002, "mean %g", mean);
  cr_assert(fabs(variance - 1.0 / 12) < 0.002, "variance %g", variance);
  free(x);
}

Test(rng, normal_moments) {
  float *x = malloc(N * sizeof *x);
  herd_rng_normal(x, N, 7, 0);
  double sum = 0, sum_sq = 0, within_one = 0;
  for (int i = 0; i < N; i++) {
    cr_assert(isfinite(x[i]));
    sum += x[i], sum_sq += (double)x[i] * x[i];
    within_one += fabsf(x[i]) < 1.0f;
  }
  double mean = sum / N, variance = sum_sq / N - mean * mean;
  cr_assert(fabs(mean) < 0.005, "mean %g", mean);
  cr_assert(fabs(variance - 1.0) < 0.01, "variance %g", variance);
  cr_assert(fabs(within_one / N - 0.682689) < 0.003, "P(|z|<1) = %g", within_one / N);
  free(x);
}

// Element i depends on (seed, offset + i) only: any split of a stream gives the same numbers,
// whatever the thread count.
Test(rng, streams_depend_only_on_seed_and_counter) {
  enum { M = 10007 };
  float whole[M], tail[M - 100], one_thread[M], two_threads[M], other_seed[M];
  herd_rng_normal(whole, M, 3, 0);
  herd_rng_normal(tail, M - 100, 3, 100);
  cr_assert(memcmp(whole + 100, tail, sizeof tail) == 0);
  herd_set_threads(1);
  herd_rng_uniform(one_thread, M, 9, 5);
  herd_set_threads(2);
  herd_rng_uniform(two_threads, M, 9, 5);
  cr_assert(memcmp(one_thread, two_threads, sizeof one_thread) == 0);
  herd_rng_uniform(other_seed, M, 10, 5);
  cr_assert(memcmp(one_thread, other_seed, sizeof other_seed) != 0);
}

Test(rng, categorical_follows_the_weights) {
  enum { ROWS = 200000, CLASSES = 5 };
  static const float weights[CLASSES] = {0.1f, 0.0f, 2.0f, 0.4f, 1.5f};  // total 4
  float *probs = malloc(sizeof(float) * ROWS * CLASSES);
  for (int r = 0; r < ROWS; r++) memcpy(probs + r * CLASSES, weights, sizeof weights);
  int32_t *draws = malloc(sizeof(int32_t) * ROWS);
  cr_assert_eq(herd_rng_categorical(draws, probs, ROWS, CLASSES, 11, 0), HERD_OK);
  int counts[CLASSES] = {0};
  for (int r = 0; r < ROWS; r++) counts[draws[r]]++;
  cr_assert_eq(counts[1], 0, "a zero-weight class is never drawn");
  for (int c = 0; c < CLASSES; c++) {
    double p = weights[c] / 4.0, expected = p * ROWS;
    double sigma = sqrt(ROWS * p * (1 - p));
    cr_assert(fabs(counts[c] - expected) <= 5 * sigma + 1e-9, "class %d: %d draws, expected %g", c,
              counts[c], expected);
  }
  int32_t again[10];
  herd_rng_categorical(again, probs, 10, CLASSES, 11, 0);
  cr_assert(memcmp(again, draws, sizeof again) == 0, "same seed, same draws");
  free(probs);
  free(draws);
}

Test(rng, categorical_rejects_bad_rows) {
  float rows[3][2] = {{1, 1}, {0, 0}, {1, -1}};
  int32_t out[3];
  cr_assert_eq(herd_rng_categorical(out, &rows[0][0], 2, 2, 1, 0), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "row 1"), "%s", herd_errmsg());
  cr_assert_eq(herd_rng_categorical(out, &rows[2][0], 1, 2, 1, 0), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "row 0 has weight -1"), "%s", herd_errmsg());
  float with_nan[2] = {NAN, 1};
  cr_assert_eq(herd_rng_categorical(out, with_nan, 1, 2, 1, 0), HERD_EINVAL);
}
